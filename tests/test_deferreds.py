"""
Tests for L{sipdist.deferreds}.
"""

from twisted.internet.defer import Deferred, fail, succeed
from twisted.trial.unittest import SynchronousTestCase

from sipdist import deferreds as _deferreds
from sipdist.deferreds import NOT_FIRED, firedResult, whenFired


class FiredResultTests(SynchronousTestCase):

    def test_fired(self):
        """
        The success a Deferred has fired with is taken as it is.
        """
        self.assertEqual(firedResult(succeed(7)), 7)

    def test_notDeferred(self):
        """
        A value that is not a Deferred is a synchronous answer.
        """
        self.assertEqual(firedResult("x"), "x")

    def test_notFired(self):
        """
        A Deferred that has not fired has no result at hand.
        """
        self.assertIs(firedResult(Deferred()), NOT_FIRED)

    def test_failureStays(self):
        """
        A failure is not taken: it stays in its Deferred for the errbacks.
        """
        d = fail(ValueError("x"))
        self.assertIs(firedResult(d), NOT_FIRED)
        self.failureResultOf(d, ValueError)

    def test_paused(self):
        """
        A Deferred waiting on another has no result at hand.
        """
        inner = Deferred()
        d = succeed(1)
        d.addCallback(lambda _: inner)
        self.assertIs(firedResult(d), NOT_FIRED)
        inner.callback(2)
        self.assertEqual(firedResult(d), 2)


    def test_subclass(self):
        """
        A subclass of Deferred is a Deferred, fired or not, as a value or
        as the result of another Deferred.
        """
        class Sub(Deferred):
            pass

        self.assertIs(firedResult(Sub()), NOT_FIRED)
        fired = Sub()
        fired.callback(3)
        self.assertEqual(firedResult(fired), 3)
        self.assertEqual(firedResult("y"), "y")
        waiting = Deferred()
        waiting.result, waiting.called = Sub(), True
        self.assertIs(firedResult(waiting), NOT_FIRED)

    def test_typesBounded(self):
        """
        The types remembered are at most C{_MAX_TYPES}; past that, the
        table starts again, and the answers stay right.
        """
        self.patch(_deferreds, "_DEFERRED_TYPES", {})
        self.patch(_deferreds, "_MAX_TYPES", 3)
        for value in (1, "a", b"b", 2.0, (), succeed(5)):
            self.assertLessEqual(len(_deferreds._DEFERRED_TYPES), 3)
            expected = 5 if isinstance(value, Deferred) else value
            self.assertEqual(firedResult(value), expected)
        self.assertLessEqual(len(_deferreds._DEFERRED_TYPES), 3)


class WhenFiredTests(SynchronousTestCase):

    def test_now(self):
        """
        A fired Deferred's result goes to the callback at once, with the
        arguments.
        """
        seen = []
        whenFired(succeed(1), lambda r, a: seen.append((r, a)),
                  lambda f, a: seen.append(f), ("a",))
        self.assertEqual(seen, [(1, "a")])

    def test_later(self):
        """
        A Deferred that has not fired calls the callback when it does, and
        the errback with the errback arguments if it fails.
        """
        seen = []
        d = Deferred()
        whenFired(d, lambda r, a: seen.append((r, a)),
                  lambda f, b: seen.append((f.type, b)), ("a",), ("b",))
        self.assertEqual(seen, [])
        d.callback(2)
        self.assertEqual(seen, [(2, "a")])
        e = Deferred()
        whenFired(e, lambda r, a: seen.append((r, a)),
                  lambda f, b: seen.append((f.type, b)), ("a",), ("b",))
        e.errback(ValueError())
        self.assertEqual(seen[-1], (ValueError, "b"))
