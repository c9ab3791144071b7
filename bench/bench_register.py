"""
The hot path measured with SIPp on loopback: authenticated REGISTERs
answered with a signed 301 by one distributor process, and answered 200 by
one home server process (the registrar), next to Kamailio from the Debian
package doing the same job (bench/kamailio-redirect.cfg) in the same run,
and the reference of the performance goal: Twisted's bare
twisted.protocols.sip.Base answering every REGISTER with a fixed 301
(bench/bare_twisted_301.py: parsing and answering only, one request a call).

    python bench/bench_register.py [--calls 20000] [--rate 4000]
                                   [--no-kamailio] [--no-reference]

Each SIPp call is two transactions: REGISTER -> 401, REGISTER with MD5
credentials -> 301 (or 200).  For each server it prints the calls completed
per wall-clock second, and the SIP requests handled per CPU-second of the
server process (user + system time from /proc, every process of the server
counted), which is the figure to compare across servers: SIPp shares the
two cores of this machine with the server under test.

SIPp answers only MD5, so the servers are configured to challenge with MD5
only (--digest-algorithms=MD5).  SIPp sends no option tag sipdist-redirect;
the distributor is told to redirect it by its User-Agent
(--redirect-user-agent), as it would otherwise proxy it.
"""

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.dirname(HERE)
SCENARIOS = os.path.join(HERE, "sipp")
PASSWORD = "wonderland"
TICKS = os.sysconf("SC_CLK_TCK")


def freePort():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpuSeconds(pids):
    """
    User + system CPU seconds of processes and their waited-for children.
    """
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / TICKS


def processTree(pid):
    """
    C{pid} and its descendants (Kamailio forks workers).
    """
    pids = [pid]
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            if ppid == pid:
                pids.append(int(entry))
    return pids


def stopProcesses(processes):
    """
    Stop the servers a benchmark started: SIGTERM, then SIGKILL for those
    still there after 10 s.
    """
    for process in processes:
        process.send_signal(signal.SIGTERM)
    for process in processes:
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()


def waitForOptions(port, timeout=20):
    deadline = time.monotonic() + timeout
    probe = (f"OPTIONS sip:127.0.0.1:{port} SIP/2.0\r\n"
             "Via: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKbenchprobe;rport\r\n"
             "From: <sip:probe@127.0.0.1>;tag=1\r\nTo: <sip:127.0.0.1>\r\n"
             "Call-ID: benchprobe\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n"
             "Content-Length: 0\r\n\r\n").encode()
    while time.monotonic() < deadline:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(0.3)
            try:
                s.sendto(probe, ("127.0.0.1", port))
                if s.recv(4096).startswith(b"SIP/2.0 200"):
                    return
            except OSError:
                time.sleep(0.2)
    raise SystemExit(f"server on port {port} did not answer OPTIONS")


def startSipdist(work, role, name, port, processes):
    twistd = shutil.which("twistd", path=os.path.dirname(sys.executable)) \
        or shutil.which("twistd")
    argv = [twistd, "-n", "--pidfile=", f"--logfile={work}/{name}.log",
            "sipdist", f"--role={role}", f"--name={name}",
            f"--listen=udp:{port}:interface=127.0.0.1",
            f"--store=file:{work}/assignments.conf",
            f"--credentials=file:{work}/credentials",
            f"--secret-file={work}/secret", "--domain=example.com",
            "--digest-algorithms=MD5",
            # SIPp follows the 301 in these scenarios: redirect it.
            "--redirect-user-agent=^SIPp sipdist"]
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, cwd=work)
    # Tracked before waiting, so it is stopped even if it never answers.
    processes.append(process)
    waitForOptions(port)
    return process


def startKamailio(work, port, home1, processes):
    kamailio = shutil.which("kamailio") or "/usr/sbin/kamailio"
    argv = [kamailio, "-f", os.path.join(HERE, "kamailio-redirect.cfg"),
            "-DD", "-E", "-A", f"PORT={port}", "-A", f'HOME1="{home1}"',
            "-Y", work, "-P", f"{work}/kamailio.pid"]
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL,
                               stderr=open(f"{work}/kamailio.log", "wb"),
                               cwd=work)
    processes.append(process)
    waitForOptions(port)
    return process


def startBareTwisted(work, port, processes):
    """
    The reference: twisted.protocols.sip.Base answering a fixed 301.
    """
    process = subprocess.Popen(
        [sys.executable, os.path.join(HERE, "bare_twisted_301.py"), str(port)],
        stdout=subprocess.DEVNULL, stderr=open(f"{work}/bare.log", "wb"),
        cwd=work)
    processes.append(process)
    waitForOptions(port)
    return process


def runSipp(scenario, port, calls, rate, user):
    sipp = shutil.which("sipp")
    argv = [sipp, f"127.0.0.1:{port}", "-sf", os.path.join(SCENARIOS, scenario),
            "-m", str(calls), "-r", str(rate), "-l", str(max(rate, 100)),
            "-t", "u1", "-i", "127.0.0.1", "-p", str(freePort()),
            "-s", user, "-au", user, "-ap", PASSWORD,
            "-key", "domain", "example.com", "-auth_uri", "example.com",
            "-nostdin", "-timeout", "120s", "-timeout_error",
            "-recv_timeout", "5000", "-default_behaviors", "-bye"]
    start = time.monotonic()
    result = subprocess.run(argv, capture_output=True, text=True,
                            timeout=180, cwd=tempfile.gettempdir())
    elapsed = time.monotonic() - start
    successful = failed = 0
    for line in result.stdout.splitlines():
        if line.strip().startswith("Successful call"):
            successful = int(line.split("|")[2].split()[0])
        elif line.strip().startswith("Failed call"):
            failed = int(line.split("|")[2].split()[0])
    return successful, failed, elapsed


def measure(label, process, scenario, port, calls, rate, user,
            requestsPerCall=2):
    pids = processTree(process.pid)
    before = cpuSeconds(pids)
    successful, failed, elapsed = runSipp(scenario, port, calls, rate, user)
    cpu = cpuSeconds(processTree(process.pid)) - before
    requests = requestsPerCall * successful
    perCPU = requests / cpu if cpu else float("nan")
    print(f"  {label:44s} {successful:>7,d} ok {failed:>5,d} failed "
          f"{successful / elapsed:>8,.0f} calls/s  "
          f"{perCPU:>8,.0f} requests/CPU-s  (server CPU {cpu:.2f} s)")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=20000)
    parser.add_argument("--rate", type=int, default=4000)
    parser.add_argument("--no-kamailio", action="store_true")
    parser.add_argument("--no-reference", action="store_true",
                        help="skip the bare twisted.protocols.sip.Base run")
    args = parser.parse_args()

    work = tempfile.mkdtemp(prefix="sipdist-bench-")
    distributorPort, homePort, kamailioPort = freePort(), freePort(), freePort()
    barePort = freePort()
    home1 = f"sip:127.0.0.1:{homePort}"
    with open(f"{work}/assignments.conf", "w") as f:
        f.write(f"server home1 {home1}\nserver home2 sip:127.0.0.1:9\n"
                "user alice@example.com home1\n")
    with open(f"{work}/secret", "w") as f:
        f.write("bench-nonce-secret-0123456789\n")
    subprocess.run([os.path.join(os.path.dirname(sys.executable), "sipdist"),
                    "passwd", f"{work}/credentials", "alice",
                    "--realm", "example.com"],
                   input=PASSWORD + "\n", text=True, check=True,
                   capture_output=True)

    print(f"{args.calls:,d} SIPp calls at {args.rate:,d}/s, each REGISTER->401, "
          f"REGISTER+MD5 digest->final; {sys.implementation.name} "
          f"{sys.version.split()[0]}")
    processes = []
    try:
        distributor = startSipdist(work, "distributor", "distributor",
                                   distributorPort, processes)
        home = startSipdist(work, "home", "home1", homePort, processes)
        measure("sipdist distributor: signed 301", distributor,
                "register_301.xml", distributorPort, args.calls,
                args.rate, "alice")
        measure("sipdist home: registrar 200 (signed)", home,
                "register_200.xml", homePort, args.calls, args.rate, "alice")
        if not args.no_reference:
            bare = startBareTwisted(work, barePort, processes)
            measure("reference: bare sip.Base, fixed 301", bare,
                    "register_301_noauth.xml", barePort, args.calls,
                    args.rate, "alice", requestsPerCall=1)
        if not args.no_kamailio:
            kamailio = startKamailio(work, kamailioPort, home1, processes)
            measure("kamailio (1 worker): 301", kamailio,
                    "register_301.xml", kamailioPort, args.calls,
                    args.rate, "alice")
    finally:
        stopProcesses(processes)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
