"""
Tests for the failover of a proxied request to the user's backup home:
L{sipdist.services.proxy.Failover} (the proxy trying the fallback) and
L{sipdist.pool.failover} (the store roles choosing it, the backup serving
what a pool server relayed to it).
"""

from twisted.internet.defer import Deferred, succeed
from twisted.trial.unittest import SynchronousTestCase

from sipdist.services.proxy import Failover
from sipdist.sip.message import Request

from tests.test_proxy import ProxyTestMixin, makeRequest


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
