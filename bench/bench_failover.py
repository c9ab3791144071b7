"""
Failover time: from a home server killed with SIGKILL to all of its N
users registered at the surviving homes, with the shipped defaults.

    python bench/bench_failover.py [--transport tcp udp] [--users 1000 10000]
        [--per-worker 1500] [--rate 200]

Every server is a process of its own (bench/failover_server.py): a
distributor running the monitor, and home1, home2 and home3, sharing a file
store (capacity weights 10, 1 and 1: home1 carries N users, the others
N/10 each, so the pool is balanced and the monitor moves nobody before the
crash).  The users are the client library itself, spread over several
client processes (bench/failover_clients.py, at most --per-worker users
each), which report every registration and failure to this script on
their standard output.  Everybody logs in through the distributor (at most
--rate logins per second); then home1 is killed (SIGKILL) and the script
prints, from the kill:

  - when the monitor marked home1 down in the store, and when the store
    had moved all of its users (the monitor moves --max-moves users per
    round);
  - when half, 90% and all of home1's users were registered again at a
    surviving home (where their client went first: their backup home);
  - the time from each client's first REGISTER after the loss to its
    registration, and how many of those REGISTERs were challenged;
  - the peak CPU of each surviving server (per 0.5 s), and the CPU
    seconds each surviving process (servers, client processes) used from
    the kill until all were registered again, and the kernel's share of
    them (system time);
  - failed logins (retried by the clients), users lost (not registered
    again within the deadline), users registered at two surviving homes
    after the kill (moved twice), and users the store placed elsewhere than
    where they registered (they move again at their next refresh).

With --via-edge, every client logs in through an edge (role edge) whose
next hop is the distributor, which proxies them to their home (two Via
values): the clients see only the edge and never notice home1's death.
At the kill the script makes home1's users send their next REGISTER
(SIGUSR1 to the client processes; at most --refresh-rate per second in
all); the distributor sends them to each user's backup home, which serves
them temporarily (at most 120 s), home1 being dead.  "Registered again" is
then that REGISTER answered 200 (or a new login after a failed one);
which backup served a user is not visible to a client behind an edge, so
"moved twice" is not counted there.

Settings: the shipped defaults of the servers and clients, but for the
limits that every client coming from 127.0.0.1 would hit (connections and
failed authentications per address) and home1's 10,000 connections
(--max-connections).
"""

import argparse
import json
import os
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
PASSWORD = "wonderland"
SECRET = "bench-nonce-secret-0123456789abcdef"
DOMAIN = "example.com"
HOMES = ("home1", "home2", "home3")
WEIGHTS = {"home1": 10, "home2": 1, "home3": 1}


def freePort(kind):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM if kind == "udp"
                      else socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def loadAverage():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def cpuSeconds(pid, kernel=False):
    """
    User and system CPU seconds of a process (with C{kernel}, only the
    system's: the kernel's work for it).
    """
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    ticks = int(fields[12]) if kernel else int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def readStore(path):
    """
    The home1 state and the assignments of the file store.
    """
    state, users = None, {}
    try:
        with open(path) as f:
            for line in f:
                fields = line.split()
                if not fields:
                    continue
                if fields[0] == "server" and fields[1] == "home1":
                    for field in fields[3:]:
                        if field.startswith("state="):
                            state = field[6:]
                elif fields[0] == "user":
                    users[fields[1].split(":")[-1].split("@")[0]] = fields[2]
    except OSError:
        pass
    return state, users


class Processes:
    """
    The child processes and their output lines.
    """

    def __init__(self):
        self.selector = selectors.DefaultSelector()
        self.children = []
        self.buffers = {}

    def start(self, argv, tag):
        child = subprocess.Popen(argv, stdout=subprocess.PIPE,
                                 stderr=subprocess.DEVNULL, bufsize=0)
        child.tag = tag
        os.set_blocking(child.stdout.fileno(), False)
        self.selector.register(child.stdout, selectors.EVENT_READ, child)
        self.buffers[child.pid] = b""
        self.children.append(child)
        return child

    def lines(self, timeout):
        """
        (child, line) pairs that arrived within C{timeout} seconds.
        """
        out = []
        for key, _ in self.selector.select(timeout):
            child = key.data
            try:
                data = os.read(child.stdout.fileno(), 1 << 20)
            except BlockingIOError:
                continue
            if not data:
                self.selector.unregister(child.stdout)
                continue
            buffer = self.buffers[child.pid] + data
            *complete, self.buffers[child.pid] = buffer.split(b"\n")
            out.extend((child, line.decode("utf-8", "replace"))
                       for line in complete)
        return out

    def stop(self):
        for child in self.children:
            if child.poll() is None:
                child.terminate()
        deadline = time.time() + 10
        for child in self.children:
            try:
                child.wait(max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        self.selector.close()


def run(transport, crashed, perWorker, rate, deadline, reassignWait,
        viaEdge=False, refreshRate=2000, serverOptions=None):
    others = crashed // 10
    names = [f"u{i}" for i in range(crashed + 2 * others)]
    home = {n: "home1" for n in names[:crashed]}
    for i, n in enumerate(names[crashed:]):
        home[n] = "home2" if i % 2 == 0 else "home3"
    tmp = tempfile.mkdtemp(prefix="bench-failover-")
    procs = Processes()
    try:
        return _run(transport, names, home, perWorker, rate, deadline,
                    reassignWait, tmp, procs, viaEdge, refreshRate,
                    serverOptions or {})
    finally:
        procs.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def _run(transport, names, home, perWorker, rate, deadline, reassignWait,
         tmp, procs, viaEdge=False, refreshRate=2000, serverOptions=()):
    suffix = ";transport=tcp" if transport == "tcp" else ""
    front = ("edge", "edge-inside") if viaEdge else ()
    ports = {name: freePort(transport)
             for name in ("distributor",) + HOMES + front}
    uris = {name: f"sip:127.0.0.1:{port}{suffix}"
            for name, port in ports.items()}
    byPort = {port: name for name, port in ports.items()}
    storePath = os.path.join(tmp, "store.conf")
    with open(storePath, "w") as f:
        for name in HOMES:
            f.write(f"server {name} {uris[name]} weight={WEIGHTS[name]} "
                    f"state=active\n")
        for n in names:
            f.write(f"user {n}@{DOMAIN} {home[n]}\n")
    credentials = "memory:" + ",".join(f"{n}:{PASSWORD}" for n in names)
    servers = {}
    for name in ("distributor",) + HOMES:
        config = {"role": "distributor" if name == "distributor" else "home",
                  "name": name, "domain": DOMAIN,
                  "listen": [f"{transport}:{ports[name]}:interface=127.0.0.1"],
                  "store": f"file:{storePath}", "credentials": credentials,
                  "secret": SECRET,
                  # Every client comes from 127.0.0.1; home1 holds a
                  # connection per user.
                  "max-connections": 30000,
                  "max-connections-per-host": 100000,
                  "auth-address-failures": 1000000}
        if name == "distributor":
            config["monitor"] = True
        config.update(serverOptions)
        path = os.path.join(tmp, f"{name}.json")
        with open(path, "w") as f:
            json.dump(config, f)
        servers[name] = procs.start(
            [sys.executable, os.path.join(HERE, "failover_server.py"), path],
            name)
    if viaEdge:
        config = {"role": "edge", "name": "edge", "domain": DOMAIN,
                  "listen": [f"{transport}:{ports['edge']}:"
                             f"interface=127.0.0.1"],
                  "inside-listen": [f"{transport}:{ports['edge-inside']}:"
                                    f"interface=127.0.0.1"],
                  "next-hop": [uris["distributor"]], "secret": SECRET,
                  "max-connections": 30000,
                  "max-connections-per-host": 100000}
        path = os.path.join(tmp, "edge.json")
        with open(path, "w") as f:
            json.dump(config, f)
        servers["edge"] = procs.start(
            [sys.executable, os.path.join(HERE, "failover_server.py"), path],
            "edge")
    waitReady(procs, servers)
    victimNames = {n for n in names if home[n] == "home1"}

    workers = []
    count = max(1, -(-len(names) // perWorker))
    for w in range(count):
        spec = {"names": names[w::count], "password": PASSWORD,
                "domain": DOMAIN, "transport": transport,
                "server": uris["edge" if viaEdge else "distributor"],
                "rate": rate / count}
        if viaEdge:
            spec["refresh"] = [n for n in spec["names"] if n in victimNames]
            spec["refreshRate"] = refreshRate / count
        path = os.path.join(tmp, f"worker{w}.json")
        with open(path, "w") as f:
            json.dump(spec, f)
        workers.append(procs.start(
            [sys.executable, os.path.join(HERE, "failover_clients.py"), path],
            f"worker{w}"))

    where = {}
    began = time.time()
    done, firstFailed = 0, 0
    while done < len(workers):
        if time.time() - began > 900:
            raise RuntimeError("the first logins took more than 900 s")
        for child, line in procs.lines(1.0):
            fields = line.split(" ", 3)
            if fields[0] == "R":
                where[fields[1]] = byPort.get(int(fields[2]))
            elif fields[0] == "D":
                done += 1
                firstFailed += int(fields[2])
            elif fields[0] == "E":
                raise RuntimeError(f"{child.tag}: {line}")
    # Late first logins (retried) settle.
    settle = time.time() + 3
    while time.time() < settle:
        for child, line in procs.lines(0.5):
            fields = line.split(" ", 3)
            if fields[0] == "R":
                where[fields[1]] = byPort.get(int(fields[2]))
    counts = {name: sum(1 for h in where.values() if h == name)
              for name in HOMES}
    victims = {n for n, h in where.items() if h == "home1"}
    if viaEdge:
        # Every client sees the edge; home1's users are the store's.
        counts["edge"] = sum(1 for h in where.values() if h == "edge")
        victims = {n for n, h in where.items() if h == "edge"
                   and n in victimNames}
    print(f"  {len(where)} of {len(names)} users registered over "
          f"{transport.upper()} in {time.time() - began:.0f} s by "
          f"{len(workers)} client processes ({firstFailed} first logins "
          f"failed): {counts}", flush=True)

    survivors = {name: servers[name].pid
                 for name in ("home2", "home3", "distributor") + front[:1]}
    survivors.update({w.tag: w.pid for w in workers})
    cpu = {name: cpuSeconds(pid) for name, pid in survivors.items()}
    cpuAtKill, cpuAtAll = dict(cpu), None
    kernelAtKill = {name: cpuSeconds(pid, True)
                    for name, pid in survivors.items()}
    kernelAtAll = None
    peak = {name: 0.0 for name in survivors}
    loadBefore = loadAverage()

    # The kill.
    crash = time.time()
    os.kill(servers["home1"].pid, signal.SIGKILL)
    servers["home1"].wait()
    if viaEdge:
        # Their next REGISTER, now.
        for worker in workers:
            os.kill(worker.pid, signal.SIGUSR1)
    again, movedTwice, failures, reasons = {}, set(), 0, {}
    firstTo, noticed, tried, challenged = {}, {}, {}, 0
    stats, latest, history = {}, {}, {}
    marks = {}
    lastSample = crash
    lastStore = 0.0
    users = {}
    finish = crash + deadline
    while True:
        now = time.time()
        for child, line in procs.lines(0.2):
            fields = line.split(" ", 3)
            kind = fields[0]
            if kind == "F" and viaEdge and fields[1] in victims:
                # Refreshed through the edge: served temporarily by a
                # backup (granted at most 120 s), or for good by the home
                # the store moved the user to meanwhile.
                served = "backup" if int(fields[2]) <= 120 else "new home"
                again.setdefault(fields[1],
                                 (float(fields[3]) - crash, served))
            elif kind == "R" and viaEdge:
                if fields[1] in victims:
                    again.setdefault(fields[1], (float(fields[3]) - crash,
                                                 "new login"))
            elif kind == "Y" and fields[1] in victims:
                story = history.setdefault(fields[1], [])
                if len(story) < 8:
                    story.append(f"{time.time() - crash:.1f} "
                                 f"{line.split(' ', 2)[2]}")
            elif kind == "R":
                name, server = fields[1], byPort.get(int(fields[2]))
                if name in victims:
                    story = history.setdefault(name, [])
                    if len(story) < 8:
                        story.append(f"{float(fields[3]) - crash:.1f} "
                                     f"registered at {server}")
                if name in victims and server in ("home2", "home3"):
                    if name in again and again[name][1] != server:
                        movedTwice.add(name)
                    if name not in again:
                        again[name] = (float(fields[3]) - crash, server)
            elif kind == "T" and fields[1] in victims:
                firstTo.setdefault(byPort.get(int(fields[2]), "other"), 0)
                firstTo[byPort.get(int(fields[2]), "other")] += 1
                if len(fields) > 3:
                    tried.setdefault(fields[1], float(fields[3]) - crash)
            elif kind == "C" and fields[1] in victims:
                challenged += 1
            elif kind == "S" and len(fields) == 4:
                # Since the kill: the first report after it is the base.
                stats.setdefault(child.tag, [float(v) for v in fields[1:]])
                latest[child.tag] = [float(v) for v in fields[1:]]
            elif kind == "L" and fields[1] in victims:
                noticed.setdefault(fields[1], float(fields[2]) - crash)
            elif kind == "X" and fields[1] in victims:
                failures += 1
                reason = line.split(" ", 2)[2][:110] if len(fields) > 2 \
                    else ""
                reason = "".join("#" if c.isdigit() else c for c in reason)
                reasons[reason] = reasons.get(reason, 0) + 1
        now = time.time()
        if now - lastSample >= 0.5:
            for name, pid in survivors.items():
                seconds = cpuSeconds(pid)
                if seconds is not None and cpu[name] is not None:
                    peak[name] = max(peak[name], 100 * (seconds - cpu[name])
                                     / (now - lastSample))
                cpu[name] = seconds
            lastSample = now
        if now - lastStore >= 0.5:
            lastStore = now
            state, users = readStore(storePath)
            if state == "down":
                marks.setdefault("down", now - crash)
            if "down" in marks and not any(
                    users.get(n) == "home1" for n in victims):
                marks.setdefault("reassigned", now - crash)
        allBack = len(again) == len(victims)
        if allBack and cpuAtAll is None:
            cpuAtAll = ({name: cpuSeconds(pid)
                         for name, pid in survivors.items()}, now - crash)
            kernelAtAll = {name: cpuSeconds(pid, True)
                           for name, pid in survivors.items()}
        if allBack:
            finish = min(finish, crash + max(now - crash, reassignWait))
        if (allBack and "reassigned" in marks) or now > finish:
            break
    elapsed = time.time() - crash
    if cpuAtAll is None:
        cpuAtAll = ({name: cpuSeconds(pid)
                     for name, pid in survivors.items()}, elapsed)
        kernelAtAll = {name: cpuSeconds(pid, True)
                       for name, pid in survivors.items()}
    times = sorted(t for t, _ in again.values())
    lost = len(victims) - len(again)
    elsewhere = sum(1 for n, (_, server) in again.items()
                    if users.get(n) not in (None, "home1", server))
    if viaEdge:
        elsewhere = "n/a"
    stillHome1 = sum(1 for n in victims if users.get(n) == "home1")
    print(f"  N={len(victims)} users of home1, killed (SIGKILL); load "
          f"average {loadBefore} before, {loadAverage()} after:")
    for what in ("down", "reassigned"):
        text = {"down": "marked down in the store",
                "reassigned": "all its users moved in the store"}[what]
        if what in marks:
            print(f"    {text} after {marks[what]:7.2f} s")
        else:
            print(f"    {text}: not within {elapsed:.0f} s "
                  f"({stillHome1} still assigned to home1)")
    if times:
        half = times[(len(times) - 1) // 2]
        ninety = times[int((len(times) - 1) * 0.9)]
        print(f"    registered again: half after {half:.2f} s, 90% after "
              f"{ninety:.2f} s, " + (
                  f"all after {times[-1]:.2f} s" if not lost else
                  f"{len(again)} of {len(victims)} by {elapsed:.0f} s"))
    if noticed:
        seen = sorted(noticed.values())
        print(f"    clients noticed the loss: half after "
              f"{seen[(len(seen) - 1) // 2]:.2f} s, all "
              f"({len(seen)}) after {seen[-1]:.2f} s")
    spans = sorted(t - tried[n] for n, (t, _) in again.items()
                   if n in tried)
    if spans:
        print(f"    from the first REGISTER after the loss to registered: "
              f"half {spans[(len(spans) - 1) // 2]:.2f} s, 90% "
              f"{spans[int((len(spans) - 1) * 0.9)]:.2f} s, all "
              f"{spans[-1]:.2f} s; REGISTERs challenged after the loss: "
              f"{challenged}")
    if cpuAtAll is not None:
        used, wall = cpuAtAll
        spent = {name: used[name] - cpuAtKill[name] for name in used
                 if used[name] is not None and cpuAtKill[name] is not None}
        clientSeconds = sum(v for k, v in spent.items()
                            if k.startswith("worker"))
        print(f"    CPU-seconds from the kill to "
              f"{'the end' if lost else 'all registered again'} "
              f"({wall:.2f} s): " + ", ".join(
                  f"{name} {value:.2f}" for name, value in spent.items()
                  if not name.startswith("worker"))
              + f"; client processes {clientSeconds:.2f} in all "
              f"({1000 * clientSeconds / max(1, len(again)):.2f} ms a "
              f"user registered again)")
        kernel = {name: kernelAtAll[name] - kernelAtKill[name]
                  for name in kernelAtAll if kernelAtAll[name] is not None
                  and kernelAtKill[name] is not None}
        print("    of which in the kernel (system time): " + ", ".join(
            f"{name} {value:.2f}" for name, value in kernel.items()
            if not name.startswith("worker")) + f"; client processes "
            f"{sum(v for k, v in kernel.items() if k.startswith('worker')):.2f}")
    if latest:
        print("    client processes after the kill: garbage collection "
              "(CPU) " +
              ", ".join(f"{latest[t][0] - stats[t][0]:.2f} s"
                        for t in sorted(latest)) +
              f" (longest {max(v[1] for v in latest.values()):.3f} s "
              f"in the whole run), event loop lag at most " +
              f"{max(v[2] for v in latest.values()):.2f} s")
    print(f"    first REGISTER after the loss went to: "
          f"{dict(sorted(firstTo.items()))}")
    if viaEdge:
        kinds = {}
        for _, served in again.values():
            kinds[served] = kinds.get(served, 0) + 1
        print(f"    through the edge, answered by: {kinds}")
    else:
        print(f"    registered at: home2 "
              f"{sum(1 for _, s in again.values() if s == 'home2')}, home3 "
              f"{sum(1 for _, s in again.values() if s == 'home3')}")
    clients = [v for k, v in peak.items() if k.startswith("worker")]
    print("    peak CPU (per 0.5 s): " + ", ".join(
        f"{name} {value:.0f}%" for name, value in peak.items()
        if not name.startswith("worker")) + f"; client processes "
        f"{min(clients):.0f} to {max(clients):.0f}% each "
        f"({len(clients)} processes)")
    print(f"    failed logins (retried) {failures}, users lost {lost}, "
          f"moved twice "
          f"{'n/a (behind the edge)' if viaEdge else len(movedTwice)}, "
          f"placed by the store elsewhere "
          f"than where they registered {elsewhere}", flush=True)
    for reason, n in sorted(reasons.items(), key=lambda i: -i[1])[:3]:
        print(f"      {n} x {reason}")
    for name in sorted(movedTwice)[:3]:
        print(f"    moved twice: {name} (the store: {users.get(name)}):")
        for entry in history.get(name, []):
            print(f"      {entry}")
    return {"lost": lost, "all": times[-1] if times and not lost else None}


def waitReady(procs, servers):
    ready = set()
    limit = time.time() + 60
    while len(ready) < len(servers):
        if time.time() > limit:
            raise RuntimeError(f"servers not ready: "
                               f"{set(servers) - ready}")
        for child, line in procs.lines(1.0):
            if line.startswith("READY"):
                ready.add(child.tag)
            elif line.startswith("FAILED"):
                raise RuntimeError(f"{child.tag}: {line}")
        for name, child in servers.items():
            if child.poll() is not None:
                raise RuntimeError(f"{name} exited ({child.returncode})")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, nargs="+", default=[1000, 10000],
                        help="users of the killed home, N (default 1,000 "
                             "and 10,000)")
    parser.add_argument("--transport", nargs="+", choices=("tcp", "udp"),
                        default=["tcp", "udp"])
    parser.add_argument("--per-worker", type=int, default=1500,
                        help="users per client process at most")
    parser.add_argument("--rate", type=int, default=200,
                        help="logins per second while setting up")
    parser.add_argument("--deadline", type=float, default=None,
                        help="seconds after the kill a user may take to "
                             "register again before it counts as lost "
                             "(default: 60 over TCP, 120 over UDP)")
    parser.add_argument("--reassign-wait", type=float, default=30,
                        help="seconds after the kill to wait for the "
                             "store to move home1's users (the monitor "
                             "moves --max-moves, 500, per round of 5 s)")
    parser.add_argument("--via-edge", action="store_true",
                        help="clients log in through an edge in front of "
                             "the distributor; at the kill home1's users "
                             "send their next REGISTER, which the "
                             "distributor fails over to their backup home")
    parser.add_argument("--refresh-rate", type=int, default=2000,
                        help="with --via-edge: REGISTERs per second sent "
                             "by home1's users at the kill (default 2,000)")
    parser.add_argument("--server-option", action="append", default=[],
                        metavar="KEY=VALUE",
                        help="a setting of every server other than the "
                             "shipped default (a diagnosis, e.g. "
                             "overload-lag=5; VALUE read as JSON when it "
                             "parses)")
    args = parser.parse_args()
    serverOptions = {}
    for option in args.server_option:
        key, _, value = option.partition("=")
        try:
            serverOptions[key] = json.loads(value)
        except ValueError:
            serverOptions[key] = value
    # Terminated: the child processes are stopped all the same.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    for transport in args.transport:
        for users in args.users:
            deadline = args.deadline or (60 if transport == "tcp" else 120)
            print(f"{transport.upper()}, N={users}"
                  f"{', via an edge' if args.via_edge else ''}"
                  + "".join(f", {k}={v}" for k, v in serverOptions.items())
                  + ":", flush=True)
            run(transport, users, args.per_worker, args.rate,
                deadline, args.reassign_wait, args.via_edge,
                args.refresh_rate, serverOptions)


if __name__ == "__main__":
    main()
