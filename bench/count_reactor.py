"""
The instructions one UDP request costs a whole server process, reactor
included, layer by layer, counted with callgrind: a client socket in the
same process sends one request at a time to a real UDP port on 127.0.0.1
and reads the answer, and the server side is one of

  - raw: a blocking recvfrom and sendto of a fixed answer (the system
    calls and the client alone: the floor every other layer stands on);
  - port: Twisted's udp.Port.doRead called directly, its protocol writing
    the fixed answer with transport.write (doRead's loop and Port.write);
  - reactor: the same port run by the epoll reactor, one iteration per
    request as its main loop does (runUntilCurrent, timeout, epoll_wait,
    callWithLogger, _doReadOrWrite);
  - sipdist-port, sipdist-reactor: the same with sipdist's own UDP port
    (sipdist.sip.datagram.DatagramPort) instead of Twisted's;
  - 401, 301, 200: a sipdist distributor (the challenge, the signed 301) or
    home (the signed 200) listening through its transport layer, run by
    the reactor.

Run it twice under callgrind, delivering the requests or not (the
warm-up requests are delivered either way), and divide the difference by
their number:

    PYTHONHASHSEED=0 valgrind --tool=callgrind \\
        --callgrind-out-file=/dev/null \\
        python bench/count_reactor.py --layer LAYER [--requests 2000] \\
        [--deliver]

With --deliver it also prints the CPU time per request (client included).
"""

import argparse
import os
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))

from twisted.internet.epollreactor import EPollReactor  # noqa: E402
from twisted.internet.protocol import DatagramProtocol  # noqa: E402

ANSWER = (b"SIP/2.0 301 Moved Permanently\r\n"
          b"Via: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-1\r\n"
          b"Content-Length: 0\r\n\r\n")
WARMUP = 200


class Echo(DatagramProtocol):
    noisy = False

    def datagramReceived(self, data, addr):
        self.transport.write(ANSWER, addr)


def server(layer, reactor):
    """
    The server side: a callable run once per request, the address to
    send to, and the requests (warm-up, counted) as a callable of counts.
    """
    from bench_hotpath import register
    if layer == "raw":
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))

        def step():
            data, addr = sock.recvfrom(65536)
            sock.sendto(ANSWER, addr)
        return step, sock.getsockname(), register
    if layer in ("port", "reactor", "sipdist-port", "sipdist-reactor"):
        if layer.startswith("sipdist"):
            from sipdist.sip.datagram import listenDatagram
            port = listenDatagram(reactor, 0, Echo(), interface="127.0.0.1")
        else:
            port = reactor.listenUDP(0, Echo(), interface="127.0.0.1")
        if layer.endswith("port"):
            return port.doRead, ("127.0.0.1", port.getHost().port), register
        return iteration(reactor), ("127.0.0.1", port.getHost().port), \
            register
    from bench_hotpath import prepare
    from sipdist.server import buildServer
    from sipdist.store import ServerRecord
    from sipdist.store.memory import MemoryAssignmentStore
    store = MemoryAssignmentStore()
    store.addServer(ServerRecord("home1", "sip:127.0.0.1:5070"))
    store.addServer(ServerRecord("home2", "sip:127.0.0.1:5080"))
    store.assignUser("alice@example.com", "home1")
    role, name = ("home", "home1") if layer == "200" else (
        "distributor", "distributor")
    config = {"role": role, "name": name, "domain": "example.com",
              "listen": [], "credentials": "memory:alice:wonderland",
              "secret": "bench-secret-0123456789",
              "digest-algorithms": ["MD5"],
              "redirect-user-agent": ["^bench$"],
              "tls-client-options": lambda hostname: None}
    service = buildServer(config, reactor, store=store)
    port = service.transport.listen("udp:0:interface=127.0.0.1").result
    address = ("127.0.0.1", port.getHost().port)
    if layer == "401":
        return iteration(reactor), address, register

    def requests(i):
        return prepare(service, 1, i)[0]
    return iteration(reactor), address, requests


def iteration(reactor):
    """
    One turn of the reactor's main loop (ReactorBase.mainLoop).
    """
    def step():
        reactor.runUntilCurrent()
        reactor.doIteration(reactor.timeout())
    return step


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layer", default="reactor", choices=(
        "raw", "port", "reactor", "sipdist-port", "sipdist-reactor", "401",
        "301", "200"))
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--deliver", action="store_true")
    args = parser.parse_args()
    reactor = EPollReactor()
    step, address, make = server(args.layer, reactor)
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client.bind(("127.0.0.1", 0))
    client.settimeout(5)
    # Answers go to the Via's sent-by: the client's own port.
    sentBy = f"127.0.0.1:{client.getsockname()[1]};".encode("ascii")

    def request(i):
        return make(i).replace(b"127.0.0.1:5061;", sentBy)
    warm = [request(i) for i in range(WARMUP)]
    requests = [request(WARMUP + i) for i in range(args.requests)]

    def deliver(data):
        client.sendto(data, address)
        step()
        return client.recv(65536)
    for data in warm:
        answer = deliver(data)
    if args.deliver:
        start = time.process_time()
        for data in requests:
            answer = deliver(data)
        took = time.process_time() - start
        print(f"{args.layer}: {answer.split(b' ', 2)[1].decode()} answers, "
              f"{took / args.requests * 1e6:.1f} CPU-us per request")


if __name__ == "__main__":
    main()
