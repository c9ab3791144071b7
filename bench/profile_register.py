"""
Where a server's CPU goes on the authenticated REGISTER path under SIPp load
(bench/bench_register.py's scenarios, servers and configuration): one
sipdist server of the given role, profiled by cProfile (twistd --profile)
or by py-spy (sampling, attached to the process), or not profiled at all.

    python bench/profile_register.py [--role distributor|home]
        [--calls 20000] [--rate 4000]
        [--profiler none|cprofile|py-spy|perf] [--repeat 1] [--top 30]
        [--pcap FILE]

perf (Linux perf, the cpu-clock software event, so it works on a virtual
machine without hardware counters) samples the last repeat only, so the
earlier ones warm PyPy's JIT up; it sees the C level: the kernel, libc,
the interpreter and its garbage collector, and (unnamed) JIT-compiled code.
Run this script with PyPy's python to profile the server on PyPy, with
--perf-data to keep the record for bench/pypy_perf_functions.py, which
tells the parts of PyPy's runtime apart when PyPy has no symbols.

--pcap captures the requests the server receives (SIPp's own datagrams,
with their times), for bench/replay_register.py to hand to the same
server in one process.

Prints the requests per CPU-second of the server (process CPU time, each
repeat separately, so noise shows) and, with a profiler, the top entries.
"""

import argparse
import os
import pstats
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_register import (  # noqa: E402
    cpuSeconds, freePort, processTree, runSipp, stopProcesses,
    waitForOptions, writeConfiguration)


def startServer(work, role, name, port, processes, profile=None):
    twistd = shutil.which("twistd", path=os.path.dirname(sys.executable)) \
        or shutil.which("twistd")
    argv = [twistd, "-n", "--pidfile=", f"--logfile={work}/{name}.log"]
    if profile:
        argv += [f"--profile={profile}", "--profiler=cprofile", "--savestats"]
    argv += ["sipdist", f"--role={role}", f"--name={name}",
             f"--listen=udp:{port}:interface=127.0.0.1",
             f"--store=file:{work}/assignments.conf",
             f"--credentials=file:{work}/credentials",
             f"--secret-file={work}/secret", "--domain=example.com",
             "--digest-algorithms=MD5",
             "--redirect-user-agent=^SIPp sipdist"]
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, cwd=work)
    processes.append(process)
    waitForOptions(port)
    return process


def startCapture(path, port):
    """
    Capture the UDP datagrams sent to C{port} on loopback into the pcap
    file C{path}, from when this returns until the process is interrupted.
    """
    capture = subprocess.Popen(
        ["dumpcap", "-q", "-i", "lo", "-P", "-w", path,
         "-f", f"udp dst port {port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    # dumpcap says so on its standard error once it captures.
    for line in capture.stderr:
        if line.startswith("Capturing on"):
            break
    else:
        capture.wait(30)
        sys.exit(f"dumpcap did not start (exit {capture.returncode})")
    return capture


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--role", default="distributor",
                        choices=["distributor", "home"])
    parser.add_argument("--calls", type=int, default=20000)
    parser.add_argument("--rate", type=int, default=4000)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--profiler", default="none",
                        choices=["none", "cprofile", "py-spy", "perf"])
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--pcap", default=None,
                        help="capture the requests the server receives, "
                        "over all the repeats, to this pcap file (dumpcap, "
                        "from Wireshark; for bench/replay_register.py)")
    parser.add_argument("--perf-data", default=None,
                        help="where perf writes its record, kept (for "
                        "bench/pypy_perf_functions.py); else a temporary "
                        "file")
    args = parser.parse_args()
    if args.profiler == "perf" and shutil.which("perf") is None:
        sys.exit("--profiler perf needs Linux perf (Debian: linux-perf)")
    if args.pcap and shutil.which("dumpcap") is None:
        sys.exit("--pcap needs dumpcap (Debian: wireshark-common or tshark)")

    work = tempfile.mkdtemp(prefix="sipdist-profile-")
    port, homePort = freePort(), freePort()
    writeConfiguration(work, homePort)
    name = "home1" if args.role == "home" else "distributor"
    if args.role == "home":
        port = homePort
    scenario = "register_200.xml" if args.role == "home" else \
        "register_301.xml"
    stats = f"{work}/profile.stats"
    processes = []
    spy = perf = capture = None
    try:
        server = startServer(work, args.role, name, port, processes,
                             stats if args.profiler == "cprofile" else None)
        if args.pcap:
            capture = startCapture(args.pcap, port)
        if args.profiler == "py-spy":
            spyOut = f"{work}/py-spy.txt"
            spy = subprocess.Popen(
                [shutil.which("py-spy", path=os.path.dirname(sys.executable))
                 or "py-spy", "record", "--pid", str(server.pid),
                 "--format", "raw", "--output", spyOut, "--rate", "200",
                 "--nonblocking"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for repeat in range(args.repeat):
            if args.profiler == "perf" and repeat == args.repeat - 1:
                perfOut = args.perf_data or f"{work}/perf.data"
                perf = subprocess.Popen(
                    ["perf", "record", "-q", "-e", "cpu-clock", "-F", "1999",
                     "-o", perfOut, "-p", str(server.pid)],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            pids = processTree(server.pid)
            before = cpuSeconds(pids)
            ok, failed, elapsed = runSipp(scenario, port, args.calls,
                                          args.rate, "alice")
            cpu = cpuSeconds(processTree(server.pid)) - before
            print(f"{args.role}: {ok:,d} ok {failed:,d} failed, "
                  f"{2 * ok / cpu if cpu else float('nan'):,.0f} "
                  f"requests/CPU-s (server CPU {cpu:.2f} s, "
                  f"{ok / elapsed:,.0f} calls/s)", flush=True)
    finally:
        if capture is not None:
            capture.send_signal(2)
            capture.wait(30)
        if perf is not None:
            perf.send_signal(2)
            perf.wait(30)
        if spy is not None:
            spy.send_signal(2)
            spy.wait(30)
        stopProcesses(processes)
    try:
        if args.profiler == "cprofile":
            s = pstats.Stats(stats)
            s.sort_stats("tottime").print_stats(args.top)
            s.sort_stats("cumulative").print_stats(args.top)
        elif args.profiler == "py-spy":
            printSpy(spyOut, args.top)
        elif args.profiler == "perf":
            for sort in ("dso", "dso,sym"):
                report = subprocess.run(
                    ["perf", "report", "-i", perfOut, "--stdio",
                     "--no-children", "--sort", sort, "--percent-limit",
                     "0.5"], capture_output=True, text=True)
                lines = [line for line in report.stdout.splitlines()
                         if line.strip() and not line.startswith("#")]
                print("\n".join(lines[:args.top]))
    finally:
        shutil.rmtree(work, ignore_errors=True)


def printSpy(path, top):
    """
    Self and total sample counts per function from py-spy's raw
    (collapsed stacks) output.
    """
    own, total, samples = {}, {}, 0
    with open(path) as f:
        for line in f:
            stack, _, count = line.rstrip("\n").rpartition(" ")
            count = int(count)
            samples += count
            # One entry per function, its lines together.
            frames = [f.split(":")[0] + ")" if ":" in f else f
                      for f in stack.split(";")]
            own[frames[-1]] = own.get(frames[-1], 0) + count
            for frame in set(frames):
                total[frame] = total.get(frame, 0) + count
    print(f"py-spy: {samples} samples; self / total %")
    for frame, count in sorted(own.items(), key=lambda i: -i[1])[:top]:
        print(f"  {100 * count / samples:5.1f} {100 * total[frame] / samples:5.1f}"
              f"  {frame}")


if __name__ == "__main__":
    main()
