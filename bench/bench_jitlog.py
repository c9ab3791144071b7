"""
Where PyPy's compiled code spends a request: for one case of
bench_hotpath.py, the operations, allocations and calls out of the
compiled code (into PyPy's runtime: dictionaries, string builders, the
collector ...) that the JIT-compiled traces execute per request, by the
source line they come from.

    pypy3 bench/bench_jitlog.py [--case "home, logins (401, 200)"]
        [--requests 20000] [--top 25]

The script runs the case twice more, each time in a child PyPy with
PYPYLOG=jit-log-opt,jit-backend-counts (PyPy writes every trace it
compiled, with the source position of each operation, and at exit how
many times each loop and bridge was entered): once preparing and sending
the requests, once preparing them only (the bench's client computes its
Digest answers in the same process, with code of its own, compiled
again from C{sipdist/auth/client.py} and C{digest.py} under the names
C{bench-client:client.py} and C{bench-client:digest.py}; the share of
the preparing is subtracted, the client's lines with it).  Each
operation is weighted by the entries of the loop or bridge it is in (its
loop's iterations after the loop's label), less what left before it by
the bridges of the guards on the way, the sums divided by the requests
sent.  The preparing also has the server
mint a nonce for each authenticated request (as its C{401} would): that
minting is subtracted by its operations in the other run, where the JIT
may have compiled it into other traces; its lines are approximate.

What it tells that a timing does not: which lines still allocate (each
allocation is a write to the nursery, which a server asleep between
wake-ups finds out of its caches), which call into the runtime, and how
many loops and bridges a request enters (each a jump to code elsewhere).
What it does not: the time spent inside a call out (a dictionary
lookup, OpenSSL), nor in the interpreter (code not compiled).  The
operations are the optimised trace's, before the backend's register
allocation: a measure of size, not of time.  It needs PyPy; on CPython it
says so in one line.
"""

import argparse
import collections
import os
import re
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))

import bench_hotpath  # noqa: E402

# Requests prepared, then sent, at a time; a child's bound.
CHUNK = 1000
CHILD_SECONDS = 600
_CHILD = "SIPDIST_BENCH_JITLOG_CHILD"

# The operations that allocate an object in the nursery, and those that
# call out of the compiled code.
_ALLOCATION = re.compile(
    r"= (new_with_vtable|new_array_clear|new_array|newstr|newunicode|new)\(")
_CALL = re.compile(r"\bcall_(?:r|i|n|f|may_force_[rinf]|assembler_[rinf]|"
                   r"release_gil_[rinf]|loopinvariant_[rinf]|pure_[rinf])\(")
_CALLEE = re.compile(r"ConstClass\((\w+)\)")
# A debug_merge_point's position: "function;file:first-line~ #offset OP".
_POSITION = re.compile(r"^(.*?);(.*):(\d+)-(\d+)~")
_OFFSET = re.compile(r"^\+\d+: ")
_GUARD = re.compile(r"^guard_\w+\(.*descr=<Guard0x([0-9a-f]+)>")
_COUNTS = re.compile(r"\{jit-backend-counts\n(.*?)\n\[[0-9a-f]+\] "
                     r"jit-backend-counts\}", re.S)
_TRACE = re.compile(r"\{jit-log-opt-(loop|bridge)\n(.*?)\n\[[0-9a-f]+\] "
                    r"jit-log-opt-\1\}", re.S)


class Profile:
    """
    Weighted sums from a PYPYLOG file, by source position.

    @ivar operations: L{collections.Counter} of operations executed.
    @ivar allocations: of allocations.
    @ivar calls: of calls out, by C{(position, callee)}.
    @ivar entries: loops entered, bridges entered.
    """

    def __init__(self):
        self.operations = collections.Counter()
        self.allocations = collections.Counter()
        self.calls = collections.Counter()
        self.entries = collections.Counter()

    def minus(self, other):
        """
        A new profile: this one's sums less C{other}'s, at the positions
        this one has (a position only C{other} has, the client's own, is
        not in this run).
        """
        result = Profile()
        for name in ("operations", "allocations", "calls", "entries"):
            mine, theirs = getattr(self, name), getattr(other, name)
            setattr(result, name, collections.Counter(
                {key: value - theirs.get(key, 0)
                 for key, value in mine.items()}))
        return result


def position(text):
    """
    A debug_merge_point's position, short: C{"file:line function"} for
    Python code (the file from its C{sipdist/}, C{bench/} or C{twisted/}
    on), else the start of PyPy's own (C{"re RepeatOne at 17 [15. 4.
    ..."}, C{"tuple.hash [str]"}).
    """
    match = _POSITION.match(text)
    if match is None:
        # (A regular expression's: its operation, then the start of its
        # compiled pattern, which tells the patterns apart.)
        return text[:72]
    function, path, _, line = match.groups()
    for top in ("/sipdist/", "/bench/", "/twisted/"):
        at = path.rfind(top)
        if at >= 0:
            path = path[at + 1:]
            break
    else:
        path = os.path.basename(path)
    return f"{path}:{line} {function}"


def counts(text):
    """
    The entries of each loop, label (target token) and bridge from a log's
    jit-backend-counts section, keyed C{("entry", loop number)},
    C{("token", id)} and C{("bridge", guard address)}.
    """
    match = _COUNTS.search(text)
    if match is None:
        raise ValueError("no jit-backend-counts section: was PYPYLOG "
                         "given jit-backend-counts?")
    found = {}
    for line in match.group(1).splitlines():
        what, _, count = line.rpartition(":")
        if not count.isdigit():
            continue
        if what.startswith("entry "):
            found["entry", int(what[6:])] = int(count)
        elif what.startswith("TargetToken(") and what.endswith(")"):
            found["token", int(what[12:-1])] = int(count)
        elif what.startswith("bridge "):
            found["bridge", int(what[7:])] = int(count)
    return found


def weigh(text):
    """
    The L{Profile} of a PYPYLOG file's text (jit-log-opt and
    jit-backend-counts): each operation of a trace counted as many times
    as its part of the trace was entered.
    """
    entered = counts(text)
    profile = Profile()
    for match in _TRACE.finditer(text):
        kind, body = match.groups()
        lines = body.splitlines()
        head = re.search(r"# Loop (\d+)" if kind == "loop"
                         else r"Guard 0x([0-9a-f]+)", lines[0])
        if head is None:
            continue
        if kind == "loop":
            weight = entered.get(("entry", int(head.group(1))), 0)
        else:
            weight = entered.get(("bridge", int(head.group(1), 16)), 0)
        profile.entries[kind] += weight
        where = "(before any position)"
        for line in lines[1:]:
            # The operations' offsets in the machine code, when given.
            line = _OFFSET.sub("", line)
            if "debug_merge_point(" in line:
                quoted = re.search(r"'(.*)'\)", line)
                if quoted is not None:
                    where = position(quoted.group(1))
                continue
            if line.startswith("label("):
                token = re.search(r"TargetToken\((\d+)\)", line)
                if token is not None:
                    weight = entered.get(("token", int(token.group(1))),
                                         weight)
                continue
            if (not weight or line.startswith(("#", "[")) or
                    not line.strip()):
                # (A comment, the trace's input arguments.)
                continue
            profile.operations[where] += weight
            if _ALLOCATION.search(line):
                profile.allocations[where] += weight
            if _CALL.search(line):
                callee = _CALLEE.search(line)
                profile.calls[where, callee.group(1) if callee else "?"] += (
                    weight)
            guard = _GUARD.match(line)
            if guard is not None:
                # What leaves by a guard's bridge goes no further here.
                weight = max(0, weight - entered.get(
                    ("bridge", int(guard.group(1), 16)), 0))
    return profile


def separateClient():
    """
    Give the bench's client (L{bench_hotpath.prepare}'s C{answerChallenge})
    code of its own: C{sipdist.auth.client} and C{sipdist.auth.digest}
    compiled again under other file names, so that the hashing the client
    does has its own positions in the log and is not mixed into the
    server's.
    """
    import types

    import sipdist.auth.client
    import sipdist.auth.digest
    modules = {}
    for real in (sipdist.auth.digest, sipdist.auth.client):
        with open(real.__file__, encoding="utf-8") as f:
            source = f.read()
        copy = types.ModuleType("bench_client_" + real.__name__)
        code = compile(source, "bench-client:" + os.path.basename(
            real.__file__), "exec")
        saved = dict(sys.modules)
        # The client's copy imports the digest module's copy.
        sys.modules.update(modules)
        try:
            exec(code, copy.__dict__)
        finally:
            sys.modules.clear()
            sys.modules.update(saved)
        modules[real.__name__] = copy
    bench_hotpath.answerChallenge = modules[
        "sipdist.auth.client"].answerChallenge


def child(args):
    """
    Run the case (or only prepare its requests, with C{--prepare-only}).
    """
    from sipdist import jitparams
    jitparams.applyJITParameters(jitparams.DEFAULT)
    separateClient()
    label, role, name, kind, final = caseNamed(args.case)
    service, protocol, udp, clock = bench_hotpath.setup(role, name)
    sent = 0
    while sent < args.requests:
        chunk = bench_hotpath.batch(service, kind, sent, CHUNK)
        if args.prepare_only:
            clock.advance(1)
        else:
            bench_hotpath.run(protocol, clock, chunk)
        sent += len(chunk)
    if not args.prepare_only:
        expected = bench_hotpath.answers(kind, final, sent)
        if udp.codes != expected:
            raise SystemExit(f"{label}: answers {udp.codes!r}, expected "
                             f"{expected!r}")
    print(sent)


def caseNamed(label):
    for case in bench_hotpath.CASES:
        if case[0] == label:
            return case
    raise SystemExit(f"no case {label!r}; the cases: " + ", ".join(
        repr(case[0]) for case in bench_hotpath.CASES))


def traced(args, work, prepareOnly):
    """
    Run a child with PYPYLOG set; the L{Profile} of its log and the
    requests it sent or prepared.
    """
    log = os.path.join(work, "prepare.log" if prepareOnly else "run.log")
    argv = [sys.executable, os.path.abspath(__file__), "--case", args.case,
            "--requests", str(args.requests)]
    if prepareOnly:
        argv.append("--prepare-only")
    env = dict(os.environ, PYPYLOG=f"jit-log-opt,jit-backend-counts:{log}")
    env[_CHILD] = "1"
    try:
        done = subprocess.run(argv, env=env, capture_output=True,
                              timeout=CHILD_SECONDS)
    except subprocess.TimeoutExpired:
        raise SystemExit(f"the child ran past {CHILD_SECONDS} s: fewer "
                         f"--requests") from None
    if done.returncode != 0:
        raise SystemExit(done.stderr.decode("utf-8", "replace").strip()
                         or f"the child exited {done.returncode}")
    with open(log, encoding="utf-8", errors="replace") as f:
        profile = weigh(f.read())
    os.remove(log)
    return profile, int(done.stdout.split()[-1])


def report(profile, requests, top):
    """
    Print a profile's sums per request, the C{top} positions of each.
    """
    def each(value):
        return value / requests

    print(f"  per request: {each(sum(profile.operations.values())):,.0f} "
          f"operations, {each(sum(profile.allocations.values())):,.0f} "
          f"allocations, {each(sum(profile.calls.values())):,.0f} calls "
          f"out; {each(profile.entries['loop']):,.1f} loops and "
          f"{each(profile.entries['bridge']):,.1f} bridges entered")
    for title, counter in (("operations", profile.operations),
                           ("allocations", profile.allocations),
                           ("calls out", profile.calls)):
        print(f"  {title}, by position:")
        for key, value in counter.most_common(top):
            if isinstance(key, tuple):
                key = f"{key[0]}  -> {key[1]}"
            print(f"    {each(value):>9,.1f}  {key}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--case", default="home, logins (401, 200)",
                        help="a case of bench_hotpath.py, by its label")
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--prepare-only", action="store_true",
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if sys.implementation.name != "pypy":
        sys.exit("bench_jitlog.py needs PyPy (it reads the traces PyPy's "
                 "JIT compiles): run it with pypy3")
    if args.requests < CHUNK:
        parser.error(f"--requests: at least {CHUNK}")
    caseNamed(args.case)
    if os.environ.get(_CHILD):
        child(args)
        return
    with tempfile.TemporaryDirectory(prefix="sipdist-jitlog-") as work:
        run, sent = traced(args, work, False)
        prepared, _ = traced(args, work, True)
    print(f"{sys.implementation.name} {sys.version.split()[0]}: "
          f"{args.case}, {sent:,d} requests; compiled code only, the "
          f"client's preparing subtracted")
    report(run.minus(prepared), sent, args.top)


if __name__ == "__main__":
    main()
