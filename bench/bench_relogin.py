"""
The CPU of one re-login of the client library over TCP, client and
server apart: what a failed home's users cost the client processes of
bench_failover.py and their backup, without the pool around them.

    python bench/bench_relogin.py [--users 1000] [--rounds 3]
        [--profile FILE] [--standby] [--time-limit 600]

One home server (bench/failover_server.py, its own process, shipped
defaults) and, in this process, --users user agents of the client library
(L{sipdist.client.login.Registration}, shipped defaults but a re-login
jitter of 0.5 s) log in over TCP.  Then, each round, every user's
connection to the home is closed (by the client: the flow failure a
home's death causes, without the death) and the round ends when all are
registered again.  Printed per round: the wall time, and the CPU
milliseconds per re-login of this process (user and kernel time) and of
the server.  With --profile, the last round is profiled (cProfile) into
FILE.  With --standby the users' home is another server, marked down, and
the server serves them as their backup home (the failover's path).
"""

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

from bench_failover import cpuSeconds, freePort  # noqa: E402


def ownCPU():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime, usage.ru_stime


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--profile", default=None)
    parser.add_argument("--time-limit", type=float, default=600,
                        help="seconds the whole run may take at most")
    parser.add_argument("--standby", action="store_true",
                        help="the users' home is another server, marked "
                             "down: the server serves them as their "
                             "backup home (temporarily)")
    args = parser.parse_args()

    from twisted.internet import defer, reactor, task

    from sipdist.client.core import UserAgent
    from sipdist.client.discovery import ServerLocator
    from sipdist.client.login import Registration

    names = [f"u{i}" for i in range(args.users)]
    port = freePort("tcp")
    tmp = tempfile.mkdtemp(prefix="bench-relogin-")
    store = os.path.join(tmp, "store.conf")
    with open(store, "w") as f:
        f.write(f"server home sip:127.0.0.1:{port};transport=tcp weight=1 "
                f"state=active\n")
        if args.standby:
            f.write(f"server dead sip:127.0.0.1:{freePort('tcp')};"
                    f"transport=tcp weight=1 state=down\n")
        for n in names:
            f.write(f"user {n}@example.com "
                    f"{'dead' if args.standby else 'home'}\n")
    config = {"role": "home", "name": "home", "domain": "example.com",
              "listen": [f"tcp:{port}:interface=127.0.0.1"],
              "store": f"file:{store}",
              "credentials": "memory:" + ",".join(f"{n}:pw" for n in names),
              "secret": "bench-relogin-secret-0123456789abcdef",
              "max-connections": 30000,
              "max-connections-per-host": 100000,
              "auth-address-failures": 1000000}
    path = os.path.join(tmp, "home.json")
    with open(path, "w") as f:
        json.dump(config, f)
    server = subprocess.Popen(
        [sys.executable, os.path.join(HERE, "failover_server.py"), path],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    line = server.stdout.readline().decode()
    if not line.startswith("READY"):
        sys.exit(f"the server did not start: {line!r}")

    uri = f"sip:127.0.0.1:{port};transport=tcp"
    agents = []
    for n in names:
        ua = UserAgent(reactor, f"{n}@example.com", "pw",
                       listen="udp:0:interface=127.0.0.1")
        ua.registration = Registration(ua, ServerLocator(None), server=uri,
                                       reloginJitter=0.5)
        ua.pending = None
        agents.append(ua)

    def observer(ua):
        def seen(event):
            if event.kind == "registered" and ua.pending is not None:
                d, ua.pending = ua.pending, None
                d.callback(None)
        return seen

    @defer.inlineCallbacks
    def run():
        for i in range(0, len(agents), 50):
            yield defer.gatherResults([ua.registration.start()
                                       for ua in agents[i:i + 50]])
        import gc
        gc.collect()
        gc.freeze()
        for ua in agents:
            ua.observer = observer(ua)
        for r in range(args.rounds):
            yield task.deferLater(reactor, 1.0, lambda: None)
            profile = None
            if args.profile and r == args.rounds - 1:
                import cProfile
                profile = cProfile.Profile()
                profile.enable()
            waits = []
            for ua in agents:
                ua.pending = defer.Deferred()
                waits.append(ua.pending)
            began, cpu0 = time.time(), ownCPU()
            server0 = cpuSeconds(server.pid)
            for ua in agents:
                ua.registration._flow.close()
            yield defer.gatherResults(waits)
            wall, cpu1 = time.time() - began, ownCPU()
            served = cpuSeconds(server.pid) - server0
            if profile is not None:
                profile.disable()
                profile.dump_stats(args.profile)
            n = len(agents)
            print(f"round {r + 1}: {n} re-logins in {wall:.2f} s; client "
                  f"{1000 * (cpu1[0] - cpu0[0]) / n:.3f} ms user + "
                  f"{1000 * (cpu1[1] - cpu0[1]) / n:.3f} ms kernel a "
                  f"re-login; server {1000 * served / n:.3f} ms",
                  flush=True)

    def done(result):
        if reactor.running:
            reactor.stop()
        return result

    def tooLong():
        print(f"stopped: not done within {args.time_limit:g} s", flush=True)
        reactor.stop()

    watchdog = reactor.callLater(args.time_limit, tooLong)

    def finished(result):
        if watchdog.active():
            watchdog.cancel()
        return done(result)

    reactor.callWhenRunning(lambda: run().addErrback(
        lambda f: print(f.getTraceback())).addBoth(finished))
    try:
        reactor.run()
    finally:
        server.kill()
        server.wait()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
