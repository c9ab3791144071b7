"""
Tests for L{sipdist.roles.fastchallenge}: the fast path gives, for every
message of a corpus, the same datagrams and the same side effects as the
full path, and takes the common first REGISTER of a login.
"""

import random
import re

from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import TestCase

from sipdist.auth.digest import MAX_VALUE_LENGTH
from sipdist.roles import fastchallenge
from sipdist.roles.fastchallenge import FastChallenge
from sipdist.server import buildServer
from sipdist.sip import message as _message
from sipdist.sip.transport import SIPDatagramProtocol
from sipdist.store import ServerRecord
from sipdist.store.memory import MemoryAssignmentStore
from sipdist.tap import Options

from tests.conformance.messages import CORPUS

CLIENT = ("192.0.2.7", 5060)


class _UDP:
    """
    A UDP port that records what is written to it.  Answers written with
    C{writeSoon} are written at once, or, once L{wakeUps} has been called,
    when the datagram being handled has been (as the real port does at the
    end of a wake-up).
    """

    def __init__(self):
        self.sent = []
        self.fail = False
        self.waiting = None

    def write(self, data, addr):
        if self.fail:
            raise OSError("no route")
        self.sent.append((data, addr))

    def writeSoon(self, data, addr, failed, context):
        if self.waiting is None:
            self.write(data, addr)
        else:
            self.waiting.append((data, addr, failed, context))

    def endWakeUp(self):
        """
        Write what waits; report what cannot be written to its C{failed}.
        """
        waiting, self.waiting = self.waiting, []
        for data, addr, failed, context in waiting:
            try:
                self.write(data, addr)
            except OSError as e:
                failed(context, e)

    def getHost(self):
        return IPv4Address("UDP", "127.0.0.1", 5060)


def wakeUps(service, udp):
    """
    Make each datagram the protocol of C{udp} receives a wake-up of its
    own, whose answers written with C{writeSoon} wait for its end.  No
    capture (a captured answer is sent at once).
    """
    service.transport.capture = None
    protocol = udp.protocol
    received = protocol.datagramReceived

    def wakeUp(data, addr):
        received(data, addr)
        udp.endWakeUp()
    udp.waiting = []
    protocol.datagramReceived = wakeUp


def _server(role="distributor", fast=True, extra=None):
    clock = Clock()
    clock.advance(1000)
    store = MemoryAssignmentStore()
    store.addServer(ServerRecord("home1", "sip:127.0.0.1:5070"))
    store.assignUser("alice@example.com", "home1")
    config = {"role": role, "name": "home1" if role == "home" else role,
              "domain": "example.com", "listen": [],
              "credentials": "memory:alice:wonderland",
              "secret": "fast-path-secret-0123456789",
              "digest-algorithms": ["MD5"], "fast-path": fast,
              "tls-client-options": lambda hostname: None}
    config.update(extra or {})
    service = buildServer(config, clock, store=store)
    protocol = SIPDatagramProtocol(service.transport, 0)
    udp = _UDP()
    protocol.makeConnection(udp)
    udp.protocol = protocol
    # The same random bytes on both paths: the nonce's (injected into its
    # factory) and the To tag's (sipdist.sip.message._randomBytes, patched by the caller).
    counter = [0]

    def random(n):
        counter[0] += 1
        return bytes([counter[0] % 256]) * n

    if getattr(service, "authenticator", None) is not None:
        service.authenticator._nonces._random = random
    service._random = random
    service.captured = []
    service.transport.capture = (
        lambda *args: service.captured.append(args))
    return service, protocol, udp, clock


def _effects(service, udp):
    """
    What a request left behind: the datagrams sent, the transaction table,
    the counters.
    """
    layer = service.transactions
    transport = service.transport
    table = sorted(
        (key, type(entry).__name__, getattr(entry, "data", None),
         tuple(entry.flow.remote), entry.state)
        for key, entry in layer._servers.items())
    return {
        "sent": list(udp.sent),
        "captured": list(service.captured),
        "table": table,
        "answered": dict(layer.answered),
        "created": layer.serverCreated,
        "createdPerSecond": layer.createdPerSecond(),
        "absorbed": layer.absorbed,
        "transportErrors": layer.transportErrors,
        "rejected": layer.rejected,
        "outcomes": dict(service.authenticator.outcomes),
        "dropped": transport.dropped,
        "answeredErrors": transport.answeredErrors,
        "timerJ": len(layer._timerJ._queue),
        "unsealed": getattr(getattr(service, "proxy", None), "unsealed",
                            None),
        "admission": _admission(layer.overload),
    }


def _admission(overload):
    """
    What the overload control's token bucket holds and has admitted, and
    whether it still holds an admission for a datagram.
    """
    if overload is None:
        return None
    return (round(overload._tokens, 9), overload._admitted,
            overload.shed, bool(overload._admittedDatagram))


class FastChallengeTests(TestCase):

    def _both(self, data, addr=CLIENT, role="distributor", retransmit=True,
              prepare=None, extra=None):
        """
        Run C{data} (twice, when C{retransmit}) through a server with the
        fast path off and one with it on; check they did the same.

        @return: whether the fast path took it.
        """
        results = []
        for fast in (False, True):
            service, protocol, udp, clock = _server(role, fast, extra)
            events = []
            globalLogPublisher.addObserver(events.append)
            self.addCleanup(globalLogPublisher.removeObserver, events.append)
            if prepare is not None:
                prepare(service, udp)
            self.patch(_message, "_randomBytes", service._random)
            protocol.datagramReceived(data, addr)
            if retransmit:
                clock.advance(0.5)
                protocol.datagramReceived(data, addr)
            effects = _effects(service, udp)
            globalLogPublisher.removeObserver(events.append)
            effects["logged"] = [
                (e.get("log_namespace"), e.get("log_format")) for e in events]
            clock.advance(64 * 0.5 + 1)
            effects["afterTimerJ"] = _effects(service, udp)["table"]
            fastPath = service.transport.fastPath
            taken = fastPath is not None and fastPath.taken > 0
            results.append((effects, taken))
            if not fast:
                self.assertFalse(taken)
        self.assertEqual(results[0][0], results[1][0])
        return results[1][1]

    def test_corpus(self):
        """
        Every message of the conformance corpus gets the same answer and
        leaves the same state on both paths.  The corpus holds messages
        that are hard to parse or wrong: the fast path takes none of them
        but one plain REGISTER, whose Contact has a URI parameter and an
        C{expires} (the other plain REGISTERs it takes are in
        L{_variants}).
        """
        taken = []
        for case in CORPUS:
            for role in ("distributor", "home"):
                if self._both(case.data, role=role):
                    taken.append((case.name, role))
        self.assertEqual(taken, [("cparam02", "distributor"),
                                 ("cparam02", "home")])

    def test_variants(self):
        """
        REGISTER written in many ways: the plain ones are taken by the fast
        path, anything unusual is left to the full path, and both answer
        the same.
        """
        for name, data, addr, expected in _variants():
            with self.subTest(name):
                for role in ("distributor", "home"):
                    self.assertEqual(self._both(data, addr, role), expected,
                                     f"{name} ({role})")

    def _warmLines(self):
        """
        The lines a distributor's fast path remembers after scanning every
        variant and every message of the corpus.
        """
        service, protocol, udp, clock = _server()
        for name, data, addr, expected in _variants():
            protocol.datagramReceived(data, addr)
        for case in CORPUS:
            protocol.datagramReceived(case.data, CLIENT)
        known = dict(service.transport.fastPath._known)
        self.assertIn(b"Max-Forwards: 70", known)
        self.assertIn(b"CSeq: 1826 REGISTER", known)
        return known

    def test_variantsRemembered(self):
        """
        A fast path that remembers the good lines of every variant (the
        patterns not matched again for them) takes and answers each variant
        as a fresh one does, the same as the full path.
        """
        known = self._warmLines()

        def warm(service, udp):
            fastPath = service.transport.fastPath
            if fastPath is not None:
                fastPath._known.update(known)
        for name, data, addr, expected in _variants():
            with self.subTest(name):
                for role in ("distributor", "home"):
                    self.assertEqual(
                        self._both(data, addr, role, prepare=warm),
                        expected, f"{name} ({role})")

    def test_rememberedRepeated(self):
        """
        A remembered line given twice is still a repeated header, which
        the fast path leaves to the full path.
        """
        def warm(service, udp):
            fastPath = service.transport.fastPath
            if fastPath is not None:
                fastPath._known[b"Expires: 7200"] = b"Expires"
        self.assertFalse(self._both(_register(extra=["Expires: 7200"]),
                                    prepare=warm))

    def test_rememberedBounded(self):
        """
        The fast path remembers at most C{MAX_KNOWN_LINES} lines (the table
        is emptied when full), only of the headers a client repeats
        unchanged.
        """
        self.patch(fastchallenge, "MAX_KNOWN_LINES", 3)
        service, protocol, udp, clock = _server()
        fastPath = service.transport.fastPath
        for i in range(10):
            protocol.datagramReceived(
                _register(headers=[
                    "Via: SIP/2.0/UDP 192.0.2.7:5060;branch=z9hG4bK776"
                    f"as{i}",
                    "From: <sip:alice@example.com>;tag=456248",
                    "To: <sip:alice@example.com>",
                    f"Call-ID: 843817637684230@998sd{i}",
                    "CSeq: 1826 REGISTER",
                    f"User-Agent: agent/{i}",
                    "Expires: 7200"]), CLIENT)
            self.assertLessEqual(len(fastPath._known), 3)
        self.assertEqual(fastPath.taken, 10)
        self.assertTrue(set(fastPath._known.values()) <= {
            b"To", b"CSeq", b"User-Agent", b"Expires", b"Content-Length"})

    def test_rememberedShort(self):
        """
        A line longer than C{MAX_KNOWN_LENGTH} is matched every time, never
        remembered.
        """
        service, protocol, udp, clock = _server()
        fastPath = service.transport.fastPath
        contact = ("Contact: <sip:alice@192.0.2.7:5060;x="
                   + "a" * fastchallenge.MAX_KNOWN_LENGTH + ">")
        protocol.datagramReceived(
            _register(extra=[contact], drop=("Contact",)), CLIENT)
        self.assertEqual(fastPath.taken, 1)
        self.assertIn(b"Expires: 7200", fastPath._known)
        self.assertNotIn(contact.encode("ascii"), fastPath._known)

    def test_jsonLog(self):
        """
        With C{--log-format=json} (each decision logged), a challenge logs
        what the full path logs (no decision event: a challenge is not a
        decision).
        """
        self.assertTrue(self._both(_register(),
                                   extra={"log-format": "json"}))

    def test_retransmission(self):
        """
        A REGISTER without credentials is challenged statelessly (RFC 3261
        section 8.2.7), on both paths: nothing is kept, and its
        retransmission is a new request, challenged again with a fresh
        nonce (by the fast path, when it is on).
        """
        for fast in (False, True):
            service, protocol, udp, clock = _server(fast=fast)
            data = _register()
            protocol.datagramReceived(data, CLIENT)
            layer = service.transactions
            self.assertEqual((layer.active, dict(layer._servers)), (0, {}))
            protocol.datagramReceived(data, CLIENT)
            if fast:
                self.assertEqual(service.transport.fastPath.taken, 2)
            self.assertEqual(layer.absorbed, 0)
            self.assertEqual(layer.serverCreated, 2)
            self.assertEqual([d[:12] for d, addr in udp.sent],
                             [b"SIP/2.0 401 "] * 2)
            nonces = [re.search(rb'nonce="([^"]+)"', d).group(1)
                      for d, addr in udp.sent]
            self.assertNotEqual(nonces[0], nonces[1])
            self.assertEqual(layer.active, 0)

    def test_failedCredentialsKept(self):
        """
        A 401 to credentials that failed (a wrong password) is not
        stateless: the transaction keeps it until timer J, so that a
        retransmission of the request gets the same answer and is not
        counted as a second failure, on both paths.
        """
        from tests.test_fastredirect import request
        data = request(password="not-this-one")
        for fast in (False, True):
            service, protocol, udp, clock = _server(fast=fast)
            self.patch(_message, "_randomBytes", service._random)
            protocol.datagramReceived(data, CLIENT)
            protocol.datagramReceived(data, CLIENT)
            layer = service.transactions
            self.assertEqual(layer.absorbed, 1)
            self.assertEqual(len(udp.sent), 2)
            self.assertEqual(udp.sent[0], udp.sent[1])
            self.assertTrue(udp.sent[0][0].startswith(b"SIP/2.0 401 "))
            self.assertEqual(service.authenticator.outcomes["failed"], 1)
            self.assertEqual(layer.active, 1)
            clock.advance(64 * 0.5 + 1)
            self.assertEqual(layer.active, 0)

    def test_overloaded(self):
        """
        While the overload control sheds, a request it does not admit is
        shed alike on both paths: the fast path does not take it.
        """
        def shed(service, udp):
            service.transactions.overload.limit(1.0)
            self.assertTrue(service.transactions.overload.shedding)
        self.assertFalse(self._both(_register(), prepare=shed))

    def test_overloadedAdmitted(self):
        """
        While the overload control sheds, a request it reads and admits
        takes the fast path, with the same result as on the full path:
        a server near its limit keeps the cheaper path for what it serves.
        """
        def admitting(service, udp):
            overload = service.transactions.overload
            overload.limit(100.0)
            overload._tokens = 5.0
        self.assertTrue(self._both(_register(), prepare=admitting))

    def test_overloadedAdmissionUsed(self):
        """
        The admission of a request the fast path answered is used: the
        next request, the bucket then empty, is shed by both paths alike,
        the first answered by the fast path.
        """
        other = _register(
            via="SIP/2.0/UDP 192.0.2.7:5060;branch=z9hG4bKother")

        results = []
        for fast in (False, True):
            service, protocol, udp, clock = _server(fast=fast)
            self.patch(_message, "_randomBytes", service._random)
            overload = service.transactions.overload
            overload.limit(0.001)
            overload._tokens = 1.0
            protocol.datagramReceived(_register(), CLIENT)
            # Used, not left for the next request that the byte-level
            # filter does not see (one over TCP).
            self.assertFalse(overload._admittedDatagram)
            protocol.datagramReceived(other, CLIENT)
            results.append(_effects(service, udp))
            self.assertEqual(overload.shed, 1)
            self.assertEqual(
                [data.split(b"\r\n", 1)[0] for data, addr in udp.sent],
                [b"SIP/2.0 401 Unauthorized",
                 b"SIP/2.0 503 Service Unavailable (Overloaded)"])
            fastPath = service.transport.fastPath
            self.assertEqual(0 if fastPath is None else fastPath.taken,
                             int(fast))
        self.assertEqual(results[0], results[1])

    def test_overloadedUnread(self):
        """
        While shedding, a request the overload control cannot read at byte
        level (its 503 would go to the Via's port, not the source's) takes
        the fast path when the bucket has a token for it: then every
        request is admitted unread, its token taken once (not again for
        the OPTIONS retransmission below) as on the full path; a
        REGISTER challenged again is a new request each time (the
        challenge is stateless).  When the bucket has none, the full
        path's admission decides, and sheds it.
        """
        def bucket(tokens):
            def prepare(service, udp):
                overload = service.transactions.overload
                overload.limit(0.001)
                overload._tokens = tokens
            return prepare
        data = _register(via="SIP/2.0/UDP 192.0.2.7:5070;branch=z9hG4bKp")
        self.assertTrue(self._both(data, prepare=None))
        for fast in (False, True):
            service, protocol, udp, clock = _server(fast=fast)
            bucket(5.0)(service, udp)
            for _ in range(2):
                protocol.datagramReceived(data, CLIENT)
            self.assertEqual(_admission(service.transactions.overload),
                             (3.0, 2, 0, False))
        self.assertTrue(self._both(data, prepare=bucket(5.0)))
        self.assertFalse(self._both(data, prepare=bucket(0.0)))

    def test_overloadedUnreadNeverShed(self):
        """
        While shedding, with a token in the bucket, what is never shed (an
        OPTIONS, a request inside a dialog) and a retransmission are let
        through unread without taking it, and leave no admission behind.
        """
        service, protocol, udp, clock = _server()
        overload = service.transactions.overload
        overload.limit(0.001)
        overload._tokens = 3.0
        options = _register(
            via="SIP/2.0/UDP 192.0.2.7:5060;branch=z9hG4bKo").replace(
            b"REGISTER sip:", b"OPTIONS sip:", 1).replace(
            b" REGISTER\r\n", b" OPTIONS\r\n")
        inDialog = _register(
            via="SIP/2.0/UDP 192.0.2.7:5060;branch=z9hG4bKd").replace(
            b"To: <sip:alice@example.com>", b"To: <sip:alice@example.com>;tag=9")
        protocol.datagramReceived(_register(), CLIENT)
        # The OPTIONS again: a retransmission (the challenge left no
        # transaction for the REGISTER's).
        for data in (options, inDialog, options):
            protocol.datagramReceived(data, CLIENT)
        self.assertEqual(service.transactions.absorbed, 1)
        self.assertEqual(_admission(overload), (2.0, 1, 0, False))
        answers = [data.split(b"\r\n", 1)[0] for data, addr in udp.sent]
        self.assertEqual(len(answers), 4)
        self.assertEqual([a for a in answers if b" 503 " in a], [])

    def test_tableFull(self):
        """
        A full transaction table: the full path answers 503.
        """
        def full(service, udp):
            service.transactions.maxTransactions = 0
        self.assertFalse(self._both(_register(), prepare=full))

    def test_tableFullOfRecords(self):
        """
        A table full of records of completed transactions: both paths end
        the oldest to make room, and the fast path answers.
        """
        def full(service, udp):
            layer = service.transactions
            layer.maxTransactions = 1
            self.patch(_message, "_randomBytes", service._random)
            # An OPTIONS leaves its record (a challenge leaves none).
            udp.protocol.datagramReceived(_register(
                via="SIP/2.0/UDP 192.0.2.7:5060;branch=z9hG4bKfirst").replace(
                b"REGISTER sip:", b"OPTIONS sip:", 1).replace(
                b" REGISTER\r\n", b" OPTIONS\r\n"), CLIENT)
            self.assertEqual(layer.active, 1)
        self.assertTrue(self._both(_register(), prepare=full))

    def test_sendFails(self):
        """
        A datagram that cannot be sent counts as a transport error on both
        paths and leaves no transaction.
        """
        def failing(service, udp):
            udp.fail = True
        self.assertTrue(self._both(_register(), retransmit=False,
                                   prepare=failing))

    def test_answerWaits(self):
        """
        A port that sends the answers of a wake-up at its end sends the
        fast path's 401 then, with the same effects as the full path's
        (which it sends at once).
        """
        self.assertTrue(self._both(_register(), prepare=wakeUps))

    def test_capturedAtOnce(self):
        """
        While messages are captured, the fast path's answer is sent at
        once (and captured as sent).
        """
        service, protocol, udp, clock = _server()
        udp.waiting = []
        protocol.datagramReceived(_register(), CLIENT)
        self.assertEqual(len(udp.sent), 1)
        self.assertEqual(len(service.captured), 2)
        self.assertEqual(udp.waiting, [])

    def test_sendFailsLater(self):
        """
        A 401 that the port cannot send at the end of the wake-up counts
        as a transport error and leaves no transaction, as on the full
        path, where sending it failed at once.
        """
        def failing(service, udp):
            wakeUps(service, udp)
            udp.fail = True
        self.assertTrue(self._both(_register(), retransmit=False,
                                   prepare=failing))

    def test_retransmissionWhileWaiting(self):
        """
        A retransmission read in the wake-up of its request, while the
        answer waits, is absorbed: the record is kept meanwhile.  When the
        answer then cannot be sent, the record ends (the retransmission's
        answer did go out) and the failure is reported: the next
        retransmission is a new transaction.  (A home's authenticated
        REGISTER: a challenge and a distributor's signed C{301} keep no
        record.)
        """
        from tests.test_fastregister import request as homeRequest
        service, protocol, udp, clock = _server("home")
        service.transport.capture = None
        layer = service.transactions
        failures = []
        self.patch(layer.user, "transactionFailed",
                   lambda transaction, reason: failures.append(reason))
        udp.waiting = []
        data = homeRequest()
        protocol.datagramReceived(data, CLIENT)
        protocol.datagramReceived(data, CLIENT)
        self.assertEqual(service.transport.fastPath.authenticated.taken, 1)
        self.assertEqual(layer.absorbed, 1)
        [(retransmitted, addr)] = udp.sent
        self.assertTrue(retransmitted.startswith(b"SIP/2.0 200 "))
        udp.fail = True
        udp.endWakeUp()
        self.assertEqual(len(self.flushLoggedErrors()), 0)
        self.assertEqual(layer.transportErrors, 1)
        self.assertEqual([type(f).__name__ for f in failures],
                         ["TransportError"])
        self.assertEqual(dict(layer._servers), {})
        udp.fail = False
        protocol.datagramReceived(data, CLIENT)
        udp.endWakeUp()
        self.assertEqual(layer.absorbed, 1)
        # A new transaction, which the fast path leaves to the full path
        # (the nonce count was used): a stale challenge there, stateless.
        self.assertEqual(service.transport.fastPath.taken, 1)
        self.assertEqual(layer.active, 0)
        [(last, _)] = udp.sent[-1:]
        self.assertTrue(last.startswith(b"SIP/2.0 401 "))
        self.assertIn(b"stale=true", last)

    def test_disabled(self):
        """
        C{--fast-path=false} installs no fast path; the option is on by
        default.
        """
        service = _server(fast=False)[0]
        self.assertIsNone(service.transport.fastPath)
        self.assertIsInstance(_server()[0].transport.fastPath, FastChallenge)
        options = Options()
        options.parseOptions(["--role=distributor"])
        self.assertTrue(options["fast-path"])
        options = Options()
        options.parseOptions(["--role=distributor", "--fast-path=false"])
        self.assertFalse(options["fast-path"])

    def test_edge(self):
        """
        The edge role (no store, no authenticator) has no fast path.
        """
        service = _server(
            "edge", extra={"next-hop": ["sip:127.0.0.1:5070"]})[0]
        self.assertIsNone(service.transport.fastPath)


def _register(via="SIP/2.0/UDP 192.0.2.7:5060;branch=z9hG4bK776asdhds",
              uri="sip:example.com", headers=None, extra=(), drop=()):
    lines = headers or [
        f"Via: {via}",
        "Max-Forwards: 70",
        "From: <sip:alice@example.com>;tag=456248",
        "To: <sip:alice@example.com>",
        "Call-ID: 843817637684230@998sdasdh09",
        "CSeq: 1826 REGISTER",
        "Contact: <sip:alice@192.0.2.7:5060;transport=udp>",
        "Expires: 7200",
        "User-Agent: test agent/1.0",
    ]
    lines = [line for line in lines if line.split(":")[0] not in drop]
    lines = lines + list(extra) + ["Content-Length: 0"]
    return ("\r\n".join([f"REGISTER {uri} SIP/2.0"] + lines)
            + "\r\n\r\n").encode("utf-8")


def _variants():
    """
    C{(name, bytes, source address, whether the fast path takes it)}.
    """
    v = _register
    other = ("198.51.100.9", 40000)
    plain = v()
    yield "plain", plain, CLIENT, True
    yield "plain from another address", plain, other, True
    yield "rport", v("SIP/2.0/UDP 192.0.2.7:5060;branch=z9hG4bKr1;rport"), \
        other, True
    yield "rport same address", \
        v("SIP/2.0/UDP 192.0.2.7:5060;branch=z9hG4bKr1;rport"), CLIENT, True
    yield "no port in Via", v("SIP/2.0/UDP 192.0.2.7;branch=z9hG4bKp1"), \
        CLIENT, True
    yield "no port in Via, other source port", \
        v("SIP/2.0/UDP 192.0.2.7;branch=z9hG4bKp1"), ("192.0.2.7", 6000), True
    yield "host name in Via", \
        v("SIP/2.0/UDP client.example.com:5062;branch=z9hG4bKh1"), CLIENT, True
    yield "Request-URI our address", v(uri="sip:127.0.0.1"), CLIENT, True
    yield "Request-URI upper case domain", v(uri="sip:EXAMPLE.com"), \
        CLIENT, True
    yield "display names", v(headers=[
        "Via: SIP/2.0/UDP 192.0.2.7:5060;branch=z9hG4bKd1",
        "Max-Forwards: 70", 'From: "Alice A" <sip:alice@example.com>;tag=9',
        'To: "Alice A" <sip:alice@example.com>', "Call-ID: d1@h",
        "CSeq: 1 REGISTER"]), CLIENT, True
    yield "minimal", v(drop=("Max-Forwards", "Contact", "Expires",
                             "User-Agent")), CLIENT, True
    # Left to the full path.
    yield "huge Call-ID", v(headers=[
        "Via: SIP/2.0/UDP 192.0.2.7:5060;branch=z9hG4bKc1",
        "From: <sip:alice@example.com>;tag=9", "To: <sip:alice@example.com>",
        "Call-ID: " + "x" * 3000, "CSeq: 1 REGISTER"]), CLIENT, False
    yield "Authorization", v(extra=[
        'Authorization: Digest username="alice", realm="example.com", '
        'nonce="x", uri="sip:example.com", response="0"']), CLIENT, False
    yield "other scheme", v(extra=["Authorization: Basic YWxpY2U6eA=="]), \
        CLIENT, False
    yield "Proxy-Authorization", v(extra=[
        'Proxy-Authorization: Digest username="alice"']), CLIENT, False
    yield "Route", v(extra=["Route: <sip:127.0.0.1;lr>"]), CLIENT, True
    yield "Route with our port", v(extra=["Route: <sip:127.0.0.1:5060;lr>"]), \
        CLIENT, True
    yield "Route to another host", v(extra=[
        "Route: <sip:proxy.example.net;lr>"]), CLIENT, True
    yield "two Route", v(extra=["Route: <sip:127.0.0.1;lr>",
                                "Route: <sip:127.0.0.1:5062;lr>"]), \
        CLIENT, False
    yield "two Route values on a line", v(extra=[
        "Route: <sip:127.0.0.1;lr>, <sip:127.0.0.1:5062;lr>"]), CLIENT, False
    yield "Route sealed", v(extra=["Route: <sip:127.0.0.1;lr;sds=x>"]), \
        CLIENT, False
    yield "Route strict", v(extra=["Route: <sip:127.0.0.1>"]), CLIENT, False
    yield "Route with a user", v(extra=["Route: <sip:tok@127.0.0.1;lr>"]), \
        CLIENT, False
    yield "Allow", v(extra=["Allow: INVITE,ACK,BYE,CANCEL,OPTIONS,NOTIFY"]), \
        CLIENT, True
    yield "Allow with spaces", v(extra=["Allow: INVITE, ACK, BYE"]), \
        CLIENT, True
    yield "Allow empty", v(extra=["Allow: "]), CLIENT, False
    yield "Contact expires", v(extra=[
        "Contact: <sip:alice@192.0.2.7:5060>;expires=600"],
        drop=("Contact",)), CLIENT, True
    yield "Contact instance and reg-id", v(extra=[
        'Contact: <sip:alice@192.0.2.7:5060;ob>;reg-id=1;'
        '+sip.instance="<urn:uuid:00000000-0000-1000-8000-000A95A0E128>"'],
        drop=("Contact",)), CLIENT, True
    yield "Contact quoted comma", v(extra=[
        'Contact: <sip:alice@192.0.2.7:5060>;x="a,b"'],
        drop=("Contact",)), CLIENT, False
    yield "two Contact values", v(extra=[
        "Contact: <sip:alice@192.0.2.7:5060>, <sip:alice@192.0.2.8>"],
        drop=("Contact",)), CLIENT, False
    yield "Request-URI transport=udp", v(
        uri="sip:example.com;transport=udp"), CLIENT, True
    yield "Request-URI transport=tcp", v(
        uri="sip:example.com;transport=tcp"), CLIENT, False
    yield "Request-URI other parameter", v(uri="sip:example.com;lr"), \
        CLIENT, False
    yield "baresip", _baresip(), ("127.0.0.1", 46659), True
    yield "Require unknown", v(extra=["Require: foo"]), CLIENT, False
    yield "Require path", v(extra=["Require: path"]), CLIENT, False
    yield "Proxy-Require", v(extra=["Proxy-Require: foo"]), CLIENT, False
    yield "Supported option tag", v(extra=["Supported: sipdist-redirect"]), \
        CLIENT, False
    yield "Supported", v(extra=["Supported: path, outbound"]), CLIENT, True
    yield "Supported with the option tag among others", v(extra=[
        "Supported: path, SIPdist-Redirect"]), CLIENT, False
    yield "To bare", v(extra=["To: sip:alice@example.com"], drop=("To",)), \
        CLIENT, True
    yield "To bare with a tag", v(extra=["To: sip:alice@example.com;tag=1"],
                                  drop=("To",)), CLIENT, False
    yield "To bare with a display name", v(
        extra=['To: "A" sip:alice@example.com'], drop=("To",)), CLIENT, False
    yield "Accept", v(extra=["Accept: application/sdp"]), CLIENT, True
    yield "Accept lines", v(extra=["Accept: application/sdp",
                                   "Accept: text/plain, application/x-y"]), \
        CLIENT, True
    yield "Accept with a parameter", v(extra=[
        "Accept: application/sdp;q=0.5"]), CLIENT, False
    yield "linphone", _linphone(), ("127.0.0.1", 50417), True
    yield "two Via", v(extra=[
        "Via: SIP/2.0/UDP 192.0.2.8:5060;branch=z9hG4bK2"]), CLIENT, False
    yield "two Via values on a line", v(
        "SIP/2.0/UDP 192.0.2.7:5060;branch=z9hG4bKa, "
        "SIP/2.0/UDP 192.0.2.8;branch=z9hG4bKb"), CLIENT, False
    yield "Via TCP", v("SIP/2.0/TCP 192.0.2.7:5060;branch=z9hG4bKt"), \
        CLIENT, False
    yield "Via IPv6", v("SIP/2.0/UDP [2001:db8::7]:5060;branch=z9hG4bK6"), \
        CLIENT, False
    yield "from IPv6", v("SIP/2.0/UDP [2001:db8::7]:5060;branch=z9hG4bK6"), \
        ("2001:db8::7", 5060), False
    yield "Via rport with value", \
        v("SIP/2.0/UDP 192.0.2.7:5060;branch=z9hG4bKr;rport=5"), CLIENT, False
    yield "Via received", \
        v("SIP/2.0/UDP 192.0.2.7:5060;branch=z9hG4bKr;received=1.2.3.4"), \
        CLIENT, False
    yield "Via maddr", \
        v("SIP/2.0/UDP 192.0.2.7:5060;maddr=1.2.3.4;branch=z9hG4bKr"), \
        CLIENT, False
    yield "Via RFC 2543 branch", v("SIP/2.0/UDP 192.0.2.7:5060;branch=1"), \
        CLIENT, False
    yield "Via without branch", v("SIP/2.0/UDP 192.0.2.7:5060"), \
        CLIENT, False
    yield "Via port 0", v("SIP/2.0/UDP 192.0.2.7:0;branch=z9hG4bKz"), \
        CLIENT, False
    yield "Via port too large", \
        v("SIP/2.0/UDP 192.0.2.7:70000;branch=z9hG4bKz"), CLIENT, False
    yield "Via odd white space", \
        v("SIP/2.0/UDP  192.0.2.7:5060 ;branch=z9hG4bKw"), CLIENT, False
    yield "Via lower case transport", \
        v("SIP/2.0/udp 192.0.2.7:5060;branch=z9hG4bKl"), CLIENT, False
    yield "compact forms", v(headers=[
        "v: SIP/2.0/UDP 192.0.2.7:5060;branch=z9hG4bKc2",
        "f: <sip:alice@example.com>;tag=9", "t: <sip:alice@example.com>",
        "i: c2@h", "CSeq: 1 REGISTER"]), CLIENT, False
    yield "header name lower case", v(headers=[
        "via: SIP/2.0/UDP 192.0.2.7:5060;branch=z9hG4bKc3",
        "From: <sip:alice@example.com>;tag=9", "To: <sip:alice@example.com>",
        "Call-ID: c3@h", "CSeq: 1 REGISTER"]), CLIENT, False
    yield "space before colon", v(extra=["Expires : 60"],
                                  drop=("Expires",)), CLIENT, False
    yield "trailing space", v(extra=["Expires: 60 "], drop=("Expires",)), \
        CLIENT, False
    yield "folded line", v(extra=["User-Agent: a", " b"],
                           drop=("User-Agent",)), CLIENT, False
    yield "To tag", v(headers=[
        "Via: SIP/2.0/UDP 192.0.2.7:5060;branch=z9hG4bKt2",
        "From: <sip:alice@example.com>;tag=9",
        "To: <sip:alice@example.com>;tag=8", "Call-ID: t2@h",
        "CSeq: 1 REGISTER"]), CLIENT, False
    yield "missing From", v(drop=("From",)), CLIENT, False
    yield "missing To", v(drop=("To",)), CLIENT, False
    yield "missing Call-ID", v(drop=("Call-ID",)), CLIENT, False
    yield "missing CSeq", v(drop=("CSeq",)), CLIENT, False
    yield "missing Via", v(drop=("Via",)), CLIENT, False
    yield "From without tag", v(extra=["From: <sip:alice@example.com>"],
                                drop=("From",)), CLIENT, False
    yield "duplicate Expires", v(extra=["Expires: 60"]), CLIENT, False
    yield "CSeq method mismatch", v(extra=["CSeq: 1 INVITE"],
                                    drop=("CSeq",)), CLIENT, False
    yield "CSeq too large", v(extra=["CSeq: 4294967296 REGISTER"],
                              drop=("CSeq",)), CLIENT, False
    yield "Max-Forwards 0", v(extra=["Max-Forwards: 0"],
                              drop=("Max-Forwards",)), CLIENT, False
    yield "Max-Forwards 300", v(extra=["Max-Forwards: 300"],
                                drop=("Max-Forwards",)), CLIENT, False
    yield "Contact star", v(extra=["Contact: *"], drop=("Contact",)), \
        CLIENT, False
    yield "two Contacts", v(extra=[
        "Contact: <sip:alice@192.0.2.7:5062>"]), CLIENT, False
    yield "Contact with expires", v(extra=[
        "Contact: <sip:alice@192.0.2.7>;expires=60"], drop=("Contact",)), \
        CLIENT, True
    yield "Request-URI with user", v(uri="sip:alice@example.com"), \
        CLIENT, False
    yield "Request-URI other domain", v(uri="sip:example.org"), \
        CLIENT, False
    yield "Request-URI with port", v(uri="sip:example.com:5060"), \
        CLIENT, False
    yield "Request-URI sips", v(uri="sips:example.com"), CLIENT, False
    yield "body", plain.replace(b"Content-Length: 0\r\n\r\n",
                                b"Content-Length: 2\r\n\r\nhi"), CLIENT, False
    # Bodies that end as a message without one does.
    yield "body of a blank line", plain.replace(
        b"Content-Length: 0\r\n\r\n", b"Content-Length: 2\r\n\r\n\r\n"), \
        CLIENT, False
    yield "body ending in a blank line", plain.replace(
        b"Content-Length: 0\r\n\r\n",
        b"Content-Length: 5\r\n\r\nx\r\n\r\n"), CLIENT, False
    # No blank line at the end: four bytes, not the blank line, after the
    # last header.
    yield "no blank line at the end", plain[:-4] + b"\r\n\rx", CLIENT, False
    yield "headers cut short", plain[:-2] + b"xx", CLIENT, False
    yield "blank line before the headers' end", plain.replace(
        b"\r\nContent-Length: 0", b"\r\n\r\nContent-Length: 0"), \
        CLIENT, False
    yield "no Content-Length", plain.replace(b"Content-Length: 0\r\n", b""), \
        CLIENT, True
    yield "Via rport first", \
        v("SIP/2.0/UDP 192.0.2.7:5060;rport;branch=z9hG4bKr2"), CLIENT, True
    yield "Via rport first from another port", \
        v("SIP/2.0/UDP 192.0.2.7:5060;rport;branch=z9hG4bKr2"), \
        ("192.0.2.7", 7000), True
    yield "Via rport twice", \
        v("SIP/2.0/UDP 192.0.2.7:5060;rport;branch=z9hG4bKr3;rport"), \
        CLIENT, False
    yield "twinkle", _twinkle(), ("127.0.0.1", 37457), True
    yield "LF line ends", plain.replace(b"\r\n", b"\n"), CLIENT, False
    yield "leading CRLF", b"\r\n" + plain, CLIENT, False
    yield "SIP/2.1", plain.replace(b" SIP/2.0\r\n", b" SIP/2.1\r\n", 1), \
        CLIENT, False
    yield "OPTIONS", plain.replace(b"REGISTER", b"OPTIONS"), CLIENT, False
    yield "not UTF-8", plain.replace(b"test agent", b"test \xff"), \
        CLIENT, False
    yield "Path", v(extra=["Path: <sip:192.0.2.9;lr>"]), CLIENT, False
    yield "unknown header", v(extra=["X-Foo: bar"]), CLIENT, False


# A reading of a plain Digest value for DigestValueTests to compare the
# scan's with: one parameter at a time, each where the last one ended, a
# comma ending one only when another follows; any number of parameters.
_ONE_PARAMETER = re.compile(
    r'([a-z]+)=(?:"([\x20\x21\x23-\x2b\x2d-\x5b\x5d-\x7e]*)"'
    r"|([A-Za-z0-9.!%*_+`'~-]+))(?:\Z|, *(?=[a-z]))")


def _digestParameters(value):
    """
    The parameters of a plain Digest value (see L{_ONE_PARAMETER}), or
    L{None}.
    """
    value = value.lstrip(b" ")
    if value[:7] != b"Digest " or len(value) > MAX_VALUE_LENGTH:
        return None
    try:
        text = value.decode("ascii")
    except UnicodeDecodeError:
        return None
    pairs = []
    position = 7
    while True:
        found = _ONE_PARAMETER.match(text, position)
        if found is None:
            return None
        name, quoted, token = found.groups()
        pairs.append((name, token if quoted is None else quoted))
        position = found.end()
        if position == len(text):
            return pairs


class DigestValueTests(TestCase):
    """
    The scan's reading of an C{Authorization} value: one pattern of the
    whole value, chosen by its number of commas.
    """

    SIPP = (b'Digest username="alice",realm="example.com",cnonce="6b8b4567",'
            b'nc=00000001,qop=auth,uri="sip:example.com",'
            b'nonce="AAAAAGsRpDoXbAWdWnYV3sA-J9hTcufX9deIAJ4iR4k",'
            b'response="6b51b9fcdd33c9b9cc2b1b0bc8cc2bf1",algorithm=MD5')
    LINPHONE = (b'Digest realm="example.com", nonce="AAAAAGsRpDoXbAWdWnYV3sA'
                b'-J9hTcufX9deIAJ4iR4k", algorithm=MD5, username="carol", '
                b'uri="sip:example.com", response="4cf0c8a3a2b5d1e6f7a8b9c0d'
                b'1e2f3a4", cnonce="ZmV3eW9uZGVy", nc=00000001, qop=auth')

    def match(self, value):
        return fastchallenge._VALUES[b"Authorization"].match(value)

    def test_clients(self):
        """
        SIPp's and linphone's values give their parameters in order, the
        quotes left out.
        """
        self.assertEqual(self.match(self.SIPP)[:4], [
            ("username", "alice"), ("realm", "example.com"),
            ("cnonce", "6b8b4567"), ("nc", "00000001")])
        self.assertEqual(len(self.match(self.SIPP)), 9)
        self.assertEqual(self.match(self.LINPHONE)[-2:], [
            ("nc", "00000001"), ("qop", "auth")])
        self.assertEqual(self.match(b'  Digest a="", b=c'),
                         [("a", ""), ("b", "c")])

    def test_parameters(self):
        """
        A value of up to C{MAX_DIGEST_PARAMETERS} parameters is read; one
        with more goes to the full path.
        """
        limit = fastchallenge.MAX_DIGEST_PARAMETERS

        def value(count):
            return b"Digest " + b", ".join(
                b'%s="v %d"' % (bytes([97 + i]) * 2, i) for i in range(count))
        self.assertEqual(self.match(value(1)), [("aa", "v 0")])
        pairs = self.match(value(limit))
        self.assertEqual(len(pairs), limit)
        self.assertEqual(pairs, _digestParameters(value(limit)))
        self.assertIsNotNone(_digestParameters(value(limit + 1)))
        self.assertIsNone(self.match(value(limit + 1)))

    def test_sameReading(self):
        """
        On values made by changing a few bytes of the clients' values, and
        on values made of pieces of the grammar, the scan reads what a
        reading one parameter at a time reads, or leaves a value of more
        than C{MAX_DIGEST_PARAMETERS} parameters to the full path.
        """
        pieces = [b"a", b"z", b"A", b"0", b"=", b",", b", ", b",  ", b" ",
                  b'"', b"\\", b":", b"@", b"\xc3\xa9", b"\x01", b"\x7f",
                  b"-", b"~", b"Digest ", b"realm=", b'"x"', b"nc=1", b"\t",
                  b";", b"q=1,", b'r="s",']
        rng = random.Random(7)
        read = 0
        for i in range(20000):
            if rng.random() < 0.6:
                changed = bytearray(rng.choice((self.SIPP, self.LINPHONE)))
                for k in range(rng.randint(1, 3)):
                    at = rng.randrange(len(changed) + 1)
                    if rng.random() < 0.5:
                        changed[at:at] = rng.choice(pieces)
                    else:
                        del changed[at:at + rng.randint(1, 3)]
                value = bytes(changed)
            else:
                value = b"Digest " + b"".join(
                    rng.choice(pieces) for k in range(rng.randint(0, 40)))
            expected = _digestParameters(value)
            if expected is not None and len(expected) > (
                    fastchallenge.MAX_DIGEST_PARAMETERS):
                expected = None
            self.assertEqual(self.match(value), expected, value)
            read += expected is not None
        # Enough of them are read for the comparison to mean something.
        self.assertGreater(read, 1000)


class ShedEqualityTests(TestCase):
    """
    The overload control's byte-level 503
    (L{sipdist.sip.overload.OverloadControl.shedDatagram}) against the
    transaction layer's, over the same corpus and variants: the same
    datagrams, log lines and state.
    """

    def _both(self, data, addr=CLIENT, role="distributor", spread=0):
        """
        Shed C{data} (sent twice) by a server whose admitted rate is 0 (its
        C{Retry-After} values spread over C{spread + 1} seconds), with the
        byte-level path off and on; check they did the same.

        @return: whether the byte-level path answered it.
        """
        results = []
        for byteLevel in (False, True):
            service, protocol, udp, clock = _server(role)
            overload = service.transactions.overload
            overload.limit(0.0)
            overload.spread = spread
            taken = []
            if byteLevel:
                shed = service.transport.datagramFilter

                def recording(*args, shed=shed):
                    answered = shed(*args)
                    taken.append(answered)
                    return answered
                service.transport.datagramFilter = recording
            else:
                service.transport.datagramFilter = None
            events = []
            globalLogPublisher.addObserver(events.append)
            self.addCleanup(globalLogPublisher.removeObserver, events.append)
            self.patch(_message, "_randomBytes", service._random)
            protocol.datagramReceived(data, addr)
            clock.advance(0.5)
            protocol.datagramReceived(data, addr)
            effects = _effects(service, udp)
            globalLogPublisher.removeObserver(events.append)
            effects["logged"] = [
                (e.get("log_namespace"), e.get("log_format"),
                 e.get("why"), e.get("method"), e.get("remote"))
                for e in events]
            effects["shed"] = overload.shed
            results.append((effects, any(taken)))
        self.assertEqual(results[0][0], results[1][0])
        return results[1][1]

    def test_corpus(self):
        """
        Every message of the conformance corpus is shed or answered alike
        on both paths; the byte-level path takes a few plain ones.
        """
        taken = []
        for case in CORPUS:
            for role in ("distributor", "home"):
                if self._both(case.data, role=role):
                    taken.append(case.name)
        self.assertNotEqual(taken, [])
        self.assertLess(len(taken), len(CORPUS))

    def test_registerVariants(self):
        """
        The REGISTER variants of the fast 401 path: shed alike on both
        paths.
        """
        for name, data, addr, expected in _variants():
            with self.subTest(name):
                self._both(data, addr)

    def test_spreadRetryAfter(self):
        """
        With the C{Retry-After} values spread, both paths give each 503 the
        same one.
        """
        for name, data, addr, expected in _shedVariants():
            with self.subTest(name):
                self.assertEqual(self._both(data, addr, spread=3), expected,
                                 name)

    def test_variants(self):
        """
        Requests written in many ways: the common ones are answered at byte
        level, the others left to the full path, with the same result.
        """
        for name, data, addr, expected in _shedVariants():
            with self.subTest(name):
                self.assertEqual(self._both(data, addr), expected, name)

    def test_retrySpreadWired(self):
        """
        The server's overload control takes its spread bound from
        C{overload-retry-spread}.
        """
        service, protocol, udp, clock = _server(
            extra={"overload-retry-spread": 4})
        self.assertEqual(service.transactions.overload.maxSpread, 4)

    def test_503(self):
        """
        The 503 names the problem, carries Retry-After and the Server
        header, and goes to the address the request came from.
        """
        service, protocol, udp, clock = _server()
        service.transactions.overload.limit(0.0)
        protocol.datagramReceived(_register(), CLIENT)
        [(data, addr)] = udp.sent
        self.assertEqual(addr, CLIENT)
        head = data.split(b"\r\n")
        self.assertEqual(head[0],
                         b"SIP/2.0 503 Service Unavailable (Overloaded)")
        self.assertIn(b"Retry-After: 2", head)
        self.assertIn(
            b"Server: " + service.server.serverHeader.encode("utf-8"), head)
        self.assertEqual(service.transactions.overload.shed, 1)

    def test_503Waits(self):
        """
        The byte-level 503 goes with the wake-up's other answers; one that
        cannot be sent then is logged as the full path logs it.
        """
        service, protocol, udp, clock = _server()
        service.transport.capture = None
        service.transactions.overload.limit(0.0)
        udp.waiting = []
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        protocol.datagramReceived(_register(), CLIENT)
        protocol.datagramReceived(_register(
            via="SIP/2.0/UDP 192.0.2.7:5060;branch=z9hG4bKother"), CLIENT)
        self.assertEqual((udp.sent, len(udp.waiting)), ([], 2))
        udp.endWakeUp()
        self.assertEqual([d[:12] for d, a in udp.sent],
                         [b"SIP/2.0 503 "] * 2)
        udp.fail = True
        protocol.datagramReceived(_register(
            via="SIP/2.0/UDP 192.0.2.7:5060;branch=z9hG4bKthird"), CLIENT)
        udp.endWakeUp()
        self.assertEqual(
            [e["log_format"] for e in events
             if "cannot send" in e.get("log_format", "")],
            ["cannot send to {addr}: {error}"])
        self.assertEqual(service.transactions.overload.shed, 3)


def _shedVariants():
    """
    C{(name, bytes, source address, whether the byte-level 503 takes it)}.
    """
    v = _register
    other = ("198.51.100.9", 40000)
    plain = v()
    invite = _invite()
    yield "REGISTER", plain, CLIENT, True
    yield "INVITE with a body", invite, CLIENT, True
    yield "MESSAGE", plain.replace(b"REGISTER", b"MESSAGE"), CLIENT, True
    yield "from another address, same port", plain, ("198.51.100.9", 5060), \
        True
    yield "from another port, no rport", plain, other, False
    callID = plain.split(b"Call-ID: ", 1)[1].split(b"\r\n", 1)[0]
    yield "NUL in Call-ID", plain.replace(callID, b"a\x00" + callID), \
        CLIENT, False
    yield "rport after branch", \
        v("SIP/2.0/UDP 192.0.2.7:5060;branch=z9hG4bKr1;rport"), other, True
    yield "rport before branch", \
        v("SIP/2.0/UDP 192.0.2.7:5060;rport;branch=z9hG4bKr1"), other, True
    yield "rport twice", \
        v("SIP/2.0/UDP 192.0.2.7:5060;rport;branch=z9hG4bKr1;rport"), \
        other, False
    yield "host name in Via, upper case", \
        v("SIP/2.0/UDP Client.Example.COM:5060;branch=z9hG4bKh1"), CLIENT, True
    yield "two Via lines", v(extra=[
        "Via: SIP/2.0/TCP 192.0.2.8:5070;branch=z9hG4bK2;received=192.0.2.9"
        ";rport=4000"]), CLIENT, True
    yield "lower Via with a bad rport", v(extra=[
        "Via: SIP/2.0/UDP 192.0.2.8;branch=z9hG4bK2;rport=99999"]), \
        CLIENT, False
    yield "lower Via with ttl", v(extra=[
        "Via: SIP/2.0/UDP 192.0.2.8;branch=z9hG4bK2;ttl=3"]), CLIENT, False
    yield "two Via values on a line", v(
        "SIP/2.0/UDP 192.0.2.7:5060;branch=z9hG4bKa, "
        "SIP/2.0/UDP 192.0.2.8;branch=z9hG4bKb"), CLIENT, False
    # Admitted ahead of the rate (its challenge was paid for).
    yield "Authorization", v(extra=[
        'Authorization: Digest username="alice", realm="example.com", '
        'nonce="x", uri="sip:example.com", response="0"']), CLIENT, False
    yield "Route, Supported, Require", v(extra=[
        "Route: <sip:127.0.0.1;lr>", "Supported: path, outbound",
        "Require: foo"]), CLIENT, True
    yield "From without tag", v(extra=["From: <sip:alice@example.com>"],
                                drop=("From",)), CLIENT, True
    yield "To tag", v(extra=["To: <sip:alice@example.com>;tag=1"],
                      drop=("To",)), CLIENT, False
    yield "Request-URI with user and port", \
        v(uri="sip:alice@example.com:5070;transport=udp"), CLIENT, True
    yield "Request-URI port too large", v(uri="sip:example.com:70000"), \
        CLIENT, False
    yield "Request-URI with headers", v(uri="sip:example.com?Subject=x"), \
        CLIENT, False
    # From and To are checked for their form only, on both paths.
    yield "tel To", v(extra=["To: <tel:+15551234>"], drop=("To",)), \
        CLIENT, True
    yield "From port too large", v(
        extra=["From: <sip:alice@example.com:99999>;tag=1"],
        drop=("From",)), CLIENT, True
    yield "From without angle brackets", v(
        extra=["From: sip:alice@example.com;tag=1"], drop=("From",)), \
        CLIENT, False
    yield "From with a display name", v(
        extra=['From: "A \\"B\\"" <sip:alice@example.com>;tag=1'],
        drop=("From",)), CLIENT, False
    yield "To tag upper case with space", v(
        extra=["To: <sip:alice@example.com> ;TAG=1"], drop=("To",)), \
        CLIENT, False
    yield "Call-ID empty", v(extra=["Call-ID: "], drop=("Call-ID",)), \
        CLIENT, False
    yield "Call-ID without space", v(extra=["Call-ID:x@y"],
                                     drop=("Call-ID",)), CLIENT, False
    yield "unknown header without space", v(extra=["X-Foo:bar"]), \
        CLIENT, False
    yield "unknown header empty", v(extra=["X-Foo: "]), CLIENT, True
    yield "two Contacts on a line", v(
        extra=["Contact: <sip:a@192.0.2.7>, <sip:b@192.0.2.7>"],
        drop=("Contact",)), CLIENT, False
    yield "Contact with parameters", v(
        extra=["Contact: <sip:a@192.0.2.7>;expires=60;q=0.5"],
        drop=("Contact",)), CLIENT, True
    yield "Content-Length 00", plain.replace(b"Content-Length: 0",
                                             b"Content-Length: 00"), \
        CLIENT, True
    yield "Contact port too large", v(
        extra=["Contact: <sip:alice@192.0.2.7:65536>"],
        drop=("Contact",)), CLIENT, True
    yield "Max-Forwards 0", v(extra=["Max-Forwards: 0"],
                              drop=("Max-Forwards",)), CLIENT, False
    yield "Max-Forwards 256", v(extra=["Max-Forwards: 256"],
                                drop=("Max-Forwards",)), CLIENT, False
    yield "CSeq method mismatch", v(extra=["CSeq: 1 INVITE"],
                                    drop=("CSeq",)), CLIENT, False
    yield "compact From", v(extra=["f: <sip:alice@example.com>;tag=2"],
                            drop=("From",)), CLIENT, False
    yield "compact Supported", v(extra=["k: path"]), CLIENT, False
    yield "lower case Call-ID", v(extra=["call-id: c@h"],
                                  drop=("Call-ID",)), CLIENT, False
    yield "duplicate To", v(extra=["To: <sip:bob@example.com>"]), CLIENT, False
    yield "header value not ASCII", plain.replace(b"test agent",
                                                  b"test \xc3\xa9"), \
        CLIENT, False
    yield "header value not UTF-8", plain.replace(b"test agent",
                                                  b"test \xff"), \
        CLIENT, False
    yield "control character in a header", plain.replace(
        b"test agent", b"test\x01agent"), CLIENT, True
    yield "empty header value", v(extra=["Subject: "]), CLIENT, True
    yield "body without Content-Length", \
        plain.replace(b"Content-Length: 0\r\n", b"") + b"hi", CLIENT, False
    yield "body longer than Content-Length", plain + b"hi", CLIENT, False
    yield "Content-Length past the body", \
        plain.replace(b"Content-Length: 0", b"Content-Length: 9"), \
        CLIENT, False
    yield "no Content-Length", plain.replace(b"Content-Length: 0\r\n", b""), \
        CLIENT, True
    yield "OPTIONS", plain.replace(b"REGISTER", b"OPTIONS"), CLIENT, False
    yield "CANCEL", plain.replace(b"REGISTER", b"CANCEL"), CLIENT, False
    yield "ACK", plain.replace(b"REGISTER", b"ACK"), CLIENT, False
    yield "from IPv6", v("SIP/2.0/UDP [2001:db8::7]:5060;branch=z9hG4bK6"), \
        ("2001:db8::7", 5060), False
    yield "too large", v(extra=["X-Pad: " + "x" * 70000]), CLIENT, False


def _invite():
    sdp = (b"v=0\r\no=alice 1 1 IN IP4 192.0.2.7\r\ns=-\r\n"
           b"c=IN IP4 192.0.2.7\r\nt=0 0\r\nm=audio 49170 RTP/AVP 0\r\n")
    return _register(
        uri="sip:bob@example.com",
        headers=["Via: SIP/2.0/UDP 192.0.2.7:5060;branch=z9hG4bKinv1",
                 "Max-Forwards: 70",
                 'From: "Alice" <sip:alice@example.com>;tag=1928301774',
                 "To: <sip:bob@example.com>",
                 "Call-ID: a84b4c76e66710@pc33.example.com",
                 "CSeq: 314159 INVITE",
                 "Contact: <sip:alice@192.0.2.7:5060>",
                 "Content-Type: application/sdp"]).replace(
        b"REGISTER sip:bob", b"INVITE sip:bob").replace(
        b"Content-Length: 0\r\n\r\n",
        b"Content-Length: %d\r\n\r\n" % len(sdp)) + sdp


def _baresip():
    """
    The first REGISTER of baresip 1.0 as it sends it to its outbound proxy
    (the header order and spelling of a capture).
    """
    return "\r\n".join([
        "REGISTER sip:example.com;transport=udp SIP/2.0",
        "Via: SIP/2.0/UDP 127.0.0.1:46659;branch=z9hG4bK52a908cfd99a6c35;"
        "rport",
        "Contact: <sip:alice-0x55c7f788d510@127.0.0.1:46659>;expires=600",
        "Max-Forwards: 70",
        "Route: <sip:127.0.0.1:5060;lr>",
        "To: <sip:alice@example.com>",
        "From: <sip:alice@example.com>;tag=7bcdfd708a442f81",
        "Call-ID: 5675ac139adde55e",
        "CSeq: 35518 REGISTER",
        "User-Agent: baresip v1.0.0 (x86_64/linux)",
        "Allow: INVITE,ACK,BYE,CANCEL,OPTIONS,NOTIFY,SUBSCRIBE,INFO,MESSAGE,"
        "REFER",
        "Content-Length: 0", "", ""]).encode("ascii")


def _linphone():
    """
    The first REGISTER of linphonec 5.1 (the header order and spelling of a
    capture).
    """
    return "\r\n".join([
        "REGISTER sip:example.com SIP/2.0",
        "Via: SIP/2.0/UDP 127.0.0.1:50417;branch=z9hG4bK.KbV1fkvHm;rport",
        "From: <sip:alice@example.com>;tag=YB6-E6D9A",
        "To: sip:alice@example.com",
        "CSeq: 20 REGISTER",
        "Call-ID: jK~t1LcxQO",
        "Max-Forwards: 70",
        "Supported: replaces, outbound, gruu",
        "Accept: application/sdp",
        "Accept: text/plain",
        "Accept: application/vnd.gsma.rcs-ft-http+xml",
        "Contact: <sip:alice@127.0.0.1:50417;transport=udp>;+sip.instance="
        '"<urn:uuid:c77299ab-d5a7-0047-b9eb-a2f08c0bcb97>"',
        "Expires: 600",
        "User-Agent: Linphonec/5.1.65",
        # No Content-Length (over UDP).
        "", ""]).encode("ascii")


def _twinkle():
    """
    The first REGISTER of twinkle 1.10 (a capture).
    """
    return "\r\n".join([
        "REGISTER sip:example.com SIP/2.0",
        "Via: SIP/2.0/UDP 127.0.0.1:37457;rport;branch=z9hG4bKuixxtylc",
        "Max-Forwards: 70",
        "To: <sip:carol@example.com>",
        "From: <sip:carol@example.com>;tag=cemtz",
        "Call-ID: isvjemlsjyzbfaz@vm",
        "CSeq: 283 REGISTER",
        "Contact: <sip:carol@127.0.0.1:37457;transport=udp>;expires=60",
        "Allow: INVITE,ACK,BYE,CANCEL,OPTIONS,PRACK,REFER,NOTIFY,SUBSCRIBE,"
        "INFO,MESSAGE",
        "User-Agent: Twinkle/1.10.2",
        "Content-Length: 0", "", ""]).encode("ascii")
