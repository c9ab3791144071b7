# -*- test-case-name: tests.test_subscriptions -*-
"""
Tests for L{sipdist.subscriptions}: the notifier of a home server.
"""

from twisted.internet import defer, reactor, task
from twisted.trial.unittest import TestCase

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
