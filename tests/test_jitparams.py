# -*- test-case-name: tests.test_jitparams -*-
"""
Tests for L{sipdist.jitparams} and C{--pypy-jit}.
"""

from twisted.trial.unittest import SynchronousTestCase

from sipdist.jitparams import (
    DEFAULT, CompiledCode, applyJITParameters, compiledApart, compiledCode,
    parseJITParameters)
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


class FakeLoopInfo:
    """
    What the JIT gives its compile hook: a C{pypyjit.JitLoopInfo}'s size.
    """

    def __init__(self, asmlen):
        self.asmlen = asmlen


class FakeHookJIT:
    """
    The C{pypyjit} module's C{set_compile_hook}, recording the hook.
    """

    def __init__(self):
        self.hooks = []

    def set_compile_hook(self, hook, operations=True):
        self.hooks.append((hook, operations))


class CompiledCodeTests(SynchronousTestCase):
    """
    L{compiledCode} counts the machine code the JIT compiles through its
    compile hook.
    """

    def test_counts(self):
        """
        The hook, installed without the operations, adds up the sizes of
        what is compiled; the counter gives the total.
        """
        jit = FakeHookJIT()
        code = compiledCode(jit)
        self.assertIsInstance(code, CompiledCode)
        [(hook, operations)] = jit.hooks
        self.assertFalse(operations)
        self.assertEqual(code(), 0)
        hook(FakeLoopInfo(1000))
        hook(FakeLoopInfo(24))
        self.assertEqual((code(), code.bytes), (1024, 1024))

    def test_realModule(self):
        """
        Without a module given: on PyPy, one counter per process, its hook
        installed once, counting what the JIT compiles (a loop run often
        enough); on CPython, none.
        """
        try:
            import pypyjit  # noqa: F401
        except ImportError:
            self.assertIsNone(compiledCode())
            return
        code = compiledCode()
        self.assertIsInstance(code, CompiledCode)
        self.assertIs(compiledCode(), code)
        before = code()

        def loop(n):
            total = 0
            for i in range(n):
                total += i * 7 % 11
            return total

        loop(100000)
        self.assertGreater(code(), before)

    def test_server(self):
        """
        A server's overload control reads the process's counter (none on
        CPython).
        """
        from twisted.internet.testing import MemoryReactorClock

        from sipdist import server
        from sipdist.server import buildServer
        from sipdist.store.memory import MemoryAssignmentStore

        code = CompiledCode()
        self.patch(server, "compiledCode", lambda: code)

        service = buildServer(
            {"role": "home", "name": "home1", "domain": "example.com",
             "listen": [], "credentials": "memory:alice:secret",
             "secret": "0123456789abcdef0123"},
            MemoryReactorClock(), store=MemoryAssignmentStore())
        self.assertIs(service.transactions.overload._compiled, code)


class FakeApartJIT:
    """
    The C{pypyjit} module's C{dont_trace_here}, recording what it is given.
    """

    def __init__(self):
        self.marked = []

    def dont_trace_here(self, position, profiled, code):
        self.marked.append((position, profiled, code))


class CompiledApartTests(SynchronousTestCase):
    """
    L{compiledApart} has PyPy's JIT compile a function on its own, not
    inlined into its callers.
    """

    def test_marks(self):
        """
        The function's code is marked from its start, and the function
        itself is given back, marked C{compiledApart}.
        """
        jit = FakeApartJIT()

        def function(x):
            return x + 1

        self.assertIs(compiledApart(function, jit), function)
        self.assertEqual(jit.marked, [(0, False, function.__code__)])
        self.assertTrue(function.compiledApart)
        self.assertEqual(function(1), 2)

    def test_realModule(self):
        """
        On PyPy, a loop calling a function compiled apart calls its
        compiled code (C{call_assembler}) instead of inlining it, and one
        calling a function like it inlines it; on CPython the function is
        only marked.
        """
        try:
            import pypyjit
        except ImportError:
            def function(x):
                return x * 3 % 7
            self.assertIs(compiledApart(function), function)
            self.assertTrue(function.compiledApart)
            return
        names = []

        def hook(info):
            names.extend(op.name for op in info.operations or ())

        # The process's counter (its hook installed, if it was not yet)
        # gets its hook back afterwards.
        counter = compiledCode()
        pypyjit.set_compile_hook(hook, operations=True)
        self.addCleanup(pypyjit.set_compile_hook, counter.compiled,
                        operations=False)

        def apart(x):
            return x * 3 % 7

        def inlined(x):
            return x * 5 % 7

        compiledApart(apart)

        def callApart(n):
            total = 0
            for i in range(n):
                total += apart(i)
            return total

        def callInlined(n):
            total = 0
            for i in range(n):
                total += inlined(i)
            return total

        callApart(100000)
        self.assertTrue(any(name.startswith("call_assembler")
                            for name in names), names)
        del names[:]
        callInlined(100000)
        self.assertTrue(names)
        self.assertFalse(any(name.startswith("call_assembler")
                             for name in names), names)

    def assertCompiledApart(self, *functions):
        for function in functions:
            self.assertTrue(getattr(function, "compiledApart", False),
                            function.__qualname__)

    def test_overload(self):
        """
        The overload control's functions that branch on shedding are
        compiled apart.
        """
        from sipdist.sip.overload import OverloadControl

        self.assertCompiledApart(
            OverloadControl.shedDatagram, OverloadControl._admit,
            OverloadControl.mayAnswerAhead, OverloadControl.answeredAhead,
            OverloadControl._datagramDone, OverloadControl.shouldShed)

    def test_tableStates(self):
        """
        The functions of a request's path whose branches change as the
        tables fill are compiled apart: the nonce table's, the transaction
        table's room, the registrar's planning and listing, the random
        pool.
        """
        from sipdist.auth.nonce import NonceCounts
        from sipdist.randomness import BufferedRandom
        from sipdist.services.registrar import Registrar, contactHeaderValues
        from sipdist.sip.transaction import TransactionLayer

        self.assertCompiledApart(
            NonceCounts.accepts, NonceCounts.repeated, NonceCounts.use,
            TransactionLayer.room, Registrar.plan, Registrar._schedule,
            contactHeaderValues, BufferedRandom.__call__)

