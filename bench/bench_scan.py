"""
What the fast path's scan costs per header line of a REGISTER, on the
interpreter that runs it: each line's value matched by its pattern
(sipdist.roles.fastchallenge's table, the Authorization value's
parameters picked out as the scan does), as SIPp, baresip and linphone
write them.

    python bench/bench_scan.py [--iterations 200000] [--runs 3]

Each pattern is matched alone in a loop of --iterations (PyPy's JIT
compiles it after the first tenth, which is not counted), best of --runs;
the lines whose value changes with every request or login (Via, From,
Call-ID, Authorization) are matched at every request, the others once per
distinct line (the scan remembers them).  Prints microseconds per match
and the sum of the lines matched at every request.  Regular expressions
cost PyPy about as much as CPython (its JIT compiles each repetition in a
pattern as a loop of its own, entered once a match): this tells which
lines cost the most on each.  Every value is checked to match first: a
pattern changed so that a client's line no longer matches fails here.
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))

from sipdist.roles.fastchallenge import (  # noqa: E402
    _CONSTANT, _VALUES, _Reader)

# (client, header, value): the lines of SIPp's authenticated REGISTER
# (bench/sipp's scenarios, as captured), then lines written the way baresip
# and linphone write theirs (their form; the values are made up).
LINES = [
    ("SIPp", b"Via", b"SIP/2.0/UDP 127.0.0.1:33228;branch=z9hG4bK-25845-1-3"),
    ("SIPp", b"Max-Forwards", b"70"),
    ("SIPp", b"From", b"<sip:alice@example.com>;tag=25845SIPpTag001"),
    ("SIPp", b"To", b"<sip:alice@example.com>"),
    ("SIPp", b"Call-ID", b"1-25845@127.0.0.1"),
    ("SIPp", b"CSeq", b"2 REGISTER"),
    ("SIPp", b"Contact", b"<sip:alice@127.0.0.1:33228;transport=UDP>"),
    ("SIPp", b"Expires", b"300"),
    ("SIPp", b"Authorization",
     b'Digest username="alice",realm="example.com",cnonce="6b8b4567",'
     b'nc=00000001,qop=auth,uri="sip:example.com",'
     b'nonce="AAAAAGsRpDoXbAWdWnYV3sA-J9hTcufX9deIAJ4iR4k",'
     b'response="6b51b9fcdd33c9b9cc2b1b0bc8cc2bf1",algorithm=MD5'),
    ("SIPp", b"User-Agent", b"SIPp sipdist register_auth"),
    ("SIPp", b"Content-Length", b"0"),
    ("baresip", b"Via",
     b"SIP/2.0/UDP 127.0.0.1:40392;branch=z9hG4bK6e6d0d1b6a3f6c9b;rport"),
    ("baresip", b"Contact",
     b'<sip:alice-0x55d6@127.0.0.1:40392;transport=udp>;expires=60;'
     b'+sip.instance="<urn:uuid:4e8b1d2a-3c5f-4a6b-9d7e-1f2a3b4c5d6e>";'
     b"reg-id=1"),
    ("baresip", b"Allow",
     b"INVITE,ACK,BYE,CANCEL,OPTIONS,NOTIFY,SUBSCRIBE,INFO,MESSAGE,UPDATE,"
     b"REFER"),
    ("baresip", b"Supported", b"outbound,path,gruu,replaces"),
    ("linphone", b"Authorization",
     b'Digest realm="example.com", nonce="AAAAAGsRpDoXbAWdWnYV3sA-J9hTcufX'
     b'9deIAJ4iR4k", algorithm=MD5, username="carol", uri="sip:example.com'
     b'", response="4cf0c8a3a2b5d1e6f7a8b9c0d1e2f3a4", cnonce="ZmV3eW9u'
     b'ZGVy", nc=00000001, qop=auth'),
    ("linphone", b"To", b"sip:carol@example.com"),
]


def timeMatch(match, value, iterations, runs):
    """
    The best of C{runs} loops of C{iterations} matches, in microseconds a
    match (the first tenth of each loop not counted).
    """
    best = float("inf")
    for _ in range(runs):
        for _ in range(iterations // 10):
            match(value)
        start = time.perf_counter()
        for _ in range(iterations):
            match(value)
        best = min(best, time.perf_counter() - start)
    return best / iterations * 1e6


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iterations", type=int, default=200000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    for client, name, value in LINES:
        if _VALUES[name].match(value) is None:
            raise SystemExit(f"{client}'s {name.decode()} does not match "
                             f"its pattern: {value!r}")
    print(f"{sys.implementation.name} {sys.version.split()[0]}: "
          f"us a match, best of {args.runs} loops of {args.iterations:,d}")
    sipp = 0.0
    for client, name, value in LINES:
        cost = timeMatch(_VALUES[name].match, value, args.iterations,
                         args.runs)
        every = name not in _CONSTANT
        if every and client == "SIPp":
            sipp += cost
        # On PyPy the lines that differ in every request are read by hand
        # (fastchallenge.HAND_READERS): those readers are timed.
        hand = " (read by hand)" if type(_VALUES[name]) is _Reader else ""
        print(f"  {client:9s} {name.decode():15s} {len(value):4d} bytes "
              f"{cost:7.3f}{'  every request' if every else ''}{hand}")
    print(f"  SIPp's REGISTER: {sipp:.3f} us in the lines matched at every "
          f"request")


if __name__ == "__main__":
    main()
