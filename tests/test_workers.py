# -*- test-case-name: tests.test_workers -*-
"""
C{--workers N}: its options, the supervisor's restarts and stopping with a
fake reactor, ports shared with C{SO_REUSEPORT}, and a real
C{twistd sipdist --workers 2} on loopback.
"""

import os
import signal
import socket
import subprocess
import time

from twisted.internet.error import ProcessDone, ProcessExitedAlready, \
    ProcessTerminated
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from sipdist import workers
from sipdist.tap import Options
from sipdist.workers import (WorkerPool, checkShareable, reusePortSocket,
                             shiftPort)
from tests.interop import freePort
from tests.test_startup import twistdCommand


def parse(*argv):
    options = Options()
    options.parseOptions(list(argv))
    return options


def sharedPort():
    """
    A port number free for both UDP and TCP on 127.0.0.1 now.
    """
    for _ in range(50):
        port = freePort("udp")
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                s.bind(("127.0.0.1", port))
        except OSError:
            continue
        return port
    raise RuntimeError("no port free for UDP and TCP")


def secretFile(testCase):
    """
    The C{--secret-file=PATH} option of a fresh secret file.
    """
    path = os.path.abspath(testCase.mktemp())
    with open(path, "w") as f:
        f.write("workers-nonce-secret-0123456789\n")
    return f"--secret-file={path}"


class OptionsTests(SynchronousTestCase):
    """
    What C{--workers} accepts.
    """

    def test_secretRequired(self):
        """
        Workers share the nonce secret: without C{--secret-file} the
        option is refused.
        """
        port = sharedPort()
        with self.assertRaises(usage.UsageError) as caught:
            parse("--role=distributor", "--workers=2",
                  f"--listen=udp:{port}:interface=127.0.0.1")
        self.assertIn("--secret-file", str(caught.exception))

    def test_home(self):
        """
        A home cannot have workers: the one-line error says why and points
        to several homes per machine.
        """
        with self.assertRaises(usage.UsageError) as caught:
            parse("--name=h1", "--workers=2")
        message = str(caught.exception)
        self.assertIn("registrations", message)
        self.assertIn("several homes per machine are several pool members",
                      message)
        self.assertNotIn("\n", message)

    def test_distributor(self):
        """
        A distributor may have workers; by default it has one.
        """
        port = sharedPort()
        self.assertEqual(parse("--role=distributor")["workers"], 1)
        options = parse("--role=distributor", "--workers=3", secretFile(self),
                        f"--listen=udp:{port}:interface=127.0.0.1")
        self.assertEqual(options["workers"], 3)

    def test_portZero(self):
        """
        Workers share a port number: port 0 is refused.
        """
        with self.assertRaises(usage.UsageError) as caught:
            parse("--role=edge", "--workers=2", secretFile(self),
                  "--listen=udp:0:interface=127.0.0.1")
        self.assertIn("not 0", str(caught.exception))

    def test_busyPort(self):
        """
        A port held by a process that does not share it is refused before
        any worker starts.
        """
        busy = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        busy.bind(("127.0.0.1", 0))
        self.addCleanup(busy.close)
        port = busy.getsockname()[1]
        with self.assertRaises(usage.UsageError) as caught:
            parse("--role=distributor", "--workers=2", secretFile(self),
                  f"--listen=udp:{port}:interface=127.0.0.1")
        self.assertIn("cannot listen", str(caught.exception))

    def test_statusPortPerWorker(self):
        """
        Worker K serves C{--status-listen}'s port + K - 1.
        """
        port = sharedPort()
        options = parse("--role=distributor", "--workers=2", "--worker-id=2",
                        secretFile(self),
                        f"--listen=udp:{port}:interface=127.0.0.1",
                        "--status-listen=tcp:8081:interface=127.0.0.1")
        self.assertEqual(options["status-listen"],
                         r"tcp:8082:interface=127.0.0.1")

    def test_shiftPort(self):
        """
        L{shiftPort} raises the port number and keeps the interface,
        escaping an IPv6 address's colons; only C{tcp:} is accepted.
        """
        self.assertEqual(shiftPort(r"tcp:9000:interface=\:\:1", 2),
                         r"tcp:9002:interface=\:\:1")
        self.assertRaises(ValueError, shiftPort, "udp:9000", 1)
        self.assertRaises(ValueError, shiftPort, "tcp:65535", 1)


class SharedPortTests(SynchronousTestCase):
    """
    L{reusePortSocket} and L{checkShareable}.
    """

    def test_twoSockets(self):
        """
        Two sockets bind the same UDP port, and two TCP sockets listen on
        the same port.
        """
        port = sharedPort()
        for kind in ("udp", "tcp"):
            first = reusePortSocket(kind, port, "127.0.0.1")
            self.addCleanup(first.close)
            second = reusePortSocket(kind, port, "127.0.0.1")
            self.addCleanup(second.close)
            self.assertEqual(first.getsockname(), second.getsockname())

    def test_checkShareable(self):
        """
        Only numbered udp:, tcp: and sips: ports are shared.
        """
        port = sharedPort()
        self.assertIsNone(checkShareable(
            [f"udp:{port}:interface=127.0.0.1",
             f"tcp:{port}:interface=127.0.0.1"]))
        self.assertIn("only", checkShareable(["ssl:5061:privateKey=k.pem"]))


class FakeProcess:
    def __init__(self, pid):
        self.pid = pid
        self.signals = []
        self.ended = False

    def signalProcess(self, name):
        if self.ended:
            raise ProcessExitedAlready()
        self.signals.append(name)


class SpawningReactor(MemoryReactorClock):
    """
    L{MemoryReactorClock} recording the processes it was asked to start.
    """

    def __init__(self):
        MemoryReactorClock.__init__(self)
        self.spawned = []

    def spawnProcess(self, protocol, executable, args, env=None, path=None,
                     uid=None, gid=None, usePTY=False, childFDs=None):
        process = FakeProcess(1000 + len(self.spawned))
        protocol.makeConnection(process)
        self.spawned.append((protocol, args))
        return process


def die(protocol, code=1):
    protocol.transport.ended = True
    reason = ProcessDone(0) if code == 0 else ProcessTerminated(code)
    protocol.processEnded(Failure(reason))


class WorkerPoolTests(SynchronousTestCase):
    """
    L{WorkerPool} with a fake reactor.
    """

    def setUp(self):
        self.reactor = SpawningReactor()
        self.pool = WorkerPool(self.reactor, 2,
                               lambda index: ["worker", str(index)], env={})
        self.pool.startService()

    def test_starts(self):
        """
        Starting the pool starts N workers, each told its index.
        """
        self.assertEqual([args for _, args in self.reactor.spawned],
                         [["worker", "1"], ["worker", "2"]])
        self.assertEqual(sorted(self.pool.workers), [1, 2])

    def test_restartWithBackoff(self):
        """
        A worker that dies is started again after 1 s, then, dying again
        soon, after 2 s, 4 s...
        """
        first = self.reactor.spawned[0][0]
        die(first)
        self.assertEqual(sorted(self.pool.workers), [2])
        self.reactor.advance(0.9)
        self.assertEqual(len(self.reactor.spawned), 2)
        self.reactor.advance(0.1)
        self.assertEqual(len(self.reactor.spawned), 3)
        self.assertEqual(self.reactor.spawned[2][1], ["worker", "1"])
        die(self.reactor.spawned[2][0])
        self.reactor.advance(1.9)
        self.assertEqual(len(self.reactor.spawned), 3)
        self.reactor.advance(0.1)
        self.assertEqual(len(self.reactor.spawned), 4)
        self.assertEqual(self.pool.restarts, 2)

    def test_stableResets(self):
        """
        A worker that ran for a while before dying is restarted after 1 s
        again.
        """
        die(self.reactor.spawned[0][0])
        self.reactor.advance(1)
        self.reactor.advance(workers.STABLE_AFTER)
        die(self.reactor.spawned[2][0])
        self.reactor.advance(1)
        self.assertEqual(len(self.reactor.spawned), 4)

    def test_givesUp(self):
        """
        Workers dying young again and again stop the supervisor instead of
        being restarted for ever.
        """
        self.reactor.running = True
        stopped = []
        self.reactor.stop = lambda: stopped.append(True)
        for _ in range(workers.MAX_DEATHS + 1):
            die(self.pool.workers[2])
            self.reactor.advance(workers.MAX_RESTART_DELAY)
        self.assertEqual(stopped, [True])
        self.assertEqual(self.pool.restarts, workers.MAX_DEATHS)

    def test_stop(self):
        """
        Stopping the pool sends SIGTERM to every worker, restarts none, and
        fires once they all ended.
        """
        die(self.reactor.spawned[0][0])
        d = self.pool.stopService()
        protocol = self.pool.workers[2]
        self.assertEqual(protocol.transport.signals, ["TERM"])
        self.assertNoResult(d)
        die(protocol, 0)
        self.successResultOf(d)
        self.reactor.advance(workers.MAX_RESTART_DELAY)
        self.assertEqual(len(self.reactor.spawned), 2)

    def test_signalAll(self):
        """
        L{WorkerPool.signalAll} signals every running worker (the
        supervisor passes SIGHUP on so), not one that ended.
        """
        die(self.reactor.spawned[0][0])
        self.pool.signalAll("HUP")
        self.assertEqual(self.reactor.spawned[1][0].transport.signals,
                         ["HUP"])
        self.assertEqual(self.reactor.spawned[0][0].transport.signals, [])

    def test_stopKills(self):
        """
        A worker still running L{workers.STOP_TIMEOUT} seconds after
        SIGTERM gets SIGKILL.
        """
        d = self.pool.stopService()
        self.reactor.advance(workers.STOP_TIMEOUT)
        for protocol, _ in self.reactor.spawned:
            self.assertEqual(protocol.transport.signals, ["TERM", "KILL"])
            die(protocol, 9)
        self.successResultOf(d)


def options(port, source):
    """
    The Server header of the answer to an OPTIONS sent to C{port} from the
    UDP socket C{source}; L{None} when none came within a second.
    """
    me = source.getsockname()[1]
    probe = (f"OPTIONS sip:127.0.0.1:{port} SIP/2.0\r\n"
             f"Via: SIP/2.0/UDP 127.0.0.1:{me};branch=z9hG4bK{time.time_ns()}"
             f"\r\nFrom: <sip:probe@127.0.0.1>;tag=1\r\n"
             f"To: <sip:127.0.0.1>\r\nCall-ID: {time.time_ns()}@probe\r\n"
             f"CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n"
             f"Content-Length: 0\r\n\r\n").encode()
    source.sendto(probe, ("127.0.0.1", port))
    try:
        answer = source.recv(65535).decode("utf-8", "replace")
    except OSError:
        return None
    for line in answer.split("\r\n"):
        if line.lower().startswith("server:"):
            return line.split(":", 1)[1].strip()
    return None


def children(pid):
    """
    The process ids whose parent is C{pid} (Linux /proc), zombies left out.
    """
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(entry))
    return sorted(found)


class ProcessTests(SynchronousTestCase):
    """
    A real C{twistd sipdist --role=distributor --workers 2}.
    """

    def waitUntil(self, condition, what, timeout=30):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = condition()
            if value:
                return value
            time.sleep(0.2)
        self.fail(f"{what}: not after {timeout} s")

    def serving(self, port, tries=60):
        """
        The worker names (Server header comments) answering OPTIONS sent
        from C{tries} UDP source ports.
        """
        names = set()
        for _ in range(tries):
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.settimeout(1.0)
                s.bind(("127.0.0.1", 0))
                server = options(port, s)
            if server is not None and "(worker " in server:
                names.add(server[server.index("(worker "):])
        return names

    def test_workers(self):
        """
        Both workers answer requests on the one port, a killed worker is
        replaced, SIGHUP to the supervisor makes every worker reload, and
        SIGTERM to the supervisor stops every worker.
        """
        port = sharedPort()
        log = os.path.abspath(self.mktemp())
        process = subprocess.Popen(
            twistdCommand(f"--logfile={log}", "sipdist",
                          "--role=distributor", "--workers=2",
                          secretFile(self),
                          f"--listen=udp:{port}:interface=127.0.0.1",
                          f"--listen=tcp:{port}:interface=127.0.0.1"),
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

        def cleanup():
            for child in children(process.pid):
                try:
                    os.kill(child, signal.SIGKILL)
                except OSError:
                    pass
            if process.poll() is None:
                process.kill()
            process.communicate(timeout=10)

        self.addCleanup(cleanup)
        def workers(gone=()):
            """the two workers' pids, none of C{gone}, else None"""
            found = children(process.pid)
            if len(found) == 2 and not set(gone) & set(found):
                return found
            return None

        pids = self.waitUntil(workers, "two workers")
        expected = {"(worker 1)", "(worker 2)"}
        self.waitUntil(lambda: self.serving(port) == expected,
                       "both workers answering")

        os.kill(pids[0], signal.SIGKILL)
        replaced = self.waitUntil(lambda: workers(gone=[pids[0]]),
                                  "a new worker")
        self.assertIn(pids[1], replaced)
        self.waitUntil(lambda: self.serving(port) == expected,
                       "both workers answering again")
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.settimeout(5)
            s.connect(("127.0.0.1", port))

        # SIGHUP (reload) reaches the workers and ends nobody.
        process.send_signal(signal.SIGHUP)

        def reloaded():
            for index in (1, 2):
                try:
                    with open(f"{log}.worker{index}") as f:
                        if "reload:" not in f.read():
                            return False
                except OSError:
                    return False
            return True

        self.waitUntil(reloaded, "both workers reloading")
        self.assertIsNone(process.poll())
        self.assertEqual(children(process.pid), replaced)

        process.send_signal(signal.SIGTERM)
        # twistd ends by the signal it was stopped with, once stopped.
        self.assertIn(process.wait(30), (0, -signal.SIGTERM))

        self.waitUntil(lambda: not any(_alive(pid) for pid in replaced),
                       "workers ended")


def _alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
