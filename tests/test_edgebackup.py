"""
The backup for clients behind an edge, on real sockets on loopback:
client -> edge -> distributor -> home1.  When home1 dies (its port
closed), the distributor sends alice's next REGISTER, and a call to her,
to her backup home (home2), which serves her temporarily, at once and
without the monitor; with home1 alive nothing reaches home2.
"""

from twisted.internet import defer, reactor
from twisted.trial.unittest import TestCase

from sipdist.client.login import Registration
from sipdist.store import ServerRecord

from tests.client_helpers import startAgent
from tests.distribution_helpers import waitFor
from tests.test_topologies import PASSWORD, Deployment, _call

ALICE = "sip:alice@example.com"


class Recorder:
    """
    A processor put first in a server's chain: keeps the method of every
    request that reaches the server, and lets it through.
    """

    def __init__(self):
        self.methods = []

    def __call__(self, request, transaction):
        self.methods.append(request.method)
        return False


class EdgeBackupTests(TestCase):
    """
    home1 and home2 over C{kind}; alice (home1, whose backup is home2, the
    only other home) behind an edge whose next hop is the distributor; bob
    (home2) logged in at home2.
    """

    timeout = 30
    kind = "tcp"
    # T1 of the servers and the client: timer F (64*T1) is how long a
    # REGISTER may wait for its answer.
    t1 = 0.05

    @defer.inlineCallbacks
    def setUp(self):
        self.d = d = Deployment(self, kind=self.kind, t1=self.t1)
        yield d.homes()
        yield d.start("distributor", "distributor")
        yield d.edge([d.uris["distributor"]], outside=self.kind)
        self.recorders = {}
        for name in ("home1", "home2"):
            self.recorders[name] = recorder = Recorder()
            d.services[name].server.processors.insert(0, recorder)
        ua = yield startAgent(self, reactor, "alice@example.com", PASSWORD,
                              T1=d.t1)
        self.alice = ua
        self.registration = Registration(ua, ua.locator,
                                         server=d.uris["edge"], expires=3600)
        self.addCleanup(self.registration.stop)
        yield self.registration.start()
        self.assertTrue(d.bindings("home1", "alice"))
        self.bob = yield d.agent("bob", d.uris["home2"])
        self.recorders["home2"].methods[:] = []

    @defer.inlineCallbacks
    def test_deadHomeBackupServes(self):
        """
        home1 stops: alice's next REGISTER, through the edge and the
        distributor, is served by home2 for at most 120 s, the store
        unchanged, and bob's call reaches her through home2; the monitor
        had no part (there is none).
        """
        yield self.d.services["home1"].stopService()
        yield self.registration.refresh()
        self.assertEqual(self.registration.state, "registered")
        self.assertLessEqual(self.registration.result.expires, 120)
        self.assertTrue(self.d.bindings("home2", "alice"))
        assigned = yield self.d.store.lookupUser(ALICE)
        self.assertEqual(assigned, "home1")
        self.assertEqual(self.d.services["home2"].standby.served, 1)
        call, incoming = yield _call(self.bob, self.alice)
        self.assertEqual(call.response.code, 200)
        response = yield call.hangup()
        self.assertEqual(response.code, 200)
        self.assertEqual(self.d.services["home2"].standby.served, 2)

    @defer.inlineCallbacks
    def test_deadHomeCallerServed(self):
        """
        home1 stops: alice's call to bob, through the edge and the
        distributor, is not lost with her home: the distributor sends it
        to her backup home2, signed, which routes it to bob.
        """
        yield self.d.services["home1"].stopService()
        call, incoming = yield _call(self.alice, self.bob)
        self.assertEqual(call.response.code, 200)
        response = yield call.hangup()
        self.assertEqual(response.code, 200)
        self.assertEqual(self.d.services["home2"].router.fromPeer, 1)

    @defer.inlineCallbacks
    def test_liveHomeBackupUntouched(self):
        """
        With home1 alive, the same REGISTER and call go to home1 and
        nothing of alice's reaches home2 (bob's INVITE, from home2's own
        user, is home2's to route), nor is home1 probed.
        """
        yield self.registration.refresh()
        self.assertEqual(self.registration.state, "registered")
        self.assertEqual(self.registration.result.expires, 3600)
        self.assertEqual(self.recorders["home2"].methods, [])
        call, incoming = yield _call(self.bob, self.alice)
        response = yield call.hangup()
        self.assertEqual(response.code, 200)
        self.assertNotIn("REGISTER", self.recorders["home2"].methods)
        self.assertFalse(self.d.bindings("home2", "alice"))
        self.assertEqual(self.d.services["home2"].standby.served, 0)
        self.assertEqual(self.d.services["home2"].standby.probes, 0)
        self.assertEqual(self.d.services["distributor"].failover.failedOver,
                         0)

    @defer.inlineCallbacks
    def test_homeBackGoesBack(self):
        """
        After being served by home2, alice's next REGISTER once home1
        answers again goes to home1: the store was never changed.
        """
        yield self.d.services["home1"].stopService()
        yield self.registration.refresh()
        self.assertTrue(self.d.bindings("home2", "alice"))
        # home1 back: a new process, on a new port, which the store
        # learns as an operator would tell it.
        yield self.d.start("home1", "home")
        uri = self.d.uris["home1"]
        yield self.d.store.updateServer("home1", uri=uri)
        # The distributor's last probe result is kept 2 s.
        failover = self.d.services["distributor"].failover
        yield waitFor(lambda: not failover.knownDead(
            ServerRecord("home1", uri)), timeout=5)
        yield self.registration.refresh()
        self.assertEqual(self.registration.result.expires, 3600)
        self.assertTrue(self.d.bindings("home1", "alice"))


class UDPEdgeBackupTests(EdgeBackupTests):
    """
    The same over UDP, where a dead home is silence: found by the
    distributor's probe after --failover-after (1 s) of it, then by the
    backup's own probe (1 s): about 3 s, well within timer F (12.8 s).
    """

    kind = "udp"
    t1 = 0.2
