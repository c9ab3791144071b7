"""
The instructions one 401 challenge costs a distributor (the first REGISTER
of a login, without credentials), on the fast path or the full path, counted
with callgrind: run it twice, delivering the requests or not, and divide the
difference by their number.  With --case 301, the authenticated REGISTER
that gets the distributor's signed 301; with --case 200, the one a home
registers and answers with its signed 200.

    PYTHONHASHSEED=0 valgrind --tool=callgrind \\
        --callgrind-out-file=/dev/null \\
        python bench/count_challenge.py [--requests 3000] [--deliver] \\
        [--no-fast-path] [--case 401|301|200] [--shedding]

With --deliver it also prints the CPU time per request (best of --runs),
which is what to read without valgrind.  With --shedding the overload
control sheds throughout at a rate that admits every request (what an
admitted request costs a server at its limit).
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_hotpath import prepare, register, setup  # noqa: E402

WARMUP = 200


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--deliver", action="store_true",
                        help="deliver the requests (else only build them)")
    parser.add_argument("--no-fast-path", action="store_true")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--case", choices=("401", "301", "200"),
                        default="401")
    parser.add_argument("--shedding", action="store_true")
    args = parser.parse_args()
    best = float("inf")
    for run in range(args.runs):
        if args.case == "200":
            service, protocol, udp, clock = setup("home", "home1")
        else:
            service, protocol, udp, clock = setup("distributor",
                                                  "distributor")
        fast = service.transport.fastPath
        fast.enabled = not args.no_fast_path
        if args.shedding:
            service.transactions.overload.limit(1e9)
            clock.advance(0.01)
        if args.case == "401":
            warm = [register(i) for i in range(WARMUP)]
            requests = [register(WARMUP + i) for i in range(args.requests)]
        else:
            warm = prepare(service, WARMUP)
            requests = prepare(service, args.requests, WARMUP)
        for data in warm:
            protocol.datagramReceived(data, ("127.0.0.1", 5061))
        start = time.process_time()
        if args.deliver:
            for i, data in enumerate(requests):
                protocol.datagramReceived(data, ("127.0.0.1", 5061))
                if i % 1000 == 999:
                    clock.advance(1)
        best = min(best, time.process_time() - start)
        expected = f"SIP/2.0 {args.case} ".encode("ascii")
        assert udp.last.startswith(expected), udp.last[:40]
    if args.deliver:
        print(f"fast path {'on' if fast.enabled else 'off'}: took "
              f"{fast.taken:,d}; {best / args.requests * 1e6:.1f} "
              f"CPU-us per request (best of {args.runs})")


if __name__ == "__main__":
    main()
