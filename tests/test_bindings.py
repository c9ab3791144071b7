"""
Tests for L{sipdist.services.bindings}: the registrar's bindings written
behind to a journal file and read back on start.
"""

import json
import os
import signal

from twisted.internet.task import Clock
from twisted.logger import Logger
from twisted.trial.unittest import SynchronousTestCase

from sipdist.services.bindings import BindingsJournal
from sipdist.services.registrar import Registrar
from sipdist.sip.message import parseMessage
from tests.test_roles import registerBytes
from tests.test_startup import waitForLog


class FakeFlow:
    """
    A flow as the transport layer makes them: a transport name, a token.
    """

    def __init__(self, transport, token=None):
        self.transport = transport
        self.token = token


def register(registrar, user="alice", cseq=1, callID=None, expires=None,
             contact=None, flow=None, extra=()):
    request = parseMessage(registerBytes(
        user=user, contact=contact, cseq=cseq, callID=callID or f"c-{user}",
        expires=expires, extra=extra))
    return registrar.register(f"sip:{user}@example.com", request,
                              flow=flow or FakeFlow("UDP", "u0-192.0.2.1-5060"))


class JournalTests(SynchronousTestCase):

    def setUp(self):
        self.clock = Clock()
        self.clock.advance(1000)
        self.path = self.mktemp()
        self.registrars = []

    def tearDown(self):
        for registrar in self.registrars:
            registrar.stop()

    def home(self, **kw):
        """
        A registrar with a journal on C{self.path}, started as a home
        starts: the file read back first.
        """
        journal = BindingsJournal(self.clock, self.path, **kw)
        registrar = Registrar(self.clock, journal=journal)
        registrar.restore(journal.load(
            flowByToken=lambda token: ("restored", token)))
        self.registrars.append(registrar)
        return registrar, journal

    def lines(self):
        with open(self.path, encoding="utf-8") as f:
            return f.read().splitlines()

    def test_writesBatchedOnTheTimer(self):
        """
        A REGISTER writes nothing at once; the flush timer writes one line
        per user changed since the last flush, however often it changed.
        """
        registrar, journal = self.home(flushInterval=1.0)
        for cseq in range(1, 6):
            register(registrar, cseq=cseq)
        register(registrar, user="bob")
        self.assertEqual(self.lines(), [])
        self.clock.advance(0.5)
        self.assertEqual(self.lines(), [])
        self.clock.advance(0.5)
        records = [json.loads(line) for line in self.lines()]
        self.assertEqual(sorted(r["aor"] for r in records),
                         ["sip:alice@example.com", "sip:bob@example.com"])
        [alice] = [r for r in records if r["aor"].startswith("sip:alice")]
        self.assertEqual(alice["bindings"][0]["cseq"], 5)
        self.assertEqual(journal.flushes, 1)
        # Nothing changed: no write, no timer.
        self.clock.advance(10)
        self.assertEqual(journal.flushes, 1)
        self.assertIsNone(journal._call)

    def test_restart(self):
        """
        A new home on the same file has the bindings: contact, expiry
        (absolute), q, Call-ID, CSeq, Path, instance and reg-id, and the
        UDP flow found again by its token.
        """
        registrar, journal = self.home()
        contact = ('<sip:alice@192.0.2.1:5060>;q=0.5;reg-id=1;'
                   '+sip.instance="<urn:uuid:0001>"')
        [before] = register(
            registrar, cseq=7, contact=contact, expires=600,
            extra=("Path: <sip:edge.example.com;lr>",))
        registrar.stop()
        self.clock.advance(100)
        registrar, journal = self.home()
        [after] = registrar.lookup("sip:alice@example.com")
        self.assertEqual(after.contact, before.contact)
        self.assertEqual(after.uri, before.uri)
        self.assertEqual(after.expires, before.expires)
        self.assertEqual(after.remaining(self.clock.seconds()), 500)
        self.assertEqual((after.q, after.callID, after.cseq),
                         (0.5, "c-alice", 7))
        self.assertEqual(after.path, ["<sip:edge.example.com;lr>"])
        self.assertEqual((after.instance, after.regId),
                         ('"<urn:uuid:0001>"', "1"))
        self.assertEqual(after.flow, ("restored", "u0-192.0.2.1-5060"))
        # A refresh with the same Call-ID and an old CSeq is still out of
        # order after the restart.
        from sipdist.services.registrar import RegistrarError
        self.assertRaises(RegistrarError, register, registrar, cseq=7,
                          contact=contact)

    def test_expiredNotRestored(self):
        """
        Bindings that expired while the home was down are not restored.
        """
        registrar, journal = self.home()
        register(registrar, expires=120)
        register(registrar, user="bob", expires=3600)
        registrar.stop()
        self.clock.advance(121)
        registrar, journal = self.home()
        self.assertEqual(registrar.lookup("sip:alice@example.com"), [])
        self.assertEqual(len(registrar.lookup("sip:bob@example.com")), 1)
        self.assertEqual(len(self.lines()), 1)

    def test_removalWritten(self):
        """
        An unregistration is written too: the user is not restored.
        """
        registrar, journal = self.home()
        register(registrar)
        self.clock.advance(1)
        register(registrar, cseq=2, expires=0)
        registrar.stop()
        registrar, journal = self.home()
        self.assertEqual(registrar.lookup("sip:alice@example.com"), [])

    def test_streamFlows(self):
        """
        A binding whose REGISTER came over TCP or TLS is restored when it
        has a Path or a UDP Contact, and dropped otherwise.
        """
        registrar, journal = self.home()
        register(registrar, user="pathed", flow=FakeFlow("TCP", "cX"),
                 extra=("Path: <sip:edge.example.com;lr>",))
        register(registrar, user="udp", flow=FakeFlow("TLS", "cY"))
        register(registrar, user="tcp", flow=FakeFlow("TCP", "cZ"),
                 contact="<sip:tcp@192.0.2.1:5060;transport=tcp>")
        register(registrar, user="sips", flow=FakeFlow("TLS", "cW"),
                 contact="<sips:sips@192.0.2.1:5061>")
        registrar.stop()
        registrar, journal = self.home()
        [pathed] = registrar.lookup("sip:pathed@example.com")
        self.assertIsNone(pathed.flow)
        [udp] = registrar.lookup("sip:udp@example.com")
        self.assertIsNone(udp.flow)
        self.assertEqual(registrar.lookup("sip:tcp@example.com"), [])
        self.assertEqual(registrar.lookup("sip:sips@example.com"), [])

    def test_compaction(self):
        """
        The file never holds more than the ratio times the live users'
        lines (or the minimum): it is rewritten with one line each.
        """
        registrar, journal = self.home(compactRatio=2, minCompact=10)
        for cseq in range(1, 40):
            register(registrar, cseq=cseq)
            register(registrar, user="bob", cseq=cseq)
            self.clock.advance(1)
            self.assertLessEqual(len(self.lines()), 10)
        self.assertGreater(journal.compactions, 0)
        registrar.stop()
        registrar, journal = self.home()
        self.assertEqual(registrar.lookup("sip:alice@example.com")[0].cseq,
                         39)
        self.assertEqual(len(self.lines()), 2)

    def test_flushInSlices(self):
        """
        A flush writes at most C{chunk} lines; the rest follow at the
        reactor's next turns, not at the next interval.
        """
        registrar, journal = self.home(chunk=3)
        for n in range(7):
            register(registrar, user=f"u{n}")
        self.clock.advance(1)
        self.assertEqual(len(self.lines()), 7)
        self.assertEqual(journal.flushes, 3)

    def test_changesDuringCompaction(self):
        """
        Users registering, refreshing and leaving while a compaction is
        under way are all found as they are when the home restarts.
        """
        registrar, journal = self.home(chunk=2, compactRatio=1,
                                       minCompact=0)
        for n in range(6):
            register(registrar, user=f"u{n}", cseq=1)
        self.clock.advance(1)
        self.assertIsNone(journal._compaction)
        # 6 lines > 1 * 6 users is not past the bound; one more is.
        register(registrar, user="u0", cseq=2)
        journal.flush()
        self.assertIsNotNone(journal._compaction)
        register(registrar, user="u1", cseq=3)
        register(registrar, user="u2", cseq=2, expires=0)
        register(registrar, user="new")
        # One slice of the compaction, then more changes.
        journal._compactCall.cancel()
        journal._compactStep()
        self.assertIsNotNone(journal._compaction)
        register(registrar, user="u5", cseq=4)
        self.clock.advance(1)
        self.assertIsNone(journal._compaction)
        self.assertGreaterEqual(journal.compactions, 1)
        registrar.stop()
        registrar, journal = self.home()
        found = {aor.split("@")[0][4:]: registrar.lookup(aor)[0].cseq
                 for aor in registrar.aors()}
        self.assertEqual(found, {"u0": 2, "u1": 3, "u3": 1, "u4": 1,
                                 "u5": 4, "new": 1})

    def test_corruptTail(self):
        """
        A file cut short, or with a damaged line, is read up to the damage
        (one log line), never a crash; the damage is dropped.
        """
        registrar, journal = self.home()
        register(registrar)
        register(registrar, user="bob")
        registrar.stop()
        with open(self.path, "rb") as f:
            good = f.read()
        cut = b'{"aor": "sip:carol@example.com", "bind'
        for damaged in (good + cut, good + cut + good.splitlines(True)[0],
                        good + b"\xff\xfe not json\n" + good,
                        good + b"[1, 2]\n", good + b"x" * 300000 + b"\n",
                        good + b'{"aor": 1, "bindings": []}\n'):
            with open(self.path, "wb") as f:
                f.write(damaged)
            logged = []
            self.patch(BindingsJournal, "_log", Logger(observer=logged.append))
            registrar, journal = self.home()
            self.assertEqual(len(registrar.lookup("sip:bob@example.com")), 1)
            self.assertEqual(
                sum("damaged" in e.get("log_format", "") for e in logged), 1)
            self.assertEqual(len(self.lines()), 2)
            registrar.stop()

    def test_badRecordDropped(self):
        """
        A well-formed line whose binding cannot be used (a Contact that
        does not parse) drops that binding only.
        """
        with open(self.path, "w") as f:
            f.write(json.dumps({"aor": "sip:x@example.com", "bindings": [
                {"contact": "<nonsense", "expires": 5000},
                {"contact": "<sip:x@192.0.2.9>", "expires": 5000,
                 "q": "high"},
                {"contact": "<sip:x@192.0.2.8>", "expires": 5000}]}) + "\n")
        registrar, journal = self.home()
        [binding] = registrar.lookup("sip:x@example.com")
        self.assertEqual(binding.contact, "<sip:x@192.0.2.8>")

    def test_noFile(self):
        """
        No file yet: nothing restored; the start makes it, empty, and
        its directory.
        """
        self.path = os.path.join(self.mktemp(), "run", "bindings")
        registrar, journal = self.home()
        self.assertEqual(registrar.count, 0)
        self.assertEqual(self.lines(), [])
        register(registrar)
        self.clock.advance(1)
        self.assertEqual(len(self.lines()), 1)

    def test_unwritable(self):
        """
        A file that cannot be written is logged, not raised: the
        registrar goes on in memory.
        """
        with open(self.path, "w"):
            pass
        # A directory that is a file: even root cannot write under it.
        journal = BindingsJournal(self.clock, os.path.join(self.path, "no",
                                                           "file"))
        registrar = Registrar(self.clock, journal=journal)
        self.registrars.append(registrar)
        register(registrar)
        self.clock.advance(1)
        self.assertEqual(journal.writeErrors, 1)
        self.assertEqual(len(registrar.lookup("sip:alice@example.com")), 1)
        self.flushLoggedErrors()


class RawUser:
    """
    A user agent on a loopback UDP socket, in a few lines: sends requests
    to the home, answers a digest challenge, answers a request with 200.
    """

    def __init__(self, test, user, password, home):
        import socket

        self.user = user
        self.password = password
        self.home = home
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.settimeout(10.0)
        self.sock.bind(("127.0.0.1", 0))
        test.addCleanup(self.sock.close)
        self.port = self.sock.getsockname()[1]
        self.cseq = 0

    @property
    def aor(self):
        return f"sip:{self.user}@example.com"

    def send(self, method, uri, extra=(), authorization=None):
        import time

        self.cseq += 1
        to = self.aor if method == "REGISTER" else uri
        lines = [f"{method} {uri} SIP/2.0",
                 f"Via: SIP/2.0/UDP 127.0.0.1:{self.port};rport;"
                 f"branch=z9hG4bK{time.time_ns()}",
                 "Max-Forwards: 70",
                 f"From: <{self.aor}>;tag=t{self.port}",
                 f"To: <{to}>",
                 f"Call-ID: {method}-{self.port}@127.0.0.1",
                 f"CSeq: {self.cseq} {method}"] + list(extra)
        if authorization is not None:
            lines.append(authorization)
        lines.append("Content-Length: 0")
        self.sock.sendto(("\r\n".join(lines) + "\r\n\r\n").encode(),
                         ("127.0.0.1", self.home))

    def receive(self):
        data, address = self.sock.recvfrom(65535)
        return parseMessage(data), address

    def final(self):
        while True:
            message, _ = self.receive()
            if message.code >= 200:
                return message

    def authorization(self, response, method, uri):
        """
        The header answering the digest challenge of C{response}.
        """
        from sipdist.auth.digest import (
            algorithm, computeHA1, computeResponse, parseDigest)

        name = ("www-authenticate" if response.code == 401
                else "proxy-authenticate")
        challenge = parseDigest(response.headers[name][0])
        alg = algorithm(challenge.get("algorithm"))
        ha1 = computeHA1(alg, self.user, challenge["realm"], self.password)
        digest = computeResponse(alg, ha1, challenge["nonce"], "00000001",
                                 "c0ffee", method, uri)
        header = "Authorization" if response.code == 401 \
            else "Proxy-Authorization"
        return (f'{header}: Digest username="{self.user}", '
                f'realm="{challenge["realm"]}", '
                f'nonce="{challenge["nonce"]}", uri="{uri}", '
                f'response="{digest}", algorithm={alg.name}, qop=auth, '
                f'nc=00000001, cnonce="c0ffee"')

    def request(self, method, uri, extra=()):
        self.send(method, uri, extra)
        response = self.final()
        if response.code not in (401, 407):
            return response
        self.send(method, uri, extra,
                  self.authorization(response, method, uri))
        return self.final()

    def answer(self, request, address):
        """
        Answer C{request} (from C{address}) with a C{200}.
        """
        lines = ["SIP/2.0 200 OK"] + [
            f"Via: {v}" for v in request.headers["via"]] + [
            f"{name}: {request.headers[name.lower()][0]}"
            for name in ("From", "To", "Call-ID", "CSeq")] + [
            "Content-Length: 0"]
        self.sock.sendto(("\r\n".join(lines) + "\r\n\r\n").encode(),
                         address)


class RestartProcessTests(SynchronousTestCase):
    """
    A real C{twistd sipdist} home with a bindings file, stopped or killed
    and started again: a user registered before is reached without
    registering again.
    """

    def startHome(self, port, log, *extra):
        from tests.test_startup import spawnTwistd

        process = spawnTwistd(
            self, "--logfile", log, "sipdist", "--role=home",
            "--name=home1", "--domain=example.com",
            f"--listen=udp:{port}:interface=127.0.0.1",
            f"--store=file:{self.store}", f"--secret-file={self.secret}",
            "--credentials=memory:alice:pa,bob:pb",
            f"--bindings-file={self.bindings}", *extra)
        waitForLog(self, log, "listening on")
        return process

    def restart(self, signalNumber, *extra, flushed=True):
        from tests.test_startup import freeUDPPort

        base = os.path.abspath(self.mktemp())
        os.makedirs(base)
        self.bindings = os.path.join(base, "bindings")
        self.store = os.path.join(base, "assignments.conf")
        self.secret = os.path.join(base, "secret")
        with open(self.secret, "w") as f:
            f.write("restart-test-secret-0123456789abcdef\n")
        port = freeUDPPort()
        with open(self.store, "w") as f:
            f.write(f"server home1 sip:127.0.0.1:{port}\n"
                    "user alice@example.com home1\n"
                    "user bob@example.com home1\n")
        home = self.startHome(port, os.path.join(base, "log1"), *extra)
        alice = RawUser(self, "alice", "pa", port)
        response = alice.request(
            "REGISTER", "sip:example.com",
            [f"Contact: <sip:alice@127.0.0.1:{alice.port}>",
             "Expires: 600"])
        self.assertEqual(response.code, 200)
        if signalNumber == signal.SIGKILL and flushed:
            # What a flush wrote survives a kill.
            waitForLog(self, self.bindings, "alice@example.com")
        home.send_signal(signalNumber)
        home.wait(timeout=20)
        log = os.path.join(base, "log2")
        self.startHome(port, log, *extra)
        if not flushed:
            waitForLog(self, log, "restored 0 bindings of 0 users")
            bob = RawUser(self, "bob", "pb", port)
            response = bob.request("MESSAGE", alice.aor)
            self.assertEqual(response.code, 480)
            return
        waitForLog(self, log, "restored 1 bindings of 1 users")

        # Bob's MESSAGE is challenged; its answer goes on to alice's
        # binding from before the restart.
        bob = RawUser(self, "bob", "pb", port)
        bob.send("MESSAGE", alice.aor)
        challenge = bob.final()
        self.assertEqual(challenge.code, 407)
        bob.send("MESSAGE", alice.aor, (),
                 bob.authorization(challenge, "MESSAGE", alice.aor))
        message, address = alice.receive()
        self.assertEqual(message.method, "MESSAGE")
        alice.answer(message, address)
        self.assertEqual(bob.final().code, 200)

    def test_sigterm(self):
        """
        A home stopped with SIGTERM writes its bindings on the way out,
        even within the flush interval.
        """
        self.restart(signal.SIGTERM, "--bindings-flush-interval=60")

    def test_sigkill(self):
        """
        A home killed with SIGKILL keeps what its last flush wrote.
        """
        self.restart(signal.SIGKILL)

    def test_sigkillBeforeFlush(self):
        """
        What changed after the last flush is lost to a kill: with a flush
        interval of a minute, a REGISTER answered just before is not
        restored, and the user is unreachable until it registers again.
        """
        self.restart(signal.SIGKILL, "--bindings-flush-interval=60",
                     flushed=False)


class OptionTests(SynchronousTestCase):
    """
    C{--bindings-file} and C{bindings_file}.
    """

    def test_defaultMemoryOnly(self):
        """
        Without the option a home keeps its bindings in memory only.
        """
        from twisted.internet.testing import MemoryReactorClock
        from sipdist.tap import makeService
        from tests.test_startup import parse

        options = parse("--name=h", "--listen=udp:0:interface=127.0.0.1",
                        "--credentials=memory:a:b")
        self.assertIsNone(options["bindings-file"])
        self.assertEqual(options["bindings-flush-interval"], 1.0)
        [server] = list(makeService(options, MemoryReactorClock()))
        self.assertIsNone(server.registrar.journal)

    def test_fileRelativeToConfig(self):
        """
        In the TOML file the path is relative to the file; the home's
        registrar writes there at the given interval.
        """
        from twisted.internet.testing import MemoryReactorClock
        from sipdist.tap import makeService
        from tests.test_startup import parse

        base = os.path.abspath(self.mktemp())
        os.makedirs(base)
        config = os.path.join(base, "home.toml")
        with open(config, "w") as f:
            f.write('name = "h"\nlisten = "udp:0:interface=127.0.0.1"\n'
                    'credentials = "memory:a:b"\n'
                    'bindings_file = "run/h.bindings"\n'
                    'bindings_flush_interval = 2.5\n')
        options = parse("--config", config)
        self.assertEqual(options["bindings-file"],
                         os.path.join(base, "run", "h.bindings"))
        [server] = list(makeService(options, MemoryReactorClock()))
        journal = server.registrar.journal
        self.assertEqual(journal.path, os.path.join(base, "run", "h.bindings"))
        self.assertEqual(journal.flushInterval, 2.5)

    def test_shippedConfigs(self):
        """
        The shipped home configurations keep their bindings under etc/run.
        """
        from sipdist.tap import loadConfig
        from tests.test_startup import TOP

        for name in ("home1", "home2"):
            options = loadConfig(TOP.child("etc").child(f"{name}.toml").path)
            self.assertEqual(options["bindings-file"], TOP.child("etc").child(
                "run").child(f"{name}.bindings").path)

