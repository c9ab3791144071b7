"""
What the bindings file costs a home (sipdist.services.bindings): the time
the reactor spends in one flush of N changed users, in a compaction, and
in reading the file back on start; the file's size.  No network: the
registrar on a task.Clock, REGISTERs parsed once and applied N times.

    python bench/bench_bindings.py [--users 10000]
"""

import argparse
import os
import tempfile
import time

from twisted.internet.task import Clock

from sipdist.services.bindings import BindingsJournal
from sipdist.services.registrar import Registrar
from sipdist.sip.message import parseMessage


class Flow:
    transport = "UDP"

    def __init__(self, n):
        self.token = f"u0-192.0.2.{n % 250}-{5060 + n % 1000}"


def request(user):
    text = (f"REGISTER sip:example.com SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK{user}\r\n"
            f"From: <sip:{user}@example.com>;tag=1\r\n"
            f"To: <sip:{user}@example.com>\r\nCall-ID: {user}\r\n"
            f"CSeq: 1 REGISTER\r\nMax-Forwards: 70\r\n"
            f"Contact: <sip:{user}@192.0.2.1:5060>;+sip.instance="
            f"\"<urn:uuid:{user}>\";reg-id=1\r\n"
            f"Path: <sip:edge.example.com;lr>\r\nContent-Length: 0\r\n\r\n")
    return parseMessage(text.encode())


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=10000)
    args = parser.parse_args()
    clock = Clock()
    clock.advance(1e9)
    path = os.path.join(tempfile.mkdtemp(), "bindings")
    journal = BindingsJournal(clock, path)
    registrar = Registrar(clock, journal=journal)
    start = time.perf_counter()
    for n in range(args.users):
        user = f"u{n}"
        registrar.register(f"sip:{user}@example.com", request(user), Flow(n))
    registering = time.perf_counter() - start
    flush = longest = 0
    while journal._dirty:
        start = time.perf_counter()
        journal.flush()
        took = time.perf_counter() - start
        flush += took
        longest = max(longest, took)
    start = time.perf_counter()
    journal.compact()
    compact = time.perf_counter() - start
    size = os.path.getsize(path)
    registrar.stop()
    start = time.perf_counter()
    restored = BindingsJournal(clock, path).load(lambda token: token)
    load = time.perf_counter() - start
    print(f"{args.users} users: registering (parse + registrar) "
          f"{registering:.3f} s; writing them {flush * 1000:.0f} ms "
          f"(longest slice {longest * 1000:.0f} ms); "
          f"compaction at start {compact * 1000:.0f} ms; file {size / 1e6:.1f} MB; "
          f"read back {len(restored)} users in {load * 1000:.0f} ms")


if __name__ == "__main__":
    main()
