"""
Tests for the failover of a proxied request to the user's backup home:
L{sipdist.services.proxy.Failover} (the proxy trying the fallback) and
L{sipdist.pool.failover} (the store roles choosing it, the backup serving
what a pool server relayed to it).
"""

from twisted.internet.defer import Deferred, succeed
from twisted.trial.unittest import SynchronousTestCase

from sipdist.services.proxy import Failover
from sipdist.services.routing import PeerSigner
from sipdist.sip.message import parseMessage

from tests.test_proxy import ProxyTestMixin, makeRequest
from tests.test_roles import Harness, outOfDialog


def signWith(tag):
    def sign(request):
        request.headers["sipdist-peer"] = [tag]
    return sign


class ProxyFailoverTests(ProxyTestMixin, SynchronousTestCase):
    """
    A request forwarded with a L{Failover} goes to the fallback, signed,
    when its next hop is dead, and only then.
    """

    def setUp(self):
        ProxyTestMixin.setUp(self)
        self.checks = []
        self.dead = None

        def check():
            self.checks.append(1)
            return self.dead if isinstance(self.dead, Deferred) \
                else succeed(self.dead)

        self.forwardArgs = {"nextHop": "sip:home.test;transport=tcp",
                            "failover": Failover("sip:backup.test",
                                                 signWith("signed"), 1.0,
                                                 check)}

    def test_refusedGoesToFallback(self):
        """
        The home refuses the connection: the request goes to the backup
        at once, carrying the signature; the backup's answer goes upstream.
        """
        self.transport.refused.add("home.test")
        self.receive(makeRequest("REGISTER", "sip:proxy.test"))
        [sent] = self.downstream("backup.test").sent
        self.assertEqual(sent.header("sipdist-peer"), "signed")
        self.answer(sent, 200, self.downstream("backup.test"))
        self.assertEqual([r.code for r in self.upstream()], [200])
        self.assertEqual(self.checks, [])
        self.assertDrained()

    def test_answeringHomeKept(self):
        """
        A home that answers, a 503 too, is the answer: nothing goes to
        the backup, and the home is never checked.
        """
        self.receive(makeRequest("REGISTER", "sip:proxy.test"))
        [sent] = self.downstream("home.test", transport="TCP").sent
        self.assertIsNone(sent.header("sipdist-peer"))
        self.answer(sent, 503, self.downstream("home.test", transport="TCP"))
        self.advance(5)
        self.assertEqual([r.code for r in self.upstream()], [500])
        self.assertEqual(self.downstream("backup.test").sent, [])
        self.assertEqual(self.checks, [])
        self.assertDrained()

    def test_silentDeadHomeGivenUp(self):
        """
        A home silent for stallAfter (1 s) is checked; found dead, the
        request goes to the backup.
        """
        self.dead = True
        self.receive(makeRequest("REGISTER", "sip:proxy.test"))
        self.assertEqual(len(self.downstream(
            "home.test", transport="TCP").sent), 1)
        self.clock.advance(0.9)
        self.assertEqual(self.checks, [])
        self.assertEqual(self.downstream("backup.test").sent, [])
        self.clock.advance(0.2)
        self.assertEqual(self.checks, [1])
        [sent] = self.downstream("backup.test").sent
        self.assertEqual(sent.header("sipdist-peer"), "signed")
        self.answer(sent, 200, self.downstream("backup.test"))
        self.assertEqual([r.code for r in self.upstream()], [200])
        self.assertDrained()

    def test_silentLiveHomeWaitedFor(self):
        """
        A silent home that answers the check is waited for: its late
        answer goes upstream, nothing to the backup.
        """
        self.dead = False
        self.receive(makeRequest("REGISTER", "sip:proxy.test"))
        self.clock.advance(1.5)
        self.assertEqual(self.checks, [1])
        [sent] = self.downstream("home.test", transport="TCP").sent
        self.answer(sent, 200, self.downstream("home.test", transport="TCP"))
        self.assertEqual([r.code for r in self.upstream()], [200])
        self.assertEqual(self.downstream("backup.test").sent, [])
        self.assertDrained()

    def test_homeAnswersDuringCheck(self):
        """
        A home whose answer arrives while it is being checked keeps the
        request, whatever the check says afterwards.
        """
        self.dead = Deferred()
        self.receive(makeRequest("REGISTER", "sip:proxy.test"))
        self.clock.advance(1.5)
        [sent] = self.downstream("home.test", transport="TCP").sent
        self.answer(sent, 200, self.downstream("home.test", transport="TCP"))
        self.dead.callback(True)
        self.assertEqual([r.code for r in self.upstream()], [200])
        self.assertEqual(self.downstream("backup.test").sent, [])
        self.assertDrained()

    def test_provisionalStopsTheClock(self):
        """
        A 100 Trying from the home means it is alive: no check.
        """
        self.dead = True
        self.receive(makeRequest("INVITE", "sip:bob@proxy.test"))
        [sent] = self.downstream("home.test", transport="TCP").sent
        self.answer(sent, 100, self.downstream("home.test", transport="TCP"))
        self.clock.advance(1.5)
        self.assertEqual(self.checks, [])
        self.assertEqual(self.downstream("backup.test").sent, [])
        self.answer(sent, 486, self.downstream("home.test", transport="TCP"))
        self.assertEqual([r.code for r in self.upstream()][-1], 486)


HOME1 = "sip:127.0.0.1:5070"
HOME2 = "sip:127.0.0.1:5080"
SECRET = "test-secret-0123456789"
# Through an edge: the edge's Via above the client's.
EDGE_VIAS = ("SIP/2.0/UDP 192.0.2.9:5060;branch=z9hG4bKe1",
             "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKc1;rport")


def edgeVias(harness):
    """
    The Via values of a request through an edge, whose top branch
    L{Harness.register} renews for each request it sends.
    """
    return (f"SIP/2.0/UDP 192.0.2.9:5060;branch=z9hG4bKa{harness.branch + 1}",
            EDGE_VIAS[1])


class SigningHarness(Harness):
    """
    A L{Harness} whose requests arrive signed by a pool peer (the
    distributor) when C{signer} is set, as a distributor failing over
    sends them; C{forged} puts a signature made with another secret.
    """

    signer = None

    def send(self, data):
        message = parseMessage(data)
        if self.signer is not None:
            self.signer.sign(message)
        self.layer.messageReceived(message, self.flow)
        return self.flow.sent[-1]


class ChoosingTests(SynchronousTestCase):
    """
    A distributor proxying alice (assigned to home1; her backup is home2,
    the only other home) names home2 as the fallback, or sends to it at
    once when home1 is known dead.
    """

    def setUp(self):
        self.distributor = Harness(role="distributor", name="distributor")
        self.distributor.service.failover.probes.prober = \
            self.distributor.prober

    def registerThroughEdge(self, **kw):
        return self.distributor.register(
            "alice", vias=edgeVias(self.distributor), **kw)

    def test_fallbackNamed(self):
        """
        With home1 up, the REGISTER goes to home1 with home2 as the
        fallback, unsigned; home1 is not probed.
        """
        self.registerThroughEdge()
        [(request, kwargs)] = self.distributor.proxy.forwarded
        self.assertEqual(kwargs["nextHop"], HOME1)
        self.assertEqual(kwargs["failover"].uri, HOME2)
        self.assertIsNone(request.header("sipdist-peer"))
        self.assertEqual(self.distributor.prober.probed, [])

    def test_downInStoreToBackup(self):
        """
        With home1 marked down, the REGISTER goes to home2 at once, with
        the distributor's peer signature, rather than a 503.
        """
        self.distributor.store.updateServer("home1", state="down")
        self.registerThroughEdge()
        [(request, kwargs)] = self.distributor.proxy.forwarded
        self.assertEqual(kwargs["nextHop"], HOME2)
        self.assertNotIn("failover", kwargs)
        signer = PeerSigner(SECRET, "x", self.distributor.clock)
        self.assertEqual(signer.verify(request), "distributor")
        self.assertEqual(self.distributor.service.failover.failedOver, 1)

    def test_probedDeadToBackup(self):
        """
        Once a probe found home1 dead, the next requests within
        --standby-ttl go to home2 at once, without a new probe.
        """
        self.distributor.prober.dead.add(HOME1)
        self.registerThroughEdge(callID="a")
        [(_, kwargs)] = self.distributor.proxy.forwarded
        self.successResultOf(kwargs["failover"].check())
        self.assertEqual(self.distributor.prober.probed, [HOME1])
        self.registerThroughEdge(callID="b")
        self.assertEqual(self.distributor.proxy.forwarded[-1][1]["nextHop"],
                         HOME2)
        self.assertEqual(self.distributor.prober.probed, [HOME1])
        # After the probe's ttl, home1 is tried first again.
        self.distributor.clock.advance(2.5)
        self.distributor.prober.dead.clear()
        self.registerThroughEdge(callID="c")
        self.assertEqual(self.distributor.proxy.forwarded[-1][1]["nextHop"],
                         HOME1)

    def test_downWithoutBackup(self):
        """
        With home1 down and no other home, the answer is the 503 of a
        home down, as before.
        """
        self.distributor.store.updateServer("home2", state="down")
        self.distributor.store.updateServer("home1", state="down")
        response, _ = self.registerThroughEdge()
        self.assertEqual(response.code, 503)
        self.assertEqual(self.distributor.proxy.forwarded, [])

    def test_off(self):
        """
        With --failover off, no fallback is named.
        """
        from sipdist.server import buildServer
        from sipdist.store.memory import MemoryAssignmentStore
        from twisted.internet.task import Clock
        service = buildServer(
            {"role": "distributor", "name": "d", "domain": "example.com",
             "listen": [], "credentials": "memory:alice:alice-pw",
             "secret": SECRET, "failover": False},
            Clock(), store=MemoryAssignmentStore())
        self.assertIsNone(service.processor.failover)


class RelayedStandbyTests(SynchronousTestCase):
    """
    home2, alice's backup, given a REGISTER of alice relayed through an
    edge and a distributor.
    """

    def setUp(self):
        self.home = SigningHarness(name="home2")
        self.signer = PeerSigner(SECRET, "distributor", self.home.clock)

    def register(self, **kw):
        return self.home.register("alice", vias=edgeVias(self.home),
                                  expires=3600, **kw)

    def test_signedDeadHomeServed(self):
        """
        Signed by a pool server and home1 silent to home2's own probe:
        served temporarily (at most 120 s), the store unchanged.
        """
        self.home.signer = self.signer
        self.home.prober.dead.add(HOME1)
        response, _ = self.register()
        self.assertEqual(response.code, 200)
        self.assertIn("expires=120", response.header("contact"))
        self.assertEqual(self.home.proxy.forwarded, [])
        self.assertEqual(
            self.successResultOf(self.home.store.lookupUser(
                "sip:alice@example.com")), "home1")
        self.assertEqual(self.home.service.standby.served, 1)

    def test_signedLiveHomeProxied(self):
        """
        Signed, but home1 answers home2's probe: proxied to home1, with no
        fallback (a relayed request is not failed over again).
        """
        self.home.signer = self.signer
        self.register()
        self.assertEqual(self.home.prober.probed, [HOME1])
        [(request, kwargs)] = self.home.proxy.forwarded
        self.assertEqual(kwargs["nextHop"], HOME1)
        self.assertNotIn("failover", kwargs)
        # The signature stays with us.
        self.assertIsNone(request.header("sipdist-peer"))
        self.assertEqual(self.home.service.standby.served, 0)

    def test_unsignedNotServed(self):
        """
        Without a peer signature (an outsider's proxy), home2 does not
        serve alice even with home1 dead: it proxies to home1.
        """
        self.home.prober.dead.add(HOME1)
        self.register()
        self.assertEqual(self.home.prober.probed, [])
        self.assertEqual(len(self.home.proxy.forwarded), 1)
        self.assertEqual(self.home.service.standby.served, 0)

    def test_forgedNotServed(self):
        """
        A signature made without the pool's secret counts for nothing.
        """
        self.home.signer = PeerSigner("another-secret-xxxxxxxx",
                                      "distributor", self.home.clock)
        self.home.prober.dead.add(HOME1)
        self.register()
        self.assertEqual(self.home.service.standby.served, 0)
        self.assertEqual(len(self.home.proxy.forwarded), 1)

    def test_notTheBackup(self):
        """
        A home that is not alice's backup does not serve her, signed or
        not, dead home or not.
        """
        from sipdist.roles.distribution import backupRecord
        from sipdist.store import ServerRecord
        store = self.home.store
        store.addServer(ServerRecord("home3", "sip:127.0.0.1:5090"))
        records = self.successResultOf(store.listServers())
        backup = backupRecord("sip:alice@example.com", records, "home1",
                              "UDP")[0]
        other = "home3" if backup == "home2" else "home2"
        home = SigningHarness(name=other, store=store)
        home.signer = PeerSigner(SECRET, "distributor", home.clock)
        home.prober.dead.add(HOME1)
        home.register("alice", vias=edgeVias(home))
        self.assertEqual(home.service.standby.served, 0)
        self.assertEqual(home.prober.probed, [])


class CalleeTests(SynchronousTestCase):
    """
    Requests to alice while home2, her backup, serves her temporarily.
    """

    def setUp(self):
        self.home = SigningHarness(name="home2")
        self.home.signer = PeerSigner(SECRET, "distributor", self.home.clock)
        self.home.prober.dead.add(HOME1)
        response, _ = self.home.register("alice", vias=edgeVias(self.home))
        self.assertEqual(response.code, 200)
        self.home.signer = None

    def invite(self, signed=False):
        """
        An INVITE from bob (home2's own user) to alice, authenticated; or
        one signed by a peer (from the home of some other caller).
        """
        if signed:
            self.home.signer = PeerSigner(SECRET, "home3", self.home.clock)
            self.home.send(outOfDialog("INVITE", "bob", to="alice"))
            return
        from sipdist.auth.client import answerChallenge
        challenge = self.home.send(outOfDialog("INVITE", "bob", to="alice"))
        self.assertEqual(challenge.code, 407)
        value, _ = answerChallenge(
            challenge.values("proxy-authenticate"), "INVITE",
            "sip:alice@example.com", "bob", "bob-pw")
        self.home.send(outOfDialog(
            "INVITE", "bob", to="alice", cseq=2, branch="z9hG4bKo2",
            extra=(f"Proxy-Authorization: {value}",)))

    def test_deliveredHere(self):
        """
        home1 still dead: the INVITE goes to alice's binding here.
        """
        self.invite()
        [(request, kwargs)] = self.home.proxy.forwarded
        self.assertEqual(len(kwargs["target"]), 1)
        self.assertEqual(self.home.service.standby.served, 2)

    def test_fromPeerDeliveredHere(self):
        """
        So is an INVITE another home relayed to us, signed.
        """
        self.invite(signed=True)
        [(request, kwargs)] = self.home.proxy.forwarded
        self.assertIn("target", kwargs)

    def test_homeBackGoesThere(self):
        """
        Once home1 answers again, the INVITE goes to home1: the temporary
        binding here is not used.
        """
        self.home.prober.dead.clear()
        self.home.clock.advance(2.5)
        self.invite()
        [(request, kwargs)] = self.home.proxy.forwarded
        self.assertEqual(kwargs["nextHop"], HOME1)
        self.assertNotIn("target", kwargs)


class StatusTests(SynchronousTestCase):
    """
    The status document counts the requests sent to a backup at once, those
    sent with a fallback, and the probes.
    """

    def test_counted(self):
        from sipdist.pool.status import statusOf
        from sipdist.store import ServerRecord
        distributor = Harness(role="distributor", name="distributor")
        distributor.store.addServer(ServerRecord("home3",
                                                 "sip:127.0.0.1:5090"))
        # alice's home down: to her backup at once; bob's (home2) up: to
        # it, with home3 as fallback.
        distributor.store.updateServer("home1", state="down")
        distributor.register("alice", vias=edgeVias(distributor))
        distributor.register("bob", vias=edgeVias(distributor))
        document = statusOf(distributor.service, {"name": "distributor"})
        self.assertEqual(document["failover"],
                         {"atOnce": 1, "withFallback": 1, "probes": 0})


class RelayedCalleeTests(SynchronousTestCase):
    """
    home3 given a call to alice by a peer (signed), alice's home1 known
    dead and home3 not the one she is registered at: not failed over
    again, answered.
    """

    def test_relayedDeadHomeAnswered(self):
        """
        The INVITE gets a 503 naming the dead home, not silence, and goes
        nowhere.
        """
        from sipdist.store import ServerRecord
        home = SigningHarness(name="home2")
        home.store.addServer(ServerRecord("home3", "sip:127.0.0.1:5090"))
        home.signer = PeerSigner(SECRET, "home3", home.clock)
        home.prober.dead.add(HOME1)
        # home2 learns that home1 is dead (its probe, kept 2 s).
        record = self.successResultOf(home.store.getServer("home1"))
        self.assertTrue(self.successResultOf(
            home.service.standby.unreachable(record)))
        response = home.send(outOfDialog("INVITE", "bob", to="alice"))
        self.assertEqual(response.code, 503)
        self.assertEqual(home.proxy.forwarded, [])
