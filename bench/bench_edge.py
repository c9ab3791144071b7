"""
Proxied transactions per second through an edge to a home server, with
SIPp on loopback UDP: one edge process (--role=edge, outside and inside
UDP ports, one next hop) in front of one home process.

    python bench/bench_edge.py [--calls 3000] [--register-rate 1000]
                               [--invite-rate 100]

Two runs:

  - REGISTER: SIPp's tests/sipp/register_auth.xml through the edge; each
    call is two REGISTER transactions (401, then 200 with MD5 credentials),
    each proxied by the edge with a Path carrying the client's flow token;
  - INVITE: SIPp alice calls SIPp bob (tests/sipp/invite_auth.xml and
    tests/sipp/uas_rr.xml), both registered through the edge on the same
    home: INVITE -> 407, INVITE with credentials -> 180/200, ACK, BYE.
    Each call is three transactions from the caller to the home (two
    INVITE, one BYE) and two from the home back out through the edge to the
    callee (INVITE, BYE): the edge proxies five transactions and two ACKs
    per call.

Past about 120 calls/s (on two cores shared with SIPp and the home) the
edge lags, retransmissions start, and SIPp's callee aborts calls on an
INVITE retransmission arriving after its 200: raise --invite-rate to see
where it starts failing.

It prints, for each run, the calls completed per wall-clock second, the
proxied transactions per second through the edge, and the CPU seconds the
edge and the home used (SIPp shares the machine's cores with them).
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.dirname(HERE)
SCENARIOS = os.path.join(TOP, "tests", "sipp")
sys.path.insert(0, HERE)

from bench_register import (  # noqa: E402
    PASSWORD, cpuSeconds, freePort, stopProcesses, waitForOptions)


def start(work, name, argv, port, processes):
    twistd = shutil.which("twistd", path=os.path.dirname(sys.executable)) \
        or shutil.which("twistd")
    argv = [twistd, "-n", "--pidfile=", f"--logfile={work}/{name}.log",
            "sipdist", f"--name={name}", "--domain=example.com"] + argv
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, cwd=work)
    # Tracked before waiting, so it is stopped even if it never answers.
    processes.append(process)
    waitForOptions(port)
    return process


def sipp(scenario, target, calls, rate, user, localPort, extra=(),
         background=False):
    argv = [shutil.which("sipp"), target, "-sf",
            os.path.join(SCENARIOS, scenario), "-m", str(calls),
            "-r", str(rate), "-l", str(max(rate, 100)), "-t", "u1",
            "-i", "127.0.0.1", "-p", str(localPort), "-s", user,
            "-au", user, "-ap", PASSWORD, "-key", "domain", "example.com",
            "-nostdin", "-timeout", "300s", "-timeout_error",
            "-recv_timeout", "10000"] + list(extra)
    if background:
        return subprocess.Popen(argv, stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, text=True,
                                cwd=tempfile.gettempdir())
    return subprocess.run(argv, capture_output=True, text=True, timeout=400,
                          cwd=tempfile.gettempdir())


def counts(stdout):
    successful = failed = 0
    for line in stdout.splitlines():
        if line.strip().startswith("Successful call"):
            successful = int(line.split("|")[2].split()[0])
        elif line.strip().startswith("Failed call"):
            failed = int(line.split("|")[2].split()[0])
    return successful, failed


def report(label, successful, failed, elapsed, perCall, edgeCPU, homeCPU):
    print(f"  {label:10s} {successful:>7,d} ok {failed:>5,d} failed  "
          f"{successful / elapsed:>7,.0f} calls/s  "
          f"{perCall * successful / elapsed:>7,.0f} proxied transactions/s  "
          f"(CPU: edge {edgeCPU:.2f} s, home {homeCPU:.2f} s, "
          f"{elapsed:.2f} s wall)")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--register-rate", type=int, default=1000)
    parser.add_argument("--invite-rate", type=int, default=100)
    args = parser.parse_args()

    work = tempfile.mkdtemp(prefix="sipdist-bench-edge-")
    homePort, edgePort, insidePort = freePort(), freePort(), freePort()
    with open(f"{work}/assignments.conf", "w") as f:
        f.write(f"server home1 sip:127.0.0.1:{homePort}\n"
                "user alice@example.com home1\nuser bob@example.com home1\n")
    with open(f"{work}/secret", "w") as f:
        f.write("bench-nonce-secret-0123456789\n")
    for user in ("alice", "bob"):
        subprocess.run(
            [os.path.join(os.path.dirname(sys.executable), "sipdist"),
             "passwd", f"{work}/credentials", user, "--realm", "example.com"],
            input=PASSWORD + "\n", text=True, check=True, capture_output=True)
    print(f"{args.calls:,d} SIPp calls per run (REGISTER at "
          f"{args.register_rate:,d}/s, INVITE at {args.invite_rate:,d}/s) "
          f"through edge -> home on loopback UDP; {sys.implementation.name} "
          f"{sys.version.split()[0]}")
    processes = []
    try:
        home = start(work, "home1", [
            "--role=home", f"--listen=udp:{homePort}:interface=127.0.0.1",
            f"--store=file:{work}/assignments.conf",
            f"--credentials=file:{work}/credentials",
            f"--secret-file={work}/secret", "--digest-algorithms=MD5"],
            homePort, processes)
        edge = start(work, "edge", [
            "--role=edge", f"--listen=udp:{edgePort}:interface=127.0.0.1",
            f"--inside-listen=udp:{insidePort}:interface=127.0.0.1",
            f"--next-hop=sip:127.0.0.1:{homePort}"], edgePort, processes)
        target = f"127.0.0.1:{edgePort}"

        def cpu():
            return cpuSeconds([edge.pid]), cpuSeconds([home.pid])

        before = cpu()
        began = time.monotonic()
        result = sipp("register_auth.xml", target, args.calls,
                      args.register_rate, "alice", freePort(),
                      ["-auth_uri", "example.com"])
        elapsed = time.monotonic() - began
        after = cpu()
        report("REGISTER", *counts(result.stdout), elapsed, 2,
               after[0] - before[0], after[1] - before[1])

        calleePort = freePort()
        result = sipp("register_auth.xml", target, 1, 1, "bob", calleePort,
                      ["-auth_uri", "example.com"])
        if counts(result.stdout)[0] != 1:
            raise SystemExit("bob could not register through the edge")
        callee = sipp("uas_rr.xml", target, args.calls, args.invite_rate,
                      "bob", calleePort, background=True)
        time.sleep(0.5)
        before = cpu()
        began = time.monotonic()
        result = sipp("invite_auth.xml", target, args.calls,
                      args.invite_rate, "alice", freePort(),
                      ["-key", "callee", "bob", "-auth_uri",
                       "bob@example.com"])
        elapsed = time.monotonic() - began
        after = cpu()
        report("INVITE", *counts(result.stdout), elapsed, 5,
               after[0] - before[0], after[1] - before[1])
        try:
            callee.wait(30)
        except subprocess.TimeoutExpired:
            callee.kill()
    finally:
        stopProcesses(processes)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
