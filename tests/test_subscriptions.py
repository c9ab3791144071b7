# -*- test-case-name: tests.test_subscriptions -*-
"""
Tests for L{sipdist.services.subscriptions}: the notifier of a home server.
"""

from twisted.internet import defer, reactor, task
from twisted.trial.unittest import SynchronousTestCase, TestCase

from sipdist.client.login import Registration
from tests.client_helpers import startAgent
from tests.distribution_helpers import PASSWORD, startPool


def waitFor(condition, timeout=10.0, step=0.02):
    """
    Poll C{condition} on the reactor until it is true (bounded).
    """
    deadline = reactor.seconds() + timeout

    @defer.inlineCallbacks
    def loop():
        while not condition():
            if reactor.seconds() > deadline:
                raise AssertionError("condition not met in time")
            yield task.deferLater(reactor, step, lambda: None)
    return loop()


class NotifierFlowTests(TestCase):
    """
    Subscriptions through the real roles and router on loopback.
    """

    timeout = 30

    @defer.inlineCallbacks
    def setUpPool(self):
        pool = yield startPool(self, users=("alice", "bob"))
        yield pool.store.assignUser("alice@example.com", "home1")
        yield pool.store.assignUser("bob@example.com", "home2")
        agents = {}
        for user in ("alice", "bob"):
            ua = yield startAgent(self, reactor, f"{user}@example.com",
                                  PASSWORD)
            registration = Registration(ua, ua.locator,
                                        server=pool.uris["distributor"],
                                        expires=60)
            yield registration.start()
            self.addCleanup(registration.stop)
            ua.registration = registration
            agents[user] = ua
        return pool, agents

    @defer.inlineCallbacks
    def test_presenceAcrossHomes(self):
        """
        alice (on home1) subscribes to bob's presence (on home2): home1
        routes the SUBSCRIBE to home2, whose notifier accepts it and sends
        an open PIDF document (bob is registered).
        """
        pool, agents = yield self.setUpPool()
        subscription = yield agents["alice"].subscribe("bob@example.com",
                                                       "presence", 60)
        notifier = pool.services["home2"].notifier
        yield waitFor(lambda: subscription.notifications)
        self.assertEqual(notifier.count, 1)
        [held] = notifier.subscriptions(target="sip:bob@example.com")
        self.assertEqual(held.subscriber, "sip:alice@example.com")
        body = subscription.notifications[-1].body
        self.assertIn(b"<basic>open</basic>", body)
        self.assertEqual(pool.services["home1"].notifier.count, 0)

    @defer.inlineCallbacks
    def test_regEvent(self):
        """
        bob subscribes to his own registration state (reg event): the
        reginfo document lists his contact, active.
        """
        pool, agents = yield self.setUpPool()
        subscription = yield agents["bob"].subscribe("bob@example.com",
                                                     "reg", 60)
        yield waitFor(lambda: subscription.notifications)
        notify = subscription.notifications[-1]
        self.assertEqual(notify.header("content-type"),
                         "application/reginfo+xml")
        self.assertIn(b'state="active" event="registered"', notify.body)

    @defer.inlineCallbacks
    def test_movedTargetDeactivated(self):
        """
        When bob is moved to home1, home2 ends alice's subscription with
        reason=deactivated; her client subscribes again and the new
        subscription is held by home1, bob's new home.
        """
        pool, agents = yield self.setUpPool()
        subscription = yield agents["alice"].subscribe("bob@example.com",
                                                       "presence", 60)
        yield pool.store.moveUser("bob@example.com", "home1")
        yield waitFor(lambda: subscription.restarting is not None)
        yield subscription.restarting
        self.assertEqual(pool.services["home2"].notifier.count, 0)
        self.assertEqual(pool.services["home1"].notifier.count, 1)
        states = [n.header("subscription-state")
                  for n in subscription.notifications]
        self.assertIn("terminated;reason=deactivated", states)


class FakeFlow:
    def __init__(self, transport="UDP", remote=("127.0.0.1", 6000)):
        self.transport = transport
        self.remote = remote
        self.reliable = transport != "UDP"
        self.connected = True


class FakeTransaction:
    """
    A server transaction that records its responses.
    """

    def __init__(self, flow=None):
        self.flow = flow or FakeFlow()
        self.responses = []

    def respond(self, response, stateless=False):
        self.responses.append(response)


class SentRequest:
    def __init__(self, request, flow):
        self.request = request
        self.flow = flow
        self.deferred = defer.Deferred()


class FakeTransactions:
    """
    Records the requests sent; the test answers them through their
    C{deferred}.
    """

    def __init__(self):
        self.sent = []

    def sendRequest(self, request, flow):
        sent = SentRequest(request, flow)
        self.sent.append(sent)
        return sent


class FakeTransport:
    def __init__(self):
        self.connects = []

    def connect(self, transport, host, port, tlsHostname=None):
        self.connects.append((transport, host, port))
        return defer.succeed(FakeFlow(transport, (host, port)))

    def localAddress(self, transport):
        return ("127.0.0.1", 5070) if transport == "UDP" else None


def subscribeRequest(event="presence", expires=60, toTag=None, cseq=1,
                     callId="sub1", fromUser="alice", target="bob",
                     extra=""):
    from sipdist.sip.message import parseMessage
    to = f"<sip:{target}@example.com>" + (f";tag={toTag}" if toTag else "")
    text = (
        f"SUBSCRIBE sip:{target}@example.com SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 127.0.0.1:6000;branch=z9hG4bK" + f"{callId}{cseq}\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:{fromUser}@example.com>;tag=ftag\r\n"
        f"To: {to}\r\n"
        f"Call-ID: {callId}\r\n"
        f"CSeq: {cseq} SUBSCRIBE\r\n"
        f"Contact: <sip:{fromUser}@127.0.0.1:6000>\r\n"
        f"Event: {event}\r\n"
        f"Expires: {expires}\r\n"
        f"{extra}"
        "Content-Length: 0\r\n\r\n")
    return parseMessage(text.encode("ascii"))


class NotifierTests(SynchronousTestCase):
    """
    L{Notifier} on a clock with fake transactions and transport.
    """

    def setUp(self):
        from sipdist.services.registrar import Registrar
        from sipdist.server import SIPServer
        from sipdist.services.subscriptions import Notifier
        self.clock = task.Clock()
        self.registrar = Registrar(self.clock, minExpires=1)
        self.transactions = FakeTransactions()
        self.transport = FakeTransport()
        self.notifier = Notifier(
            self.clock, SIPServer(self.clock, "home1", "example.com"),
            self.transactions, self.transport, self.registrar, "home1",
            minExpires=10, maxExpires=3600, maxPerSubscriber=2)
        self.registrar.observe(self.notifier.registrationChanged)
        self.addCleanup(self.notifier.stop)
        self.addCleanup(self.registrar.stop)

    def subscribe(self, **kw):
        transaction = FakeTransaction()
        self.notifier.subscribe(subscribeRequest(**kw), transaction,
                                f"sip:{kw.get('target', 'bob')}@example.com")
        [response] = transaction.responses
        return response

    def notifies(self):
        return [s.request for s in self.transactions.sent]

    def test_subscribe(self):
        """
        A SUBSCRIBE is answered 200 with a To tag, a Contact and the granted
        Expires, and a NOTIFY with the state follows at once, to the
        subscriber's Contact, in the dialog.
        """
        response = self.subscribe()
        self.assertEqual(response.code, 200)
        self.assertIn(";tag=", response.header("to"))
        self.assertEqual(response.header("expires"), "60")
        self.assertIn("sip:home1@127.0.0.1:5070", response.header("contact"))
        [notify] = self.notifies()
        self.assertEqual(notify.method, "NOTIFY")
        self.assertEqual(notify.header("subscription-state"),
                         "active;expires=60")
        self.assertEqual(notify.header("event"), "presence")
        self.assertIn(b"<basic>closed</basic>", notify.body)
        self.assertEqual(self.transport.connects, [("UDP", "127.0.0.1", 6000)])
        self.assertIn("ftag", notify.header("to"))

    def test_routeSet(self):
        """
        The Record-Route values of the SUBSCRIBE are copied into the 200
        and become the NOTIFY's Route, which is where it is sent.
        """
        response = self.subscribe(
            extra="Record-Route: <sip:127.0.0.1:5090;lr;sd=home2>\r\n")
        self.assertEqual(response.values("record-route"),
                         ["<sip:127.0.0.1:5090;lr;sd=home2>"])
        [notify] = self.notifies()
        self.assertEqual(notify.values("route"),
                         ["<sip:127.0.0.1:5090;lr;sd=home2>"])
        self.assertEqual(self.transport.connects, [("UDP", "127.0.0.1", 5090)])

    def test_registrationChanges(self):
        """
        When the watched user registers, its watchers get a NOTIFY saying
        it is open.
        """
        from sipdist.sip.message import parseMessage
        self.subscribe()
        register = parseMessage(
            b"REGISTER sip:example.com SIP/2.0\r\n"
            b"Via: SIP/2.0/UDP 127.0.0.1:7000;branch=z9hG4bKr1\r\n"
            b"From: <sip:bob@example.com>;tag=b\r\nTo: <sip:bob@example.com>\r\n"
            b"Call-ID: r1\r\nCSeq: 1 REGISTER\r\n"
            b"Contact: <sip:bob@127.0.0.1:7000>\r\nExpires: 60\r\n"
            b"Content-Length: 0\r\n\r\n")
        self.registrar.register("sip:bob@example.com", register)
        self.assertIn(b"<basic>open</basic>", self.notifies()[-1].body)

    def test_expiry(self):
        """
        A subscription not refreshed ends at its expiry on the clock, with
        a NOTIFY terminated;reason=timeout.
        """
        self.subscribe(expires=30)
        self.clock.advance(29)
        self.assertEqual(self.notifier.count, 1)
        self.clock.advance(2)
        self.assertEqual(self.notifier.count, 0)
        self.assertEqual(self.notifies()[-1].header("subscription-state"),
                         "terminated;reason=timeout")
        self.assertEqual(self.notifier.expired, 1)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_refresh(self):
        """
        A SUBSCRIBE in the dialog pushes the expiry on: the subscription
        outlives its first expiry.
        """
        response = self.subscribe(expires=30)
        toTag = response.header("to").split("tag=")[1]
        self.clock.advance(20)
        transaction = FakeTransaction()
        self.assertTrue(self.notifier.inDialog(
            subscribeRequest(expires=30, toTag=toTag, cseq=2), transaction))
        self.assertEqual(transaction.responses[0].code, 200)
        self.clock.advance(20)
        self.assertEqual(self.notifier.count, 1)
        self.clock.advance(11)
        self.assertEqual(self.notifier.count, 0)

    def test_unsubscribe(self):
        """
        Expires: 0 in the dialog ends the subscription with a last NOTIFY.
        """
        response = self.subscribe()
        toTag = response.header("to").split("tag=")[1]
        transaction = FakeTransaction()
        self.notifier.inDialog(
            subscribeRequest(expires=0, toTag=toTag, cseq=2), transaction)
        self.assertEqual(self.notifier.count, 0)
        self.assertTrue(self.notifies()[-1].header(
            "subscription-state").startswith("terminated"))

    def test_notOurDialog(self):
        """
        A SUBSCRIBE naming a dialog we do not have is left to the chain.
        """
        self.assertFalse(self.notifier.inDialog(
            subscribeRequest(toTag="nope", cseq=2), FakeTransaction()))

    def test_badEvent(self):
        """
        An unknown event package is a 489 with Allow-Events.
        """
        response = self.subscribe(event="dialog")
        self.assertEqual(response.code, 489)
        self.assertEqual(response.header("allow-events"), "presence, reg")

    def test_tooBrief(self):
        """
        An expiry below the minimum is a 423 with Min-Expires.
        """
        response = self.subscribe(expires=5)
        self.assertEqual(response.code, 423)
        self.assertEqual(response.header("min-expires"), "10")

    def test_perSubscriberLimit(self):
        """
        A subscriber past its limit gets 503.
        """
        self.subscribe(callId="a")
        self.subscribe(callId="b")
        self.assertEqual(self.subscribe(callId="c").code, 503)

    def test_notifyRefused(self):
        """
        A NOTIFY answered 481 ends the subscription.
        """
        from sipdist.sip.message import responseTo
        self.subscribe()
        sent = self.transactions.sent[0]
        sent.deferred.callback(responseTo(sent.request, 481))
        self.assertEqual(self.notifier.count, 0)

    def test_moved(self):
        """
        When the store moves the watched user away, the subscription ends
        with reason=deactivated; a move elsewhere changes nothing.
        """
        from sipdist.store import UserChanged
        self.subscribe(event="reg")
        self.notifier.storeChanged(
            UserChanged("sip:carol@example.com", "home1", "home2"))
        self.assertEqual(self.notifier.count, 1)
        self.notifier.storeChanged(
            UserChanged("sip:bob@example.com", "home1", "home2"))
        self.assertEqual(self.notifier.count, 0)
        notify = self.notifies()[-1]
        self.assertEqual(notify.header("subscription-state"),
                         "terminated;reason=deactivated")
        self.assertIn(b'state="terminated"', notify.body)

    def test_subscriberMoved(self):
        """
        The moved user's own subscriptions held here end too.
        """
        from sipdist.store import UserChanged
        self.subscribe(fromUser="alice", target="bob")
        self.notifier.storeChanged(
            UserChanged("sip:alice@example.com", "home1", "home2"))
        self.assertEqual(self.notifier.count, 0)

    def test_newcomerRehomed(self):
        """
        When a subscriber registers here for the first time, the
        subscriptions it holds here through another server (a route set)
        end with reason=deactivated, after the REGISTER's turn; those made
        directly stay.
        """
        from sipdist.sip.message import parseMessage
        self.subscribe(callId="routed", fromUser="alice", target="bob",
                       extra="Record-Route: <sip:127.0.0.1:5090;lr>\r\n")
        self.subscribe(callId="direct", fromUser="alice", target="carol")
        register = parseMessage(
            b"REGISTER sip:example.com SIP/2.0\r\n"
            b"Via: SIP/2.0/UDP 127.0.0.1:6000;branch=z9hG4bKr2\r\n"
            b"From: <sip:alice@example.com>;tag=a\r\n"
            b"To: <sip:alice@example.com>\r\nCall-ID: r2\r\n"
            b"CSeq: 1 REGISTER\r\nContact: <sip:alice@127.0.0.1:6000>\r\n"
            b"Expires: 60\r\nContent-Length: 0\r\n\r\n")
        self.registrar.register("sip:alice@example.com", register)
        self.assertEqual(self.notifier.count, 2)
        self.clock.advance(0)
        [left] = self.notifier.subscriptions()
        self.assertEqual(left.target, "sip:carol@example.com")
        self.assertEqual(self.notifies()[-1].header("subscription-state"),
                         "terminated;reason=deactivated")

    def test_publish(self):
        """
        A PUBLISH of presence becomes the document watchers get.
        """
        from sipdist.sip.message import parseMessage
        self.subscribe()
        body = b"<presence>published</presence>"
        publish = parseMessage(
            b"PUBLISH sip:bob@example.com SIP/2.0\r\n"
            b"Via: SIP/2.0/UDP 127.0.0.1:7000;branch=z9hG4bKp1\r\n"
            b"From: <sip:bob@example.com>;tag=b\r\nTo: <sip:bob@example.com>\r\n"
            b"Call-ID: p1\r\nCSeq: 1 PUBLISH\r\nEvent: presence\r\n"
            b"Expires: 60\r\nContent-Type: application/pidf+xml\r\n"
            b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        transaction = FakeTransaction()
        self.notifier.subscribe(publish, transaction, "sip:bob@example.com")
        self.assertEqual(transaction.responses[0].code, 200)
        self.assertTrue(transaction.responses[0].header("sip-etag"))
        self.assertEqual(self.notifies()[-1].body, body)
