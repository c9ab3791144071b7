"""
A sustained login load of many users, the shape a production server
meets: SIPp sends each call as a different user of N (REGISTER, 401,
REGISTER with MD5 credentials, final response) for a while at a steady
rate, against one distributor process (signed 301) and one home process
(registrar, signed 200) started with C{twistd sipdist}, sharing a file
store and a credentials file of N users.  A load of one user
(bench/bench_register.py) meets neither the per-user tables (credentials,
assignments, backup homes, failure limiter, bindings) nor the limits a
long run fills (transactions kept for retransmissions, nonce counts).

    python bench/bench_users.py [--users 20000] [--rate 3000]
        [--seconds 60] [--role distributor home]

Prints, per server: the calls completed and failed, the calls per second,
the requests per CPU-second of the server process, its peak resident
memory, and the warnings it logged (overload, full tables).
"""

import argparse
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_register import (  # noqa: E402
    SCENARIOS, cpuSeconds, freePort, processTree, sippCalls, stopProcesses)
from profile_register import startServer  # noqa: E402

REALM = "example.com"


def writeFiles(work, users, homePort):
    """
    The store (every user on home1, home2 a backup that never answers),
    the nonce secret, the credentials (user uN's password is pwN) and
    SIPp's injection file (each user and its credentials).
    """
    with open(f"{work}/assignments.conf", "w") as f:
        f.write(f"server home1 sip:127.0.0.1:{homePort}\n"
                "server home2 sip:127.0.0.1:9\n")
        for n in range(users):
            f.write(f"user u{n}@{REALM} home1\n")
    with open(f"{work}/secret", "w") as f:
        f.write("bench-nonce-secret-0123456789\n")
    with open(f"{work}/credentials", "w") as f:
        f.write("# sipdist credentials: username:realm:MD5-HA1:"
                "SHA-256-HA1\n")
        for n in range(users):
            a1 = f"u{n}:{REALM}:pw{n}".encode()
            f.write(f"u{n}:{REALM}:{hashlib.md5(a1).hexdigest()}:"
                    f"{hashlib.sha256(a1).hexdigest()}\n")
    with open(f"{work}/users.csv", "w") as f:
        f.write("SEQUENTIAL\n")
        for n in range(users):
            # SIPp expands a keyword held in a field.
            f.write(f"u{n};[authentication username=u{n} password=pw{n}]\n")


def scenario(work, role):
    """
    The benchmark's scenario for C{role}, each call the next user of the
    injection file.
    """
    name = "register_200.xml" if role == "home" else "register_301.xml"
    with open(os.path.join(SCENARIOS, name)) as f:
        text = f.read()
    text = text.replace("[service]", "[field0]").replace(
        "[authentication]", "[field1]")
    path = f"{work}/{name}"
    with open(path, "w") as f:
        f.write(text)
    return path


def runSipp(work, path, port, calls, rate):
    argv = [shutil.which("sipp"), f"127.0.0.1:{port}", "-sf", path,
            "-inf", f"{work}/users.csv", "-m", str(calls), "-r", str(rate),
            "-l", str(max(rate, 100)), "-t", "u1", "-i", "127.0.0.1",
            "-p", str(freePort()), "-key", "domain", REALM,
            "-auth_uri", REALM, "-nostdin", "-timeout",
            f"{int(calls / rate) + 120}s", "-timeout_error",
            "-recv_timeout", "5000", "-default_behaviors", "-bye"]
    start = time.monotonic()
    result = subprocess.run(argv, capture_output=True, text=True,
                            timeout=calls / rate + 180, cwd=work)
    elapsed = time.monotonic() - start
    return sippCalls(result.stdout) + (elapsed,)


def peakMemory(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) // 1024
    except OSError:
        pass
    return None


def warnings(log):
    """
    The warning lines of a server's log, their variable parts folded: how
    many of each kind.
    """
    kinds = {}
    with open(log, errors="replace") as f:
        for line in f:
            if "#warn]" not in line and "#error]" not in line:
                continue
            text = line.split("] ", 1)[-1].strip()
            text = re.sub(r"[0-9][0-9.,]*", "N", text)[:100]
            kinds[text] = kinds.get(text, 0) + 1
    return kinds


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=20000)
    parser.add_argument("--rate", type=int, default=3000)
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--role", nargs="+", default=["distributor", "home"],
                        choices=["distributor", "home"])
    args = parser.parse_args()
    if shutil.which("sipp") is None:
        sys.exit("bench_users.py: SIPp is not installed (Debian package "
                 "sip-tester)")
    calls = args.rate * args.seconds
    print(f"{args.users:,d} users, {calls:,d} logins at {args.rate:,d}/s "
          f"({args.seconds} s) per server; "
          f"{sys.implementation.name} {sys.version.split()[0]}", flush=True)
    for role in args.role:
        work = tempfile.mkdtemp(prefix="sipdist-users-")
        processes = []
        try:
            port, homePort = freePort(), freePort()
            writeFiles(work, args.users, homePort)
            name = "home1" if role == "home" else "distributor"
            if role == "home":
                port = homePort
            server = startServer(work, role, name, port, processes)
            pids = processTree(server.pid)
            before = cpuSeconds(pids)
            ok, failed, elapsed = runSipp(work, scenario(work, role), port,
                                          calls, args.rate)
            cpu = cpuSeconds(processTree(server.pid)) - before
            memory = peakMemory(server.pid)
            stopProcesses(processes)
            print(f"  {role:12s} {ok:>9,d} ok {failed:>7,d} failed "
                  f"{ok / elapsed:>7,.0f} calls/s "
                  f"{2 * ok / cpu if cpu else float('nan'):>8,.0f} "
                  f"requests/CPU-s  (server CPU {cpu:.1f} s, peak RSS "
                  f"{memory} MB)", flush=True)
            for text, count in sorted(warnings(f"{work}/{name}.log").items()):
                print(f"      {count:>5,d} x {text}")
        finally:
            stopProcesses(processes)
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
