"""
The hot path measured with SIPp on loopback: authenticated REGISTERs
answered with a signed 301 by one distributor process, and answered 200 by
one home server process (the registrar), next to Kamailio from the Debian
package doing the same job (bench/kamailio-redirect.cfg) in the same run,
and the reference of the performance goal: Twisted's bare
twisted.protocols.sip.Base answering every REGISTER with a fixed 301
(bench/bare_twisted_301.py: parsing and answering only, one request a call).

    python bench/bench_register.py [--calls 20000] [--rate 4000]
                                   [--warmup 20000] [--pypy-warmup N]
                                   [--no-kamailio] [--no-reference]
                                   [--pypy-python PATH | --no-pypy]
                                   [--workers N] [--rounds N]

When pypy3 is installed the same sipdist runs are made on PyPy too, from a
venv built once in ~/.cache/sipdist-bench/ (or the interpreter given with
--pypy-python, which must have sipdist's dependencies).  Every run, on
either interpreter and Kamailio's, comes after a warm-up run of --warmup
calls that is not counted (PyPy's JIT; and the servers' bounded tables,
the nonce counts and the completed transactions, then hold as much on
both interpreters when the counted calls begin).  The default, 20,000,
gives PyPy's JIT the time it needs (with 5,000 PyPy's figures were 10 to
13% lower, CPython's the same) and stays below the tables' bounds
(100,000 transactions): once they fill, the JIT compiles the paths of
full tables in bursts, over some 100,000 more calls, and a run that meets
a burst is lower (a PyPy home: 31,000 requests per CPU-second between
them, 23,000 to 24,000 in runs that met one; python
bench/profile_register.py --role home --calls 100000 --repeat 2 under
PyPy shows them).  --pypy-warmup N gives the PyPy servers N uncounted
calls instead (one SIPp run, so a home sees one Contact: a home refuses
an eleventh with 403): with 150,000, PyPy is measured as a server is
that has run for some minutes, its tables full and its JIT past the
bridges it adds over its first few hundred thousand requests (on 4
December 2026 that made no difference told from the machine's spread;
see docs/performance.rst).  With
--workers N the distributor also runs with N workers, driven by SIPp with
one socket per call (-t un: the kernel spreads the workers' shared port by
source address and port), next to one worker driven the same way.  The
table at the end gives each run's requests per CPU-second and its ratio
to Kamailio's.

With --rounds N every server is run N times, in turn (each round starts,
warms up, measures and stops every server), and the table gives the
medians, the lowest and highest requests per CPU-second, and the ratios
taken within each round (to Kamailio's run, and PyPy's to CPython's run
of the same server), then their median.  On a machine whose speed drifts
(on a virtual machine of this kind, a loop of pure Python took from 0.28
to 0.51 s in eight runs a few seconds apart, on 4 December 2026), one
round's ratios may be off by a third; the runs of a round are minutes
apart, the rounds further.

On a virtual machine, each line also gives the CPU time the host gave
other guests during the run (steal, from /proc/stat, as a share of the
machine's CPUs): everything, Kamailio too, runs slower then, and a run
with a few percent of it is not to be compared with a quiet one.

Each SIPp call is two transactions: REGISTER -> 401, REGISTER with MD5
credentials -> 301 (or 200).  For each server it prints the calls completed
per wall-clock second, and the SIP requests handled per CPU-second of the
server process (user + system time from /proc, every process of the server
counted), which is the figure to compare across servers: SIPp shares the
two cores of this machine with the server under test.

A call the server sheds with 503 (its overload control, at or above
saturation) fails at once, and the line says how many were shed (and,
under it, why: the lines a sipdist server logged when it started
shedding, with the event-loop lag and the datagrams waiting); any
other failed call got no answer within 5 s (SIPp's -recv_timeout).

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
from statistics import median

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.dirname(HERE)
SCENARIOS = os.path.join(HERE, "sipp")
PASSWORD = "wonderland"
TICKS = os.sysconf("SC_CLK_TCK")


def writeConfiguration(work, homePort):
    """
    The files every server of a run reads, in C{work}: a store placing
    alice on home1 (at C{homePort}), the nonce secret, and alice's
    credentials (written by C{sipdist passwd}).
    """
    with open(f"{work}/assignments.conf", "w") as f:
        f.write(f"server home1 sip:127.0.0.1:{homePort}\n"
                "server home2 sip:127.0.0.1:9\n"
                "user alice@example.com home1\n")
    with open(f"{work}/secret", "w") as f:
        f.write("bench-nonce-secret-0123456789\n")
    subprocess.run([os.path.join(os.path.dirname(sys.executable), "sipdist"),
                    "passwd", f"{work}/credentials", "alice",
                    "--realm", "example.com"],
                   input=PASSWORD + "\n", text=True, check=True,
                   capture_output=True)


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


def stealTicks():
    """
    The CPU time the hypervisor gave other guests while this machine's
    CPUs wanted it (the C{steal} column of C{/proc/stat}, in ticks), or
    L{None} where it is not there.
    """
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()
        return int(fields[8])
    except (OSError, IndexError, ValueError):
        return None


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


# twistd with this checkout's sipdist first on the path, whichever
# interpreter runs it.
TWISTD = ("import sys; sys.path.insert(0, sys.argv.pop(1)); "
          "sys.argv[0] = 'twistd'; "
          "from twisted.scripts.twistd import run; run()")

PYPY_VENV = os.path.join(os.path.expanduser("~"), ".cache", "sipdist-bench",
                         "pypy-venv")


def pypyPython(requested):
    """
    The PyPy interpreter to run sipdist with: C{requested}, or the one of a
    venv built (once) in L{PYPY_VENV} when pypy3 is installed; L{None}
    (saying why) otherwise.
    """
    if requested:
        return os.path.abspath(requested)
    pypy = shutil.which("pypy3")
    if pypy is None:
        print("  (no pypy3: the PyPy runs are left out)")
        return None
    python = os.path.join(PYPY_VENV, "bin", "python")
    if not os.path.exists(python):
        print(f"  building the PyPy venv {PYPY_VENV} (once) ...", flush=True)
        try:
            subprocess.run([pypy, "-m", "venv", PYPY_VENV], check=True,
                           capture_output=True, timeout=300)
            subprocess.run([python, "-m", "pip", "install", "-q", TOP],
                           check=True, capture_output=True, timeout=1200)
        except (subprocess.SubprocessError, OSError) as e:
            shutil.rmtree(PYPY_VENV, ignore_errors=True)
            print(f"  (cannot install sipdist for PyPy: {e}; PyPy runs left "
                  f"out)")
            return None
    return python


def startSipdist(work, role, name, port, processes, python=None,
                 extra=(), timeout=20):
    argv = [python or sys.executable, "-c", TWISTD, TOP,
            "-n", "--pidfile=", f"--logfile={work}/{name}.log",
            "sipdist", f"--role={role}", f"--name={name}",
            f"--listen=udp:{port}:interface=127.0.0.1",
            f"--store=file:{work}/assignments.conf",
            f"--credentials=file:{work}/credentials",
            f"--secret-file={work}/secret", "--domain=example.com",
            "--digest-algorithms=MD5",
            # SIPp follows the 301 in these scenarios: redirect it.
            "--redirect-user-agent=^SIPp sipdist"] + list(extra)
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, cwd=work)
    # Where measure finds why it shed, if it does.
    process.logPath = f"{work}/{name}.log"
    # Tracked before waiting, so it is stopped even if it never answers.
    processes.append(process)
    waitForOptions(port, timeout)
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


def startBareTwisted(work, port, processes, python=None):
    """
    The reference: twisted.protocols.sip.Base answering a fixed 301.
    """
    process = subprocess.Popen(
        [python or sys.executable, os.path.join(HERE, "bare_twisted_301.py"),
         str(port)],
        stdout=subprocess.DEVNULL, stderr=open(f"{work}/bare.log", "wb"),
        cwd=work)
    processes.append(process)
    waitForOptions(port)
    return process


class SippRun(tuple):
    """
    A SIPp run's C{(successful, failed, elapsed)} calls and seconds, and
    its C{shed} calls: those the server answered with C{503}, which the
    scenarios end at once as failed (counted among C{failed}).
    """
    shed = 0


def runSipp(scenario, port, calls, rate, user, transport="u1"):
    """
    Run SIPp's C{scenario} (of L{SCENARIOS}) against a server.

    @return: a L{SippRun}.
    """
    sipp = shutil.which("sipp")
    argv = [sipp, f"127.0.0.1:{port}", "-sf", os.path.join(SCENARIOS, scenario),
            "-m", str(calls), "-r", str(rate), "-l", str(max(rate, 100)),
            "-t", transport, "-i", "127.0.0.1"]
    if transport == "u1":
        argv += ["-p", str(freePort())]
    else:
        # A socket per call: SIPp wants its socket limit below the
        # process's file limit.
        argv += ["-max_socket", "5000"]
    argv += ["-s", user, "-au", user, "-ap", PASSWORD,
             "-key", "domain", "example.com", "-auth_uri", "example.com",
             "-nostdin", "-timeout", "120s", "-timeout_error",
             "-recv_timeout", "5000", "-default_behaviors", "-bye"]
    with tempfile.TemporaryDirectory(prefix="sipdist-sipp-") as logs:
        # The scenarios log "shed" for each call a 503 ended.
        log = os.path.join(logs, "logs.log")
        argv += ["-trace_logs", "-log_file", log]
        start = time.monotonic()
        result = subprocess.run(argv, capture_output=True, text=True,
                                timeout=180, cwd=logs)
        elapsed = time.monotonic() - start
        run = SippRun(sippCalls(result.stdout) + (elapsed,))
        run.shed = shedCalls(log)
    return run


def shedCalls(path):
    """
    The calls that SIPp's log of C{<log>} actions (C{-trace_logs}) says
    were shed: its lines C{shed}.
    """
    try:
        with open(path) as f:
            return sum(1 for line in f if line.strip() == "shed")
    except FileNotFoundError:
        return 0


def sippCalls(output):
    """
    The successful and failed calls in SIPp's final statistics (its
    standard output).
    """
    successful = failed = 0
    for line in output.splitlines():
        if line.strip().startswith("Successful call"):
            successful = int(line.split("|")[2].split()[0])
        elif line.strip().startswith("Failed call"):
            failed = int(line.split("|")[2].split()[0])
    return successful, failed


#: (round number, label, calls per second, requests per CPU-second) of
#: each run.
RESULTS = []

# What a sipdist server's log says when its overload control starts
# shedding (sipdist.sip.overload.OverloadControl._start), and its summary
# every few seconds while it sheds (_summary).
_OVERLOADED = "] overloaded ("
_SUMMARY = "] overload in the last "


def logSize(path):
    """
    How many bytes the log at C{path} holds (0 when there is none yet).
    """
    try:
        return os.path.getsize(path) if path is not None else 0
    except OSError:
        return 0


def overloadReasons(path, start, most=3):
    """
    Why a sipdist server shed during a run whose lines start at byte
    C{start} of its log: the first C{most} lines its overload control
    wrote from there on, when it started shedding (the event-loop lag,
    the bytes of datagrams waiting and the transactions in progress) or
    to sum up what it shed, without their time stamps, and how many more
    there were; when it started before the run (in the warm-up), the
    last such start first.  (A log shorter than C{start} was rotated
    meanwhile: all of it is read as the run's.)
    """
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        return [f"(cannot read {path}: {e.strerror})"]
    if len(data) < start:
        start = 0

    def lines(part):
        return part.decode("utf-8", "replace").splitlines()

    def message(line):
        return line.split("] ", 1)[1]
    during = [line for line in lines(data[start:])
              if _OVERLOADED in line or _SUMMARY in line]
    reasons = []
    if not any(_OVERLOADED in line for line in during):
        started = [line for line in lines(data[:start])
                   if _OVERLOADED in line]
        if started:
            reasons.append(f"(since before the run) {message(started[-1])}")
    reasons += [message(line) for line in during[:most]]
    if len(during) > most:
        reasons.append(f"(and {len(during) - most} more lines)")
    return reasons


def measure(label, process, scenario, port, calls, rate, user,
            requestsPerCall=2, warmup=0, transport="u1", roundNumber=1):
    """
    Run SIPp against a server and print (and keep for the table) the calls
    completed per second and the requests per CPU-second of the server's
    processes; C{warmup} calls first are not counted.
    """
    if warmup:
        runSipp(scenario, port, warmup, rate, user, transport)
    logPath = getattr(process, "logPath", None)
    logStart = logSize(logPath)
    pids = processTree(process.pid)
    before = cpuSeconds(pids)
    steal = stealTicks()
    run = runSipp(scenario, port, calls, rate, user, transport)
    successful, failed, elapsed = run
    cpu = cpuSeconds(processTree(process.pid)) - before
    if steal is not None:
        # Of the machine's CPU time during the run: a virtual machine
        # whose host is busy runs everything slower, Kamailio too.
        steal = (stealTicks() - steal) / TICKS / (elapsed
                                                 * (os.cpu_count() or 1))
    requests = requestsPerCall * successful
    perCPU = requests / cpu if cpu else float("nan")
    shed = f" ({run.shed:,d} shed with 503)" if run.shed else ""
    print(f"  {label:44s} {successful:>7,d} ok {failed:>5,d} failed{shed} "
          f"{successful / elapsed:>8,.0f} calls/s  "
          f"{perCPU:>8,.0f} requests/CPU-s  (server CPU {cpu:.2f} s"
          + ("" if steal is None else f", steal {100 * steal:.0f}%")
          + ")", flush=True)
    if run.shed and logPath is not None:
        for reason in overloadReasons(logPath, logStart):
            print(f"      {reason}", flush=True)
    RESULTS.append((roundNumber, label, successful / elapsed, perCPU))


#: PyPy's runs, and the CPython run each is set beside.
PYPY_PAIRS = {
    "PyPy sipdist distributor: signed 301": "sipdist distributor: signed 301",
    "PyPy sipdist home: registrar 200": "sipdist home: registrar 200 (signed)",
    "PyPy reference: bare sip.Base, fixed 301":
        "reference: bare sip.Base, fixed 301",
}


def summarise(results):
    """
    The table's rows from the runs of every round: for each server (in
    the order of the first round), the median calls per second, the
    median requests per CPU-second with the lowest and highest, and the
    median over the rounds of its ratio to Kamailio's run of the same
    round, and for PyPy's runs to CPython's run of the same server in
    the same round (the runs of a round are minutes apart, the rounds
    further: the ratios within a round are the steadier figures when the
    machine's speed drifts).

    @param results: L{RESULTS}' entries.
    @return: a L{list} of C{(label, calls per second, requests per
        CPU-second, lowest, highest, ratio to Kamailio or None, ratio to
        CPython or None)}.
    """
    byRound = {}
    labels = []
    for number, label, rate, perCPU in results:
        byRound[(number, label)] = (rate, perCPU)
        if label not in labels:
            labels.append(label)
    rounds = sorted({number for number, _, _, _ in results})
    kamailio = next((label for label in labels
                     if label.startswith("kamailio")), None)

    def ratios(label, other):
        found = [byRound[(r, label)][1] / byRound[(r, other)][1]
                 for r in rounds
                 if (r, label) in byRound and (r, other) in byRound
                 and byRound[(r, other)][1]]
        return median(found) if found else None

    rows = []
    for label in labels:
        runs = [byRound[(r, label)] for r in rounds if (r, label) in byRound]
        perCPU = [run[1] for run in runs]
        rows.append((label, median([run[0] for run in runs]),
                     median(perCPU), min(perCPU), max(perCPU),
                     ratios(label, kamailio) if kamailio else None,
                     ratios(label, PYPY_PAIRS[label])
                     if label in PYPY_PAIRS else None))
    return rows


def printTable():
    rows = summarise(RESULTS)
    rounds = len({entry[0] for entry in RESULTS})
    print()
    if rounds > 1:
        print(f"  medians of {rounds} rounds (requests per CPU-second: "
              "lowest-highest); ratios: the median of each round's")
    print(f"  {'run':44s} {'calls/s':>8s} {'req/CPU-s':>10s} "
          + (f"{'range':>15s} " if rounds > 1 else "")
          + f"{'/ kamailio':>10s} {'/ CPython':>10s}")
    for label, rate, perCPU, low, high, toKamailio, toCPython in rows:
        spread = f"{low:>7,.0f}-{high:<7,.0f} " if rounds > 1 else ""
        kamailio = "" if toKamailio is None else f"{toKamailio:10.2f}"
        cpython = "" if toCPython is None else f"{toCPython:10.2f}"
        print(f"  {label:44s} {rate:>8,.0f} {perCPU:>10,.0f} {spread}"
              f"{kamailio:>10s} {cpython:>10s}")


def runRound(args, work, pypy, roundNumber):
    """
    One round: each server started, warmed up, measured and stopped.
    """
    def run(label, process, scenario, port, warmup=None, **kw):
        measure(label, process, scenario, port, args.calls, args.rate,
                "alice", warmup=args.warmup if warmup is None else warmup,
                roundNumber=roundNumber, **kw)

    distributorPort, homePort, kamailioPort = freePort(), freePort(), freePort()
    barePort = freePort()
    home1 = f"sip:127.0.0.1:{homePort}"
    writeConfiguration(work, homePort)
    processes = []
    try:
        distributor = startSipdist(work, "distributor", "distributor",
                                   distributorPort, processes)
        home = startSipdist(work, "home", "home1", homePort, processes)
        run("sipdist distributor: signed 301", distributor,
            "register_301.xml", distributorPort)
        run("sipdist home: registrar 200 (signed)", home,
            "register_200.xml", homePort)
        if not args.no_reference:
            bare = startBareTwisted(work, barePort, processes)
            run("reference: bare sip.Base, fixed 301", bare,
                "register_301_noauth.xml", barePort, requestsPerCall=1)
        if not args.no_kamailio:
            kamailio = startKamailio(work, kamailioPort, home1, processes)
            run("kamailio (1 worker): 301", kamailio, "register_301.xml",
                kamailioPort)
        if pypy:
            stopProcesses(processes[:2])
            del processes[:2]
            distributorPort, homePort = freePort(), freePort()
            with open(f"{work}/assignments.conf", "w") as f:
                f.write(f"server home1 sip:127.0.0.1:{homePort}\n"
                        "server home2 sip:127.0.0.1:9\n"
                        "user alice@example.com home1\n")
            distributor = startSipdist(work, "distributor", "pypy-distributor",
                                       distributorPort, processes, pypy)
            home = startSipdist(work, "home", "home1", homePort, processes,
                                pypy)
            run("PyPy sipdist distributor: signed 301", distributor,
                "register_301.xml", distributorPort, args.pypy_warmup)
            run("PyPy sipdist home: registrar 200", home,
                "register_200.xml", homePort, args.pypy_warmup)
            if not args.no_reference:
                bare = startBareTwisted(work, freePort(), processes, pypy)
                run("PyPy reference: bare sip.Base, fixed 301", bare,
                    "register_301_noauth.xml", int(bare.args[-1]),
                    args.pypy_warmup, requestsPerCall=1)
        if args.workers > 1:
            for count in (1, args.workers):
                port = freePort()
                extra = [f"--workers={count}"] if count > 1 else []
                server = startSipdist(work, "distributor",
                                      f"distributor-w{count}", port,
                                      processes, extra=extra)
                run(f"distributor, {count} worker(s), SIPp -t un", server,
                    "register_301.xml", port, transport="un")
    finally:
        stopProcesses(processes)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=20000)
    parser.add_argument("--rate", type=int, default=4000)
    parser.add_argument("--no-kamailio", action="store_true")
    parser.add_argument("--no-reference", action="store_true",
                        help="skip the bare twisted.protocols.sip.Base run")
    parser.add_argument("--no-pypy", action="store_true")
    parser.add_argument("--pypy-python", default=None,
                        help="a PyPy interpreter with sipdist's "
                        "dependencies (default: a venv built in "
                        "~/.cache/sipdist-bench when pypy3 is installed)")
    parser.add_argument("--warmup", type=int, default=20000,
                        help="uncounted calls before each run")
    parser.add_argument("--pypy-warmup", type=int, default=None,
                        help="uncounted calls before each PyPy run "
                        "(default: --warmup); 150000 measures PyPy as a "
                        "server that has run for minutes")
    parser.add_argument("--workers", type=int, default=0,
                        help="also run the distributor with this many "
                        "workers (and with one, both with SIPp -t un)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="run every server this many times, in turn, "
                        "and give the medians")
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be 1 or more")
    if args.warmup < 0:
        parser.error("--warmup must not be negative")
    if args.pypy_warmup is None:
        args.pypy_warmup = args.warmup
    elif args.pypy_warmup < 0:
        parser.error("--pypy-warmup must not be negative")

    work = tempfile.mkdtemp(prefix="sipdist-bench-")
    print(f"{args.calls:,d} SIPp calls at {args.rate:,d}/s, each REGISTER->401, "
          f"REGISTER+MD5 digest->final; {sys.implementation.name} "
          f"{sys.version.split()[0]}")
    pypy = None if args.no_pypy else pypyPython(args.pypy_python)
    print(f"  each run after {args.warmup:,d} uncounted calls"
          + (f", PyPy's after {args.pypy_warmup:,d}"
             if pypy and args.pypy_warmup != args.warmup else ""))
    try:
        for number in range(1, args.rounds + 1):
            if args.rounds > 1:
                print(f" round {number} of {args.rounds}", flush=True)
            runRound(args, work, pypy, number)
    finally:
        if os.environ.get("BENCH_KEEP"):
            print(f"  (kept {work})")
        else:
            shutil.rmtree(work, ignore_errors=True)
    printTable()


if __name__ == "__main__":
    main()
