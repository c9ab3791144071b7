"""
Property tests for L{sipdist.sip.message}: a message written in any of the
forms RFC 3261 allows (header names in any case, compact forms, LWS around
the colon, folded values, Via values on one line or several, leading zeros)
parses to the same message; and malformed variants of a request are
answered 400 (or another 4xx/5xx) or dropped with a counted reason, never
raise.
"""

from hypothesis import given, settings, strategies as st
from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from sipdist.sip.message import (
    COMPACT_FORMS, MULTI_VALUE, parseMessage, validateRequest)
from sipdist.sip.transport import _StreamFactory
from tests.test_transport import listenUDP

_LONG_TO_COMPACT = {v: k for k, v in COMPACT_FORMS.items()}

TOKEN = st.text("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`'~",
                min_size=1, max_size=12)
WORD = st.text("abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=10)
HOST = st.one_of(
    st.builds(lambda a, b: f"{a}.{b}", WORD, st.sampled_from(["com", "net", "example"])),
    st.builds(lambda a, b, c: f"192.0.{a}.{b}" if c else f"[2001:db8::{a:x}:{b:x}]",
              st.integers(0, 255), st.integers(1, 254), st.booleans()))


@st.composite
def vias(draw):
    transport = draw(st.sampled_from(["UDP", "TCP", "TLS", "SCTP"]))
    host = draw(HOST)
    port = draw(st.one_of(st.none(), st.integers(1, 65535)))
    branch = "z9hG4bK" + draw(WORD)
    params = draw(st.lists(st.tuples(WORD, st.one_of(st.none(), WORD)),
                           max_size=2, unique_by=lambda p: p[0]))
    params = [(n, v) for n, v in params
              if n not in ("branch", "received", "rport", "maddr", "ttl",
                           "hidden")]
    return transport, host, port, branch, params


@st.composite
def requests(draw):
    """
    A request as a model: (method, uri, [(name, value)]) with Via values
    as tuples.
    """
    method = draw(st.sampled_from(["INVITE", "REGISTER", "OPTIONS", "MESSAGE"]))
    user = draw(WORD)
    host = draw(HOST)
    headers = [("via", v) for v in draw(st.lists(vias(), min_size=1, max_size=4))]
    headers += [
        ("max-forwards", str(draw(st.integers(1, 255)))),
        ("from", f"<sip:{draw(WORD)}@{host}>;tag={draw(WORD)}"),
        ("to", f'"{draw(WORD)} {draw(WORD)}" <sip:{user}@{host}>'),
        ("call-id", f"{draw(WORD)}@{draw(WORD)}"),
        ("cseq", f"{draw(st.integers(0, 2**31 - 1))} {method}"),
        ("contact", f"<sip:{user}@{host}>;expires={draw(st.integers(0, 9999))}"),
        ("supported", ", ".join(draw(st.lists(WORD, min_size=1, max_size=3)))),
    ]
    for name in draw(st.lists(TOKEN, max_size=3, unique=True)):
        name = "x-" + name
        headers.append((name, " ".join(draw(st.lists(WORD, min_size=1, max_size=4)))))
    return method, f"sip:{user}@{host}", headers


def viaText(via, lws):
    transport, host, port, branch, params = via
    sp = lws
    text = f"SIP{sp}/{sp}2.0{sp}/{sp}{transport} {host}"
    if port is not None:
        text += f"{sp}:{sp}{port}"
    text += f"{sp};{sp}branch{sp}={sp}{branch}"
    for name, value in params:
        text += f"{sp};{sp}{name}" + ("" if value is None else f"{sp}={sp}{value}")
    return text


@st.composite
def spellings(draw, model):
    """
    One legal way to write the request of C{model}.
    """
    method, uri, headers = model
    lines = [f"{method} {uri} SIP/2.0"]
    viaLines = []
    lws = draw(st.sampled_from(["", " ", "  ", "\t"]))
    joinVias = draw(st.booleans())
    for name, value in headers:
        if name == "via":
            viaLines.append(viaText(value, lws))
            continue
        if name in ("max-forwards", "cseq") and draw(st.booleans()):
            value = "00" + value
        lines.append(spell(draw, name, value))
    if joinVias:
        lines.insert(1, spell(draw, "via", " , ".join(viaLines)))
    else:
        for i, text in enumerate(viaLines):
            lines.insert(1 + i, spell(draw, "via", text))
    lines.append("Content-Length: 0")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8")


def spell(draw, name, value):
    compact = _LONG_TO_COMPACT.get(name)
    if compact and draw(st.booleans()):
        written = compact
    else:
        written = "".join(
            c.upper() if draw(st.booleans()) else c for c in name)
    before = draw(st.sampled_from(["", " ", "\t "]))
    after = draw(st.sampled_from(["", " ", "   ", "\t"]))
    if " " in value and draw(st.booleans()):
        # Fold at one of the spaces (section 7.3.1).
        at = value.index(" ")
        value = value[:at] + "\r\n" + draw(st.sampled_from([" ", "\t", "   "])) + value[at + 1:]
    return f"{written}{before}:{after}{value}"


def normal(request):
    """
    What a message says, whatever its spelling: method, URI, parsed Via
    values, and every other header's values with white space runs
    collapsed and leading zeros of numbers dropped.
    """
    vias = [(v.transport, v.host, v.port, v.branch, sorted(v.otherParams.items()))
            for v in request.vias()]
    other = {}
    for key in request.headers:
        if key in ("via", "content-length"):
            continue
        values = request.values(key)
        other[key] = [" ".join(v.replace(" ,", ",").split()) for v in values]
    cseq = request.cseq()
    other.pop("cseq", None)
    mf = request.header("max-forwards")
    other.pop("max-forwards", None)
    return (request.method, request.uriText, vias, cseq,
            int(mf) if mf else None, other)


class SpellingTests(SynchronousTestCase):
    """
    Every legal spelling of a request parses to the same request.
    """

    @settings(max_examples=150, deadline=None)
    @given(st.data())
    def test_spellingsAgree(self, data):
        model = data.draw(requests())
        first = data.draw(spellings(model))
        second = data.draw(spellings(model))
        a, b = parseMessage(first), parseMessage(second)
        validateRequest(a)
        validateRequest(b)
        self.assertEqual(normal(a), normal(b))
        method, uri, headers = model
        self.assertEqual(len(a.vias()),
                         len([h for h in headers if h[0] == "via"]))
        self.assertEqual(a.viaCount(), len(a.vias()))

    def test_multiValueHeadersKnown(self):
        """
        The spellings join Via values on one line: Via is a multi-value
        header.
        """
        self.assertIn("via", MULTI_VALUE)


REQUEST = (
    "INVITE sip:bob@example.com SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 192.0.2.7:5060;branch=z9hG4bKmut;rport\r\n"
    "Max-Forwards: 70\r\n"
    "From: \"Alice\" <sip:alice@example.com>;tag=88sja8x\r\n"
    "To: <sip:bob@example.com>\r\n"
    "Call-ID: mutation@192.0.2.7\r\n"
    "CSeq: 1 INVITE\r\n"
    "Contact: <sip:alice@192.0.2.7:5060>;expires=60\r\n"
    "Content-Type: application/sdp\r\n"
    "Content-Length: 4\r\n\r\nv=0\n").encode("ascii")

# What a mutation splices in: separators, brackets, quotes, a port out of
# range, a second version, a header start, an end of headers.
JUNK_PIECES = (b" ", b"  ", b";", b";;", b",", b":", b"\t", b"\r\n",
               b"\r\n ", b"<", b">", b"\"", b"[", b"]", b"@", b"%",
               b"?", b"=", b"/", b"\x00", b"\xff", b"99999",
               b"SIP/2.0", b"Via: ", b"\r\n\r\n", b"-1")
JUNK = st.sampled_from(JUNK_PIECES)


@st.composite
def mutants(draw):
    data = REQUEST
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["insert", "delete", "replace", "dup",
                                     "truncate"]))
        at = draw(st.integers(0, len(data)))
        if kind == "insert":
            data = data[:at] + draw(JUNK) + data[at:]
        elif kind == "delete":
            data = data[:at] + data[at + draw(st.integers(1, 8)):]
        elif kind == "replace":
            data = data[:at] + draw(JUNK) + data[at + 1:]
        elif kind == "dup":
            lines = data.split(b"\r\n")
            i = draw(st.integers(0, len(lines) - 1))
            lines.insert(i, lines[i])
            data = b"\r\n".join(lines)
        else:
            data = data[:at]
    return data


class MutationTests(SynchronousTestCase):
    """
    A mutated request, over UDP or TCP, is accepted, answered with an error
    status, or dropped with its reason counted; nothing raises and nothing
    is logged as an error (trial fails a test that logs one).
    """

    def setUp(self):
        listenUDP(self)
        self.factory = _StreamFactory(self.layer, "TCP")

    def outcome(self, before, answers):
        accepted = len(self.handler.received) > before[0]
        dropped = self.layer.dropped > before[1]
        self.assertEqual(sum(self.layer.dropReasons.values()),
                         self.layer.dropped)
        answered = [parseMessage(a) for a in answers if a]
        for response in answered:
            self.assertGreaterEqual(response.code, 400)
            self.assertTrue(response.phrase)
        self.assertEqual(accepted + dropped + bool(answered) >= 1, True)

    @settings(max_examples=300, deadline=None)
    @given(mutants())
    def test_udp(self, data):
        before = (len(self.handler.received), self.layer.dropped)
        self.udp.written = []
        self.protocol.datagramReceived(data, ("192.0.2.7", 5060))
        if not data.strip(b"\r\n"):
            return
        self.outcome(before, [d for d, _ in self.udp.written])

    @settings(max_examples=150, deadline=None)
    @given(mutants())
    def test_tcp(self, data):
        before = (len(self.handler.received), self.layer.dropped)
        addr = IPv4Address("TCP", "192.0.2.7", 40000)
        protocol = self.factory.buildProtocol(addr)
        transport = StringTransport(peerAddress=addr)
        protocol.makeConnection(transport)
        protocol.dataReceived(data)
        written = transport.value()
        if protocol._framer.inMessage or not data.strip(b"\r\n") or (
                written == b"\r\n"):
            # Waiting for the rest of a message (a deadline closes it).
            protocol.connectionLost(None)
            return
        messages = [m + b"\r\n\r\n" for m in written.split(b"\r\n\r\n") if m]
        if transport.disconnecting:
            # Framing lost: answered if it could be, then closed.
            protocol.connectionLost(None)
            return
        self.outcome(before, messages)
        protocol.connectionLost(None)
