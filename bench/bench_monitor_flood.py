"""
An OPTIONS flood at one home, as an operator meets it: real processes (two
homes and a distributor running the monitor, C{twistd sipdist}, sharing a
file store with 1,000 users on each home), SIPp sending 15,000
unauthenticated OPTIONS to home1 at 1,000 per second; home1's transaction
table is bounded to 500 so that it answers 503, the monitor's checks too.
Every 3 s it prints the user counts, the servers' states and the monitor's
view of home1 (C{GET /status}).

    .venv/bin/python bench/bench_monitor_flood.py [--interval 1]

(monitor every 1 s, threshold 3, check timeout 1 s).  The work files, the
servers' logs included, are left in a temporary directory.
"""

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

BENCH = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(BENCH))

from tests.slapd import freePort  # noqa: E402


def udpPort():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def counts(path):
    """
    Users per server and the servers' states, read from the file store.
    """
    users, states = {}, {}
    with open(path) as f:
        for line in f:
            parts = line.split()
            if parts and parts[0] == "user":
                users[parts[2]] = users.get(parts[2], 0) + 1
            elif parts and parts[0] == "server":
                state = [p[6:] for p in parts if p.startswith("state=")]
                states[parts[1]] = state[0] if state else "active"
    return users, states


def monitorView(port):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/status",
                                    timeout=2) as response:
            data = json.load(response)
    except (OSError, ValueError) as e:
        return f"status: {e}"
    monitor = data.get("monitor") or {}
    home1 = (monitor.get("servers") or {}).get("home1", {})
    return (f"moved={monitor.get('moved')} home1: {home1.get('status')} "
            f"({home1.get('problem')})")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--interval", default="1")
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="sipdist-flood-")
    scenario = os.path.join(BENCH, "sipp", "options_flood.xml")
    port1, port2, portD = udpPort(), udpPort(), udpPort()
    status = freePort()
    path = os.path.join(work, "assignments.conf")
    with open(path, "w") as f:
        f.write(f"server home1 sip:127.0.0.1:{port1}\n"
                f"server home2 sip:127.0.0.1:{port2}\n")
        for i in range(2000):
            f.write(f"user u{i}@example.com home{1 + i // 1000}\n")
    with open(os.path.join(work, "nonce"), "w") as f:
        f.write("flood-measure-secret-0123456789abcdef\n")
    common = ["--domain=example.com", f"--store=file:{path}",
              "--credentials=memory:u0:pw", f"--secret-file={work}/nonce"]
    processes = []

    def start(name, *options):
        log = open(os.path.join(work, f"{name}.log"), "w")
        processes.append(subprocess.Popen(
            [sys.executable, "-m", "twisted", "--log-format=text", "sipdist",
             *common, *options], stdout=log, stderr=subprocess.STDOUT))

    start("home1", "--role=home", "--name=home1",
          f"--listen=udp:{port1}:interface=127.0.0.1",
          "--max-transactions=500")
    start("home2", "--role=home", "--name=home2",
          f"--listen=udp:{port2}:interface=127.0.0.1")
    start("distributor", "--role=distributor",
          f"--listen=udp:{portD}:interface=127.0.0.1", "--monitor=yes",
          f"--monitor-interval={args.interval}", "--monitor-threshold=3",
          "--monitor-timeout=1",
          f"--status-listen=tcp:{status}:interface=127.0.0.1")
    try:
        time.sleep(8)
        print("before     ", *counts(path), monitorView(status))
        sipp = subprocess.Popen(
            ["sipp", f"127.0.0.1:{port1}", "-sf", scenario, "-t", "u1",
             "-i", "127.0.0.1", "-p", str(udpPort()), "-r", "1000",
             "-m", "15000", "-recv_timeout", "2000", "-nostdin",
             "-timeout", "40s"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=work)
        started = time.monotonic()
        while sipp.poll() is None and time.monotonic() - started < 45:
            time.sleep(3)
            print(f"flood {time.monotonic() - started:4.1f}s", *counts(path),
                  monitorView(status))
        sipp.wait(timeout=10)
        for _ in range(4):
            time.sleep(3)
            print(f"after {time.monotonic() - started:4.1f}s", *counts(path),
                  monitorView(status))
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait()
        print("logs in", work)


if __name__ == "__main__":
    main()
