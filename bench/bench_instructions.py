"""
Instructions per request of the REGISTER hot path, counted by Valgrind
(callgrind): a figure that does not move with the machine's load, for
changes too small to tell from the noise of requests per CPU-second on a
shared virtual machine (two runs of bench_register.py minutes apart differ
by 10 to 30% here).

    python bench/bench_instructions.py [--roles distributor,home]
        [--kinds logins,401,authenticated] [--chunk 2000] [--top 0]
        [--no-fast-path] [--shedding] [--cold BURST]

The requests are bench_hotpath.py's (alice's logins, each with fresh
credentials), prepared once in this process and handed to a server built
as bench_hotpath builds it, in a child process run under
C{valgrind --tool=callgrind}: once with one chunk of requests and once
with three; the difference, over the two chunks, is what a request costs
with the server warm (its imports, its start and the first chunk left
out).  C{logins} sends each login's two requests (a 401's REGISTER, then
the authenticated one), C{401} and C{authenticated} only one of them.
Every answer is checked; the child runs with PYTHONHASHSEED=0, so that
a count repeats exactly.  --no-fast-path sends every request down the
full path; with --shedding the overload control sheds throughout, at a
rate that admits every request (what an admitted request costs a server
at its limit).

It counts the instructions the interpreter runs in user space: not the
kernel's (the sockets are not there), not the cache misses (but see
--cold).  So it ranks
changes of the code path; requests per CPU-second (bench_register.py)
stay the figures of the issue.  --top N also prints the N C functions
that ran the most of them (the interpreter's own, the regular expression
engine, the allocator, OpenSSL).  Needs Valgrind (Debian: valgrind); a
run of the default sizes takes about a minute per case on CPython.

With --cold BURST it counts cache misses as well, with Valgrind's
cachegrind simulating this machine's caches (32 KiB L1 for instructions
and for data, 1 MiB L2: the last level it simulates), emptied before each
chunk and after every BURST requests by copying 8 MiB: what a server pays
when it wakes up after a sleep and finds its caches taken by other work.
Under bench_register.py's SIPp a server reads about 24 datagrams a
wake-up (some 330 wake-ups a second), and on the virtual machine of 4
December 2026 the same logins cost 30 to 34 us a request without sleeps
and 42 to 59 with a sleep of 3 ms every 24 (bench_hotpath.py --burst 24,
three pairs of runs): 230 to 700 us more a burst, which the lines read
past the L2 after each wake-up (about 6,600 a burst) account for at 35
to 105 ns each.  It prints, per request: the instructions, the L1 misses
(instructions and data) and the L2 misses.  The copies' own misses are
counted in a third run and left out.  (--top is for the instruction
counts only.)
"""

import argparse
import os
import pickle
import re
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))

KINDS = ("logins", "401", "authenticated")
_COLLECTED = re.compile(r"Collected : (\d+)")


def _name(role):
    return "distributor" if role == "distributor" else "home1"


def prepare(role, chunk, chunks=3):
    """
    C{chunks} lists of C{chunk} logins each (two requests a login), for a
    server of C{role} built by L{child}.
    """
    import bench_hotpath
    service = bench_hotpath.setup(role, _name(role))[0]
    return [bench_hotpath.logins(service, chunk, n * chunk)
            for n in range(chunks)]


# What the caches are emptied with (--cold): a copy of 8 MiB, eight times
# the simulated L2.
_FLUSH = 8 << 20


def child(role, kind, chunks, path, fast=True, shedding=False, burst=0,
          flushes=0):
    """
    Run C{chunks} chunks of the prepared requests of C{path} through a
    server of C{role}; exit non-zero if an answer is not the expected one.

    @param burst: if not 0, empty the caches before each chunk and after
        every C{burst} requests.
    @param flushes: then empty them this many times more, with no request
        (what the emptying itself costs).
    """
    import bench_hotpath
    service, protocol, udp, clock = bench_hotpath.setup(role, _name(role))
    service.transport.fastPath.enabled = fast
    if shedding:
        service.transactions.overload.limit(1e9)
        clock.advance(0.01)
    with open(path, "rb") as f:
        prepared = pickle.load(f)
    final = b"301" if role == "distributor" else b"200"
    # Each login's two requests, or one of them, and their answers.
    part, codes = {"logins": (slice(None), (b"401", final)),
                   "401": (slice(0, None, 2), (b"401",)),
                   "authenticated": (slice(1, None, 2), (final,))}[kind]
    logins = 0
    flush = None
    if burst or flushes:
        target, source = bytearray(_FLUSH), bytes(_FLUSH)

        def flush():
            target[:] = source
    for requests in prepared[:chunks]:
        logins += len(requests) // 2
        if burst:
            flush()
        # Emptied again after every burst (bench_hotpath.run's pause).
        bench_hotpath.run(protocol, clock, requests[part], burst, flush)
    for _ in range(flushes):
        flush()
    expected = dict.fromkeys(codes, logins)
    if udp.codes != expected:
        sys.exit(f"answers {udp.codes!r}, expected {expected!r}")


def underValgrind(tool, role, kind, chunks, path, options=()):
    """
    Run L{child} under Valgrind with the options C{tool} (the tool and its
    own), C{options} given to the child; exit in one line if it fails.

    @return: what Valgrind wrote on its standard error.
    """
    argv = ["valgrind", *tool, sys.executable, os.path.abspath(__file__),
            "--child", role, kind, str(chunks), path, *options]
    done = subprocess.run(argv, capture_output=True, text=True,
                          timeout=3600, env=_ENVIRONMENT)
    if done.returncode != 0:
        sys.exit(f"{role} {kind}: valgrind run failed "
                 f"(exit {done.returncode}): {done.stderr[-600:]}")
    return done.stderr


def collected(role, kind, chunks, path, out=None, options=()):
    """
    The instructions callgrind counted in a child run.
    """
    stderr = underValgrind(
        ["--tool=callgrind", f"--callgrind-out-file={out or os.devnull}"],
        role, kind, chunks, path, options)
    found = _COLLECTED.search(stderr)
    if found is None:
        sys.exit(f"{role} {kind}: no count from callgrind: {stderr[-600:]}")
    return int(found.group(1))


# The child's environment: the same hash seed in every run, so that the
# tables' probes (str and bytes keys) are the same from run to run.
_ENVIRONMENT = dict(os.environ, PYTHONHASHSEED="0")

# The simulated caches of --cold: size, ways, line size.
_CACHES = ("--I1=32768,8,64", "--D1=32768,8,64", "--LL=1048576,16,64")


def cacheCounts(role, kind, chunks, path, options=(), burst=24, flushes=0):
    """
    The events cachegrind counted in a child run that empties the caches
    before each chunk and after every C{burst} requests (and C{flushes}
    times more at the end):
    a L{dict} of C{Ir} (instructions), C{I1mr}, C{D1mr}, C{D1mw} (L1
    misses), C{ILmr}, C{DLmr}, C{DLmw} (last level misses).
    """
    with tempfile.NamedTemporaryFile(suffix=".cachegrind") as out:
        underValgrind(["--tool=cachegrind", "--cache-sim=yes", *_CACHES,
                       f"--cachegrind-out-file={out.name}"],
                      role, kind, chunks, path,
                      ["--child-burst", str(burst),
                       "--child-flushes", str(flushes), *options])
        return summary(out.name)


def summary(path):
    """
    The totals of a cachegrind output file, by event name.
    """
    events = None
    with open(path) as f:
        for line in f:
            if line.startswith("events:"):
                events = line.split()[1:]
            elif line.startswith("summary:") and events:
                return dict(zip(events, map(int, line.split()[1:])))
    sys.exit(f"no summary in {path}")


def functions(path):
    """
    Instructions by C function in a callgrind output file.
    """
    done = subprocess.run(["callgrind_annotate", "--threshold=100", path],
                          capture_output=True, text=True, check=True)
    counts = {}
    for line in done.stdout.splitlines():
        found = re.match(r"\s*([\d,]+) \(\s*[\d.]+%\)\s+(.*)", line)
        if found and "PROGRAM TOTALS" not in found.group(2):
            name = found.group(2).split(" [")[0].rsplit("/", 1)[-1]
            counts[name] = (counts.get(name, 0)
                            + int(found.group(1).replace(",", "")))
    return counts


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--roles", default="distributor,home")
    parser.add_argument("--kinds", default="logins")
    parser.add_argument("--chunk", type=int, default=2000,
                        help="logins per chunk")
    parser.add_argument("--top", type=int, default=0,
                        help="also print the C functions that ran the most")
    parser.add_argument("--no-fast-path", action="store_true",
                        help="every request down the full path")
    parser.add_argument("--shedding", action="store_true",
                        help="the overload control shedding, at a rate "
                        "that admits every request")
    parser.add_argument("--cold", type=int, default=0, metavar="BURST",
                        help="count cache misses too, the caches emptied "
                        "before every BURST requests (cachegrind)")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    parser.add_argument("--child-burst", type=int, default=0,
                        help=argparse.SUPPRESS)
    parser.add_argument("--child-flushes", type=int, default=0,
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        role, kind, chunks, path = args.child
        child(role, kind, int(chunks), path, not args.no_fast_path,
              args.shedding, args.child_burst, args.child_flushes)
        return
    options = (["--no-fast-path"] if args.no_fast_path else []) + (
        ["--shedding"] if args.shedding else [])
    roles = [r for r in args.roles.split(",") if r]
    kinds = [k for k in args.kinds.split(",") if k]
    for value, known in ((roles, ("distributor", "home")), (kinds, KINDS)):
        unknown = sorted(set(value) - set(known))
        if unknown:
            sys.exit(f"unknown: {', '.join(unknown)} (known: "
                     f"{', '.join(known)})")
    if args.chunk < 1:
        sys.exit("--chunk must be at least 1")
    if args.cold < 0:
        sys.exit("--cold must not be negative")
    if args.cold and args.top:
        sys.exit("--top counts instructions only: not with --cold")
    if shutil.which("valgrind") is None:
        sys.exit("bench_instructions.py needs Valgrind (Debian: valgrind)")
    print(f"{sys.implementation.name} {sys.version.split()[0]}: "
          + (f"instructions and cache misses per request counted by "
             f"cachegrind, the caches emptied every {args.cold} requests "
             if args.cold else
             "instructions per request counted by callgrind ")
          + f"(two chunks of {args.chunk:,d} logins, the server warm"
          + "".join(f", {o[2:]}" for o in options) + ")")
    with tempfile.TemporaryDirectory() as work:
        for role in roles:
            path = os.path.join(work, f"{role}.pickle")
            with open(path, "wb") as f:
                pickle.dump(prepare(role, args.chunk), f)
            for kind in kinds:
                perLogin = 2 if kind == "logins" else 1
                requests = 2 * args.chunk * perLogin
                if args.cold:
                    cold(role, kind, path, options, args.cold,
                         args.chunk * perLogin, requests)
                    continue
                outs = [os.path.join(work, f"{role}-{kind}-{n}.out")
                        for n in (1, 3)] if args.top else [None, None]
                one = collected(role, kind, 1, path, outs[0], options)
                three = collected(role, kind, 3, path, outs[1], options)
                each = (three - one) / requests
                print(f"  {role:12s} {kind:14s} {each:>10,.0f} "
                      f"instructions/request")
                if args.top:
                    before, after = functions(outs[0]), functions(outs[1])
                    spent = {name: (after.get(name, 0)
                                    - before.get(name, 0)) / requests
                             for name in set(before) | set(after)}
                    for name, count in sorted(
                            spent.items(), key=lambda x: -x[1])[:args.top]:
                        print(f"      {count:>9,.0f} {100 * count / each:5.1f}%"
                              f"  {name}")


def cold(role, kind, path, options, burst, perChunk, requests):
    """
    Print what a request costs with the caches emptied every C{burst}
    requests: a run of one chunk (and as many emptyings alone as two
    chunks make), a run of three; the difference over C{requests}.
    """
    # The emptyings of a chunk: before it, and after each full burst.
    emptyings = 1 + perChunk // burst
    one = cacheCounts(role, kind, 1, path, options, burst, 2 * emptyings)
    three = cacheCounts(role, kind, 3, path, options, burst)
    each = {name: (three[name] - one[name]) / requests for name in three}
    l1 = each["I1mr"] + each["D1mr"] + each["D1mw"]
    l2 = each["ILmr"] + each["DLmr"] + each["DLmw"]
    print(f"  {role:12s} {kind:14s} {each['Ir']:>10,.0f} instructions, "
          f"{l1:>7,.0f} L1 misses, {l2:>6,.0f} L2 misses "
          f"({each['ILmr']:,.0f} of code) a request")


if __name__ == "__main__":
    main()
