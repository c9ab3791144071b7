# -*- test-case-name: tests.test_workers -*-
"""
C{--workers N}: one server on several cores.

The process twistd starts becomes a supervisor: it runs no SIP itself but
starts N worker processes (the same C{twistd sipdist} command with
C{--worker-id=K}), restarts a worker that dies (with a growing delay, and
gives up when workers keep dying young), and stops them all when it is
stopped (C{SIGTERM}).

Every worker opens the same listening ports with C{SO_REUSEPORT} (Linux):
the kernel spreads UDP datagrams over the workers by the sender's address
and port, so the retransmissions of a transaction reach the worker that
holds the transaction, and spreads TCP/TLS connections, each of which stays
with the worker that accepted it.  Nothing else is shared but what the
pool shares anyway: the assignment store, the credentials and the nonce
secret (C{--secret-file}), so a challenge made by one worker is answered
to any other.

Only the roles keeping no users' state in the process may have workers:
a home holds its users' registrations, so a machine runs several homes
(several pool members) to use several cores.
"""

import os
import socket
import sys

from twisted.application.service import Service
from twisted.internet import defer, error
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger

from sipdist.sip.datagram import adoptDatagram

#: Roles whose processes hold no per-user state.
WORKER_ROLES = ("distributor", "edge", "internal-edge")

#: Seconds a restarted worker waits first; doubled per death in a row.
RESTART_DELAY = 1.0
#: Longest wait before a restart.
MAX_RESTART_DELAY = 30.0
#: A worker that ran this long resets the count of deaths in a row.
STABLE_AFTER = 60.0
#: Deaths in a row (each before STABLE_AFTER) after which the supervisor
#: stops: the configuration or the machine is broken, not a worker.
MAX_DEATHS = 10
#: Seconds workers get to stop after SIGTERM before they are killed.
STOP_TIMEOUT = 10.0


def _family(host):
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def reusePortSocket(kind, port, interface=""):
    """
    A socket bound with C{SO_REUSEPORT} to C{(interface, port)}, not
    blocking; a TCP one listens.

    @param kind: C{"udp"} or C{"tcp"}.
    @raise OSError: the port cannot be bound (taken by a process that did
        not ask for C{SO_REUSEPORT}, or by another user).
    """
    family = _family(interface)
    sock = socket.socket(
        family, socket.SOCK_DGRAM if kind == "udp" else socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if kind != "udp":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((interface or ("::" if family == socket.AF_INET6 else ""),
                   port))
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


class ReusePortListener:
    """
    The part of a reactor a L{sipdist.sip.transport.TransportLayer} listens
    with, opening every port with C{SO_REUSEPORT} so that the workers of
    one server share it; everything else goes to the real reactor.
    """

    def __init__(self, reactor):
        self._reactor = reactor

    def __getattr__(self, name):
        return getattr(self._reactor, name)

    def listenUDP(self, port, protocol, interface="", maxPacketSize=8192):
        sock = reusePortSocket("udp", port, interface)
        try:
            return adoptDatagram(self._reactor, sock.fileno(), sock.family,
                                 protocol, maxPacketSize)
        finally:
            # The reactor keeps a duplicate of the descriptor.
            sock.close()

    def listenTCP(self, port, factory, backlog=50, interface=""):
        sock = reusePortSocket("tcp", port, interface)
        try:
            sock.listen(backlog)
            return self._reactor.adoptStreamPort(
                sock.fileno(), sock.family, factory)
        finally:
            sock.close()

    def listenSSL(self, port, factory, contextFactory, backlog=50,
                  interface=""):
        from twisted.protocols.tls import TLSMemoryBIOFactory
        return self.listenTCP(
            port, TLSMemoryBIOFactory(contextFactory, False, factory),
            backlog, interface)


def checkShareable(descriptions):
    """
    Check that workers can share every listening endpoint: each is
    C{udp:}, C{tcp:} or C{sips:} with a port number other than 0, free or
    already shared with C{SO_REUSEPORT}.

    @return: L{None} or a one-line explanation of the first problem.
    """
    from sipdist.sip.transport import parseListen

    for description in descriptions:
        kind, args, kwargs = parseListen(description)
        if kind not in ("udp", "tcp", "sips"):
            return (f"--listen {description!r}: workers share udp:, tcp: "
                    f"and sips: ports only")
        if int(args[0]) == 0:
            return (f"--listen {description!r}: workers share a port: give "
                    f"its number, not 0")
        try:
            reusePortSocket("udp" if kind == "udp" else "tcp", int(args[0]),
                            kwargs.get("interface", "")).close()
        except OSError as e:
            return f"--listen {description!r}: cannot listen: {e.strerror}"
    return None


def shiftPort(description, offset):
    """
    C{description} (C{tcp:PORT[:interface=ADDR]}) with its port number
    raised by C{offset}: worker K's status endpoint.

    @raise ValueError: not such a description.
    """
    from sipdist.sip.transport import parseListen

    kind, args, kwargs = parseListen(description)
    if kind != "tcp":
        raise ValueError(f"{description!r}: with workers, give tcp:PORT")
    port = int(args[0])
    if port == 0:
        return description
    if port + offset > 65535:
        raise ValueError(f"{description!r}: the workers' ports pass 65535")
    parts = [f"tcp:{port + offset}"]
    for name, value in kwargs.items():
        parts.append(f"{name}={value.replace(':', chr(92) + ':')}")
    return ":".join(parts)


class _WorkerProtocol(ProcessProtocol):
    def __init__(self, pool, index):
        self.pool = pool
        self.index = index
        self.ended = defer.Deferred()

    def processEnded(self, reason):
        self.pool._ended(self, reason)
        self.ended.callback(None)


class WorkerPool(Service):
    """
    Runs C{command(K)} for K = 1..N and keeps N of them running.

    @ivar workers: index -> the running worker's L{_WorkerProtocol}.
    @ivar restarts: how many workers were restarted.
    """

    _log = Logger()

    def __init__(self, reactor, count, command, env=None, path=None):
        """
        @param command: worker index (1..N) -> the worker's command, a
            L{list} whose first element is the executable.
        """
        self._reactor = reactor
        self.count = count
        self.command = command
        self.env = env if env is not None else dict(os.environ)
        self.path = path
        self.workers = {}
        self.restarts = 0
        self._started = {}
        self._deaths = 0
        self._pending = {}
        self._stopping = False

    def startService(self):
        Service.startService(self)
        self._stopping = False
        for index in range(1, self.count + 1):
            self._spawn(index)

    def _spawn(self, index):
        self._pending.pop(index, None)
        protocol = _WorkerProtocol(self, index)
        argv = self.command(index)
        self._reactor.spawnProcess(
            protocol, argv[0], argv, env=self.env, path=self.path,
            childFDs={0: "w", 1: 1, 2: 2})
        self.workers[index] = protocol
        self._started[index] = self._reactor.seconds()
        self._log.info("worker {index} started (pid {pid})", index=index,
                       pid=protocol.transport.pid)

    def _ended(self, protocol, reason):
        index = protocol.index
        if self.workers.get(index) is protocol:
            del self.workers[index]
        if self._stopping:
            return
        lived = self._reactor.seconds() - self._started.get(index, 0)
        if lived >= STABLE_AFTER:
            self._deaths = 0
        self._deaths += 1
        if self._deaths > MAX_DEATHS:
            self._log.critical(
                "workers died {n} times in a row within {s:.0f} s of their "
                "start: stopping (see the workers' log)", n=MAX_DEATHS,
                s=STABLE_AFTER)
            if getattr(self._reactor, "running", False):
                self._reactor.stop()
            return
        delay = min(RESTART_DELAY * 2 ** (self._deaths - 1),
                    MAX_RESTART_DELAY)
        self._log.warn("worker {index} ended ({reason}); restarting it in "
                       "{delay:.0f} s", index=index,
                       reason=reason.getErrorMessage(), delay=delay)
        self.restarts += 1
        self._pending[index] = self._reactor.callLater(
            delay, self._spawn, index)

    def stopService(self):
        """
        Stop every worker: C{SIGTERM}, then C{SIGKILL} for those still
        running after L{STOP_TIMEOUT} seconds.

        @return: a L{Deferred} firing when all have ended.
        """
        Service.stopService(self)
        self._stopping = True
        for call in self._pending.values():
            if call.active():
                call.cancel()
        self._pending = {}
        workers = list(self.workers.values())
        for protocol in workers:
            self._signal(protocol, "TERM")
        if not workers:
            return defer.succeed(None)
        kill = self._reactor.callLater(
            STOP_TIMEOUT, lambda: [self._signal(p, "KILL") for p in workers])
        d = defer.DeferredList([p.ended for p in workers])

        def ended(result):
            if kill.active():
                kill.cancel()
            return None

        return d.addCallback(ended)

    def signalAll(self, name):
        """
        Send the signal C{name} (C{"HUP"}: reload) to every running worker.
        """
        for protocol in list(self.workers.values()):
            self._signal(protocol, name)

    @staticmethod
    def _signal(protocol, name):
        try:
            protocol.transport.signalProcess(name)
        except error.ProcessExitedAlready:
            pass


def workerCommand(config, index):
    """
    The command running worker C{index} of the server C{config} describes
    (under twistd: the C{sipdist} options it was given, then
    C{--worker-id}; only worker 1 runs the pool monitor of C{--monitor}).
    Each worker logs to its own file, twistd's C{--logfile} followed by
    C{.worker}K (C{twistd.log.worker}K for a daemon without one), or to
    standard output when twistd logs there.

    @return: L{list} of strings.
    """
    import sipdist

    # The sipdist (and twisted/plugins) this process runs, first on the
    # worker's path.
    top = os.path.dirname(os.path.dirname(os.path.abspath(sipdist.__file__)))
    parent = config.parent or {}
    argv = [sys.executable, "-c",
            "import sys; sys.path.insert(0, sys.argv.pop(1)); "
            "sys.argv[0] = 'twistd'; "
            "from twisted.scripts.twistd import run; run()", top,
            "--nodaemon", "--pidfile="]
    logfile = parent.get("logfile")
    if logfile == "-" or (not logfile and parent.get("nodaemon")):
        argv.append("--logfile=-")
    else:
        argv.append(f"--logfile={logfile or 'twistd.log'}.worker{index}")
    argv += ["sipdist"] + list(config.argv) + [f"--worker-id={index}"]
    if index > 1:
        argv.append("--monitor=false")
    return argv
