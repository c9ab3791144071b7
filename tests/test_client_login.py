"""
The client's redirect rules and registration lifecycle, against scripted
sipdist servers on loopback (real transport, transactions and Digest; the
tampered redirect and the chain of six are things real roles never send).
"""

from twisted.internet import defer, reactor
from twisted.trial.unittest import SynchronousTestCase, TestCase

from sipdist.client.login import (
    Login, LoginFailed, Registration, grantedExpires)
from sipdist.sip.message import Response
from tests.client_helpers import (
    Redirect, Refuse, kinds, startAgent, startServers)


class RedirectRuleTests(TestCase):
    """
    A login follows signed redirects only, refuses loops and long chains.
    """

    timeout = 30

    @defer.inlineCallbacks
    def test_normalRedirect(self):
        """
        A signed 301 from the first server sends the REGISTER to the server
        it names, which becomes the outbound proxy: the refresh goes there.
        """
        s0, s1 = yield startServers(self, reactor, 2)
        s0.action = Redirect(s1)
        ua = yield startAgent(self, reactor)
        registration = Registration(ua, ua.locator, server=s0.uri)
        result = yield registration.start()
        self.addCleanup(registration.stop)
        self.assertEqual(result.target.port, s1.port)
        self.assertEqual(ua.outboundProxy.port, s1.port)
        self.assertEqual([t.port for t in result.redirects], [s0.port])
        self.assertIn("redirect", kinds(ua))
        self.assertEqual(kinds(ua)[-1], "registered")
        before = len(s0.registers)
        yield registration.refresh()
        self.assertEqual(len(s0.registers), before)
        self.assertEqual(s1.authenticated, 2)
        self.assertEqual(kinds(ua)[-1], "refreshed")
        # The REGISTER keeps the registrar domain as Request-URI.
        self.assertEqual(s1.registers[-1].uriText, "sip:example.com")

    @defer.inlineCallbacks
    def test_tamperedRedirectIgnored(self):
        """
        A 301 whose Contact was changed after signing is ignored: the client
        never contacts the server it names, and with no other server the
        login fails saying the signature does not verify.
        """
        s0, s1, evil = yield startServers(self, reactor, 3)
        s0.action = Redirect(s1, sent=evil)
        ua = yield startAgent(self, reactor)
        failure = yield self.assertFailure(
            Login(ua, ua.locator, server=s0.uri).run(), LoginFailed)
        self.assertIn("signature does not verify", str(failure))
        self.assertEqual(evil.requests, [])
        self.assertEqual(s1.requests, [])
        self.assertIn("redirect-ignored", kinds(ua))
        self.assertIsNone(ua.outboundProxy)

    @defer.inlineCallbacks
    def test_loop(self):
        """
        A redirect back to a server this login was redirected from is a
        loop: the login fails and the redirect is not followed.
        """
        s0, s1 = yield startServers(self, reactor, 2)
        s0.action = Redirect(s1)
        s1.action = Redirect(s0)
        ua = yield startAgent(self, reactor)
        failure = yield self.assertFailure(
            Login(ua, ua.locator, server=s0.uri).run(), LoginFailed)
        self.assertIn("redirect loop", str(failure))
        self.assertEqual(s0.authenticated, 1)
        self.assertEqual(s1.authenticated, 1)

    @defer.inlineCallbacks
    def test_selfRedirectIsLoop(self):
        """
        A server redirecting to itself is a loop too.
        """
        s0, = yield startServers(self, reactor, 1)
        s0.action = Redirect(s0)
        ua = yield startAgent(self, reactor)
        failure = yield self.assertFailure(
            Login(ua, ua.locator, server=s0.uri).run(), LoginFailed)
        self.assertIn("redirect loop", str(failure))
        self.assertEqual(s0.authenticated, 1)

    @defer.inlineCallbacks
    def test_sixRedirects(self):
        """
        Five redirects are followed; the sixth in one login makes it fail,
        and the seventh server is never contacted.
        """
        servers = yield startServers(self, reactor, 7)
        for here, there in zip(servers, servers[1:]):
            here.action = Redirect(there)
        ua = yield startAgent(self, reactor)
        failure = yield self.assertFailure(
            Login(ua, ua.locator, server=servers[0].uri).run(), LoginFailed)
        self.assertIn("more than 5 redirects", str(failure))
        self.assertEqual([s.authenticated for s in servers],
                         [1, 1, 1, 1, 1, 1, 0])
        self.assertEqual(servers[6].requests, [])

    @defer.inlineCallbacks
    def test_fiveRedirects(self):
        """
        A chain of five redirects ends registered at the sixth server.
        """
        servers = yield startServers(self, reactor, 6)
        for here, there in zip(servers, servers[1:]):
            here.action = Redirect(there)
        ua = yield startAgent(self, reactor)
        result = yield Login(ua, ua.locator, server=servers[0].uri).run()
        self.assertEqual(result.target.port, servers[5].port)
        self.assertEqual(len(result.redirects), 5)

    @defer.inlineCallbacks
    def test_redirectOnRefresh(self):
        """
        A redirect received while refreshing logs the client out: it does
        not follow that redirect but logs in again from the start (the
        configured server), which now sends it to the new home.
        """
        s0, s1, s2 = yield startServers(self, reactor, 3)
        s0.action = Redirect(s1)
        ua = yield startAgent(self, reactor)
        registration = Registration(ua, ua.locator, server=s0.uri)
        yield registration.start()
        self.addCleanup(registration.stop)
        # The user moves to s2: the old home redirects, and so does s0.
        s1.action = Redirect(s2)
        s0.action = Redirect(s2)
        events = len(ua.events)
        yield registration.refresh()
        after = kinds(ua)[events:]
        self.assertEqual(after[0], "relogin")
        self.assertEqual(after[1], "discovering")
        self.assertEqual(registration.state, "registered")
        self.assertEqual(registration.result.target.port, s2.port)
        self.assertEqual(ua.outboundProxy.port, s2.port)
        self.assertEqual(registration.logins, 2)
        self.assertEqual(s0.authenticated, 2)

    @defer.inlineCallbacks
    def test_wrongPassword(self):
        """
        A challenge answered with a wrong password gets a new challenge: the
        login fails with one line saying so.
        """
        s0, = yield startServers(self, reactor, 1)
        ua = yield startAgent(self, reactor, password="not-it")
        failure = yield self.assertFailure(
            Login(ua, ua.locator, server=s0.uri).run(), LoginFailed)
        self.assertIn("authentication failed", str(failure))
        self.assertNotIn("\n", str(failure))

    @defer.inlineCallbacks
    def test_refused(self):
        """
        Another final response fails the login with that response.
        """
        s0, = yield startServers(self, reactor, 1)
        s0.action = Refuse(404, "Not Found")
        ua = yield startAgent(self, reactor)
        failure = yield self.assertFailure(
            Login(ua, ua.locator, server=s0.uri).run(), LoginFailed)
        self.assertIn("404 Not Found", str(failure))


class LifecycleTests(TestCase):
    """
    The registration recovers when its home stops answering and unregisters
    when stopped.
    """

    timeout = 30

    @defer.inlineCallbacks
    def test_homeStopsAnswering(self):
        """
        When the refresh times out, the client logs in again from the start
        and ends registered at the home the first server now names.
        """
        s0, s1, s2 = yield startServers(self, reactor, 3)
        s0.action = Redirect(s1)
        ua = yield startAgent(self, reactor, T1=0.02)
        registration = Registration(ua, ua.locator, server=s0.uri)
        yield registration.start()
        self.addCleanup(registration.stop)
        yield s1.stop()
        s0.action = Redirect(s2)
        yield registration.refresh()
        self.assertIn("relogin", kinds(ua))
        self.assertEqual(registration.result.target.port, s2.port)

    @defer.inlineCallbacks
    def test_unregisterOnStop(self):
        """
        Stopping sends REGISTER with Expires 0 for our own binding to the
        home.
        """
        s0, = yield startServers(self, reactor, 1)
        ua = yield startAgent(self, reactor)
        registration = Registration(ua, ua.locator, server=s0.uri)
        yield registration.start()
        yield registration.stop()
        last = s0.registers[-1]
        self.assertEqual(last.header("expires"), "0")
        self.assertTrue(last.header("contact").endswith(";expires=0"))
        self.assertEqual(kinds(ua)[-1], "unregistered")
        self.assertEqual(registration.state, "stopped")


class GrantedExpiresTests(SynchronousTestCase):
    """
    L{grantedExpires}: the lifetime the registrar granted our binding.
    """

    OURS = ('<sip:alice@192.0.2.9:40000;transport=tcp>'
            ';+sip.instance="<urn:uuid:1>";reg-id=1')

    def response(self, contacts, expires=None):
        response = Response(200)
        response.headers["contact"] = list(contacts)
        if expires is not None:
            response.headers["expires"] = [expires]
        return response

    def test_ours(self):
        """
        The C{expires} of our own Contact, not of another binding listed
        before it.
        """
        response = self.response([
            "<sip:alice@192.0.2.8:5060>;expires=30",
            '<sip:alice@192.0.2.9:40000;transport=tcp>;expires=120;'
            '+sip.instance="<urn:uuid:1>";reg-id=1'])
        self.assertEqual(grantedExpires(response, self.OURS, 3600), 120)

    def test_oursRewritten(self):
        """
        Our Contact as the registrar wrote it back in another form (its
        parameters otherwise, the host's case) is still ours.
        """
        response = self.response([
            "<sip:alice@192.0.2.8:5060>;expires=30",
            "<sip:alice@192.0.2.9:40000>;expires=90"])
        self.assertEqual(grantedExpires(response, self.OURS, 3600), 90)

    def test_oursWithoutExpires(self):
        """
        Our Contact without a usable C{expires}: the C{Expires} header,
        else what we asked for; another binding's is never taken.
        """
        response = self.response([
            "<sip:alice@192.0.2.8:5060>;expires=30",
            "<sip:alice@192.0.2.9:40000;transport=tcp>;expires=soon"],
            expires="300")
        self.assertEqual(grantedExpires(response, self.OURS, 3600), 300)
        response = self.response(["<sip:alice@192.0.2.8:5060>;expires=30"])
        self.assertEqual(grantedExpires(response, self.OURS, 3600), 3600)

    def test_badContacts(self):
        """
        Contacts that do not parse, and a Contact of ours that does not
        parse, leave the C{Expires} header.
        """
        response = self.response(["<nonsense", "<sip:[::1>;expires=5"],
                                 expires="60")
        self.assertEqual(grantedExpires(response, self.OURS, 3600), 60)
        self.assertEqual(grantedExpires(response, "<", 3600), 60)
        self.assertEqual(grantedExpires(response, None, 3600), 60)
