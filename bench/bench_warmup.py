"""
How fast the REGISTER path warms up: logins (REGISTER -> 401, REGISTER
with credentials -> signed 301 or 200) delivered to a distributor or a
home in one process without sockets (as bench/bench_hotpath.py does), the
CPU time of each thousand printed in turn.  On PyPy the first thousands
run before the JIT has compiled the path; --pypy-jit sets its parameters
as the server's option of that name does (sipdist's default unless
given; "default" for PyPy's own).

    pypy3 bench/bench_warmup.py [--role distributor|home] [--logins 16000]
        [--pypy-jit PARAMS]
"""

import argparse
import sys
import time

sys.path.insert(0, __file__.rsplit("/bench/", 1)[0])
sys.path.insert(0, __file__.rsplit("/", 1)[0])

from bench_hotpath import prepare, register, setup  # noqa: E402

from sipdist.jitparams import (  # noqa: E402
    DEFAULT, applyJITParameters, parseJITParameters)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--role", choices=("distributor", "home"),
                        default="distributor")
    parser.add_argument("--logins", type=int, default=16000)
    parser.add_argument("--pypy-jit", default=DEFAULT)
    args = parser.parse_args()
    jit = parseJITParameters(args.pypy_jit)
    applyJITParameters(jit)
    name = "distributor" if args.role == "distributor" else "home1"
    service, protocol, udp, clock = setup(args.role, name)
    chunks = max(1, args.logins // 1000)
    answered = prepare(service, chunks * 1000)
    plain = [register(1_000_000 + i) for i in range(chunks * 1000)]
    figures = []
    start = time.process_time()
    for chunk in range(chunks):
        began = time.process_time()
        for i in range(chunk * 1000, (chunk + 1) * 1000):
            protocol.datagramReceived(plain[i], ("127.0.0.1", 5061))
            protocol.datagramReceived(answered[i], ("127.0.0.1", 5061))
        clock.advance(1)
        figures.append(time.process_time() - began)
    total = time.process_time() - start
    print(f"{sys.implementation.name} {sys.version.split()[0]}, {args.role}"
          f", JIT parameters: {jit if sys.implementation.name == 'pypy' else '-'}")
    print("  CPU ms per 1,000 logins, in turn: "
          + " ".join(f"{f * 1000:.0f}" for f in figures))
    print(f"  total {total:.2f} s; the last quarter "
          f"{2000 * len(figures[-(chunks // 4 or 1):]) / sum(figures[-(chunks // 4 or 1):]):,.0f} requests/CPU-s")


if __name__ == "__main__":
    main()
