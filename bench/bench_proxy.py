# -*- test-case-name: tests.test_proxy -*-
"""
Benchmark of L{sipdist.services.proxy}: proxied non-INVITE transactions per second
on one core, in memory.

Each transaction: a parsed OPTIONS (two Via values) goes into the
transaction layer from an upstream flow, down L{SIPServer}'s processor
chain to L{Proxy.forward}, out on a downstream flow; the next hop's 200 is
built with L{responseTo} and handed to the transaction layer, and goes
upstream.  Requests are parsed before the clock starts (parsing is the
message layer's cost, measured in bench_parse.py); flows do not serialise
(the transport's cost); time is a L{task.Clock}.

    /tmp/venv/bin/python bench/bench_proxy.py [count]

Scenarios:
  - tcp: reliable flows both ways, every transaction ends with its final
    response;
  - udp: timers J and K pending; the clock is advanced past them every
    C{batch} requests (L{task.Clock} re-sorts its list on every
    C{callLater}, so bigger batches measure the Clock, not us);
  - tcp, record-route: INVITE-less but with a Route of ours to pop and a
    Path added (REGISTER through an edge).
"""

import sys
import time

from twisted.internet import defer
from twisted.internet.task import Clock

from sipdist.sip.message import newBranch, parseMessage, responseTo
from sipdist.services.proxy import Proxy
from sipdist.server import SIPServer
from sipdist.sip.transaction import TransactionLayer
from sipdist.sip.uri import parseURI

US = ("192.0.2.10", 5060)


class NullFlow:
    """
    A flow that keeps the last message sent on it.
    """

    def __init__(self, reliable, remote):
        self.reliable = reliable
        self.transport = "TCP" if reliable else "UDP"
        self.remote = remote
        self.token = "cbench"
        self.last = None

    def send(self, message):
        self.last = message
        return True


class NullTransportLayer:
    """
    C{connect} fires at once with the downstream flow.
    """

    def __init__(self, flow):
        self.flow = flow

    def connect(self, transport, host, port):
        return defer.succeed(self.flow)

    def flowByToken(self, token):
        return None


def makeRequests(count, method="OPTIONS", route=False):
    requests = []
    for i in range(count):
        lines = [
            f"{method} sip:bob@example.com SIP/2.0",
            f"Via: SIP/2.0/UDP 198.51.100.1:5060;branch={newBranch()}",
            "Via: SIP/2.0/UDP ua.test:5062;branch=z9hG4bKua",
            "Max-Forwards: 70",
        ]
        if route:
            lines.append("Route: <sip:192.0.2.10:5060;lr;sd=1>")
        lines += [
            f"From: <sip:alice@example.com>;tag=a{i}",
            "To: <sip:bob@example.com>",
            f"Call-ID: bench-{i}",
            f"CSeq: 1 {method}",
            "Contact: <sip:alice@198.51.100.1:5060>",
            "Content-Length: 0", "", ""]
        requests.append(parseMessage("\r\n".join(lines).encode("ascii")))
    return requests


def run(count, reliable, method="OPTIONS", route=False, addPath=False,
        batch=100):
    clock = Clock()
    server = SIPServer(clock, "bench", "example.com",
                       frozenset(["example.com"]))
    layer = TransactionLayer(clock, server)
    down = NullFlow(reliable, ("192.0.2.20", 5060))
    up = NullFlow(reliable, ("198.51.100.1", 5060))
    proxy = Proxy(clock, layer, NullTransportLayer(down),
                  {"UDP": US, "TCP": US})
    nextHop = parseURI(
        "sip:192.0.2.20" + (";transport=tcp" if reliable else ""))

    def processor(request, transaction):
        proxy.forward(request, transaction, nextHop=nextHop,
                      addPath=addPath)
        return True

    server.processors.append(processor)
    requests = makeRequests(count, method, route)
    answered = 0
    start = time.perf_counter()
    for i, request in enumerate(requests):
        layer.messageReceived(request, up)
        sent = down.last
        layer.messageReceived(responseTo(sent, 200), down)
        if up.last is not None and up.last.code == 200:
            answered += 1
        if not reliable and i % batch == batch - 1:
            clock.advance(64 * layer.T1 + 1)
    elapsed = time.perf_counter() - start
    clock.advance(64 * layer.T1 + 1)
    assert answered == count, (answered, count)
    assert proxy.active == 0 and layer.active == 0, (proxy.active,
                                                     layer.active)
    return count / elapsed


def main(argv):
    count = int(argv[1]) if len(argv) > 1 else 20000
    print(f"proxied transactions per second ({count} each, one core, "
          f"Python {sys.version.split()[0]})")
    for name, kwargs in [
            ("tcp", {"reliable": True}),
            ("udp", {"reliable": False}),
            ("tcp, our Route popped, Path added (REGISTER)",
             {"reliable": True, "method": "REGISTER", "route": True,
              "addPath": True}),
    ]:
        rate = run(count, **kwargs)
        print(f"  {name:48s} {rate:10,.0f} /s  ({1e6 / rate:6.1f} us each)")


if __name__ == "__main__":
    main(sys.argv)
