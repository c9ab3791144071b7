"""
Tests for L{sipdist.pool.standby}: a backup home serving a user of a home
that cannot be reached, before the monitor has marked it down.
"""

from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase

from sipdist.pool.monitor import Answer, ProbeFailed
from sipdist.roles.distribution import backupRecord
from sipdist.sip.message import parseNameAddr
from sipdist.store import ServerRecord
from sipdist.store.memory import MemoryAssignmentStore

from tests.test_roles import FOLLOWS, Harness, signed

HOME1 = "sip:127.0.0.1:5070"


class StandbyTests(SynchronousTestCase):
    """
    home2 is alice's backup (the only other home); alice is assigned to
    home1.
    """

    def setUp(self):
        self.home = Harness(name="home2")
        self.aor = "sip:alice@example.com"

    def assignedTo(self):
        return self.successResultOf(self.home.store.lookupUser(self.aor))

    def test_reachableHomeRedirects(self):
        """
        When home1 answers the backup's probe (any answer), the backup
        redirects alice to it as usual.
        """
        response, session = self.home.register("alice", extra=FOLLOWS)
        self.assertEqual((response.code, response.header("contact")),
                         (301, f"<{HOME1}>"))
        self.assertEqual(self.home.prober.probed, [HOME1])
        self.assertEqual(self.home.service.standby.served, 0)

    def test_unreachableHomeServedTemporarily(self):
        """
        When home1 does not answer the backup's probe either, the backup
        registers alice for at most --standby-expires (120) seconds, in a
        signed 200; the store is not changed.
        """
        self.home.prober.dead.add(HOME1)
        response, session = self.home.register("alice", extra=FOLLOWS,
                                               expires=3600)
        self.assertEqual(response.code, 200)
        self.assertTrue(signed(response, session))
        _, _, params = parseNameAddr(response.header("contact"))
        self.assertEqual(params["expires"], "120")
        self.assertEqual(self.assignedTo(), "home1")
        self.assertTrue(self.home.service.registrar.lookup(
            "sip:alice@example.com"))
        self.assertEqual(self.home.service.standby.served, 1)
        # Neither home2 nor the failed home1 is named as the backup.
        self.assertIsNone(response.header("sipdist-backup"))

    def test_nextBackupNamed(self):
        """
        With a third home, the 200 of a temporary serve names it as the
        backup: neither the server serving nor the failed home.
        """
        self.home.store.addServer(ServerRecord("home3", "sip:127.0.0.1:5090"))
        self.home.prober.dead.add(HOME1)
        records = self.successResultOf(self.home.store.listServers())
        # alice's rendezvous order (fixed by the names) puts home2 first.
        self.assertEqual(backupRecord(self.aor, records, "home1", "UDP")[0],
                         "home2")
        response, _ = self.home.register("alice", extra=FOLLOWS)
        self.assertEqual(response.code, 200)
        self.assertEqual(response.header("sipdist-backup"),
                         "<sip:127.0.0.1:5090>")

    def test_downInStoreServedWithoutProbe(self):
        """
        When the monitor has marked home1 down already, the backup serves
        alice without probing it (instead of the 503 with Retry-After).
        """
        self.home.store.updateServer("home1", state="down")
        response, _ = self.home.register("alice", extra=FOLLOWS)
        self.assertEqual(response.code, 200)
        self.assertEqual(self.home.prober.probed, [])

    def downPool(self):
        """
        A store of home1, home2 and home3, alice assigned to home1, which
        is marked down; and alice's backup home.
        """
        store = MemoryAssignmentStore()
        for name, port in (("home1", 5070), ("home2", 5080),
                           ("home3", 5090)):
            store.addServer(ServerRecord(name, f"sip:127.0.0.1:{port}"))
        store.assignUser(self.aor, "home1")
        store.updateServer("home1", state="down")
        records = self.successResultOf(store.listServers())
        return store, backupRecord(self.aor, records, "home1", "UDP")

    def test_downInStoreNotTheBackup(self):
        """
        A home that is not alice's backup redirects her REGISTER to her
        backup (a signed 301, the next backup named) rather than answer
        the 503 of a home marked down; it serves nothing itself, and the
        store is unchanged.
        """
        store, (backup, backupURI) = self.downPool()
        other = "home3" if backup == "home2" else "home2"
        home = Harness(name=other, store=store)
        response, session = home.register("alice", extra=FOLLOWS)
        self.assertEqual((response.code, response.header("contact")),
                         (301, f"<{backupURI}>"))
        self.assertTrue(signed(response, session))
        # The next backup: neither home1 nor the backup redirected to.
        port = 5080 if other == "home2" else 5090
        self.assertEqual(response.header("sipdist-backup"),
                         f"<sip:127.0.0.1:{port}>")
        self.assertEqual(home.service.standby.served, 0)
        self.assertEqual(home.prober.probed, [])
        self.assertEqual(self.successResultOf(store.lookupUser(self.aor)),
                         "home1")

    def test_downInStoreDistributorRedirectsToBackup(self):
        """
        A distributor redirects the REGISTER of a client that follows the
        redirect, whose home is marked down, to the user's backup home
        (which serves it temporarily) rather than answer 503; a standard
        client still gets the 503 (it is not failed over here: the
        Harness's proxy records nothing), and so does a request other
        than REGISTER.
        """
        store, (backup, backupURI) = self.downPool()
        distributor = Harness(role="distributor", name="distributor",
                              store=store)
        distributor.service.processor.failover = None
        response, session = distributor.register("alice", extra=FOLLOWS)
        self.assertEqual((response.code, response.header("contact")),
                         (301, f"<{backupURI}>"))
        self.assertTrue(signed(response, session))
        response, _ = distributor.register("alice", callID="std")
        self.assertEqual(response.code, 503)
        self.assertEqual(distributor.proxy.forwarded, [])

    def test_downInStoreBackupWithoutStandby(self):
        """
        The backup itself, without a standby, answers the 503: it never
        redirects a client to itself.
        """
        store, (backup, backupURI) = self.downPool()
        home = Harness(name=backup, store=store)
        home.service.processor.standby = None
        response, _ = home.register("alice", extra=FOLLOWS)
        self.assertEqual(response.code, 503)

    def test_notTheBackup(self):
        """
        A home that is not the user's backup redirects it to its home even
        when that home does not answer: a user cannot pick its server.
        """
        store = MemoryAssignmentStore()
        for name, port in (("home1", 5070), ("home2", 5080),
                           ("home3", 5090)):
            store.addServer(ServerRecord(name, f"sip:127.0.0.1:{port}"))
        store.assignUser(self.aor, "home1")
        records = self.successResultOf(store.listServers())
        backup = backupRecord(self.aor, records, "home1", "UDP")[0]
        other = "home3" if backup == "home2" else "home2"
        home = Harness(name=other, store=store)
        home.prober.dead.add(HOME1)
        response, _ = home.register("alice", extra=FOLLOWS)
        self.assertEqual(response.code, 301)
        self.assertEqual(home.prober.probed, [])

    def test_standardClientProxied(self):
        """
        A client that does not follow the redirect was never named a
        backup: it is proxied to its home as before.
        """
        self.home.prober.dead.add(HOME1)
        self.home.register("alice")
        self.assertEqual(len(self.home.proxy.forwarded), 1)
        self.assertEqual(self.home.service.standby.served, 0)

    def test_throughAProxy(self):
        """
        A request that came through another proxy (two Via values) is not
        served temporarily.
        """
        self.home.prober.dead.add(HOME1)
        vias = ("SIP/2.0/UDP 192.0.2.9:5060;branch=z9hG4bKp1",
                "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKc1;rport")
        self.home.register("alice", extra=FOLLOWS, vias=vias)
        self.assertEqual(self.home.service.standby.served, 0)
        self.assertEqual(len(self.home.proxy.forwarded), 1)

    def test_oneProbePerPeriod(self):
        """
        The probe's result is used for --standby-ttl (2) seconds: a second
        client within it costs no probe; after it, a new probe is sent.
        """
        self.home.prober.dead.add(HOME1)
        self.home.register("alice", extra=FOLLOWS, callID="a")
        self.home.register("alice", extra=FOLLOWS, callID="b")
        self.assertEqual(len(self.home.prober.probed), 1)
        self.home.clock.advance(2.5)
        self.home.register("alice", extra=FOLLOWS, callID="c")
        self.assertEqual(len(self.home.prober.probed), 2)

    def test_homeBackRedirects(self):
        """
        When home1 answers again, alice's next REGISTER at the backup is
        redirected to it and her temporary registration ends.
        """
        self.home.prober.dead.add(HOME1)
        response, _ = self.home.register("alice", extra=FOLLOWS)
        self.assertEqual(response.code, 200)
        self.home.prober.dead.clear()
        self.home.clock.advance(2.5)
        response, _ = self.home.register("alice", extra=FOLLOWS, cseq=5)
        self.assertEqual(response.code, 301)
        self.assertFalse(self.home.service.registrar.lookup(
            "sip:alice@example.com"))

    def test_silentProbeTimesOut(self):
        """
        A probe without an answer within --standby-timeout (1) second
        counts as an unreachable home; the waiting REGISTER is then
        served, and every request waiting on the same probe with it.
        """
        probes = []

        class Silent:
            def probe(self, uri, late=None):
                probes.append(uri)
                return Deferred()

        self.home.service.standby.prober = Silent()
        self.home.register("alice", extra=FOLLOWS)
        self.assertEqual(len(self.home.flow.sent), 1)  # the 401 only
        self.home.clock.advance(1.0)
        self.assertEqual(self.home.flow.sent[-1].code, 200)
        self.assertEqual(probes, [HOME1])

    def test_resultRefreshedAhead(self):
        """
        While a silent home's users keep arriving, the result in use is
        refreshed by a new probe once it is older than half of
        --standby-ttl less --standby-timeout (0.5 s): the clients are
        answered from it at once meanwhile, and the next result is there
        before it expires, so that none of them waits for a probe again.
        """
        probes = []

        class Silent:
            def probe(self, uri, late=None):
                probes.append(uri)
                return Deferred()

        self.home.service.standby.prober = Silent()
        self.home.register("alice", extra=FOLLOWS, callID="a")
        self.home.clock.advance(1.0)
        self.assertEqual(self.home.flow.sent[-1].code, 200)
        self.assertEqual(len(probes), 1)
        # 1.6 s after the first probe: served at once, and probed again.
        self.home.clock.advance(0.6)
        self.home.register("alice", extra=FOLLOWS, callID="b", cseq=5)
        self.assertEqual(self.home.flow.sent[-1].code, 200)
        self.assertEqual(len(probes), 2)
        # 2.7 s: the first result has expired, the second one answers.
        self.home.clock.advance(1.1)
        sent = len(self.home.flow.sent)
        self.home.register("alice", extra=FOLLOWS, callID="c", cseq=9)
        self.assertEqual(self.home.flow.sent[-1].code, 200)
        self.assertGreater(len(self.home.flow.sent), sent)
        self.assertEqual(len(probes), 3)

    def test_refreshedResultStillUsed(self):
        """
        Until the refreshing probe answers, the result in hand is used;
        once it answers, its result is: a home that answers again is
        redirected to.
        """
        answers = []

        class Later:
            probed = []

            def probe(self, uri, late=None):
                self.probed.append(uri)
                answers.append(Deferred())
                return answers[-1]

        prober = self.home.service.standby.prober = Later()
        self.home.register("alice", extra=FOLLOWS, callID="a")
        answers[0].errback(ProbeFailed("connection refused"))
        self.assertEqual(self.home.flow.sent[-1].code, 200)
        self.home.clock.advance(1.5)
        self.home.register("alice", extra=FOLLOWS, callID="b", cseq=5)
        self.assertEqual(self.home.flow.sent[-1].code, 200)
        self.assertEqual(len(prober.probed), 2)
        answers[1].callback(Answer(None))
        self.home.register("alice", extra=FOLLOWS, callID="c", cseq=9)
        self.assertEqual(self.home.flow.sent[-1].code, 301)
        self.assertEqual(len(prober.probed), 2)

    def test_off(self):
        """
        With --standby off, a home has no standby and redirects.
        """
        from sipdist.server import buildServer
        from twisted.internet.task import Clock
        service = buildServer(
            {"role": "home", "name": "home2", "domain": "example.com",
             "listen": [], "credentials": "memory:alice:alice-pw",
             "secret": "test-secret-0123456789", "standby": False},
            Clock(), store=MemoryAssignmentStore())
        self.assertIsNone(getattr(service, "standby", None))
        self.assertIsNone(service.processor.standby)


class StatusTests(SynchronousTestCase):
    """
    The status document counts the requests served temporarily and the
    probes sent.
    """

    def test_counted(self):
        from sipdist.pool.status import statusOf
        home = Harness(name="home2")
        home.prober.dead.add(HOME1)
        home.register("alice", extra=FOLLOWS)
        document = statusOf(home.service, {"name": "home2"})
        self.assertEqual(document["standby"], {"served": 1, "probes": 1})
