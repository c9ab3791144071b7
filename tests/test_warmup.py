"""
Tests for L{sipdist.warmup}: the logins run through a throwaway server
before a PyPy server listens (C{--warmup}).

They run on every interpreter: the warm-up's work (a real server on a real
loopback UDP port, a reactor of the running one's kind, a client answering
its challenges) is the same on CPython, where only the JIT's gain is
missing.
"""

import os
import signal
import sys

from twisted.internet import reactor
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import globalLogPublisher
from twisted.python.filepath import FilePath
from twisted.trial.unittest import SynchronousTestCase

from sipdist import tap, warmup
from sipdist.auth.credentials import FileDigestHashSource, setPassword
from sipdist.store.file import FileAssignmentStore
from sipdist.store.memory import MemoryAssignmentStore
from tests.test_transport import FakeRlimit


def parse(*argv):
    options = tap.Options()
    options.parseOptions(list(argv))
    return options


def openDescriptors():
    """
    The number of file descriptors this process has open (Linux), or
    C{None}.
    """
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return None


class WarmUpTests(SynchronousTestCase):
    """
    L{warmup.warmUp} and its throwaway server.
    """

    def setUp(self):
        # The warm-up's temporary directory goes here, to be looked at.
        self.scratch = FilePath(self.mktemp())
        self.scratch.makedirs()
        import tempfile
        self.patch(tempfile, "tempdir", self.scratch.path)

    def files(self, role):
        """
        A real store file and credentials file for C{role}'s options.
        """
        top = FilePath(self.mktemp())
        top.makedirs()
        store = top.child("assignments.conf")
        store.setContent(b"server home1 sip:192.0.2.10:5060\n"
                         b"user alice@example.com home1\n")
        credentials = top.child("credentials")
        setPassword(credentials.path, "alice", "example.com", "secret")
        return store, credentials

    def test_distributor(self):
        """
        A distributor's warm-up completes its logins, each a challenge and
        a signed 301, and leaves nothing open or on disk.
        """
        before = openDescriptors()
        result = warmup.warmUp(
            parse("--role=distributor", "--domain=example.com"), reactor,
            300)
        self.assertEqual((result.logins, result.error), (300, None))
        self.assertGreater(result.seconds, 0)
        self.assertEqual(openDescriptors(), before)
        self.assertEqual(self.scratch.listdir(), [])

    def test_homeWithFiles(self):
        """
        A home whose store and credentials are files warms up a store and
        credentials of the same classes, in files of its own: the real
        files are left as they were.
        """
        store, credentials = self.files("home")
        storeText, credentialsText = (store.getContent(),
                                      credentials.getContent())
        config = parse("--role=home", "--name=home1", "--domain=example.com",
                       f"--store=file:{store.path}",
                       f"--credentials=file:{credentials.path}")
        result = warmup.warmUp(config, reactor, 300)
        self.assertEqual((result.logins, result.error), (300, None))
        self.assertEqual(
            (store.getContent(), credentials.getContent()),
            (storeText, credentialsText))
        self.assertEqual(self.scratch.listdir(), [])

    def test_sameKinds(self):
        """
        The throwaway store and credentials are of the real server's kinds
        where those are files, in memory otherwise.
        """
        store, credentials = self.files("home")
        work = FilePath(self.mktemp())
        work.makedirs()
        for argv, kinds in (
                ([f"--store=file:{store.path}",
                  f"--credentials=file:{credentials.path}"],
                 (FileAssignmentStore, FileDigestHashSource)),
                ([], (MemoryAssignmentStore, None))):
            scratch = type(reactor)()
            self.addCleanup(warmup._closeReactor, scratch)
            service, address = warmup._throwawayServer(
                parse("--role=home", "--name=home1", *argv), scratch,
                work.path, "pw")
            self.addCleanup(service.stopService)
            self.assertIs(type(service.store), kinds[0])
            source = getattr(service.checker, "source", None)
            if kinds[1] is not None:
                self.assertIsInstance(source, kinds[1])
            else:
                self.assertNotIsInstance(source, FileDigestHashSource)
            self.assertEqual(address[0], "127.0.0.1")

    def test_fastPaths(self):
        """
        The warm-up's requests take the fast paths the real server's take
        (its purpose): at a distributor every request, at a home all but
        the authenticated requests of the users it redirects.
        """
        for role, logins, full in (("distributor", 60, 0), ("home", 60, 6)):
            scratch = type(reactor)()
            self.addCleanup(warmup._closeReactor, scratch)
            service, address = warmup._throwawayServer(
                parse(f"--role={role}", "--name=home1"), scratch,
                self.scratch.path, "pw")
            self.addCleanup(service.stopService)
            transport = service.transport
            fast = transport.fastPath
            taken = []

            def counted(protocol, data, addr, fast=fast, taken=taken):
                answered = fast(protocol, data, addr)
                if data.startswith(b"REGISTER "):
                    # Not the OPTIONS of the home's standby probes.
                    taken.append(answered)
                return answered
            transport.fastPath = counted
            done, error = warmup._drive(service, address, scratch, role,
                                        logins, "pw", shedding=0.0)
            self.assertEqual((done, error), (logins, None))
            self.assertEqual(
                (taken.count(True), taken.count(False)),
                (2 * logins - full, full), role)

    def test_shedding(self):
        """
        The last fifth of the logins run while the throwaway server sheds
        (the paths of an overloaded server are compiled too): some end at
        a 503, answered from the datagram's bytes, and the warm-up counts
        them done; the others complete; the first four fifths see no 503.
        """
        clients = []
        Base = warmup._Client

        class Client(Base):
            def __init__(self, *args, **kwargs):
                Base.__init__(self, *args, **kwargs)
                clients.append(self)

            def startShedding(self):
                self.shedBefore = self.shed
                Base.startShedding(self)

        self.patch(warmup, "_Client", Client)
        scratch = type(reactor)()
        self.addCleanup(warmup._closeReactor, scratch)
        service, address = warmup._throwawayServer(
            parse("--role=home", "--name=home1"), scratch,
            self.scratch.path, "pw")
        self.addCleanup(service.stopService)
        overload = service.transactions.overload
        done, error = warmup._drive(service, address, scratch, "home", 300,
                                    "pw")
        self.assertEqual((done, error), (300, None))
        [client] = clients
        self.assertEqual(client.shedFrom, 240)
        self.assertEqual(client.shedBefore, 0)
        self.assertGreater(client.shed, 0)
        self.assertLess(client.shed, 60)
        self.assertEqual(overload.shed, client.shed)
        self.assertEqual(overload.episodes, 1)

    def test_sheddingNone(self):
        """
        Without an overload control to tell, nothing is shed.
        """
        client = warmup._Client(reactor, "home", "example.com",
                                ("127.0.0.1", 9), 100, "pw")
        self.addCleanup(client.socket.close)
        self.assertEqual(client.shedFrom, 100)

    def test_shapes(self):
        """
        The users write their requests in every shape, served and
        redirected alike.
        """
        client = warmup._Client(reactor, "home", "example.com",
                                ("127.0.0.1", 9), 1, "pw")
        self.addCleanup(client.socket.close)
        served = {client.shape(n) for n in range(30)
                  if not warmup._foreign(n)}
        foreign = {client.shape(n) for n in range(30) if warmup._foreign(n)}
        self.assertEqual(served, set(warmup._SHAPES))
        self.assertEqual(foreign, set(warmup._SHAPES))

    def test_unexpectedAnswer(self):
        """
        An answer the warm-up does not expect stops it, with the reason: a
        final answer other than the login's, a second challenge, an
        answer without the Call-ID of a login.
        """
        client = warmup._Client(reactor, "home", "example.com",
                                ("127.0.0.1", 9), 1, "pw")
        self.addCleanup(client.socket.close)
        # Logins 3, 9 and 4 under way, their first request's CSeq 1.
        for call in (3, 4, 9):
            client.underWay[client.callId(call)] = (call, 1)
        for answer, error in (
                (b"SIP/2.0 403 Forbidden\r\nCall-ID: 3-warmup\r\n"
                 b"CSeq: 2 REGISTER\r\n\r\n",
                 "unexpected answer b'SIP/2.0 403 Forbidden"),
                # User 9 is redirected: a 200 is not its answer.
                (b"SIP/2.0 200 OK\r\nCall-ID: 9-warmup\r\n"
                 b"CSeq: 2 REGISTER\r\n\r\n",
                 "unexpected answer b'SIP/2.0 200 OK"),
                (b"SIP/2.0 401 Unauthorized\r\nCall-ID: 4-warmup\r\n"
                 b"CSeq: 2 REGISTER\r\n\r\n",
                 "unexpected answer b'SIP/2.0 401"),
                (b"SIP/2.0 200 OK\r\nCSeq: 2 REGISTER\r\n\r\n",
                 "an answer to no login"),
                (b"SIP/2.0 200 OK\r\nCall-ID: 5-warmup\r\n"
                 b"CSeq: 2 REGISTER\r\n\r\n",
                 "an answer to no login"),
                # A request, not an answer.
                (b"OPTIONS sip:127.0.0.1 SIP/2.0\r\nCall-ID: 3-warmup\r\n"
                 b"CSeq: 1 OPTIONS\r\n\r\n",
                 "an answer to no login")):
            client.error = None
            self.assertFalse(client.answer(answer))
            self.assertTrue(client.error.startswith(error), client.error)
        # A 503 is not expected while the server does not shed.
        client.error = None
        self.assertFalse(client.answer(
            b"SIP/2.0 503 Service Unavailable\r\nCall-ID: 4-warmup\r\n"
            b"CSeq: 2 REGISTER\r\n\r\n"))
        self.assertTrue(client.error.startswith(
            "unexpected answer b'SIP/2.0 503"), client.error)
        self.assertEqual(client.done, 0)
        self.assertTrue(client.answer(
            b"SIP/2.0 200 OK\r\nCall-ID: 4-warmup\r\n"
            b"CSeq: 2 REGISTER\r\n\r\n"))
        self.assertEqual(client.done, 1)

    def test_refreshes(self):
        """
        Four users in ten keep their Call-ID from one login to the next,
        the CSeq rising, as a refreshing client does; the others start
        each login with a fresh Call-ID.
        """
        client = warmup._Client(reactor, "home", "example.com",
                                ("127.0.0.1", 9), 1, "pw")
        self.addCleanup(client.socket.close)
        self.assertEqual([warmup._refreshing(n) for n in range(10)],
                         [False] * 5 + [True] * 4 + [False])
        self.assertEqual((client.callId(5), client.callId(35)),
                         ("5-warmup", "5-warmup"))
        self.assertEqual((client.firstCSeq(5), client.firstCSeq(35),
                          client.firstCSeq(65)), (1, 3, 5))
        self.assertEqual((client.callId(4), client.callId(34)),
                         ("4-warmup", "34-warmup"))
        self.assertEqual((client.firstCSeq(4), client.firstCSeq(34)), (1, 1))

    def test_noAnswer(self):
        """
        A warm-up whose server answers nothing stops after 2 s, saying so.
        """
        # Every REGISTER is cut short by the largest message read, and
        # dropped.
        result = warmup.warmUp(
            parse("--role=distributor", "--max-message-size=200"), reactor,
            100)
        self.assertEqual((result.logins, result.error),
                         (0, "no answer for 2 s"))
        self.assertEqual(self.scratch.listdir(), [])

    def test_nothingToWarm(self):
        """
        An edge (no store, no logins) and a reactor other than epoll, poll
        or select get no warm-up.
        """
        self.assertIsNone(warmup.warmUp(parse("--role=edge"), reactor, 10))
        self.assertIsNone(warmup.warmUp(parse("--role=home", "--name=h"),
                                        MemoryReactorClock(), 10))
        self.assertIsNone(warmup.warmUp(parse("--role=home", "--name=h"),
                                        reactor, 0))


class WarmUpOptionTests(SynchronousTestCase):
    """
    C{--warmup} and what L{tap.makeService} does with it.
    """

    def setUp(self):
        self.events = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver,
                        self.events.append)

    def warmUpLines(self):
        return [e for e in self.events
                if "warm-up" in e.get("log_format", "") and "seconds" in e]

    def test_parse(self):
        """
        C{--warmup} is a number of logins, or C{auto}: PyPy's default, none
        on CPython.
        """
        self.assertEqual(parse("--name=h", "--warmup=5")["warmup"], 5)
        self.assertEqual(parse("--name=h")["warmup"], "auto")
        self.assertEqual(
            tap._autoWarmup(),
            tap._WARMUP_PYPY if sys.implementation.name == "pypy" else 0)
        self.assertRaises(tap.usage.UsageError, parse, "--name=h",
                          "--warmup=-1")
        self.assertRaises(tap.usage.UsageError, parse, "--name=h",
                          "--warmup=many")

    def test_logged(self):
        """
        A server built with C{--warmup N} warms up before it listens and
        logs one line saying how many logins took how long.
        """
        config = parse("--role=distributor",
                       "--listen=udp:0:interface=127.0.0.1", "--warmup=40")
        service = tap.makeService(config, reactor, FakeRlimit(65536, 65536))
        # When it starts (under twistd, once the logging is set up).
        self.assertEqual(self.warmUpLines(), [])
        service.startService()
        self.addCleanup(service.stopService)
        [event] = self.warmUpLines()
        self.assertEqual(event["logins"], 40)
        self.assertEqual(event["log_level"].name, "info")

    def test_stoppedLogged(self):
        """
        A warm-up that stops early is a warning naming the reason; the
        server is built all the same.
        """
        config = parse("--role=distributor",
                       "--listen=udp:0:interface=127.0.0.1", "--warmup=40",
                       "--max-message-size=200")
        service = tap.makeService(config, reactor, FakeRlimit(65536, 65536))
        service.startService()
        self.addCleanup(service.stopService)
        self.assertTrue(service.running)
        [event] = self.warmUpLines()
        self.assertEqual(event["log_level"].name, "warn")
        self.assertEqual(event["error"], "no answer for 2 s")

    def test_nothingLogged(self):
        """
        A server the warm-up does not apply to (an edge) logs nothing of
        it.
        """
        service = tap.makeService(
            parse("--role=edge", "--listen=udp:0:interface=127.0.0.1",
                  "--next-hop=sip:127.0.0.1:9", "--warmup=40"),
            reactor, FakeRlimit(65536, 65536))
        service.startService()
        self.addCleanup(service.stopService)
        self.assertEqual([e for e in self.events
                          if "warm-up" in e.get("log_format", "")], [])

    def test_autoOutsideTwistd(self):
        """
        C{auto} warms up a server run by twistd only, not one built in a
        process doing other work (a test, a tool).
        """
        # auto's count as on PyPy, whatever runs the test (CPython's is 0,
        # under which nothing would be warmed either way).
        self.patch(tap, "_autoWarmup", lambda: 40)
        # Options with a parent (twistd's) also install the SIGHUP reload.
        self.addCleanup(signal.signal, signal.SIGHUP,
                        signal.getsignal(signal.SIGHUP))
        for parent, lines in ((None, 0), ({"nodaemon": True}, 1)):
            config = parse("--role=distributor",
                           "--listen=udp:0:interface=127.0.0.1")
            config.parent = parent
            service = tap.makeService(config, reactor,
                                      FakeRlimit(65536, 65536))
            service.startService()
            self.addCleanup(service.stopService)
            self.assertEqual(len(self.warmUpLines()), lines, parent)
