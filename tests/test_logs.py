# -*- test-case-name: tests.test_logs -*-
"""
Tests for L{sipdist.logs}: the log limiter and the rotated log file.
"""

import os

from twisted.internet.task import Clock
from twisted.logger import Logger, LogLevel, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from sipdist import logs
from sipdist.logs import LogLimiter
from sipdist.sip.transaction import TransactionLayer
from tests.test_transaction import FakeFlow, RecordingUser, makeRequest


class Captured:
    """
    Every event logged while it is installed.
    """

    def __init__(self, testCase):
        self.events = []
        globalLogPublisher.addObserver(self.events.append)
        testCase.addCleanup(globalLogPublisher.removeObserver,
                            self.events.append)

    def formats(self, text):
        return [e for e in self.events if text in e.get("log_format", "")]


class LimiterTests(SynchronousTestCase):
    """
    L{LogLimiter} lets C{burst} lines through per period, then one summary.
    """

    def test_burstThenSummary(self):
        """
        Past C{burst} events in a period, L{LogLimiter.allow} says no; the
        first event of the next period logs one summary line with the count
        held back.
        """
        clock = Clock()
        captured = Captured(self)
        limiter = LogLimiter(clock, burst=3, period=10.0,
                             log=Logger(namespace="test"), what="things")
        allowed = [limiter.allow() for _ in range(10)]
        self.assertEqual(allowed, [0, 0, 0] + [None] * 7)
        self.assertEqual(captured.formats("more not logged"), [])
        clock.advance(10)
        self.assertEqual(limiter.allow(), 0)
        [summary] = captured.formats("more not logged")
        self.assertEqual((summary["what"], summary["count"]), ("things", 7))
        self.assertEqual(summary["log_level"], LogLevel.warn)
        self.assertEqual(limiter.total, 7)

    def test_countWithoutLog(self):
        """
        Without a logger, the count held back comes with the next line
        allowed.
        """
        clock = Clock()
        limiter = LogLimiter(clock, burst=1, period=5.0)
        self.assertEqual(limiter.allow(), 0)
        self.assertIsNone(limiter.allow())
        self.assertIsNone(limiter.allow())
        clock.advance(5)
        self.assertEqual(limiter.allow(), 2)


class OverloadTests(SynchronousTestCase):
    """
    Lines overload multiplies are bounded.
    """

    def test_unansweredInvites(self):
        """
        INVITEs the user never answers are logged at most 20 times per
        period however many there are.
        """
        clock = Clock()
        captured = Captured(self)
        user = RecordingUser()
        layer = TransactionLayer(clock, user, inviteTimeout=5.0)
        flow = FakeFlow(clock)
        for _ in range(200):
            layer.messageReceived(makeRequest("INVITE"), flow)
        clock.advance(6)
        self.assertEqual(
            len(captured.formats("from the user in time")), 20)
        self.assertEqual(layer.timeoutLog.total, 180)


class RotatingLogFileTests(SynchronousTestCase):
    """
    L{logs.useRotatingLogFile} makes twistd log through a L{LogFile} that
    keeps a bounded number of rotated files.
    """

    def setUp(self):
        self.addCleanup(setattr, logs, "_logFile", logs._logFile)

    def test_chosen(self):
        """
        With a C{--logfile}, twistd's C{--logger} is set to
        L{logs.rotatingLogObserver}, which writes to that file and keeps
        C{keep} rotated files at most.
        """
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        path = os.path.join(directory, "server.log")
        options = {"logfile": path, "logger": None, "syslog": False,
                   "nodaemon": True}
        self.assertEqual(logs.useRotatingLogFile(options, keep=2,
                                                 rotateLength=100), path)
        self.assertEqual(options["logger"], "sipdist.logs.rotatingLogObserver")
        from twisted.python.reflect import namedAny
        observer = namedAny(options["logger"])()
        log = Logger(observer=observer)
        for i in range(50):
            log.info("line {i} of the test log", i=i)
        observer._outFile.close()
        names = sorted(os.listdir(directory))
        self.assertEqual(names, ["server.log", "server.log.1", "server.log.2"])
        with open(path) as f:
            self.assertIn("line 49 of the test log", f.read())

    def test_leftAlone(self):
        """
        Logging to standard output, to syslog or through the operator's own
        C{--logger} is left alone.
        """
        for options in ({"logfile": "-", "nodaemon": True},
                        {"logfile": None, "nodaemon": True},
                        {"logfile": "x.log", "syslog": True},
                        {"logfile": "x.log", "logger": "my.observer"}):
            before = dict(options)
            self.assertIsNone(logs.useRotatingLogFile(options))
            self.assertEqual(options, before)
