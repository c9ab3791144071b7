"""
The client over TLS: the server's identity is checked with service-identity
against the configured CA; a mismatch is a login failure with one clear
line.  Certificates from L{sipdist.testca.makeCA}, servers on loopback.
"""

from types import SimpleNamespace

from twisted.internet import defer, reactor
from twisted.trial.unittest import TestCase

from sipdist.client.login import Login, LoginFailed
from sipdist.testca import makeCA
from sipdist.sip.tls import serverContextFactory
from tests.client_helpers import Redirect, ScriptedServer, startAgent


class TLSLoginTests(TestCase):
    """
    Logging in over TLS.
    """

    timeout = 30

    def setUp(self):
        self.certs = makeCA(self.mktemp())

    @defer.inlineCallbacks
    def startTLS(self, name="server", action=None):
        server = ScriptedServer(reactor, name, action=action)
        options = serverContextFactory(self.certs[f"{name}.pem"],
                                       self.certs[f"{name}.key"])
        yield server.start("sips", options)
        self.addCleanup(server.stop)
        return server

    @defer.inlineCallbacks
    def test_rightCertificate(self):
        """
        A server whose certificate names its address and is issued by the
        configured CA gets the REGISTER over TLS.
        """
        server = yield self.startTLS()
        ua = yield startAgent(self, reactor,
                              caCertificates=[self.certs["ca.pem"]])
        result = yield Login(ua, ua.locator, server=server.uri).run()
        self.assertEqual(result.target.transport, "TLS")
        self.assertEqual(server.authenticated, 1)

    @defer.inlineCallbacks
    def test_wrongHostname(self):
        """
        A certificate for another name fails the login with one line naming
        the server and the name it had to prove; nothing is sent to it.
        """
        server = yield self.startTLS("wronghost")
        ua = yield startAgent(self, reactor,
                              caCertificates=[self.certs["ca.pem"]])
        failure = yield self.assertFailure(
            Login(ua, ua.locator, server=server.uri).run(), LoginFailed)
        message = str(failure)
        self.assertIn("does not name '127.0.0.1'", message)
        self.assertIn(f"127.0.0.1:{server.port}", message)
        self.assertNotIn("\n", message)
        self.assertEqual(server.requests, [])

    @defer.inlineCallbacks
    def test_otherCA(self):
        """
        A certificate from a CA we were not told to trust fails the login,
        saying so.
        """
        server = yield self.startTLS("other")
        ua = yield startAgent(self, reactor,
                              caCertificates=[self.certs["ca.pem"]])
        failure = yield self.assertFailure(
            Login(ua, ua.locator, server=server.uri).run(), LoginFailed)
        self.assertIn("not issued by a trusted CA", str(failure))
        self.assertEqual(server.requests, [])

    @defer.inlineCallbacks
    def test_redirectToWrongHostname(self):
        """
        A signed redirect to a TLS server with a wrong certificate fails the
        login at that server.
        """
        bad = yield self.startTLS("wronghost")
        first = yield self.startTLS(action=Redirect(bad))
        ua = yield startAgent(self, reactor,
                              caCertificates=[self.certs["ca.pem"]])
        failure = yield self.assertFailure(
            Login(ua, ua.locator, server=first.uri).run(), LoginFailed)
        self.assertIn("does not name", str(failure))
        self.assertEqual(first.authenticated, 1)
        self.assertEqual(bad.requests, [])

    @defer.inlineCallbacks
    def test_redirectToTransportTLS(self):
        """
        A signed redirect received over TLS to a C{sip:} URI with
        C{transport=tls} is followed over TLS, verifying the home's
        certificate, and the login ends registered there.
        """
        home = yield self.startTLS()
        contact = SimpleNamespace(
            uri=f"sip:127.0.0.1:{home.port};transport=tls")
        first = yield self.startTLS(action=Redirect(contact))
        ua = yield startAgent(self, reactor,
                              caCertificates=[self.certs["ca.pem"]])
        result = yield Login(ua, ua.locator, server=first.uri).run()
        self.assertEqual((result.target.transport, result.target.port),
                         ("TLS", home.port))
        self.assertEqual(home.authenticated, 1)

    @defer.inlineCallbacks
    def test_redirectOutOfTLSRefused(self):
        """
        A signed redirect received over TLS to a server reachable only over
        UDP or TCP fails the login, saying so; nothing is sent in clear.
        """
        for kind in ("udp", "tcp"):
            clear = ScriptedServer(reactor, "server")
            yield clear.start(kind)
            self.addCleanup(clear.stop)
            first = yield self.startTLS(action=Redirect(clear))
            ua = yield startAgent(self, reactor,
                                  caCertificates=[self.certs["ca.pem"]])
            failure = yield self.assertFailure(
                Login(ua, ua.locator, server=first.uri).run(), LoginFailed)
            self.assertIn("would continue a TLS login without TLS",
                          str(failure))
            self.assertEqual(clear.requests, [])
