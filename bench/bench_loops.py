"""
The loops a request runs, for each case of bench_hotpath.py (the same
servers in one process, without sockets): how many functions a request
enters in which a jump goes backwards, and which.

    python bench/bench_loops.py [--requests 40] [--top 12]

On PyPy a loop in a function the JIT inlines into the request's path is
entered through its own compiled code, for which the function's frame must
be made (some 500 bytes of the nursery and 40 ns or more a time; a few
hundred ns for a comprehension whose exit needs a bridge): a figure the
machine's load does not move, as bench_allocations.py's bytes are, and
the count that tests/test_hotloops.py holds the fast paths to.  The
requests are traced opcode by opcode (sys.settrace), after a warm-up of
2,000 untraced ones and 2 traced ones; either interpreter gives the same
count but for the scan, which reads some lines by hand on PyPy
(fastchallenge.HAND_READERS).  (CPython 3.12 and later run a
comprehension in its function's frame: it counts as that function's
loop there.)  A function that loops counts once a call, whatever its
turns; the turns are given apart (back-edges).
"""

import argparse
import collections
import functools
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import bench_hotpath  # noqa: E402

WARMUP = 2000


def traced(protocol, clock, requests):
    """
    Handle C{requests}, tracing every opcode.

    @return: C{(loops, turns)}: L{collections.Counter}s by function
        (C{file:line name}) of the calls in which a jump went backwards,
        and of those jumps.
    """
    loops = collections.Counter()
    turns = collections.Counter()

    def tracer(frame, event, arg):
        frame.f_trace_opcodes = True
        code = frame.f_code
        name = (f"{os.path.basename(code.co_filename)}:"
                f"{code.co_firstlineno} {code.co_name}")
        state = [-1, False]

        def local(frame, event, arg):
            if event == "opcode":
                if frame.f_lasti < state[0]:
                    turns[name] += 1
                    if not state[1]:
                        state[1] = True
                        loops[name] += 1
                state[0] = frame.f_lasti
            return local
        return local

    sys.settrace(tracer)
    try:
        bench_hotpath.run(protocol, clock, requests)
    finally:
        sys.settrace(None)
    return loops, turns


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=40)
    parser.add_argument("--top", type=int, default=12)
    args = parser.parse_args()
    print(f"{sys.implementation.name} {sys.version.split()[0]}: functions "
          f"that loop, a request ({args.requests} traced per case)")
    for label, role, name, kind, expect in bench_hotpath.CASES:
        service, protocol, udp, clock = bench_hotpath.setup(role, name)
        make = functools.partial(bench_hotpath.batch, service, kind)
        bench_hotpath.run(protocol, clock, make(0, WARMUP))
        # Traced once untold: on CPython 3.12 and later the first traced
        # call of a function gives no opcode events.
        traced(protocol, clock, make(WARMUP, 2))
        udp.codes.clear()
        requests = make(WARMUP + 2, args.requests)
        loops, turns = traced(protocol, clock, requests)
        sent = len(requests)
        wanted = bench_hotpath.answers(kind, expect, sent)
        assert udp.codes == wanted, (udp.codes, wanted)
        # The bench's own loop over the requests is not the server's.
        for counter in (loops, turns):
            for key in [k for k in counter if k.startswith("bench_")]:
                del counter[key]
        print(f"  {label:36s} {sum(loops.values()) / sent:5.1f} "
              f"({sum(turns.values()) / sent:.1f} back-edges)")
        for function, count in loops.most_common(args.top):
            print(f"      {count / sent:5.2f}  {turns[function] / sent:5.1f}"
                  f"  {function}")


if __name__ == "__main__":
    main()
