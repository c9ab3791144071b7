# -*- test-case-name: tests.test_fastchallenge -*-
"""
The byte-level fast path of the commonest request a store role receives:
the first REGISTER of a login, over UDP, without credentials, which the
full path (parse, validate, transaction, chain, authenticator) answers with
a C{401} challenge.

L{FastChallenge} is given each datagram by the transport (after the capture
and the overload filter saw it, as they see every datagram) and answers it
itself only when a cheap scan shows it is exactly such a request written
the common way: the request line C{REGISTER sip:DOMAIN SIP/2.0} (perhaps
C{;transport=udp}) naming a domain or address of ours, one Via (UDP, an
IPv4 address or a host name, an RFC 3261 branch, C{rport} or not, no other
parameter), a From with a tag, a To without one (in brackets or bare), a
Call-ID, a CSeq, at most one Max-Forwards (not 0), Contact (URI and header
parameters without a comma), Expires, User-Agent, Allow, Supported
(without the redirect option tag, which chooses the challenge's
algorithms) and a lone Route of the form C{<sip:HOST[:PORT];lr>} (a
client's outbound proxy: see L{sipdist.roles.fastredirect.noteRoute}),
Accept lines of plain media types, a Content-Length of 0 and no body, each
header once (but Accept), in its canonical spelling, with no folding and
no extra white space.  This is how SIPp, baresip and linphone write it.
Anything else (any other header: Authorization, Require, Path ...; compact
forms; IPv6; a retransmission; a full table; while the overload control
sheds, a request it did not read and admit) returns C{False} and the
datagram takes the full path.  A request the overload control admitted
takes the fast path as at any other time, so that a server near its
limit does not spend twice the CPU on each request it still serves.

What it does is what the full path does for such a request, with the same
result: the same bytes sent to the same address (the Via with
C{received}/C{rport} as the transport writes it, a fresh To tag, the
C{Server} header, the authenticator's challenge with a fresh nonce); no
record of the transaction (a challenge to a request without credentials is
stateless, RFC 3261 section 8.2.7: a retransmission is a new request,
challenged again); the counters (requests answered by
method and code, transactions created, authentication outcomes).  No
decision is logged for a challenge on either path.  C{tests/
test_fastchallenge.py} runs both paths over a corpus and compares.
"""

import platform
import re

from sipdist.auth.digest import MAX_VALUE_LENGTH
from sipdist.roles.fastredirect import (
    REDIRECT_TAG, FastPart, FastRedirect, answer, listsTag, noteRoute)
from sipdist.roles.fastregister import FastRegister
from sipdist.sip.transaction import TransportError, _CompletedServerRecord
from sipdist.sip.transport import DatagramFlow

_TOKEN = rb"[A-Za-z0-9.!%*_+`'~-]+"
_HOSTNAME = rb"[A-Za-z0-9][A-Za-z0-9.-]*"
_USER_URI = rb"sip:[A-Za-z0-9._+-]+@[A-Za-z0-9][A-Za-z0-9.-]*(?::[0-9]{1,5})?"
_DISPLAY = rb'(?:"[A-Za-z0-9 ]*" )?'
# What a quoted string holds here: printable ASCII but the quote, the
# backslash (no escapes) and the comma (which would end a Contact value or
# a Digest parameter).
_QUOTED = rb"[\x20\x21\x23-\x2b\x2d-\x5b\x5d-\x7e]*"
_PARAM_VALUE = rb'(?:"' + _QUOTED + rb'"|' + _TOKEN + rb")"

# The Request-URI: the host, perhaps ;transport=udp (baresip's).
_REQUEST_LINE = re.compile(rb"REGISTER (sip:(" + _HOSTNAME
                           + rb")(?:;transport=[Uu][Dd][Pp])?) SIP/2\.0\Z")
# The sent-by, then the branch and rport in either order (twinkle writes
# rport first).  The host is a name or an IPv4 address, both matched by
# _HOSTNAME (a pattern of its own for addresses, tried first, matched the
# same hosts: 0.85 us a Via on PyPy against 0.51 without it, CPython 0.38
# against 0.30).
_VIA = re.compile(
    rb"(SIP/2\.0/UDP (" + _HOSTNAME
    + rb")(?::([0-9]{1,5}))?)(?:;branch=(z9hG4bK" + _TOKEN + rb")(;rport)?"
    rb"|(;rport);branch=(z9hG4bK" + _TOKEN + rb"))\Z")
# A parameter of a plain Digest value: its name, and its value quoted (the
# quotes outside the group) or a token.
# (A pattern of str: the value is decoded once, not each name and value.)
_DIGEST_PARAMETER = (r'([a-z]+)=(?:"(' + _QUOTED.decode("ascii") + r')"|('
                     + _TOKEN.decode("ascii") + r"))")
#: The most parameters of a Digest value the scan takes (RFC 7616 defines
#: eleven; a value with more goes down the full path).
MAX_DIGEST_PARAMETERS = 12
# The whole value with n parameters, for n from 1 to MAX_DIGEST_PARAMETERS
# (index n): "Digest ", then the parameters separated by a comma and
# spaces.
_DIGEST_VALUES = [None] + [
    re.compile(r"Digest " + _DIGEST_PARAMETER
               + (r", *" + _DIGEST_PARAMETER) * (n - 1) + r"\Z")
    for n in range(1, MAX_DIGEST_PARAMETERS + 1)]


class _DigestValue:
    """
    The pattern of an C{Authorization} value the scan takes: a Digest
    value written plainly (lower-case parameter names, quoted strings of
    printable ASCII without escapes nor commas, spaces after the colon and
    the commas, as linphone writes them), of at most
    L{MAX_DIGEST_PARAMETERS} parameters and L{MAX_VALUE_LENGTH}
    characters once the spaces before it are left out.  Its C{match}
    gives the parameters as well.

    Neither a quoted string nor a token holds a comma, so the commas of
    such a value are its separators: a value with n - 1 commas is matched
    by the pattern of n parameters, once (SIPp's value: 2.0 us on
    CPython, 2.8 on PyPy, where one pattern per parameter, each matched
    where the last one ended, cost 3.1 and 3.5).
    """

    @staticmethod
    def match(value):
        """
        @param value: the header's value (L{bytes}).
        @return: its parameters as a L{list} of C{(name, value)} L{str}
            pairs in their order, the quotes left out; or L{None} when
            it is not such a value.
        """
        value = value.lstrip(b" ")
        if len(value) > MAX_VALUE_LENGTH:
            return None
        try:
            text = value.decode("ascii")
        except UnicodeDecodeError:
            return None
        count = text.count(",") + 1
        if count > MAX_DIGEST_PARAMETERS:
            return None
        found = _DIGEST_VALUES[count].match(text)
        if found is None:
            return None
        groups = found.groups()
        pairs = []
        for i in range(0, 3 * count, 3):
            quoted = groups[i + 1]
            pairs.append((groups[i],
                          groups[i + 2] if quoted is None else quoted))
        return pairs


# The hand-written readers below take exactly what the patterns they stand
# for take, and give the same groups (tests/test_fastscan.py checks each
# against its pattern over random values).  They are the scan's on PyPy
# (see HAND_READERS), whose regular expression engine allocates its state
# afresh for every match: 1.1 KB for a Call-ID, 4.8 KB for a From, 21 KB
# for SIPp's Authorization value; together some 27 of the 62 KB a signed
# 301 wrote into PyPy's nursery.  CPython's engine allocates nothing and
# is the faster there (the readers' class tests by a translation table
# cost 0.4 us a value on CPython, 0.06 on PyPy); it keeps the patterns.
_TOKEN_CHARS = (b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                b"0123456789.!%*_+`'~-")


def _table(allowed):
    """
    A translation table that maps the bytes of C{allowed} to C{a} and the
    others to C{x}: C{b"x" not in value.translate(table)} tells whether
    C{value} is made of C{allowed} only.
    """
    return bytes(0x61 if i in allowed else 0x78 for i in range(256))


_TOKEN_TABLE = _table(_TOKEN_CHARS)
_HOST_TABLE = _table(_TOKEN_CHARS[:62] + b".-")
_USER_TABLE = _table(_TOKEN_CHARS[:62] + b"._+-")
_DISPLAY_TABLE = _table(_TOKEN_CHARS[:62] + b" ")
_CALL_ID_TABLE = _table(_TOKEN_CHARS + b"@:")
# Printable ASCII but the backslash: what a plain Digest value is made of
# (_QUOTED's characters, and the comma and the quote).
_DIGEST_TABLE = _table(bytes(range(0x20, 0x7f)).replace(b"\\", b""))


def _only(value, table):
    """
    Whether C{value} (L{bytes}) is made of the bytes C{table} allows.
    """
    return b"x" not in value.translate(table)


def _host(host):
    """
    Whether C{host} (L{bytes}) is a C{_HOSTNAME}.
    """
    return host[:1].isalnum() and _only(host, _HOST_TABLE)


def _hasRequired(values):
    """
    Whether C{values} (the lines by name) has every name of C{_REQUIRED}.
    Each name is looked up: C{set.issubset} of a dictionary makes a set of
    its keys first (on PyPy 349 ns a request's lines, against 60 ns; on
    CPython 712 against 317).
    """
    return (b"Via" in values and b"From" in values and b"To" in values
            and b"Call-ID" in values and b"CSeq" in values)


def _port(port):
    """
    Whether C{port} (L{bytes}) is C{[0-9]{1,5}}.
    """
    return 0 < len(port) <= 5 and port.isdigit()


def _token(value):
    """
    Whether C{value} (L{bytes}) is a C{_TOKEN}.
    """
    return value != b"" and _only(value, _TOKEN_TABLE)


class _Groups(tuple):
    """
    What a reader gives for a pattern with groups: the whole value, then
    each group (L{None} for one that took no part), read with C{group} as
    a match object's.
    """

    __slots__ = ()
    group = tuple.__getitem__


def _readRequestLine(line):
    """
    L{_REQUEST_LINE}'s C{match}, by hand.
    """
    if line[:9] != b"REGISTER " or line[-8:] != b" SIP/2.0":
        return None
    uri = line[9:-8]
    if uri[:4] != b"sip:":
        return None
    host, semicolon, parameter = uri[4:].partition(b";")
    if semicolon and (parameter[:10] != b"transport="
                      or parameter[10:].lower() != b"udp"):
        return None
    if not _host(host):
        return None
    return _Groups((line, uri, host))


def _readVia(value):
    """
    L{_VIA}'s C{match}, by hand.
    """
    if value[:12] != b"SIP/2.0/UDP ":
        return None
    sentBy, semicolon, parameters = value[12:].partition(b";")
    if not semicolon:
        return None
    host, colon, port = sentBy.partition(b":")
    if not _host(host):
        return None
    if colon:
        if not _port(port):
            return None
    else:
        port = None
    sent = value[:12 + len(sentBy)]
    if parameters[:13] == b"rport;branch=":
        branch = parameters[13:]
        if branch[:7] != b"z9hG4bK" or not _token(branch[7:]):
            return None
        return _Groups((value, sent, host, port, None, None, b";rport",
                        branch))
    if parameters[:7] != b"branch=":
        return None
    branch, semicolon, rport = parameters[7:].partition(b";")
    if branch[:7] != b"z9hG4bK" or not _token(branch[7:]):
        return None
    if semicolon:
        if rport != b"rport":
            return None
        rport = b";rport"
    else:
        rport = None
    return _Groups((value, sent, host, port, branch, rport, None, None))


def _userURI(uri):
    """
    Whether C{uri} (L{bytes}) is a C{_USER_URI}.
    """
    if uri[:4] != b"sip:":
        return False
    user, at, hostPort = uri[4:].partition(b"@")
    if not (at and user and _only(user, _USER_TABLE)):
        return False
    host, colon, port = hostPort.partition(b":")
    return _host(host) and (not colon or _port(port))


def _readFrom(value):
    """
    L{_FROM}'s C{match}, by hand: a true value, or L{None}.
    """
    if value[:1] == b'"':
        end = value.find(b'"', 1)
        if (end < 0 or not _only(value[1:end], _DISPLAY_TABLE)
                or value[end + 1:end + 3] != b" <"):
            return None
        value = value[end + 2:]
    elif value[:1] != b"<":
        return None
    close = value.find(b">")
    if close < 0 or not _userURI(value[1:close]):
        return None
    tag = value[close + 1:]
    if tag[:5] != b";tag=" or not _token(tag[5:]):
        return None
    return True


def _readCallID(value):
    """
    L{_CALL_ID}'s C{match}, by hand: a true value, or L{None}.
    """
    if 0 < len(value) <= 128 and _only(value, _CALL_ID_TABLE):
        return True
    return None


def _readDigest(value):
    """
    L{_DigestValue.match}, by hand.
    """
    value = value.lstrip(b" ")
    if (len(value) > MAX_VALUE_LENGTH or value[:7] != b"Digest "
            or not _only(value, _DIGEST_TABLE)):
        return None
    items = value[7:].split(b",")
    if len(items) > MAX_DIGEST_PARAMETERS:
        return None
    pairs = []
    first = True
    for item in items:
        if first:
            first = False
        else:
            item = item.lstrip(b" ")
        name, equals, text = item.partition(b"=")
        if not (equals and name.isalpha() and name.islower()):
            return None
        if text[:1] == b'"':
            if len(text) < 2 or text[-1:] != b'"' or b'"' in text[1:-1]:
                return None
            text = text[1:-1]
        elif not _token(text):
            return None
        pairs.append((name.decode("ascii"), text.decode("ascii")))
    return pairs


_FROM = re.compile(_DISPLAY + rb"<" + _USER_URI + rb">;tag=" + _TOKEN
                   + rb"\Z")
_CALL_ID = re.compile(rb"[A-Za-z0-9.!%*_+`'~@:-]{1,128}\Z")

# Header name -> the pattern of its value (the whole value).
_PATTERNS = {
    b"Via": _VIA,
    b"Max-Forwards": re.compile(rb"[1-9][0-9]{0,2}\Z"),
    b"From": _FROM,
    # In brackets, or bare (linphone's): no parameter either way.
    b"To": re.compile(rb"(?:" + _DISPLAY + rb"<" + _USER_URI + rb">|"
                      + _USER_URI + rb")\Z"),
    b"Call-ID": _CALL_ID,
    b"CSeq": re.compile(rb"[0-9]{1,9} REGISTER\Z"),
    # One Contact: URI parameters, and header parameters (expires, q,
    # +sip.instance, reg-id ...) whose quoted values hold no comma.
    b"Contact": re.compile(
        rb"<" + _USER_URI + rb"(?:;[A-Za-z0-9_.-]+(?:=[A-Za-z0-9_.-]+)?)*>"
        rb"(?:;" + _TOKEN + rb"(?:=" + _PARAM_VALUE + rb")?)*\Z"),
    # A client's outbound proxy (see fastredirect.noteRoute).
    b"Route": re.compile(rb"<sip:" + _HOSTNAME + rb"(?::[0-9]{1,5})?;lr>\Z"),
    b"Allow": re.compile(_TOKEN + rb"(?:, ?" + _TOKEN + rb")*\Z"),
    # Media types without parameters; a REGISTER's are not read.
    b"Accept": re.compile(_TOKEN + rb"/" + _TOKEN + rb"(?:, ?" + _TOKEN
                          + rb"/" + _TOKEN + rb")*\Z"),
    b"Expires": re.compile(rb"[0-9]{1,10}\Z"),
    b"User-Agent": re.compile(
        rb"[\x21-\x7e](?:[\x20-\x7e]{0,126}[\x21-\x7e])?\Z"),
    b"Content-Length": re.compile(rb"0\Z"),
    # Only with credentials (see sipdist.roles.fastredirect): a Digest value
    # written plainly (see _DigestValue), and option tags.
    b"Authorization": _DigestValue(),
    b"Supported": re.compile(_TOKEN + rb"(?:, ?" + _TOKEN + rb")*\Z"),
}


class _Reader:
    """
    A reader (above) where the scan takes a compiled pattern: its C{match}.
    """

    __slots__ = ("match",)

    def __init__(self, match):
        self.match = match


#: Whether the scan reads the lines that differ in every request (the
#: request line, Via, From, Call-ID, Authorization) by hand, with the
#: readers above, rather than with their patterns: on PyPy.
HAND_READERS = platform.python_implementation() == "PyPy"


def scanPatterns(hand):
    """
    The scan's header name -> pattern table and its request line's C{match}:
    the patterns, or with C{hand} the readers of the lines that differ in
    every request (the same answers).
    """
    if not hand:
        return dict(_PATTERNS), _REQUEST_LINE.match
    values = dict(_PATTERNS)
    values.update({b"Via": _Reader(_readVia), b"From": _Reader(_readFrom),
                   b"Call-ID": _Reader(_readCallID),
                   b"Authorization": _Reader(_readDigest)})
    return values, _readRequestLine


_VALUES, _requestLine = scanPatterns(HAND_READERS)

# The headers whose match the scan keeps (the Via's groups, the Digest
# parameters) rather than the line.
_KEEP_MATCH = frozenset((b"Via", b"Authorization"))
# Headers that may come on several lines (each line matched).
_REPEATABLE = frozenset((b"Accept",))
# Headers a client writes the same in every REGISTER of a login and its
# refreshes: a line of one of them found good is remembered (see
# FastChallenge._known), the pattern being matched once per distinct line
# rather than once per request (matching is most of the scan's cost).
# CSeq changes with each request of a login, but its few values ("1
# REGISTER", "2 REGISTER" ...) come again in every login.  The Via and
# Authorization change with each request (and their matches are kept for
# their groups and parameters); From and Call-ID with each login.  A table
# they filled would be emptied every two thousand logins or so: in a replay
# of SIPp's logins that cost PyPy 5 us a datagram more after the first
# 40,000 (its JIT compiled the path anew), and saved CPython 0.5 us.
_CONSTANT = frozenset((
    b"Max-Forwards", b"To", b"Contact", b"Route", b"Allow", b"Accept",
    b"Expires", b"User-Agent", b"Content-Length", b"Supported",
    b"CSeq"))
#: Distinct good lines remembered; the table is emptied when full.
MAX_KNOWN_LINES = 4096
#: Longer lines are matched every time (the table's bytes stay bounded).
MAX_KNOWN_LENGTH = 256
# The lines a request must have: Content-Length may be left out over UDP
# (RFC 3261 section 18.3; linphone does).  _hasRequired looks them up one
# by one; tests/test_fastscan.py holds the two together.
_REQUIRED = (b"Via", b"From", b"To", b"Call-ID", b"CSeq")


class FastChallenge(FastPart):
    """
    Answers the first REGISTER of a login (see the module) from its bytes.

    @ivar enabled: C{False} sends every datagram down the full path.
    @ivar taken: how many datagrams it answered.
    """

    enabled = True

    def __init__(self, service, processor):
        FastPart.__init__(self, service, processor)
        self._maxSize = service.transport.maxMessageSize
        # The fast answer to an authenticated REGISTER (a FastRedirect or a
        # FastRegister), or None.
        self.authenticated = None
        # Header line -> its name: lines of _CONSTANT headers whose value
        # matched its pattern (at most MAX_KNOWN_LINES, of at most
        # MAX_KNOWN_LENGTH bytes each).
        self._known = {}

    def stats(self):
        """
        @return: how many requests it answered, as a L{dict} for the
            status endpoint: C{challenges} (the 401s), C{authenticated}
            (the signed 301s of a distributor or 200s of a home).
        """
        authenticated = 0 if self.authenticated is None \
            else self.authenticated.taken
        return {"enabled": self.enabled,
                "challenges": self.taken - authenticated,
                "authenticated": authenticated}

    def __call__(self, protocol, data, addr):
        """
        Answer C{data} from C{addr} if it is the request described in the
        module.

        @return: whether it was answered (then nothing else happens to it).
        """
        if (not self.enabled or data[:9] != b"REGISTER "
                or len(data) > self._maxSize):
            return False
        # No body: the datagram ends with the blank line.  A blank line
        # before it (a body) is an empty line in the split below, which no
        # header name matches.  (One search from the start would read the
        # whole datagram: 0.44 us on PyPy, 0.40 on CPython.)
        if not data.endswith(b"\r\n\r\n"):
            return False
        end = len(data) - 4
        authenticated = self.authenticated
        if b"\r\nAuthorization: " in data and (
                authenticated is None or not authenticated.possible()):
            # Not worth scanning.
            return False
        layer = self._transactions
        host, port = addr
        if ":" in host:
            return False
        overload = layer.overload
        if overload is not None and not overload.mayAnswerAhead():
            # Shed, or left to the full path's admission.
            return False
        lines = data[:end].split(b"\r\n")
        request = _requestLine(lines[0])
        if request is None:
            return False
        processor = self._processor
        server = self._server
        uriHost = request.group(2).decode("ascii").lower()
        if (uriHost not in processor.domains
                and uriHost not in server.localHosts):
            return False
        values = {}
        known = self._known
        for line in lines[1:]:
            name = known.get(line)
            if name is None:
                name, sep, value = line.partition(b": ")
                pattern = _VALUES.get(name)
                if pattern is None:
                    return False
                match = pattern.match(value)
                if match is None:
                    return False
                if name in _CONSTANT and len(line) <= MAX_KNOWN_LENGTH:
                    if len(known) >= MAX_KNOWN_LINES:
                        known.clear()
                    known[line] = name
            if name in values:
                if name not in _REPEATABLE:
                    return False
                continue
            # The whole line: the response copies it as it is.
            values[name] = match if name in _KEEP_MATCH else line
        if not _hasRequired(values):
            return False
        maxForwards = values.get(b"Max-Forwards")
        if maxForwards is not None and int(maxForwards[14:]) > 255:
            return False
        if processor not in server.processors:
            return False
        via = values[b"Via"]
        viaHost = via.group(2).decode("ascii")
        viaPort = via.group(3)
        if viaPort is not None:
            viaPort = int(viaPort)
            if not 0 < viaPort < 65536:
                return False
        branch = (via.group(4) or via.group(7)).decode("ascii")
        sentByPort = 5060 if viaPort is None else viaPort
        key = (branch, viaHost, sentByPort, "REGISTER")
        if layer.serving(key) or not layer.room():
            return False

        # Section 18.2.1 and RFC 3581, as TransportLayer._receivedRequest.
        viaText = via.group(0).decode("ascii")
        if via.group(5) is not None or via.group(6) is not None:
            # Written anew as the message module writes a Via: the branch,
            # received, rport.
            viaText = (f"{via.group(1).decode('ascii')};branch={branch};"
                       f"received={host};rport={port}")
            remote = addr
        else:
            if viaHost != host:
                viaText = f"{viaText};received={host}"
            remote = addr if sentByPort == port else (host, sentByPort)

        if b"Authorization" in values:
            flow = DatagramFlow(protocol, remote)
            response = authenticated(addr, request.group(1).decode("ascii"),
                                     values, viaText, flow, key)
            if response is None:
                return False
            if overload is not None:
                overload.answeredAhead()
            self.taken += 1
            complete(layer, protocol, key, remote, response,
                     authenticated.code, flow,
                     stateless=authenticated.stateless)
            return True
        supported = values.get(b"Supported")
        if supported is not None and listsTag(supported, REDIRECT_TAG):
            # The option tag chooses the challenge's algorithms.
            return False

        response = answer(
            "401 Unauthorized", viaText, values,
            [f"Server: {server.serverHeader}",
             self._authenticator.challengeLines()])

        # The side effects of the full path, in its order.
        if overload is not None:
            overload.answeredAhead()
        layer.serverCreated += 1
        layer._created()
        flow = DatagramFlow(protocol, remote)
        noteRoute(processor.proxy, values.get(b"Route"), flow)
        self._authenticator.outcomes["challenged"] += 1
        self.taken += 1
        complete(layer, protocol, key, remote, response, 401,
                 flow, stateless=True)
        return True


def complete(layer, protocol, key, remote, response, code, flow=None,
             stateless=False):
    """
    What the transaction layer does when a new non-INVITE server
    transaction over UDP, keyed C{key}, answers with the final response
    C{response} (bytes, status C{code}) sent to C{remote}: count the
    answer, send it, and keep its bytes for the retransmissions of the
    request until timer J; or, if it cannot be sent, count a transport
    error and report the failure to the transaction user.  The port may
    send it with the other answers of its wake-up (L{SIPDatagramProtocol
    .sendSoon}): the record is kept meanwhile, so that a retransmission
    read in the same wake-up is absorbed, and ended if the send fails.

    @param flow: the transaction's L{DatagramFlow} (to C{remote}), if
        made already.
    @param stateless: an answer the transaction layer gives statelessly
        (see L{sipdist.sip.transaction.ServerTransaction.respond}): a
        challenge to a request without credentials, a distributor's signed
        C{301}.  Nothing is kept.
    """
    answered = layer.answered
    counted = ("REGISTER", code)
    answered[counted] = answered.get(counted, 0) + 1
    flow = flow or DatagramFlow(protocol, remote)
    context = (layer, key, flow, response,
               None if stateless else layer.keepCompleted(key, flow,
                                                          response))
    if not protocol.sendSoon(response, remote, _unsent, context):
        _unsent(context, None)


def _unsent(context, error):
    """
    The answer C{complete} sent could not be sent (the protocol has logged
    C{error}): as a transaction that cannot send its final response,
    counted, reported to the user, and gone.
    """
    layer, key, flow, response, kept = context
    if kept is not None:
        layer.discardCompleted(kept)
    record = _CompletedServerRecord.alone(layer, key, flow, response)
    layer.transportErrors += 1
    layer._transactionFailed(
        record, TransportError(f"cannot send to {flow.remote}"))


def install(service, config):
    """
    Put a L{FastChallenge} in front of the full path of C{service}'s UDP
    ports, unless C{--fast-path=false}.

    @return: the L{FastChallenge}, or C{None}.
    """
    processor = getattr(service, "processor", None)
    if processor is None or not hasattr(processor, "authenticator") \
            or not config.get("fast-path", True):
        return None
    fast = FastChallenge(service, processor)
    if getattr(processor, "registrar", None) is not None:
        fast.authenticated = FastRegister(service, processor)
    else:
        fast.authenticated = FastRedirect(service, processor)
    service.transport.fastPath = fast
    return fast
