# -*- test-case-name: tests.test_jitparams -*-
"""
Tests for L{sipdist.jitparams} and C{--pypy-jit}.
"""

from twisted.trial.unittest import SynchronousTestCase

import os
import subprocess
import sys

from sipdist.jitparams import (
    DEFAULT, NURSERY, applyJITParameters, nurseryAdvice, parseJITParameters)
from sipdist.tap import Options


class FakeJIT:
    """
    The C{pypyjit} module's C{set_param}, recording what it is given.
    """

    def __init__(self):
        self.params = []

    def set_param(self, text):
        self.params.append(text)


class ParseTests(SynchronousTestCase):
    """
    L{parseJITParameters} accepts known parameters within their bounds, or
    C{default}.
    """

    def test_default(self):
        """
        C{default} and sipdist's own default are accepted as they are.
        """
        self.assertEqual(parseJITParameters(" default "), "default")
        self.assertEqual(parseJITParameters(DEFAULT), DEFAULT)

    def test_normalised(self):
        """
        White space around names and values goes.
        """
        self.assertEqual(parseJITParameters(" threshold = 200 , inlining=1"),
                         "threshold=200,inlining=1")

    def test_refused(self):
        """
        An unknown name, a pair without C{=}, a value that is not a number
        or out of bounds (PyPy refuses a C{trace_limit} above 16,000) is a
        L{ValueError}.
        """
        for text in ("", "threshold", "thresh=3", "threshold=x",
                     "trace_limit=30000", "inlining=2", "threshold=0",
                     "threshold=5,,"):
            self.assertRaises(ValueError, parseJITParameters, text)


class ApplyTests(SynchronousTestCase):
    """
    L{applyJITParameters} sets the parameters through C{pypyjit}.
    """

    def test_applied(self):
        """
        Parameters are given to C{pypyjit.set_param} as they are.
        """
        jit = FakeJIT()
        self.assertTrue(applyJITParameters(DEFAULT, jit))
        self.assertEqual(jit.params, [DEFAULT])

    def test_defaultLeavesPyPy(self):
        """
        C{default} changes nothing.
        """
        jit = FakeJIT()
        self.assertFalse(applyJITParameters("default", jit))
        self.assertEqual(jit.params, [])

    def test_realModule(self):
        """
        Without a module given, PyPy's own is used (its parameters are
        then the ones given); on CPython nothing is done.
        """
        try:
            import pypyjit
        except ImportError:
            self.assertFalse(applyJITParameters(DEFAULT))
            return
        self.addCleanup(pypyjit.set_param, "default")
        self.assertTrue(applyJITParameters("threshold=1039"))


class OptionTests(SynchronousTestCase):
    """
    C{--pypy-jit}.
    """

    def test_default(self):
        """
        Without the option, sipdist's default parameters are chosen.
        """
        options = Options()
        options.parseOptions(["--role=distributor"])
        self.assertEqual(options["pypy-jit"], DEFAULT)

    def test_given(self):
        """
        The option's value is checked and normalised.
        """
        options = Options()
        options.parseOptions(["--role=distributor",
                              "--pypy-jit=threshold = 700"])
        self.assertEqual(options["pypy-jit"], "threshold=700")

    def test_wrong(self):
        """
        A wrong value is a usage error.
        """
        from twisted.python.usage import UsageError
        options = Options()
        self.assertRaises(UsageError, options.parseOptions,
                          ["--role=distributor", "--pypy-jit=warp=9"])


class FakeStats:
    def __init__(self, nursery):
        self.nursery_size = nursery


class FakeGC:
    """
    PyPy's C{gc} module's C{get_stats}, with a nursery of a given size.
    """

    def __init__(self, nursery):
        self.nursery = nursery

    def get_stats(self):
        if isinstance(self.nursery, Exception):
            raise self.nursery
        return FakeStats(self.nursery)


class NurseryAdviceTests(SynchronousTestCase):
    """
    L{nurseryAdvice} names C{PYPY_GC_NURSERY} when PyPy chose a nursery
    far larger than a cache, and only then.
    """

    def test_large(self):
        """
        A nursery of hundreds of megabytes, chosen by PyPy, is reported
        with the setting to give.
        """
        for size in ("240.0MB", "1.5GB", "65537kB", "64.5MB"):
            with self.subTest(size):
                advice = nurseryAdvice({}, FakeGC(size))
                self.assertIn(size, advice)
                self.assertIn(f"PYPY_GC_NURSERY={NURSERY}", advice)

    def test_small(self):
        """
        A nursery of at most 64 MB is left alone.
        """
        for size in ("4.0MB", "16.0MB", "64.0MB", "65536kB", "512kB"):
            with self.subTest(size):
                self.assertIsNone(nurseryAdvice({}, FakeGC(size)))

    def test_chosen(self):
        """
        A nursery the operator chose (C{PYPY_GC_NURSERY}) is left alone,
        however large.
        """
        self.assertIsNone(nurseryAdvice({"PYPY_GC_NURSERY": "256MB"},
                                        FakeGC("256.0MB")))

    def test_unreadable(self):
        """
        Statistics that cannot be read, or read otherwise, give nothing
        (not an error at start-up).
        """
        for nursery in (RuntimeError("no"), "big", "", None):
            with self.subTest(nursery):
                self.assertIsNone(nurseryAdvice({}, FakeGC(nursery)))

    def test_noStatistics(self):
        """
        A C{gc} module without C{get_stats} (CPython's) gives nothing.
        """
        self.assertIsNone(nurseryAdvice({}, object()))

    def test_realModule(self):
        """
        On PyPy, the real statistics are read: a nursery set to 200 MB in
        the environment of a new process is reported once the variable
        is gone from the environment given, not while it is there; on
        CPython nothing is reported.
        """
        code = ("import os, sys; sys.path.insert(0, sys.argv[1]); "
                "from sipdist.jitparams import nurseryAdvice; "
                "print(nurseryAdvice({}) is not None, "
                "nurseryAdvice(os.environ) is not None)")
        top = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        out = subprocess.run(
            [sys.executable, "-c", code, top], capture_output=True,
            text=True, env=dict(os.environ, PYPY_GC_NURSERY="200MB"),
            timeout=60)
        self.assertEqual(out.returncode, 0, out.stderr)
        onPyPy = sys.implementation.name == "pypy"
        self.assertEqual(out.stdout.split(), [str(onPyPy), "False"])
