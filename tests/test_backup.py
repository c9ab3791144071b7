"""
The backup home a server names: L{backupFor} (the rendezvous order of the
rebalancer) and when a REGISTER is given a C{Flow-Timer}.
"""

from twisted.trial.unittest import SynchronousTestCase

from sipdist.pool.rebalance import preference
from sipdist.roles.distribution import backupFor, wantsFlowTimer
from sipdist.sip.message import Request
from sipdist.store import ServerRecord

AOR = "sip:alice@example.com"


def records(*specs):
    return [ServerRecord(name, f"sip:10.0.0.{i}:5060", weight=weight,
                         state=state)
            for i, (name, weight, state) in enumerate(specs, 1)]


class BackupForTests(SynchronousTestCase):
    """
    L{backupFor} picks the first eligible server in the user's rendezvous
    order other than the assigned one.
    """

    def test_rendezvousOrder(self):
        """
        The backup is the user's first preference among the other active
        servers: the server the rebalancer moves the user to first.
        """
        servers = records(("h1", 1, "active"), ("h2", 1, "active"),
                          ("h3", 1, "active"), ("h4", 1, "active"))
        for assigned in ("h1", "h2", "h3", "h4"):
            order = [s for s in preference(AOR, servers) if s != assigned]
            expected = {s.id: s for s in servers}[order[0]]
            self.assertEqual(backupFor(AOR, servers, assigned, "UDP"),
                             expected.uri)

    def test_notEligible(self):
        """
        Down, draining and weightless servers are never a backup; with
        none left there is no backup.
        """
        servers = records(("h1", 1, "active"), ("h2", 1, "down"),
                          ("h3", 1, "draining"), ("h4", 0, "active"))
        self.assertIsNone(backupFor(AOR, servers, "h1", "UDP"))
        servers.append(ServerRecord("h5", "sip:10.0.0.5:5060"))
        self.assertEqual(backupFor(AOR, servers, "h1", "UDP"),
                         "sip:10.0.0.5:5060")

    def test_transport(self):
        """
        The backup's URI is the one for the request's transport; a server
        without a TLS URI is no backup for a TLS client.
        """
        servers = [ServerRecord("h1", "sip:10.0.0.1:5060"),
                   ServerRecord("h2", "sip:10.0.0.2:5060"),
                   ServerRecord("h3", "sip:10.0.0.3:5060",
                                tlsUri="sips:h3.example.com:5061")]
        self.assertEqual(backupFor(AOR, servers, "h1", "TLS"),
                         "sips:h3.example.com:5061")
        self.assertIn(backupFor(AOR, servers, "h1", "TCP"),
                      ("sip:10.0.0.2:5060;transport=tcp",
                       "sip:10.0.0.3:5060;transport=tcp"))


class FlowTimerTests(SynchronousTestCase):
    """
    A REGISTER asks for keep-alives with C{outbound} or a C{reg-id}.
    """

    def request(self, **headers):
        request = Request("REGISTER", "sip:example.com")
        for name, value in headers.items():
            request.headers[name] = [value]
        return request

    def test_wants(self):
        """
        C{Supported: outbound} (any case, in a list) or a Contact with a
        C{reg-id} asks; neither does not.
        """
        self.assertTrue(wantsFlowTimer(self.request(
            supported="sipdist-redirect, Outbound")))
        self.assertTrue(wantsFlowTimer(self.request(
            contact="<sip:a@10.0.0.9:5060>;reg-id=1;+sip.instance=\"x\"")))
        self.assertFalse(wantsFlowTimer(self.request(
            supported="path", contact="<sip:a@10.0.0.9:5060>")))


class BackupValueTests(SynchronousTestCase):
    """
    L{DistributionProcessor.backupValue} remembers its answers for the
    last pool it was given, and answers anew for another.
    """

    def setUp(self):
        from tests.test_fastchallenge import _server
        self.service = _server()[0]
        self.processor = self.service.processor

    def test_samePool(self):
        """
        The same pool, as the same tuple or as an equal list, gives the
        remembered answer: L{backupFor}'s over it.
        """
        pool = tuple(records(("home1", 10, "active"), ("home2", 10, "active"),
                             ("home3", 10, "active")))
        expected = f"<{backupFor(AOR, pool, 'home1', 'UDP')}>"
        for given in (pool, pool, list(pool), tuple(pool)):
            self.assertEqual(
                self.processor.backupValue(AOR, "home1", "UDP", (), given),
                expected)
        self.assertEqual(len(self.processor._backups), 1)

    def test_poolChanged(self):
        """
        A pool where the backup home is down, or gone, gives the next one;
        given the first pool again, the first answer.
        """
        pool = records(("home1", 10, "active"), ("home2", 10, "active"),
                       ("home3", 10, "active"))
        first = self.processor.backupValue(AOR, "home1", "UDP", (), pool)
        chosen = first[len("<"):-len(">")]
        down = [r if r.uri != chosen else r.updated(state="down")
                for r in pool]
        gone = [r for r in pool if r.uri != chosen]
        other = [r.uri for r in pool if r.uri != chosen and r.id != "home1"]
        for changed in (down, gone):
            self.assertEqual(
                self.processor.backupValue(AOR, "home1", "UDP", (), changed),
                f"<{other[0]}>")
        self.assertEqual(
            self.processor.backupValue(AOR, "home1", "UDP", (), pool), first)
