# -*- test-case-name: tests.test_message -*-
"""
SIP messages: parsing, validation and serialisation (RFC 3261 sections 7,
8.2, 18.3, 20 and 25) on Twisted's message model.

L{Request} and L{Response} subclass L{twisted.protocols.sip.Request} and
L{twisted.protocols.sip.Response} and keep their layout: C{headers} maps a
lower-case long header name to the list of header-line values as received.
On top of it this module adds what a server needs:

  - one parser for a complete message (a datagram, or a message framed off a
    stream by L{StreamFramer}), doing one pass over the header lines and
    leaving the rest lazy: the Request-URI and Via values are parsed when
    first asked for, the body is kept as bytes;
  - compact header forms (C{v}, C{m}, C{i} ...) expanded on input;
  - comma-separated multi-value headers (C{values("via")} counts every Via
    value, whatever the number of Via lines);
  - validation raising L{MessageError} with the status code and a reason
    phrase naming the problem (C{400}, C{416}, C{483}, C{505}, C{513});
  - canonical serialisation (canonical header names, one value per line,
    Content-Length recomputed).

Messages are built and parsed without touching the reactor.
"""

import re
from base64 import urlsafe_b64encode

from twisted.logger import Logger

from sipdist.randomness import randomBytes
from sipdist.sip.twistedsip import sip
from sipdist.sip.uri import URI, URIError, parseURI

MAGIC_COOKIE = "z9hG4bK"
SIP_VERSION = "SIP/2.0"
DEFAULT_MAX_SIZE = 65535

_log = Logger()

# RFC 3261 section 7.3.3 and the IANA registry of compact forms.
COMPACT_FORMS = {
    "a": "accept-contact",
    "b": "referred-by",
    "c": "content-type",
    "d": "request-disposition",
    "e": "content-encoding",
    "f": "from",
    "i": "call-id",
    "j": "reject-contact",
    "k": "supported",
    "l": "content-length",
    "m": "contact",
    "o": "event",
    "r": "refer-to",
    "s": "subject",
    "t": "to",
    "u": "allow-events",
    "v": "via",
    "x": "session-expires",
    "y": "identity",
}

# Headers whose values may be combined on one line, separated by commas
# (RFC 3261 section 7.3.1); every other header's value is taken whole
# (WWW-Authenticate, Authorization, Date ... contain commas of their own).
MULTI_VALUE = frozenset((
    "accept", "accept-encoding", "accept-language", "alert-info", "allow",
    "allow-events", "call-info", "contact", "content-encoding",
    "content-language", "error-info", "in-reply-to", "path",
    "proxy-require", "record-route", "require", "route", "service-route",
    "supported", "unsupported", "via", "warning",
))

# Headers that may appear once only (a second one is a 400).
SINGLE_VALUE = ("to", "from", "call-id", "cseq", "max-forwards",
                "content-length")

_CANONICAL_NAMES = {
    "call-id": "Call-ID",
    "cseq": "CSeq",
    "www-authenticate": "WWW-Authenticate",
    "mime-version": "MIME-Version",
    "rack": "RAck",
    "rseq": "RSeq",
    "sip-etag": "SIP-ETag",
    "sip-if-match": "SIP-If-Match",
}

# Raw header name (as seen on the wire) -> lower-case long name.  Seeded with
# the usual spellings; names first seen in traffic are added while the table
# is small, so a peer sending random names cannot grow it without bound.
_NAME_CACHE = {}
_NAME_CACHE_MAX = 2048


def headerKey(name):
    """
    The key under which a header is stored: lower case, long form.

    @param name: a header name in any case, long or compact form.
    @rtype: L{str}
    """
    key = _NAME_CACHE.get(name)
    if key is None:
        key = name.strip().lower()
        key = COMPACT_FORMS.get(key, key)
        if len(_NAME_CACHE) < _NAME_CACHE_MAX:
            _NAME_CACHE[name] = key
    return key


def canonicalName(key):
    """
    The spelling of a header name in serialised messages.
    """
    name = _CANONICAL_NAMES.get(key)
    if name is None:
        name = "-".join(part.capitalize() for part in key.split("-"))
        if len(_CANONICAL_NAMES) < _NAME_CACHE_MAX:
            _CANONICAL_NAMES[key] = name
    return name


for _long in list(COMPACT_FORMS.values()) + [
        "cseq", "max-forwards", "authorization", "proxy-authorization",
        "www-authenticate", "proxy-authenticate", "expires", "user-agent",
        "record-route", "route", "path", "allow", "require", "accept",
        "authentication-info", "min-expires", "retry-after", "server"]:
    headerKey(_long)
    headerKey(canonicalName(_long))
del _long


class MessageError(Exception):
    """
    A message is malformed or cannot be handled.

    @ivar code: the status code to answer with.
    @ivar phrase: the reason phrase, naming the problem.
    @ivar message: the partly parsed message, when enough of it was read to
        build a response (a request with its Via, From, To, Call-ID and
        CSeq); C{None} when no response can be routed.
    @ivar streamOnly: the top Via is unusable (no address to send a
        datagram to): the response can go back only on the connection the
        request came in on.
    """

    def __init__(self, code, phrase, message=None, streamOnly=False):
        Exception.__init__(self, f"{code} {phrase}")
        self.code = code
        self.phrase = phrase
        self.message = message
        self.streamOnly = streamOnly


def splitValues(text):
    """
    Split a header line holding comma-separated values, respecting quoted
    strings and angle brackets (a display name may hold a comma).

    @rtype: L{list} of L{str}
    """
    if "," not in text:
        return [text.strip()]
    if '"' not in text and "<" not in text:
        return [v.strip() for v in text.split(",") if v.strip()]
    values = []
    start = 0
    quoted = angle = False
    i = 0
    n = len(text)
    while i < n:
        c = text[i]
        if quoted:
            if c == "\\":
                i += 1
            elif c == '"':
                quoted = False
        elif c == '"':
            quoted = True
        elif c == "<":
            angle = True
        elif c == ">":
            angle = False
        elif c == "," and not angle:
            value = text[start:i].strip()
            if value:
                values.append(value)
            start = i + 1
        i += 1
    value = text[start:].strip()
    if value:
        values.append(value)
    return values


class Via(sip.Via):
    """
    A Via value.  Unlike L{sip.Via} it keeps an absent port absent (the
    default port depends on the transport: 5060, or 5061 for TLS) and
    understands IPv6 references.
    """

    def toString(self):
        parts = [f"SIP/2.0/{self.transport} {self.host}"]
        if self.port is not None:
            parts.append(f":{self.port}")
        if self.branch is not None:
            parts.append(f";branch={self.branch}")
        for name in ("ttl", "maddr", "received"):
            value = getattr(self, name)
            if value is not None:
                parts.append(f";{name}={value}")
        if self.rportValue is not None:
            parts.append(f";rport={self.rportValue}")
        elif self.rportRequested:
            parts.append(";rport")
        for name, value in self.otherParams.items():
            parts.append(f";{name}" if value is None else f";{name}={value}")
        return "".join(parts)

    @property
    def sentByPort(self):
        """
        The port of sent-by, or the transport's default port.
        """
        if self.port is not None:
            return self.port
        return 5061 if self.transport in ("TLS", "WSS") else 5060


_TOKEN_CHARS = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    "-.!%*_+`'~")
_HOST_CHARS = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._")
_IPV6_CHARS = frozenset("0123456789abcdefABCDEF:.")
_HOSTPORT_CHARS = _HOST_CHARS | frozenset(":")
# A gen-value (RFC 3261 section 25.1): token, host (IPv6 reference
# included) or quoted-string.
_VALUE_CHARS = _TOKEN_CHARS | frozenset("[]:")

# sent-protocol and sent-by, with the LWS the grammar allows around "/"
# and ":" (section 25.1: SLASH, COLON are SWS-delimited).
_VIA = re.compile(
    r"[ \t]*SIP[ \t]*/[ \t]*2\.0[ \t]*/[ \t]*([^ \t/;:]+)[ \t]+"
    r"(\[[^\]]*\]|[^ \t;:\[\]]+)(?:[ \t]*:[ \t]*([^ \t;]*))?[ \t]*",
    re.IGNORECASE)


class ViaError(ValueError):
    """
    A Via value is malformed.

    @ivar phrase: a reason phrase naming the problem.
    @ivar via: the L{Via} read up to the problem when its sent-by was
        usable (a response can still be routed), else C{None}.
    """

    def __init__(self, phrase, value, via=None):
        ValueError.__init__(self, f"{phrase}: {value!r}")
        self.phrase = phrase
        self.via = via


def _isHost(host):
    if host[:1] == "[":
        return (host[-1:] == "]" and len(host) > 3
                and _IPV6_CHARS.issuperset(host[1:-1]) and ":" in host)
    return _HOST_CHARS.issuperset(host) and host[:1] not in ("-", ".")


def splitParams(text):
    """
    Split the text of C{;name=value} parameters on the semicolons outside
    quoted strings.

    @return: the parameters as written (the first element is what comes
        before the first semicolon), or C{None} for an unterminated quoted
        string.
    """
    pieces = text.split(";")
    if '"' not in text:
        return pieces
    parts = []
    pending = None
    for piece in pieces:
        pending = piece if pending is None else pending + ";" + piece
        if (pending.count('"') - pending.count('\\"')) % 2 == 0:
            parts.append(pending)
            pending = None
    if pending is not None:
        return None
    return parts


_QUOTED_TEXT = r'"[^"\\\r\n]*(?:\\[^\r\n][^"\\\r\n]*)*"'
_QUOTED = re.compile(_QUOTED_TEXT + r"\Z")
_QUOTED_PREFIX = re.compile(_QUOTED_TEXT)
# Parameters written the common way (no white space, no empty ones): valid
# without looking at each (the hot path); anything else is checked one by
# one by checkParam, which names the problem.
_TOKEN_RE = r"[-A-Za-z0-9.!%*_+`'~]+"
_PLAIN_PARAMS = re.compile(
    r"(?:;" + _TOKEN_RE + r"(?:=(?:[-A-Za-z0-9.!%*_+`'~\[\]:]+|"
    + _QUOTED_TEXT + r"))?)*\Z")


def _isQuoted(text):
    """
    Whether C{text} is exactly one quoted string (backslash escapes
    honoured).
    """
    return _QUOTED.match(text) is not None


def checkParam(param):
    """
    Check one generic parameter (C{name [= value]}, LWS around C{=}).

    @return: C{(name, value)}: the name lower-cased, the value stripped or
        C{None}.
    @raise ValueError: with a reason phrase: the parameter is empty, its
        name is not a token, or its value is empty or not a token, host or
        quoted string.
    """
    name, sep, value = param.partition("=")
    name = name.strip(" \t")
    if not name:
        raise ValueError("Empty Parameter" if not sep else "Bad Parameter")
    if not _TOKEN_CHARS.issuperset(name):
        raise ValueError("Bad Parameter Name")
    if not sep:
        return name.lower(), None
    value = value.strip(" \t")
    if not value:
        raise ValueError("Empty Parameter Value")
    if value[0] == '"':
        if not _isQuoted(value):
            raise ValueError("Bad Parameter Value")
    elif not _VALUE_CHARS.issuperset(value):
        raise ValueError("Bad Parameter Value")
    return name.lower(), value


def parseVia(value):
    """
    Parse one Via value (C{SIP/2.0/UDP host:port;params}), with the linear
    white space RFC 3261 allows around C{/}, C{:}, C{;} and C{=}.

    @rtype: L{Via}
    @raise ViaError: if it is not a Via value; its C{via} is set when the
        sent-by was read (the problem is in the parameters).
    """
    if value[:8] == "SIP/2.0/":
        # The common spelling, read without the regular expression.
        sp = value.find(" ", 8)
        semi = value.find(";", sp)
        sentBy = value[sp + 1:] if semi < 0 else value[sp + 1:semi]
        if (sp > 8 and sentBy and _HOSTPORT_CHARS.issuperset(sentBy)
                and sentBy[0] not in "-.:"
                and _TOKEN_CHARS.issuperset(value[8:sp])):
            host, sep, portText = sentBy.partition(":")
            port = None
            if sep:
                if not portText.isdigit():
                    raise ViaError("Bad Via Sent-By Port", value)
                port = int(portText)
                if not 0 < port < 65536:
                    raise ViaError("Bad Via Sent-By Port", value)
            via = Via(host, port, value[8:sp].upper())
            if semi < 0:
                return via
            rest = value[semi:]
            for p in rest[1:].split(";"):
                pname, sep, pvalue = p.partition("=")
                if not (pname and _TOKEN_CHARS.issuperset(pname)) or sep and (
                        not pvalue or not _VALUE_CHARS.issuperset(pvalue)):
                    # White space, quotes, an empty parameter: read one by
                    # one, naming the problem.
                    return _viaParams(via, rest, value)
                pname = pname.lower()
                if pname == "branch" and sep:
                    via.branch = pvalue
                elif pname == "rport" and not sep:
                    via.rportRequested = True
                else:
                    _viaParam(via, pname, pvalue if sep else None, value)
            return via
    match = _VIA.match(value)
    if match is None:
        raise ViaError("Bad Via Sent-By", value)
    transport, host, portText = match.groups()
    rest = value[match.end():]
    if not _TOKEN_CHARS.issuperset(transport):
        raise ViaError("Bad Via Transport", value)
    if not _isHost(host):
        raise ViaError("Bad Via Sent-By Host", value)
    port = None
    if portText is not None:
        if not portText.isdigit() or not 0 < int(portText) < 65536:
            raise ViaError("Bad Via Sent-By Port", value)
        port = int(portText)
    via = Via(host, port, transport.upper())
    if not rest:
        return via
    if rest[0] != ";":
        raise ViaError("Bad Via Sent-By", value)
    return _viaParams(via, rest, value)


def _viaParams(via, rest, value):
    """
    Check and apply the parameters of a Via value one by one, naming the
    first problem.
    """
    params = splitParams(rest)
    if params is None:
        raise ViaError("Bad Via Parameter", value, via)
    for p in params[1:]:
        try:
            pname, pvalue = checkParam(p)
        except ValueError as e:
            raise ViaError(f"{e.args[0]} In Via", value, via)
        _viaParam(via, pname, pvalue, value)
    return via


def _viaParam(via, pname, pvalue, value):
    if pname == "branch":
        if pvalue is None:
            raise ViaError("Bad Via Branch", value, via)
        via.branch = pvalue
    elif pname == "rport":
        if pvalue is None:
            via.rportRequested = True
        elif pvalue.isdigit() and int(pvalue) < 65536:
            via.rportValue = int(pvalue)
        else:
            raise ViaError("Bad Via Rport", value, via)
    elif pname == "received":
        via.received = pvalue
    elif pname == "maddr":
        via.maddr = pvalue
    elif pname == "ttl":
        if pvalue is None or not pvalue.isdigit() or int(pvalue) > 255:
            raise ViaError("Bad Via TTL", value, via)
        via.ttl = int(pvalue)
    elif pname == "hidden":
        via.hidden = True
    else:
        via.otherParams[pname] = pvalue


def parseNameAddr(value):
    """
    Parse a name-addr or addr-spec header value (From, To, Contact, Route,
    Record-Route, Path) into C{(displayName, uri, params)}.

    Header parameters (C{tag}, C{expires}, C{q} ...) are those after the
    closing angle bracket, or for an addr-spec without brackets everything
    after the first semicolon (RFC 3261 section 20).

    @return: C{(str, URI, dict)}
    @raise URIError: if the URI cannot be parsed (C{unsupportedScheme} set
        for a scheme we do not handle).
    """
    value = value.strip()
    lt = value.find("<", quotedEnd(value))
    if lt >= 0:
        gt = value.find(">", lt)
        if gt < 0:
            raise URIError(f"unterminated '<' in {value!r}")
        display = value[:lt].strip().strip('"')
        uriText = value[lt + 1:gt]
        paramText = value[gt + 1:]
    else:
        display = ""
        uriText, _, paramText = value.partition(";")
        paramText = ";" + paramText if paramText else ""
    return display, parseURI(uriText.strip()), headerParams(paramText)


def headerParams(paramText):
    """
    The header parameters of a name-addr, from the text after its closing
    angle bracket (C{;expires=60;+sip.instance="<urn:...>"}): names
    lowered, a parameter without value L{None}.
    """
    params = {}
    for p in HEADER_PARAMETER.findall(paramText):
        p = p.strip()
        if p:
            name, sep, pvalue = p.partition("=")
            params[name.strip().lower()] = pvalue.strip() if sep else None
    return params


# One header parameter of a name-addr (after its ';'): a quoted string in
# its value is kept whole, whatever it holds (';', '<', '>').
HEADER_PARAMETER = re.compile(r';\s*((?:[^;"]|"(?:[^"\\]|\\.)*"?)*)')


def quotedEnd(value):
    """
    The index just past the quoted display name C{value} starts with (RFC
    3261 quoted-string, backslash escapes included), where its C{<} is to
    be looked for; C{0} when it starts with none.
    """
    if not value.startswith('"'):
        return 0
    escaped = False
    for i in range(1, len(value)):
        c = value[i]
        if escaped:
            escaped = False
        elif c == "\\":
            escaped = True
        elif c == '"':
            return i + 1
    return len(value)


def formatNameAddr(uri, params=None, display=None):
    """
    Serialise a name-addr: C{"display" <uri>;param=value}.
    """
    text = f"<{uri}>" if not display else f'"{display}" <{uri}>'
    if params:
        text += "".join(
            f";{k}" if v is None else f";{k}={v}" for k, v in params.items())
    return text


# Patched by tests that need known tags and branches.
_randomBytes = randomBytes


def newBranch():
    """
    A fresh RFC 3261 branch parameter: the magic cookie and 96 random bits.
    """
    return MAGIC_COOKIE + urlsafe_b64encode(_randomBytes(12)).decode("ascii")


def newTag():
    """
    A fresh From/To tag (64 random bits).
    """
    return _randomBytes(8).hex()


class _MessageMixin:
    """
    What L{Request} and L{Response} add to Twisted's message model.
    """

    _vias = None
    _top = None
    _nameAddrs = None
    _maxSize = DEFAULT_MAX_SIZE

    def header(self, name):
        """
        @return: the first value of the header (the whole first line), or
            C{None}.
        """
        lines = self.headers.get(headerKey(name))
        return lines[0] if lines else None

    def values(self, name):
        """
        @return: every value of the header, across its lines, comma-split for
            the headers that allow it.
        @rtype: L{list} of L{str}
        """
        key = headerKey(name)
        lines = self.headers.get(key)
        if not lines:
            return []
        if key in MULTI_VALUE:
            if len(lines) == 1:
                return splitValues(lines[0])
            result = []
            for line in lines:
                result.extend(splitValues(line))
            return result
        return list(lines)

    def hasHeader(self, name):
        return headerKey(name) in self.headers

    def addHeader(self, name, value):
        """
        Append a header line.
        """
        key = headerKey(name)
        if key == "via":
            self._vias = self._top = None
        elif self._nameAddrs is not None:
            self._nameAddrs.pop(key, None)
        self.headers.setdefault(key, []).append(value)

    def insertHeader(self, name, value):
        """
        Add a header line before the existing lines of that header (a Via a
        proxy adds, a Record-Route).
        """
        key = headerKey(name)
        if key == "via":
            self._vias = self._top = None
        elif self._nameAddrs is not None:
            self._nameAddrs.pop(key, None)
        lines = self.headers.get(key)
        if lines is None:
            self.headers[key] = [value]
        else:
            lines.insert(0, value)

    def setHeader(self, name, value):
        """
        Replace every line of a header with one value.
        """
        key = headerKey(name)
        if key == "via":
            self._vias = self._top = None
        elif self._nameAddrs is not None:
            self._nameAddrs.pop(key, None)
        self.headers[key] = [value]

    def removeHeader(self, name):
        key = headerKey(name)
        if key == "via":
            self._vias = self._top = None
        elif self._nameAddrs is not None:
            self._nameAddrs.pop(key, None)
        self.headers.pop(key, None)

    def vias(self):
        """
        @return: the parsed Via values, top first.
        @rtype: L{list} of L{Via}
        @raise ValueError: if a Via value is malformed.
        """
        if self._vias is None:
            self._vias = [parseVia(v) for v in self.values("via")]
        return self._vias

    def topVia(self):
        """
        @return: the top Via value, or C{None}.
        """
        vias = self._vias
        if vias is None:
            top = self._top
            if top is not None:
                return top
            lines = self.headers.get("via")
            if not lines:
                return None
            first = lines[0]
            if "," in first:
                first = splitValues(first)[0]
            self._top = top = parseVia(first)
            return top
        return vias[0] if vias else None

    def nameAddr(self, name):
        """
        The first value of a From, To, Contact, Route ... header parsed as a
        name-addr, C{(displayName, uri, params)}, cached until the header
        changes.

        @raise URIError: if it cannot be parsed.
        @raise KeyError: if the header is missing.
        """
        key = headerKey(name)
        cache = self._nameAddrs
        if cache is None:
            cache = self._nameAddrs = {}
        else:
            parsed = cache.get(key)
            if parsed is not None:
                return parsed
        lines = self.headers.get(key)
        if not lines:
            raise KeyError(name)
        value = lines[0]
        if key in MULTI_VALUE and "," in value:
            value = splitValues(value)[0]
        cache[key] = parsed = parseNameAddr(value)
        return parsed

    def setTopVia(self, via):
        """
        Replace the top Via value (as the transport does after adding
        C{received} and C{rport}).
        """
        lines = self.headers["via"]
        if len(lines) == 1 and "," not in lines[0]:
            # The common case: one Via value, nothing else to reserialise.
            lines[0] = via.toString()
            self._top = via
            return
        vias = self.vias()
        vias[0] = via
        self.headers["via"] = [v.toString() for v in vias]
        self._vias = vias

    def popTopVia(self):
        """
        Remove the top Via value (a proxy forwarding a response).

        @return: the removed L{Via}.
        """
        vias = self.vias()
        top = vias.pop(0)
        if vias:
            self.headers["via"] = [v.toString() for v in vias]
        else:
            self.headers.pop("via", None)
        self._vias = vias
        self._top = None
        return top

    def viaCount(self):
        """
        @return: how many Via values the message carries (not Via lines).
        """
        return countVias(self)

    @property
    def branch(self):
        via = self.topVia()
        return None if via is None else via.branch

    def cseq(self):
        """
        @return: C{(number, METHOD)}.
        @raise ValueError: if the CSeq header is missing or malformed.
        """
        value = self.header("cseq")
        if value is None:
            raise ValueError("missing CSeq")
        number, _, method = value.strip().partition(" ")
        method = method.strip()
        if not number.isdigit() or not method or " " in method:
            raise ValueError(f"bad CSeq {value!r}")
        return int(number), method

    @property
    def callID(self):
        return self.header("call-id")

    def toBytes(self):
        """
        Serialise canonically: canonical header names, one line per stored
        header line, Content-Length recomputed from the body.
        """
        body = self.body
        if isinstance(body, str):
            body = body.encode("utf-8")
        lines = [self._getHeaderLine()]
        append = lines.append
        for key, values in self.headers.items():
            if key == "content-length":
                continue
            name = _CANONICAL_NAMES.get(key) or canonicalName(key)
            for value in values:
                append(f"{name}: {value}")
        append(f"Content-Length: {len(body)}")
        append("")
        append("")
        return "\r\n".join(lines).encode("utf-8") + body

    def toString(self):
        return self.toBytes().decode("utf-8", "replace")


class Request(_MessageMixin, sip.Request):
    """
    A SIP request.  The Request-URI is parsed when first read (C{uri});
    C{uriText} holds it as received.
    """

    def __init__(self, method, uri, version=SIP_VERSION):
        self.headers = {}
        self.body = b""
        self.finished = 0
        self.method = method
        self.version = version
        if isinstance(uri, URI):
            self._uri = uri
            self.uriText = uri.toString()
        else:
            self._uri = None
            self.uriText = uri

    @property
    def uri(self):
        if self._uri is None:
            self._uri = parseURI(self.uriText)
        return self._uri

    @uri.setter
    def uri(self, value):
        if isinstance(value, str):
            self._uri = None
            self.uriText = value
        else:
            self._uri = value
            self.uriText = value.toString()

    def _getHeaderLine(self):
        uri = self.uriText if self._uri is None else self._uri.toString()
        return f"{self.method} {uri} {SIP_VERSION}"

    def __repr__(self):
        return f"<Request {self.method} {self.uriText}>"


class Response(_MessageMixin, sip.Response):
    """
    A SIP response.
    """

    def __init__(self, code, phrase=None, version=SIP_VERSION):
        self.headers = {}
        self.body = b""
        self.finished = 0
        self.code = code
        self.version = version
        if phrase is None:
            phrase = sip.statusCodes.get(code, "Unknown")
        self.phrase = phrase

    def _getHeaderLine(self):
        return f"{SIP_VERSION} {self.code} {self.phrase}"

    def __repr__(self):
        return f"<Response {self.code} {self.phrase}>"


def hasToTag(message):
    """
    Whether a message's To carries a tag: a request inside a dialog, or a
    response that created one.
    """
    to = message.headers.get("to")
    return bool(to) and ";tag=" in to[0].replace(" ", "").lower()


def hasCredentials(message):
    """
    Whether a request carries credentials: an C{Authorization} or
    C{Proxy-Authorization} value, whatever its realm or scheme.
    """
    headers = message.headers
    return any(headers.get("authorization", ())) or any(
        headers.get("proxy-authorization", ()))


def countVias(message):
    """
    How many Via values a message carries: a Via line may hold several
    comma-separated values, and every one counts.
    """
    lines = message.headers.get("via")
    if not lines:
        return 0
    count = 0
    for line in lines:
        if '"' in line:
            count += len(splitValues(line))
        else:
            count += line.count(",") + 1
    return count


_HEADER_LINE_CHARS = frozenset(" \t")


def parseMessage(data, maxSize=DEFAULT_MAX_SIZE, stream=False):
    """
    Parse one complete message.

    @param data: the bytes of the message: a datagram, or what
        L{StreamFramer} framed off a stream.
    @param maxSize: past this many bytes the message is answered C{513}.
    @param stream: C{True} for a message from a stream transport, where a
        missing Content-Length is an error (RFC 3261 section 18.3).

    @rtype: L{Request} or L{Response}
    @raise MessageError: if the message is malformed; its C{message} holds
        the request when a response can be built from it.
    """
    if data[:1] in (b"\r", b"\n"):
        # CRLFs before the start line are ignored (section 7.5).
        data = data.lstrip(b"\r\n")
    end = data.find(b"\r\n\r\n")
    if end < 0:
        # Tolerate bare LF line ends (section 7.5 asks for CRLF, but a
        # liberal reader costs nothing here).
        end = data.find(b"\n\n")
        if end < 0:
            _salvage(data, "Missing End Of Headers", truncated=True)
        head, body = data[:end], data[end + 2:]
        head = head.replace(b"\r\n", b"\n")
        sep = "\n"
    else:
        head, body = data[:end], data[end + 4:]
        sep = "\r\n"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        _salvage(head, "Headers Are Not UTF-8")
    text = text.lstrip("\r\n")
    lines = text.split(sep)
    first = lines[0]
    parts = first.split(" ")
    if len(parts) != 3 or not (parts[0] and parts[1] and parts[2]):
        if first.startswith("SIP/") and len(parts) > 2 and parts[1]:
            # A reason phrase holds spaces, or is empty.
            parts = first.split(" ", 2)
        else:
            _badStartLine(first, lines, head)
    a, b, c = parts
    if c == SIP_VERSION and _TOKEN_CHARS.issuperset(a):
        # The common request line.
        message = Request(a, b)
    elif a[:4].upper() == "SIP/":
        if a != SIP_VERSION and a.upper() != SIP_VERSION:
            raise MessageError(505, "SIP Version Not Supported")
        if not (len(b) == 3 and b.isdigit()) or not "100" <= b <= "699":
            raise MessageError(400, "Bad Status Code")
        message = Response(int(b), c)
    elif c[:4].upper() == "SIP/":
        message = Request(a, b)
        if c != SIP_VERSION and c.upper() != SIP_VERSION:
            _parseHeaders(message, lines)
            if not _VERSION.match(c):
                raise MessageError(400, "Bad SIP Version",
                                   _answerable(message))
            raise MessageError(505, "SIP Version Not Supported",
                               _answerable(message))
        if not _TOKEN_CHARS.issuperset(a):
            _salvage(head, "Bad Method")
    else:
        _salvage(head, "Bad Start Line")
    _parseHeaders(message, lines)

    lengths = message.headers.get("content-length")
    if lengths is None:
        if stream:
            raise MessageError(400, "Missing Content-Length",
                               _answerable(message))
    else:
        if len(lengths) > 1:
            raise MessageError(400, "Duplicate Content-Length Header",
                               _answerable(message))
        lengthText = lengths[0].strip()
        if not lengthText.isdigit():
            raise MessageError(400, "Bad Content-Length",
                               _answerable(message))
        length = int(lengthText)
        if length < len(body):
            # Section 18.3: over a datagram transport, bytes past
            # Content-Length are discarded.
            body = body[:length]
        elif length > len(body):
            raise MessageError(400, "Content-Length Mismatch",
                               _answerable(message))
    message.body = body
    if len(data) > maxSize:
        raise MessageError(513, "Message Too Large", _answerable(message))
    return message


_VERSION = re.compile(r"SIP/[0-9]+\.[0-9]+$", re.IGNORECASE)


def _salvage(data, phrase, truncated=False):
    """
    Raise the error for a message whose start line or framing is broken,
    with what can be read of it as a request, so that it is answered when
    its top Via and CSeq can be read (and it is not an C{ACK}, which is
    never answered).  A response, or a request whose method cannot be
    told, is dropped.

    @param data: the bytes of the header section, or of the whole message
        when C{truncated} (its last line may be cut short: it is not read).
    """
    text = data.decode("utf-8", "replace").lstrip("\r\n")
    lines = text.replace("\r\n", "\n").split("\n")
    if truncated and len(lines) > 1:
        lines = lines[:-1]
    first = lines[0]
    if first[:4].upper() == "SIP/":
        raise MessageError(400, phrase)
    parts = first.split()
    method = parts[0] if parts and _TOKEN_CHARS.issuperset(parts[0]) else None
    message = Request(method or "", parts[1] if len(parts) > 1 else "")
    try:
        _parseHeaders(message, lines)
    except MessageError:
        pass
    try:
        number, cseqMethod = message.cseq()
    except ValueError:
        raise MessageError(400, phrase)
    if method is None or method != cseqMethod and method.upper() == "ACK":
        message.method = cseqMethod
    raise MessageError(400, phrase, _answerable(message))


def _badStartLine(first, lines, head):
    """
    Raise the error for a start line that is not three parts separated by
    single spaces: for a request whose headers can be read, a C{400} naming
    the problem (RFC 4475 sections 3.1.2.8 to 3.1.2.10), else a drop.
    """
    parts = first.split()
    if len(parts) < 3 or parts[-1][:4].upper() != "SIP/" or (
            not _TOKEN_CHARS.issuperset(parts[0])):
        _salvage(head, "Bad Start Line")
    if first != first.rstrip(" \t"):
        phrase = "Trailing Space In Request-Line"
    elif len(parts) > 3:
        phrase = "Space In Request-URI"
    else:
        phrase = "Extra Spaces In Request-Line"
    message = Request(parts[0], " ".join(parts[1:-1]))
    _parseHeaders(message, lines)
    raise MessageError(400, phrase, _answerable(message))


def _parseHeaders(message, lines):
    """
    Read the header lines into C{message.headers}.  A malformed line is
    skipped and the rest read (so the error can be answered when the Via
    comes after it); the first problem is raised at the end.
    """
    headers = message.headers
    previous = None
    problem = None
    for line in lines[1:]:
        if not line:
            continue
        if line[0] in _HEADER_LINE_CHARS:
            if previous is None:
                problem = problem or "Bad Header Continuation"
                continue
            # Folded line (section 7.3.1): joins the previous value.
            values = headers[previous]
            values[-1] = values[-1] + " " + line.strip()
            continue
        colon = line.find(":")
        if colon <= 0:
            problem = problem or "Malformed Header Line"
            previous = None
            continue
        key = _NAME_CACHE.get(line[:colon])
        if key is None:
            name = line[:colon].rstrip(" \t")
            if not name or not _TOKEN_CHARS.issuperset(name):
                problem = problem or "Malformed Header Name"
                previous = None
                continue
            key = headerKey(name)
        value = line[colon + 1:].strip()
        values = headers.get(key)
        if values is None:
            headers[key] = [value]
        else:
            values.append(value)
        previous = key
    if problem is not None:
        raise MessageError(400, problem, _answerable(message))


def _answerable(message):
    """
    The message, when a response can be routed back: a request with a Via.
    A response to a request missing From, To, Call-ID or CSeq copies what
    there is; the client matches it by the branch of its Via.
    """
    if not isinstance(message, Request) or not message.headers.get("via"):
        return None
    return message


_REQUIRED = ("from", "to", "call-id", "cseq")
# A control character (but a tab) in a Call-ID: never valid (RFC 3261
# "word").  Such a request is dropped, its reason counted: a response must
# copy the Call-ID, and one holding a control character would be
# malformed itself (and its signature, which joins fields with NUL,
# cannot be made).
_CALL_ID_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_OTHER_SINGLE = tuple(k for k in SINGLE_VALUE if k not in _REQUIRED)


def validateRequest(request, checkMaxForwards=True):
    """
    Check a parsed request against RFC 3261 sections 8.2 and 16.3.

    @param checkMaxForwards: answer C{483} when Max-Forwards is 0 (OPTIONS
        excepted, which a server may answer itself: section 16.3 step 2).
    @raise MessageError: with the response to send (C{message} is set when
        it can be routed), or with C{message=None} when the request must be
        dropped (no usable Via).
    """
    headers = request.headers
    vias = headers.get("via")
    if not vias:
        raise MessageError(400, "Missing Via Header")
    try:
        request.topVia()  # parsed and cached: the answer is routed by it
    except ViaError as e:
        if e.via is None:
            # No address to send a datagram to: answered only on the
            # connection the request came in on.
            raise MessageError(400, e.phrase, _answerable(request),
                               streamOnly=True)
        request._top = e.via
        raise MessageError(400, e.phrase, _answerable(request))
    get = headers.get
    for key in _REQUIRED:
        values = get(key)
        if not values:
            raise MessageError(400, f"Missing {canonicalName(key)} Header",
                               _answerable(request))
        if len(values) > 1:
            raise MessageError(400, f"Duplicate {canonicalName(key)} Header",
                               request)
    for key in _OTHER_SINGLE:
        values = get(key)
        if values is not None and len(values) > 1:
            raise MessageError(400, f"Duplicate {canonicalName(key)} Header",
                               request)
    if _CALL_ID_CONTROL.search(get("call-id")[0]) is not None:
        raise MessageError(400, "Bad Call-ID", None)
    # The CSeq, read as cseq() reads it, without the header lookup again.
    number, _, method = get("cseq")[0].strip().partition(" ")
    method = method.strip()
    if not number.isdigit() or not method or " " in method:
        raise MessageError(400, "Bad CSeq", request)
    number = int(number)
    if number >= 2 ** 31:
        raise MessageError(400, "CSeq Number Too Large", request)
    if method != request.method:
        raise MessageError(400, "CSeq Method Does Not Match", request)
    if len(vias) > 1 or "," in vias[0]:
        # The values under the top one: a proxy reads them all (loop
        # detection), so a bad one is a 400 here rather than later.
        try:
            request.vias()
        except ViaError as e:
            raise MessageError(400, e.phrase, request)
    try:
        uri = request.uri
    except URIError as e:
        if e.unsupportedScheme:
            raise MessageError(416, "Unsupported URI Scheme", request)
        raise MessageError(400, "Bad Request-URI", request)
    if uri.headers:
        # Section 19.1.1: headers are not allowed in a Request-URI; they
        # must not reach the next hop (RFC 4475 section 3.1.2.11).
        raise MessageError(400, "Headers Not Allowed In Request-URI",
                           request)
    # From and To are checked for structure only: their URIs are parsed
    # by whoever uses them (section 16.3: what a server does not use is
    # left alone), which keeps tel: and other schemes fine here.
    for key in ("from", "to"):
        value = headers[key][0]
        first = value[:1]
        if first == "<":
            gt = value.find(">")
            if gt > 1 and ":" in value[1:gt]:
                continue
        elif first == '"':
            # "Display Name" <uri>: the common form, checked in place.
            q = value.find('"', 1)
            if q > 0 and value[q + 1:q + 3] == " <" and "\\" not in value[1:q]:
                gt = value.find(">", q)
                if gt > q + 3 and ":" in value[q + 3:gt]:
                    continue
        if _splitAddress(value) is None:
            raise MessageError(400, f"Bad {canonicalName(key)} Header",
                               request)
    contacts = headers.get("contact")
    if contacts is not None:
        line = contacts[0]
        gt = line.find(">") if line[:1] == "<" else -1
        if (gt > 1 and len(contacts) == 1 and "," not in line
                and ":" in line[1:gt]
                and (gt == len(line) - 1 or _PLAIN_PARAMS.match(line, gt + 1))):
            # One Contact written the common way: nothing more to check.
            pass
        else:
            problem = _checkContacts(request)
            if problem is not None:
                raise MessageError(400, problem, request)
    maxForwards = headers.get("max-forwards")
    if maxForwards is not None:
        text = maxForwards[0].strip()
        if not text.isdigit() or int(text) > 255:
            raise MessageError(400, "Bad Max-Forwards", request)
        if checkMaxForwards and text == "0" and request.method != "OPTIONS":
            raise MessageError(483, "Too Many Hops", request)


_DISPLAY_CHARS = _TOKEN_CHARS | frozenset(" \t")


def _quotedEnd(text, start):
    """
    The index just past the quoted string that starts at C{start}, or -1.
    """
    match = _QUOTED_PREFIX.match(text, start)
    return -1 if match is None else match.end()


def _splitAddress(value):
    """
    Split a name-addr or addr-spec into C{(uriText, paramText)}, checking
    its shape: a URI with a scheme, in angle brackets if there are any,
    after a display name that is a quoted string or tokens (RFC 4475
    sections 3.1.2.6 and 3.1.2.15).

    @return: the two texts, or C{None} when the value is malformed.
    """
    first = value[:1]
    if first == "<":
        gt = value.find(">")
        if gt > 1 and ":" in value[1:gt]:
            return value[1:gt], value[gt + 1:]
        return None
    start = 0
    if first == '"':
        start = value.find('"', 1) + 1
        if not start or "\\" in value[1:start]:
            start = _quotedEnd(value, 0)
            if start < 0:
                return None
    lt = value.find("<", start)
    if lt >= 0:
        if lt > start and not _DISPLAY_CHARS.issuperset(value[start:lt]):
            return None
        gt = value.find(">", lt)
        if gt < 0:
            return None
        uriText = value[lt + 1:gt]
        if ":" not in uriText:
            return None
        return uriText, value[gt + 1:]
    if start:
        return None
    colon = value.find(":")
    if colon <= 0 or ";" in value[:colon] or " " in value[:colon]:
        return None
    uriText, sep, paramText = value.partition(";")
    return uriText, sep + paramText


def _looksLikeAddress(value):
    """
    Whether a From/To value has the shape of a name-addr or addr-spec (see
    L{_splitAddress}).
    """
    return _splitAddress(value) is not None


def _checkContacts(request):
    """
    Check the Contact values of a request: C{*} alone, or addresses whose
    header parameters are well formed.

    @return: a reason phrase naming the problem, or C{None}.
    """
    lines = request.headers["contact"]
    if len(lines) == 1 and "," not in lines[0]:
        values = [lines[0]]
    else:
        values = request.values("contact")
    for value in values:
        if value == "*":
            if len(values) > 1:
                return "Bad Contact Header"
            continue
        split = _splitAddress(value)
        if split is None:
            return "Bad Contact Header"
        uriText, paramText = split
        if value[:1] != "<" and "<" not in value and (
                "?" in uriText or "," in uriText):
            # Section 20: such a URI must be in angle brackets.
            return "Contact URI Not In Angle Brackets"
        paramText = paramText.strip(" \t")
        if not paramText or _PLAIN_PARAMS.match(paramText):
            continue
        params = splitParams(paramText)
        if params is None or params[0]:
            return "Bad Contact Parameter"
        for param in params[1:]:
            try:
                checkParam(param)
            except ValueError as e:
                return f"{e.args[0]} In Contact"
    return None


def validateResponse(response):
    """
    Check a parsed response: one that fails cannot be matched or routed and
    is dropped by the caller.

    @raise MessageError: describing the problem.
    """
    headers = response.headers
    for key in ("via", "from", "to", "call-id", "cseq"):
        if not headers.get(key):
            raise MessageError(400, f"Missing {canonicalName(key)} Header")
    try:
        response.topVia()
        response.cseq()
    except ValueError as e:
        raise MessageError(400, str(e))


def responseTo(request, code, phrase=None, toTag=None):
    """
    Build a response to a request (RFC 3261 section 8.2.6): Via values,
    From, Call-ID and CSeq copied, To copied with a tag added for codes
    above 100 when it has none.

    @param toTag: the tag to add; a fresh one when C{None}.
    @rtype: L{Response}
    """
    response = Response(code, phrase)
    headers = request.headers
    out = response.headers
    vias = headers.get("via")
    if vias:
        out["via"] = list(vias)
        if request._vias is not None:
            response._vias = list(request._vias)
        response._top = request._top
    for key in ("from", "to", "call-id", "cseq"):
        values = headers.get(key)
        if values:
            out[key] = [values[0]]
    if code > 100:
        to = out.get("to")
        if to and ";tag=" not in to[0].replace(" ", "").lower():
            to[0] = f"{to[0]};tag={toTag or newTag()}"
    return response


def errorResponse(error, stream=False):
    """
    The response to send for a L{MessageError}, or C{None} when none can be
    routed, or the message is an C{ACK} (never answered: RFC 3261 section
    17.2.1).

    @param stream: the message came over a connection (the response can go
        back on it even when the top Via is unusable).
    """
    message = error.message
    if message is None or error.streamOnly and not stream:
        return None
    if message.method == "ACK":
        return None
    return responseTo(message, error.code, error.phrase)


class StreamFramer:
    """
    Frames SIP messages off a stream (TCP, TLS) by their Content-Length
    (RFC 3261 section 18.3) and hands each complete message, as bytes, to
    C{messageReceived} (for L{parseMessage}).

    Twisted's L{sip.MessagesParser} is not used as is: it decodes the body
    as text and so counts Content-Length in characters (a multi-byte UTF-8
    body breaks its framing), logs a traceback on malformed input, and waits
    for the connection to close when Content-Length is missing.

    What has arrived of the current message is kept in one C{bytearray}
    (never a list of lines: a header section of one-byte lines would cost
    some forty bytes of memory per byte received), so a connection holds at
    most about C{maxSize} bytes; C{buffered} says how many it holds now.

    After a framing error (a header section or message larger than
    C{maxSize}, a missing or bad Content-Length) the stream cannot be
    resynchronised: the framer reports it once, drops what it holds and
    ignores the rest; the caller answers if it can and closes the
    connection.

    @ivar messageReceived: called with each message's bytes.
    @ivar framingError: called with a L{MessageError} (its C{message} is the
        request if a response can be built).
    @ivar keepAlive: called for an RFC 5626 double-CRLF keep-alive ping.
    @ivar inMessage: C{True} while a message has started and is not
        complete.
    @ivar inHeaders: C{True} while a message has started and its header
        section is not complete.
    """

    def __init__(self, messageReceived, framingError, keepAlive,
                 maxSize=DEFAULT_MAX_SIZE):
        self.messageReceived = messageReceived
        self.framingError = framingError
        self.keepAlive = keepAlive
        self.maxSize = maxSize
        self._invalid = False
        self._buffer = bytearray()
        # Where the search for the end of the headers resumes.
        self._scanned = 0
        # Size of the whole current message once its headers are complete.
        self._total = None
        self._emptyLines = 0

    @property
    def buffered(self):
        """
        How many bytes of unfinished messages the framer holds.
        """
        return len(self._buffer)

    @property
    def inMessage(self):
        return bool(self._buffer)

    @property
    def inHeaders(self):
        return bool(self._buffer) and self._total is None

    def discard(self):
        """
        Drop what is held and ignore whatever arrives from now on (the
        connection is being closed).
        """
        self._invalid = True
        self._buffer = bytearray()

    def dataReceived(self, data):
        if self._invalid:
            return
        buffer = self._buffer
        if not buffer or buffer == b"\r":
            data = self._skipEmptyLines(bytes(buffer) + data)
            buffer = self._buffer = bytearray()
            if not data:
                return
        buffer += data
        while buffer and not self._invalid:
            if self._total is None and not self._headers():
                return
            total = self._total
            if len(buffer) < total:
                return
            message = bytes(buffer[:total])
            del buffer[:total]
            self._total = None
            self._scanned = 0
            if not buffer:
                # Give the memory of a large message back.
                buffer = self._buffer = bytearray()
            self.messageReceived(message)
            if self._invalid or not buffer:
                return
            if buffer[:1] in (b"\r", b"\n"):
                rest = self._skipEmptyLines(bytes(buffer))
                buffer = self._buffer = bytearray(rest)
            else:
                self._emptyLines = 0

    def _skipEmptyLines(self, data):
        """
        CRLFs between messages are skipped; two in a row are a keep-alive.
        A lone CR waits for its LF.
        """
        while data[:1] == b"\r" or data[:1] == b"\n":
            if data[:2] == b"\r\n":
                data = data[2:]
                self._emptyLines += 1
                if self._emptyLines == 2:
                    self._emptyLines = 0
                    self.keepAlive()
            elif data == b"\r":
                # Wait for the rest of the line.
                break
            else:
                data = data[1:]
        else:
            if data:
                self._emptyLines = 0
        return data

    def _headers(self):
        """
        Look for the end of the header section; once found, learn the
        message's size from its Content-Length.

        @return: whether the size is known.
        """
        buffer = self._buffer
        end = buffer.find(b"\r\n\r\n", self._scanned)
        if end < 0:
            if len(buffer) > self.maxSize:
                last = buffer.rfind(b"\r\n")
                self._fail(self._errorFor(
                    513, "Message Too Large",
                    bytes(buffer[:last]) if last > 0 else b""))
            else:
                self._scanned = max(0, len(buffer) - 3)
            return False
        head = bytes(buffer[:end])
        length = None
        for line in head.split(b"\r\n"):
            if line[:1] in b"CcLl":
                name, _, value = line.partition(b":")
                if name.strip().lower() in (b"content-length", b"l"):
                    value = value.strip()
                    if not value.isdigit():
                        self._fail(self._errorFor(400, "Bad Content-Length",
                                                  head))
                        return False
                    length = int(value)
                    break
        if length is None:
            self._fail(self._errorFor(400, "Missing Content-Length", head))
            return False
        total = end + 4 + length
        if total > self.maxSize:
            self._fail(self._errorFor(513, "Message Too Large", head))
            return False
        self._total = total
        return True

    def _fail(self, error):
        if not self._invalid:
            self.discard()
            self.framingError(error)

    def _errorFor(self, code, phrase, head):
        # Parse the headers read so far so the error can be answered.
        message = None
        if head:
            try:
                message = parseMessage(head + b"\r\n\r\n", maxSize=1 << 30)
            except MessageError as e:
                message = e.message
        return MessageError(code, phrase, message and _answerable(message))
