"""
A real server on loopback, driven by real SIP tools (sipsak, SIPp) over
UDP and TCP, and by a TLS client checking the server's certificate.
"""

import socket

from twisted.internet import defer, endpoints, reactor
from twisted.internet.protocol import Factory, Protocol
from twisted.python.filepath import FilePath
from twisted.trial.unittest import TestCase

from sipdist.server import buildServer
from sipdist.testca import makeCA
from sipdist.sip.tls import clientContextFactory, serverContextFactory
from tests.interop import (
    OPTIONS_SCENARIO, freeSIPPort, requireTool, runSipp, runSipsak)

OPTIONS = (
    "OPTIONS sip:127.0.0.1 SIP/2.0\r\n"
    "Via: SIP/2.0/TLS 127.0.0.1:5999;branch=z9hG4bKtls1\r\n"
    "From: <sip:probe@127.0.0.1>;tag=1\r\n"
    "To: <sip:127.0.0.1>\r\n"
    "Call-ID: tls-probe\r\n"
    "CSeq: 1 OPTIONS\r\n"
    "Max-Forwards: 70\r\n"
    "Content-Length: 0\r\n\r\n").encode("ascii")


def config(listen, tlsServerOptions=None):
    return {"name": "home1", "role": "home", "domain": "127.0.0.1",
            "listen": listen, "tls-server-options": tlsServerOptions}


@defer.inlineCallbacks
def startServer(testCase, listen, tlsServerOptions=None):
    """
    Start a server listening on C{listen}; stop it when the test ends.
    """
    service = buildServer(config(listen, tlsServerOptions), reactor)
    service.startService()
    testCase.addCleanup(service.stopService)
    yield service.transportService.ready
    return service


class _FirstLine(Protocol):
    """
    Sends one message and fires with the first line of the answer.
    """

    def __init__(self, done):
        self.done = done
        self.data = b""

    def connectionMade(self):
        self.transport.write(OPTIONS)

    def dataReceived(self, data):
        self.data += data
        if b"\r\n" in self.data and not self.done.called:
            self.done.callback(self.data.split(b"\r\n", 1)[0])
            self.transport.loseConnection()

    def connectionLost(self, reason):
        if not self.done.called:
            self.done.errback(reason)


class ServerInteropTests(TestCase):
    """
    The server answers standard tools on loopback.
    """

    timeout = 60

    @defer.inlineCallbacks
    def setUp(self):
        self.port = freeSIPPort()
        self.service = yield startServer(self, [
            f"udp:{self.port}:interface=127.0.0.1",
            f"tcp:{self.port}:interface=127.0.0.1"])

    @defer.inlineCallbacks
    def test_sipsakUDPandTCP(self):
        """
        sipsak's OPTIONS gets a 200 over UDP and over TCP.
        """
        requireTool("sipsak")
        for transport in ("udp", "tcp"):
            code, out, err = yield runSipsak(
                reactor, "sip:127.0.0.1", transport=transport,
                proxy=f"127.0.0.1:{self.port}")
            self.assertEqual(code, 0, f"{transport}: {out!r} {err!r}")

    @defer.inlineCallbacks
    def test_sippUDPandTCP(self):
        """
        A SIPp OPTIONS scenario completes over UDP and over TCP.
        """
        requireTool("sipp")
        for transport in ("u1", "t1"):
            code, out, err = yield runSipp(
                reactor, OPTIONS_SCENARIO, f"127.0.0.1:{self.port}",
                transport=transport, calls=5)
            self.assertEqual(code, 0, f"{transport}: {out[-500:]!r} {err[-500:]!r}")

    @defer.inlineCallbacks
    def test_junkDoesNotStopIt(self):
        """
        After 1,000 junk datagrams the server still answers.
        """
        requireTool("sipsak")
        rng = __import__("random").Random(7)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for i in range(1000):
                junk = bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 300)))
                if i % 3 == 0:
                    junk = b"REGISTER sip:x SIP/2.0\r\nVia: " + junk + b"\r\n\r\n"
                s.sendto(junk, ("127.0.0.1", self.port))
        code, out, err = yield runSipsak(reactor, "sip:127.0.0.1",
                                         proxy=f"127.0.0.1:{self.port}")
        self.assertEqual(code, 0, out)
        self.assertGreater(self.service.transport.dropped, 0)


class TLSInteropTests(TestCase):
    """
    A TLS listener with a certificate from a test CA.
    """

    timeout = 60

    @defer.inlineCallbacks
    def setUp(self):
        self.certs = FilePath(self.mktemp())
        self.certs.makedirs()
        makeCA(self.certs.path)
        self.port = freeSIPPort()
        options = serverContextFactory(self.certs.child("server.pem").path,
                                       self.certs.child("server.key").path)
        yield startServer(self, [f"sips:{self.port}:interface=127.0.0.1"], options)

    def probe(self, ca, hostname="127.0.0.1"):
        endpoint = endpoints.wrapClientTLS(
            clientContextFactory(hostname, self.certs.child(ca).path),
            endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", self.port))
        done = defer.Deferred()
        factory = Factory.forProtocol(lambda: _FirstLine(done))
        d = endpoint.connect(factory)
        d.addErrback(done.errback)
        return done

    @defer.inlineCallbacks
    def test_rightCA(self):
        """
        A client trusting the test CA completes the handshake and gets 200
        to its OPTIONS.
        """
        line = yield self.probe("ca.pem")
        self.assertEqual(line, b"SIP/2.0 200 OK")

    @defer.inlineCallbacks
    def test_wrongCA(self):
        """
        A client trusting another CA refuses the server.
        """
        from OpenSSL.SSL import Error
        yield self.assertFailure(self.probe("other-ca.pem"), Error)

    @defer.inlineCallbacks
    def test_wrongHostname(self):
        """
        A client expecting another name refuses the server.
        """
        from service_identity import VerificationError
        yield self.assertFailure(self.probe("ca.pem", "wrong.example"),
                                 VerificationError)
