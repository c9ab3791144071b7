# -*- test-case-name: tests.test_auth_limiter -*-
"""
Tests for L{sipdist.auth.limiter.FailureLimiter}.
"""

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from sipdist.auth.limiter import FailureLimiter


class FailureLimiterTests(SynchronousTestCase):
    """
    Failures are counted per user and per host within a window.
    """

    def setUp(self):
        self.clock = Clock()
        self.limiter = FailureLimiter(self.clock, threshold=3, window=60)

    def test_threshold(self):
        """
        A user is blocked once it reaches the threshold, until the window
        that began with its first failure ends; C{Retry-After} counts down.
        """
        for _ in range(2):
            self.limiter.failed("alice", "10.0.0.1")
        self.assertIsNone(self.limiter.userBlocked("alice"))
        self.clock.advance(10)
        self.limiter.failed("alice", "10.0.0.2")
        self.assertEqual(self.limiter.userBlocked("alice"), 50)
        self.assertIsNone(self.limiter.userBlocked("bob"))
        self.clock.advance(49.5)
        self.assertEqual(self.limiter.userBlocked("alice"), 1)
        self.clock.advance(0.5)
        self.assertIsNone(self.limiter.userBlocked("alice"))

    def test_host(self):
        """
        Failures for many users from one host block the host.
        """
        for name in ("a", "b", "c"):
            self.limiter.failed(name, "10.0.0.9")
        self.assertEqual(self.limiter.hostBlocked("10.0.0.9"), 60)
        self.assertIsNone(self.limiter.hostBlocked("10.0.0.8"))
        self.assertIsNone(self.limiter.userBlocked("a"))

    def test_hostThreshold(self):
        """
        The host threshold may differ from the user threshold.
        """
        limiter = FailureLimiter(self.clock, threshold=2, window=60,
                                 hostThreshold=5)
        for name in "abcd":
            limiter.failed(name, "nat")
        self.assertIsNone(limiter.hostBlocked("nat"))
        limiter.failed("e", "nat")
        self.assertIsNotNone(limiter.hostBlocked("nat"))

    def test_windowRestarts(self):
        """
        Failures in separate windows do not add up.
        """
        self.limiter.failed("alice", "h")
        self.limiter.failed("alice", "h")
        self.clock.advance(61)
        self.limiter.failed("alice", "h")
        self.assertIsNone(self.limiter.userBlocked("alice"))

    def test_success(self):
        """
        A success clears the user's count but not the host's.
        """
        self.limiter.failed("alice", "h")
        self.limiter.failed("alice", "h")
        self.limiter.succeeded("alice", "h")
        self.limiter.failed("alice", "h")
        self.assertIsNone(self.limiter.userBlocked("alice"))
        self.assertIsNotNone(self.limiter.hostBlocked("h"))

    def test_bounded(self):
        """
        Each table keeps at most C{maxKeys} keys, dropping the least
        recently failed one.
        """
        limiter = FailureLimiter(self.clock, threshold=1, window=60,
                                 maxKeys=2)
        for name in ("a", "b", "c"):
            limiter.failed(name, name)
        self.assertEqual(len(limiter._users), 2)
        self.assertEqual(len(limiter._hosts), 2)
        self.assertIsNone(limiter.userBlocked("a"))
        self.assertIsNotNone(limiter.userBlocked("c"))

    def test_badConfiguration(self):
        """
        A threshold, window or size below one is refused.
        """
        self.assertRaises(ValueError, FailureLimiter, self.clock, threshold=0)
        self.assertRaises(ValueError, FailureLimiter, self.clock, window=0)
        self.assertRaises(ValueError, FailureLimiter, self.clock, maxKeys=0)
