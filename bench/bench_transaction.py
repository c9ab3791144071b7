# -*- test-case-name: tests.test_transaction -*-
"""
Benchmark of L{sipdist.sip.transaction}: non-INVITE server transactions
created, answered (200, built with L{responseTo}) and terminated per second
on one core, time driven by a L{task.Clock}.

Requests are parsed before the clock starts (parsing is the message
layer's cost, measured apart); the flow's C{send} does nothing.

    /tmp/venv/bin/python bench/bench_transaction.py [count]

Scenarios:
  - tcp: reliable flow, the transaction ends with its final response (J=0);
  - udp: the transaction waits for timer J; the clock is advanced past
    64*T1 every C{batch} requests, so at most C{batch} timers are pending
    (L{task.Clock} re-sorts its whole list on every C{callLater}, unlike a
    real reactor's heap, so bigger batches measure the Clock, not us);
  - udp+retransmission: as udp, each request also arrives a second time
    and is absorbed;
  - udp, heap timers: as udp, but timers on a real (unstarted) reactor's
    heap with a fake time source, the clock advanced every 10000 requests:
    closer to production, where timer J keeps 32 s worth of transactions.
"""

import sys
import time

from twisted.internet.task import Clock

from sipdist.sip.message import newBranch, parseMessage, responseTo
from sipdist.sip.transaction import TransactionLayer


class NullFlow:
    transport = "UDP"
    reliable = False
    remote = ("192.0.2.1", 5060)

    def __init__(self, reliable):
        self.reliable = reliable
        self.transport = "TCP" if reliable else "UDP"
        self.sent = 0

    def send(self, message):
        self.sent += 1
        return True


class AnsweringUser:
    """
    Answers every request 200 at once.
    """

    def requestReceived(self, request, transaction):
        transaction.respond(responseTo(request, 200))

    def cancelReceived(self, request, transaction, cancelled):
        transaction.respond(responseTo(request, 200))

    def ackReceived(self, request, flow):
        pass

    def responseReceived(self, response, flow):
        pass

    def transactionFailed(self, transaction, reason):
        pass


def makeRequests(count):
    requests = []
    for i in range(count):
        data = (
            f"OPTIONS sip:bob@example.com SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 192.0.2.1:5060;branch={newBranch()}\r\n"
            f"Max-Forwards: 70\r\n"
            f"From: <sip:alice@example.com>;tag=a{i}\r\n"
            f"To: <sip:bob@example.com>\r\n"
            f"Call-ID: bench-{i}\r\n"
            f"CSeq: 1 OPTIONS\r\n"
            f"Content-Length: 0\r\n\r\n").encode("ascii")
        requests.append(parseMessage(data))
    return requests


class HeapTime:
    """
    A real reactor's timer heap (C{callLater}, C{runUntilCurrent}) on a fake
    time source; the reactor is never run nor installed.
    """

    def __init__(self):
        from twisted.internet.selectreactor import SelectReactor
        self.now = 0.0
        self.reactor = reactor = SelectReactor()
        reactor.seconds = lambda: self.now
        self.callLater = reactor.callLater
        self.seconds = reactor.seconds

    def advance(self, amount):
        self.now += amount
        self.reactor.runUntilCurrent()

    def getDelayedCalls(self):
        return self.reactor.getDelayedCalls()


def run(name, count, reliable, retransmit=False, batch=100, clock=None):
    requests = makeRequests(count)
    if clock is None:
        clock = Clock()
    layer = TransactionLayer(clock, AnsweringUser(), maxTransactions=count)
    flow = NullFlow(reliable)
    received = layer.messageReceived
    advance = clock.advance
    J = 64 * layer.T1 + 0.001
    start = time.perf_counter()
    for i, request in enumerate(requests):
        received(request, flow)
        if retransmit:
            received(request, flow)
        if not reliable and i % batch == batch - 1:
            advance(J)
    advance(J)
    elapsed = time.perf_counter() - start
    assert layer.active == 0 and not clock.getDelayedCalls(), layer.stats()
    assert layer.serverCreated == count
    print(f"{name:22s} {count:7d} transactions in {elapsed:6.3f} s: "
          f"{count / elapsed:9.0f} /s, {flow.sent} messages sent")


def main(argv):
    count = int(argv[1]) if len(argv) > 1 else 50000
    print(f"{sys.implementation.name} {sys.version.split()[0]}")
    run("tcp", count, reliable=True)
    run("udp (timer J)", count, reliable=False)
    run("udp+retransmission", count, reliable=False, retransmit=True)
    run("udp, heap timers", count, reliable=False, batch=10000,
        clock=HeapTime())


if __name__ == "__main__":
    main(sys.argv)
