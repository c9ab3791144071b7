# -*- test-case-name: tests.test_jitparams -*-
"""
The parameters of PyPy's JIT a server sets when it starts (C{--pypy-jit}),
the count of the machine code it compiles (L{compiledCode}, which the
overload control reads), and the functions it compiles apart from their
callers (L{compiledApart}).

PyPy compiles a code path only after it has run it a number of times
(C{threshold}: 1039 loop iterations, C{function_threshold}: 1619 calls),
and gives up a trace longer than C{trace_limit} (6000 operations), marking
its longest function not to be inlined and trying again after as many
runs.  A request's path through the reactor, the transport, the
transaction layer, the authenticator and the role is one long trace
(35 traces too long on the home's path), so with PyPy's defaults a home
runs most of its first 10,000 logins interpreted, slower than CPython,
and a distributor its first 3,000 (bench/bench_warmup.py).  Longer traces
and lower thresholds bring both to their compiled speed within 1,000 to
3,000 logins.  CPython has no JIT: the option does nothing there.
"""

#: What a server sets by default (measured with bench/bench_warmup.py).
DEFAULT = ("trace_limit=16000,threshold=500,function_threshold=600,"
           "trace_eagerness=100")

# The parameters that may be given, with their bounds (PyPy refuses a
# trace_limit much above 16,000).
_BOUNDS = {
    "threshold": (1, 1 << 20),
    "function_threshold": (1, 1 << 20),
    "trace_eagerness": (1, 1 << 20),
    "trace_limit": (100, 16000),
    "decay": (0, 1000),
    "loop_longevity": (1, 1 << 20),
    "retrace_limit": (0, 100),
    "max_retrace_guards": (0, 1000),
    "max_unroll_loops": (0, 100),
    "max_unroll_recursion": (0, 100),
    "disable_unrolling": (0, 1 << 20),
    "inlining": (0, 1),
}


def parseJITParameters(text):
    """
    Check a C{--pypy-jit} value: C{default} (leave PyPy's parameters as they
    are), or C{name=N} pairs separated by commas, each a known parameter
    with a value in its bounds.

    @return: the value, normalised (no white space).
    @raise ValueError: for anything else.
    """
    text = text.strip()
    if text == "default":
        return text
    pairs = []
    for item in text.split(","):
        name, sep, value = item.strip().partition("=")
        name = name.strip()
        if not sep or name not in _BOUNDS:
            raise ValueError(f"not a JIT parameter: {item.strip()!r} "
                             f"(known: {', '.join(sorted(_BOUNDS))})")
        low, high = _BOUNDS[name]
        number = int(value)
        if not low <= number <= high:
            raise ValueError(f"{name} must be from {low} to {high}")
        pairs.append(f"{name}={number}")
    return ",".join(pairs)


def applyJITParameters(text, jit=None):
    """
    Set PyPy's JIT parameters to C{text} (as L{parseJITParameters} gives
    it), unless it is C{default}.

    @param jit: the C{pypyjit} module, or a fake of it; by default the
        interpreter's, if it has one.
    @return: whether parameters were set (never on CPython).
    """
    if text == "default":
        return False
    if jit is None:
        jit = _interpreterJIT()
        if jit is None:
            return False
    jit.set_param(text)
    return True


def compiledApart(function, jit=None):
    """
    Have PyPy's JIT compile C{function} on its own instead of inlining it
    into the traces of its callers (a decorator; nothing on CPython).

    For a function on a request's path whose branches (or loops) change
    with a state of the server that comes rarely or late: the overload
    control's while it sheds, the nonce table's as its sets fill, the
    transaction table's room once it is full, the registrar's with the
    bindings an address-of-record has, the random pool's refill.
    Inlined, a new state fails a guard in every trace that holds the
    function, and the JIT compiles a bridge for each of them, from there
    to the end of the request's path (10 to 35 KB each), while the
    requests wait: with them inlined, a warmed home compiled 0.65 to
    0.8 MB once it listened; compiled apart, 0.25 to 0.33 MB
    (docs/performance.rst).  Compiled apart, the function has its own
    bridges, once, which end where it returns; its callers guard only on
    what it returns.

    @param jit: the C{pypyjit} module, or a fake of it; by default the
        interpreter's, if it has one.
    @return: C{function}, marked C{compiledApart}.
    """
    if jit is None:
        jit = _interpreterJIT()
    if jit is not None:
        jit.dont_trace_here(0, False, function.__code__)
    function.compiledApart = True
    return function


def _interpreterJIT():
    """
    The interpreter's C{pypyjit} module, or C{None} (CPython).
    """
    try:
        import pypyjit
    except ImportError:
        return None
    return pypyjit


class CompiledCode:
    """
    The machine code PyPy's JIT has compiled in this process, counted by
    its compile hook (one per process: installing it replaces any other,
    such as a profiler's).  A measurement of the load during which the JIT
    compiled much is a compile pause, not work (L{sipdist.sip.overload}).

    @ivar bytes: bytes of machine code compiled since the hook was
        installed (loops and bridges).
    """

    def __init__(self):
        self.bytes = 0

    def __call__(self):
        """
        @return: L{bytes}.
        """
        return self.bytes

    def compiled(self, info):
        """
        The compile hook: called by the JIT with each loop or bridge it has
        compiled (a C{pypyjit.JitLoopInfo}).
        """
        self.bytes += info.asmlen


_compiledCode = []


def compiledCode(jit=None):
    """
    The process's L{CompiledCode}, its hook installed at the first call.

    @param jit: by default the interpreter's C{pypyjit} module, if it has
        one; given (a fake of it, in tests), a new counter hooked into it.
    @return: the L{CompiledCode}, or C{None} on an interpreter without a
        JIT (CPython).
    """
    if jit is None:
        if not _compiledCode:
            jit = _interpreterJIT()
            _compiledCode.append(None if jit is None else compiledCode(jit))
        return _compiledCode[0]
    code = CompiledCode()
    # Without the operations: the hook is called with the size only, at no
    # cost to the compiling.
    jit.set_compile_hook(code.compiled, operations=False)
    return code
