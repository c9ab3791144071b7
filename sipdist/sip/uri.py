# -*- test-case-name: tests.test_uri -*-
"""
SIP and SIPS URIs (RFC 3261 section 19.1) on top of L{twisted.protocols.sip.URL}.

Twisted's L{sip.parseURL} knows only the C{sip:} scheme, no IPv6 references
and drops unknown parameters into a list; this module keeps the
L{sip.URL} attribute names (C{username}, C{host}, C{port}, C{transport},
C{other}, C{headers}) so code written for Twisted's model keeps working, adds
the scheme and keeps parameters in order so that serialisation is canonical.
"""

from urllib.parse import unquote

from sipdist.sip.twistedsip import sip

SUPPORTED_SCHEMES = frozenset(("sip", "sips"))

# Parameters Twisted's URL holds as attributes; everything else is kept in
# ``params`` in order of appearance.
_ATTR_PARAMS = ("transport", "ttl", "maddr", "method", "user", "lr")


class URIError(ValueError):
    """
    A URI could not be parsed.

    @ivar unsupportedScheme: True when the text is a well-formed URI of a
        scheme we do not handle (a request naming it gets C{416}).
    """

    def __init__(self, message, unsupportedScheme=False):
        ValueError.__init__(self, message)
        self.unsupportedScheme = unsupportedScheme


class URI(sip.URL):
    """
    A SIP or SIPS URI.

    @ivar scheme: C{"sip"} or C{"sips"}.
    @ivar params: L{dict} of URI parameters, names lower-cased, values as
        written (C{None} for a parameter without a value), in order.
    """

    def __init__(self, host, username=None, password=None, port=None,
                 scheme="sip", params=None, headers=None):
        self.scheme = scheme
        self.username = username
        self.password = password
        self.host = host
        self.port = port
        self.params = {} if params is None else params
        self.headers = {} if headers is None else headers

    # Twisted's URL exposes some parameters as attributes; keep them as views
    # on ``params`` so there is one source of truth.
    @property
    def transport(self):
        return self.params.get("transport")

    @transport.setter
    def transport(self, value):
        self._setParam("transport", value)

    @property
    def maddr(self):
        return self.params.get("maddr")

    @maddr.setter
    def maddr(self, value):
        self._setParam("maddr", value)

    @property
    def ttl(self):
        return self.params.get("ttl")

    @ttl.setter
    def ttl(self, value):
        self._setParam("ttl", value)

    @property
    def method(self):
        return self.params.get("method")

    @method.setter
    def method(self, value):
        self._setParam("method", value)

    @property
    def usertype(self):
        return self.params.get("user")

    @usertype.setter
    def usertype(self, value):
        self._setParam("user", value)

    tag = None

    @property
    def other(self):
        return [
            k if v is None else f"{k}={v}"
            for k, v in self.params.items()
            if k not in _ATTR_PARAMS
        ]

    def _setParam(self, name, value):
        if value is None:
            self.params.pop(name, None)
        else:
            self.params[name] = value

    @property
    def secure(self):
        return self.scheme == "sips"

    def hostport(self):
        """
        @return: C{host} or C{host:port} as written in a URI.
        """
        if self.port is None:
            return self.host
        return f"{self.host}:{self.port}"

    def copy(self):
        return URI(self.host, self.username, self.password, self.port,
                   self.scheme, dict(self.params), dict(self.headers))

    def toString(self):
        parts = [self.scheme, ":"]
        if self.username is not None:
            parts.append(self.username)
            if self.password is not None:
                parts.append(":" + self.password)
            parts.append("@")
        parts.append(self.host)
        if self.port is not None:
            parts.append(f":{self.port}")
        for name, value in self.params.items():
            parts.append(f";{name}" if value is None else f";{name}={value}")
        if self.headers:
            parts.append("?")
            parts.append("&".join(f"{k}={v}" for k, v in self.headers.items()))
        return "".join(parts)

    __str__ = toString

    def __repr__(self):
        return f"<URI {self.toString()}>"

    def __eq__(self, other):
        if not isinstance(other, URI):
            return NotImplemented
        return comparisonKey(self) == comparisonKey(other)

    def __hash__(self):
        return hash(comparisonKey(self))


def comparisonKey(uri):
    """
    What two equal URIs have in common (RFC 3261 section 19.1.4,
    simplified: scheme, user and password case-sensitive after unescaping,
    host case-insensitive, parameters case-insensitive): for a URI
    compared with many (a registrar's bindings), made once and compared as
    a tuple.

    @type uri: L{URI}
    @rtype: L{tuple}
    """
    return (
        uri.scheme,
        None if uri.username is None else unquote(uri.username),
        uri.password,
        uri.host.lower(),
        uri.port,
        tuple(sorted((k, None if v is None else v.lower())
                     for k, v in uri.params.items())),
    )


# Characters that never appear unescaped in a user part or host.
_NOT_IN_PARTS = frozenset(" \t\r\n<>\"")


def parseURI(text):
    """
    Parse a SIP or SIPS URI.

    @param text: the URI, without angle brackets.
    @type text: L{str}
    @rtype: L{URI}
    @raise URIError: if C{text} is not a SIP or SIPS URI.
    """
    colon = text.find(":")
    if colon <= 0:
        raise URIError(f"not a URI: {text!r}")
    scheme = text[:colon].lower()
    if scheme not in SUPPORTED_SCHEMES:
        if scheme.isalnum() or all(c.isalnum() or c in "+-." for c in scheme):
            raise URIError(f"unsupported URI scheme {scheme!r}",
                           unsupportedScheme=True)
        raise URIError(f"not a URI: {text!r}")
    rest = text[colon + 1:]
    username = password = None
    # The user part may hold "?", ";" and "/" (section 25.1: user-unreserved,
    # RFC 4475 section 3.1.1.2); neither parameters nor headers may hold
    # "@", so the last "@" ends it.
    at = rest.rfind("@")
    if at >= 0:
        userinfo, rest = rest[:at], rest[at + 1:]
        if not userinfo:
            raise URIError(f"empty user part in {text!r}")
        if not _NOT_IN_PARTS.isdisjoint(userinfo):
            raise URIError(f"bad user part in {text!r}")
        username, sep, password = userinfo.partition(":")
        if not sep:
            password = None
    headers = {}
    q = rest.find("?")
    if q >= 0:
        for pair in rest[q + 1:].split("&"):
            if pair:
                name, _, value = pair.partition("=")
                headers[name] = value
        rest = rest[:q]
    hostport, *paramList = rest.split(";")
    params = {}
    for p in paramList:
        if not p:
            continue
        name, sep, value = p.partition("=")
        params[name.lower()] = value if sep else None
    host, port = _splitHostPort(hostport, text)
    return URI(host, username, password, port, scheme, params, headers)


def _splitHostPort(hostport, text):
    if hostport.startswith("["):
        end = hostport.find("]")
        if end < 0:
            raise URIError(f"unterminated IPv6 reference in {text!r}")
        host, rest = hostport[:end + 1], hostport[end + 1:]
        if rest and not rest.startswith(":"):
            raise URIError(f"bad host in {text!r}")
        portText = rest[1:] if rest else None
    else:
        host, sep, portText = hostport.partition(":")
        if not sep:
            portText = None
    if not host or not _NOT_IN_PARTS.isdisjoint(host) or "@" in host:
        raise URIError(f"bad host in {text!r}")
    port = None
    if portText is not None:
        if not portText.isdigit() or not 0 < int(portText) < 65536:
            raise URIError(f"bad port in {text!r}")
        port = int(portText)
    return host, port


def normaliseAOR(uri):
    """
    The key under which an address-of-record is stored and compared:
    C{sip:user@host} with the scheme folded to C{sip}, the user part
    unescaped, the host lower-cased, and no port, parameters or headers.

    A bare C{user@host} is accepted too, for command lines and files.

    @param uri: a L{URI} or its text.
    @rtype: L{str}
    @raise URIError: if C{uri} has no user part or cannot be parsed.
    """
    if isinstance(uri, str):
        text = uri.strip()
        if text.startswith("<") and text.endswith(">"):
            text = text[1:-1]
        if ":" not in text.split("@", 1)[0] or text.find(":") > text.find("@") >= 0:
            # "alice@example.com" (no scheme) — but not "sip:alice@…"
            if not text.lower().startswith(("sip:", "sips:")):
                text = "sip:" + text
        uri = parseURI(text)
    if uri.username is None:
        raise URIError(f"an address-of-record needs a user part: {uri}")
    username = uri.username
    if "%" in username:
        username = unquote(username)
    return f"sip:{username}@{uri.host.lower()}"
