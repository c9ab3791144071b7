"""
The benchmarks in C{bench/} still run: a small run of the ones that need no
outside program, checked for what they print, never for a timing.
"""

import argparse
import contextlib
import functools
import io
import os
import re
import subprocess
import sys
import time

from twisted.python.filepath import FilePath
from twisted.trial.unittest import SkipTest, SynchronousTestCase

from tests.interop import requireTool

TOP = FilePath(__file__).parent().parent()


def runBench(name, *arguments):
    """
    Run C{bench/name} with this interpreter; its standard output, after
    checking that it exited 0.
    """
    script = TOP.child("bench").child(name)
    done = subprocess.run(
        [sys.executable, script.path] + list(arguments),
        cwd=TOP.path, capture_output=True, timeout=300)
    if done.returncode != 0:
        raise AssertionError(
            "%s exited %d:\n%s" % (name, done.returncode,
                                   done.stderr.decode("utf-8", "replace")))
    return done.stdout.decode("utf-8")


def runOnPyPy(case, name, arguments, refusal):
    """
    Run C{bench/name}, a script that needs PyPy, with this interpreter:
    on PyPy its completed process, checked to have exited 0; elsewhere
    L{None}, after checking that it refused with the one line
    C{refusal}.
    """
    script = TOP.child("bench").child(name)
    done = subprocess.run([sys.executable, script.path] + list(arguments),
                          cwd=TOP.path, capture_output=True, timeout=300)
    if sys.implementation.name != "pypy":
        case.assertEqual(
            (done.returncode, done.stdout, done.stderr.splitlines()),
            (1, b"", [refusal]))
        return None
    case.assertEqual(done.returncode, 0, done.stderr)
    return done


class LoopsBenchTests(SynchronousTestCase):
    """
    C{bench/bench_loops.py} counts the functions that loop, for each case
    of C{bench_hotpath.py}.
    """

    def test_cases(self):
        """
        Each case prints its count a request and the functions that loop;
        the scan of the header lines is among them in every case.
        """
        out = runBench("bench_loops.py", "--requests", "6", "--top", "3")
        counts = re.findall(r"^  (\S.*?)\s+(\d+\.\d) \(", out, re.M)
        self.assertEqual(
            [label for label, count in counts],
            ["distributor, signed 301", "home, registrar, signed 200",
             "distributor, 401 challenge",
             "distributor, logins (401, 301)",
             "home, logins (401, 200)"])
        for label, count in counts:
            self.assertGreaterEqual(float(count), 1.0, label)
        self.assertEqual(out.count(" __call__\n"), 5)


class HotPathBenchTests(SynchronousTestCase):
    """
    C{bench/bench_hotpath.py} checks every answer of its cases.
    """

    def test_chunks(self):
        """
        Requests sent in several chunks, the last one short, all get the
        answer of their case; each case prints one line.
        """
        out = runBench("bench_hotpath.py", "--requests", "250",
                       "--chunk", "100", "--runs", "1")
        lines = [line for line in out.splitlines()
                 if line.endswith("requests/CPU-s")]
        self.assertEqual(
            [line.split("  ")[1].strip() for line in lines],
            ["distributor, signed 301", "home, registrar, signed 200",
             "distributor, 401 challenge",
             "distributor, logins (401, 301)",
             "home, logins (401, 200)",
             "reference: bare sip.Base, fixed 301"])

    def test_bursts(self):
        """
        With C{--burst}, the requests come in bursts with a nap between
        them, every answer still checked; the naps' time is not counted.
        """
        out = runBench("bench_hotpath.py", "--requests", "60", "--runs", "1",
                       "--burst", "20", "--nap", "0.001")
        lines = [line for line in out.splitlines()
                 if line.endswith("requests/CPU-s")]
        self.assertEqual(len(lines), 6)

    def test_noReference(self):
        """
        C{--no-reference} leaves Twisted's bare C{sip.Base} out.
        """
        out = runBench("bench_hotpath.py", "--requests", "20", "--runs", "1",
                       "--no-reference")
        self.assertNotIn("reference", out)
        self.assertIn("distributor, logins (401, 301)", out)

    def test_burstNaps(self):
        """
        L{bench_hotpath.run} sleeps C{nap} seconds after every C{burst}
        requests, and only then.
        """
        sys.path.insert(0, TOP.child("bench").path)
        self.addCleanup(sys.path.remove, TOP.child("bench").path)
        import bench_hotpath
        naps = []
        self.patch(time, "sleep", naps.append)
        received = []

        class Protocol:
            def datagramReceived(self, data, addr):
                received.append(data)

        class Clock:
            def advance(self, amount):
                pass

        bench_hotpath.run(Protocol(), Clock(), [b"x"] * 7, burst=3,
                          pause=functools.partial(time.sleep, 0.5))
        self.assertEqual((len(received), naps), (7, [0.5, 0.5]))
        bench_hotpath.run(Protocol(), Clock(), [b"x"] * 7)
        self.assertEqual(naps, [0.5, 0.5])

    def test_nonceTableOverflow(self):
        """
        More nonces issued at one instant than the server's count table
        holds are refused, some of them, as possible replays, and the bench
        says so rather than print a figure: the check of every answer can
        fail.  (The table holds 100,000 by default; the bench's first case
        is cut short by the failure.)
        """
        script = TOP.child("bench").child("bench_hotpath.py")
        program = (
            "import runpy, sys\n"
            "import sipdist.auth.nonce as n\n"
            "init = n.NonceCounts.__init__\n"
            "n.NonceCounts.__init__ = lambda self, maxSize=0: "
            "init(self, 16)\n"
            "sys.argv = [%r, '--requests', '200', '--chunk', '200',"
            " '--runs', '1']\n"
            "runpy.run_path(%r, run_name='__main__')\n"
            % (script.path, script.path))
        done = subprocess.run(
            [sys.executable, "-c", program], cwd=TOP.path,
            capture_output=True, timeout=300)
        self.assertNotEqual(done.returncode, 0)
        self.assertIn(b"AssertionError", done.stderr)


class AllocationsBenchTests(SynchronousTestCase):
    """
    C{bench/bench_allocations.py} counts the bytes a request allocates on
    PyPy, and says in one line that it needs PyPy elsewhere.
    """

    def test_counts(self):
        """
        On PyPy a small run prints one figure per case, every answer
        checked: a signed C{301} allocates more than a C{401}, which
        allocates something.  On CPython the script refuses in one line.
        """
        done = runOnPyPy(
            self, "bench_allocations.py",
            ["--requests", "400", "--nursery", "256KB"],
            b"bench_allocations.py needs PyPy (its nursery's minor "
            b"collections count what a request allocates): run it with "
            b"pypy3")
        if done is None:
            return
        figures = {}
        for line in done.stdout.decode("ascii").splitlines()[1:]:
            label, count = line.rsplit(None, 2)[:2]
            figures[label.strip()] = int(count.replace(",", ""))
        self.assertEqual(
            sorted(figures),
            sorted(case[0] for case in self._cases()))
        self.assertGreater(figures["distributor, 401 challenge"], 1000)
        self.assertGreater(figures["distributor, signed 301"],
                           figures["distributor, 401 challenge"])

    def _cases(self):
        return benchModule("bench_allocations").CASES

    def test_parseSize(self):
        """
        The nursery's size is given as PYPY_GC_NURSERY takes it, from 64KB
        to 64MB; anything else is refused.
        """
        parseSize = benchModule("bench_allocations").parseSize
        self.assertEqual(parseSize("1MB"), 1 << 20)
        self.assertEqual(parseSize(" 512kb"), 512 << 10)
        for bad in ("1GB", "32KB", "128MB", "1", "MB", "x1MB"):
            self.assertRaises(ValueError, parseSize, bad)


# A PYPYLOG file of one loop (entered 10 times, its body after the label
# run 50 times, a guard of the body failing 20 times into a bridge entered
# so, 4 of which it leaves by a guard of its own), as PyPy 7.3 writes them
# (with the operations' offsets in the machine code).
JITLOG = """\
[1a2b] {jit-log-opt-loop
# Loop 1 (f;/x/sipdist/a.py:10-11~#0 LOAD_FAST) : loop with 6 ops
[p0]
debug_merge_point(0, 0, 'f;/x/sipdist/a.py:10-11~#0 LOAD_FAST')
+80: p1 = new_with_vtable(descr=<SizeDescr 16>)
+120: label(p0, p1, descr=TargetToken(100))
debug_merge_point(0, 0, 'f;/x/sipdist/a.py:10-12~#2 LOAD_FAST')
+130: i2 = call_i(ConstClass(ll_find_char), p0, descr=<Calli 8 r EF=2>)
+140: guard_true(i2, descr=<Guard0x10>) [p0, p1]
debug_merge_point(0, 0, 'f;/x/sipdist/a.py:10-13~#4 LOAD_FAST')
+150: p5 = newstr(3)
+160: jump(p0, p1, descr=TargetToken(100))
[1a2c] jit-log-opt-loop}
[1a2d] {jit-log-opt-bridge
# bridge out of Guard 0x10 with 3 ops
[p0]
debug_merge_point(0, 0, 're RepeatOne at 164 [15. 4. 0. 3.]')
+30: guard_false(p0, descr=<Guard0x20>) [p0]
+40: p3 = newstr(5)
+50: finish(p3)
[1a2e] jit-log-opt-bridge}
[1a2d] {jit-log-opt-bridge
# bridge out of Guard 0x20 with 1 ops
[p0]
+10: finish(p0)
[1a2e] jit-log-opt-bridge}
[1a2f] {jit-backend-counts
entry 1:10
TargetToken(100):50
bridge 16:20
bridge 32:4
[1a30] jit-backend-counts}
"""


class JITLogBenchTests(SynchronousTestCase):
    """
    C{bench/bench_jitlog.py} weighs the traces PyPy compiled by their
    entries, per source position; it needs PyPy and says so elsewhere.
    """

    def test_weigh(self):
        """
        Each operation counts as many times as its part of the trace was
        entered: a loop's before its label by the loop's entries, after
        it by the label's, a bridge's by the bridge's; allocations and
        calls out are counted apart, calls by their callee.
        """
        bench = benchModule("bench_jitlog")
        profile = bench.weigh(JITLOG)
        # After the guard, what its bridge did not take: 50 - 20; in the
        # bridge, after its own guard, 20 - 4.
        self.assertEqual(dict(profile.operations),
                         {"sipdist/a.py:11 f": 10,
                          "sipdist/a.py:12 f": 50 + 50,
                          "sipdist/a.py:13 f": 30 + 30,
                          "re RepeatOne at 164 [15. 4. 0. 3.]": 20 + 16 + 16,
                          "(before any position)": 4})
        self.assertEqual(dict(profile.allocations),
                         {"sipdist/a.py:11 f": 10, "sipdist/a.py:13 f": 30,
                          "re RepeatOne at 164 [15. 4. 0. 3.]": 16})
        self.assertEqual(dict(profile.calls),
                         {("sipdist/a.py:12 f", "ll_find_char"): 50})
        self.assertEqual(dict(profile.entries), {"loop": 10, "bridge": 24})
        less = profile.minus(bench.weigh(JITLOG.replace("entry 1:10",
                                                        "entry 1:3")))
        self.assertEqual(less.operations["sipdist/a.py:11 f"], 7)
        self.assertEqual(less.operations["sipdist/a.py:12 f"], 0)

    def test_noCounts(self):
        """
        A log without PyPy's entry counts is refused with the reason.
        """
        bench = benchModule("bench_jitlog")
        with self.assertRaises(ValueError) as raised:
            bench.weigh(JITLOG.split("[1a2f]")[0])
        self.assertIn("jit-backend-counts", str(raised.exception))

    def test_childTooLong(self):
        """
        A child that runs past its bound is stopped, and the script ends
        with one line saying so.
        """
        bench = benchModule("bench_jitlog")
        self.patch(bench, "CHILD_SECONDS", 0.001)
        args = argparse.Namespace(case="home, logins (401, 200)",
                                  requests=1000)
        work = self.mktemp()
        os.mkdir(work)
        with self.assertRaises(SystemExit) as raised:
            bench.traced(args, work, False)
        self.assertEqual(str(raised.exception),
                         "the child ran past 0.001 s: fewer --requests")

    def test_run(self):
        """
        On PyPy a small run of the home's logins prints the sums per
        request and the positions, the scan among them.  On CPython the
        script refuses in one line.
        """
        done = runOnPyPy(
            self, "bench_jitlog.py", ["--requests", "2000", "--top", "5"],
            b"bench_jitlog.py needs PyPy (it reads the traces PyPy's JIT "
            b"compiles): run it with pypy3")
        if done is None:
            return
        script = TOP.child("bench").child("bench_jitlog.py")
        out = done.stdout.decode("utf-8")
        self.assertRegex(out, r"per request: [\d,]+ operations, [\d,]+ "
                         r"allocations, [\d,]+ calls out")
        self.assertIn("sipdist/roles/fastchallenge.py:", out)
        # A case bench_hotpath.py does not have is refused, naming those
        # it has.
        done = subprocess.run(
            [sys.executable, script.path, "--case", "nothing"],
            cwd=TOP.path, capture_output=True, timeout=60)
        self.assertEqual(done.returncode, 1)
        self.assertIn(b"no case 'nothing'; the cases: ", done.stderr)


class ScanBenchTests(SynchronousTestCase):
    """
    C{bench/bench_scan.py} matches each client's lines with the fast path's
    patterns.
    """

    def test_everyLineMatches(self):
        """
        Every line of the bench's clients matches its pattern (else the
        bench stops and says which), and each gets a figure.
        """
        out = runBench("bench_scan.py", "--iterations", "200", "--runs", "1")
        rows = [line for line in out.splitlines() if " bytes " in line]
        self.assertEqual(len(rows), 17)
        self.assertIn("SIPp's REGISTER:", out)


def requireCountable():
    """
    Skip unless Valgrind can count here: on CPython (a short run under
    Valgrind measures PyPy's JIT compiling), Valgrind installed (a skip
    that fails under C{CI=true}, as every missing real part).
    """
    if sys.implementation.name != "cpython":
        raise SkipTest("counted on CPython: a short run under Valgrind "
                       "measures PyPy's JIT compiling")
    requireTool("valgrind")


def refused(*arguments):
    """
    The exit code and the lines on standard error of
    C{bench/bench_instructions.py} run with C{arguments}.
    """
    script = TOP.child("bench").child("bench_instructions.py")
    done = subprocess.run([sys.executable, script.path, *arguments],
                          cwd=TOP.path, capture_output=True, timeout=60)
    return done.returncode, done.stderr.strip().splitlines()


class InstructionsBenchTests(SynchronousTestCase):
    """
    C{bench/bench_instructions.py} counts instructions with Valgrind.
    """

    def test_counts(self):
        """
        A small run prints one figure per role and kind (two runs of the
        server under Valgrind, its answers checked there).
        """
        requireCountable()
        out = runBench("bench_instructions.py", "--roles", "distributor",
                       "--chunk", "10")
        [row] = [line.split() for line in out.splitlines()
                 if line.endswith("instructions/request")]
        self.assertEqual(row[:2], ["distributor", "logins"])
        self.assertGreater(int(row[2].replace(",", "")), 10000)

    def test_cold(self):
        """
        With C{--cold}, cachegrind counts the instructions and the cache
        misses of a request whose burst begins with the caches emptied
        (three runs, the emptying's own cost left out): an authenticated
        request misses the L2 for some of its lines, code among them.
        """
        requireCountable()
        out = runBench("bench_instructions.py", "--roles", "distributor",
                       "--kinds", "authenticated", "--chunk", "12",
                       "--cold", "4")
        [line] = [line for line in out.splitlines()
                  if line.endswith("a request")]
        found = re.match(
            r"\s*distributor\s+authenticated\s+([\d,]+) instructions, "
            r"\s*([\d,]+) L1 misses,\s+([\d,]+) L2 misses "
            r"\(([\d,]+) of code\) a request$", line)
        self.assertIsNotNone(found, line)
        instructions, l1, l2, code = (
            int(g.replace(",", "")) for g in found.groups())
        self.assertGreater(instructions, 10000)
        self.assertGreater(l2, 10)
        self.assertGreater(code, 0)
        self.assertGreater(l1, l2)

    def test_unknownKind(self):
        """
        An unknown role or kind is refused in one line, before anything
        runs.
        """
        self.assertEqual(
            refused("--kinds", "logins,bye"),
            (1, [b"unknown: bye (known: logins, 401, authenticated)"]))

    def test_coldTop(self):
        """
        C{--top} names the functions that ran the most instructions, which
        C{--cold}'s cachegrind runs do not count that way: the two together
        are refused in one line.
        """
        self.assertEqual(
            refused("--cold", "24", "--top", "5"),
            (1, [b"--top counts instructions only: not with --cold"]))


def benchModule(name):
    """
    Import C{bench/name.py} (the benchmarks are scripts, not a package).
    """
    import importlib.util
    script = TOP.child("bench").child(name + ".py")
    spec = importlib.util.spec_from_file_location("bench_" + name,
                                                  script.path)
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, script.parent().path)
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(script.parent().path)
    return module


class RegisterBenchTableTests(SynchronousTestCase):
    """
    C{bench/bench_register.py}'s table over several rounds: medians, and
    ratios taken within each round.
    """

    def setUp(self):
        self.bench = benchModule("bench_register")

    def test_oneRound(self):
        """
        With one round, each figure is the run's and the ratios are its
        run's over Kamailio's, and PyPy's over CPython's same server.
        """
        rows = self.bench.summarise([
            (1, "sipdist distributor: signed 301", 3900, 20000),
            (1, "kamailio (1 worker): 301", 3950, 50000),
            (1, "PyPy sipdist distributor: signed 301", 3980, 41000)])
        self.assertEqual(
            rows,
            [("sipdist distributor: signed 301", 3900, 20000, 20000, 20000,
              0.4, None),
             ("kamailio (1 worker): 301", 3950, 50000, 50000, 50000, 1.0,
              None),
             ("PyPy sipdist distributor: signed 301", 3980, 41000, 41000,
              41000, 0.82, 2.05)])

    def test_ratiosWithinRounds(self):
        """
        A round where the machine ran slower lowers every run of it: the
        ratios are taken within each round, then their median, so that
        the slow rounds do not skew them as the medians' ratio would.  A
        run missing from a round leaves that round's ratio out.
        """
        distributor = "sipdist distributor: signed 301"
        pypy = "PyPy sipdist distributor: signed 301"
        kamailio = "kamailio (1 worker): 301"
        # Rounds 3 and 4 at half speed; PyPy's run of round 4 missing.
        results = [
            (1, distributor, 3900, 20000), (1, kamailio, 3900, 50000),
            (1, pypy, 3900, 40000),
            (2, distributor, 3800, 20000), (2, kamailio, 3800, 50000),
            (2, pypy, 3800, 44000),
            (3, distributor, 3700, 10000), (3, kamailio, 3700, 25000),
            (3, pypy, 3700, 16000),
            (4, distributor, 3600, 10000), (4, kamailio, 3600, 25000)]
        rows = {row[0]: row for row in self.bench.summarise(results)}
        self.assertEqual(list(rows), [distributor, kamailio, pypy])
        self.assertEqual(rows[distributor],
                         (distributor, 3750, 15000, 10000, 20000, 0.4, None))
        # The medians' ratio would be 40,000 / 15,000: 2.67; the rounds'
        # ratios are 2.0, 2.2 and 1.6, to Kamailio 0.8, 0.88 and 0.64.
        label, rate, perCPU, low, high, toKamailio, toCPython = rows[pypy]
        self.assertEqual((rate, perCPU, low, high), (3800, 40000, 16000,
                                                     44000))
        self.assertAlmostEqual(toCPython, 2.0)
        self.assertAlmostEqual(toKamailio, 0.8)


# A stand-in server for the benchmark's scenarios: answers each REGISTER
# by its CSeq (1: a 401 with an MD5 challenge; 2: the code given as the
# second argument), echoing the headers a response copies.  Prints its
# port, then a line for each request it answers.
_STAND_IN = r"""
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1], flush=True)
first, second = sys.argv[1], sys.argv[2]
while True:
    data, addr = s.recvfrom(65535)
    head = data.decode("ascii").split("\r\n\r\n")[0].split("\r\n")
    copied = [line for line in head[1:] if line.split(":")[0].lower()
              in ("via", "from", "to", "call-id", "cseq")]
    cseq = [line for line in head if line.lower().startswith("cseq:")]
    code = first if cseq and cseq[0].split()[1] == "1" else second
    extra = []
    if code.startswith("401"):
        extra = ['WWW-Authenticate: Digest realm="example.com", '
                 'nonce="bench", qop="auth", algorithm=MD5']
    elif code.startswith("301"):
        extra = ["Contact: <sip:127.0.0.1:9>"]
    answer = "\r\n".join(["SIP/2.0 " + code] + copied + extra
                         + ["Content-Length: 0", "", ""])
    s.sendto(answer.encode("ascii"), addr)
    print(code, flush=True)
"""


class RegisterBenchWarmupTests(SynchronousTestCase):
    """
    C{bench/bench_register.py}'s C{--pypy-warmup}: the uncounted calls
    before each PyPy run, the others keeping C{--warmup}'s.
    """

    def setUp(self):
        self.bench = benchModule("bench_register")

    def _warmups(self):
        """
        The uncounted calls each run of a round is given, by label, with
        the servers and SIPp left out.
        """
        bench = self.bench
        given = {}

        class Process:
            pid = 1
            args = ["bare_twisted_301.py", "5099"]

        def measure(label, process, scenario, port, calls, rate, user,
                    warmup=0, **kw):
            given[label] = warmup

        for name, value in (
                ("startSipdist", lambda *a, **kw: Process()),
                ("startBareTwisted", lambda *a, **kw: Process()),
                ("startKamailio", lambda *a, **kw: Process()),
                ("stopProcesses", lambda processes: None),
                ("measure", measure)):
            self.patch(bench, name, value)
        work = self.mktemp()
        os.makedirs(work)
        args = argparse.Namespace(
            calls=100, rate=10, warmup=20000, pypy_warmup=150000,
            no_reference=False, no_kamailio=False, workers=0)
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            bench.runRound(args, work, "/usr/bin/pypy3", 1)
        return given

    def test_pypyRunsOnly(self):
        """
        The PyPy runs (distributor, home, reference) get C{--pypy-warmup}'s
        calls; CPython's and Kamailio's C{--warmup}'s.
        """
        self.assertEqual(self._warmups(), {
            "sipdist distributor: signed 301": 20000,
            "sipdist home: registrar 200 (signed)": 20000,
            "reference: bare sip.Base, fixed 301": 20000,
            "kamailio (1 worker): 301": 20000,
            "PyPy sipdist distributor: signed 301": 150000,
            "PyPy sipdist home: registrar 200": 150000,
            "PyPy reference: bare sip.Base, fixed 301": 150000})

    def test_refused(self):
        """
        A negative warm-up is refused in one line (after the usage), before
        anything runs.
        """
        for option in ("--warmup", "--pypy-warmup"):
            done = subprocess.run(
                [sys.executable,
                 TOP.child("bench").child("bench_register.py").path,
                 option, "-1"],
                cwd=TOP.path, capture_output=True, timeout=60)
            self.assertEqual(
                (done.returncode, done.stdout,
                 done.stderr.splitlines()[-1]),
                (2, b"", b"bench_register.py: error: %s must not be "
                         b"negative" % (option.encode(),)))


class RegisterBenchShedTests(SynchronousTestCase):
    """
    The benchmark's scenarios end a call the server sheds with C{503} at
    once, as failed, and C{bench_register.runSipp} counts those apart.
    """

    def setUp(self):
        requireTool("sipp")
        self.bench = benchModule("bench_register")

    def serve(self, first, second):
        """
        Start a stand-in server (see L{_STAND_IN}).

        @return: its port, and a function that stops it and gives the
            status codes of its answers.
        """
        server = subprocess.Popen(
            [sys.executable, "-c", _STAND_IN, first, second],
            stdout=subprocess.PIPE, text=True)
        self.addCleanup(server.wait)
        self.addCleanup(server.kill)
        port = int(server.stdout.readline())

        def answers():
            server.kill()
            return [line.split()[0] for line in server.stdout]
        return port, answers

    def test_shedAtEitherStep(self):
        """
        A 503 to the first REGISTER or to the one with credentials ends
        the call failed, counted as shed: the request is not sent again
        (SIPp would retransmit it, waiting for the answer it expects, and
        time the call out after 5 s).
        """
        for first, second, scenario in [
                ("503 Service Unavailable", "-", "register_301.xml"),
                ("401 Unauthorized", "503 Service Unavailable",
                 "register_301.xml"),
                ("401 Unauthorized", "503 Service Unavailable",
                 "register_200.xml"),
                ("503 Service Unavailable", "-",
                 "register_301_noauth.xml")]:
            port, answers = self.serve(first, second)
            run = self.bench.runSipp(scenario, port, 4, 20, "alice")
            successful, failed, elapsed = run
            self.assertEqual((successful, failed, run.shed), (0, 4, 4),
                             (first, second, scenario))
            # One request a step up to the 503, for each of the 4 calls.
            steps = 1 if first.startswith("503") else 2
            self.assertEqual(sorted(answers()),
                             sorted([first[:3], second[:3]][:steps] * 4),
                             (first, second, scenario))

    def test_answered(self):
        """
        Calls answered as the scenario expects are successful, none shed;
        a call answered otherwise (a 401 where the 301 should come) is
        failed, not shed.
        """
        port, answers = self.serve("401 Unauthorized",
                                   "301 Moved Permanently")
        run = self.bench.runSipp("register_301.xml", port, 4, 20, "alice")
        self.assertEqual((run[0], run[1], run.shed), (4, 0, 0))
        port, answers = self.serve("401 Unauthorized", "401 Unauthorized")
        run = self.bench.runSipp("register_301.xml", port, 2, 20, "alice")
        self.assertEqual((run[0], run[1], run.shed), (0, 2, 0))


class RegisterBenchReasonTests(SynchronousTestCase):
    """
    When a sipdist server sheds calls, C{bench_register.py} prints why
    under the run's line: what its overload control logged when it
    started shedding during that run.
    """

    _LINE = ("2026-12-04T15:00:0%d+0000 [sipdist.sip.overload."
             "OverloadControl#warn] overloaded (event-loop lag 0.%03d s, "
             "609280 bytes of datagrams waiting, 0 transactions in "
             "progress): new requests beyond 3006/s get 503\n")

    def setUp(self):
        self.bench = benchModule("bench_register")
        self.log = FilePath(self.mktemp())

    def test_reasons(self):
        """
        The lines written from the offset given on, without their time
        stamps, the first three, then how many more; the other lines and
        those before the offset are not reasons.
        """
        before = self._LINE % (0, 999) + "2026-12-04T15:00:01+0000 [-] x\n"
        self.log.setContent(
            (before + "".join(self._LINE % (i, i) for i in range(1, 6))
             + "2026-12-04T15:00:09+0000 [-] load back to normal\n"
             ).encode("utf-8"))
        self.assertEqual(
            self.bench.overloadReasons(self.log.path, len(before)),
            [self._message(i) for i in (1, 2, 3)] + ["(and 2 more lines)"])
        self.assertEqual(self.bench.logSize(self.log.path),
                         self.log.getsize())

    def test_sinceBefore(self):
        """
        When the control started shedding before the run (in the
        warm-up), the last start before it comes first, said so, then
        the summaries it wrote during the run.
        """
        before = self._LINE % (0, 7) + self._LINE % (1, 8)
        summary = ("2026-12-04T15:00:05+0000 [sipdist.sip.overload."
                   "OverloadControl#warn] overload in the last 10 s: 900 "
                   "new requests shed with 503 (admitting 3006/s); lines "
                   "not logged: none\n")
        self.log.setContent((before + summary).encode("utf-8"))
        self.assertEqual(
            self.bench.overloadReasons(self.log.path, len(before)),
            ["(since before the run) " + self._message(8),
             summary.split("] ", 1)[1].rstrip("\n")])

    def test_bytesOffset(self):
        """
        The offset counts bytes, whatever the log's characters before it;
        a log shorter than the offset (rotated during the run) is read
        whole.
        """
        before = "2026-12-04T15:00:00+0000 [-] " + "\u2603" * 40 + "\n"
        self.log.setContent((before + self._LINE % (1, 5)).encode("utf-8"))
        self.assertEqual(
            self.bench.overloadReasons(self.log.path,
                                       len(before.encode("utf-8"))),
            [self._message(5)])
        self.assertEqual(
            self.bench.overloadReasons(self.log.path, 10 ** 6),
            [self._message(5)])

    def test_serverLines(self):
        """
        The lines are found as the server writes them: those a real
        L{OverloadControl} logs on starting to shed and to sum up what it
        shed, formatted as twistd writes its log file.
        """
        from twisted.internet.task import Clock
        from twisted.logger import (
            formatEventAsClassicLogText, globalLogPublisher)
        from sipdist.sip.overload import OverloadControl
        from sipdist.sip.transaction import TransactionLayer
        from tests.test_transaction import (
            FakeFlow, RecordingUser, makeRequest)
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        clock = Clock()
        layer = TransactionLayer(clock, RecordingUser(answer=200))
        control = OverloadControl(clock, layer, maxLag=0.1, interval=0.05,
                                  report=10.0, minRate=0.0, minLoad=0.0,
                                  trim=None)
        control.startService()
        self.addCleanup(control.stopService)
        # Six reactor turns of 0.5 s: it starts shedding; then sheds all.
        clock.pump([0.5] * 6)
        control.limit(0.0)
        for _ in range(5):
            layer.messageReceived(makeRequest("REGISTER"), FakeFlow(clock))
        clock.pump([0.05] * 201)
        self.log.setContent("".join(
            formatEventAsClassicLogText(event) for event in events
            if event.get("log_namespace", "").startswith("sipdist.")
        ).encode("utf-8"))
        start, summary = self.bench.overloadReasons(self.log.path, 0)
        self.assertTrue(start.startswith("overloaded (event-loop lag "),
                        start)
        self.assertTrue(summary.startswith(
            "overload in the last 10 s: 5 new requests shed with 503"),
            summary)

    def _message(self, lag):
        """
        The message of L{_LINE} for the lag C{lag} thousandths.
        """
        return ("overloaded (event-loop lag 0.%03d s, 609280 bytes of "
                "datagrams waiting, 0 transactions in progress): new "
                "requests beyond 3006/s get 503" % lag)

    def test_noLog(self):
        """
        A log that cannot be read is said so in one line; its size is 0.
        """
        reasons = self.bench.overloadReasons(self.log.path, 0)
        self.assertEqual(len(reasons), 1)
        self.assertIn("cannot read", reasons[0])
        self.assertEqual(self.bench.logSize(self.log.path), 0)
        self.assertEqual(self.bench.logSize(None), 0)

    def test_printedUnderTheRun(self):
        """
        L{bench_register.measure} prints the reasons logged during the
        run it measures (not before) under its line, when calls were shed.
        """
        self.log.setContent((self._LINE % (0, 999)).encode("utf-8"))

        def runSipp(*args):
            with open(self.log.path, "a") as f:
                f.write(self._LINE % (1, 42))
            run = self.bench.SippRun((8, 2, 1.0))
            run.shed = 2
            return run
        self.patch(self.bench, "runSipp", runSipp)
        self.patch(self.bench, "RESULTS", [])

        class Process:
            pid = os.getpid()
            logPath = self.log.path
        out = io.StringIO()
        self.patch(sys, "stdout", out)
        self.bench.measure("sipdist home", Process(), "register_200.xml", 1,
                           10, 10, "alice")
        lines = out.getvalue().splitlines()
        self.assertIn("(2 shed with 503)", lines[0])
        self.assertEqual([line.strip() for line in lines[1:]],
                         [self._message(42)])
