"""
The benchmarks in C{bench/} still run: a small run of the ones that need no
outside program, checked for what they print, never for a timing.
"""

import subprocess
import sys

from twisted.python.filepath import FilePath
from twisted.trial.unittest import SynchronousTestCase

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
             "distributor, logins (401, 301)"])

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
