"""
Tests for L{sipdist.sip.message}.
"""

from hypothesis import given, settings, strategies as st
from twisted.trial.unittest import SynchronousTestCase

from sipdist.sip.message import (
    MessageError, Request, Response, StreamFramer, countVias, errorResponse,
    hasCredentials,
    headerKey, newBranch, parseMessage, parseNameAddr, parseVia, responseTo,
    splitValues, validateRequest, validateResponse)


def build(startLine="REGISTER sip:example.com SIP/2.0", headers=None,
          body=b"", drop=(), contentLength=True):
    """
    The bytes of a message: a typical REGISTER unless told otherwise.
    """
    if headers is None:
        headers = [
            ("Via", "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK776asdhds;rport"),
            ("Max-Forwards", "70"),
            ("To", "Alice <sip:alice@example.com>"),
            ("From", "Alice <sip:alice@example.com>;tag=1928301774"),
            ("Call-ID", "a84b4c76e66710@pc33.example.com"),
            ("CSeq", "314159 REGISTER"),
            ("Contact", "<sip:alice@192.0.2.1:5060>"),
            ("Expires", "3600"),
        ]
    lines = [startLine]
    lines += [f"{n}: {v}" for n, v in headers if n not in drop]
    if contentLength:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8") + body


def replace(name, value):
    """
    The REGISTER of L{build} with one header changed.
    """
    message = parseMessage(build())
    message.setHeader(name, value)
    return message.toBytes()


class ParseTests(SynchronousTestCase):
    """
    Parsing complete messages.
    """

    def test_request(self):
        """
        A request is parsed into method, URI and headers keyed by lower-case
        long names.
        """
        request = parseMessage(build())
        self.assertIsInstance(request, Request)
        self.assertEqual(request.method, "REGISTER")
        self.assertEqual(request.uri.host, "example.com")
        self.assertEqual(request.header("CALL-ID"),
                         "a84b4c76e66710@pc33.example.com")
        self.assertEqual(request.cseq(), (314159, "REGISTER"))
        self.assertEqual(request.topVia().branch, "z9hG4bK776asdhds")
        validateRequest(request)

    def test_response(self):
        """
        A response is parsed into code and phrase.
        """
        response = parseMessage(build("SIP/2.0 404 Not Here"))
        self.assertIsInstance(response, Response)
        self.assertEqual((response.code, response.phrase), (404, "Not Here"))
        validateResponse(response)

    def test_compactForms(self):
        """
        Compact header names are stored under their long names.
        """
        data = build(headers=[
            ("v", "SIP/2.0/UDP h;branch=z9hG4bK1"),
            ("f", "<sip:a@b>;tag=x"), ("t", "<sip:a@b>"), ("i", "c"),
            ("CSeq", "1 REGISTER"), ("m", "<sip:a@h>"), ("k", "path"),
        ])
        request = parseMessage(data)
        for name in ("via", "from", "to", "call-id", "contact", "supported"):
            self.assertTrue(request.hasHeader(name), name)
        self.assertEqual(request.header("Contact"), request.header("m"))
        validateRequest(request)

    def test_caseInsensitive(self):
        """
        Header names are matched whatever their case.
        """
        request = parseMessage(build().replace(b"Call-ID", b"cALL-iD"))
        self.assertEqual(request.header("call-id"),
                         "a84b4c76e66710@pc33.example.com")

    def test_folding(self):
        """
        A header line continued on the next line (leading white space) is
        joined to it.
        """
        data = build().replace(b"Expires: 3600", b"Subject: one\r\n two")
        self.assertEqual(parseMessage(data).header("subject"), "one two")

    def test_bodyBytes(self):
        """
        The body is kept as bytes and framed by its Content-Length in bytes,
        whatever its encoding.
        """
        body = "caf\u00e9 \u2603".encode("utf-8")
        request = parseMessage(build(body=body))
        self.assertEqual(request.body, body)

    def test_datagramExtraBytesDiscarded(self):
        """
        Over a datagram, bytes past Content-Length are discarded (RFC 3261
        section 18.3).
        """
        data = build(body=b"abc").replace(b"Content-Length: 3",
                                          b"Content-Length: 2")
        self.assertEqual(parseMessage(data).body, b"ab")

    def test_leadingCRLF(self):
        """
        CRLFs before the start line are ignored.
        """
        self.assertEqual(parseMessage(b"\r\n\r\n" + build()).method,
                         "REGISTER")

    def test_lazyURI(self):
        """
        The Request-URI is not parsed until it is read, and a request whose
        URI is never needed is serialised as received.
        """
        request = parseMessage(build("REGISTER sip:EXAMPLE.com;x=Y SIP/2.0"))
        self.assertIsNone(request._uri)
        self.assertTrue(request.toBytes().startswith(
            b"REGISTER sip:EXAMPLE.com;x=Y SIP/2.0\r\n"))


class MultiValueTests(SynchronousTestCase):
    """
    Comma-separated values and Via counting.
    """

    def test_hasCredentials(self):
        """
        A request carries credentials when it has an C{Authorization} or a
        C{Proxy-Authorization} value that is not empty, whatever its scheme.
        """
        self.assertFalse(hasCredentials(parseMessage(build())))
        for name in ("Authorization", "Proxy-Authorization"):
            self.assertTrue(hasCredentials(parseMessage(
                replace(name, 'Digest username="alice"'))))
            self.assertTrue(hasCredentials(parseMessage(
                replace(name, "Basic YWxpY2U6"))))
            self.assertFalse(hasCredentials(parseMessage(replace(name, ""))))

    def test_countViaValuesNotLines(self):
        """
        Via values are counted across lines and within a line.
        """
        data = build(headers=[
            ("Via", "SIP/2.0/UDP a;branch=z9hG4bK1, SIP/2.0/TCP b;branch=z9hG4bK2"),
            ("v", "SIP/2.0/TLS [2001:db8::1]:5061;branch=z9hG4bK3"),
            ("From", "<sip:a@b>;tag=x"), ("To", "<sip:a@b>"),
            ("Call-ID", "c"), ("CSeq", "1 REGISTER"),
        ])
        request = parseMessage(data)
        self.assertEqual(countVias(request), 3)
        self.assertEqual(request.viaCount(), 3)
        self.assertEqual([v.host for v in request.vias()],
                         ["a", "b", "[2001:db8::1]"])
        self.assertEqual(request.vias()[2].port, 5061)

    def test_oneVia(self):
        """
        A request straight from a client carries one Via value.
        """
        self.assertEqual(countVias(parseMessage(build())), 1)

    def test_splitRespectsQuotesAndBrackets(self):
        """
        Commas inside quoted display names or angle brackets do not split.
        """
        self.assertEqual(
            splitValues('"Doe, John" <sip:j@h>;q=0.5, <sip:x@y;a=b,c>, sip:z@w'),
            ['"Doe, John" <sip:j@h>;q=0.5', '<sip:x@y;a=b,c>', 'sip:z@w'])

    def test_contactValues(self):
        """
        Contact values on one line are returned one by one.
        """
        message = parseMessage(replace("Contact", "<sip:a@h1>, <sip:a@h2>;q=0.1"))
        self.assertEqual(message.values("m"), ["<sip:a@h1>", "<sip:a@h2>;q=0.1"])

    def test_authorizationNotSplit(self):
        """
        Headers that do not allow comma-separated values are returned whole.
        """
        value = 'Digest username="a", realm="b", nonce="c"'
        message = parseMessage(replace("Authorization", value))
        self.assertEqual(message.values("authorization"), [value])

    def test_viaParsing(self):
        """
        Via parameters are parsed; an absent port stays absent and the
        transport's default port is known.
        """
        via = parseVia("SIP/2.0/tls h.example.com;branch=z9hG4bKx;rport;received=1.2.3.4;foo")
        self.assertEqual((via.transport, via.host, via.port), ("TLS", "h.example.com", None))
        self.assertEqual(via.sentByPort, 5061)
        self.assertTrue(via.rportRequested)
        self.assertEqual(via.received, "1.2.3.4")
        self.assertEqual(via.otherParams, {"foo": None})
        self.assertEqual(parseVia(via.toString()).toString(), via.toString())

    def test_badVia(self):
        """
        A malformed Via value raises L{ValueError}.
        """
        for value in ("SIP/3.0/UDP h", "SIP/2.0/UDP", "SIP/2.0/UDP h:x",
                      "garbage", "SIP/2.0/UDP h;rport=x"):
            self.assertRaises(ValueError, parseVia, value)

    def test_nameAddr(self):
        """
        Header parameters follow the closing bracket; without brackets they
        follow the first semicolon.
        """
        display, uri, params = parseNameAddr('"A" <sip:a@h;lr>;tag=1;expires=60')
        self.assertEqual((display, str(uri), params),
                         ("A", "sip:a@h;lr", {"tag": "1", "expires": "60"}))
        display, uri, params = parseNameAddr("sip:a@h;tag=2")
        self.assertEqual((str(uri), params), ("sip:a@h", {"tag": "2"}))

    def test_nameAddrQuoted(self):
        """
        A quoted display name may hold C{<}, C{>}, C{;} and escaped quotes,
        and a quoted parameter value C{;} and C{>} (RFC 3261 quoted-string):
        neither is taken for the brackets or a parameter's end.
        """
        display, uri, params = parseNameAddr(
            '"a<b> \\" c;d" <sip:a@h;lr>;+sip.instance="<urn:x;y>";reg-id=1')
        self.assertEqual(str(uri), "sip:a@h;lr")
        self.assertEqual(params, {"+sip.instance": '"<urn:x;y>"',
                                  "reg-id": "1"})


# (description, bytes, expected code); code None means: dropped, no response.
MALFORMED = [
    ("missing From", build(drop=("From",)), 400, "Missing From Header"),
    ("missing To", build(drop=("To",)), 400, "Missing To Header"),
    ("missing Call-ID", build(drop=("Call-ID",)), 400, "Missing Call-ID Header"),
    ("missing CSeq", build(drop=("CSeq",)), 400, "Missing CSeq Header"),
    ("duplicate Call-ID", build().replace(b"Expires: 3600", b"Call-ID: other"),
     400, "Duplicate Call-ID Header"),
    ("duplicate To", build().replace(b"Expires: 3600", b"t: <sip:b@h>"),
     400, "Duplicate To Header"),
    ("NUL in Call-ID (no response can copy it)",
     replace("Call-ID", "a\x00b@h"), None, None),
    ("form feed in Call-ID", replace("Call-ID", "a\x0cb@h"), None, None),
    ("bad CSeq number", replace("CSeq", "abc REGISTER"), 400, "Bad CSeq"),
    ("CSeq without method", replace("CSeq", "1"), 400, "Bad CSeq"),
    ("CSeq method mismatch", replace("CSeq", "1 INVITE"), 400,
     "CSeq Method Does Not Match"),
    ("CSeq too large", replace("CSeq", f"{2**31} REGISTER"), 400,
     "CSeq Number Too Large"),
    ("Content-Length longer than body", build(body=b"abc").replace(
        b"Content-Length: 3", b"Content-Length: 10"), 400,
     "Content-Length Mismatch"),
    ("Content-Length not a number", build().replace(
        b"Content-Length: 0", b"Content-Length: x"), 400, "Bad Content-Length"),
    ("two Content-Lengths", build().replace(
        b"Expires: 3600", b"l: 0"), 400, "Duplicate Content-Length Header"),
    ("SIP/3.0 request", build("REGISTER sip:example.com SIP/3.0"), 505,
     "SIP Version Not Supported"),
    ("tel: Request-URI", build("REGISTER tel:+1234 SIP/2.0"), 416,
     "Unsupported URI Scheme"),
    ("http: Request-URI", build("OPTIONS http://example.com/ SIP/2.0").replace(
        b"314159 REGISTER", b"1 OPTIONS"), 416, "Unsupported URI Scheme"),
    ("bad Request-URI", build("REGISTER sip:a@ SIP/2.0"), 400, "Bad Request-URI"),
    ("unterminated From", replace("From", "Alice <sip:alice@h;tag=1"), 400,
     "Bad From Header"),
    ("From without a URI", replace("From", "Alice;tag=1"), 400,
     "Bad From Header"),
    ("To without a URI", replace("To", "<>"), 400, "Bad To Header"),
    ("Max-Forwards 0", replace("Max-Forwards", "0"), 483, "Too Many Hops"),
    ("Max-Forwards not a number", replace("Max-Forwards", "many"), 400,
     "Bad Max-Forwards"),
    ("malformed header line", build().replace(b"Expires: 3600", b"Expires 3600"),
     400, "Malformed Header Line"),
    ("malformed Via (no route back)", replace("Via", "SIP/2.0/UDP"),
     None, None),
    ("oversized", build(body=b"x" * 70000), 513, "Message Too Large"),
    ("missing Via", build(drop=("Via",)), None, None),
    ("garbage", b"\x00\xff\xfe garbage\r\n\r\n", None, None),
    ("no end of headers", b"REGISTER sip:a SIP/2.0\r\nVia: x", None, None),
    ("bad start line", b"HELLO\r\n\r\n", None, None),
    ("not UTF-8", build().replace(b"Alice <", b"\xff <"), 400,
     "Headers Are Not UTF-8"),
    ("two SP in the Request-Line", build("REGISTER  sip:example.com SIP/2.0"),
     400, "Extra Spaces In Request-Line"),
    ("SP after the version", build("REGISTER sip:example.com SIP/2.0  "),
     400, "Trailing Space In Request-Line"),
    ("SP in the Request-URI", build("REGISTER sip:example.com; lr SIP/2.0"),
     400, "Space In Request-URI"),
    ("mangled method", build("REG;STER sip:example.com SIP/2.0"), 400,
     "Bad Method"),
    ("mangled start line", build("REGISTER"), 400, "Bad Start Line"),
    ("empty Via parameter", replace(
        "Via", "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK776asdhds;;rport"),
     400, "Empty Parameter In Via"),
    ("Via parameter without a value", replace(
        "Via", "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK776asdhds;x="),
     400, "Empty Parameter Value In Via"),
    ("Via port out of range", replace(
        "Via", "SIP/2.0/UDP 192.0.2.1:65536;branch=z9hG4bK776asdhds"),
     None, None),
    ("headers in the Request-URI",
     build("REGISTER sip:example.com?Route=%3Csip:x%3E SIP/2.0"), 400,
     "Headers Not Allowed In Request-URI"),
    ("empty Contact parameter", replace("Contact", "<sip:a@h>;;expires=1"),
     400, "Empty Parameter In Contact"),
    ("Contact parameter name not a token",
     replace("Contact", "<sip:a@h>;exp(ires=1"), 400,
     "Bad Parameter Name In Contact"),
    ("unquoted display name with a comma",
     replace("From", "Alice, B <sip:alice@h>;tag=1"), 400, "Bad From Header"),
    ("unterminated quoted display name",
     replace("To", '"Alice <sip:alice@h>'), 400, "Bad To Header"),
    ("malformed header name", build().replace(b"Expires: 3600",
                                              b"Exp ires: 3600"),
     400, "Malformed Header Name"),
    ("truncated datagram", build()[:-40], 400, "Missing End Of Headers"),
    ("truncated before CSeq", build()[:150], None, None),
    ("malformed ACK", build("ACK sip:example.com SIP/3.0").replace(
        b"314159 REGISTER", b"1 ACK"), None, None),
    ("ACK with a mangled method", build("A;CK sip:example.com SIP/2.0").replace(
        b"314159 REGISTER", b"1 ACK"), None, None),
    ("bad status code", build("SIP/2.0 99 Weird"), None, None),
]


class MalformedTests(SynchronousTestCase):
    """
    Every malformed message gets its RFC answer with a reason phrase naming
    the problem, or is dropped when no answer can be routed; none raises
    anything but L{MessageError}.
    """

    def check(self, data):
        try:
            message = parseMessage(data)
            if isinstance(message, Request):
                validateRequest(message)
            else:
                validateResponse(message)
        except MessageError as e:
            return e
        return None

    def test_table(self):
        for description, data, code, phrase in MALFORMED:
            error = self.check(data)
            self.assertIsNotNone(error, description)
            response = errorResponse(error)
            if code is None:
                self.assertIsNone(response, description)
                continue
            self.assertIsNotNone(response, description)
            self.assertEqual((response.code, response.phrase), (code, phrase),
                             description)
            # The answer parses and copies what it can from the request.
            again = parseMessage(response.toBytes())
            # The Via is copied as received (malformed or not): the
            # client finds its branch in it.
            self.assertIn("branch=z9hG4bK776asdhds", again.header("via"))
            self.assertEqual(again.header("call-id"),
                             error.message.header("call-id"))

    def test_callIDControl(self):
        """
        A Call-ID holding a control character (but a tab) is refused as
        C{Bad Call-ID} without a response to send: any response would copy
        it.  A tab is left alone.
        """
        for character in "\x00\x01\x0b\x0c\x1c\x7f":
            error = self.check(replace("Call-ID", f"a{character}b@h"))
            self.assertEqual((error.code, error.phrase),
                             (400, "Bad Call-ID"), repr(character))
            self.assertIsNone(errorResponse(error))
        self.assertIsNone(self.check(replace("Call-ID", "a\tb@h")))

    @settings(max_examples=300, deadline=None)
    @given(st.binary(max_size=600))
    def test_junkNeverRaisesOtherwise(self, data):
        """
        Random bytes raise nothing but L{MessageError}.
        """
        self.check(data)

    @settings(max_examples=300, deadline=None)
    @given(st.integers(min_value=0, max_value=400), st.binary(max_size=40))
    def test_mutatedRegister(self, position, junk):
        """
        A REGISTER with random bytes spliced in raises nothing but
        L{MessageError}.
        """
        data = build()
        self.check(data[:position] + junk + data[position:])


class ResponseTests(SynchronousTestCase):
    """
    Building responses and serialising.
    """

    def test_responseTo(self):
        """
        A response copies Via (every value), From, To, Call-ID and CSeq and
        adds a To tag past 100.
        """
        request = parseMessage(build())
        request.insertHeader("Via", "SIP/2.0/TCP proxy;branch=z9hG4bKp")
        response = responseTo(request, 200)
        self.assertEqual(response.values("via"), request.values("via"))
        self.assertIn(";tag=", response.header("to"))
        self.assertEqual(response.header("cseq"), "314159 REGISTER")
        trying = responseTo(request, 100)
        self.assertNotIn(";tag=", trying.header("to"))
        tagged = responseTo(request, 486, toTag="abc")
        self.assertTrue(tagged.header("to").endswith(";tag=abc"))

    def test_roundTrip(self):
        """
        Serialising a parsed message and parsing it again gives the same
        headers; Content-Length is recomputed.
        """
        request = parseMessage(build(body=b"hello"))
        request.body = b"hi"
        again = parseMessage(request.toBytes())
        self.assertEqual(again.body, b"hi")
        self.assertEqual(again.header("content-length"), "2")
        for key in ("via", "from", "to", "call-id", "cseq", "contact"):
            self.assertEqual(again.headers[key], request.headers[key])

    def test_canonicalNames(self):
        """
        Header names are written in their canonical spelling whatever the
        spelling received.
        """
        data = parseMessage(build().replace(b"Call-ID", b"i").replace(
            b"CSeq", b"cseq").replace(b"Max-Forwards", b"max-FORWARDS")).toBytes()
        self.assertIn(b"\r\nCall-ID: ", data)
        self.assertIn(b"\r\nCSeq: ", data)
        self.assertIn(b"\r\nMax-Forwards: ", data)

    def test_topViaEdits(self):
        """
        Replacing or removing the top Via keeps the others.
        """
        request = parseMessage(build())
        request.insertHeader("Via", "SIP/2.0/UDP p;branch=z9hG4bKp")
        top = request.topVia()
        top.received = "10.0.0.1"
        request.setTopVia(top)
        self.assertEqual(request.vias()[0].received, "10.0.0.1")
        self.assertEqual(request.popTopVia().host, "p")
        self.assertEqual(countVias(request), 1)

    def test_newBranch(self):
        """
        Branches carry the magic cookie and are unique.
        """
        branches = {newBranch() for _ in range(100)}
        self.assertEqual(len(branches), 100)
        self.assertTrue(all(b.startswith("z9hG4bK") for b in branches))

    def test_headerKeyBounded(self):
        """
        Header names never seen before do not grow the name cache without
        bound.
        """
        from sipdist.sip import message
        for i in range(5000):
            headerKey(f"X-Random-{i}")
        self.assertLessEqual(len(message._NAME_CACHE), message._NAME_CACHE_MAX)


class StreamFramerTests(SynchronousTestCase):
    """
    Framing messages off a stream.
    """

    def setUp(self):
        self.messages = []
        self.errors = []
        self.pings = []
        self.framer = StreamFramer(self.messages.append, self.errors.append,
                                   lambda: self.pings.append(1), maxSize=4096)

    def test_byteAtATime(self):
        """
        Messages split anywhere are reassembled, and two messages in one
        chunk are both delivered.
        """
        data = build(body="h\u00e9llo".encode("utf-8")) + build()
        for i in range(len(data)):
            self.framer.dataReceived(data[i:i + 1])
        self.assertEqual(len(self.messages), 2)
        self.assertEqual(parseMessage(self.messages[0], stream=True).body,
                         "h\u00e9llo".encode("utf-8"))
        self.framer.dataReceived(data)
        self.assertEqual(len(self.messages), 4)
        self.assertEqual(self.errors, [])

    def test_keepAlive(self):
        """
        A double CRLF between messages is an RFC 5626 keep-alive ping.
        """
        self.framer.dataReceived(b"\r\n\r\n" + build() + b"\r\n\r\n")
        self.assertEqual(len(self.pings), 2)
        self.assertEqual(len(self.messages), 1)

    def test_missingContentLength(self):
        """
        A message on a stream without Content-Length cannot be framed: the
        error is reported once with the request so it can be answered, and
        the rest of the stream is ignored.
        """
        self.framer.dataReceived(build(contentLength=False) + build())
        self.assertEqual(len(self.errors), 1)
        self.assertEqual(self.errors[0].code, 400)
        self.assertEqual(errorResponse(self.errors[0]).phrase,
                         "Missing Content-Length")
        self.assertEqual(self.messages, [])

    def test_oversized(self):
        """
        A message larger than the maximum is a 513, by its Content-Length or
        by its headers alone.
        """
        self.framer.dataReceived(
            build().replace(b"Content-Length: 0", b"Content-Length: 9000"))
        self.assertEqual([e.code for e in self.errors], [513])
        framer = StreamFramer(self.messages.append, self.errors.append,
                              lambda: None, maxSize=4096)
        framer.dataReceived(b"REGISTER sip:a SIP/2.0\r\n" +
                            b"X-Long: y\r\n" * 1000)
        self.assertEqual([e.code for e in self.errors], [513, 513])


class StreamFramerHoldingTests(SynchronousTestCase):
    """
    What a framer holds of an unfinished message.
    """

    def setUp(self):
        self.messages = []
        self.errors = []
        self.pings = []
        self.framer = StreamFramer(self.messages.append, self.errors.append,
                                   lambda: self.pings.append(1), maxSize=65535)

    def test_holdsTheBytesReceived(self):
        """
        An unfinished message is held as the bytes received, however short
        its lines; the framer says whether its header section is complete,
        and holds nothing once the message is delivered.
        """
        framer = self.framer
        message = build(body=b"x" * 100)
        head = message[:-104]
        framer.dataReceived(head)
        for i in range(1000):
            framer.dataReceived(b"\r\nX: y")
        self.assertEqual(framer.buffered, len(head) + 6000)
        self.assertTrue(framer.inHeaders)
        framer.dataReceived(b"\r\n\r\n" + b"x" * 50)
        self.assertFalse(framer.inHeaders)
        self.assertTrue(framer.inMessage)
        framer.dataReceived(b"x" * 50)
        self.assertEqual(len(self.messages), 1)
        self.assertEqual((framer.buffered, framer.inMessage), (0, False))

    def test_keepAliveSplit(self):
        """
        A keep-alive split inside its CRLFs is still one ping, and holds
        nothing that delays the next message.
        """
        for chunk in (b"\r", b"\n\r", b"\n"):
            self.framer.dataReceived(chunk)
        self.assertEqual(self.pings, [1])
        self.framer.dataReceived(build())
        self.assertEqual(len(self.messages), 1)
        self.assertEqual(self.errors, [])


class CacheTests(SynchronousTestCase):
    """
    Parsed values are cached and the caches follow header changes.
    """

    def test_topViaCachedAndInvalidated(self):
        """
        The top Via is parsed once; changing the Via header drops it.
        """
        request = parseMessage(build())
        self.assertIs(request.topVia(), request.topVia())
        request.insertHeader("Via", "SIP/2.0/TCP p;branch=z9hG4bKp")
        self.assertEqual(request.topVia().host, "p")

    def test_responseViasIndependent(self):
        """
        Popping a Via from a response leaves the request's Vias alone.
        """
        request = parseMessage(build())
        request.insertHeader("Via", "SIP/2.0/TCP p;branch=z9hG4bKp")
        request.vias()
        response = responseTo(request, 200)
        response.popTopVia()
        self.assertEqual(len(request.vias()), 2)
        self.assertEqual(request.topVia().host, "p")

    def test_nameAddrCache(self):
        """
        nameAddr parses a header once, and again after it changes.
        """
        request = parseMessage(build())
        first = request.nameAddr("to")
        self.assertIs(request.nameAddr("t"), first)
        request.setHeader("To", "<sip:bob@example.com>")
        self.assertEqual(request.nameAddr("to")[1].username, "bob")
        self.assertRaises(KeyError, request.nameAddr, "reply-to")
