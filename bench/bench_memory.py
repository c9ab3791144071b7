"""
What a half-open INVITE and a slow connection cost in memory, measured
with tracemalloc in one process (no sockets):

  - a home server built with buildServer on a task.Clock is fed INVITEs
    over a fake UDP port; each is challenged (407) and never acknowledged,
    so each leaves an INVITE server transaction waiting 64*T1 for its ACK;
  - StreamFramers are fed an unfinished header section of short lines
    (the worst case for a framer that keeps a list of lines).

    PYTHONPATH=. python bench/bench_memory.py [--invites 2000]
                                              [--connections 200]

The figures are in the Limits section of docs/security.rst;
tests/test_resources.py measures the same on a real process.
"""

import argparse
import gc
import tracemalloc

from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock

from sipdist.server import buildServer
from sipdist.sip.message import StreamFramer
from sipdist.sip.transport import SIPDatagramProtocol
from sipdist.store import ServerRecord
from sipdist.store.memory import MemoryAssignmentStore

BODY = ("v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\n"
        "t=0 0\r\nm=audio 4000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n")


class DiscardingUDP:
    """
    The transport of a UDP port that sends nowhere.
    """

    def write(self, data, addr):
        pass

    def getHost(self):
        return IPv4Address("UDP", "127.0.0.1", 5060)


def invite(i):
    return (f"INVITE sip:bob@example.com SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK{i:08d}x;rport\r\n"
            f"Max-Forwards: 70\r\nFrom: <sip:mallory@example.com>;tag=t{i}\r\n"
            f"To: <sip:bob@example.com>\r\nCall-ID: c{i}@10.0.0.1\r\n"
            f"CSeq: 1 INVITE\r\nContact: <sip:mallory@10.0.0.1:5060>\r\n"
            f"Content-Type: application/sdp\r\n"
            f"Content-Length: {len(BODY)}\r\n\r\n{BODY}").encode("ascii")


def perInvite(count):
    store = MemoryAssignmentStore()
    store.addServer(ServerRecord("home1", "sip:127.0.0.1:5070"))
    store.assignUser("bob@example.com", "home1")
    config = {"role": "home", "name": "home1", "domain": "example.com",
              "listen": [], "credentials": "memory:bob:pw",
              "secret": "bench-secret-0123456789"}
    service = buildServer(config, Clock(), store=store)
    layer = service.transport
    port = SIPDatagramProtocol(layer, 0)
    port.transport = DiscardingUDP()
    port.startProtocol()
    layer._datagram.append(port)
    source = ("10.0.0.1", 5060)
    for i in range(50):  # warm the caches
        layer.datagramReceived(port, invite(10 ** 7 + i), source)
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for i in range(count):
        layer.datagramReceived(port, invite(i), source)
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    active = service.transactions.active - 50
    assert active == count, (active, count)
    return (after - before) / count


def perConnection(count, lines=10000):
    framers = []
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for i in range(count):
        framer = StreamFramer(lambda data: None, lambda error: None,
                              lambda: None)
        framer.dataReceived(b"INVITE sip:bob@example.com SIP/2.0\r\n")
        for j in range(lines // 10):
            framer.dataReceived(b"X: y\r\n" * 10)
        framers.append(framer)
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return (after - before) / count, 37 + lines * 6


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--invites", type=int, default=2000)
    parser.add_argument("--connections", type=int, default=200)
    args = parser.parse_args()
    print(f"half-open INVITE: {perInvite(args.invites):.0f} bytes each "
          f"({args.invites} INVITEs)")
    cost, received = perConnection(args.connections)
    print(f"unfinished header section of {received} bytes: {cost:.0f} bytes "
          f"held per connection ({args.connections} connections)")


if __name__ == "__main__":
    main()
