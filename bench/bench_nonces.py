"""
What the nonce-count table (L{sipdist.auth.nonce.NonceCounts}) costs an
authenticated request carrying a nonce it has not seen: C{accepts} then
C{use}, as the fast paths do, while the table fills and once it is full.

    python bench/bench_nonces.py [--size 100000] [--nonces 50000]

The table holds C{--size} nonces (the server's default); each login brings
a new one, so under a sustained load it is full after that many logins and
every new nonce then takes the place of one issued earlier.  Nonces are
minted 4,000 a second of a clock the script advances.  Prints microseconds
per nonce, CPU time: the table filling (its first C{--nonces}), then full.
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))

from twisted.internet.task import Clock  # noqa: E402

from sipdist.auth.nonce import NonceCounts, NonceFactory  # noqa: E402


def run(factory, clock, counts, count):
    """
    Mint C{count} nonces, then time C{accepts} and C{use} of each.

    @return: microseconds per nonce.
    """
    nonces = []
    for _ in range(count):
        clock.advance(1 / 4000)
        nonces.append(factory.mint())
    issued = factory.issued
    start = time.process_time()
    for nonce in nonces:
        when = issued(nonce)
        if not (counts.accepts(nonce, when, 1) and counts.use(nonce, when, 1)):
            raise SystemExit("a new nonce was refused")
    return (time.process_time() - start) / count * 1e6


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=100000)
    parser.add_argument("--nonces", type=int, default=50000)
    args = parser.parse_args()
    clock = Clock()
    clock.advance(1000)
    factory = NonceFactory(b"bench-secret-0123456789", "example.com", clock)
    counts = NonceCounts(args.size)
    print(f"{sys.implementation.name}: a table of {args.size:,d} nonces")
    print(f"  filling:   {run(factory, clock, counts, args.nonces):6.2f} us "
          "per new nonce")
    # Fill it, then measure twice (the first on PyPy warms the JIT up).
    run(factory, clock, counts, args.size)
    for _ in range(2):
        print(f"  full:      {run(factory, clock, counts, args.nonces):6.2f} "
              "us per new nonce")


if __name__ == "__main__":
    main()
