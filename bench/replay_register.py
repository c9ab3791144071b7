"""
Hand the requests a server received under SIPp, captured with their times,
to the same kind of server in one process: what the requests' own work
costs without the sockets, the event loop and the other processes on the
machine.

    python bench/profile_register.py --repeat 3 --pcap /tmp/requests.pcap
    python bench/replay_register.py /tmp/requests.pcap [--role distributor]
        [--chunk 20000] [--t1 0.5] [--max-transactions 100000]
        [--max-nonces 100000]

The server is configured as bench/bench_register.py configures its own (the
same secret, realm, password and redirect rule, and on PyPy the JIT
parameters a server sets), from memory, so the nonces
in the captured requests are good here too: the clock follows the
captured times (the nonces' lifetime, timer J).  Its answers go nowhere.
Prints the CPU time per datagram of each chunk of C{--chunk} datagrams in
turn (PyPy's JIT warms up over the first ones) and the answers by status
code.  Set beside the server's own figure (profile_register.py, requests
per CPU-second) and bench_hotpath.py's logins, it tells the cost of the
requests' shape and of the server's state (its tables, filled as the
capture went) from that of running as a server.  C{--t1} changes timer J
(64 T1) and C{--max-transactions} the bound of the transaction table
(when the completed transactions fill it, the oldest are ended early), as
the server's options of those names do; C{--max-nonces} the size of the
table of nonce counts (which has no option: it is replaced here).  Once a
table is full its oldest entries make way for new ones, and its cost
changes.
"""

import argparse
import collections
import os
import struct
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))

from bench_hotpath import HeapClock, NullUDP  # noqa: E402
from bench_register import PASSWORD  # noqa: E402
from sipdist import jitparams  # noqa: E402
from sipdist.auth.nonce import NonceCounts  # noqa: E402
from sipdist.server import buildServer  # noqa: E402
from sipdist.sip.transport import SIPDatagramProtocol  # noqa: E402
from sipdist.store import ServerRecord  # noqa: E402
from sipdist.store.memory import MemoryAssignmentStore  # noqa: E402

# bench_register.writeConfiguration's.
SECRET = "bench-nonce-secret-0123456789"

_LINK_HEADERS = {0: 4, 1: 14, 101: 0, 113: 16}  # null, Ethernet, raw, SLL


def readPcap(path):
    """
    The UDP datagrams over IPv4 in a pcap file (not pcapng: dumpcap -P).

    @return: a L{list} of C{(time, (host, port), payload)}.
    """
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 24:
        raise SystemExit(f"{path}: not a pcap file")
    magic = data[:4]
    if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1"):
        order = "<"
    elif magic in (b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d"):
        order = ">"
    else:
        raise SystemExit(f"{path}: not a pcap file (pcapng? capture with "
                         "dumpcap -P)")
    fraction = 1e-9 if magic in (b"\x4d\x3c\xb2\xa1",
                                 b"\xa1\xb2\x3c\x4d") else 1e-6
    link = struct.unpack(order + "I", data[20:24])[0]
    if link not in _LINK_HEADERS:
        raise SystemExit(f"{path}: link type {link} not read here")
    skip = _LINK_HEADERS[link]
    record = struct.Struct(order + "IIII")
    datagrams = []
    at = 24
    while at + record.size <= len(data):
        seconds, part, length, _ = record.unpack_from(data, at)
        at += record.size
        packet = data[at:at + length]
        at += length
        ip = packet[skip:]
        if len(ip) < 28 or ip[0] >> 4 != 4 or ip[9] != 17:
            continue
        header = (ip[0] & 15) * 4
        source = ".".join(str(b) for b in ip[12:16])
        sourcePort, _, udpLength = struct.unpack_from(">HHH", ip, header)
        payload = ip[header + 8:header + udpLength]
        datagrams.append((seconds + part * fraction, (source, sourcePort),
                          payload))
    return datagrams


def server(role, t1, start, maxTransactions=100000, maxNonces=None):
    """
    A server of C{role} as bench_register's, on a clock at C{start}.

    @return: C{(protocol, clock, answers)}: the datagram protocol to hand
        the requests to, the clock, a L{collections.Counter} of the
        answers' status codes.
    """
    clock = HeapClock()
    clock._now = start
    store = MemoryAssignmentStore()
    store.addServer(ServerRecord("home1", "sip:127.0.0.1:5070"))
    store.addServer(ServerRecord("home2", "sip:127.0.0.1:9"))
    store.assignUser("alice@example.com", "home1")
    config = {"role": role,
              "name": "home1" if role == "home" else "distributor",
              "domain": "example.com", "listen": [],
              "credentials": f"memory:alice:{PASSWORD}",
              "secret": SECRET, "digest-algorithms": ["MD5"],
              "redirect-user-agent": ["^SIPp sipdist"], "t1": t1,
              "max-transactions": maxTransactions,
              "tls-client-options": lambda hostname: None}
    service = buildServer(config, clock, store=store)
    if maxNonces is not None:
        # No option of the server's: its authenticator's table, replaced.
        service.authenticator._counts = NonceCounts(maxNonces)
    protocol = SIPDatagramProtocol(service.transport, 0)
    udp = NullUDP()
    answers = collections.Counter()

    def write(data, addr):
        answers[data[8:11].decode("ascii", "replace")] += 1
    udp.write = write
    protocol.makeConnection(udp)
    return protocol, clock, answers


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("pcap")
    parser.add_argument("--role", default="distributor",
                        choices=["distributor", "home"])
    parser.add_argument("--chunk", type=int, default=20000)
    parser.add_argument("--t1", type=float, default=0.5)
    parser.add_argument("--max-transactions", type=int, default=100000)
    parser.add_argument("--max-nonces", type=int, default=None,
                        help="the size of the nonce-count table (the "
                        "server's: 100,000)")
    args = parser.parse_args()
    # On PyPy, the JIT parameters a server sets when it starts.
    jitparams.applyJITParameters(jitparams.DEFAULT)
    datagrams = readPcap(args.pcap)
    if not datagrams:
        raise SystemExit(f"{args.pcap}: no UDP datagram over IPv4")
    protocol, clock, answers = server(args.role, args.t1,
                                      datagrams[0][0] - 1,
                                      args.max_transactions,
                                      args.max_nonces)
    received = protocol.datagramReceived
    print(f"{sys.implementation.name}: {len(datagrams):,d} datagrams over "
          f"{datagrams[-1][0] - datagrams[0][0]:.1f} s, role {args.role}, "
          f"timer J {64 * args.t1:g} s")
    for first in range(0, len(datagrams), args.chunk):
        chunk = datagrams[first:first + args.chunk]
        start = time.process_time()
        for i, (when, source, data) in enumerate(chunk):
            # The clock follows the capture (timers run as they would),
            # moved every 64 datagrams.
            if not i & 63 and when > clock._now:
                clock.advance(when - clock._now)
            received(data, source)
        spent = time.process_time() - start
        print(f"  datagrams {first:>7,d} to {first + len(chunk):>7,d}: "
              f"{spent / len(chunk) * 1e6:6.1f} us each", flush=True)
    print("  answers: " + ", ".join(
        f"{count:,d} {code}" for code, count in sorted(answers.items())))


if __name__ == "__main__":
    main()
