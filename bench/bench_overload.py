"""
Overload: a home server (twistd sipdist --role=home, UDP on an ephemeral
loopback port) offered authenticated REGISTERs by SIPp at 1x, 2x and 4x
its knee, each run short.

    python bench/bench_overload.py [--knee CALLS_PER_S] [--seconds 10]
                                   [--multiples 1,2,4] [--trace FILE]
                                   [-- TWISTD_OPTION...]

Without --knee, the knee is found first: the highest of a few offered rates
(6 s each) at which at least 99% of the calls got their 200 in time.  A
call is REGISTER -> 401, REGISTER with MD5 credentials -> 200; a 503 at
either step answers it too (bench/sipp/register_overload.xml); a call that
gets neither within 5 s (SIPp retransmitting at 500 ms, 1 s, 2 s) is a
timeout.  For each run it prints the calls answered 200 and 503, the
timeouts, the datagrams the kernel dropped (the delta of Udp InErrors in
/proc/net/snmp: the whole machine's, SIPp's socket and other traffic
included; and those dropped at the server's socket, from /proc/net/udp), the answers a legitimate prober got (OPTIONS every 100 ms
over UDP from its own socket, retransmitted at 0.5 s and 1.5 s, a timeout
after 4 s), and the server's RSS.  At the end: the RSS once the completed
transactions have expired (35 s after the last run), and the registrations
lost: the bindings of a fixed set of users registered (for an hour) before
the load, counted again after it (GET /status, load.registered).

Options after -- go to twistd sipdist (e.g. --overload-lag=1000 to see the
server without overload control).
"""

import argparse
import glob
import hashlib
import json
import os
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_register import freePort, stopProcesses, waitForOptions  # noqa

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.dirname(HERE)
SCENARIO = os.path.join(HERE, "sipp", "register_overload.xml")
PASSWORD = "wonderland"
REALM = "example.com"
FIXED_USERS = 20


def ha1(user, algorithm):
    return algorithm(f"{user}:{REALM}:{PASSWORD}".encode()).hexdigest()


def prepare(work, homePort, users):
    with open(f"{work}/assignments.conf", "w") as f:
        f.write(f"server home1 sip:127.0.0.1:{homePort}\n")
        for user in users:
            f.write(f"user {user}@{REALM} home1\n")
    with open(f"{work}/credentials", "w") as f:
        f.write("# sipdist credentials: username:realm:MD5-HA1:SHA-256-HA1\n")
        for user in users:
            f.write(f"{user}:{REALM}:{ha1(user, hashlib.md5)}:"
                    f"{ha1(user, hashlib.sha256)}\n")
    with open(f"{work}/secret", "w") as f:
        f.write("bench-nonce-secret-0123456789\n")


def startHome(work, port, statusPort, extra, processes):
    twistd = shutil.which("twistd", path=os.path.dirname(sys.executable)) \
        or shutil.which("twistd")
    argv = [twistd, "-n", "--pidfile=", f"--logfile={work}/home1.log",
            "sipdist", "--role=home", "--name=home1",
            f"--listen=udp:{port}:interface=127.0.0.1",
            f"--status-listen=tcp:{statusPort}:interface=127.0.0.1",
            f"--store=file:{work}/assignments.conf",
            f"--credentials=file:{work}/credentials",
            f"--secret-file={work}/secret", f"--domain={REALM}",
            "--digest-algorithms=MD5"] + list(extra)
    # This checkout's sipdist, not an installed copy.
    env = dict(os.environ, PYTHONPATH=TOP)
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, cwd=work, env=env)
    processes.append(process)
    try:
        waitForOptions(port, timeout=60)
    except SystemExit:
        with open(f"{work}/home1.log") as f:
            print(f.read()[-2000:])
        raise
    return process


def status(statusPort):
    with urllib.request.urlopen(
            f"http://127.0.0.1:{statusPort}/status", timeout=10) as r:
        return json.load(r)


def rssMB(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def udpDrops():
    with open("/proc/net/snmp") as f:
        lines = [line.split() for line in f if line.startswith("Udp:")]
    fields = dict(zip(lines[0][1:], map(int, lines[1][1:])))
    return fields["InErrors"], fields["RcvbufErrors"]


def socketDrops(port):
    """
    Datagrams the kernel dropped at the server's own UDP socket (the last
    column of /proc/net/udp), or None.
    """
    suffix = f":{port:04X}"
    with open("/proc/net/udp") as f:
        for line in f.readlines()[1:]:
            fields = line.split()
            if fields[1].endswith(suffix):
                return int(fields[-1])
    return None


def sipp(work, port, user, expires, calls, rate):
    """
    Run SIPp; return (answered 200, answered 503, failed calls).
    """
    usersFile = f"{work}/{user}.csv"
    with open(usersFile, "w") as f:
        f.write(f"SEQUENTIAL\n{user};{PASSWORD};{expires}\n")
    for old in glob.glob(f"{work}/register_overload_*_logs.log"):
        os.unlink(old)
    argv = [shutil.which("sipp"), f"127.0.0.1:{port}", "-sf", SCENARIO,
            "-inf", usersFile, "-m", str(calls), "-r", str(rate),
            "-l", str(max(rate * 10, 100)), "-t", "u1", "-i", "127.0.0.1",
            "-p", str(freePort()), "-key", "domain", REALM,
            "-au", user, "-ap", PASSWORD,
            "-auth_uri", REALM, "-nostdin", "-trace_logs",
            "-recv_timeout", "5000", "-timeout", "120s",
            "-max_recv_loops", "100000", "-max_sched_loops", "100000",
            "-trace_err"]
    result = subprocess.run(argv, capture_output=True, text=True,
                            timeout=200, cwd=work)
    failed = 0
    for line in result.stdout.splitlines():
        if line.strip().startswith("Failed call"):
            failed = int(line.split("|")[2].split()[0])
    answers = {"200": 0, "503": 0}
    for path in glob.glob(f"{work}/register_overload_*_logs.log"):
        with open(path) as f:
            for line in f:
                code = line.strip()[-3:]
                if code in answers:
                    answers[code] += 1
    return answers["200"], answers["503"], failed


class Prober(threading.Thread):
    """
    OPTIONS every 100 ms from one UDP socket; counts answers and timeouts.
    """

    def __init__(self, port):
        threading.Thread.__init__(self, daemon=True)
        self.port = port
        self.stopping = False
        self.sent = self.ok = self.busy = self.timeouts = 0

    def request(self, n):
        local = self.sock.getsockname()
        return (f"OPTIONS sip:127.0.0.1:{self.port} SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP 127.0.0.1:{local[1]};branch=z9hG4bKp{n}\r\n"
                "From: <sip:prober@example.com>;tag=p\r\n"
                f"To: <sip:127.0.0.1:{self.port}>\r\nCall-ID: probe-{n}\r\n"
                "CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n"
                "Content-Length: 0\r\n\r\n").encode()

    def run(self):
        self.sock = sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        pending = {}  # n -> (start, retransmissions sent)
        n = 0
        nextSend = time.monotonic()
        while not (self.stopping and not pending):
            now = time.monotonic()
            if not self.stopping and now >= nextSend:
                n += 1
                self.sent += 1
                pending[n] = (now, 0)
                sock.sendto(self.request(n), ("127.0.0.1", self.port))
                nextSend += 0.1
            for k, (start, resent) in list(pending.items()):
                age = now - start
                if age > 4.0:
                    del pending[k]
                    self.timeouts += 1
                elif (resent, age > 0.5, age > 1.5) in (
                        (0, True, False), (1, True, True)):
                    pending[k] = (start, resent + 1)
                    sock.sendto(self.request(k), ("127.0.0.1", self.port))
            ready, _, _ = select.select([sock], [], [], 0.01)
            while ready:
                data = sock.recv(65535)
                try:
                    k = int(data.split(b"Call-ID: probe-", 1)[1]
                            .split(b"\r\n", 1)[0])
                except (IndexError, ValueError):
                    k = None
                if k in pending and not data.startswith(b"SIP/2.0 1"):
                    del pending[k]
                    if data.startswith(b"SIP/2.0 200"):
                        self.ok += 1
                    else:
                        self.busy += 1
                ready, _, _ = select.select([sock], [], [], 0)
        sock.close()


class Tracer(threading.Thread):
    """
    GET /status every 100 ms; one line per reading of the overload
    control's figures, to a file (--trace).
    """

    def __init__(self, statusPort, out, label):
        threading.Thread.__init__(self, daemon=True)
        self.statusPort, self.out, self.label = statusPort, out, label
        self.stopping = False

    def run(self):
        start = time.monotonic()
        while not self.stopping:
            try:
                figures = status(self.statusPort)["transactions"]["overload"]
            except Exception as e:
                figures = {"error": str(e)}
            figures["t"] = round(time.monotonic() - start, 2)
            figures["run"] = self.label
            self.out.write(json.dumps(figures) + "\n")
            time.sleep(0.1)


def offer(work, port, home, rate, seconds, trace=None):
    calls = int(rate * seconds)
    drops = udpDrops()
    serverDrops = socketDrops(port)
    prober = Prober(port)
    prober.start()
    tracer = None
    if trace is not None:
        tracer = Tracer(trace[1], trace[0], rate)
        tracer.start()
    start = time.monotonic()
    ok, shed, failed = sipp(work, port, "alice", 300, calls, rate)
    elapsed = time.monotonic() - start
    prober.stopping = True
    prober.join(10)
    if tracer is not None:
        tracer.stopping = True
        tracer.join(5)
    after = udpDrops()
    serverDrops = socketDrops(port) - serverDrops
    return {"rate": rate, "calls": calls, "ok": ok, "shed": shed,
            "failed": failed, "elapsed": elapsed,
            "inErrors": after[0] - drops[0], "rcvbuf": after[1] - drops[1],
            "serverDrops": serverDrops,
            "probes": prober.sent, "probeOk": prober.ok,
            "probeBusy": prober.busy, "probeTimeouts": prober.timeouts,
            "rss": rssMB(home.pid)}


def show(label, r):
    answered = (r["ok"] + r["shed"]) / r["calls"] * 100
    probed = (r["probeOk"] + r["probeBusy"]) / max(r["probes"], 1) * 100
    print(f"  {label:>4s} {r['rate']:>5,d}/s x {r['elapsed']:4.1f} s: "
          f"{r['ok']:>6,d} 200  {r['shed']:>6,d} 503  {r['failed']:>5,d} "
          f"timed out  ({answered:5.1f}% answered)  kernel drops "
          f"{r['inErrors']:,d} (at the server's socket "
          f"{r['serverDrops']:,d})  prober "
          f"{r['probeOk']}/{r['probes']} 200, {r['probeBusy']} 503, "
          f"{r['probeTimeouts']} timeouts ({probed:.1f}% answered)  "
          f"RSS {r['rss']:.0f} MB", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--knee", type=int, default=None,
                        help="calls/s; found first when absent")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--multiples", default="1,2,4")
    parser.add_argument("--trace", default=None,
                        help="write the overload figures (GET /status "
                        "every 100 ms during each run) to this file")
    parser.add_argument("twistd", nargs="*",
                        help="more options for twistd sipdist (after --)")
    args = parser.parse_args()

    work = tempfile.mkdtemp(prefix="sipdist-overload-")
    port, statusPort = freePort(), freePort()
    fixed = [f"fixed{i}" for i in range(FIXED_USERS)]
    prepare(work, port, ["alice"] + fixed)

    processes = []
    trace = None
    if args.trace:
        trace = (open(args.trace, "w", buffering=1), statusPort)
    try:
        home = startHome(work, port, statusPort, args.twistd, processes)
        ok = sum(sipp(work, port, user, 3600, 1, 10)[0] for user in fixed)
        registered = status(statusPort)["load"].get("registered")
        rss0 = rssMB(home.pid)
        print(f"home on udp:{port}; {ok}/{FIXED_USERS} fixed users "
              f"registered ({registered} registered in all); RSS "
              f"{rss0:.0f} MB; extra options {args.twistd}", flush=True)
        knee = args.knee
        if knee is None:
            print("finding the knee (6 s per rate):")
            knee = 250
            for rate in (500, 1000, 1500, 2000, 2500):
                r = offer(work, port, home, rate, 6)
                show("?", r)
                if r["ok"] < 0.99 * r["calls"]:
                    break
                knee = rate
                time.sleep(3)
            print(f"knee: {knee} calls/s")
        for multiple in [int(m) for m in args.multiples.split(",")]:
            time.sleep(3)
            show(f"{multiple}x", offer(work, port, home, knee * multiple,
                                       args.seconds, trace))
        rssLoad = rssMB(home.pid)
        time.sleep(35)
        rss1 = rssMB(home.pid)
        document = status(statusPort)
        after = document["load"].get("registered")
        print(f"RSS before {rss0:.0f} MB, at the end of the load "
              f"{rssLoad:.0f} MB, 35 s later {rss1:.0f} MB "
              f"({(rss1 / rss0 - 1) * 100:+.0f}%); registered before "
              f"{registered}, after {after}: "
              f"{max(registered - after, 0)} lost")
        print("overload:", document["transactions"].get("overload"))
    finally:
        stopProcesses(processes)
        if os.environ.get("KEEP"):
            print("kept", work)
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
