# -*- test-case-name: tests.test_overload -*-
"""
Tests for L{sipdist.sip.overload}: when the transaction layer sheds new
requests with a stateless 503, and what it never sheds; driven by a
L{task.Clock}.
"""

import gc
import socket
import weakref

from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import Logger, globalLogPublisher
from twisted.trial.unittest import SkipTest, SynchronousTestCase

from sipdist.logs import LogLimiter
from sipdist.sip.message import parseMessage, responseTo
from sipdist.sip import overload
from sipdist.sip.overload import OverloadControl
from sipdist.sip.transaction import TransactionLayer
from sipdist.sip.transport import SIPDatagramProtocol, TransportLayer
from tests.test_transaction import FakeFlow, RecordingUser, makeRequest


class OverloadControlTests(SynchronousTestCase):
    """
    L{OverloadControl} with a L{TransactionLayer} whose user answers 200.
    """

    def setUp(self):
        self.clock = Clock()
        self.user = RecordingUser(answer=200)
        self.layer = TransactionLayer(self.clock, self.user)
        self.trimmed = []
        self.control = OverloadControl(
            self.clock, self.layer, maxLag=0.1, maxTransactions=3,
            interval=0.05, hold=1.0, retryAfter=7, minRate=0.0, minLoad=0.0,
            trim=lambda: self.trimmed.append(True))
        self.control.startService()
        self.addCleanup(self.control.stopService)
        self.flow = FakeFlow(self.clock)

    def overload(self):
        """
        Six reactor turns of 0.5 s in a row (the timer fires that late):
        shedding, and with the admitted rate set to 0 every new request is
        shed.
        """
        self.clock.pump([0.5] * 6)
        self.assertTrue(self.control.shedding)
        self.control.limit(0.0)

    def send(self, request):
        self.layer.messageReceived(request, self.flow)
        return self.flow.messages()[-1]

    def test_normal(self):
        """
        Timers on time and few transactions: nothing is shed.
        """
        for _ in range(10):
            self.clock.advance(0.05)
        self.assertFalse(self.control.shedding)
        self.assertEqual(self.send(makeRequest("REGISTER")).code, 200)
        self.assertEqual(len(self.user.requests), 1)

    def cpuControl(self, share):
        """
        A control of the same layer measuring a CPU clock that advances by
        C{share} of the reactor's time (the process's use of a core).
        """
        self.control.stopService()
        start = self.clock.seconds()
        control = OverloadControl(
            self.clock, self.layer, maxLag=0.1, interval=0.05, minRate=0.0,
            minLoad=0.0, trim=None, minBusy=0.5,
            cpu=lambda: (self.clock.seconds() - start) * share)
        control.startService()
        self.addCleanup(control.stopService)
        return control

    def test_lagOfStarvedProcess(self):
        """
        With its CPU time measured, a process late while it used a tenth of
        a core (others had the CPU) does not take its lag for overload:
        shedding its requests would not give it the CPU back.
        """
        control = self.cpuControl(0.1)
        self.clock.pump([0.5] * 6)
        self.assertFalse(control.shedding)
        self.assertAlmostEqual(control.busy, 0.1)
        self.assertEqual(control.stats()["busy"], 0.1)

    def test_lagOfBusyProcess(self):
        """
        The same lag while the process used most of a core is overload.
        """
        control = self.cpuControl(0.9)
        self.clock.pump([0.5] * 6)
        self.assertTrue(control.shedding)

    def test_lagShedsStatelessly(self):
        """
        Past the lag threshold a new REGISTER or INVITE gets a 503 with the
        Retry-After, and no transaction is created nor the user called.
        """
        self.overload()
        for method in ("REGISTER", "INVITE", "SUBSCRIBE", "MESSAGE"):
            response = self.send(makeRequest(method))
            self.assertEqual((response.code, response.header("retry-after")),
                             (503, "7"), method)
        self.assertEqual(self.user.requests, [])
        self.assertEqual(self.layer.active, 0)
        self.assertEqual(self.control.shed, 4)
        self.assertEqual(self.layer.stats()["overload"]["shed"], 4)

    def test_neverShed(self):
        """
        OPTIONS (the monitor's health check), CANCEL, ACK and requests in a
        dialog (To tag) reach the user while shedding.
        """
        self.overload()
        self.assertEqual(self.send(makeRequest("OPTIONS")).code, 200)
        self.assertEqual(self.send(makeRequest("BYE", toTag="t1")).code, 200)
        self.assertEqual(
            self.send(makeRequest("INVITE", toTag="t2", callID="re")).code,
            200)
        self.send(makeRequest("CANCEL"))
        self.layer.messageReceived(makeRequest("ACK", toTag="t3"), self.flow)
        self.assertEqual([r.method for r, _ in self.user.requests],
                         ["OPTIONS", "BYE", "INVITE"])
        self.assertEqual(len(self.user.cancels), 1)
        self.assertEqual(len(self.user.acks), 1)
        self.assertEqual(self.control.shed, 0)

    def test_transactionInProgressFinishes(self):
        """
        A retransmission of a request admitted before the overload matches
        its transaction and is absorbed, and the transaction is answered.
        """
        self.user.answer = None
        request = makeRequest("REGISTER", branch="z9hG4bKadmitted")
        self.layer.messageReceived(request, self.flow)
        self.overload()
        self.layer.messageReceived(
            makeRequest("REGISTER", branch="z9hG4bKadmitted"), self.flow)
        self.assertEqual(self.control.shed, 0)
        _, transaction = self.user.requests[0]
        transaction.respond(responseTo(request, 200))
        self.assertEqual(self.flow.messages()[-1].code, 200)

    def test_transactionsInProgress(self):
        """
        More transactions waiting for their final response than
        C{maxTransactions} sheds; completed ones waiting for
        retransmissions do not count.
        """
        self.user.answer = None
        for i in range(3):
            self.layer.messageReceived(makeRequest("REGISTER"), self.flow)
        self.clock.pump([0.05] * 3)
        self.assertFalse(self.control.shedding)
        self.layer.messageReceived(makeRequest("REGISTER"), self.flow)
        self.clock.pump([0.05] * 3)
        self.assertTrue(self.control.shedding)
        for request, transaction in self.user.requests:
            transaction.respond(responseTo(request, 200))
        self.assertEqual(self.layer.inProgress(), 0)
        self.assertEqual(self.layer.active, 4)

    def test_oneSlowTurn(self):
        """
        Two slow reactor turns in a row are not an overload.
        """
        self.clock.pump([0.5, 0.5, 0.05, 0.5, 0.5, 0.05])
        self.assertFalse(self.control.shedding)
        self.assertEqual(self.send(makeRequest("REGISTER")).code, 200)

    def test_backlog(self):
        """
        Datagrams waiting in the UDP receive buffers above C{maxBacklog}
        three times in a row shed, even with the timers on time.
        """
        queued = [(1000, 1000000)]
        transport = type("Transport", (), {
            "receiveQueued": lambda self: queued[0]})()
        control = OverloadControl(self.clock, self.layer, transport=transport,
                                  maxBacklog=5000, trim=None)
        control.startService()
        self.addCleanup(control.stopService)
        self.clock.pump([0.05] * 5)
        self.assertFalse(control.shedding)
        queued[0] = (6000, 1000000)
        self.clock.pump([0.05] * 3)
        self.assertTrue(control.shedding)
        self.assertEqual(control.stats()["backlog"], 6000)
        queued[0] = (0, 1000000)
        self.clock.pump([0.05] * 60)
        self.assertFalse(control.shedding)

    def test_backlogDraining(self):
        """
        A backlog over C{maxBacklog} that is smaller by a quarter of it or
        more than at the last measurement (the process drains what a pause
        left) neither counts towards the measurements in a row nor breaks
        them; one that stays counts.
        """
        control, queued = self.queueControl()
        self.clock.pump([0.05] * 5)

        def measure(*backlogs):
            for backlog in backlogs:
                queued[0] = (backlog, 1000000)
                self.clock.advance(0.05)

        # The first counts; the next three drain.
        measure(40000, 30000, 20000, 10000)
        self.assertFalse(control.shedding)
        self.assertEqual(control.pressure, 10000 / 5000)
        # Less than a quarter of the threshold less: the second in a row.
        measure(10000 - 1249)
        self.assertFalse(control.shedding)
        measure(20000)
        self.assertTrue(control.shedding)

    def test_backlogDrainingLate(self):
        """
        A backlog that drains does not hide a late event loop: the lag
        counts as before.
        """
        control, queued = self.queueControl()
        control.minLoad = 0.0
        self.clock.pump([0.05] * 5)
        for backlog in (40000, 30000, 20000):
            queued[0] = (backlog, 1000000)
            self.clock.advance(0.05 + 0.25)
        self.assertTrue(control.shedding)

    def test_backlogHalfBuffer(self):
        """
        A backlog of half the receive buffers starts shedding at the first
        measurement: they would overflow while the control waits for two
        more.  Less than half (here eight times C{maxBacklog}) waits.
        """
        control, queued = self.queueControl()
        self.clock.pump([0.05] * 5)
        queued[0] = (40000, 100000)
        self.clock.advance(0.05)
        self.assertFalse(control.shedding)
        queued[0] = (0, 100000)
        self.clock.pump([0.05] * 3)
        queued[0] = (50000, 100000)
        self.clock.advance(0.05)
        self.assertTrue(control.shedding)

    def test_noDatagramPort(self):
        """
        A server without a UDP port (no receive buffer: C{(0, 0)}) has no
        backlog to start shedding at once for: one slow reactor turn is
        still not an overload.
        """
        control, queued = self.queueControl()
        control.minLoad = 0.0
        queued[0] = (0, 0)
        self.clock.pump([0.05] * 5)
        self.clock.advance(0.05 + 0.25)
        self.assertFalse(control.shedding)
        self.clock.pump([0.05] * 2 + [0.05 + 0.25])
        self.assertFalse(control.shedding)

    def compilingControl(self):
        """
        A L{queueControl} that reads the machine code compiled from
        C{compiled[0]} (bytes, cumulative), at the default C{minCompiled}.

        @return: C{(control, queued, measure)}: C{measure(backlog,
            compiledNow)} sets the backlog and adds C{compiledNow} bytes,
            then lets one measurement run.
        """
        queued = [(0, 1000000)]
        compiled = [1000000]
        transport = type("Transport", (), {
            "receiveQueued": lambda self: queued[0]})()
        control = OverloadControl(self.clock, self.layer, transport=transport,
                                  maxBacklog=5000, minRate=0.0, trim=None,
                                  compiled=lambda: compiled[0])
        control.startService()
        self.addCleanup(control.stopService)
        self.clock.pump([0.05] * 5)

        def measure(backlog, compiledNow=0, step=0.05):
            queued[0] = (backlog, 1000000)
            compiled[0] += compiledNow
            self.clock.advance(step)

        return control, queued, measure

    def test_compilePause(self):
        """
        A measurement above a threshold after which the JIT compiled at
        least C{minCompiled} bytes (16 KB by default) is a compile pause:
        it neither counts towards the measurements in a row nor breaks
        them, and is counted in C{compilePauses}.
        """
        control, queued, measure = self.compilingControl()
        self.assertEqual(control.minCompiled, 16384)
        measure(40000, 16384)
        measure(50000, 40000)
        measure(60000, 20000)
        self.assertFalse(control.shedding)
        self.assertEqual(control.compilePauses, 3)
        self.assertEqual(control.stats()["compile_pauses"], 3)
        # Then two without compiling: the run is 2 long, not broken.
        measure(60000)
        measure(60000)
        self.assertFalse(control.shedding)
        measure(60000, 16384)
        self.assertFalse(control.shedding)
        measure(60000)
        self.assertTrue(control.shedding)

    def test_compilePauseLate(self):
        """
        A compile pause hides a late event loop too.
        """
        control, queued, measure = self.compilingControl()
        control.minLoad = 0.0
        for _ in range(5):
            measure(0, 50000, 0.05 + 0.25)
        self.assertFalse(control.shedding)
        self.assertEqual(control.compilePauses, 5)
        for _ in range(3):
            measure(0, 0, 0.05 + 0.25)
        self.assertTrue(control.shedding)

    def test_compilePauseShedding(self):
        """
        While shedding, a compile pause does not lower the rate admitted,
        however the backlog rises; a measurement that rises without one
        does.
        """
        control, queued, measure = self.compilingControl()
        control.limit(1000.0)
        measure(40000, 50000)
        measure(80000, 50000)
        self.assertEqual(control.admitRate, 1000.0)
        measure(160000)
        self.assertEqual(control.admitRate, 900.0)

    def test_compiledLittle(self):
        """
        Less than C{minCompiled} bytes compiled since the last measurement
        (the small bridges of a server long warm) is not a pause: the
        measurement counts.
        """
        control, queued, measure = self.compilingControl()
        for _ in range(3):
            measure(40000, 16383)
        self.assertTrue(control.shedding)
        self.assertEqual(control.compilePauses, 0)

    def test_compilingBelowThreshold(self):
        """
        Compiling below every threshold is not a pause either (nothing to
        excuse): it is not counted.
        """
        control, queued, measure = self.compilingControl()
        measure(1000, 50000)
        self.assertEqual(control.compilePauses, 0)
        self.assertFalse(control.shedding)

    def test_compilingHalfBuffer(self):
        """
        A backlog of half the receive buffers starts shedding at once,
        compiling or not.
        """
        control, queued, measure = self.compilingControl()
        measure(500000, 50000)
        self.assertTrue(control.shedding)

    def test_compiledNotMeasured(self):
        """
        Without C{compiled} (CPython: no JIT) nothing is excused and no
        pause counted.
        """
        control, queued = self.queueControl()
        self.clock.pump([0.05] * 5)
        for _ in range(3):
            queued[0] = (40000, 1000000)
            self.clock.advance(0.05)
        self.assertTrue(control.shedding)
        self.assertEqual(control.stats()["compile_pauses"], 0)

    def test_startRate(self):
        """
        Shedding starts by admitting 90% of the rate at which the process
        created transactions while it fell behind.
        """
        for _ in range(40):
            for _ in range(5):
                self.send(makeRequest("OPTIONS"))
            self.clock.advance(0.05)
        self.clock.pump([0.5] * 3)
        self.assertTrue(self.control.shedding)
        # 100/s for 2 s, then nothing for 1.5 s, smoothed.
        self.assertTrue(0 < self.control.admitRate < 90,
                        self.control.admitRate)

    def test_admitRate(self):
        """
        While shedding, new requests are admitted at C{admitRate} per
        second and the rest get 503.
        """
        control = OverloadControl(self.clock, self.layer, minRate=0.0,
                                  trim=None)
        control.limit(10.0)
        codes = []
        for _ in range(200):
            self.clock.advance(0.01)
            codes.append(self.send(makeRequest("REGISTER")).code)
        self.assertIn(codes.count(200), range(19, 22))
        self.assertEqual(codes.count(200) + codes.count(503), 200)
        self.assertEqual(control.shed, codes.count(503))

    def herd(self, control, perTurn, turns):
        """
        C{perTurn} new REGISTERs every 0.05 s for C{turns} turns.

        @return: the C{Retry-After} values of the 503s, in order.
        """
        values = []
        for _ in range(turns):
            for _ in range(perTurn):
                response = self.send(makeRequest("REGISTER"))
                if response.code == 503:
                    values.append(int(response.header("retry-after")))
            self.clock.advance(0.05)
        return values

    def spreadControl(self, rate, **kwargs):
        """
        A control shedding what comes beyond C{rate} per second, that rate
        kept (no lag counts, no increase), C{Retry-After: 2} and up.
        """
        control = OverloadControl(self.clock, self.layer, interval=0.05,
                                  minRate=0.0, increase=0.0, retryAfter=2,
                                  trim=None, maxLag=1e9, **kwargs)
        control.startService()
        self.addCleanup(control.stopService)
        control.limit(rate)
        return control

    def test_retryAfterSpread(self):
        """
        Shedding many more requests per second than it admits, the control
        spreads their C{Retry-After} values from C{retryAfter} up, over as
        many seconds as the admitted rate needs to take them back (here
        2,000 shed per second for 100 admitted: 20 seconds), in turn.
        """
        control = self.spreadControl(100.0, hold=60.0)
        self.assertEqual(self.herd(control, 105, 1)[0], 2)
        self.herd(control, 105, 40)
        self.assertEqual(control.spread, 19)
        self.assertEqual(control.stats()["retry_spread"], 19)
        values = self.herd(control, 105, 1)
        self.assertEqual(sorted(set(values)), list(range(2, 22)))
        self.assertEqual(values[:3], [2 + (control.shed - len(values) + i)
                                      % 20 for i in range(1, 4)])

    def test_retryAfterSpreadBounded(self):
        """
        The spread is at most C{maxSpread} seconds.
        """
        control = self.spreadControl(10.0, hold=60.0, maxSpread=5)
        self.herd(control, 50, 40)
        self.assertEqual(control.spread, 5)
        self.assertEqual(set(self.herd(control, 50, 1)), set(range(2, 8)))

    def test_retryAfterSpreadEnds(self):
        """
        Once shedding stops, the next overload starts from C{retryAfter}
        alone, until its own measurements say otherwise.
        """
        control = self.spreadControl(10.0, hold=0.5)
        self.herd(control, 50, 40)
        self.assertGreater(control.spread, 0)
        self.clock.pump([0.05] * 40)
        self.assertFalse(control.shedding)
        self.assertEqual(control.spread, 0)
        control.limit(0.0)
        self.assertEqual(self.herd(control, 3, 1), [2, 2, 2])

    def test_credentialsFirst(self):
        """
        When the admitted rate is used up, a request with credentials (the
        second step of a login whose challenge was paid for) may borrow
        ahead, up to a bucket's worth (10 requests at least); one without
        is shed.
        """
        control = OverloadControl(self.clock, self.layer, minRate=0.0,
                                  trim=None)
        control.limit(0.0)
        self.assertEqual(self.send(makeRequest("REGISTER")).code, 503)
        codes = []
        for _ in range(11):
            withCredentials = makeRequest("REGISTER")
            withCredentials.headers["authorization"] = ['Digest username="a"']
            codes.append(self.send(withCredentials).code)
        self.assertEqual(codes, [200] * 10 + [503])

    def test_lagWithoutLoad(self):
        """
        A late timer while few requests come (the machine is busy with
        something else) is not an overload: shedding would not help.
        """
        control = OverloadControl(self.clock, self.layer, maxLag=0.1,
                                  minLoad=50.0, trim=None)
        control.startService()
        self.addCleanup(control.stopService)
        for _ in range(6):
            self.send(makeRequest("REGISTER"))
            self.clock.advance(0.5)
        self.assertFalse(control.shedding)
        for _ in range(6):
            for _ in range(100):
                self.send(makeRequest("REGISTER"))
            self.clock.advance(0.5)
        self.assertTrue(control.shedding)

    def queueControl(self):
        """
        A started control fed by a fake transport whose receive queue the
        test sets: C{queued[0]} is C{(bytes waiting, buffer size)}.

        @return: C{(control, queued)}.
        """
        queued = [(0, 1000000)]
        transport = type("Transport", (), {
            "receiveQueued": lambda self: queued[0]})()
        control = OverloadControl(self.clock, self.layer, transport=transport,
                                  maxBacklog=5000, minRate=0.0, trim=None)
        control.startService()
        self.addCleanup(control.stopService)
        return control, queued

    def backlogControl(self):
        """
        A L{queueControl} shedding at 100 requests/s.
        """
        control, queued = self.queueControl()
        control.limit(100.0)

        def measure(backlog, step=0.05):
            queued[0] = (backlog, 1000000)
            self.clock.advance(step)
            return control.admitRate

        return control, measure

    def test_rising(self):
        """
        A measurement above a threshold while the measurements rise
        lowers the admitted rate by the factor C{decrease}.
        """
        control, measure = self.backlogControl()
        self.assertAlmostEqual(measure(6000), 90.0)
        self.assertAlmostEqual(measure(7000), 81.0)

    def test_falling(self):
        """
        Measurements above a threshold but falling keep the admitted rate:
        the queue drains already.
        """
        control, measure = self.backlogControl()
        for _ in range(10):
            rate = measure(9000)
        self.assertAlmostEqual(rate, 100.0 * 0.9 ** 10)
        self.assertAlmostEqual(measure(6000), rate)
        self.assertAlmostEqual(measure(5500), rate)

    def test_below(self):
        """
        Below every threshold the admitted rate grows by the fraction
        C{increase} (three times that below half of every threshold) when
        it held requests back since the last measurement, and stays when
        it did not.
        """
        control, measure = self.backlogControl()
        self.clock.advance(0.04)
        codes = [self.send(makeRequest("REGISTER")).code for _ in range(5)]
        self.assertEqual(codes, [200] * 4 + [503])
        self.assertAlmostEqual(measure(4000, 0.01), 103.0)
        self.clock.advance(0.04)
        codes = [self.send(makeRequest("REGISTER")).code for _ in range(4)]
        self.assertEqual(codes, [200] * 4)
        self.assertAlmostEqual(measure(1000, 0.011), 103.0)
        self.clock.advance(0.03)
        codes = [self.send(makeRequest("REGISTER")).code for _ in range(12)]
        self.assertIn(503, codes)
        self.assertAlmostEqual(measure(1000, 0.02), 103.0 * 1.09)

    def test_measureInLongTurn(self):
        """
        Datagrams read in a reactor turn that lasts beyond the timer are
        measured every 32 of them: shedding starts within the turn.
        """
        control, queued = self.queueControl()
        # The reactor is in one long turn: the clock moves, the timer does
        # not fire, the receive buffer fills.
        self.clock.rightNow += 0.2
        queued[0] = (500000, 1000000)
        protocol = FakeProtocol()
        for _ in range(64):
            control.shedDatagram(protocol, makeRequest("REGISTER").toBytes(),
                                 ("192.0.2.9", 5060))
        self.assertTrue(control.shedding)
        self.assertEqual(len(protocol.sent), 33)

    def test_hold(self):
        """
        Once the measurements are normal again, the fraction shed falls
        back to 0 within C{hold} seconds, then new requests are served
        again.
        """
        self.overload()
        self.assertEqual(self.send(makeRequest("REGISTER")).code, 503)
        self.clock.pump([0.05] * 10)
        self.assertTrue(self.control.shedding)
        self.clock.pump([0.05] * 12)
        self.assertFalse(self.control.shedding)
        self.assertIsNone(self.control.stats()["admit_rate"])
        self.assertEqual(self.send(makeRequest("REGISTER")).code, 200)
        self.assertEqual(self.control.episodes, 1)

    def test_compactAfterLoad(self):
        """
        Once the completed records of a load have expired, the table is
        rebuilt and the allocator asked to give memory back, once.
        """
        for i in range(100):
            self.layer.messageReceived(makeRequest("REGISTER"), self.flow)
        self.clock.advance(0.05)
        self.assertEqual(self.trimmed, [])
        before = self.layer._servers
        self.clock.pump([0.05] * 800)
        self.assertEqual(self.layer.active, 0)
        self.assertIsNot(self.layer._servers, before)
        self.assertEqual(self.trimmed, [True])

    def test_giveBackCollects(self):
        """
        The default memory give-back after a load runs a full garbage
        collection (which also empties the interpreter's free lists, whose
        blocks keep the arenas of a peak) before C{malloc_trim}: garbage
        in a reference cycle is gone after it.
        """
        class Cyclic:
            pass

        enabled = gc.isenabled()
        gc.disable()
        if enabled:
            self.addCleanup(gc.enable)
        cyclic = Cyclic()
        cyclic.self = cyclic
        ref = weakref.ref(cyclic)
        del cyclic
        self.assertIsNotNone(ref())
        overload._mallocTrim()()
        self.assertIsNone(ref())

    def test_stop(self):
        """
        Stopping the service stops its timer.
        """
        self.control.stopService()
        self.assertEqual(self.clock.getDelayedCalls(), [])


class SummaryTests(SynchronousTestCase):
    """
    The summary line L{OverloadControl} logs every C{report} seconds while
    shedding or while a log limiter it watches holds lines back.
    """

    def setUp(self):
        self.clock = Clock()
        self.layer = TransactionLayer(self.clock, RecordingUser(answer=200))
        self.control = OverloadControl(self.clock, self.layer, report=10.0,
                                       minRate=0.0, trim=None)
        self.control.startService()
        self.addCleanup(self.control.stopService)
        self.events = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)
        self.flow = FakeFlow(self.clock)

    def summaries(self):
        return [e for e in self.events
                if e.get("log_format", "").startswith("overload in the last")]

    def test_quiet(self):
        """
        Without overload nor lines held back, no summary and no timer but
        the measurements'.
        """
        self.clock.pump([0.05] * 400)
        self.assertEqual(self.summaries(), [])
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)

    def test_whileShedding(self):
        """
        While shedding, one line per period counts the requests shed in
        it, whatever their number; a period without any ends the lines.
        """
        self.control.limit(0.0)
        for _ in range(500):
            self.layer.messageReceived(makeRequest("REGISTER"), self.flow)
        self.clock.pump([0.05] * 201)
        [first] = self.summaries()
        self.assertEqual((first["shed"], first["period"]), (500, 10.0))
        self.assertFalse(self.control.shedding)
        self.control.limit(0.0)
        self.layer.messageReceived(makeRequest("REGISTER"), self.flow)
        self.clock.pump([0.05] * 200)
        self.assertEqual([e["shed"] for e in self.summaries()], [500, 1])
        self.assertFalse(self.control.shedding)
        self.clock.pump([0.05] * 400)
        self.assertEqual(len(self.summaries()), 2)
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)

    def test_heldLines(self):
        """
        Lines a watched limiter holds back are counted in the summary (not
        in a line of the limiter's own at its next event), without any
        shedding.
        """
        limiter = LogLimiter(self.clock, burst=1, period=10.0,
                             log=Logger(), what="things failed")
        self.control.watch(limiter)
        for _ in range(5):
            limiter.allow()
        self.clock.pump([0.05] * 201)
        [summary] = self.summaries()
        self.assertEqual((summary["shed"], summary["held"]),
                         (0, "4 things failed"))
        self.assertEqual(limiter.allow(), 0)
        self.assertEqual(
            [e for e in self.events
             if "more not logged" in e.get("log_format", "")], [])

    def test_transactionLimiters(self):
        """
        The transaction layer's limiters (timeouts, 503s) are watched.
        """
        self.assertIn(self.layer.timeoutLog, self.control._limiters)
        self.assertIn(self.layer.rejectLog, self.control._limiters)

    def test_stop(self):
        """
        Stopping the service cancels the summary timer.
        """
        self.control.limit(0.0)
        self.clock.advance(0.05)
        self.control.stopService()
        self.assertEqual(self.clock.getDelayedCalls(), [])


class FakeProtocol:
    """
    A UDP protocol recording what it sends.
    """

    def __init__(self):
        self.sent = []

    def sendBytes(self, data, addr):
        self.sent.append((data, addr))
        return True

    sendSoon = sendBytes


class ShedDatagramTests(SynchronousTestCase):
    """
    L{OverloadControl.shedDatagram}: the 503 of a datagram not parsed.
    """

    def setUp(self):
        self.clock = Clock()
        self.user = RecordingUser()
        self.layer = TransactionLayer(self.clock, self.user)
        self.control = OverloadControl(self.clock, self.layer, retryAfter=7,
                                       minRate=0.0, trim=None)
        self.control.limit(0.0)
        self.protocol = FakeProtocol()

    def shed(self, request, addr=("192.0.2.9", 5060)):
        return self.control.shedDatagram(self.protocol, request.toBytes(),
                                         addr)

    def test_shed(self):
        """
        A new REGISTER gets a 503 that copies Via, From, Call-ID and CSeq,
        adds a To tag and Retry-After, and goes to the source address;
        no transaction is created.
        """
        request = makeRequest("REGISTER")
        self.assertTrue(self.shed(request))
        [(data, addr)] = self.protocol.sent
        self.assertEqual(addr, ("192.0.2.9", 5060))
        response = parseMessage(data)
        self.assertEqual((response.code, response.header("retry-after")),
                         (503, "7"))
        for name in ("from", "call-id", "cseq"):
            self.assertEqual(response.header(name), request.header(name))
        self.assertIn(";tag=", response.header("to"))
        vias = response.headers["via"]
        self.assertEqual(len(vias), 2)
        self.assertIn("received=192.0.2.9", vias[0])
        self.assertEqual(response.topVia().branch, request.topVia().branch)
        self.assertEqual((self.layer.active, self.control.shed), (0, 1))

    def test_otherPort(self):
        """
        Without rport, a request whose Via names another port than the one
        it came from is left to the full path (which answers at the Via's
        port): the byte-level 503 goes only to the source address.
        """
        self.assertFalse(self.shed(makeRequest("REGISTER"),
                                   ("192.0.2.9", 40000)))
        self.assertEqual(self.protocol.sent, [])

    def test_rport(self):
        """
        With rport, the 503 goes to the source address and port.
        """
        data = makeRequest("INVITE").toBytes().replace(
            b";branch=", b";rport;branch=", 1)
        self.assertTrue(self.control.shedDatagram(
            self.protocol, data, ("192.0.2.9", 40000)))
        [(data, addr)] = self.protocol.sent
        self.assertEqual(addr, ("192.0.2.9", 40000))
        self.assertIn("rport=40000", parseMessage(data).headers["via"][0])

    def test_leftToFullPath(self):
        """
        OPTIONS, ACK, CANCEL, requests with a To tag, responses and
        retransmissions of a request in a transaction are not answered
        here.
        """
        self.user.answer = None
        admitted = makeRequest("REGISTER", branch="z9hG4bKadmitted")
        self.control.shedding = False
        self.layer.messageReceived(admitted, FakeFlow(self.clock))
        self.control.shedding = True
        for data in [makeRequest(m).toBytes()
                     for m in ("OPTIONS", "ACK", "CANCEL")] + [
                makeRequest("BYE", toTag="t").toBytes(),
                admitted.toBytes(),
                b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n"
                b"\r\n"]:
            self.assertFalse(self.control.shedDatagram(
                self.protocol, data, ("192.0.2.9", 5060)), data)
        self.assertEqual(self.protocol.sent, [])

    def test_credentials(self):
        """
        A request with credentials may borrow ahead from the bucket, one
        without may not; one admitted here is not counted again by the
        transaction layer.
        """
        data = makeRequest("REGISTER").toBytes().replace(
            b"Max-Forwards: 70\r\n",
            b"Max-Forwards: 70\r\nAuthorization: Digest username=\"a\"\r\n")
        self.assertTrue(self.shed(makeRequest("REGISTER")))
        self.assertFalse(self.control.shedDatagram(
            self.protocol, data, ("192.0.2.9", 5060)))
        self.assertFalse(self.control.shouldShed(parseMessage(data)))
        for _ in range(9):
            self.assertFalse(self.control.shouldShed(parseMessage(data)))
        self.assertTrue(self.control.shouldShed(parseMessage(data)))
        self.assertTrue(self.control.shedDatagram(
            self.protocol, data, ("192.0.2.9", 5060)))

    def test_tokenThereUnread(self):
        """
        While the bucket has a token, a datagram is admitted without being
        read; the token is taken when the request is served as a new one
        (L{OverloadControl.shouldShed}), and the admission is forgotten
        once the datagram has been handled.
        """
        self.control.limit(100.0)
        self.control._tokens = 2.0
        self.patch(overload, "_scan", lambda *args: self.fail("read"))
        request = makeRequest("REGISTER")
        self.assertFalse(self.shed(request))
        self.assertTrue(bool(self.control._admittedDatagram))
        self.assertEqual(self.control._tokens, 2.0)
        self.assertFalse(self.control.shouldShed(request))
        self.assertEqual((self.control._tokens, self.control._admitted),
                         (1.0, 1))
        self.assertFalse(bool(self.control._admittedDatagram))
        self.assertFalse(self.shed(makeRequest("OPTIONS")))
        self.control._datagramDone()
        self.assertFalse(bool(self.control._admittedDatagram))
        self.assertEqual(self.control._tokens, 1.0)

    def test_toldAfterEachDatagram(self):
        """
        The transport tells the control when it has handled each datagram
        the filter let through, shedding or not (one path through the
        transport either way), and an admission no path used (an
        C{OPTIONS}) is forgotten.
        """
        transport = TransportLayer(self.clock, self.layer)
        control = OverloadControl(self.clock, self.layer, transport=transport,
                                  minRate=0.0, trim=None, hold=1.0)
        self.assertEqual(transport.datagramDone, control._datagramDone)
        control.limit(100.0)
        self.clock.advance(1)
        done = []
        original = transport.datagramDone

        def datagramDone():
            done.append(bool(control._admittedDatagram))
            original()

        transport.datagramDone = datagramDone
        transport.datagramReceived(FakeProtocol(),
                                   makeRequest("OPTIONS").toBytes(),
                                   ("192.0.2.9", 5060))
        self.assertEqual(done, [True])
        self.assertFalse(control._admittedDatagram)
        control._control(self.clock.seconds() + 2, 0.0, False, 0)
        self.assertFalse(control.shedding)
        transport.datagramReceived(FakeProtocol(),
                                   makeRequest("OPTIONS").toBytes(),
                                   ("192.0.2.9", 5060))
        self.assertEqual(done, [True, False])

    def test_mayAnswerAhead(self):
        """
        A fast path may answer any datagram while the control does not
        shed; while it sheds, only one the filter admitted.
        """
        calm = OverloadControl(self.clock, TransactionLayer(
            self.clock, self.user), minRate=0.0, trim=None)
        self.assertTrue(calm.mayAnswerAhead())
        self.assertFalse(self.control.mayAnswerAhead())
        self.control._tokens = 2.0
        self.assertFalse(self.shed(makeRequest("REGISTER")))
        self.assertTrue(self.control.mayAnswerAhead())
        self.control.answeredAhead()
        self.assertFalse(self.control.mayAnswerAhead())
        self.assertEqual(self.control._tokens, 1.0)

    def test_namesBounded(self):
        """
        The header names it remembers stay bounded under a flood of
        distinct names, and each such request is still answered.
        """
        for i in range(2 * overload._MAX_NAMES):
            data = makeRequest("REGISTER", branch=f"z9hG4bKn{i}").toBytes()
            data = data.replace(b"Max-Forwards: 70\r\n",
                                b"Max-Forwards: 70\r\nX-N%d: 1\r\n" % i)
            self.assertTrue(self.control.shedDatagram(
                self.protocol, data, ("192.0.2.9", 5060)))
            self.assertLessEqual(len(overload._NAMES), overload._MAX_NAMES)
        self.assertEqual(len(self.protocol.sent), 2 * overload._MAX_NAMES)

    def test_notShedding(self):
        """
        Nothing is answered when not shedding.
        """
        self.control.shedding = False
        self.assertFalse(self.shed(makeRequest("REGISTER")))

    def test_transport(self):
        """
        The transport hands each datagram to the filter first.
        """
        transport = TransportLayer(self.clock, self.layer)
        OverloadControl(self.clock, self.layer, transport=transport,
                        minRate=0.0, trim=None)
        self.layer.overload.limit(0.0)
        protocol = FakeProtocol()
        transport.datagramReceived(protocol,
                                   makeRequest("REGISTER").toBytes(),
                                   ("192.0.2.9", 5060))
        self.assertEqual(len(protocol.sent), 1)
        self.assertEqual(self.user.requests, [])


class ReceiveQueuedTests(SynchronousTestCase):
    """
    L{TransportLayer.receiveQueued} and C{receiveBuffer} on real loopback
    UDP sockets.
    """

    def test_queued(self):
        """
        Datagrams nobody read yet are counted in bytes, with the size of
        the buffer.
        """
        layer = TransportLayer(Clock())
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(sock.close)
        sock.bind(("127.0.0.1", 0))
        protocol = SIPDatagramProtocol(layer, 0)
        protocol.transport = type("Port", (), {"socket": sock})()
        layer._datagram.append(protocol)
        queued = layer.receiveQueued()
        if queued is None:
            raise SkipTest("no SO_MEMINFO on this system")
        self.assertEqual(queued[0], 0)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
            for _ in range(10):
                sender.sendto(b"x" * 500, sock.getsockname())
        queued, size = layer.receiveQueued()
        self.assertGreaterEqual(queued, 5000)
        self.assertGreater(size, queued)

    def test_receiveBuffer(self):
        """
        A UDP port asks for C{receiveBuffer} bytes of receive buffer.
        """
        asked = []

        class Socket:
            def setsockopt(self, level, option, value):
                asked.append((level, option, value))

        class Port:
            socket = Socket()

            def getHost(self):
                return IPv4Address("UDP", "127.0.0.1", 5999)

        reactor = MemoryReactorClock()
        reactor.listenUDP = lambda *args, **kwargs: Port()
        layer = TransportLayer(reactor)
        layer.receiveBuffer = 1 << 20
        layer.listen("udp:0:interface=127.0.0.1")
        self.assertEqual(asked,
                         [(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)])
