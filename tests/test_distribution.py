# -*- test-case-name: tests.test_distribution -*-
"""
Changing the distribution end to end, on real sockets on loopback: a
distributor and home servers sharing one store, clients of the client
library (one user agent and UDP port each).

  - drain: 200 clients on two homes, home1 drained with C{sipdist drain};
    every client ends registered on home2 with all its subscriptions made
    again there;
  - crash: home1's service stops; the monitor marks it down and moves its
    users; the clients' refreshes get no answer, they log in again and land
    on home2;
  - new server: a third home is added; C{sipdist rebalance} moves a third
    of the users, all to it.
"""

from collections import Counter
from io import StringIO

from twisted.internet import defer, reactor
from twisted.trial.unittest import TestCase

from sipdist.commands import distribution as distribution_cli
from tests.distribution_helpers import (
    SETTLE_TIMEOUT, TEST_TIMEOUT, homeOf, inBatches, startClients, startPool, waitFor)


def runCommand(store, name, *args):
    """
    Run a distribution command in this process against C{store}.

    @return: L{Deferred} firing with its output.
    """
    options = dict((n, c) for n, c, _ in distribution_cli.commands)[name]()
    options.storeFactory = lambda reactor, description: store
    options.closeStore = False
    options.out = StringIO()
    options.parseOptions(list(args))
    d = options.run(reactor)
    d.addCallback(lambda _: options.out.getvalue())
    return d


def kinds(ua):
    return [e.kind for e in ua.events]


class DrainTests(TestCase):
    """
    Draining a home server for maintenance.
    """

    timeout = TEST_TIMEOUT

    @defer.inlineCallbacks
    def test_drain(self):
        """
        200 clients, 100 assigned to each home, each subscribed to its own
        registration state (reg) and to the presence of the next user.
        C{sipdist drain home1 --rate 50} moves home1's users in two
        batches; home1 ends their subscriptions with reason=deactivated
        and the clients subscribe again (through home1, which keeps serving
        them until their next REGISTER).  Each client's next refresh is
        redirected by home1 and it logs in again at home2, which has it make
        the subscriptions it holds through home1 again, through home2.  In
        the end every client is registered at home2, home1 has no
        registration and no subscription left, and home2 holds all 400
        subscriptions, none through home1, none lost.
        """
        count = 200
        names = [f"u{i:03d}" for i in range(count)]
        pool = yield startPool(self, users=names)
        store = pool.store
        yield store.assignUsers(
            [(f"{name}@example.com", "home1" if i % 2 else "home2")
             for i, name in enumerate(names)])
        agents = yield startClients(self, pool, names)
        home1, home2 = pool.services["home1"], pool.services["home2"]
        self.assertEqual(home1.registrar.count, 100)
        self.assertEqual(home2.registrar.count, 100)

        subscriptions = {}

        def subscribeAll(ua, i):
            buddy = names[(i + 1) % count]
            d = defer.gatherResults([
                ua.subscribe(f"{ua.aor.username}@example.com", "reg", 600),
                ua.subscribe(f"{buddy}@example.com", "presence", 600)],
                consumeErrors=True)
            d.addCallback(lambda subs: subscriptions.__setitem__(
                ua.aor.username, subs))
            return d

        yield inBatches([lambda ua=agents[n], i=i: subscribeAll(ua, i)
                         for i, n in enumerate(names)])
        total = lambda: home1.notifier.count + home2.notifier.count
        yield waitFor(lambda: total() == 2 * count)

        output = yield runCommand(store, "drain", "--rate", "50", "--quiet",
                                  "home1")
        self.assertIn("100 user(s) to move", output)
        self.assertIn("moved 100 user(s)", output)
        self.assertEqual(self.successResultOf(store.countUsers()),
                         {"home1": 0, "home2": 200})

        def settled():
            """every subscription made again at home2"""
            return (home1.notifier.count == 0
                    and home2.notifier.count == 2 * count)
        yield waitFor(settled, timeout=SETTLE_TIMEOUT)

        # The clients' refreshes: home1 redirects, they log in at home2.
        yield inBatches([ua.registration.refresh for ua in agents.values()])

        def rehomed():
            """all registered at home2, subscriptions held directly, and
            each client in the dialog home2 holds"""
            held = {s.key[0] for s in home2.notifier.subscriptions()}
            return (home2.registrar.count == count
                    and home2.notifier.count == 2 * count
                    and not any(s.routeSet
                                for s in home2.notifier.subscriptions())
                    and all(not sub.dialog.ended and sub.dialog.callId in held
                            for subs in subscriptions.values()
                            for sub in subs))
        yield waitFor(rehomed, timeout=30)

        self.assertEqual(home1.registrar.count, 0)
        self.assertEqual(home1.notifier.count, 0)
        self.assertEqual(Counter(homeOf(pool, ua) for ua in agents.values()),
                         {"home2": count})
        relogins = sum(kinds(ua).count("relogin") for ua in agents.values())
        self.assertEqual(relogins, 100)
        for ua in agents.values():
            self.assertNotIn("subscription-ended", kinds(ua))
            self.assertEqual(ua.registration.state, "registered")
        held = Counter((s.subscriber, s.event)
                       for s in home2.notifier.subscriptions())
        self.assertEqual(set(held.values()), {1})
        self.assertEqual(len(held), 2 * count)
        # Each client subscription is in a live dialog with home2, and the
        # last word it got is an active NOTIFY.
        home2Port = int(pool.uris["home2"].rsplit(":", 1)[1])
        for user, subs in subscriptions.items():
            for sub in subs:
                self.assertFalse(sub.dialog.ended, user)
                self.assertEqual(sub.dialog.remoteTarget.port, home2Port)
                state = sub.notifications[-1].header("subscription-state")
                self.assertTrue(state.startswith("active"), (user, state))


class CrashTests(TestCase):
    """
    A home server stops answering.
    """

    timeout = TEST_TIMEOUT

    @defer.inlineCallbacks
    def test_crash(self):
        """
        With the monitor checking every 0.1 s (3 failures over at least
        0.2 s, 0.1 s timeout),
        stopping home1 gets it marked down and its users moved to home2;
        their clients' refreshes (every second) get no answer, they log in
        again through the distributor and land on home2.
        """
        count = 40
        names = [f"c{i:02d}" for i in range(count)]
        pool = yield startPool(self, homes=(), users=names,
                               distributor=False)
        yield pool.start("distributor", "distributor", monitor=True,
                         **{"monitor-interval": 0.1, "monitor-threshold": 3,
                            "monitor-down-after": 0.2,
                            "monitor-timeout": 0.1})
        yield pool.start("home1")
        yield pool.start("home2")
        store = pool.store
        yield store.assignUsers(
            [(f"{name}@example.com", "home1" if i % 2 else "home2")
             for i, name in enumerate(names)])
        agents = yield startClients(self, pool, names, expires=2)
        monitor = pool.services["distributor"].monitor
        self.assertEqual(pool.services["home1"].registrar.count, 20)

        yield pool.stop("home1")

        def down():
            """home1 marked down, its users moved"""
            counts = store._tables.counts
            return (store._tables.servers["home1"].state == "down"
                    and counts["home1"] == 0)
        yield waitFor(down, timeout=10)
        self.assertEqual(monitor.moved, 20)

        home2 = pool.services["home2"]

        def landed():
            """every client registered at home2"""
            return (home2.registrar.count == count and all(
                homeOf(pool, ua) == "home2" and
                ua.registration.state == "registered"
                for ua in agents.values()))
        yield waitFor(landed, timeout=20)
        moved = [ua for ua in agents.values() if "relogin" in kinds(ua)]
        self.assertEqual(len(moved), 20)


class NewServerTests(TestCase):
    """
    A third home server joins the pool.
    """

    timeout = TEST_TIMEOUT

    @defer.inlineCallbacks
    def test_newServer(self):
        """
        60 clients on two homes; home3 is started and added to the store;
        C{sipdist rebalance} moves 20 users (a third), all to home3, and
        their next refresh brings them there.
        """
        count = 60
        names = [f"n{i:02d}" for i in range(count)]
        pool = yield startPool(self, users=names)
        store = pool.store
        yield store.assignUsers(
            [(f"{name}@example.com", "home1" if i % 2 else "home2")
             for i, name in enumerate(names)])
        agents = yield startClients(self, pool, names)
        yield pool.start("home3")
        changes = []
        store.watch(changes.append)
        output = yield runCommand(store, "rebalance", "--quiet")
        self.assertIn("20 user(s) to move", output)
        moved = [e for e in changes if hasattr(e, "aor")]
        self.assertEqual(len(moved), 20)
        self.assertEqual({e.new for e in moved}, {"home3"})
        self.assertEqual(self.successResultOf(store.countUsers()),
                         {"home1": 20, "home2": 20, "home3": 20})
        yield inBatches([ua.registration.refresh for ua in agents.values()])
        homes = Counter(homeOf(pool, ua) for ua in agents.values())
        self.assertEqual(homes, {"home1": 20, "home2": 20, "home3": 20})
        for event in moved:
            ua = agents[event.aor.split(":")[1].split("@")[0]]
            self.assertEqual(homeOf(pool, ua), "home3")
        self.assertEqual(pool.services["home3"].registrar.count, 20)
