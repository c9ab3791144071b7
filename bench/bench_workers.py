"""
How a distributor's throughput scales with --workers when each worker has
a core's worth of CPU to itself, on a machine too small to give it one.

    python bench/bench_workers.py [--workers 2] [--share SHARE]
                                  [--rate 800] [--seconds 10]

On a 2-core machine SIPp needs a good part of a core to offer the load,
so N workers cannot each get a core and a run of bench_register.py
--workers measures who wins the CPU, not how the server scales.  Here each
worker process is put in a cgroup of its own (the cgroup v1 C{cpu}
controller, or cgroup v2's C{cpu.max}) that lets it use C{--share} of one
core at most: a small core of its own.  SIPp and the rest of the machine
keep what is left.  SIPp offers C{--rate} calls a second per worker
(REGISTER -> 401, REGISTER with MD5 credentials -> signed 301, one socket
per call, C{-t un}, so the kernel spreads the calls over the workers'
C{SO_REUSEPORT} ports) for C{--seconds}.  By default the share is
measured first: one worker, not limited, offered C{--rate} calls a
second, and the share is a tenth more than the part of a core it used
(machines of this project's kind differ by two: on 4 December 2026 one
worker used 0.11 of a core on one and 0.19 on another, where a fixed
share of 0.12 let one worker complete 499 calls a second of the 800
offered).  So a worker uses nearly all its share and no call fails:
each run is at its capacity, and N workers that scale serve N times as
many calls at the same CPU per call.  Above its capacity a distributor
sheds the excess with C{503}: the scenario ends those calls at once,
failed, and the line says how many were shed.

For one worker (a plain distributor process) and for C{--workers}, it
prints the calls completed per second (the throughput), the calls that
failed (shed, or timed out), the CPU the workers used and their CPU per
completed call.  The scaling is the ratio of the throughputs.

Needs root (cgroups) and SIPp; says why and stops otherwise.  The cgroups
are removed at the end.
"""

import argparse
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_register import (  # noqa: E402
    cpuSeconds, freePort, processTree, runSipp, startSipdist,
    stopProcesses, writeConfiguration)

# The cgroups' period, in microseconds: short, so that a worker at its
# limit is held back a little often rather than for most of 100 ms (the
# default), which would read as long stalls to its overload control.
PERIOD = 10000


class CPUGroups:
    """
    One cgroup per process, each limited to a share of a core, under a
    parent made for the run (cgroup v1 C{cpu} controller where mounted,
    else cgroup v2).
    """

    def __init__(self, share):
        self.share = share
        v1 = "/sys/fs/cgroup/cpu"
        if os.path.exists(os.path.join(v1, "cpu.cfs_quota_us")):
            self.version, root = 1, v1
        else:
            root = "/sys/fs/cgroup"
            with open(os.path.join(root, "cgroup.controllers")) as f:
                if "cpu" not in f.read().split():
                    raise OSError("no cgroup cpu controller")
            with open(os.path.join(root, "cgroup.subtree_control"), "w") as f:
                f.write("+cpu")
            self.version = 2
        self.root = root
        self.parent = os.path.join(root, f"sipdist-bench-{os.getpid()}")
        os.mkdir(self.parent)
        if self.version == 2:
            with open(os.path.join(self.parent, "cgroup.subtree_control"),
                      "w") as f:
                f.write("+cpu")
        self.groups = []

    def limit(self, pid):
        """
        Move process C{pid} (all its threads) into a new group of its own.
        """
        group = os.path.join(self.parent, f"p{pid}")
        os.mkdir(group)
        quota = int(self.share * PERIOD)
        if self.version == 1:
            with open(os.path.join(group, "cpu.cfs_period_us"), "w") as f:
                f.write(str(PERIOD))
            with open(os.path.join(group, "cpu.cfs_quota_us"), "w") as f:
                f.write(str(quota))
        else:
            with open(os.path.join(group, "cpu.max"), "w") as f:
                f.write(f"{quota} {PERIOD}")
        with open(os.path.join(group, "cgroup.procs"), "w") as f:
            f.write(str(pid))
        self.groups.append(group)

    def remove(self):
        """
        Give the processes still in the groups back to the root group and
        remove the groups.
        """
        for group in self.groups + [self.parent]:
            try:
                with open(os.path.join(group, "cgroup.procs")) as f:
                    pids = f.read().split()
                for pid in pids:
                    with open(os.path.join(self.root, "cgroup.procs"),
                              "w") as f:
                        f.write(pid)
            except OSError:
                pass
        for group in self.groups + [self.parent]:
            for _ in range(50):
                try:
                    os.rmdir(group)
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.1)


def workersOf(server, count):
    """
    The worker processes of a distributor started with C{count} workers:
    the process itself for one, its children (after they answer) for more.
    """
    if count == 1:
        return [server.pid]
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        children = [p for p in processTree(server.pid) if p != server.pid]
        if len(children) == count:
            return children
        time.sleep(0.2)
    raise SystemExit(f"expected {count} workers, found {children}")


#: The share a calibration gives: this much more than one worker used.
HEADROOM = 1.1


def serve(work, count, rate, seconds, groups=None):
    """
    Offer a distributor of C{count} workers C{rate} calls a second for
    C{seconds}, after a short warm-up (every worker warm, the nonce
    secret read, the first challenge of each made); each worker limited
    by C{groups} if given.

    @return: the SIPp run (L{bench_register.SippRun}) and the CPU seconds
        the workers used during it.
    """
    processes = []
    try:
        port = freePort()
        extra = [f"--workers={count}"] if count > 1 else []
        server = startSipdist(work, "distributor", f"distributor-w{count}",
                              port, processes, extra=extra)
        workers = workersOf(server, count)
        if groups is not None:
            for pid in workers:
                groups.limit(pid)
        runSipp("register_301.xml", port, 200, 200, "alice", "un")
        before = cpuSeconds(workers)
        run = runSipp("register_301.xml", port, int(rate * seconds), rate,
                      "alice", "un")
        return run, cpuSeconds(workers) - before
    finally:
        stopProcesses(processes)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--share", type=float, default=None,
                        help="the part of one core each worker may use "
                        "(by default %g times what one worker uses at "
                        "--rate, measured first)" % HEADROOM)
    parser.add_argument("--rate", type=int, default=800,
                        help="calls offered per second and per worker")
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    if not shutil.which("sipp"):
        raise SystemExit("bench_workers: SIPp is not installed")
    if args.share is not None and not 0 < args.share <= 1:
        parser.error("--share must be above 0 and at most 1")
    work = tempfile.mkdtemp(prefix="sipdist-bench-workers-")
    try:
        results = measureScaling(args, work)
    finally:
        if os.environ.get("BENCH_KEEP"):
            print(f"  (kept {work})")
        else:
            shutil.rmtree(work, ignore_errors=True)
    if results.get(1):
        print(f"  throughput with {args.workers} workers / 1 worker: "
              f"{results[args.workers] / results[1]:.2f}")


def measureScaling(args, work):
    """
    The share calibrated (unless given), then one worker and
    C{args.workers} measured, each limited to the share.

    @return: C{{workers: calls completed per second}}.
    """
    writeConfiguration(work, freePort())
    if args.share is None:
        # One worker, not limited.
        run, cpu = serve(work, 1, args.rate, 4.0)
        failed, used = run[1], cpu / run[2]
        if failed or used * HEADROOM > 1:
            raise SystemExit(
                f"bench_workers: one worker cannot take {args.rate:,d} calls "
                f"a second here ({failed:,d} failed, {used:.2f} of a core); "
                f"give a lower --rate")
        args.share = round(used * HEADROOM, 3)
        print(f"one worker, not limited, used {used:.3f} of a core at "
              f"{args.rate:,d} calls/s: the share is {HEADROOM:g} times "
              f"that")
    try:
        groups = CPUGroups(args.share)
    except OSError as e:
        raise SystemExit(f"bench_workers: cannot make cgroups ({e}); run it "
                         f"as root on Linux")
    print(f"SIPp calls offered for {args.seconds:g} s at {args.rate:,d}/s a "
          f"worker (-t un), each "
          f"REGISTER->401, REGISTER+MD5->signed 301; each worker limited to "
          f"{args.share:.2f} of a core (cgroup v{groups.version})")
    results = {}
    try:
        for count in (1, args.workers):
            rate = args.rate * count
            run, cpu = serve(work, count, rate, args.seconds, groups)
            ok, failed, elapsed = run
            results[count] = ok / elapsed
            perCall = cpu / ok * 1e6 if ok else float("nan")
            print(f"  {count} worker(s), {rate:,d} calls/s offered: "
                  f"{ok:>7,d} ok {failed:>6,d} failed"
                  + (f" ({run.shed:,d} shed)" if run.shed else "") + "  "
                  f"{ok / elapsed:>7,.0f} calls/s  workers' CPU {cpu:6.2f} s "
                  f"({cpu / elapsed:.2f} of a core, {perCall:,.0f} us a "
                  f"completed call)", flush=True)
    finally:
        groups.remove()
    return results


if __name__ == "__main__":
    main()
