"""
The client against the real roles on loopback: a distributor and two home
servers sharing a memory assignment store (the local deployment of the
README, on free ports).
"""

from twisted.internet import defer, reactor
from twisted.trial.unittest import TestCase

from sipdist.client.login import Registration
from sipdist.server import buildServer
from sipdist.store import ServerRecord
from sipdist.store.memory import MemoryAssignmentStore
from tests.client_helpers import kinds, startAgent

PASSWORD = "wonderland"
SECRET = "pool-nonce-secret-0123456789abcdef"


@defer.inlineCallbacks
def startDeployment(testCase):
    """
    Start C{distributor}, C{home1} and C{home2} on loopback UDP with one
    memory store; alice is assigned to home1.

    @return: C{(store, {name: "sip:127.0.0.1:PORT"})}
    """
    store = MemoryAssignmentStore()
    uris = {}
    for name, role in (("distributor", "distributor"), ("home1", "home"),
                       ("home2", "home")):
        config = {"role": role, "name": name, "domain": "example.com",
                  "listen": ["udp:0:interface=127.0.0.1"],
                  "credentials": f"memory:alice:{PASSWORD},bob:{PASSWORD}",
                  "secret": SECRET, "redirect-policy": "auto", "t1": 0.05}
        service = buildServer(config, reactor, store=store)
        service.startService()
        testCase.addCleanup(service.stopService)
        yield service.transportService.ready
        port = service.transportService.ports[0].getHost().port
        uris[name] = f"sip:127.0.0.1:{port}"
    yield store.addServer(ServerRecord("home1", uris["home1"]))
    yield store.addServer(ServerRecord("home2", uris["home2"]))
    yield store.assignUser("alice@example.com", "home1")
    yield store.assignUser("bob@example.com", "home2")
    return store, uris


class RolesTests(TestCase):
    """
    The redirect rules with the registrar, distributor and home roles.
    """

    timeout = 30

    @defer.inlineCallbacks
    def test_normalRedirect(self):
        """
        Through the distributor, the client is redirected (signed 301) to
        its assigned home and registers there; the home is its outbound
        proxy and the refresh goes there.
        """
        store, uris = yield startDeployment(self)
        ua = yield startAgent(self, reactor)
        registration = Registration(ua, ua.locator,
                                    server=uris["distributor"])
        result = yield registration.start()
        self.addCleanup(registration.stop)
        self.assertEqual(f"sip:127.0.0.1:{result.target.port}", uris["home1"])
        self.assertEqual([f"sip:127.0.0.1:{t.port}" for t in result.redirects],
                         [uris["distributor"]])
        # The pool shares its nonce secret: the home accepts the credentials
        # the client answered the distributor's challenge with.
        self.assertEqual(kinds(ua).count("challenge"), 1)
        yield registration.refresh()
        self.assertEqual(kinds(ua)[-1], "refreshed")
        self.assertEqual(f"sip:127.0.0.1:{ua.outboundProxy.port}",
                         uris["home1"])

    @defer.inlineCallbacks
    def test_redirectOnRefresh(self):
        """
        When the user is moved to home2, home1 answers the next refresh with
        a redirect: the client logs in again from the distributor and lands
        on home2.
        """
        store, uris = yield startDeployment(self)
        ua = yield startAgent(self, reactor)
        registration = Registration(ua, ua.locator,
                                    server=uris["distributor"])
        yield registration.start()
        self.addCleanup(registration.stop)
        yield store.moveUser("alice@example.com", "home2")
        mark = len(ua.events)
        yield registration.refresh()
        after = ua.events[mark:]
        self.assertEqual(after[0].kind, "relogin")
        self.assertIn("redirected by", after[0].text)
        self.assertEqual(after[1].kind, "discovering")
        self.assertEqual(registration.state, "registered")
        self.assertEqual(f"sip:127.0.0.1:{registration.result.target.port}",
                         uris["home2"])
        self.assertEqual(registration.logins, 2)

    @defer.inlineCallbacks
    def test_movedWhileWatching(self):
        """
        A client watching its own registration (reg event) learns that it
        was moved when its old home ends the watch (reason=deactivated): it
        refreshes at once, is redirected, and lands on its new home without
        waiting for its refresh timer.
        """
        store, uris = yield startDeployment(self)
        ua = yield startAgent(self, reactor)
        registration = Registration(ua, ua.locator, server=uris["distributor"],
                                    watchRegistration=True)
        yield registration.start()
        self.addCleanup(registration.stop)
        yield self.until(lambda: registration.watch is not None)
        # Registered for an hour: without the watch nothing would happen
        # for half an hour, and the wait below would fail.
        yield store.moveUser("alice@example.com", "home2")
        yield self.until(lambda: registration.logins == 2
                         and registration.state == "registered")
        self.assertEqual(f"sip:127.0.0.1:{registration.result.target.port}",
                         uris["home2"])
        kinds = [e.kind for e in ua.events]
        self.assertIn("deactivated", kinds)
        self.assertLess(kinds.index("deactivated"), kinds.index("relogin"))
        # And the client watches its registration at its new home.
        yield self.until(lambda: registration.watch is not None)

    @defer.inlineCallbacks
    def test_watchRenewedWithRegistration(self):
        """
        Each registration refresh renews the registration watch in its
        dialog (the home accepts it), so the watch outlives the first
        registration lifetime; a watch the home no longer knows is made
        again.
        """
        store, uris = yield startDeployment(self)
        ua = yield startAgent(self, reactor)
        registration = Registration(ua, ua.locator, server=uris["distributor"],
                                    watchRegistration=True)
        yield registration.start()
        self.addCleanup(registration.stop)
        yield self.until(lambda: registration.watch is not None)
        watch = registration.watch
        cseq = watch.dialog.cseq
        yield registration.refresh()
        self.assertEqual([e.kind for e in ua.events][-1], "watch-renewed")
        self.assertIs(registration.watch, watch)
        self.assertFalse(watch.dialog.ended)
        self.assertGreater(watch.dialog.cseq, cseq)
        # A dialog the home does not know (481) is replaced by a new
        # subscription.
        watch.dialog.remoteTag = "unknown"
        yield registration.refresh()
        self.assertIn("watch-failed", [e.kind for e in ua.events])
        self.assertTrue(watch.dialog.ended)
        yield self.until(lambda: registration.watch is not None
                         and registration.watch is not watch)

    def until(self, condition, interval=0.02, limit=500):
        """
        Wait (on the real reactor, at most C{limit} rounds) for a condition.
        """
        from twisted.internet import task

        @defer.inlineCallbacks
        def poll():
            for _ in range(limit):
                if condition():
                    return
                yield task.deferLater(reactor, interval, lambda: None)
            self.fail("condition not reached in time")
        return poll()

    @defer.inlineCallbacks
    def test_wrongHome(self):
        """
        A client that reaches a home that is not its own is redirected to
        its own.
        """
        store, uris = yield startDeployment(self)
        ua = yield startAgent(self, reactor)
        registration = Registration(ua, ua.locator, server=uris["home2"])
        result = yield registration.start()
        self.addCleanup(registration.stop)
        self.assertEqual(f"sip:127.0.0.1:{result.target.port}", uris["home1"])
