"""
Tests for L{sipdist.sip.transport}.
"""

import socket

from twisted.internet import defer, endpoints, error, reactor, task
from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase

from sipdist.sip import transport as _transport
from sipdist.sip.message import parseMessage
from sipdist.sip.transport import (
    DatagramFlow, SIPDatagramProtocol, TransportLayer, _StreamFactory,
    fitConnectionsToFileLimit, parseListen)
from tests.test_message import build


class RecordingHandler:
    """
    A transaction layer stand-in that records what the transport hands up.
    """

    def __init__(self):
        self.received = []

    def messageReceived(self, message, flow):
        self.received.append((message, flow))


class FakeUDPTransport:
    """
    The transport of a UDP port: records datagrams written.
    """

    def __init__(self):
        self.written = []

    def write(self, data, addr):
        self.written.append((data, addr))

    def getHost(self):
        return IPv4Address("UDP", "127.0.0.1", 5060)


def register(via="SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK1;rport"):
    return build().replace(
        b"SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK776asdhds;rport",
        via.encode("ascii"))


def listenUDP(testCase):
    """
    Give C{testCase} a transport layer on a memory reactor (C{reactor},
    C{handler}, C{layer}) with one UDP port (C{protocol} over the fake
    transport C{udp}).
    """
    testCase.reactor = MemoryReactorClock()
    testCase.handler = RecordingHandler()
    testCase.layer = TransportLayer(testCase.reactor, testCase.handler)
    testCase.protocol = SIPDatagramProtocol(testCase.layer, 0)
    testCase.udp = FakeUDPTransport()
    testCase.protocol.makeConnection(testCase.udp)
    testCase.layer._datagram.append(testCase.protocol)


class DatagramTests(SynchronousTestCase):
    """
    Requests and responses over UDP.
    """

    def setUp(self):
        listenUDP(self)

    def test_rport(self):
        """
        A request asking for rport gets received and rport filled in, and
        its responses go to the source address and port (RFC 3581).
        """
        self.protocol.datagramReceived(register(), ("10.1.1.1", 40000))
        [(request, flow)] = self.handler.received
        via = request.topVia()
        self.assertEqual((via.received, via.rportValue), ("10.1.1.1", 40000))
        self.assertEqual(flow.remote, ("10.1.1.1", 40000))
        self.assertIn("received=10.1.1.1;rport=40000", request.header("via"))

    def test_noRport(self):
        """
        Without rport, responses go to the source address at the sent-by
        port, and received is added because the address differs (RFC 3261
        section 18.2.2).
        """
        self.protocol.datagramReceived(
            register("SIP/2.0/UDP 192.0.2.1:5062;branch=z9hG4bK1"),
            ("10.1.1.1", 40000))
        [(request, flow)] = self.handler.received
        self.assertEqual(request.topVia().received, "10.1.1.1")
        self.assertEqual(flow.remote, ("10.1.1.1", 5062))

    def test_sameAddress(self):
        """
        A request whose sent-by matches its source is left as it is.
        """
        self.protocol.datagramReceived(
            register("SIP/2.0/UDP 10.1.1.1:5062;branch=z9hG4bK1"),
            ("10.1.1.1", 5062))
        [(request, flow)] = self.handler.received
        self.assertIsNone(request.topVia().received)
        self.assertEqual(flow.remote, ("10.1.1.1", 5062))

    def test_maddrIgnored(self):
        """
        A Via naming another address in C{maddr} (unicast or multicast) does
        not move the responses: they go to the source address at the
        sent-by port, or the source port with rport.
        """
        for maddr in ("192.0.2.99", "224.0.1.75", "ff02::1"):
            self.protocol.datagramReceived(
                register(f"SIP/2.0/UDP 192.0.2.99:5070;maddr={maddr};"
                         f"branch=z9hG4bK1"),
                ("10.1.1.1", 40000))
            self.protocol.datagramReceived(
                register(f"SIP/2.0/UDP 192.0.2.99:5070;maddr={maddr};"
                         f"rport;branch=z9hG4bK2"),
                ("10.1.1.1", 40000))
        remotes = [flow.remote for request, flow in self.handler.received]
        self.assertEqual(remotes, [("10.1.1.1", 5070),
                                   ("10.1.1.1", 40000)] * 3)

    def test_maddrMalformedAnswered(self):
        """
        A malformed request whose Via carries C{maddr} is answered at its
        source address, not at the maddr.
        """
        data = register("SIP/2.0/UDP 192.0.2.99:5070;maddr=192.0.2.99;"
                        "branch=z9hG4bK1").replace(b"CSeq: 314159 REGISTER",
                                                   b"CSeq: x")
        self.protocol.datagramReceived(data, ("10.1.1.1", 40000))
        [(data, addr)] = self.udp.written
        self.assertEqual(addr, ("10.1.1.1", 5070))

    def test_malformedAnswered(self):
        """
        A malformed request is answered statelessly with a reason phrase,
        to the address its Via names, and never reaches the handler.
        """
        data = register().replace(b"CSeq: 314159 REGISTER", b"CSeq: x")
        self.protocol.datagramReceived(data, ("10.1.1.1", 40000))
        self.assertEqual(self.handler.received, [])
        [(data, addr)] = self.udp.written
        response = parseMessage(data)
        self.assertEqual((response.code, response.phrase), (400, "Bad CSeq"))
        self.assertEqual(addr, ("10.1.1.1", 40000))
        self.assertEqual(self.layer.answeredErrors, 1)

    def test_unroutableDropped(self):
        """
        Junk and requests without a usable Via are dropped, counted and
        nothing is sent.
        """
        for junk in (b"\x00\x01junk", b"GET / HTTP/1.1\r\n\r\n",
                     register("nonsense")):
            self.protocol.datagramReceived(junk, ("10.1.1.1", 40000))
        self.assertEqual(self.udp.written, [])
        self.assertEqual(self.handler.received, [])
        self.assertEqual(self.layer.dropped, 3)

    def test_keepAliveIgnored(self):
        """
        A datagram of CRLFs is a keep-alive: nothing is sent, nothing
        counted.
        """
        self.protocol.datagramReceived(b"\r\n\r\n", ("10.1.1.1", 40000))
        self.assertEqual((self.udp.written, self.layer.dropped), ([], 0))

    def test_send(self):
        """
        A flow sends the serialised message to its remote address.
        """
        flow = DatagramFlow(self.protocol, ("10.2.2.2", 5060))
        request = parseMessage(build())
        self.assertTrue(flow.send(request))
        self.assertEqual(self.udp.written, [(request.toBytes(), ("10.2.2.2", 5060))])

    def test_token(self):
        """
        A UDP flow's token names the same flow again.
        """
        flow = DatagramFlow(self.protocol, ("10.2.2.2", 5070))
        self.assertEqual(self.layer.flowByToken(flow.token), flow)
        self.assertIsNone(self.layer.flowByToken("u9-x-1"))
        self.assertIsNone(self.layer.flowByToken("unonsense"))

    def test_response(self):
        """
        Responses are handed up with their flow.
        """
        self.protocol.datagramReceived(build("SIP/2.0 200 OK"),
                                       ("10.1.1.1", 5060))
        [(response, flow)] = self.handler.received
        self.assertEqual(response.code, 200)

    def test_sendFailuresLogBounded(self):
        """
        Datagrams that cannot be sent, at once or later (C{sendSoon}), are
        logged at most 20 lines in 10 s, then the count of those held back
        in one line.
        """
        from twisted.logger import globalLogPublisher
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)

        def refused(data, addr):
            raise OSError(1, "Operation not permitted")
        self.udp.write = refused
        later = []
        for i in range(25):
            self.assertFalse(self.protocol.sendBytes(b"x", ("10.1.1.1", i)))
            self.protocol._unsent(
                (("10.1.1.1", i), lambda c, e: later.append(c), i),
                OSError(1, "later"))
        self.assertEqual(later, list(range(25)))
        lines = [e for e in events
                 if e.get("log_format", "").startswith("cannot send")]
        self.assertEqual(len(lines), 20)
        self.reactor.advance(10)
        self.protocol.sendBytes(b"x", ("10.1.1.1", 1))
        self.assertEqual(
            [(e["log_format"], e.get("count")) for e in events[-2:]],
            [("{what}: {count} more not logged in the last {period} s", 30),
             ("cannot send to {addr}: {error}", None)])

    def test_sendAfterOtherPorts(self):
        """
        A datagram sent at once on one port leaves after what the other
        ports keep for the end of their wake-up (this port's own write
        sees to its own).
        """
        calls = []
        other = SIPDatagramProtocol(self.layer, 1)
        otherUDP = FakeUDPTransport()
        otherUDP.flush = lambda: calls.append("other port's answers")
        other.makeConnection(otherUDP)
        self.layer._datagram.append(other)
        self.udp.flush = lambda: calls.append("own answers")
        self.udp.write = lambda data, addr: calls.append(data)
        self.protocol.sendBytes(b"NOTIFY", ("10.1.1.1", 5060))
        self.assertEqual(calls, ["other port's answers", b"NOTIFY"])

    def test_sendTooLong(self):
        """
        A datagram too long for UDP (Twisted's port raises
        L{error.MessageLengthError}) is not sent, and logged, not raised.
        """
        def tooLong(data, addr):
            raise error.MessageLengthError("message too long")
        self.udp.write = tooLong
        self.assertFalse(self.protocol.sendBytes(b"x", ("10.1.1.1", 5060)))


class DatagramErrorTests(DatagramTests):
    """
    Malformed requests over UDP: a 400 naming the problem where a response
    can be routed, else a drop counted under its reason.
    """

    def written(self):
        return [(parseMessage(data), addr) for data, addr in self.udp.written]

    def test_viaNamesOtherTransport(self):
        """
        A request whose Via names TLS but that came over UDP is answered
        over UDP at its source address and port, not at the TLS default
        port.
        """
        self.protocol.datagramReceived(
            register("SIP/2.0/TLS 192.0.2.1;branch=z9hG4bK1"),
            ("10.1.1.1", 40000))
        [(request, flow)] = self.handler.received
        self.assertEqual(flow.remote, ("10.1.1.1", 40000))

    def test_emptyViaParameter(self):
        """
        An empty Via parameter after a usable sent-by is a 400 naming it,
        sent to where responses to that Via go.
        """
        self.protocol.datagramReceived(
            register("SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK1;;rport"),
            ("10.1.1.1", 40000))
        [(response, addr)] = self.written()
        self.assertEqual((response.code, response.phrase),
                         (400, "Empty Parameter In Via"))
        self.assertEqual(addr, ("10.1.1.1", 5060))
        self.assertEqual(self.handler.received, [])

    def test_portOutOfRange(self):
        """
        A Via sent-by port above 65535 leaves nowhere to send a datagram:
        the request is dropped and counted under its reason.
        """
        self.protocol.datagramReceived(
            register("SIP/2.0/UDP 192.0.2.1:70000;branch=z9hG4bK1"),
            ("10.1.1.1", 40000))
        self.assertEqual(self.udp.written, [])
        self.assertEqual(self.layer.dropped, 1)
        self.assertEqual(self.layer.dropReasons, {"Bad Via Sent-By Port": 1})

    def test_malformedAckNotAnswered(self):
        """
        A malformed ACK is never answered (RFC 3261 section 17.2.1); the
        drop is counted.
        """
        data = build("ACK sip:example.com SIP/3.0").replace(
            b"314159 REGISTER", b"1 ACK")
        good = data.replace(b"SIP/3.0", b"SIP/2.0")
        for mutated in (data, good.replace(b"1 ACK", b"1 INVITE"),
                        good.replace(b"ACK sip:", b"ACK tel:")):
            self.protocol.datagramReceived(mutated, ("10.1.1.1", 40000))
        self.assertEqual(self.udp.written, [])
        self.assertEqual(self.layer.dropped, 3)
        self.assertEqual(sorted(self.layer.dropReasons), [
            "ACK Not Answered: CSeq Method Does Not Match",
            "ACK Not Answered: SIP Version Not Supported",
            "ACK Not Answered: Unsupported URI Scheme"])

    def test_dropReasonsBounded(self):
        """
        At most C{MAX_DROP_REASONS} reasons are kept; the rest count as
        C{Other}.
        """
        from sipdist.sip import transport
        self.patch(transport, "MAX_DROP_REASONS", 1)
        for via in ("SIP/2.0/UDP 192.0.2.1:70000", "SIP/2.0/UDP"):
            self.protocol.datagramReceived(register(via), ("10.1.1.1", 4000))
        self.assertEqual(self.layer.dropReasons,
                         {"Bad Via Sent-By Port": 1, "Other": 1})


class StreamTests(SynchronousTestCase):
    """
    Requests over TCP and TLS connections, and the connection table.
    """

    def setUp(self):
        self.reactor = MemoryReactorClock()
        self.handler = RecordingHandler()
        self.layer = TransportLayer(self.reactor, self.handler,
                                    idleTimeout=60, maxConnections=3,
                                    maxConnectionsPerHost=2, maxMessageSize=4096)
        self.factory = _StreamFactory(self.layer, "TCP")

    def connect(self, host="10.1.1.1", port=40000):
        addr = IPv4Address("TCP", host, port)
        protocol = self.factory.buildProtocol(addr)
        if protocol is None:
            return None, None
        transport = StringTransport(
            hostAddress=IPv4Address("TCP", "127.0.0.1", 5060),
            peerAddress=addr)
        protocol.makeConnection(transport)
        return protocol, transport

    def test_request(self):
        """
        A request framed off the stream reaches the handler with the
        connection's flow; its response is written on the same connection.
        """
        protocol, transport = self.connect()
        protocol.dataReceived(register("SIP/2.0/TCP 192.0.2.1:5060;branch=z9hG4bK1"))
        [(request, flow)] = self.handler.received
        self.assertEqual((flow.transport, flow.reliable), ("TCP", True))
        self.assertIs(flow, protocol.flow)
        flow.send(parseMessage(build("SIP/2.0 200 OK")))
        self.assertTrue(transport.value().startswith(b"SIP/2.0 200 OK\r\n"))

    def test_malformedAnsweredConnectionKept(self):
        """
        A malformed request whose framing is intact is answered 400 on the
        connection, which stays open.
        """
        protocol, transport = self.connect()
        protocol.dataReceived(build("REGISTER  sip:example.com SIP/2.0"))
        response = parseMessage(transport.value())
        self.assertEqual((response.code, response.phrase),
                         (400, "Extra Spaces In Request-Line"))
        self.assertFalse(transport.disconnecting)

    def test_unusableViaAnsweredOnConnection(self):
        """
        Over a connection even a request whose top Via names no usable
        address is answered: the response goes back on the connection.
        """
        protocol, transport = self.connect()
        protocol.dataReceived(register("SIP/2.0/TCP 192.0.2.1:99999;branch=z9hG4bK1"))
        response = parseMessage(transport.value())
        self.assertEqual((response.code, response.phrase),
                         (400, "Bad Via Sent-By Port"))
        self.assertFalse(transport.disconnecting)

    def test_framingErrorClosesConnection(self):
        """
        A message without Content-Length on a stream is answered 400 and
        the connection is closed.
        """
        protocol, transport = self.connect()
        protocol.dataReceived(build(contentLength=False))
        self.assertTrue(transport.value().startswith(
            b"SIP/2.0 400 Missing Content-Length\r\n"))
        self.assertTrue(transport.disconnecting)

    def test_oversized(self):
        """
        A message past the maximum size is answered 513.
        """
        protocol, transport = self.connect()
        protocol.dataReceived(build(body=b"x" * 5000))
        self.assertTrue(transport.value().startswith(
            b"SIP/2.0 513 Message Too Large\r\n"))
        self.assertTrue(transport.disconnecting)

    def test_keepAlive(self):
        """
        A double-CRLF ping is answered with one CRLF (RFC 5626).
        """
        protocol, transport = self.connect()
        protocol.dataReceived(b"\r\n\r\n")
        self.assertEqual(transport.value(), b"\r\n")

    def test_limits(self):
        """
        Connections past the per-address and overall limits are refused.
        """
        self.assertIsNotNone(self.connect("10.1.1.1", 1)[0])
        self.assertIsNotNone(self.connect("10.1.1.1", 2)[0])
        self.assertIsNone(self.connect("10.1.1.1", 3)[0])
        self.assertIsNotNone(self.connect("10.1.1.2", 1)[0])
        self.assertIsNone(self.connect("10.1.1.3", 1)[0])
        self.assertEqual(self.layer.connectionCount, 3)
        self.assertEqual(self.layer.refused, 2)

    def test_lostConnectionFreesSlot(self):
        """
        A closed connection leaves the table and frees its slot.
        """
        protocol, transport = self.connect()
        self.connect()
        self.assertIsNone(self.connect()[0])
        protocol.connectionLost(None)
        self.assertIsNotNone(self.connect()[0])
        self.assertEqual(self.layer.connectionCount, 2)

    def test_idleTimeout(self):
        """
        A connection without traffic for the idle timeout is closed; traffic
        postpones it.
        """
        protocol, transport = self.connect()
        self.reactor.advance(50)
        protocol.dataReceived(b"\r\n\r\n")
        self.reactor.advance(50)
        self.assertFalse(transport.disconnecting)
        self.reactor.advance(11)
        self.assertTrue(transport.disconnecting)
        protocol.connectionLost(None)
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_reuseByAddressAndAlias(self):
        """
        A connection is found again by the peer's address and by the
        sent-by of the requests it carried, so requests to that peer reuse
        it; once closed it is forgotten.
        """
        protocol, transport = self.connect("10.1.1.1", 40000)
        protocol.dataReceived(register("SIP/2.0/TCP client.example:5060;branch=z9hG4bK1"))
        self.assertIs(self.layer.existingFlow("TCP", "10.1.1.1", 40000), protocol.flow)
        self.assertIs(self.layer.existingFlow("TCP", "client.example", 5060), protocol.flow)
        d = self.layer.connect("TCP", "client.example", 5060)
        self.assertIs(self.successResultOf(d), protocol.flow)
        self.assertIs(self.layer.flowByToken(protocol.flow.token), protocol.flow)
        protocol.connectionLost(None)
        self.assertIsNone(self.layer.existingFlow("TCP", "client.example", 5060))
        self.assertIsNone(self.layer.flowByToken(protocol.flow.token))

    def test_connectNew(self):
        """
        Connecting to a peer without a connection opens one; two requests
        waiting for it share it.
        """
        d1 = self.layer.connect("TCP", "127.0.0.1", 5070)
        d2 = self.layer.connect("TCP", "127.0.0.1", 5070)
        self.assertNoResult(d1)
        self.assertNoResult(d2)
        [(host, port, factory, _, _)] = self.reactor.tcpClients
        self.assertEqual((host, port), ("127.0.0.1", 5070))
        protocol = factory.buildProtocol(IPv4Address("TCP", host, port))
        protocol.makeConnection(StringTransport(
            hostAddress=IPv4Address("TCP", "127.0.0.1", 40000),
            peerAddress=IPv4Address("TCP", host, port)))
        flow = self.successResultOf(d1)
        self.assertIs(self.successResultOf(d2), flow)
        self.assertEqual(flow.remote, ("127.0.0.1", 5070))
        self.assertIs(self.layer.existingFlow("TCP", "127.0.0.1", 5070), flow)

    def test_connectAddressRefusedAtOnce(self):
        """
        A connection to an address (IPv4 or IPv6) is opened at once,
        without a name resolution, and a refused connection fails the
        flow's Deferred as soon as the reactor reports it (a
        L{HostnameEndpoint} would report it a third of a second later);
        the next attempt opens a new connection.
        """
        for host in ("127.0.0.1", "::1"):
            d = self.layer.connect("TCP", host, 5070)
            self.assertEqual(self.reactor.tcpClients[-1][:2], (host, 5070))
            connector = self.reactor.connectors[-1]
            self.reactor.tcpClients[-1][2].clientConnectionFailed(
                connector, Failure(error.ConnectionRefusedError()))
            self.failureResultOf(d, error.ConnectionRefusedError)
            self.assertNoResult(self.layer.connect("TCP", host, 5070))
            self.assertEqual(len(self.reactor.tcpClients), 2 if host ==
                             "127.0.0.1" else 4)

    def test_connectedToItself(self):
        """
        A connection whose two ends are the same address (nothing listened
        there, and the kernel gave the connection that port as its own) is
        aborted and fails as refused, for whoever waited on it; it is not
        kept.
        """
        d1 = self.layer.connect("TCP", "127.0.0.1", 40001)
        d2 = self.layer.connect("TCP", "127.0.0.1", 40001)
        [(host, port, factory, _, _)] = self.reactor.tcpClients
        protocol = factory.buildProtocol(IPv4Address("TCP", host, port))
        transport = StringTransport(
            hostAddress=IPv4Address("TCP", "127.0.0.1", 40001),
            peerAddress=IPv4Address("TCP", "127.0.0.1", 40001))
        protocol.makeConnection(transport)
        for d in (d1, d2):
            failure = self.failureResultOf(d, error.ConnectionRefusedError)
            self.assertIn("connected to itself", str(failure.value))
        self.assertTrue(transport.disconnecting)
        protocol.connectionLost(Failure(error.ConnectionAborted()))
        self.assertIsNone(self.layer.existingFlow("TCP", "127.0.0.1", 40001))
        self.assertNoResult(self.layer.connect("TCP", "127.0.0.1", 40001))
        self.assertEqual(len(self.reactor.tcpClients), 2)


class SelfConnectionTests(TestCase):
    """
    A real TCP connection to itself (what a connection to a free port of
    the ephemeral range on loopback can become, now and then).
    """

    @defer.inlineCallbacks
    def test_refused(self):
        """
        It fails as refused, and the socket is closed.
        """
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
        probe.close()
        # The connection's own address forced to the one it goes to (the
        # kernel's choice, when it makes the same one).
        self.patch(_transport, "streamEndpoint",
                   lambda reactor, host, port: endpoints.TCP4ClientEndpoint(
                       reactor, host, port, bindAddress=(host, port)))
        layer = TransportLayer(reactor, RecordingHandler())
        failure = yield self.assertFailure(
            layer.connect("TCP", "127.0.0.1", port),
            error.ConnectionRefusedError)
        self.assertIn("connected to itself", str(failure))
        for i in range(100):
            if not layer._open:
                break
            yield task.deferLater(reactor, 0.01, lambda: None)
        self.assertEqual(layer._open, set())


class StreamLimitTests(SynchronousTestCase):
    """
    What a connection may hold and for how long: the deadlines of an
    unfinished message, the bytes of one connection and of all of them.
    """

    def setUp(self):
        self.reactor = MemoryReactorClock()
        self.handler = RecordingHandler()
        self.layer = TransportLayer(
            self.reactor, self.handler, idleTimeout=60, headerTimeout=5,
            messageTimeout=20, maxMessageSize=4096, maxBuffered=6000,
            maxConnectionsPerHost=10)
        self.factory = _StreamFactory(self.layer, "TCP")

    def connect(self, port=40000):
        addr = IPv4Address("TCP", "10.1.1.1", port)
        protocol = self.factory.buildProtocol(addr)
        transport = StringTransport(
            hostAddress=IPv4Address("TCP", "127.0.0.1", 5060),
            peerAddress=addr)
        protocol.makeConnection(transport)
        return protocol, transport

    def test_flowNotConnectedAfterClose(self):
        """
        Once its connection is lost, a stream flow says it is not
        connected, and the layer no longer offers it for the peer.
        """
        protocol, transport = self.connect()
        flow = protocol.flow
        self.assertTrue(flow.connected)
        protocol.connectionLost(None)
        self.assertFalse(flow.connected)
        self.assertIsNone(self.layer.existingFlow("TCP", "10.1.1.1", 40000))

    def test_tricklingHeadersClosedAtHeaderDeadline(self):
        """
        A peer sending its header section a byte a second is closed once
        the header deadline has passed since the message's first byte,
        although each byte arrives well within the idle timeout.
        """
        protocol, transport = self.connect()
        data = register("SIP/2.0/TCP 192.0.2.1:5060;branch=z9hG4bK1")
        for i in range(4):
            protocol.dataReceived(data[i:i + 1])
            self.reactor.advance(1)
        self.assertFalse(transport.disconnecting)
        protocol.dataReceived(data[4:5])
        self.reactor.advance(1)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.layer.closedSlow, 1)
        self.assertEqual(self.layer.bufferedBytes, 0)
        self.assertEqual(self.handler.received, [])

    def test_slowBodyClosedAtMessageDeadline(self):
        """
        Once its header section is complete a message has until the message
        deadline to arrive whole: past the header deadline it is kept, past
        the message deadline the connection is closed.
        """
        protocol, transport = self.connect()
        data = build(body=b"x" * 100)
        protocol.dataReceived(data[:-50])
        self.reactor.advance(10)
        protocol.dataReceived(data[-50:-40])
        self.assertFalse(transport.disconnecting)
        self.reactor.advance(9)
        self.assertFalse(transport.disconnecting)
        self.reactor.advance(1)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.layer.closedSlow, 1)

    def test_messagesInTimeKeepConnection(self):
        """
        Complete messages, even split over several reads and following one
        another for longer than the deadlines, keep the connection open;
        each one restarts the deadlines and the idle timeout.
        """
        protocol, transport = self.connect()
        data = register("SIP/2.0/TCP 192.0.2.1:5060;branch=z9hG4bK1")
        for i in range(10):
            protocol.dataReceived(data[:50])
            self.reactor.advance(4)
            protocol.dataReceived(data[50:])
        self.assertEqual(len(self.handler.received), 10)
        self.reactor.advance(59)
        self.assertFalse(transport.disconnecting)
        self.reactor.advance(1)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.layer.closedSlow, 0)

    def test_unfinishedMessageTooLarge(self):
        """
        A header section that grows past the maximum message size without
        ending is answered 513 and the connection is closed; what it held
        is released.
        """
        protocol, transport = self.connect()
        protocol.dataReceived(
            register("SIP/2.0/TCP 192.0.2.1:5060;branch=z9hG4bK1")[:-4])
        for i in range(800):
            protocol.dataReceived(b"\r\nX: y")
        self.assertTrue(transport.value().startswith(
            b"SIP/2.0 513 Message Too Large\r\n"))
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.layer.bufferedBytes, 0)

    def test_allConnectionsBounded(self):
        """
        Past the bytes all connections may hold together, the connections
        whose unfinished message started first are closed until the total
        is within the bound; the others keep theirs.
        """
        connections = []
        for port in range(3):
            protocol, transport = self.connect(40000 + port)
            protocol.dataReceived(b"REGISTER sip:a SIP/2.0\r\nX: " +
                                  b"y" * 2500)
            connections.append(transport)
            self.reactor.advance(1)
        self.assertEqual([t.disconnecting for t in connections],
                         [True, False, False])
        self.assertEqual(self.layer.closedOverBuffer, 1)
        self.assertLessEqual(self.layer.bufferedBytes, 6000)
        self.assertEqual(self.layer.bufferedBytes, 2 * 2527)

    def test_lostConnectionReleasesBytes(self):
        """
        A connection lost with an unfinished message gives its bytes back
        and leaves no timer behind.
        """
        protocol, transport = self.connect()
        protocol.dataReceived(b"REGISTER sip:a SIP/2.0\r\n")
        self.assertEqual(self.layer.bufferedBytes, 24)
        protocol.connectionLost(None)
        self.assertEqual(self.layer.bufferedBytes, 0)
        self.assertEqual(self.reactor.getDelayedCalls(), [])


class FakeRlimit:
    """
    The part of the L{resource} module that reads and sets
    C{RLIMIT_NOFILE}, for one pretend process; C{setrlimit} refuses a soft
    limit above the hard one, as the kernel does.
    """

    RLIMIT_NOFILE = 7
    RLIM_INFINITY = -1

    def __init__(self, soft, hard, refuse=False):
        self.limits = (soft, hard)
        self.refuse = refuse

    def getrlimit(self, which):
        assert which == self.RLIMIT_NOFILE
        return self.limits

    def setrlimit(self, which, limits):
        assert which == self.RLIMIT_NOFILE
        soft, hard = limits
        if self.refuse or (hard != self.RLIM_INFINITY and soft > hard):
            raise ValueError("not allowed to raise maximum limit")
        self.limits = limits


class FakeLog:
    def __init__(self):
        self.lines = []

    def warn(self, format, **kw):
        self.lines.append(format.format(**kw))


class FileLimitTests(SynchronousTestCase):
    """
    The limit of connections fits the limit of open files.
    """

    def test_softRaisedToHard(self):
        """
        The soft limit is raised to the hard one; a limit of connections
        that then fits with the reserve is kept, and nothing is logged.
        """
        rlimit, log = FakeRlimit(1024, 65536), FakeLog()
        self.assertEqual(fitConnectionsToFileLimit(10000, rlimit, log=log),
                         10000)
        self.assertEqual(rlimit.limits, (65536, 65536))
        self.assertEqual(log.lines, [])

    def test_lowered(self):
        """
        When the hard limit leaves fewer descriptors than the connections
        wanted plus the reserve, the connections are lowered to what is
        left, in one line naming both figures and the limit.
        """
        rlimit, log = FakeRlimit(1024, 1024), FakeLog()
        self.assertEqual(fitConnectionsToFileLimit(10000, rlimit, log=log),
                         1024 - 64)
        [line] = log.lines
        self.assertIn("--max-connections lowered from 10000 to 960", line)
        self.assertIn("1024", line)

    def test_cannotRaise(self):
        """
        When the soft limit cannot be raised, what it allows is used.
        """
        rlimit = FakeRlimit(256, 4096, refuse=True)
        self.assertEqual(
            fitConnectionsToFileLimit(10000, rlimit, log=FakeLog()), 192)

    def test_unlimited(self):
        """
        Without a hard limit the soft limit is raised to what the
        connections need and the configured figure is kept.
        """
        rlimit = FakeRlimit(1024, FakeRlimit.RLIM_INFINITY)
        self.assertEqual(
            fitConnectionsToFileLimit(5000, rlimit, log=FakeLog()), 5000)
        self.assertEqual(rlimit.limits[0], 5064)

    def test_tinyLimit(self):
        """
        A limit smaller than the reserve still allows one connection.
        """
        self.assertEqual(fitConnectionsToFileLimit(
            100, FakeRlimit(20, 20), log=FakeLog()), 1)


class ParseListenTests(SynchronousTestCase):
    """
    Listening descriptions.
    """

    def test_good(self):
        self.assertEqual(parseListen("udp:5060:interface=127.0.0.1"),
                         ("udp", ["5060"], {"interface": "127.0.0.1"}))
        self.assertEqual(parseListen(r"tcp:5060:interface=\:\:1"),
                         ("tcp", ["5060"], {"interface": "::1"}))
        self.assertEqual(parseListen("ssl:5061:privateKey=k.pem")[0], "ssl")

    def test_bad(self):
        for bad in ("http:80", "udp:", "udp:x", "udp:70000", "udp:5060:foo=1",
                    "udp:1:2"):
            self.assertRaises(ValueError, parseListen, bad)


class BadInputLogTests(SynchronousTestCase):
    """
    A flood of junk cannot flood the log.
    """

    def test_bounded(self):
        """
        Past the burst, dropped messages are counted but not logged, and the
        count is reported with the next line once the period has passed.
        """
        from twisted.logger import globalLogPublisher
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        reactor = MemoryReactorClock()
        layer = TransportLayer(reactor, RecordingHandler())
        protocol = SIPDatagramProtocol(layer, 0)
        protocol.makeConnection(FakeUDPTransport())
        for i in range(1000):
            protocol.datagramReceived(b"junk", ("10.0.0.1", 1))
        logged = [e for e in events if "dropped a message" in e.get("log_format", "")]
        self.assertEqual(len(logged), 20)
        self.assertEqual(layer.dropped, 1000)
        reactor.advance(10)
        protocol.datagramReceived(b"junk", ("10.0.0.1", 1))
        logged = [e for e in events if "dropped a message" in e.get("log_format", "")]
        self.assertEqual(logged[-1]["suppressed"], 980)


class ListenBacklogTests(SynchronousTestCase):
    """
    A TCP port listens with a backlog of 1024 connections unless its
    description says otherwise: the clients of a failed home connect to
    their backup all at once.
    """

    def backlog(self, description):
        reactor = MemoryReactorClock()
        layer = TransportLayer(reactor, RecordingHandler())
        layer.listen(description)
        return reactor.tcpServers[-1][2]

    def test_default(self):
        self.assertEqual(self.backlog("tcp:0:interface=127.0.0.1"), 1024)

    def test_given(self):
        self.assertEqual(self.backlog("tcp:0:interface=127.0.0.1:backlog=7"),
                         7)
