"""
The REGISTER hot path in one process, without sockets: bytes in, bytes out,
through the real transport, transaction, authentication, store lookup,
decision and response signing of a distributor (signed 301) and of a home
server (registrar, signed 200).

    python bench/bench_hotpath.py [--requests 20000] [--profile]
        [--no-fast-path] [--shedding] [--chunk 2000]
        [--burst N [--nap SECONDS]] [--no-reference]

Requests are prepared beforehand (each with fresh credentials, as a client
would send them after a 401), so what is timed is the server's work only.
They are prepared and sent in chunks (--chunk): a client answers a nonce
soon after it is issued, and a server that saw more nonces issued at one
instant than its count table holds would rightly refuse some of them as
possible replays.  The table is in sets of eight nonces: a chunk's nonces
are issued in the same second, and with 10,000 of them (the default until
4 December 2026) some set of the 12,500 got nine now and then, failing
the run (one chunk in 480 by a Poisson estimate; one in a simulation of
1,000 chunks); with 2,000, one in some 500 million by the estimate.
Each case sends one kind of request, but the two logins cases: a 401's
REGISTER and an authenticated one in turn, as a distributor and a home
see them under bench_register's SIPp (on PyPy the JIT's traces then take
both branches in turn; their figures are the ones to set beside
bench_register's).
Prints requests per CPU-second; --profile prints where the time goes.
The last case is bench_register's reference, run the same way:
Twisted's bare sip.Base answering a REGISTER without credentials with a
fixed 301 (bench/bare_twisted_301.py), one request a login; set beside
its figure under SIPp it gives what the server's surroundings (the
event loop, the sockets, the wake-ups) cost a request whatever the code
on its path (--no-reference leaves it out).
With --shedding the overload control sheds throughout, at a rate that
admits every request: what a request it admits costs a server at its
limit.

With --burst N the requests come N at a time with --nap seconds of sleep
between (the CPU time of the sleep is not counted), as a server under
bench_register's SIPp reads them: about 24 datagrams a wake-up, some 330
wake-ups a second at 4,000 calls a second.  The same work costs more
when the process sleeps between bursts, by what the machine does to its
caches meanwhile: on 4 December 2026, on a virtual machine of two AMD
EPYC cores, the logins cost 30 to 34 us a request on CPython without
naps and 42 to 59 with --burst 24 --nap 0.003 (see docs/performance.rst).
"""

import argparse
import cProfile
import functools
import pstats
import sys
import time

sys.path.insert(0, __file__.rsplit("/bench/", 1)[0])

from twisted.internet.selectreactor import SelectReactor  # noqa: E402

from sipdist.auth.client import answerChallenge  # noqa: E402
from sipdist.server import buildServer  # noqa: E402
from sipdist.store import ServerRecord  # noqa: E402
from sipdist.store.memory import MemoryAssignmentStore  # noqa: E402
from sipdist.sip.transport import SIPDatagramProtocol  # noqa: E402


class NullUDP:
    def __init__(self):
        self.sent = 0
        self.last = None
        self.codes = {}

    def write(self, data, addr):
        self.sent += 1
        self.last = data
        code = data[8:11]
        self.codes[code] = self.codes.get(code, 0) + 1

    def getHost(self):
        from twisted.internet.address import IPv4Address
        return IPv4Address("UDP", "127.0.0.1", 5060)


def register(i, authorization=None):
    auth = f"Authorization: {authorization}\r\n" if authorization else ""
    return (
        "REGISTER sip:example.com SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-{i}-2\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:alice@example.com>;tag={i}\r\n"
        "To: <sip:alice@example.com>\r\n"
        f"Call-ID: {i}-bench@127.0.0.1\r\n"
        "CSeq: 2 REGISTER\r\n"
        "Contact: <sip:alice@127.0.0.1:5061;transport=UDP>\r\n"
        "Expires: 300\r\n"
        "User-Agent: bench\r\n"
        f"{auth}"
        "Content-Length: 0\r\n\r\n").encode("ascii")


class HeapClock(SelectReactor):
    """
    A reactor that is never run: its callLater is the real reactors' heap
    (task.Clock sorts a list on every call, which would dominate here), and
    advance() runs what is due, as the running reactor would.
    """

    def __init__(self):
        SelectReactor.__init__(self)
        self._now = 1000.0

    def seconds(self):
        return self._now

    def advance(self, amount):
        self._now += amount
        self.runUntilCurrent()


def setup(role, name):
    clock = HeapClock()
    store = MemoryAssignmentStore()
    store.addServer(ServerRecord("home1", "sip:127.0.0.1:5070"))
    store.addServer(ServerRecord("home2", "sip:127.0.0.1:5080"))
    store.assignUser("alice@example.com", "home1")
    config = {"role": role, "name": name, "domain": "example.com",
              "listen": [], "credentials": "memory:alice:wonderland",
              "secret": "bench-secret-0123456789", "digest-algorithms": ["MD5"],
              # The bench client follows the 301 (by its User-Agent).
              "redirect-user-agent": ["^bench$"],
              # No TLS here: keeps the bench runnable where cryptography is
              # not installed (PyPy 3.9 from Debian has no wheel for it).
              "tls-client-options": lambda hostname: None}
    service = buildServer(config, clock, store=store)
    protocol = SIPDatagramProtocol(service.transport, 0)
    udp = NullUDP()
    protocol.makeConnection(udp)
    return service, protocol, udp, clock


def prepare(service, count, start=0):
    challenge = service.authenticator.challenge()
    values = [v for n, v in challenge.headers]
    requests = []
    for i in range(count):
        value, session = answerChallenge(values, "REGISTER", "sip:example.com",
                                         "alice", "wonderland", nc=1)
        # Fresh nonce per request, as each SIPp call gets.
        challenge = service.authenticator.challenge()
        values = [v for n, v in challenge.headers]
        requests.append(register(start + i, value))
    return requests


def logins(service, count, start=0):
    """
    C{count} logins, each a REGISTER without credentials (on a branch of
    its own: a new transaction) and the authenticated one that follows
    its 401, in turn; the first numbered C{start}.
    """
    requests = []
    for i, authenticated in enumerate(prepare(service, count, start)):
        requests += [register(10 ** 9 + start + i), authenticated]
    return requests


def batch(service, kind, start, count):
    """
    C{count} requests of one case, the first numbered C{start}: of its
    C{kind}, C{"401"} (without credentials), C{"authenticated"} or
    C{"logins"} (both in turn).
    """
    if kind == "401":
        return [register(start + i) for i in range(count)]
    if kind == "logins":
        return logins(service, max(1, count // 2), start)
    return prepare(service, count, start)


def answers(kind, expect, count):
    """
    The answers, by status code, that C{count} requests of a case of
    C{kind} get when its final answer is C{expect} (C{b"301"} ...): a
    logins case's half are C{401}s.
    """
    if kind == "logins":
        return {b"401": count // 2, expect: count // 2}
    return {expect: count}


# The cases main runs: (label, role, server name, kind of requests (see
# batch), their final answer); then the reference.
CASES = (
    ("distributor, signed 301", "distributor", "distributor",
     "authenticated", b"301"),
    ("home, registrar, signed 200", "home", "home1", "authenticated", b"200"),
    ("distributor, 401 challenge", "distributor", "distributor", "401",
     b"401"),
    ("distributor, logins (401, 301)", "distributor", "distributor",
     "logins", b"301"),
    ("home, logins (401, 200)", "home", "home1", "logins", b"200"))
REFERENCE = "reference: bare sip.Base, fixed 301"


def referenceBatch(start, count):
    """
    C{count} REGISTERs for the reference (no credentials: it answers every
    one with its fixed C{301}), the first numbered C{start}.
    """
    return [register(start + i) for i in range(count)]


def setupReference():
    """
    Twisted's bare L{sip.Base} answering every request with a fixed C{301}
    (bench/bare_twisted_301.py), given datagrams as L{setup}'s protocol
    is.

    @return: C{(protocol, udp, clock)}.
    """
    # Imported only here: the module installs Twisted's global reactor,
    # which the server's cases (and bench_instructions' child) do not use.
    from bare_twisted_301 import Redirector
    protocol = Redirector()
    udp = NullUDP()
    protocol.makeConnection(udp)
    return protocol, udp, HeapClock()


def run(protocol, clock, requests, burst=0, pause=None):
    """
    Hand C{requests} to C{protocol}, the clock a second on every thousand.

    @param burst: if not 0, call C{pause()} after every C{burst} requests
        (a sleep here, an emptying of the caches in bench_instructions).
    @return: the CPU seconds spent.
    """
    start = time.process_time()
    for i, data in enumerate(requests):
        protocol.datagramReceived(data, ("127.0.0.1", 5061))
        if i % 1000 == 999:
            clock.advance(1)
        if burst and i % burst == burst - 1:
            pause()
    return time.process_time() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--runs", type=int, default=3,
                        help="runs per case; the best is printed (PyPy's JIT "
                        "warms up over the first)")
    parser.add_argument("--no-fast-path", action="store_true",
                        help="send the 401 case down the full path too "
                        "(sipdist.roles.fastchallenge off)")
    parser.add_argument("--chunk", type=int, default=2000,
                        help="requests prepared, then sent, at a time")
    parser.add_argument("--burst", type=int, default=0,
                        help="sleep --nap seconds after every BURST "
                        "requests, as a server sleeps between wake-ups")
    parser.add_argument("--nap", type=float, default=0.003)
    parser.add_argument("--shedding", action="store_true",
                        help="the overload control shedding, at a rate "
                        "that admits every request")
    parser.add_argument("--no-reference", action="store_true",
                        help="leave out the reference: Twisted's bare "
                        "sip.Base answering a fixed 301")
    args = parser.parse_args()
    print(f"{sys.implementation.name} {sys.version.split()[0]}: "
          f"{args.requests:,d} authenticated REGISTERs per case, "
          f"best of {args.runs} runs")
    for label, role, name, kind, expect in CASES:
        def start(role=role, name=name, kind=kind):
            service, protocol, udp, clock = setup(role, name)
            service.transport.fastPath.enabled = not args.no_fast_path
            if args.shedding:
                service.transactions.overload.limit(1e9)
                clock.advance(0.01)
            return (protocol, clock, udp,
                    functools.partial(batch, service, kind))

        profiler = cProfile.Profile() if args.profile else None
        seconds, sent, udp = timed(args, start, profiler)
        # Every request of the last run got the answer of its kind.
        wanted = answers(kind, expect, sent)
        assert udp.codes == wanted, (udp.codes, wanted)
        print(f"  {label:36s} {sent / seconds:>9,.0f} requests/CPU-s")
        if args.profile:
            pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
    if not args.no_reference:
        reference(args)


def reference(args):
    """
    Run the reference (L{setupReference}) as main runs the cases: REGISTERs
    without credentials, in bursts with naps if asked; print its line.
    """
    def start():
        protocol, udp, clock = setupReference()
        return protocol, clock, udp, referenceBatch

    seconds, sent, udp = timed(args, start)
    assert udp.codes == {b"301": sent}, udp.codes
    print(f"  {REFERENCE:36s} {sent / seconds:>9,.0f} requests/CPU-s")


def timed(args, start, profiler=None):
    """
    Send C{args.requests} requests, C{args.chunk} at a time, to a server
    made afresh for each of C{args.runs} runs (one with a C{profiler},
    which is on while they are handled).

    @param start: makes a server: returns C{(protocol, clock, udp,
        batch)}, C{batch(sent, count)} making its next C{count} requests.
    @return: C{(seconds, sent, udp)}: the fewest CPU seconds a run spent,
        the requests a run sent, the last run's L{NullUDP}.
    """
    seconds = float("inf")
    for attempt in range(1 if profiler is not None else args.runs):
        protocol, clock, udp, makeBatch = start()
        spent = sent = 0
        while sent < args.requests:
            requests = makeBatch(sent, min(args.chunk, args.requests - sent))
            if profiler is not None:
                profiler.enable()
            spent += run(protocol, clock, requests, args.burst,
                         functools.partial(time.sleep, args.nap))
            if profiler is not None:
                profiler.disable()
            sent += len(requests)
        seconds = min(seconds, spent)
    return seconds, sent, udp


if __name__ == "__main__":
    main()
