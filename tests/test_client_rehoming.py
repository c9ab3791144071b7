"""
How the client's registration reacts when its home fails, on a L{Clock}:
the connection to the home lost, RFC 5626 keep-alives and the registrar's
C{Flow-Timer}, the re-login at the backup home after a random wait, the
randomised backoff and a C{503}'s C{Retry-After}.  The user agent's
C{send} is a scripted fake and its flows are small fakes; the signature
check is replaced by one that accepts exactly the backup the fake server
covered (the real signature is tested in C{tests.test_auth_client}).
"""

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from sipdist.client import login
from sipdist.client.core import Outcome, UserAgent
from sipdist.client.discovery import ServerLocator, Target
from sipdist.client.events import NoAnswer
from sipdist.client.login import Registration
from sipdist.sip.message import responseTo

HOME = Target("TCP", "192.0.2.1", 5060)
BACKUP = Target("TCP", "192.0.2.2", 5060)
BACKUP_VALUE = "<sip:192.0.2.2:5060;transport=tcp>"


class Upper:
    """
    Random draws at the top of their range (the longest wait).
    """

    def uniform(self, low, high):
        return high


class Lower:
    """
    Random draws at the bottom of their range (the shortest wait).
    """

    def uniform(self, low, high):
        return low


class FakeFlow:
    """
    A connection to a server: counts keep-alives, can be lost.
    """

    reliable = True
    transport = "TCP"

    def __init__(self, clock):
        self.clock = clock
        self.connected = True
        self.lastReceived = clock.seconds()
        self.pings = 0
        self.callbacks = []
        self.closed = False

    def addLostCallback(self, callback):
        if not self.connected:
            return False
        self.callbacks.append(callback)
        return True

    def removeLostCallback(self, callback):
        if callback in self.callbacks:
            self.callbacks.remove(callback)

    def sendKeepAlive(self):
        self.pings += 1
        return self.connected

    def pong(self):
        self.lastReceived = self.clock.seconds()

    def lose(self):
        self.connected = False
        callbacks, self.callbacks = self.callbacks, []
        for callback in callbacks:
            callback(self)

    def close(self):
        self.closed = True
        self.lose()


class Answer:
    """
    What the fake server answers: a status code and header fields; with
    C{backup}, a Sipdist-Backup (which L{fakeVerify} holds covered only
    when it is L{BACKUP_VALUE}).
    """

    def __init__(self, code=200, headers=(), backup=None):
        self.code = code
        self.headers = dict(headers)
        self.backup = backup


class ScriptedAgent(UserAgent):
    """
    A user agent whose requests get the answers in C{answers} (an
    L{Answer}, a status code, or an exception to fail with), in order, at
    once, each on a new L{FakeFlow} per server.
    """

    def __init__(self, clock, answers):
        UserAgent.__init__(self, clock, "alice@example.com", "pw",
                           observer=self.eventSeen)
        self.clock = clock
        self.answers = list(answers)
        self.sent = []
        self.events = []
        self.flows = {}

    def eventSeen(self, event):
        self.events.append(event)

    def kinds(self):
        return [e.kind for e in self.events]

    def flowTo(self, target):
        flow = self.flows.get(target)
        if flow is None or not flow.connected:
            flow = self.flows[target] = FakeFlow(self.clock)
        return flow

    def send(self, request, target, withContact=None, preemptive=True):
        self.sent.append((request, target))
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            return defer.fail(answer)
        if isinstance(answer, int):
            answer = Answer(answer)
        request.headers["contact"] = ["<sip:alice@192.0.2.9:5999>"]
        response = responseTo(request, answer.code)
        for name, value in answer.headers.items():
            response.headers[name.lower()] = [value]
        if answer.backup is not None:
            response.headers["sipdist-backup"] = [answer.backup]
        return defer.succeed(Outcome(response, object(), request,
                                     self.flowTo(target), target))


def fakeVerify(session, code, callId, cseq, contact, headers, backup=None):
    """
    The signature holds for the backup the fake server covered, or for
    none.
    """
    return backup is None or backup == fakeVerify.covered


class Locator(ServerLocator):
    """
    DNS: the backup's URI resolves to the backup, anything else to the
    home.
    """

    def __init__(self):
        pass

    def findServers(self, uri, transports=None):
        if uri.host == BACKUP.host:
            return defer.succeed([BACKUP])
        return defer.succeed([HOME])


class RehomingTests(SynchronousTestCase):
    """
    L{Registration}'s reaction to a failed home.
    """

    def setUp(self):
        fakeVerify.covered = BACKUP_VALUE
        self.patch(login, "verifySignature", fakeVerify)

    def registration(self, answers, **kw):
        clock = Clock()
        ua = ScriptedAgent(clock, answers)
        kw.setdefault("random", Upper())
        kw.setdefault("reloginJitter", 2.0)
        registration = Registration(ua, Locator(), expires=600, **kw)
        self.successResultOf(registration.start())
        return clock, ua, registration

    def test_connectionLostGoesToBackup(self):
        """
        When the connection to the home is lost the client logs in again
        after its random wait, not at its refresh: straight to the backup
        home the signed 200 named, and not before the wait is over.
        """
        clock, ua, registration = self.registration(
            [Answer(200, backup=BACKUP_VALUE), 200])
        self.assertEqual(registration.result.backup.host, BACKUP.host)
        ua.flows[HOME].lose()
        self.assertEqual(ua.kinds()[-1], "flow-failed")
        clock.advance(1.9)
        self.assertEqual(len(ua.sent), 1)
        clock.advance(0.1)
        self.assertEqual(len(ua.sent), 2)
        self.assertEqual(ua.sent[1][1], BACKUP)
        self.assertEqual(registration.state, "registered")
        self.assertEqual(registration.result.target, BACKUP)
        self.assertEqual(ua.outboundProxy, BACKUP)

    def test_forgedBackupNotUsed(self):
        """
        A backup the signature does not cover is not used: after the loss
        the client logs in from discovery.
        """
        clock, ua, registration = self.registration(
            [Answer(200, backup="<sip:192.0.2.66:5060>"), 200])
        self.assertIsNone(registration.result.backup)
        ua.flows[HOME].lose()
        clock.advance(2)
        self.assertEqual(ua.sent[1][1], HOME)

    def test_backupSilentFallsBackOnDiscovery(self):
        """
        A backup home that does not answer is left for the usual start
        (the configured server or DNS) within the same login.
        """
        clock, ua, registration = self.registration(
            [Answer(200, backup=BACKUP_VALUE), NoAnswer("silence"), 200])
        ua.flows[HOME].lose()
        clock.advance(2)
        self.assertEqual([t for _, t in ua.sent[1:]], [BACKUP, HOME])
        self.assertEqual(registration.state, "registered")

    def test_outboundSupported(self):
        """
        The REGISTER lists C{outbound} in C{Supported}, beside the
        redirect option tag, so that the registrar gives its Flow-Timer.
        """
        clock, ua, registration = self.registration([200])
        supported = ua.sent[0][0].header("supported").replace(" ", "")
        self.assertEqual(supported.split(","), ["sipdist-redirect",
                                                "outbound"])

    def test_keepAliveAtFlowTimer(self):
        """
        With a C{Flow-Timer} of 30 s, a ping goes out within 30 s (80 to
        100% of it), and an answered ping keeps the registration.
        """
        clock, ua, registration = self.registration(
            [Answer(200, {"Flow-Timer": "30"})])
        flow = ua.flows[HOME]
        clock.advance(29.9)
        self.assertEqual(flow.pings, 0)
        clock.advance(0.1)
        self.assertEqual(flow.pings, 1)
        clock.advance(1)
        flow.pong()
        clock.advance(9)
        self.assertEqual(registration.state, "registered")
        self.assertNotIn("flow-failed", ua.kinds())
        clock.advance(30)
        self.assertEqual(flow.pings, 2)

    def test_keepAliveDefault(self):
        """
        Without a C{Flow-Timer} the pings are 95 to 120 s apart (RFC 5626
        section 4.4.1).
        """
        clock, ua, registration = self.registration([200],
                                                    random=Lower())
        flow = ua.flows[HOME]
        clock.advance(94.9)
        self.assertEqual(flow.pings, 0)
        clock.advance(0.1)
        self.assertEqual(flow.pings, 1)

    def test_noPongIsAFailure(self):
        """
        A ping without a pong within the pong timeout is a flow failure:
        the connection is closed and the client logs in again at the
        backup after its random wait.
        """
        clock, ua, registration = self.registration(
            [Answer(200, {"Flow-Timer": "30"}, backup=BACKUP_VALUE), 200],
            pongTimeout=10)
        flow = ua.flows[HOME]
        clock.advance(30)
        self.assertEqual(flow.pings, 1)
        clock.advance(9.9)
        self.assertNotIn("flow-failed", ua.kinds())
        clock.advance(0.1)
        self.assertIn("flow-failed", ua.kinds())
        self.assertTrue(flow.closed)
        clock.advance(2)
        self.assertEqual(ua.sent[-1][1], BACKUP)
        self.assertEqual(registration.state, "registered")

    def test_pongReadAfterTheDeadlineTimer(self):
        """
        A pong that arrived by the deadline but is read only after the
        deadline's timer has fired (a process busy past the deadline: the
        reactor runs its timers before it reads) keeps the registration.
        """
        clock, ua, registration = self.registration(
            [Answer(200, {"Flow-Timer": "30"}, backup=BACKUP_VALUE)],
            pongTimeout=10)
        flow = ua.flows[HOME]
        clock.advance(30)
        self.assertEqual(flow.pings, 1)
        # Read in the same turn of the reactor, after the timer.
        clock.callLater(10, flow.pong)
        clock.advance(10)
        self.assertNotIn("flow-failed", ua.kinds())
        self.assertEqual(registration.state, "registered")
        self.assertFalse(flow.closed)
        clock.advance(30)
        self.assertEqual(flow.pings, 2)

    def test_noKeepAliveOnUDP(self):
        """
        A registration over UDP schedules no keep-alive on a connection:
        only the refresh is pending.
        """
        clock = Clock()
        ua = ScriptedAgent(clock, [200])
        ua.flowTo = lambda target: None
        registration = Registration(ua, Locator(), expires=600)
        self.successResultOf(registration.start())
        self.assertEqual(len(clock.getDelayedCalls()), 1)

    def test_backoffRandomisedAndCapped(self):
        """
        Failed logins in a row wait a random time between half the cap
        and the cap for their count, the last cap thereafter.
        """
        silence = NoAnswer("silence")
        clock, ua, registration = self.registration(
            [200] + [silence] * 5, retryDelays=(1, 2, 4), maxFailures=10,
            random=Lower())
        ua.flows[HOME].lose()
        clock.advance(0)
        delays = []
        for _ in range(4):
            delays.append(ua.events[-1].delay)
            clock.advance(ua.events[-1].delay)
        self.assertEqual(delays, [0.5, 1.0, 2.0, 2.0])

    def test_retryAfterWaited(self):
        """
        When every server of a login answers C{503} with C{Retry-After},
        the next login waits for it (not the shorter backoff), and not
        past C{maxRetryAfter}.
        """
        clock, ua, registration = self.registration(
            [Answer(200), Answer(503, {"Retry-After": "20"}), 200],
            retryDelays=(1,), random=Lower())
        ua.flows[HOME].lose()
        clock.advance(0)
        self.assertEqual(ua.kinds()[-1], "retry")
        self.assertEqual(ua.events[-1].delay, 20)
        clock.advance(19.9)
        self.assertEqual(len(ua.sent), 2)
        clock.advance(0.1)
        self.assertEqual(len(ua.sent), 3)
        self.assertEqual(registration.state, "registered")

    def test_retryAfterNotStackedOnBackoff(self):
        """
        After failures in a row have grown the backoff past a C{503}'s
        C{Retry-After}, the next login waits the C{Retry-After} (with up
        to 10% of jitter), not the longer backoff.
        """
        silence = NoAnswer("silence")
        clock, ua, registration = self.registration(
            [Answer(200), silence, silence,
             Answer(503, {"Retry-After": "2"}), 200],
            retryDelays=(1, 2, 30), random=Upper())
        ua.flows[HOME].lose()
        clock.advance(2)
        delays = []
        for _ in range(3):
            self.assertEqual(ua.kinds()[-1], "retry")
            delays.append(ua.events[-1].delay)
            clock.advance(ua.events[-1].delay)
        self.assertEqual([round(d, 6) for d in delays], [1, 2, 2.2])
        self.assertEqual(registration.state, "registered")

    def test_turnedAwayNotFailures(self):
        """
        Logins turned away with C{503} and C{Retry-After} are not failures
        counted against C{maxFailures}: past that many in a row the
        client still comes back as told, and registers.
        """
        busy = Answer(503, {"Retry-After": "2"})
        clock, ua, registration = self.registration(
            [Answer(200)] + [busy] * 5 + [200], maxFailures=3)
        ua.flows[HOME].lose()
        clock.advance(2)
        for _ in range(5):
            self.assertEqual(ua.kinds()[-1], "retry")
            clock.advance(ua.events[-1].delay)
        self.assertNotIn("failed", ua.kinds())
        self.assertEqual(registration.state, "registered")
        self.assertEqual(len(ua.sent), 7)

    def test_turnedAwayBounded(self):
        """
        A client turned away again and again gives up once the waits it
        was told would pass C{maxTurnedAway} seconds in all.
        """
        busy = Answer(503, {"Retry-After": "4"})
        clock, ua, registration = self.registration(
            [Answer(200)] + [busy] * 3, maxTurnedAway=10)
        ua.flows[HOME].lose()
        clock.advance(2)
        clock.advance(ua.events[-1].delay)
        clock.advance(ua.events[-1].delay)
        self.assertEqual(ua.kinds()[-1], "failed")
        self.assertEqual(registration.state, "failed")
        self.failureResultOf(registration.failed, login.LoginFailed)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_refresh503RetryAfterJittered(self):
        """
        A refresh answered C{503} with C{Retry-After} waits for it plus up
        to 10%, so that the clients turned away together come back
        spread.
        """
        self.assertRefreshWaits(Upper(), 33.0)

    def test_backup503Waits(self):
        """
        A backup that answers C{503} with C{Retry-After} (the store marks
        the old home down, its users not moved yet) is not bypassed for
        discovery: the client waits as told, then tries the backup again.
        """
        clock, ua, registration = self.registration(
            [Answer(200, backup=BACKUP_VALUE),
             Answer(503, {"Retry-After": "5"}), 200],
            retryDelays=(1,), random=Lower())
        ua.flows[HOME].lose()
        clock.advance(0)
        self.assertEqual([t for _, t in ua.sent[1:]], [BACKUP])
        clock.advance(5)
        self.assertEqual([t for _, t in ua.sent[1:]], [BACKUP, BACKUP])
        self.assertEqual(registration.result.target, BACKUP)

    def test_retryAfterBounded(self):
        """
        A Retry-After longer than C{maxRetryAfter} is cut to it.
        """
        clock, ua, registration = self.registration(
            [Answer(200), Answer(503, {"Retry-After": "86400"}), 200],
            retryDelays=(1,), random=Lower(), maxRetryAfter=60)
        ua.flows[HOME].lose()
        clock.advance(0)
        self.assertEqual(ua.events[-1].delay, 60)

    def test_refresh503RetryAfter(self):
        """
        A refresh answered C{503} with C{Retry-After} waits for it before
        logging in again.
        """
        registration = self.assertRefreshWaits(Lower(), 30.0)
        self.assertEqual(registration.state, "registered")

    def assertRefreshWaits(self, random, seconds):
        """
        A refresh (at 540 s) answered C{503} with C{Retry-After: 30} is
        sent again C{seconds} later, not before (C{random} picks the
        jitter).

        @return: the registration.
        """
        clock, ua, registration = self.registration(
            [200, Answer(503, {"Retry-After": "30"}), 200], keepAlive=False,
            random=random)
        clock.advance(540)
        self.assertEqual(len(ua.sent), 2)
        clock.advance(seconds - 0.1)
        self.assertEqual(len(ua.sent), 2)
        clock.advance(0.1)
        self.assertEqual(len(ua.sent), 3)
        return registration

    def test_stopDuringWait(self):
        """
        Stopping while the re-login waits for its random delay leaves no
        timer and sends nothing more.
        """
        clock, ua, registration = self.registration(
            [Answer(200, backup=BACKUP_VALUE)])
        ua.flows[HOME].lose()
        self.successResultOf(registration.stop())
        self.assertEqual(clock.getDelayedCalls(), [])
        self.assertEqual(len(ua.sent), 1)

    def test_stopCancelsKeepAlive(self):
        """
        Stopping cancels the keep-alive timer and forgets the flow.
        """
        clock, ua, registration = self.registration([200, 200])
        self.successResultOf(registration.stop())
        self.assertEqual(clock.getDelayedCalls(), [])
        self.assertEqual(ua.flows[HOME].callbacks, [])


class FakeDatagramFlow:
    """
    A UDP peer: counts STUN keep-alives; C{answer} stands for the peer's
    Binding response.
    """

    reliable = False
    transport = "UDP"

    def __init__(self, clock):
        self.clock = clock
        self.lastReceived = None
        self.sentAt = []

    def sendKeepAlive(self):
        self.sentAt.append(self.clock.seconds())
        return True

    def answer(self):
        self.lastReceived = self.clock.seconds()


class UDPKeepAliveTests(SynchronousTestCase):
    """
    Over UDP the keep-alive is a STUN Binding request, sent only when the
    registrar gave a C{Flow-Timer}.
    """

    def setUp(self):
        fakeVerify.covered = BACKUP_VALUE
        self.patch(login, "verifySignature", fakeVerify)

    def registration(self, answers):
        clock = Clock()
        ua = ScriptedAgent(clock, answers)
        flows = {}

        def flowTo(target):
            return flows.setdefault(target, FakeDatagramFlow(clock))

        ua.flowTo = flowTo
        registration = Registration(ua, Locator(), expires=600,
                                    random=Upper(), pongTimeout=10)
        self.successResultOf(registration.start())
        return clock, ua, registration, flows

    def test_noFlowTimerNoStun(self):
        """
        Without a Flow-Timer nothing is sent but the refresh.
        """
        clock, ua, registration, flows = self.registration([200])
        clock.advance(300)
        self.assertEqual(flows[HOME].sentAt, [])

    def test_answeredKeepsRegistration(self):
        """
        With a Flow-Timer of 20 s, a Binding request goes out after 20 s;
        answered, the next one 20 s later.
        """
        clock, ua, registration, flows = self.registration(
            [Answer(200, {"Flow-Timer": "20"})])
        flow = flows[HOME]
        clock.advance(20)
        self.assertEqual(flow.sentAt, [20])
        clock.advance(0.2)
        flow.answer()
        clock.advance(10)
        self.assertNotIn("flow-failed", ua.kinds())
        clock.advance(20)
        self.assertEqual(len(flow.sentAt), 2)

    def test_answerReadAfterTheDeadlineTimer(self):
        """
        A Binding response read only after the deadline's timer has fired
        (in the same turn of the reactor) keeps the registration.
        """
        clock, ua, registration, flows = self.registration(
            [Answer(200, {"Flow-Timer": "20"}, backup=BACKUP_VALUE), 200])
        flow = flows[HOME]
        clock.advance(20)
        for _ in range(19):
            clock.advance(0.5)
        clock.callLater(0.5, flow.answer)
        clock.advance(0.5)
        self.assertNotIn("flow-failed", ua.kinds())
        self.assertEqual(registration.state, "registered")

    def test_unansweredRetransmittedThenFailure(self):
        """
        An unanswered Binding request is sent again after 0.5, 1.5, 3.5
        and 7.5 s (RFC 5389 doubling); no answer within the pong timeout
        is a flow failure: the client logs in again at the backup.
        """
        clock, ua, registration, flows = self.registration(
            [Answer(200, {"Flow-Timer": "20"}, backup=BACKUP_VALUE), 200])
        flow = flows[HOME]
        clock.advance(20)
        for _ in range(20):
            clock.advance(0.5)
        self.assertEqual([t - 20 for t in flow.sentAt],
                         [0, 0.5, 1.5, 3.5, 7.5])
        self.assertIn("flow-failed", ua.kinds())
        clock.advance(2)
        self.assertEqual(ua.sent[-1][1], BACKUP)
        self.assertEqual(registration.state, "registered")
