"""
Simulated clients of bench_failover.py, many per process: each user is
the client library itself (L{sipdist.client.core.UserAgent} and
L{sipdist.client.login.Registration} with their shipped defaults).

    python bench/failover_clients.py SPEC.json

SPEC.json: {"names": [...], "password": ..., "domain": ..., "transport":
"tcp" or "udp", "server": the distributor's URI (or the edge's), "rate":
logins per second, and optionally "refresh": the names that refresh their
registration when the process gets SIGUSR1, "refreshRate": how many per
second}.  The process reports to its parent on standard output, one event
a line (times are time.time()):

    R NAME PORT TIME      registered at the server listening on PORT
    F NAME EXPIRES TIME   a registration refreshed (EXPIRES s granted)
    L NAME TIME           the home was lost (connection, keep-alive)
    T NAME PORT TIME      the first REGISTER after the loss went to PORT
    C NAME                a REGISTER after the loss was challenged
    X NAME REASON         a login failed (it is retried)
    D OK FAILED           the first logins are over
    S GC MAXGC LAG        every second after the first logins: the
                          CPU seconds spent in garbage collections, the
                          longest one, and the event loop's longest lag
                          (a 50 ms timer's lateness) so far
    Y NAME TEXT           after the loss: a redirect or a new login, why
    Q                     all stopped (on SIGTERM)

It runs until terminated, and for at most an hour.  With BENCH_PROFILE
set to a directory, the process profiles itself (cProfile) from the end
of the first logins until it is terminated, into PID.prof there.
"""

import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from twisted.internet import defer, task  # noqa: E402

from sipdist.client.core import UserAgent  # noqa: E402
from sipdist.client.discovery import ServerLocator  # noqa: E402
from sipdist.client.login import Registration  # noqa: E402

LIFETIME = 3600.0
# Seconds a first login may be retried for.
SETUP = 600.0


class Stats:
    """
    Garbage collection CPU time and event loop lag, reported every second.
    """

    def __init__(self, reactor, out):
        import gc
        self.reactor = reactor
        self.out = out
        self.gc, self.maxGC, self.lag = 0.0, 0.0, 0.0
        self._started = None
        gc.callbacks.append(self._collecting)
        self._last = time.perf_counter()
        tick = task.LoopingCall(self._tick)
        tick.clock = reactor
        tick.start(0.05, now=False)
        report = task.LoopingCall(self._report)
        report.clock = reactor
        report.start(1.0, now=False)

    def _collecting(self, phase, info):
        if phase == "start":
            self._started = time.process_time()
        elif self._started is not None:
            spent = time.process_time() - self._started
            self.gc += spent
            self.maxGC = max(self.maxGC, spent)
            self._started = None

    def _tick(self):
        now = time.perf_counter()
        self.lag = max(self.lag, now - self._last - 0.05)
        self._last = now

    def _report(self):
        self.out(f"S {self.gc:.3f} {self.maxGC:.3f} {self.lag:.3f}")


class Output:
    """
    Lines to the parent, written every 0.2 s.
    """

    def __init__(self, reactor):
        self.lines = []
        self.loop = task.LoopingCall(self.flush)
        self.loop.clock = reactor
        self.loop.start(0.2, now=False)

    def __call__(self, line):
        self.lines.append(line)

    def flush(self):
        if self.lines:
            try:
                sys.stdout.write("\n".join(self.lines) + "\n")
                sys.stdout.flush()
            except BrokenPipeError:
                os._exit(1)
            self.lines = []


def observer(ua, out):
    lost = [False]

    def seen(event):
        kind = event.kind
        if kind == "registered":
            lost[0] = False
            out(f"R {ua.name} {event.target.port} {time.time():.3f}")
        elif kind == "flow-failed":
            lost[0] = ua.lostOnce = True
            ua.tried = ua.lostOnce = False
            out(f"L {ua.name} {time.time():.3f}")
        elif kind == "trying" and lost[0] and not ua.tried:
            ua.tried = True
            out(f"T {ua.name} {event.target.port} {time.time():.3f}")
        elif kind == "challenge" and lost[0]:
            out(f"C {ua.name}")
        elif kind == "refreshed":
            out(f"F {ua.name} {event.expires} {time.time():.3f}")
        elif kind == "retry" or kind == "relogin" and ua.refreshes:
            out(f"X {ua.name} {event.text[:120]}")
        if kind in ("relogin", "redirect") and ua.lostOnce:
            out(f"Y {ua.name} {event.text[:160]}")
    return seen


@defer.inlineCallbacks
def firstLogin(reactor, ua, limit):
    """
    The first login, tried again (after the library's backoff, a 503's
    Retry-After honoured) while the set-up lasts: a pool busy with
    everybody's first login sheds some with 503.
    """
    failures = 0
    while True:
        try:
            result = yield ua.registration.start()
            return result
        except Exception as e:
            failures += 1
            if reactor.seconds() > limit or failures >= 30:
                raise
            delay = ua.registration.retryDelay(min(failures, 3), e)
            yield task.deferLater(reactor, delay, lambda: None)


@defer.inlineCallbacks
def run(reactor, spec):
    out = Output(reactor)
    udp = spec["transport"] == "udp"
    agents = []
    refreshNames = set(spec.get("refresh") or ())
    for name in spec["names"]:
        ua = UserAgent(reactor, f"{name}@{spec['domain']}", spec["password"],
                       listen="udp:0:interface=127.0.0.1")
        ua.name = name
        ua.tried = ua.lostOnce = False
        # A refresh that fails is a failed login too (behind an edge).
        ua.refreshes = name in refreshNames
        ua.observer = observer(ua, out)
        ua.registration = Registration(ua, ServerLocator(None),
                                       server=spec["server"])
        agents.append(ua)
    distributorPort = int(spec["server"].split(";")[0].rsplit(":", 1)[1])

    def closeDistributor(result, ua):
        # Each user would keep a connection to the distributor (two file
        # descriptors) besides its home's.
        flow = ua.transport.existingFlow("TCP", "127.0.0.1", distributorPort)
        if flow is not None:
            flow.close()
        return result

    step = max(1, int(spec["rate"] / 10))
    pending = []
    for i in range(0, len(agents), step):
        for ua in agents[i:i + step]:
            if udp:
                yield ua.start()
            d = firstLogin(reactor, ua, reactor.seconds() + SETUP)
            if not udp and not refreshNames:
                d.addBoth(closeDistributor, ua)
            pending.append(d)
        yield task.deferLater(reactor, 0.1, lambda: None)
    results = yield defer.DeferredList(pending, consumeErrors=True)
    failed = [f for ok, f in results if not ok]
    for failure in failed[:3]:
        out(f"X - first login failed: {failure.getErrorMessage()[:120]}")
    out(f"D {len(results) - len(failed)} {len(failed)}")
    # A device runs one client; this process runs thousands, whose
    # objects a full garbage collection would scan again and again
    # (several seconds per collection on a loaded machine, in the
    # 10,000-user run): what the set-up made is kept out of its reach, as
    # a server's start-up objects are (sipdist.tap).
    import gc
    gc.collect()
    gc.freeze()
    # What the users make after it (their re-logins' flows, transactions,
    # registrations) would be scanned again by every full collection, the
    # more often the more users a process holds (CPython collects the
    # oldest generation every ten collections of the middle one while it
    # holds few objects, as after the freeze): a device scans its own
    # user's objects only.  Full collections are made a hundred times
    # rarer; the young generations are collected as usual.
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, 1000)
    Stats(reactor, out)
    if os.environ.get("BENCH_PROFILE"):
        import cProfile
        profile = cProfile.Profile()
        profile.enable()
        path = os.path.join(os.environ["BENCH_PROFILE"], f"{os.getpid()}.prof")
        reactor.addSystemEventTrigger(
            "before", "shutdown",
            lambda: (profile.disable(), profile.dump_stats(path)))

    def stop():
        out("Q")
        out.flush()
        reactor.stop()

    refresh = refreshNames
    if refresh:
        # Behind an edge a client does not see its home fail: its next
        # REGISTER is what reaches the backup.  SIGUSR1 makes the named
        # users send it now, at refreshRate per second.
        import signal
        chosen = [ua for ua in agents if ua.name in refresh]
        rate = max(1, int(spec.get("refreshRate", 1000) / 10))

        @defer.inlineCallbacks
        def refreshAll():
            for i in range(0, len(chosen), rate):
                for ua in chosen[i:i + rate]:
                    ua.registration.refresh()
                yield task.deferLater(reactor, 0.1, lambda: None)

        signal.signal(signal.SIGUSR1, lambda *_: reactor.callFromThread(
            refreshAll))

    reactor.addSystemEventTrigger("before", "shutdown", out.flush)
    reactor.callLater(LIFETIME, stop)


def main():
    from twisted.internet import reactor
    with open(sys.argv[1]) as f:
        spec = json.load(f)

    def failed(failure):
        print(f"E {failure.getErrorMessage()}", flush=True)
        reactor.stop()

    reactor.callWhenRunning(lambda: run(reactor, spec).addErrback(failed))
    reactor.run()


if __name__ == "__main__":
    main()
