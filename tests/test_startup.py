# -*- test-case-name: tests.test_startup -*-
"""
Starting, reloading and logging of a real C{twistd sipdist} process on
loopback: a busy port and a bad option end it at once with one line,
C{SIGHUP} reloads, the log file's rotations are bounded; and the same
behaviour through L{sipdist.tap} without a process.
"""

import errno
import gc
import io
import os
import signal
import socket
import subprocess
import sys
import time

from twisted.internet.testing import MemoryReactorClock
from twisted.logger import globalLogPublisher
from twisted.python.filepath import FilePath
from twisted.internet import defer
from twisted.internet.error import CannotListenError
from twisted.trial.unittest import SynchronousTestCase, TestCase

from sipdist.commands.passwd import PasswdOptions
from sipdist.tap import Options, makeService, reload

TOP = FilePath(__file__).parent().parent()

# Run twistd with this worktree's sipdist first on the path.
TWISTD = ("import sys; sys.path.insert(0, sys.argv.pop(1)); "
          "from twisted.scripts.twistd import run; sys.argv[0] = 'twistd'; "
          "run()")


# The servers the tests start do not warm PyPy's JIT up (seconds of CPU
# each, for a load no test offers); tests/test_warmup.py tests it.
NO_WARMUP = "--warmup=0"


def twistdCommand(*args):
    """
    The command running C{twistd -n ARGS} with this worktree's sipdist;
    C{--warmup=0} after the C{sipdist} command unless C{ARGS} give one.
    """
    args = list(args)
    if "sipdist" in args and not any(
            a.startswith("--warmup") for a in args):
        args.insert(args.index("sipdist") + 1, NO_WARMUP)
    return [sys.executable, "-c", TWISTD, TOP.path, "-n", "--pidfile="] + \
        args


def spawnTwistd(case, *args):
    """
    Start C{twistd -n ARGS} (this worktree's sipdist) in a process of its
    own, without standard streams; killed and waited for when C{case} is
    cleaned up.

    @return: the L{subprocess.Popen}.
    """
    import subprocess

    process = subprocess.Popen(
        twistdCommand(*args), stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def cleanup():
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)

    case.addCleanup(cleanup)
    return process


def waitForLog(case, path, text, timeout=20):
    """
    Wait (at most C{timeout} seconds) until the log file at C{path} holds
    C{text}; fail C{case} otherwise.  The file may be missing for a moment
    while the server rotates it (renamed, not yet made anew).
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(path, errors="replace") as f:
                if text in f.read():
                    return
        except FileNotFoundError:
            pass
        time.sleep(0.05)
    content = ""
    if os.path.exists(path):
        with open(path, errors="replace") as f:
            content = f.read()[-2000:]
    case.fail(f"{text!r} not in {path} after {timeout} s:\n{content}")


def freeUDPPort():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def parse(*argv):
    options = Options()
    options.parseOptions(list(argv))
    return options


def passwd(path, user, password):
    options = PasswdOptions(stdin=io.StringIO(password + "\n"),
                            stdout=io.StringIO())
    options.parseOptions([path, user, "--realm", "localhost"])
    options.run(None)


def options(port):
    """
    An OPTIONS request to the server on C{port}; the bytes of the answer,
    or C{b""} when none came within a second.
    """
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(1.0)
    s.bind(("127.0.0.1", 0))
    me = s.getsockname()[1]
    probe = (f"OPTIONS sip:127.0.0.1:{port} SIP/2.0\r\n"
             f"Via: SIP/2.0/UDP 127.0.0.1:{me};branch=z9hG4bK{time.time_ns()}"
             f"\r\nFrom: <sip:probe@127.0.0.1>;tag=1\r\n"
             f"To: <sip:127.0.0.1>\r\nCall-ID: {time.time_ns()}@probe\r\n"
             f"CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n"
             f"Content-Length: 0\r\n\r\n").encode()
    try:
        s.sendto(probe, ("127.0.0.1", port))
        return s.recv(65535)
    except OSError:
        return b""
    finally:
        s.close()


class TwistdProcessTests(SynchronousTestCase):
    """
    A real C{twistd sipdist} process.
    """

    def start(self, *args, **kw):
        process = subprocess.Popen(twistdCommand(*args),
                                   stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True, **kw)

        def cleanup():
            if process.poll() is None:
                process.kill()
            process.communicate(timeout=10)

        self.addCleanup(cleanup)
        return process

    def test_busyPort(self):
        """
        A port already in use ends the server at once with exit status 1
        and one line on its standard error naming the address and port.
        """
        busy = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        busy.bind(("127.0.0.1", 0))
        self.addCleanup(busy.close)
        port = busy.getsockname()[1]
        log = os.path.abspath(self.mktemp())
        process = self.start("--logfile", log, "sipdist", "--name=h",
                             f"--listen=udp:{port}:interface=127.0.0.1")
        out, err = process.communicate(timeout=60)
        self.assertEqual(process.returncode, 1, err)
        lines = err.strip().splitlines()
        self.assertEqual(len(lines), 1, err)
        self.assertIn(f"127.0.0.1:{port}", lines[0])
        self.assertIn("cannot listen", lines[0])

    def test_busyPortDaemon(self):
        """
        A daemon whose port is in use makes the twistd command exit with
        status 1, saying so, and leaves no pid file.
        """
        busy = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        busy.bind(("127.0.0.1", 0))
        self.addCleanup(busy.close)
        port = busy.getsockname()[1]
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        pidfile = os.path.join(directory, "twistd.pid")
        command = [sys.executable, "-c", TWISTD, TOP.path,
                   f"--pidfile={pidfile}",
                   f"--logfile={os.path.join(directory, 'twistd.log')}",
                   "sipdist", "--name=h",
                   f"--listen=udp:{port}:interface=127.0.0.1"]
        process = subprocess.run(command, capture_output=True, text=True,
                                 timeout=60, cwd=directory)
        self.assertEqual(process.returncode, 1, process.stderr)
        self.assertIn("cannot listen", process.stdout + process.stderr)
        # The daemon removes its pid file as it stops, which may be just
        # after its parent has reported the failure and exited.
        deadline = time.monotonic() + 10
        while os.path.exists(pidfile) and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertFalse(os.path.exists(pidfile))

    def test_optionError(self):
        """
        A bad option is one line and a pointer to C{--help}, exit status
        1, not the usage text.
        """
        for args, fragment in (
                (["--name=h", "--monitor-interval=x"], "--monitor-interval"),
                (["--name=h", "--nosuch"], "--nosuch"),
                (["--role=nosuch"], "--role")):
            process = self.start("sipdist", *args)
            out, err = process.communicate(timeout=60)
            self.assertEqual(process.returncode, 1, err)
            lines = (out + err).strip().splitlines()
            self.assertEqual(len(lines), 1, out + err)
            self.assertIn(fragment, lines[0])
            self.assertIn("--help", lines[0])

    def test_sighupReloads(self):
        """
        C{SIGHUP} keeps the server running and reads the changed
        credentials file again.
        """
        users = os.path.abspath(self.mktemp())
        passwd(users, "alice", "old")
        log = os.path.abspath(self.mktemp())
        port = freeUDPPort()
        process = self.start("--logfile", log, "sipdist", "--name=h",
                             f"--listen=udp:{port}:interface=127.0.0.1",
                             f"--credentials=file:{users}")
        waitForLog(self, log, "listening on")
        process.send_signal(signal.SIGHUP)
        waitForLog(self, log, "reload: nothing changed")
        # Inode, size and time all differ: a new file replaced the old.
        passwd(users, "alice", "new")
        passwd(users, "bob", "b")
        process.send_signal(signal.SIGHUP)
        waitForLog(self, log, "reload: credentials")
        waitForLog(self, log, "reloaded credentials")
        self.assertIsNone(process.poll())
        self.assertTrue(options(port).startswith(b"SIP/2.0 200"))

    def test_rotationBounded(self):
        """
        With C{--logfile}, the log rotates (at 1 MB) keeping at most
        C{--log-keep} old files: twistd's own log file would keep every
        one.
        """
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        log = os.path.join(directory, "server.log")
        for i in (1, 2, 3, 4):
            with open(f"{log}.{i}", "w") as f:
                f.write(f"old log {i}\n")
        with open(log, "w") as f:
            f.write("x" * 1000000 + "\n")
        port = freeUDPPort()
        process = self.start("--logfile", log, "sipdist", "--name=h",
                             "--log-keep=2",
                             f"--listen=udp:{port}:interface=127.0.0.1")
        waitForLog(self, log, "listening on")
        process.terminate()
        process.communicate(timeout=30)
        self.assertEqual(sorted(os.listdir(directory)),
                         ["server.log", "server.log.1", "server.log.2"])
        with open(log + ".1") as f:
            self.assertTrue(f.read().startswith("xxx"))


class BusyPortServiceTests(SynchronousTestCase):
    """
    A port that cannot be opened, through L{sipdist.tap} without a process.
    """

    def test_failureHandled(self):
        """
        Starting the service raises L{SystemExit} naming the port, and
        leaves no L{defer.Deferred} failing unhandled behind: nothing for
        the garbage collector to report at exit (Python 3.13.0 crashed with
        a segmentation fault doing so, after the one line).
        """
        class BusyReactor(MemoryReactorClock):
            def listenUDP(self, port, protocol, interface="",
                          maxPacketSize=8192):
                raise CannotListenError(interface, port, OSError(
                    errno.EADDRINUSE, "Address already in use"))

        def start():
            service = makeService(
                parse("--name=h", "--listen=udp:5999:interface=127.0.0.1"),
                BusyReactor())
            with self.assertRaises(SystemExit) as caught:
                service.startService()
            self.assertIn("cannot listen", str(caught.exception))
            self.assertIn("127.0.0.1:5999", str(caught.exception))

        start()
        gc.collect()
        self.assertEqual(self.flushLoggedErrors(), [])


class ReloadTests(SynchronousTestCase):
    """
    L{reload} reads again what changed, without a process.
    """

    def test_credentialsAndStore(self):
        """
        L{reload} reads a changed credentials file and a changed assignment
        file, and says what it read.
        """
        users = self.mktemp()
        passwd(users, "alice", "old")
        store = os.path.abspath(self.mktemp())
        with open(store, "w") as f:
            f.write("")
        reactor = MemoryReactorClock()
        service = makeService(parse("--name=h", "--listen=udp:5999",
                                    f"--credentials=file:{users}",
                                    f"--store=file:{store}"), reactor)
        self.assertEqual(reload(service), [])
        passwd(users, "alice", "new")
        self.assertEqual(reload(service), ["credentials"])
        with open(store + ".new", "w") as f:
            f.write("server h sip:127.0.0.1:5999\n")
        os.replace(store + ".new", store)
        self.assertEqual(reload(service), ["store"])
        [server] = list(service)
        self.assertIsNotNone(
            self.successResultOf(server.store.getServer("h")))


    def test_tls(self):
        """
        L{reload} reads changed TLS files: a real handshake after it meets
        the new certificate.  Files that do not fit together (a key not
        matching the certificate) are refused with one line, and the
        certificate in use stays.
        """
        from sipdist import testca
        from sipdist.sip.tls import clientContextFactory
        from tests.test_tls import _handshakeInMemory, _subjectCommonName
        directory = os.path.abspath(self.mktemp())
        testca.makeCA(directory, names=("first", "second"))
        for name in ("pem", "key"):
            FilePath(f"{directory}/first.{name}").copyTo(
                FilePath(f"{directory}/server.{name}"))
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        service = makeService(parse(
            "--name=h", "--listen=udp:5999",
            f"--tls-cert={directory}/server.pem",
            f"--tls-key={directory}/server.key"), MemoryReactorClock())
        [server] = list(service)
        tls = server.transportService.tlsServerOptions

        def served():
            serverPeer, clientPeer = _handshakeInMemory(
                tls, clientContextFactory("localhost",
                                          f"{directory}/ca.pem"))
            self.assertTrue(clientPeer.handshook)
            return _subjectCommonName(clientPeer.peerCertificate)

        self.assertEqual(served(), "first")
        self.assertEqual(reload(service), [])
        for name in ("pem", "key"):
            FilePath(f"{directory}/second.{name}").copyTo(
                FilePath(f"{directory}/server.{name}.new"))
            os.replace(f"{directory}/server.{name}.new",
                       f"{directory}/server.{name}")
        self.assertEqual(reload(service), ["tls"])
        self.assertEqual(served(), "second")
        FilePath(f"{directory}/first.key").copyTo(
            FilePath(f"{directory}/server.key.new"))
        os.replace(f"{directory}/server.key.new", f"{directory}/server.key")
        self.assertEqual(reload(service), [])
        self.assertEqual(served(), "second")
        [warning] = [e for e in events
                     if "TLS certificate in use stays" in e.get(
                         "log_format", "")]
        self.assertIn("does not match", warning["error"])

    def test_userWeights(self):
        """
        L{reload} reads a changed C{--user-weights} file into the monitor;
        a bad one is refused with one line and the weights in use stay.
        """
        weights = os.path.abspath(self.mktemp())
        with open(weights, "w") as f:
            f.write("sip:alice@example.com 5\n")
        service = makeService(parse(
            "--role=distributor", "--name=d", "--listen=udp:5999",
            "--monitor", f"--user-weights={weights}"), MemoryReactorClock())
        [server] = list(service)
        self.assertEqual(list(server.monitor.weights.values()), [5.0])
        self.assertEqual(reload(service), [])
        with open(weights + ".new", "w") as f:
            f.write("sip:alice@example.com 7\nsip:bob@example.com 2\n")
        os.replace(weights + ".new", weights)
        self.assertEqual(reload(service), ["user-weights"])
        self.assertEqual(sorted(server.monitor.weights.values()), [2.0, 7.0])
        with open(weights + ".new", "w") as f:
            f.write("sip:alice@example.com heavy\n")
        os.replace(weights + ".new", weights)
        self.assertEqual(reload(service), [])
        self.assertEqual(sorted(server.monitor.weights.values()), [2.0, 7.0])


class WarningTests(SynchronousTestCase):
    """
    One line at start for settings that make a server useless.
    """

    def setUp(self):
        self.events = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def warnings(self, text):
        return [e for e in self.events if text in e.get("log_format", "")]

    def test_noCredentials(self):
        """
        A role that authenticates, started without C{--credentials}, says
        that nobody can log in; an edge (which does not authenticate) does
        not.
        """
        makeService(parse("--role=distributor", "--listen=udp:5999"),
                    MemoryReactorClock())
        self.assertEqual(len(self.warnings("no --credentials")), 1)
        makeService(parse("--role=edge", "--listen=udp:5999",
                          "--next-hop=sip:127.0.0.1:5998"),
                    MemoryReactorClock())
        self.assertEqual(len(self.warnings("no --credentials")), 1)

    def test_homeNotInStore(self):
        """
        A home whose C{--name} is not a server of the store says so once
        running; one that is does not.
        """
        reactor = MemoryReactorClock()
        makeService(parse("--name=h", "--listen=udp:5999",
                          "--credentials=memory:a:b"), reactor)
        reactor.run()
        [warning] = self.warnings("no such server in the assignment store")
        self.assertEqual(warning["name"], "h")
        self.assertEqual(self.warnings("no --credentials"), [])


class MonitorFlagTests(SynchronousTestCase):
    """
    A true-or-false option given alone is true.
    """

    def test_documented(self):
        """
        The command of docs/operations.rst parses: C{--monitor} alone
        followed by other options.
        """
        config = parse("--role=distributor", "--monitor",
                       "--monitor-interval=5", "--monitor-threshold=3")
        self.assertIs(config["monitor"], True)
        self.assertEqual(config["monitor-interval"], 5.0)
        self.assertIs(parse("--role=distributor", "--monitor=no")["monitor"],
                      False)
        self.assertIs(parse("--name=h", "--tls-require-client-cert")[
            "tls-require-client-cert"], True)



class InstanceTests(SynchronousTestCase):
    """
    C{--instance} labels the server's responses.
    """

    def test_serverHeader(self):
        """
        The label is added to the Server header; a label that could break
        the header is refused.
        """
        from sipdist.sip.message import Request
        service = makeService(parse("--name=h", "--listen=udp:5999",
                                    "--credentials=memory:a:b",
                                    "--instance=run-42"),
                              MemoryReactorClock())
        [server] = list(service)
        request = Request("OPTIONS", "sip:127.0.0.1:5999")
        for name, value in (
                ("via", "SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKx"),
                ("from", "<sip:a@b>;tag=1"), ("to", "<sip:b>"),
                ("call-id", "c"), ("cseq", "1 OPTIONS")):
            request.headers[name] = [value]
        header = server.server.response(request, 200).headers["server"][0]
        self.assertTrue(header.startswith("sipdist/"))
        self.assertTrue(header.endswith(" (run-42)"))
        from twisted.python import usage
        error = self.assertRaises(usage.UsageError, parse, "--name=h",
                                  "--instance=a b)")
        self.assertIn("--instance", str(error))


class PasswordChangeLoopbackTests(TestCase):
    """
    A running home server and real logins over loopback UDP.
    """

    timeout = 30

    @defer.inlineCallbacks
    def test_newPasswordWithoutRestart(self):
        """
        After C{sipdist passwd} changes alice's password in the server's
        credentials file, a login with the old password fails and one with
        the new password succeeds, without a restart or a signal.
        """
        from twisted.internet import reactor, task

        from sipdist.client.login import LoginFailed, Registration
        from sipdist.server import buildServer
        from sipdist.store import ServerRecord
        from sipdist.store.memory import MemoryAssignmentStore
        from tests.client_helpers import startAgent

        users = os.path.abspath(self.mktemp())
        options = PasswdOptions(stdin=io.StringIO("old\n"),
                                stdout=io.StringIO())
        options.parseOptions([users, "alice", "--realm", "example.com"])
        options.run(None)
        store = MemoryAssignmentStore()
        config = {"role": "home", "name": "home1", "domain": "example.com",
                  "listen": ["udp:0:interface=127.0.0.1"],
                  "credentials": f"file:{users}",
                  "secret": "pool-nonce-secret-0123456789abcdef", "t1": 0.05}
        service = buildServer(config, reactor, store=store)
        service.startService()
        self.addCleanup(service.stopService)
        yield service.transportService.ready
        uri = (f"sip:127.0.0.1:"
               f"{service.transportService.ports[0].getHost().port}")
        yield store.addServer(ServerRecord("home1", uri))
        yield store.assignUser("alice@example.com", "home1")

        @defer.inlineCallbacks
        def login(password):
            ua = yield startAgent(self, reactor, password=password)
            registration = Registration(ua, ua.locator, server=uri)
            result = yield registration.start()
            yield registration.stop()
            return result

        yield login("old")
        options = PasswdOptions(stdin=io.StringIO("new\n"),
                                stdout=io.StringIO())
        options.parseOptions([users, "alice", "--realm", "example.com"])
        options.run(None)
        # The source looks at the file at most once a second.
        yield task.deferLater(reactor, 1.1, lambda: None)
        try:
            yield login("old")
        except LoginFailed:
            pass
        else:
            self.fail("the old password still logs in")
        result = yield login("new")
        self.assertIsNotNone(result)
