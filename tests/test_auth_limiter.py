# -*- test-case-name: tests.test_auth_limiter -*-
"""
Tests for L{sipdist.auth.limiter.FailureLimiter}.
"""

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from sipdist.auth.limiter import FailureLimiter


class FailureLimiterTests(SynchronousTestCase):
    """
    Failures are counted per (user, address); past the threshold the pair
    waits longer and longer, nobody else does.
    """

    def setUp(self):
        self.clock = Clock()
        self.limiter = FailureLimiter(self.clock, threshold=3, window=60,
                                      hostThreshold=10, maxDelay=8)

    def fail(self, times, user="alice", host="10.0.0.1"):
        for _ in range(times):
            self.limiter.failed(user, host)

    def test_growingDelay(self):
        """
        From the threshold-th failure on, the pair waits 1 s, then twice as
        long after each further failure, up to the cap; it may try again
        when the wait is over.
        """
        self.fail(2)
        self.assertIsNone(self.limiter.retryAfter("alice", "10.0.0.1"))
        waits = []
        for _ in range(6):
            self.fail(1)
            waits.append(self.limiter.retryAfter("alice", "10.0.0.1"))
        self.assertEqual(waits, [1, 2, 4, 8, 8, 8])
        self.clock.advance(7.5)
        self.assertEqual(self.limiter.retryAfter("alice", "10.0.0.1"), 1)
        self.clock.advance(0.5)
        self.assertIsNone(self.limiter.retryAfter("alice", "10.0.0.1"))

    def test_onlyThePair(self):
        """
        A slowed user is slowed from that address only; other users at the
        same address are not affected at all.
        """
        self.fail(10)
        self.assertIsNotNone(self.limiter.retryAfter("alice", "10.0.0.1"))
        self.assertIsNone(self.limiter.retryAfter("alice", "10.0.0.2"))
        self.assertIsNone(self.limiter.retryAfter("bob", "10.0.0.1"))

    def test_forgottenAfterWindow(self):
        """
        A pair's count is forgotten C{window} seconds after its last
        failure.
        """
        self.fail(2)
        self.clock.advance(59)
        self.fail(1)
        self.assertEqual(self.limiter.retryAfter("alice", "10.0.0.1"), 1)
        self.clock.advance(60)
        self.fail(1)
        self.assertIsNone(self.limiter.retryAfter("alice", "10.0.0.1"))

    def test_success(self):
        """
        A success forgets the pair's failures.
        """
        self.fail(2)
        self.limiter.succeeded("alice", "10.0.0.1")
        self.fail(2)
        self.assertIsNone(self.limiter.retryAfter("alice", "10.0.0.1"))

    def test_hasFailures(self):
        """
        L{FailureLimiter.hasFailures} says whether a pair's failures are
        counted: from its first failure until its success.
        """
        self.assertFalse(self.limiter.hasFailures("alice", "10.0.0.1"))
        self.fail(1)
        self.assertTrue(self.limiter.hasFailures("alice", "10.0.0.1"))
        self.assertFalse(self.limiter.hasFailures("alice", "10.0.0.2"))
        self.limiter.succeeded("alice", "10.0.0.1")
        self.assertFalse(self.limiter.hasFailures("alice", "10.0.0.1"))

    def test_hostBudget(self):
        """
        Past the address's budget, a user failing from it waits from its
        first failure; a user who does not fail is never slowed.
        """
        for i in range(10):
            self.limiter.failed(f"user{i}", "nat")
        self.assertEqual(
            [self.limiter.retryAfter(f"user{i}", "nat") for i in range(10)],
            [None] * 10)
        self.limiter.failed("mallory", "nat")
        self.assertEqual(self.limiter.retryAfter("mallory", "nat"), 1)
        self.assertIsNone(self.limiter.retryAfter("alice", "nat"))
        self.limiter.failed("eve", "elsewhere")
        self.assertIsNone(self.limiter.retryAfter("eve", "elsewhere"))

    def test_bounded(self):
        """
        Each table keeps at most C{maxKeys} keys, dropping the least
        recently failed one.
        """
        limiter = FailureLimiter(self.clock, threshold=1, window=60,
                                 maxKeys=2)
        for name in ("a", "b", "c"):
            limiter.failed(name, name)
        self.assertEqual(limiter.stats()["pairs"], 2)
        self.assertEqual(limiter.stats()["addresses"], 2)
        self.assertIsNone(limiter.retryAfter("a", "a"))
        self.assertIsNotNone(limiter.retryAfter("c", "c"))

    def test_counted(self):
        """
        Attempts answered with a wait are counted in C{slowed}.
        """
        self.fail(3)
        self.limiter.retryAfter("alice", "10.0.0.1")
        self.limiter.retryAfter("bob", "10.0.0.1")
        self.assertEqual(self.limiter.stats()["slowed"], 1)

    def test_badConfiguration(self):
        """
        A threshold, window, size, budget or delay below one, or a cap
        below the first delay, is refused.
        """
        for kw in ({"threshold": 0}, {"window": 0}, {"maxKeys": 0},
                   {"hostThreshold": 0}, {"baseDelay": 0},
                   {"baseDelay": 5, "maxDelay": 2}):
            self.assertRaises(ValueError, FailureLimiter, self.clock, **kw)
