"""
The user agent core: Digest answers, and the basic requests once logged in
(MESSAGE both ways, a call placed and answered with INVITE/ACK/BYE,
SUBSCRIBE and NOTIFY), between real user agents and scripted servers on
loopback.
"""

import uuid

from twisted.internet import defer, reactor
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface.verify import verifyObject

from sipdist.client.dialog import STATIC_SDP, CallFailed
from sipdist.client.discovery import Target
from sipdist.client.core import UserAgent
from sipdist.client.login import Login
from sipdist.interfaces import ITransactionUser
from sipdist.sip.message import Request, formatNameAddr, newBranch
from tests.client_helpers import ScriptedServer, startAgent, startServers


def directTo(ua, other):
    """
    Make C{ua} send its requests straight to C{other}'s UDP port (as if
    C{other} were its outbound proxy).
    """
    ua.outboundProxy = Target("UDP", "127.0.0.1", other.port.getHost().port)


class DigestTests(TestCase):
    """
    The core answers challenges with the strongest algorithm offered.
    """

    timeout = 30

    def test_interface(self):
        """
        The user agent is a transaction user.
        """
        from sipdist.client.core import UserAgent
        ua = UserAgent(reactor, "alice@example.com", "pw")
        self.assertTrue(verifyObject(ITransactionUser, ua))

    @defer.inlineCallbacks
    def test_sha256Preferred(self):
        """
        Offered SHA-256 and MD5, the client answers with SHA-256.
        """
        server, = yield startServers(self, reactor, 1)
        ua = yield startAgent(self, reactor)
        yield Login(ua, ua.locator, server=server.uri).run()
        challenge = [e for e in ua.events if e.kind == "challenge"][0]
        self.assertEqual(challenge.algorithm, "SHA-256")
        authorization = server.registers[-1].header("authorization")
        self.assertIn("algorithm=SHA-256", authorization)

    @defer.inlineCallbacks
    def test_md5(self):
        """
        A server offering only MD5 gets an MD5 answer.
        """
        server = ScriptedServer(reactor, "md5", algorithms=("MD5",))
        yield server.start()
        self.addCleanup(server.stop)
        ua = yield startAgent(self, reactor)
        yield Login(ua, ua.locator, server=server.uri).run()
        self.assertIn("algorithm=MD5",
                      server.registers[-1].header("authorization"))
        self.assertEqual(server.authenticated, 1)


class BasicRequestTests(TestCase):
    """
    MESSAGE, calls and subscriptions between user agents on loopback.
    """

    timeout = 30

    @defer.inlineCallbacks
    def setUp(self):
        self.alice = yield startAgent(self, reactor)
        self.bob = yield startAgent(self, reactor, aor="bob@example.com")
        directTo(self.alice, self.bob)
        directTo(self.bob, self.alice)

    @defer.inlineCallbacks
    def test_message(self):
        """
        A MESSAGE is answered 200 and handed to the receiver's onMessage.
        """
        received = []
        self.bob.onMessage = received.append
        response = yield self.alice.message("bob@example.com", "hello, bob")
        self.assertEqual(response.code, 200)
        self.assertEqual(received[0].body, b"hello, bob")
        self.assertIn("alice@example.com", received[0].header("from"))

    @defer.inlineCallbacks
    def test_call(self):
        """
        A call answered by the callee is established (2xx, ACK), and a BYE
        ends it on both sides.
        """
        incoming = []

        def answer(call):
            incoming.append(call)
            call.answer()

        self.bob.onInvite = answer
        call = self.alice.call("bob@example.com", STATIC_SDP)
        yield call.deferred
        self.assertEqual(call.response.code, 200)
        self.assertEqual(call.response.header("content-type"),
                         "application/sdp")
        yield incoming[0].deferred  # the ACK arrived
        self.assertEqual(incoming[0].request.body, STATIC_SDP.encode())
        response = yield call.hangup()
        self.assertEqual(response.code, 200)
        self.assertTrue(incoming[0].dialog.ended)
        self.assertTrue(call.dialog.ended)

    @defer.inlineCallbacks
    def test_callRefused(self):
        """
        A user agent without onInvite refuses calls with 480; the call
        fails with that code.
        """
        call = self.alice.call("bob@example.com")
        failure = yield self.assertFailure(call.deferred, CallFailed)
        self.assertEqual(failure.code, 480)

    @defer.inlineCallbacks
    def test_calleeHangsUp(self):
        """
        The callee's BYE ends the caller's dialog.
        """
        incoming = []
        self.bob.onInvite = lambda call: (incoming.append(call),
                                          call.answer())
        call = self.alice.call("bob@example.com")
        yield call.deferred
        yield incoming[0].deferred
        response = yield incoming[0].hangup()
        self.assertEqual(response.code, 200)
        self.assertTrue(call.dialog.ended)
        ended = [e for e in self.alice.events if e.kind == "dialog-ended"]
        self.assertEqual(ended[0].reason, "remote hangup")


class SubscribeTests(TestCase):
    """
    SUBSCRIBE, and NOTIFY within the subscription's dialog.
    """

    timeout = 30

    @defer.inlineCallbacks
    def test_subscribeAndNotify(self):
        """
        An accepted SUBSCRIBE makes a dialog; a NOTIFY in it is answered 200
        and reaches the subscription; C{terminated;reason=deactivated} ends
        that dialog and the client subscribes again.
        """
        server = ScriptedServer(reactor, "presence", accept=("SUBSCRIBE",))
        yield server.start()
        self.addCleanup(server.stop)
        ua = yield startAgent(self, reactor)
        yield Login(ua, ua.locator, server=server.uri).run()
        subscription = yield ua.subscribe("bob@example.com")
        self.assertEqual(server.requests[-1].method, "SUBSCRIBE")
        self.assertEqual(server.requests[-1].header("event"), "presence")
        dialog = subscription.dialog
        notify = Request("NOTIFY", ua.contactURI(
            (yield ua.transport.connect("UDP", "127.0.0.1", server.port))))
        notify.headers.update({
            "via": [f"SIP/2.0/UDP 127.0.0.1:{server.port};"
                    f"branch={newBranch()}"],
            "from": [formatNameAddr(dialog.remoteURI,
                                    {"tag": dialog.remoteTag})],
            "to": [formatNameAddr(dialog.localURI, {"tag": dialog.localTag})],
            "call-id": [dialog.callId],
            "cseq": ["1 NOTIFY"],
            "event": ["presence"],
            "subscription-state": ["terminated;reason=deactivated"],
            "max-forwards": ["70"],
        })
        flow = yield server.transport.connect(
            "UDP", "127.0.0.1", ua.port.getHost().port)
        response = yield server.transactions.sendRequest(notify,
                                                         flow).deferred
        self.assertEqual(response.code, 200)
        self.assertEqual(len(subscription.notifications), 1)
        self.assertTrue(dialog.ended)
        yield subscription.restarting
        subscribes = [r for r in server.requests if r.method == "SUBSCRIBE"]
        self.assertEqual(len(subscribes), 2)
        self.assertEqual(subscription.resubscribed, 1)
        self.assertIsNot(subscription.dialog, dialog)


class LoginGateTests(SynchronousTestCase):
    """
    Requests out of dialogs wait while a login runs.
    """

    def setUp(self):
        from twisted.internet.testing import MemoryReactorClock
        from sipdist.client.core import UserAgent
        self.ua = UserAgent(MemoryReactorClock(), "alice@example.com", "pw")

    def test_noLogin(self):
        """
        Without a login running, nothing waits.
        """
        self.assertIsNone(self.successResultOf(self.ua.whenLoggedIn()))

    def test_waitsForLogin(self):
        """
        While a login runs, requests wait; when it ends at a server they go
        on, with that server as outbound proxy.
        """
        self.ua.outboundProxy = "old"
        self.ua.loginStarted()
        self.assertIsNone(self.ua.outboundProxy)
        d = self.ua.whenLoggedIn()
        self.assertNoResult(d)
        self.ua.loginEnded("new home")
        self.assertEqual(self.successResultOf(d), "new home")
        self.assertEqual(self.ua.outboundProxy, "new home")

    def test_failedLogin(self):
        """
        A failed login lets the waiting requests go on (they fail on their
        own) rather than hang.
        """
        self.ua.loginStarted()
        d = self.ua.whenLoggedIn()
        self.ua.loginEnded(None)
        self.assertIsNone(self.successResultOf(d))

    def test_bounded(self):
        """
        Past the bound, requests do not wait: the table stays bounded.
        """
        self.ua.loginStarted()
        waiting = [self.ua.whenLoggedIn()
                   for _ in range(self.ua.MAX_LOGIN_WAITERS)]
        extra = self.ua.whenLoggedIn()
        self.assertIsNone(self.successResultOf(extra))
        for d in waiting:
            self.assertNoResult(d)
        self.ua.loginEnded("home")
        for d in waiting:
            self.assertEqual(self.successResultOf(d), "home")


class FakeFlow:
    """
    A TCP flow as far as L{UserAgent._prepare} needs one.
    """

    transport = "TCP"
    local = ("127.0.0.1", 40000)
    remote = ("127.0.0.1", 5062)


class InstanceTests(SynchronousTestCase):
    """
    The RFC 5626 instance id of the client and the Contact of its
    REGISTERs.
    """

    def test_derived(self):
        """
        By default the instance id is a version 5 UUID of the AOR and the
        host name: the same at every start, another for another account or
        device.
        """
        from sipdist.client.core import instanceFor
        a = instanceFor("sip:alice@example.com", "laptop")
        self.assertTrue(a.startswith("urn:uuid:"))
        self.assertEqual(uuid.UUID(a[9:]).version, 5)
        self.assertEqual(a, instanceFor("sip:alice@example.com", "laptop"))
        self.assertNotEqual(a, instanceFor("sip:bob@example.com", "laptop"))
        self.assertNotEqual(a, instanceFor("sip:alice@example.com", "phone"))
        ua = UserAgent(Clock(), "alice@example.com", "pw")
        self.assertEqual(ua.instance, instanceFor("sip:alice@example.com"))

    def test_given(self):
        """
        An instance id given as a UUID or URN is used; anything else is a
        ValueError.
        """
        value = "6f1a2b3c-4d5e-4f60-8a7b-9c0d1e2f3a4b"
        for given in (value, f"urn:uuid:{value}", f'"<urn:uuid:{value}>"'):
            ua = UserAgent(Clock(), "alice@example.com", "pw",
                           instance=given)
            self.assertEqual(ua.instance, f"urn:uuid:{value}")
        self.assertRaises(ValueError, UserAgent, Clock(),
                          "alice@example.com", "pw", instance="nope")

    def test_registerContact(self):
        """
        A REGISTER's Contact carries +sip.instance and reg-id=1; other
        requests' Contacts do not.
        """
        ua = UserAgent(Clock(), "alice@example.com", "pw")
        flow = FakeFlow()
        register = ua._prepare(ua.newRequest("REGISTER", "sip:example.com"),
                               flow, True)
        contact = register.header("contact")
        self.assertIn(f';+sip.instance="<{ua.instance}>";reg-id=1', contact)
        invite = ua._prepare(ua.newRequest("INVITE", "sip:bob@example.com"),
                             flow, True)
        self.assertNotIn("instance", invite.header("contact"))
