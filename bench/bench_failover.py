"""
Failover time: from a home server's crash to all of its N users registered
at the surviving home, with the monitor's failure detection and simulated
clients speaking real SIP over loopback UDP.

    python bench/bench_failover.py [--users 1000 10000] [--interval 0.5]
        [--threshold 3] [--expires 60] [--t1 0.1] [--others 0.1]

One process runs a distributor with the monitor (OPTIONS every
--interval s, --threshold failures in a row mark a server down), home1
and home2 sharing a memory store, and the simulated clients: a few UDP
sockets, each carrying many users, each user a small state machine doing
what the client library does (REGISTER, answer the 401 with Digest, follow
the 301, refresh at half the granted expiry; a refresh that gets no answer
within 64*T1 is a new login from the distributor).  The first refresh of
each user comes at a random point of its refresh interval, as in a pool
that has been running for a while, so the users of the crashed home notice
the crash spread over one refresh interval.  N users are assigned
to home1, N/10 to home2.  When all are registered, home1's service is
stopped; the script prints when the monitor marked home1 down, when its
users were reassigned, and when the last of them was registered at home2.

The clients do not verify the 301 signatures (the client library does);
everything else on the wire is what a real client sends.

    python bench/bench_failover.py --transport tcp [--users 1000]
        [--expires 3600] [--jitter 2]

With C{--transport tcp} the clients are the client library itself
(L{sipdist.client.login.Registration}, one L{UserAgent} per user, each
with its TCP connection to its home, no UDP port): they log in through the
distributor, keep the backup home the signed 200 names, and when home1
stops they notice the lost connection at once and log in again at their
backup after a random wait of up to C{--jitter} seconds; registrations of
an hour (the shipped default) show that the refresh plays no part.  The
connections to the distributor are closed once everybody is logged in
as each login ends (each connection costs two file descriptors in this
one process: 10,000 users need more than 20,000).
"""

import argparse
import os
import random
import re
import sys
import time

from twisted.internet import defer, task
from twisted.internet.protocol import DatagramProtocol

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from sipdist.auth.client import answerChallenge  # noqa: E402
from sipdist.sip.message import Response, parseMessage  # noqa: E402
from sipdist.server import buildServer  # noqa: E402
from sipdist.store import ServerRecord  # noqa: E402
from sipdist.store.memory import MemoryAssignmentStore  # noqa: E402

PASSWORD = "wonderland"
SECRET = "bench-nonce-secret-0123456789abcdef"
DOMAIN = "example.com"
USERS_PER_SOCKET = 2000


class SimUser:
    """
    One simulated user: one REGISTER transaction at a time.
    """

    def __init__(self, pool, name):
        self.pool = pool
        self.name = name
        self.callId = f"{name}-{os.urandom(6).hex()}@bench"
        self.tag = os.urandom(4).hex()
        self.cseq = 0
        self.session = None
        self.nc = 0
        self.home = None
        self.target = None
        self.state = "idle"
        self.registeredAt = None
        self.hops = 0
        self._retransmit = None
        self._timeout = None
        self._refresh = None
        self._data = None
        self.stopped = False
        self.answered = None
        self.firstRefresh = True

    # Sending

    def login(self):
        if self.stopped:
            return
        self.state = "login"
        self.hops = 0
        self.challenges = 0
        self.session = None
        self.send(self.pool.distributor)

    def send(self, addr, authorize=True):
        self.cseq += 1
        self.target = addr
        port = self.pool.port
        auth = ""
        if authorize and self.session is not None:
            self.nc += 1
            auth = ("Authorization: " + self.session.authorize(
                "REGISTER", f"sip:{DOMAIN}", self.nc) + "\r\n")
        data = (
            f"REGISTER sip:{DOMAIN} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{port};"
            f"branch=z9hG4bK{os.urandom(6).hex()};rport\r\n"
            "Max-Forwards: 70\r\n"
            f"From: <sip:{self.name}@{DOMAIN}>;tag={self.tag}\r\n"
            f"To: <sip:{self.name}@{DOMAIN}>\r\n"
            f"Call-ID: {self.callId}\r\n"
            f"CSeq: {self.cseq} REGISTER\r\n"
            f"Contact: <sip:{self.name}@127.0.0.1:{port}>\r\n"
            f"Expires: {self.pool.expires}\r\n"
            # They follow the redirect as the client library does.
            "Supported: sipdist-redirect\r\n"
            f"{auth}"
            "Content-Length: 0\r\n\r\n").encode("ascii")
        self._data = data
        self._cancelTimers()
        self.pool.transport.write(data, addr)
        clock = self.pool.reactor
        self._interval = self.pool.T1
        self._retransmit = clock.callLater(self._interval, self._again)
        self._timeout = clock.callLater(64 * self.pool.T1, self._noAnswer)

    def _again(self):
        self.pool.transport.write(self._data, self.target)
        self._interval = min(self._interval * 2, 4.0)
        self._retransmit = self.pool.reactor.callLater(self._interval,
                                                       self._again)

    def _cancelTimers(self):
        for call in (self._retransmit, self._timeout):
            if call is not None and call.active():
                call.cancel()
        self._retransmit = self._timeout = None

    def _noAnswer(self):
        self._cancelTimers()
        if self.stopped:
            return
        self.pool.noAnswer += 1
        # As the client library: no answer means a new login from the
        # distributor.
        self.login()

    # Receiving

    def response(self, response):
        number = response.cseq()[0]
        if self.stopped or number != self.cseq or number == self.answered:
            return
        if response.code >= 200:
            # A retransmitted final response is not handled twice.
            self.answered = number
        self._cancelTimers()
        code = response.code
        if code == 401:
            self.challenges += 1
            if self.challenges > 2:
                self._failed(code)
                return
            _, self.session = answerChallenge(
                response.values("www-authenticate"), "REGISTER",
                f"sip:{DOMAIN}", self.name, PASSWORD)
            self.nc = 0
            self.state = "sent-auth"
            self.send(self.target)
        elif code == 301:
            contact = response.header("contact").strip("<>")
            hostport = contact.split(":", 1)[1]
            host, port = hostport.rsplit(":", 1)
            self.hops += 1
            if self.hops > 5:
                self._failed(code)
                return
            self.challenges = 0
            self.send((host, int(port.split(";")[0])))
        elif 200 <= code < 300:
            self.home = self.target
            self.state = "registered"
            self.registeredAt = self.pool.reactor.seconds()
            self.pool.registered(self)
            delay = self.pool.expires / 2
            if self.firstRefresh:
                # In a pool that has run for a while the refreshes are
                # spread evenly over the refresh interval.
                self.firstRefresh = False
                delay = random.uniform(0, delay)
            if self._refresh is not None and self._refresh.active():
                self._refresh.cancel()
            self._refresh = self.pool.reactor.callLater(delay, self.refresh)
        elif code == 503:
            self.pool.reactor.callLater(1.0, self.login)
        else:
            self._failed(code)

    def _failed(self, code):
        # Counted, and a new login a second later (as the client library
        # retries a failed login).
        self.pool.failed += 1
        self.pool.codes[code] = self.pool.codes.get(code, 0) + 1
        self.pool.reactor.callLater(1.0, self.login)

    def refresh(self):
        self._refresh = None
        if self.stopped:
            return
        self.state = "refresh"
        self.challenges = 0
        self.send(self.home)

    def stop(self):
        self.stopped = True
        self._cancelTimers()
        if self._refresh is not None and self._refresh.active():
            self._refresh.cancel()


class SimSocket(DatagramProtocol):
    """
    One UDP socket carrying many simulated users.
    """

    def __init__(self, pool, users):
        self.pool = pool
        self.users = {u.callId: u for u in users}

    def datagramReceived(self, data, addr):
        try:
            message = parseMessage(data)
        except Exception:
            return
        if not isinstance(message, Response):
            return
        user = self.users.get(message.header("call-id"))
        if user is not None:
            user.response(message)


class SimPool:
    """
    The users of one socket share its port and transport.
    """

    def __init__(self, reactor, distributor, T1, expires, onRegistered):
        self.reactor = reactor
        self.distributor = distributor
        self.T1 = T1
        self.expires = expires
        self.onRegistered = onRegistered
        self.noAnswer = 0
        self.failed = 0
        self.codes = {}
        self.transport = None
        self.port = None

    def registered(self, user):
        self.onRegistered(user)


def poolConfigs(transport, credentials, interval, threshold, T1, **more):
    """
    The configurations of the bench's pool, by name: a distributor whose
    monitor checks every C{interval} seconds and marks a server down after
    C{threshold} silent checks (as soon as they allow), and two homes, all
    listening on C{transport} on loopback; C{more} goes to every server.
    """
    monitor = {"monitor": True, "monitor-interval": interval,
               "auto-rebalance": False, "monitor-threshold": threshold,
               "monitor-down-after": interval * (threshold - 1),
               "monitor-timeout": min(interval / 2, 1.0)}
    for name, role, extra in (("distributor", "distributor", monitor),
                              ("home1", "home", {}), ("home2", "home", {})):
        config = {"role": role, "name": name, "domain": DOMAIN,
                  "listen": [f"{transport}:0:interface=127.0.0.1"],
                  "credentials": credentials, "secret": SECRET, "t1": T1,
                  "min-expires": 1, "auth-failures": 1000000}
        config.update(more)
        config.update(extra)
        yield name, config


def watchCrash(store, reactor):
    """
    When home1 is marked down and when its users are reassigned, as the
    store reports it: a dict filled with C{"down"} and C{"reassigned"}
    times.
    """
    marks = {}

    def watcher(event):
        now = reactor.seconds()
        if getattr(event, "serverId", None) == "home1" and \
                event.new is not None and event.new.state == "down":
            marks.setdefault("down", now)
        if getattr(event, "old", None) == "home1":
            marks["reassigned"] = now
    store.watch(watcher)
    return marks


@defer.inlineCallbacks
def run(reactor, crashed, others, interval, threshold, expires, T1, rate):
    store = MemoryAssignmentStore()
    users = crashed + others
    names = [f"u{i}" for i in range(users)]
    credentials = "memory:" + ",".join(f"{n}:{PASSWORD}" for n in names)
    services, addrs = {}, {}
    for name, config in poolConfigs("udp", credentials, interval,
                                    threshold, T1):
        service = buildServer(config, reactor, store=store)
        service.startService()
        yield service.transportService.ready
        port = service.transportService.ports[0].getHost().port
        services[name] = service
        addrs[name] = ("127.0.0.1", port)
    for name in ("home1", "home2"):
        yield store.addServer(ServerRecord(name, f"sip:127.0.0.1:{addrs[name][1]}"))
    yield store.assignUsers(
        [(f"{n}@{DOMAIN}", "home1" if i < crashed else "home2")
         for i, n in enumerate(names)])

    state = {"registered": set(), "moved": set(), "waiting": None,
             "watch": None, "times": []}
    home2 = addrs["home2"]

    def onRegistered(user):
        state["registered"].add(user.name)
        watch = state["watch"]
        if watch is not None and user.home == home2 and user.name in watch:
            watch.discard(user.name)
            state["times"].append(reactor.seconds())
            if not watch and state["waiting"] is not None:
                d, state["waiting"] = state["waiting"], None
                d.callback(reactor.seconds())

    pools, sims = [], []
    for start in range(0, users, USERS_PER_SOCKET):
        pool = SimPool(reactor, addrs["distributor"], T1, expires,
                       onRegistered)
        members = [SimUser(pool, n) for n in names[start:start + USERS_PER_SOCKET]]
        protocol = SimSocket(pool, members)
        port = reactor.listenUDP(0, protocol, interface="127.0.0.1")
        port.setReceiveBufferSize(4 * 1024 * 1024) if hasattr(
            port, "setReceiveBufferSize") else None
        pool.transport = port
        pool.port = port.getHost().port
        pools.append((pool, port))
        sims.extend(members)

    # Log everybody in, at most `rate` logins per second.
    began = time.time()
    for i in range(0, users, rate // 10 or 1):
        for user in sims[i:i + (rate // 10 or 1)]:
            user.login()
        yield task.deferLater(reactor, 0.1, lambda: None)
    while len(state["registered"]) < users:
        if time.time() - began > 300:
            raise RuntimeError(f"only {len(state['registered'])} of {users} "
                               f"logged in")
        yield task.deferLater(reactor, 1.0, lambda: None)
        print(f"  ... {len(state['registered'])} registered, "
              f"{sum(p.noAnswer for p, _ in pools)} timeouts, "
              f"{sum(p.failed for p, _ in pools)} failures", flush=True)
    print(f"  {users} users registered in {time.time() - began:.1f} s "
          f"(home1 {services['home1'].registrar.count}, "
          f"home2 {services['home2'].registrar.count})")
    # One refresh interval: every user has refreshed once, at a random
    # point of it.
    yield task.deferLater(reactor, expires / 2 + 1, lambda: None)
    before = sum(p.noAnswer for p, _ in pools)

    victims = {u.name for u in sims if u.home == addrs["home1"]}
    state["watch"] = set(victims)
    state["waiting"] = done = defer.Deferred()
    marks = watchCrash(store, reactor)

    crash = reactor.seconds()
    yield services["home1"].stopService()
    finished = yield done
    monitor = services["distributor"].monitor
    print(f"  N={len(victims)} users of the crashed home "
          f"(monitor every {interval} s, {threshold} failures, "
          f"expires {expires} s -> refresh every {expires / 2:g} s, "
          f"T1 {T1} s -> client timeout {64 * T1:g} s):")
    print(f"    marked down after     {marks['down'] - crash:6.2f} s")
    print(f"    all reassigned after  {marks['reassigned'] - crash:6.2f} s "
          f"({monitor.moved} moved)")
    times = sorted(t - crash for t in state["times"])
    print(f"    all registered at home2 after {finished - crash:6.2f} s "
          f"(half of them after {times[len(times) // 2]:.2f} s, 90% after "
          f"{times[int(len(times) * 0.9)]:.2f} s)")
    timeouts = sum(p.noAnswer for p, _ in pools) - before
    failures = sum(p.failed for p, _ in pools)
    codes = {}
    for p, _ in pools:
        for code, n in p.codes.items():
            codes[code] = codes.get(code, 0) + n
    print(f"    client transaction timeouts {timeouts}, failures {failures} "
          f"{codes or ''}")

    for user in sims:
        user.stop()
    for pool, port in pools:
        yield port.stopListening()
    for service in services.values():
        if service.running:
            yield service.stopService()


@defer.inlineCallbacks
def runTCP(reactor, crashed, others, interval, threshold, expires, T1, rate,
           jitter, deadline=120.0):
    """
    The TCP mode (see the module docstring): the client library's
    Registration per user, reacting to the lost connection.
    """
    from sipdist.client.core import UserAgent
    from sipdist.client.discovery import ServerLocator
    from sipdist.client.login import Registration

    store = MemoryAssignmentStore()
    users = crashed + others
    names = [f"u{i}" for i in range(users)]
    credentials = "memory:" + ",".join(f"{n}:{PASSWORD}" for n in names)
    services, ports = {}, {}
    for name, config in poolConfigs(
            "tcp", credentials, interval, threshold, T1,
            **{"auth-address-failures": 1000000,
               "max-connections-per-host": 100000}):
        service = buildServer(config, reactor, store=store)
        service.startService()
        yield service.transportService.ready
        ports[name] = service.transportService.ports[0].getHost().port
        services[name] = service
    uris = {name: f"sip:127.0.0.1:{port};transport=tcp"
            for name, port in ports.items()}
    for name in ("home1", "home2"):
        yield store.addServer(ServerRecord(name, uris[name]))
    yield store.assignUsers(
        [(f"{n}@{DOMAIN}", "home1" if i < crashed else "home2")
         for i, n in enumerate(names)])

    state = {"watch": None, "waiting": None, "times": [], "retries": 0,
             "backupFirst": 0, "viaDistributor": 0}
    agents = []
    reasons = {}

    def observer(ua):
        def seen(event):
            watch = state["watch"]
            if watch is None or ua.name not in watch:
                return
            if event.kind == "retry":
                state["retries"] += 1
                reason = re.sub(r"[0-9.:]+", "#", event.text)[:90]
                reasons[reason] = reasons.get(reason, 0) + 1
            elif event.kind == "trying" and ua.name not in ua.tried:
                ua.tried.add(ua.name)
                port = event.target.port
                if port == ports["home2"]:
                    state["backupFirst"] += 1
                elif port == ports["distributor"]:
                    state["viaDistributor"] += 1
            elif event.kind == "registered" and \
                    event.target.port == ports["home2"]:
                watch.discard(ua.name)
                state["times"].append(reactor.seconds())
                if not watch and state["waiting"] is not None:
                    d, state["waiting"] = state["waiting"], None
                    d.callback(reactor.seconds())
        return seen

    for n in names:
        ua = UserAgent(reactor, f"{n}@{DOMAIN}", PASSWORD, T1=T1)
        ua.name = n
        ua.tried = set()
        ua.observer = observer(ua)
        ua.registration = Registration(
            ua, ServerLocator(None), server=uris["distributor"],
            expires=expires, reloginJitter=jitter)
        agents.append(ua)

    def closeDistributor(result, ua):
        # Each user would hold a connection to the distributor (two file
        # descriptors in this one process) besides its home's.
        flow = ua.transport.existingFlow("TCP", "127.0.0.1",
                                         ports["distributor"])
        if flow is not None:
            flow.close()
        return result

    began = time.time()
    step = rate // 10 or 1
    pending = []
    for i in range(0, users, step):
        for ua in agents[i:i + step]:
            d = ua.registration.start()
            d.addBoth(closeDistributor, ua)
            pending.append(d)
        yield task.deferLater(reactor, 0.1, lambda: None)
    results = yield defer.DeferredList(pending, consumeErrors=True)
    failedLogins = sum(1 for ok, _ in results if not ok)
    for ok, failure in results:
        if not ok:
            print(f"  a first login failed: {failure.getErrorMessage()}")
            break
    print(f"  {users} users registered over TCP in {time.time() - began:.1f}"
          f" s ({failedLogins} failed; home1 "
          f"{services['home1'].registrar.count}, home2 "
          f"{services['home2'].registrar.count})")
    withBackup = sum(1 for ua in agents[:crashed]
                     if ua.registration.result is not None
                     and ua.registration.result.backup is not None
                     and ua.registration.result.backup.port == ports["home2"])
    yield task.deferLater(reactor, 1.0, lambda: None)

    victims = {ua.name for ua in agents[:crashed]
               if ua.registration.state == "registered"}
    if len(victims) < crashed or services["home1"].registrar.count < crashed:
        print(f"  warning: only {len(victims)} of {crashed} users registered "
              f"at home1 before the crash (a lower --rate helps)")
    state["watch"] = set(victims)
    state["waiting"] = done = defer.Deferred()
    marks = watchCrash(store, reactor)

    timeout = reactor.callLater(deadline, lambda: state["waiting"] and (
        state.__setitem__("waiting", None) or done.callback(None)))
    crash = reactor.seconds()
    yield services["home1"].stopService()
    finished = yield done
    if timeout.active():
        timeout.cancel()
    monitor = services["distributor"].monitor
    print(f"  N={len(victims)} users of the crashed home over TCP "
          f"(monitor every {interval} s, {threshold} failures, "
          f"expires {expires} s, re-login jitter up to {jitter:g} s; "
          f"{withBackup} knew home2 as their backup):")
    if "down" in marks:
        print(f"    marked down after     {marks['down'] - crash:6.2f} s")
    if "reassigned" in marks:
        print(f"    all reassigned after  {marks['reassigned'] - crash:6.2f}"
              f" s ({monitor.moved} moved)")
    times = sorted(t - crash for t in state["times"])
    if finished is not None:
        print(f"    all registered at home2 after {finished - crash:6.2f} s "
              f"(half of them after {times[len(times) // 2]:.2f} s, 90% "
              f"after {times[int(len(times) * 0.9)]:.2f} s)")
    print(f"    first REGISTER after the loss: {state['backupFirst']} to the "
          f"backup, {state['viaDistributor']} to the distributor")
    print(f"    failed logins (retried) {state['retries']}, users lost "
          f"{len(state['watch'])} (not registered within {deadline:g} s)")

    for reason, count in sorted(reasons.items(), key=lambda i: -i[1])[:4]:
        print(f"      {count} x {reason}")
    for ua in agents:
        ua.registration.state = "stopped"
        yield ua.registration.stop()
    for ua in agents:
        yield ua.stop()
    for service in services.values():
        if service.running:
            yield service.stopService()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, nargs="+", default=[1000, 10000],
                        help="users of the crashed home, N (default 1,000 "
                             "and 10,000)")
    parser.add_argument("--others", type=float, default=0.1,
                        help="users of the surviving home, as a fraction "
                             "of N (default 0.1)")
    parser.add_argument("--interval", type=float, default=0.5)
    parser.add_argument("--threshold", type=int, default=3)
    parser.add_argument("--expires", type=int, default=60)
    parser.add_argument("--t1", type=float, default=0.1)
    parser.add_argument("--rate", type=int, default=500,
                        help="logins per second while setting up (tcp: "
                             "default 100)")
    parser.add_argument("--transport", choices=("udp", "tcp"), default="udp",
                        help="udp: simulated clients noticing at their "
                             "refresh; tcp: the client library noticing the "
                             "lost connection (default expires 3600)")
    parser.add_argument("--jitter", type=float, default=2.0,
                        help="tcp: the clients' re-login jitter (s)")
    args = parser.parse_args()
    if args.transport == "tcp" and "--expires" not in sys.argv:
        args.expires = 3600
    if args.transport == "tcp" and "--rate" not in sys.argv:
        # The client library costs more CPU per login than the simulated
        # clients: faster, the monitor's probes time out during the set-up.
        args.rate = 100
    from twisted.internet import reactor

    @defer.inlineCallbacks
    def all_():
        for users in args.users:
            others = int(users * args.others)
            print(f"N={users} (and {others} on the surviving home):")
            if args.transport == "tcp":
                yield runTCP(reactor, users, others, args.interval,
                             args.threshold, args.expires, args.t1,
                             args.rate, args.jitter)
                continue
            yield run(reactor, users, others, args.interval, args.threshold,
                      args.expires, args.t1, args.rate)

    def done(result):
        reactor.stop()
        return result

    def failed(failure):
        print(f"failed: {failure.getErrorMessage()}")
        failure.printTraceback()

    reactor.callWhenRunning(lambda: all_().addErrback(failed).addBoth(done))
    reactor.run()


if __name__ == "__main__":
    main()
