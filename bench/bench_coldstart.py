"""
A server started cold and loaded at once: what C{--warmup} changes.

    python bench/bench_coldstart.py [--role distributor,home] [--rounds 2]
        [--warmups 0,auto] [--calls 20000] [--rate 4000]
        [--pypy-python PATH | --cpython]

Each round starts, for each role and each C{--warmup} value in turn, a
server as bench/bench_register.py starts its own (PyPy by default: the
venv bench_register.py builds), measures how long it takes to answer an
C{OPTIONS} and the CPU it used by then, then sends it C{--calls} SIPp
logins at C{--rate} a second at once, with no warm-up of the bench's own.
Prints, for each run, the calls completed, failed and shed with C{503},
the calls per second and the requests per CPU-second of the load (the
CPU of the start left out), then the same run again with the server now
warm.  A cold PyPy server compiles while it serves: its overload control
sheds what it cannot take in time.
"""

import argparse
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_register import (  # noqa: E402
    cpuSeconds, freePort, measure, processTree, pypyPython, startSipdist,
    stopProcesses, writeConfiguration)

SCENARIOS = {"distributor": "register_301.xml", "home": "register_200.xml"}


def run(python, role, warmup, calls, rate, roundNumber):
    work = tempfile.mkdtemp(prefix="sipdist-coldstart-")
    processes = []
    try:
        homePort = freePort()
        writeConfiguration(work, homePort)
        port = homePort if role == "home" else freePort()
        name = "home1" if role == "home" else "distributor"
        started = time.monotonic()
        server = startSipdist(work, role, name, port, processes,
                              python=python, extra=[f"--warmup={warmup}"],
                              timeout=120)
        ready = time.monotonic() - started
        startCPU = cpuSeconds(processTree(server.pid))
        print(f"  {role}, --warmup={warmup}: answering after {ready:.1f} s "
              f"({startCPU:.1f} s of CPU)", flush=True)
        for state in ("cold", "then warm"):
            measure(f"{role} --warmup={warmup}, {state}", server,
                    SCENARIOS[role], port, calls, rate, "alice",
                    roundNumber=roundNumber)
    finally:
        stopProcesses(processes)
        shutil.rmtree(work, ignore_errors=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--role", default="distributor,home")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--warmups", default="0,auto",
                        help="the --warmup values to compare, in turn")
    parser.add_argument("--calls", type=int, default=20000)
    parser.add_argument("--rate", type=int, default=4000)
    parser.add_argument("--pypy-python", default=None,
                        help="the interpreter to run the servers with "
                        "(default: bench_register.py's PyPy venv)")
    parser.add_argument("--cpython", action="store_true",
                        help="run the servers with this interpreter")
    args = parser.parse_args()
    if shutil.which("sipp") is None:
        sys.exit("needs SIPp (Debian: sip-tester)")
    roles = [r for r in args.role.split(",") if r]
    for role in roles:
        if role not in SCENARIOS:
            sys.exit(f"--role: {role!r} is not distributor or home")
    python = sys.executable if args.cpython else pypyPython(args.pypy_python)
    if python is None:
        sys.exit("no PyPy to run the servers with (--pypy-python, or "
                 "--cpython)")
    print(f"{args.calls:,d} SIPp calls at {args.rate:,d}/s as soon as the "
          f"server answers; {python}")
    for roundNumber in range(1, args.rounds + 1):
        print(f" round {roundNumber} of {args.rounds}")
        for role in roles:
            for warmup in args.warmups.split(","):
                run(python, role, warmup, args.calls, args.rate, roundNumber)


if __name__ == "__main__":
    main()
