"""
Rehoming on real sockets (loopback, in-process servers): a client
registered over TCP whose home stops goes straight to the backup home its
signed responses named, as soon as the connection is lost, without waiting
for its refresh.
"""

import os
import signal

from twisted.internet import defer
from twisted.trial.unittest import TestCase

from sipdist.client.core import UserAgent
from sipdist.client.discovery import ServerLocator
from sipdist.client.login import Registration
from sipdist.store import ServerRecord

from tests.distribution_helpers import (
    DOMAIN, PASSWORD, _reactor, startPool, waitFor)
from tests.interop import freePort

LOOPBACK_TCP = "tcp:0:interface=127.0.0.1"


class RehomingTests(TestCase):
    """
    A distributor and two homes over TCP sharing a memory store; alice is
    assigned to home1, whose backup in her rendezvous order is home2 (the
    only other home).
    """

    timeout = 30

    @defer.inlineCallbacks
    def setUp(self):
        self.pool = pool = yield startPool(
            self, homes=(), users=["alice"], listen=[LOOPBACK_TCP])
        for name in ("home1", "home2"):
            yield pool.start(name, register=False)
            yield pool.store.addServer(ServerRecord(
                name, pool.uris[name] + ";transport=tcp"))
        yield pool.store.assignUser(f"sip:alice@{DOMAIN}", "home1")
        reactor = _reactor()
        self.events = events = []
        self.ua = ua = UserAgent(reactor, f"alice@{DOMAIN}", PASSWORD,
                                 listen="udp:0:interface=127.0.0.1", T1=0.05,
                                 observer=events.append)
        yield ua.start()
        self.addCleanup(ua.stop)
        self.registration = Registration(
            ua, ServerLocator(None),
            server=pool.uris["distributor"] + ";transport=tcp",
            expires=3600, reloginJitter=0.2, retryDelays=(0.2, 0.5))
        self.addCleanup(self.registration.stop)
        result = yield self.registration.start()
        self.assertEqual(result.target.port, self.port("home1"))
        self.assertEqual(result.target.transport, "TCP")
        # The REGISTER listed outbound: home1 gave its Flow-Timer.
        self.assertEqual(result.flowTimer, 60)

    def port(self, name):
        return int(self.pool.uris[name].rsplit(":", 1)[1])

    def registeredAt(self, name):
        result = self.registration.result
        return (self.registration.state == "registered"
                and result.target.port == self.port(name))

    def triedAfterLoss(self):
        """
        The servers the client sent a REGISTER to after it lost its home.
        """
        kinds = [e.kind for e in self.events]
        lost = kinds.index("flow-failed")
        return [e.target.port for e in self.events[lost:]
                if e.kind == "trying"]

    @defer.inlineCallbacks
    def test_backupServesMovedUser(self):
        """
        The 200 of home1 names home2 as the backup (signed, verified by
        the client).  When home1 stops and the store moves alice to home2
        (as the monitor does), the client, told by the lost connection,
        registers at home2 directly, long before its refresh (an hour).
        """
        backup = self.registration.result.backup
        self.assertEqual(backup.port, self.port("home2"))
        yield self.pool.store.moveUser(f"sip:alice@{DOMAIN}", "home2")
        yield self.pool.stop("home1")
        yield waitFor(lambda: self.registeredAt("home2"), timeout=5)
        self.assertEqual(self.triedAfterLoss(), [self.port("home2")])
        self.assertEqual(self.registration.logins, 2)

    @defer.inlineCallbacks
    def test_backupServesAtOnce(self):
        """
        When the client reaches the backup before the store moves it (the
        monitor has not marked home1 down), the backup finds home1
        unreachable too and serves alice at once, for at most two minutes,
        the store unchanged: one login, no retry.
        """
        yield self.pool.stop("home1")
        yield waitFor(lambda: self.registeredAt("home2"), timeout=5)
        self.assertEqual(self.triedAfterLoss(), [self.port("home2")])
        self.assertNotIn("retry", [e.kind for e in self.events])
        self.assertLessEqual(self.registration.result.expires, 120)
        assigned = yield self.pool.store.lookupUser(f"sip:alice@{DOMAIN}")
        self.assertEqual(assigned, "home1")

    @defer.inlineCallbacks
    def test_liveHomeRedirectsBack(self):
        """
        A client that loses its connection while its home is alive goes to
        the backup, which probes home1, finds it answering and redirects
        the client back to it.
        """
        flow = self.registration.result.flow
        flow.close()
        yield waitFor(lambda: self.registration.logins == 2, timeout=5)
        self.assertTrue(self.registeredAt("home1"))
        self.assertEqual(self.triedAfterLoss(),
                         [self.port("home2"), self.port("home1")])


class UDPRehomingTests(TestCase):
    """
    Over UDP: the homes give a Flow-Timer of 1 s, the client sends STUN
    keep-alives; when home1 stops answering them the client goes to its
    backup.
    """

    timeout = 30

    @defer.inlineCallbacks
    def test_stunFailureGoesToBackup(self):
        """
        Registered over UDP at home1 (the backup home2), the client keeps
        its flow alive with STUN; home1 stops, the store moves alice to
        home2, and the unanswered keep-alive takes the client to home2
        within seconds (its refresh is an hour away).
        """
        pool = yield startPool(self, users=["alice"],
                               **{"flow-timer-udp": 1})
        yield pool.store.assignUser(f"sip:alice@{DOMAIN}", "home1")
        events = []
        ua = UserAgent(_reactor(), f"alice@{DOMAIN}", PASSWORD,
                       listen="udp:0:interface=127.0.0.1", T1=0.05,
                       observer=events.append)
        yield ua.start()
        self.addCleanup(ua.stop)
        registration = Registration(
            ua, ServerLocator(None), server=pool.uris["distributor"],
            expires=3600, reloginJitter=0.2, pongTimeout=0.5)
        self.addCleanup(registration.stop)
        result = yield registration.start()
        home2 = int(pool.uris["home2"].rsplit(":", 1)[1])
        self.assertEqual(result.flowTimer, 1)
        self.assertEqual(result.backup.port, home2)
        # A keep-alive answered by home1 keeps the registration.
        yield waitFor(lambda: registration._pingSent is not None)
        yield waitFor(lambda: registration._pingSent is None)
        self.assertNotIn("flow-failed", [e.kind for e in events])
        yield pool.store.moveUser(f"sip:alice@{DOMAIN}", "home2")
        yield pool.stop("home1")
        yield waitFor(lambda: registration.state == "registered"
                      and registration.result.target.port == home2,
                      timeout=8)
        kinds = [e.kind for e in events]
        self.assertIn("flow-failed", kinds)
        lost = kinds.index("flow-failed")
        tried = [e.target.port for e in events[lost:] if e.kind == "trying"]
        self.assertEqual(tried, [home2])


class KilledHomeProcessTests(TestCase):
    """
    Two real C{twistd sipdist} homes over TCP sharing a file store, and the
    client library in this process: alice, assigned to home1, logs in
    there; home1 is killed with C{SIGKILL} (no goodbye: the kernel closes
    its sockets); the client notices from its connection and is registered
    at home2, the backup home1's signed C{200} named, within a few seconds,
    its hour-long refresh far off.
    """

    timeout = 60

    def startHome(self, name, port, base):
        from tests.test_startup import spawnTwistd

        log = os.path.join(base, f"{name}.log")
        process = spawnTwistd(
            self, "--logfile", log, "sipdist", "--role=home",
            f"--name={name}", f"--domain={DOMAIN}",
            f"--listen=tcp:{port}:interface=127.0.0.1",
            f"--store=file:{self.store}", f"--secret-file={self.secret}",
            f"--credentials=memory:alice:{PASSWORD}")

        def listening():
            """the home's log says it listens"""
            if process.poll() is not None:
                raise AssertionError(f"{name} exited: {tail(log)}")
            return os.path.exists(log) and "listening on" in tail(log)
        return process, waitFor(listening, timeout=30)

    @defer.inlineCallbacks
    def test_killedHomeBackupServes(self):
        """
        From the kill to a 200 at home2: one login, under 5 s.
        """
        import time

        base = os.path.abspath(self.mktemp())
        os.makedirs(base)
        self.store = os.path.join(base, "assignments.conf")
        self.secret = os.path.join(base, "secret")
        with open(self.secret, "w") as f:
            f.write("rehoming-test-secret-0123456789abcdef\n")
        ports = {"home1": freePort("tcp"), "home2": freePort("tcp")}
        with open(self.store, "w") as f:
            for name, port in ports.items():
                f.write(f"server {name} sip:127.0.0.1:{port};transport=tcp\n")
            f.write(f"user alice@{DOMAIN} home1\n")
        home1, ready1 = self.startHome("home1", ports["home1"], base)
        _, ready2 = self.startHome("home2", ports["home2"], base)
        yield ready1
        yield ready2

        events = []
        ua = UserAgent(_reactor(), f"alice@{DOMAIN}", PASSWORD,
                       listen="udp:0:interface=127.0.0.1",
                       observer=events.append)
        yield ua.start()
        self.addCleanup(ua.stop)
        # The shipped defaults of the client library.
        registration = Registration(
            ua, ServerLocator(None),
            server=f"sip:127.0.0.1:{ports['home1']};transport=tcp",
            expires=3600)
        self.addCleanup(registration.stop)
        result = yield registration.start()
        self.assertEqual(result.target.port, ports["home1"])
        self.assertEqual(result.backup.port, ports["home2"])

        home1.send_signal(signal.SIGKILL)
        killed = time.monotonic()

        def atHome2():
            """alice registered at home2"""
            return (registration.state == "registered"
                    and registration.result.target.port == ports["home2"])
        yield waitFor(atHome2, timeout=10)
        took = time.monotonic() - killed
        self.assertLess(took, 5.0)
        self.assertEqual(registration.logins, 2)
        kinds = [e.kind for e in events]
        lost = kinds.index("flow-failed")
        self.assertEqual(
            [e.target.port for e in events[lost:] if e.kind == "trying"],
            [ports["home2"]])


def tail(path):
    if not os.path.exists(path):
        return ""
    with open(path, errors="replace") as f:
        return f.read()[-2000:]
