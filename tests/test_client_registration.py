"""
The registration's timers on a L{Clock}: refresh before expiry, bounded
retries after failed logins, nothing left scheduled after stop.  The user
agent's C{send} is replaced by a small scripted fake.
"""

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from sipdist.client.core import Outcome, UserAgent
from sipdist.client.events import NoAnswer
from sipdist.client.discovery import ServerLocator, Target
from sipdist.client.login import LoginFailed, Registration, refreshDelay
from sipdist.sip.message import responseTo

HOME = Target("UDP", "192.0.2.1", 5060)


class _ScriptedAgent(UserAgent):
    """
    A user agent whose requests get the answers in C{answers} (a status
    code, or an exception to fail with), in order, at once.
    """

    def __init__(self, clock, answers):
        UserAgent.__init__(self, clock, "alice@example.com", "pw",
                           observer=self._event)
        self.answers = list(answers)
        self.sent = []
        self.events = []

    def _event(self, event):
        self.events.append(event)

    def send(self, request, target, withContact=None, preemptive=True):
        self.sent.append((request, target))
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            return defer.fail(answer)
        request.headers["contact"] = ["<sip:alice@192.0.2.9:5999>"]
        return defer.succeed(Outcome(responseTo(request, answer), None,
                                     request, None, target))


class _Locator(ServerLocator):
    def __init__(self):
        pass

    def findServers(self, uri, transports=None):
        return defer.succeed([HOME])


class Upper:
    """
    A random source that always draws the top of the range: the longest
    wait the client may choose.
    """

    def uniform(self, low, high):
        return high


class RegistrationTimerTests(SynchronousTestCase):
    """
    L{Registration} on a clock.
    """

    def registration(self, answers, **kw):
        clock = Clock()
        ua = _ScriptedAgent(clock, answers)
        kw.setdefault("random", Upper())
        registration = Registration(ua, _Locator(), expires=600, **kw)
        return clock, ua, registration

    def test_refreshDelay(self):
        """
        Short registrations are refreshed at half their life, long ones a
        minute before they end.
        """
        self.assertEqual(refreshDelay(60), 30)
        self.assertEqual(refreshDelay(600), 540)
        self.assertEqual(refreshDelay(1), 1)

    def test_refreshBeforeExpiry(self):
        """
        The REGISTER is sent again before the registration expires, to the
        same server, with the same Call-ID and a higher CSeq.
        """
        clock, ua, registration = self.registration([200, 200, 200])
        self.successResultOf(registration.start())
        clock.advance(539)
        self.assertEqual(len(ua.sent), 1)
        clock.advance(1)
        self.assertEqual(len(ua.sent), 2)
        first, second = ua.sent[0][0], ua.sent[1][0]
        self.assertEqual(first.callID, second.callID)
        self.assertGreater(second.cseq()[0], first.cseq()[0])
        self.assertEqual(ua.sent[1][1], HOME)
        self.assertEqual(ua.events[-1].kind, "refreshed")

    def test_retriesBounded(self):
        """
        When the home stops answering and the logins that follow fail, the
        client retries with growing delays and gives up after maxFailures,
        failing C{registration.failed}; nothing stays scheduled.
        """
        silence = NoAnswer("no answer")
        clock, ua, registration = self.registration(
            [200, silence] + [silence] * 3, maxFailures=3,
            retryDelays=(1, 5))
        self.successResultOf(registration.start())
        clock.advance(540)
        self.assertEqual(ua.events[-1].kind, "retry")
        clock.advance(1)
        self.assertEqual(ua.events[-1].kind, "retry")
        self.assertEqual(ua.events[-1].delay, 5)
        clock.advance(5)
        self.failureResultOf(registration.failed, LoginFailed)
        self.assertEqual(registration.state, "failed")
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_stopCancelsTimers(self):
        """
        Stopping unregisters and leaves no timer behind.
        """
        clock, ua, registration = self.registration([200, 200])
        self.successResultOf(registration.start())
        self.successResultOf(registration.stop())
        self.assertEqual(ua.sent[-1][0].header("expires"), "0")
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_stopWhileRetrying(self):
        """
        Stopping during the wait between two logins ends the retries.
        """
        silence = NoAnswer("no answer")
        clock, ua, registration = self.registration([200, silence, silence])
        self.successResultOf(registration.start())
        clock.advance(540)
        self.assertEqual(ua.events[-1].kind, "retry")
        self.successResultOf(registration.stop())
        self.assertEqual(clock.getDelayedCalls(), [])
        self.assertEqual(registration.state, "stopped")
