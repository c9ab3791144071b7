"""
What a request allocates on PyPy: the bytes its objects take in the
garbage collector's nursery, for each case of bench_hotpath.py (the same
servers in one process, without sockets), and with --patterns for each of
the fast path's header patterns matched alone (bench_scan.py's lines).

    pypy3 bench/bench_allocations.py [--requests 60000] [--nursery 1MB]
        [--patterns]

PyPy allocates every object in a nursery of a fixed size and empties it
with a minor collection when it is full, so the minor collections a run
makes, times the nursery's size, are the bytes it allocated (with the
memory pressure that raw allocations, OpenSSL's contexts for one, declare
to the collector), to within a nursery over the run.  The script runs
itself again with PYPY_GC_NURSERY set (--nursery; small, so that the
count is fine: 1 MB over 60,000 requests is 17 bytes a request) and
counts the minor collections of each case's requests only (not of their
preparing), after a warm-up that lets the JIT compile the path.  Every
answer is checked, as in bench_hotpath.py.

A figure the machine's load does not move, as bench_instructions.py's
count of instructions is for CPython: what PyPy writes afresh for each
request, line after line of the nursery, is what a server asleep between
wake-ups finds out of its caches (see docs/performance.rst).  It
needs PyPy: CPython frees its objects one by one and keeps no such
count; on CPython the script says so in one line.
"""

import argparse
import functools
import gc
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))

import bench_hotpath  # noqa: E402

# bench_hotpath's cases, (label, role, server name, kind, final answer),
# then its reference (role None).
CASES = bench_hotpath.CASES + (
    (bench_hotpath.REFERENCE, None, None, "301", b"301"),)
# The chunks of requests prepared, then sent, at a time.
CHUNK = 1000
_CHILD = "SIPDIST_BENCH_ALLOCATIONS_CHILD"


def parseSize(text):
    """
    A size as PYPY_GC_NURSERY takes it (C{512KB}, C{1MB}): its bytes.

    @raise ValueError: for anything else.
    """
    text = text.strip().upper()
    for suffix, scale in (("KB", 1 << 10), ("MB", 1 << 20)):
        digits = text[:-len(suffix)]
        if text.endswith(suffix) and digits.isdigit():
            number = int(digits)
            break
    else:
        raise ValueError(f"not a size: {text!r} (say 512KB or 1MB)")
    if not 64 <= number * scale >> 10 <= 1 << 16:
        raise ValueError(f"{text}: from 64KB to 64MB")
    return number * scale


class MinorCount:
    """
    The minor collections PyPy made while it was counting.
    """

    def __init__(self):
        self.minors = 0
        gc.hooks.on_gc_minor = self._minor

    def _minor(self, stats):
        self.minors += stats.count


def nurserySize():
    """
    The nursery's size in bytes, as PyPy reports it (its raw statistics,
    behind C{gc.get_stats()}'s formatted ones).
    """
    size = getattr(getattr(gc.get_stats(), "_s", None), "nursery_size",
                   None)
    if not isinstance(size, int):
        raise SystemExit("this PyPy does not report its nursery's size "
                         "(gc.get_stats()): the bytes cannot be counted")
    return size


def caseRequests(role, name, kind):
    """
    A case's protocol, the answers' collector, its clock and a function
    giving C{count} requests of it from number C{start} (the reference's
    for a role of L{None}).
    """
    if role is None:
        protocol, udp, clock = bench_hotpath.setupReference()
        return protocol, udp, clock, bench_hotpath.referenceBatch
    service, protocol, udp, clock = bench_hotpath.setup(role, name)
    return protocol, udp, clock, functools.partial(
        bench_hotpath.batch, service, kind)


def measure(role, name, kind, requests, counter, warmup=20 * CHUNK):
    """
    The minor collections the requests of a case made, after C{warmup}
    uncounted ones: C{(minors, requests sent, answers by code)}.
    """
    protocol, udp, clock, make = caseRequests(role, name, kind)
    sent = 0
    while sent < warmup:
        chunk = make(sent, CHUNK)
        bench_hotpath.run(protocol, clock, chunk)
        sent += len(chunk)
    udp.codes.clear()
    minors = counted = 0
    while counted < requests:
        chunk = make(sent, min(CHUNK, requests - counted))
        before = counter.minors
        bench_hotpath.run(protocol, clock, chunk)
        minors += counter.minors - before
        counted += len(chunk)
        sent += len(chunk)
    return minors, counted, dict(udp.codes)


def patterns(iterations, counter, nursery):
    """
    Print the bytes a match of each of bench_scan.py's lines allocates.
    """
    from bench_scan import LINES
    from sipdist.roles.fastchallenge import _CONSTANT, _VALUES, _Reader
    # On PyPy the lines that differ in every request are read by hand
    # (fastchallenge.HAND_READERS): those readers are counted.
    print(f"  the scan's patterns, each matched alone "
          f"({iterations:,d} matches):")
    for client, name, value in LINES:
        match = _VALUES[name].match
        if match(value) is None:
            raise SystemExit(f"{client}'s {name.decode()} does not match "
                             f"its pattern: {value!r}")
        for _ in range(iterations // 5):
            match(value)
        before = counter.minors
        for _ in range(iterations):
            match(value)
        each = (counter.minors - before) * nursery / iterations
        every = "  every request" if name not in _CONSTANT else ""
        if type(_VALUES[name]) is _Reader:
            every += " (read by hand)"
        print(f"    {client:9s} {name.decode():15s} {each:>8,.0f} "
              f"bytes{every}")


def child(args):
    # PyPy rounds the size asked for up (256KB is 264KB): the count takes
    # the size it reports.
    nursery = nurserySize()
    if not args.nurseryBytes <= nursery < 2 * args.nurseryBytes:
        raise SystemExit(f"PyPy's nursery is {nursery:,d} bytes: "
                         f"PYPY_GC_NURSERY={args.nursery} was not taken")
    from sipdist import jitparams
    jitparams.applyJITParameters(jitparams.DEFAULT)
    counter = MinorCount()
    print(f"{sys.implementation.name} {sys.version.split()[0]}: bytes "
          f"allocated a request, {args.requests:,d} requests per case, "
          f"nursery {nursery:,d} bytes (to within "
          f"{nursery / args.requests:,.0f} bytes)")
    for label, role, name, kind, final in CASES:
        minors, count, codes = measure(role, name, kind, args.requests,
                                       counter)
        expected = bench_hotpath.answers(kind, final, count)
        if codes != expected:
            raise SystemExit(f"{label}: answers {codes!r}, expected "
                             f"{expected!r}")
        print(f"  {label:40s} {minors * nursery / count:>9,.0f} bytes")
    if args.patterns:
        patterns(args.requests, counter, nursery)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=60000,
                        help="requests counted per case")
    parser.add_argument("--nursery", default="1MB",
                        help="PyPy's nursery for the count (PYPY_GC_NURSERY)")
    parser.add_argument("--patterns", action="store_true",
                        help="also each header pattern of the fast path's "
                        "scan, matched alone")
    args = parser.parse_args()
    if sys.implementation.name != "pypy":
        sys.exit("bench_allocations.py needs PyPy (its nursery's minor "
                 "collections count what a request allocates): run it with "
                 "pypy3")
    if args.requests < 2:
        sys.exit("--requests must be at least 2")
    try:
        args.nurseryBytes = parseSize(args.nursery)
    except ValueError as e:
        sys.exit(f"--nursery: {e}")
    if os.environ.get(_CHILD):
        child(args)
        return
    environment = dict(os.environ, PYPY_GC_NURSERY=args.nursery.strip().upper(),
                       **{_CHILD: "1"})
    done = subprocess.run([sys.executable, os.path.abspath(__file__)]
                          + sys.argv[1:], env=environment)
    sys.exit(done.returncode)


if __name__ == "__main__":
    main()
