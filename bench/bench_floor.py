"""
The floor under every server of bench/bench_register.py: what one UDP
request and its answer cost a process that does nothing else, per
interpreter, at the rates the benchmarks offer.

    python bench/bench_floor.py [--rates 1000,2000,5000] [--seconds 4]
                                [--pypy-python PATH | --no-pypy]
                                [--servers KIND,...]
                                [--window 1] [--warmup 20000]

These servers answer every datagram with the same fixed datagram of a 301's
size, on loopback:

  - blocking: a bare loop of C{recvfrom} and C{sendto} on a blocking
    socket, no event loop (what Kamailio's UDP workers do);
  - twisted: Twisted's epoll reactor and a C{DatagramProtocol} whose
    C{datagramReceived} writes the answer (the event loop, its per-event
    logging context, the port's read loop up to C{EAGAIN}, the timed-call
    check of each turn of the loop);
  - sipdist: the same with sipdist's own port
    (L{sipdist.sip.datagram.DatagramPort}, reading up to 65,536 bytes a
    datagram as sipdist does), answering with C{writeSoon} as sipdist's
    fast paths do.

A client process sends REGISTER-sized datagrams at the given rate, one in
flight at a time (each waits for its answer; with --window N, N sent
together and their answers read, so that a server's wake-up reads
several, as under load), for --seconds, after --warmup datagrams that
are not counted (as bench_register.py warms its servers up: PyPy's JIT
compiles the loop meanwhile; counted, that work cost PyPy 1.5 to 2.7 us
a datagram over 64,000 at --window 16, on 4 December 2026).  The
server's user and system CPU time over the counted datagrams
(C{getrusage} in the server) give datagrams per CPU-second and
microseconds each.  A SIPp call of bench_register is two requests and
two answers: a server can answer at most half as many calls per
CPU-second as it answers datagrams here, before it parses a single
header.
"""

import argparse
import os
import resource
import socket
import subprocess
import sys
import time

# About the sizes of bench_register's authenticated REGISTER and 301.
REQUEST = (b"REGISTER sip:example.com SIP/2.0\r\n"
           + (b"X-Padding: " + b"x" * 40 + b"\r\n") * 12) + b"\r\n"
ANSWER = (b"SIP/2.0 301 Moved Permanently\r\n"
          + (b"X-Padding: " + b"x" * 40 + b"\r\n") * 10 + b"\r\n")


def cpu():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime, usage.ru_stime


def serveBlocking(warm, count, report):
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.bind(("127.0.0.1", 0))
    report(server.getsockname()[1])
    for _ in range(warm):
        _, address = server.recvfrom(65535)
        server.sendto(ANSWER, address)
    before = cpu()
    for _ in range(count):
        _, address = server.recvfrom(65535)
        server.sendto(ANSWER, address)
    return before


def serveTwisted(warm, count, report):
    from twisted.internet import epollreactor
    epollreactor.install()
    from twisted.internet import reactor
    from twisted.internet.protocol import DatagramProtocol

    class Answer(DatagramProtocol):
        answered = 0

        def datagramReceived(self, data, address):
            self.transport.write(ANSWER, address)
            self.answered += 1
            if self.answered == warm:
                self.before = cpu()
            if self.answered == warm + count:
                reactor.stop()

    answer = Answer()
    answer.before = cpu()
    port = reactor.listenUDP(0, answer, interface="127.0.0.1")
    report(port.getHost().port)
    reactor.run(installSignalHandlers=False)
    return answer.before


def servePort(warm, count, report):
    """
    sipdist's own UDP port (L{sipdist.sip.datagram.DatagramPort}) on the
    epoll reactor, answering with C{writeSoon} as sipdist's fast paths do.
    """
    sys.path.insert(0, os.path.dirname(os.path.dirname(
        os.path.abspath(__file__))))
    from twisted.internet import epollreactor
    epollreactor.install()
    from twisted.internet import reactor
    from twisted.internet.protocol import DatagramProtocol

    from sipdist.sip.datagram import listenDatagram

    class Answer(DatagramProtocol):
        answered = 0

        def datagramReceived(self, data, address):
            self.transport.writeSoon(ANSWER, address, None, None)
            self.answered += 1
            if self.answered == warm:
                self.before = cpu()
            if self.answered == warm + count:
                reactor.callLater(0, reactor.stop)

    answer = Answer()
    answer.before = cpu()
    port = listenDatagram(reactor, 0, answer, interface="127.0.0.1",
                          maxPacketSize=65536)
    report(port.getHost().port)
    reactor.run(installSignalHandlers=False)
    return answer.before


SERVERS = {
    "blocking": serveBlocking,
    "twisted": serveTwisted,
    "sipdist": servePort,
}


def server(kind, warm, count):
    """
    The server process: print its port, serve C{warm} datagrams, then
    C{count} more, and print the user and system seconds these took.
    """
    def report(port):
        print(port, flush=True)
    serve = SERVERS[kind]
    user0, system0 = serve(warm, count, report)
    user1, system1 = cpu()
    print(user1 - user0, system1 - system0, flush=True)


def run(python, kind, rate, seconds, window, warm=0):
    count = max(int(rate * seconds), 1)
    process = subprocess.Popen(
        [python, os.path.abspath(__file__), "--serve", kind, str(warm),
         str(count)],
        stdout=subprocess.PIPE, text=True)
    try:
        port = int(process.stdout.readline())
        client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        client.connect(("127.0.0.1", port))
        client.settimeout(2)
        start = time.monotonic()
        total = warm + count
        i = 0
        while i < total:
            delay = start + i / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            # The warm-up's last burst ends where the counted datagrams
            # begin.
            burst = min(window, total - i, warm - i if i < warm else total)
            for _ in range(burst):
                client.send(REQUEST)
            for _ in range(burst):
                client.recv(65535)
            i += burst
        user, system = map(float, process.stdout.readline().split())
    finally:
        process.kill()
        process.wait()
    return count, user, system


def main():
    if len(sys.argv) == 5 and sys.argv[1] == "--serve":
        server(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rates", default="1000,2000,5000")
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--pypy-python", default=None,
                        help="a PyPy with Twisted (and, for the sipdist "
                        "server, sipdist's dependencies); by default "
                        "bench_register.py's venv, built when pypy3 is "
                        "installed")
    parser.add_argument("--no-pypy", action="store_true")
    parser.add_argument("--warmup", type=int, default=20000,
                        help="datagrams answered before the counted ones "
                        "(PyPy's JIT compiles the loop meanwhile)")
    parser.add_argument("--window", type=int, default=1,
                        help="datagrams sent together before their answers "
                        "are read (1: one in flight at a time)")
    parser.add_argument("--servers", default=",".join(SERVERS),
                        help="which servers, of " + ", ".join(SERVERS))
    args = parser.parse_args()
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from bench_register import pypyPython
    pythons = [("CPython", sys.executable)]
    pypy = None if args.no_pypy else pypyPython(args.pypy_python)
    if pypy:
        pythons.append(("PyPy", pypy))
    for label, python in pythons:
        # A server that cannot import Twisted would print no port.
        if subprocess.run([python, "-c", "import twisted"],
                          capture_output=True).returncode != 0:
            parser.error(f"{python} cannot import twisted")
    print(f"{'interpreter':<12}{'server':<10}{'rate/s':>8}"
          f"{'datagrams/CPU-s':>17}{'user us':>9}{'sys us':>8}")
    for label, python in pythons:
        for kind in args.servers.split(","):
            if kind not in SERVERS:
                parser.error(f"no server {kind!r}")
            for rate in [int(r) for r in args.rates.split(",")]:
                count, user, system = run(python, kind, rate, args.seconds,
                                          args.window, args.warmup)
                total = user + system
                perSecond = count / total if total else float("inf")
                print(f"{label:<12}{kind:<10}{rate:>8}{perSecond:>17,.0f}"
                      f"{user / count * 1e6:>9.1f}"
                      f"{system / count * 1e6:>8.1f}", flush=True)


if __name__ == "__main__":
    main()
