"""
Tests for L{sipdist.roles.fastredirect}: for every authenticated REGISTER
of a corpus, the fast path gives the same datagrams and leaves the same
state as the full path (nonce counts, limiter, counters, backup table,
log), and takes the plain ones that end in the distributor's signed 301.
"""

from twisted.logger import globalLogPublisher
from twisted.trial.unittest import TestCase

from sipdist.auth.digest import (
    ALGORITHMS, MAX_VALUE_LENGTH, computeHA1, computeResponse, sessionHA1)
from sipdist.auth.nonce import NonceFactory
from sipdist.roles import fastchallenge
from sipdist.roles.fastredirect import FastRedirect
from sipdist.roles.fastregister import FastRegister
from sipdist.sip import message as _message
from sipdist.store import ServerRecord

from tests.test_fastchallenge import (
    CLIENT, _effects, _register, _server, wakeUps)

SECRET = "fast-path-secret-0123456789"
AGENT = "test agent/1.0"
# What _server's clock reads.
NOW = 1000


class _Clock:
    def __init__(self, now):
        self.now = now

    def seconds(self):
        return self.now


def nonce(age=0, n=[0]):
    """
    A nonce of the servers' secret, issued C{age} seconds before L{NOW}.
    """
    n[0] += 1
    factory = NonceFactory(SECRET, "example.com", _Clock(NOW - age),
                           random=lambda k: bytes([n[0] % 256]) * k)
    return factory.mint()


def credentials(username="alice", password="wonderland",
                uri="sip:example.com", algorithm="MD5", nonceValue=None,
                nc=1, cnonce="0a4f113b", realm="example.com", sipp=False,
                extra=(), omit=(), responseText=None):
    """
    An C{Authorization} value answering our challenge.

    @param sipp: written as SIPp writes it (no space after the commas,
        its order).
    """
    if nonceValue is None:
        nonceValue = nonce()
    alg = ALGORITHMS["MD5" if algorithm is None else algorithm]
    ha1 = sessionHA1(alg, computeHA1(alg, username, realm, password),
                     nonceValue, cnonce)
    ncText = f"{nc:08x}"
    response = computeResponse(alg, ha1, nonceValue, ncText, cnonce,
                               "REGISTER", uri)
    if responseText is not None:
        response = responseText
    params = [("username", f'"{username}"'), ("realm", f'"{realm}"'),
              ("nonce", f'"{nonceValue}"'), ("uri", f'"{uri}"'),
              ("response", f'"{response}"'), ("algorithm", algorithm),
              ("cnonce", f'"{cnonce}"'), ("qop", "auth"), ("nc", ncText)]
    if sipp:
        order = ("username", "realm", "cnonce", "nc", "qop", "uri", "nonce",
                 "response", "algorithm")
        params.sort(key=lambda p: order.index(p[0]))
    params += list(extra)
    items = [f"{name}={value}" for name, value in params
             if name not in omit and value is not None]
    return "Digest " + ("," if sipp else ", ").join(items)


def request(authorization=None, branch="z9hG4bKa1", extra=(), drop=(),
            agent=AGENT, headers=None, uri="sip:example.com", via=None,
            **kw):
    """
    An authenticated REGISTER (L{_register}'s lines, with C{Authorization}
    and the given C{User-Agent}).
    """
    if authorization is None:
        authorization = credentials(uri=uri, **kw)
    lines = [f"Authorization: {authorization}"] + list(extra)
    if agent is not None:
        lines.append(f"User-Agent: {agent}")
    return _register(
        via or f"SIP/2.0/UDP 192.0.2.7:5060;branch={branch}", uri=uri,
        headers=headers, extra=lines, drop=("User-Agent",) + tuple(drop))


def _pool(service, udp):
    service.store.addServer(ServerRecord("home2", "sip:127.0.0.1:5080"))


def _state(service):
    """
    What the authentication, the processor and the fast path hold.
    """
    a = service.authenticator
    counts = a._counts
    limiter = a.limiter
    processor = service.processor
    lookups = processor.lookups
    return {
        "counts": bytes(counts._table),
        "size": len(counts),
        "floors": list(counts._floors),
        "pairs": [(k, v.count, v.until, v.last)
                  for k, v in limiter._pairs.items()],
        "hosts": [(k, list(v)) for k, v in limiter._hosts.items()],
        "slowed": limiter.slowed,
        "redirects": processor.redirects,
        "proxied": processor.proxied,
        "served": processor.served,
        "lookups": (lookups.atOnce, lookups.failed, lookups.waitedCount),
        "backups": dict(processor._backups),
        "clients": sorted(service.transactions._clients),
        "registrar": _registrarState(service.registrar),
    }


def _registrarState(registrar):
    """
    What a home's registrar holds (L{None} for a role without one).
    """
    if registrar is None:
        return None
    return {
        "bindings": {
            aor: [(b.contact, b.uri.toString(), b.expires, b.q, b.callID,
                   b.cseq, b.path, type(b.flow).__name__,
                   tuple(b.flow.remote), b.instance, b.regId)
                  for b in bindings]
            for aor, bindings in registrar._bindings.items()},
        "count": registrar._count,
        "heap": sorted(registrar._heap),
        "due": sorted(registrar._due.items()),
        "sweep": registrar._sweepCall is not None,
        "journal": None if registrar.journal is None else (
            sorted(registrar.journal._dirty),
            registrar.journal._call is not None),
    }


class BothPathsMixin:
    """
    Runs requests through a server with the fast path off and one with it
    on, and compares.
    """

    role = "distributor"

    def _both(self, datas, addr=CLIENT, role=None, prepare=_pool,
              extra=None, retransmit=True):
        """
        Deliver C{datas} (one request or a list, and the last one again
        when C{retransmit}) to a server with the fast path off and one with
        it on; check they did the same.  A retransmission of a request
        answered with a signed C{301}, which is answered statelessly, gets
        the same datagram again.

        @return: how many the fast path took before the retransmission.
        """
        if isinstance(datas, bytes):
            datas = [datas]
        role = role or self.role
        config = {"redirect-user-agent": ["^test agent"]}
        config.update(extra or {})
        results = []
        for fast in (False, True):
            service, protocol, udp, clock = _server(role, fast, config)
            # A port to proxy from (the requests of standard clients).
            service.transport._local["UDP"] = ("127.0.0.1", 5060)
            service.transport._datagram.append(protocol)
            events = []
            globalLogPublisher.addObserver(events.append)
            self.addCleanup(globalLogPublisher.removeObserver, events.append)
            if prepare is not None:
                prepare(service, udp)
            self.patch(_message, "_randomBytes", service._random)
            for data in datas:
                protocol.datagramReceived(data, addr)
            fastPath = service.transport.fastPath
            taken = 0 if fastPath is None or fastPath.authenticated is None \
                else fastPath.authenticated.taken
            if retransmit:
                before = list(udp.sent)
                clock.advance(0.5)
                protocol.datagramReceived(datas[-1], addr)
                if before and before[-1][0].startswith(b"SIP/2.0 301 "):
                    self.assertEqual(udp.sent, before + before[-1:])
            effects = _effects(service, udp)
            effects.update(_state(service))
            globalLogPublisher.removeObserver(events.append)
            effects["logged"] = [
                (e.get("log_namespace"), e.get("log_format"),
                 {k: e.get(k) for k in ("method", "callID", "user",
                                        "outcome", "chosen", "code")})
                for e in events]
            clock.advance(64 * 0.5 + 1)
            effects["afterTimerJ"] = _effects(service, udp)["table"]
            results.append((effects, taken))
            if not fast:
                self.assertEqual(taken, 0)
        self.assertEqual(results[0][0], results[1][0])
        return results[1][1]

    def test_noCache(self):
        """
        A store or a credential source that cannot answer from memory
        leaves the request to the full path.
        """
        def noStoreCache(service, udp):
            _pool(service, udp)
            service.store.answersAtOnce = lambda aor: False

        def noCredentialsCache(service, udp):
            _pool(service, udp)
            service.authenticator._checker.source.cachedHA1 = (
                lambda *args: None)

        self.assertEqual(self._both(request(), prepare=noStoreCache), 0)
        self.assertEqual(self._both(request(), prepare=noCredentialsCache),
                         0)

    def test_countsFull(self):
        """
        A table of nonce counts whose set for the request's nonce is full
        of nonces issued earlier: both paths evict the one issued first
        and the fast path answers; one issued later than the request's
        nonce leaves it to the full path (a stale challenge).
        """
        from sipdist.auth.nonce import NonceCounts

        def full(age):
            other = nonce(age=age)

            def prepare(service, udp):
                _pool(service, udp)
                counts = NonceCounts(maxSize=1)
                counts.use(other, service.authenticator._nonces.issued(
                    other), 1)
                service.authenticator._counts = counts
            return prepare

        self.assertEqual(self._both(request(nonceValue=nonce(age=5)),
                                    prepare=full(10)), 1)
        self.assertEqual(self._both(request(nonceValue=nonce(age=10)),
                                    prepare=full(5)), 0)

    def test_overloaded(self):
        """
        While the overload control sheds, a request with credentials it
        admits (one may borrow ahead of the rate) takes the fast path, its
        admission used; one it sheds (the bucket owes a burst already) is
        shed alike on both paths.
        """
        def shedding(tokens):
            def prepare(service, udp):
                _pool(service, udp)
                overload = service.transactions.overload
                overload.limit(0.0)
                overload._tokens = tokens
            return prepare

        def used(service, udp):
            shedding(0.0)(service, udp)
            overload = service.transactions.overload
            original = overload.answeredAhead

            def answeredAhead():
                self.assertTrue(overload._admittedDatagram)
                original()
            overload.answeredAhead = answeredAhead
        self.assertEqual(self._both(request(), prepare=shedding(0.0)), 1)
        self.assertEqual(self._both(request(), prepare=used), 1)
        self.assertEqual(self._both(request(), prepare=shedding(-10.0)), 0)


class StatelessRedirectTests(TestCase):
    """
    A distributor's signed C{301} to a REGISTER over UDP is answered
    statelessly (RFC 3261 section 8.2.7) on both paths: no record is kept
    for timer J; a retransmission, known by the table of nonce counts, gets
    the same datagram; the same credentials in any other request are the
    replay they always were.
    """

    def _server(self, fast):
        service, protocol, udp, clock = _server(
            "distributor", fast, {"redirect-user-agent": ["^test agent"]})
        _pool(service, udp)
        return service, protocol, udp, clock

    def _paths(self):
        for fast in (False, True):
            with self.subTest(fast=fast):
                yield (fast,) + self._server(fast)

    def _taken(self, service):
        fastPath = service.transport.fastPath
        return 0 if fastPath is None else fastPath.authenticated.taken

    def test_retransmission(self):
        """
        The retransmission of an authenticated REGISTER answered with a
        signed C{301} gets the same datagram, To tag included (from the
        request's Digest response), to the same address; no transaction
        is left behind, and each answer counts as a redirect.
        """
        from sipdist.auth.digest import parseDigest
        from sipdist.auth.server import statelessTag
        data = request()
        digestResponse = parseDigest(_message.parseMessage(data).header(
            "authorization"))["response"]
        for fast, service, protocol, udp, clock in self._paths():
            layer = service.transactions
            protocol.datagramReceived(data, CLIENT)
            self.assertEqual(len(layer._servers), 0)
            self.assertEqual(len(layer._timerJ._queue), 0)
            clock.advance(0.5)
            protocol.datagramReceived(data, CLIENT)
            clock.advance(4)
            protocol.datagramReceived(data, CLIENT)
            self.assertEqual(self._taken(service), 3 if fast else 0)
            [first, second, third] = udp.sent
            self.assertEqual(first, second)
            self.assertEqual(first, third)
            self.assertEqual(first[1], CLIENT)
            answer = first[0].decode("ascii")
            self.assertTrue(answer.startswith("SIP/2.0 301 "))
            response = _message.parseMessage(first[0])
            tag = response.nameAddr("to")[2]["tag"]
            self.assertEqual(tag, statelessTag(digestResponse))
            self.assertEqual(len(layer._servers), 0)
            self.assertEqual(layer.absorbed, 0)
            self.assertEqual(service.processor.redirects, 3)
            self.assertEqual(layer.answered[("REGISTER", 301)], 3)

    def test_otherHost(self):
        """
        The same request from another host (its answer would go there) is
        a replay: a stale challenge, to that host; the client's own
        retransmission still gets its 301.
        """
        data = request()
        other = ("198.51.100.9", 5060)
        for fast, service, protocol, udp, clock in self._paths():
            protocol.datagramReceived(data, CLIENT)
            protocol.datagramReceived(data, other)
            protocol.datagramReceived(data, CLIENT)
            [(first, to1), (replayed, to2), (again, to3)] = udp.sent
            self.assertEqual((to1, to2, to3), (CLIENT, other, CLIENT))
            self.assertTrue(replayed.startswith(b"SIP/2.0 401 "))
            self.assertIn(b"stale=true", replayed)
            self.assertEqual(first, again)

    def test_otherRequest(self):
        """
        The same credentials in a request of another branch, or with
        another CSeq, are a replay (stale challenge).
        """
        n = nonce()
        first = request(branch="z9hG4bKs1", nonceValue=n)
        for other in (request(branch="z9hG4bKs2", nonceValue=n),
                      first.replace(b"CSeq: 1826 REGISTER",
                                    b"CSeq: 1827 REGISTER", 1)):
            self.assertNotEqual(other, first)
            for fast, service, protocol, udp, clock in self._paths():
                protocol.datagramReceived(first, CLIENT)
                protocol.datagramReceived(other, CLIENT)
                [(answer, _), (replayed, _)] = udp.sent
                self.assertTrue(answer.startswith(b"SIP/2.0 301 "))
                self.assertTrue(replayed.startswith(b"SIP/2.0 401 "),
                                replayed)
                self.assertIn(b"stale=true", replayed)

    def test_decisionChanged(self):
        """
        A retransmission that would not be redirected now (the home went
        down meanwhile) is not served otherwise: it is the replay of its
        nonce count, challenged (stale).
        """
        data = request()
        for fast, service, protocol, udp, clock in self._paths():
            protocol.datagramReceived(data, CLIENT)
            service.store.updateServer("home1", state="down")
            clock.advance(0.5)
            protocol.datagramReceived(data, CLIENT)
            [(answer, _), (replayed, _)] = udp.sent
            self.assertTrue(answer.startswith(b"SIP/2.0 301 "))
            self.assertTrue(replayed.startswith(b"SIP/2.0 401 "), replayed)
            self.assertIn(b"stale=true", replayed)

    def test_proxiedKeepsState(self):
        """
        A REGISTER the distributor proxies (a client that does not follow
        the redirect) is handled statefully as before: a retransmission
        is absorbed by its transaction.
        """
        data = request(agent="other")
        for fast, service, protocol, udp, clock in self._paths():
            service.transport._local["UDP"] = ("127.0.0.1", 5060)
            service.transport._datagram.append(protocol)
            protocol.datagramReceived(data, CLIENT)
            protocol.datagramReceived(data, CLIENT)
            self.assertEqual(service.transactions.absorbed, 1)
            self.assertEqual(service.processor.proxied, 1)


class FastRedirectTests(BothPathsMixin, TestCase):

    def test_taken(self):
        """
        The plain authenticated REGISTERs of a client that follows the
        redirect are answered by the fast path with the full path's 301.
        """
        for name, data, addr in _taken():
            with self.subTest(name):
                self.assertEqual(self._both(data, addr), 1, name)

    def test_left(self):
        """
        Anything unusual is left to the full path, and both answer the
        same.
        """
        for name, data, addr in _left():
            with self.subTest(name):
                self.assertEqual(self._both(data, addr), 0, name)

    def test_answer(self):
        """
        The fast path's answer is a 301 naming the assigned server, with the
        backup home and the signature headers.
        """
        service, protocol, udp, clock = _server(
            extra={"redirect-user-agent": ["^test agent"]})
        _pool(service, udp)
        protocol.datagramReceived(request(), CLIENT)
        self.assertEqual(service.transport.fastPath.authenticated.taken, 1)
        response = udp.sent[0][0].decode("ascii")
        self.assertTrue(response.startswith("SIP/2.0 301 Moved Permanently"))
        self.assertIn("\r\nContact: <sip:127.0.0.1:5070>\r\n", response)
        self.assertIn("\r\nSipdist-Backup: <sip:127.0.0.1:5080>\r\n",
                      response)
        self.assertIn("\r\nSipdist-Signature: v=2, ", response)
        self.assertIn('\r\nAuthentication-Info: qop=auth, rspauth="',
                      response)

    def test_nonceCounts(self):
        """
        A nonce used again with a higher count is taken; with the same
        count it is a replay, challenged by the full path (stale).
        """
        n = nonce()
        first = request(branch="z9hG4bKn1", nonceValue=n)
        again = request(branch="z9hG4bKn2", nonceValue=n, cnonce="ab")
        higher = request(branch="z9hG4bKn3", nonceValue=n, nc=2)
        self.assertEqual(self._both([first, higher]), 2)
        self.assertEqual(self._both([first, again]), 1)

    def test_limiter(self):
        """
        After a failed attempt from the client's address (counted by the
        limiter), its next good credentials take the full path, which
        forgets the failure; once blocked, it gets the full path's 403.
        """
        bad = request(branch="z9hG4bKl1", password="wrong")
        good = request(branch="z9hG4bKl2")
        self.assertEqual(self._both([bad, good]), 0)
        self.assertEqual(self._both([bad, good], extra={"auth-failures": 1}),
                         0)
        # The failure forgotten, the next one is fast again.
        self.assertEqual(self._both([bad, good, request(branch="z9hG4bKl3")]),
                         1)

    def test_jsonLog(self):
        """
        With decisions logged (C{--log-format=json}), the fast path logs
        the full path's decision event.
        """
        self.assertEqual(self._both(request(), extra={"log-format": "json"}),
                         1)

    def test_noBackup(self):
        """
        Without a backup home (one server in the pool, or
        C{--backup-home=false}) the 301 names none and is signed with
        version 1, on both paths.
        """
        self.assertEqual(self._both(request(), prepare=None), 1)
        self.assertEqual(self._both(request(),
                                    extra={"backup-home": False}), 1)

    def test_serverStates(self):
        """
        A home that is draining is still redirected to (fast); one that is
        down gets the full path's 503.
        """
        def draining(service, udp):
            _pool(service, udp)
            service.store.updateServer("home1", state="draining")

        def down(service, udp):
            _pool(service, udp)
            service.store.updateServer("home1", state="down")

        self.assertEqual(self._both(request(), prepare=draining), 1)
        self.assertEqual(self._both(request(), prepare=down), 0)

    def test_unassigned(self):
        """
        A user without an assignment gets the full path's 404.
        """
        self.assertEqual(self._both(
            request(username="carol", password="x",
                    headers=_lines("carol")),
            extra={"credentials": "memory:alice:wonderland,carol:x"}), 0)

    def test_policies(self):
        """
        Under C{--redirect-policy=proxy} the request is proxied (full
        path); under C{redirect}, a client that follows it is redirected
        (fast).
        """
        self.assertEqual(self._both(
            request(), extra={"redirect-policy": "proxy"}), 0)
        self.assertEqual(self._both(
            request(), extra={"redirect-policy": "redirect"}), 1)

    def test_sendFails(self):
        """
        A 301 that cannot be sent counts as a transport error on both
        paths and leaves no transaction.
        """
        def failing(service, udp):
            _pool(service, udp)
            udp.fail = True
        self.assertEqual(self._both(request(), prepare=failing,
                                    retransmit=False), 1)

    def test_answerWaits(self):
        """
        A port that sends the answers of a wake-up at its end sends the
        fast 301 then, with the full path's effects; one it cannot send
        then counts as a transport error and leaves no transaction.
        """
        def waiting(service, udp):
            _pool(service, udp)
            wakeUps(service, udp)
        self.assertEqual(self._both(request(), prepare=waiting), 1)

        def failing(service, udp):
            waiting(service, udp)
            udp.fail = True
        self.assertEqual(self._both(request(), prepare=failing,
                                    retransmit=False), 1)

    def test_home(self):
        """
        A home (which hands moved users over and may stand in for others)
        has no L{FastRedirect}: its fast path is a L{FastRegister}, and a
        L{FastRedirect} would not take its requests.
        """
        service = _server("home")[0]
        fast = service.transport.fastPath.authenticated
        self.assertIsInstance(fast, FastRegister)
        redirect = FastRedirect(service, service.processor)
        self.assertFalse(redirect.possible())
        for name, data, addr in _taken():
            with self.subTest(name):
                values = _scanned(data)
                self.assertIsNone(redirect(addr, "example.com", values,
                                           "SIP/2.0/UDP 192.0.2.7:5060",
                                           None, None))

    def test_installed(self):
        """
        The store roles' fast path has a L{FastRedirect}; with
        C{--fast-path=false} there is none.
        """
        self.assertIsInstance(_server()[0].transport.fastPath.authenticated,
                              FastRedirect)
        self.assertIsNone(_server(fast=False)[0].transport.fastPath)


def _lines(user="alice", to=None, display=""):
    """
    The header lines of L{_register} for C{user}, its To naming C{to}.
    """
    to = to or f"sip:{user}@example.com"
    return [
        "Via: SIP/2.0/UDP 192.0.2.7:5060;branch=z9hG4bKh9",
        "Max-Forwards: 70",
        f"From: {display}<sip:{user}@example.com>;tag=456248",
        f"To: {display}<{to}>",
        "Call-ID: 843817637684230@998sdasdh09",
        "CSeq: 1826 REGISTER",
        f"Contact: <sip:{user}@192.0.2.7:5060;transport=udp>",
        "Expires: 7200",
    ]


def _taken():
    """
    C{(name, bytes, source address)} of requests the fast path answers.
    """
    other = ("198.51.100.9", 40000)
    yield "plain", request(), CLIENT
    yield "from another address", request(), other
    yield "SIPp", request(sipp=True), CLIENT
    yield "SHA-256", request(algorithm="SHA-256"), CLIENT
    yield "no algorithm", request(algorithm=None), CLIENT
    yield "algorithm lower case", request(
        authorization=credentials(algorithm="MD5").replace(
            "algorithm=MD5", "algorithm=md5")), CLIENT
    yield "qop quoted", request(
        authorization=credentials().replace("qop=auth", 'qop="auth"')), \
        CLIENT
    yield "response upper case", request(
        authorization=_upperResponse(credentials())), CLIENT
    yield "option tag", request(agent=None,
                                extra=["Supported: sipdist-redirect"]), CLIENT
    yield "option tags", request(
        agent="other", extra=["Supported: path,SIPDIST-REDIRECT, outbound"]), \
        CLIENT
    yield "rport", request(
        via="SIP/2.0/UDP 192.0.2.7:5060;branch=z9hG4bKr1;rport"), other
    yield "host name in Via", request(
        via="SIP/2.0/UDP client.example.com:5062;branch=z9hG4bKh1"), CLIENT
    yield "display names", request(headers=_lines(display='"Alice A" ')), \
        CLIENT
    yield "To host upper case", request(
        headers=_lines(to="sip:alice@EXAMPLE.com")), CLIENT
    yield "Request-URI our address", request(uri="sip:127.0.0.1"), CLIENT
    yield "Request-URI upper case", request(uri="sip:EXAMPLE.com"), CLIENT
    yield "Request-URI transport=udp", request(
        uri="sip:example.com;transport=udp"), CLIENT
    yield "Route to us", request(extra=["Route: <sip:127.0.0.1;lr>"]), CLIENT
    yield "Route to another host", request(
        extra=["Route: <sip:proxy.example.net:5060;lr>"]), CLIENT
    yield "Allow", request(extra=["Allow: INVITE, ACK, BYE, REGISTER"]), \
        CLIENT
    yield "spaces as linphone writes them", request(
        authorization=" " + credentials().replace(", uri=", ",  uri=")), \
        CLIENT
    yield "To bare", request(headers=[
        line if not line.startswith("To:") else "To: sip:alice@example.com"
        for line in _lines()]), CLIENT
    yield "spaces before Digest", request(
        authorization="  " + credentials()), CLIENT
    yield "a value as long as the full path takes", request(
        authorization=credentials(cnonce="c" * (
            MAX_VALUE_LENGTH - len(credentials(cnonce=""))))), CLIENT
    yield "Accept lines", request(extra=["Accept: application/sdp",
                                         "Accept: text/plain"]), CLIENT


def _upperResponse(value):
    head, _, rest = value.partition('response="')
    response, _, tail = rest.partition('"')
    return f'{head}response="{response.upper()}"{tail}'


def _left():
    """
    C{(name, bytes, source address)} of requests left to the full path.
    """
    yield "wrong password", request(password="wrong"), CLIENT
    yield "unknown user", request(username="bob", password="x",
                                  headers=_lines("bob")), CLIENT
    yield "stale nonce", request(nonceValue=nonce(age=400)), CLIENT
    yield "nonce from the future", request(nonceValue=nonce(age=-60)), CLIENT
    yield "not our nonce", request(nonceValue="x" * 43), CLIENT
    yield "nonce of another secret", request(nonceValue=NonceFactory(
        "another-secret-0123456789", "example.com", _Clock(NOW)).mint()), \
        CLIENT
    yield "MD5-sess not offered", request(algorithm="MD5-sess"), CLIENT
    yield "opaque", request(authorization=credentials(
        extra=[("opaque", '"abc"')])), CLIENT
    yield "unknown parameter", request(authorization=credentials(
        extra=[("foo", "bar")])), CLIENT
    yield "userhash", request(authorization=credentials(
        extra=[("userhash", "true")])), CLIENT
    yield "repeated parameter", request(authorization=credentials(
        extra=[("nc", "00000002")])), CLIENT
    yield "no qop", request(authorization=credentials(omit=("qop",))), CLIENT
    yield "no cnonce", request(authorization=credentials(
        omit=("cnonce",))), CLIENT
    yield "nc zero", request(authorization=credentials(nc=0)), CLIENT
    yield "other realm", request(authorization=credentials(
        realm="example.org")), CLIENT
    yield "other URI", request(authorization=credentials(
        uri="sip:example.org")), CLIENT
    yield "escaped quote", request(authorization=credentials().replace(
        'username="alice"', 'username="al\\ice"')), CLIENT
    yield "comma in a quoted string", request(
        authorization=credentials(cnonce="a,b")), CLIENT
    yield "empty cnonce", request(authorization=credentials(cnonce="")), \
        CLIENT
    yield "upper case parameter name", request(
        authorization=credentials().replace("username=", "Username=")), \
        CLIENT
    yield "a value longer than the full path takes", request(
        authorization=credentials(cnonce="c" * (
            MAX_VALUE_LENGTH + 1 - len(credentials(cnonce=""))))), CLIENT
    yield "trailing comma", request(authorization=credentials() + ","), \
        CLIENT
    yield "trailing comma and space", request(
        authorization=credentials() + ", "), CLIENT
    yield "Digest without parameters", request(authorization="Digest "), \
        CLIENT
    yield "two spaces after Digest", request(
        authorization=credentials().replace("Digest ", "Digest  ")), CLIENT
    yield "space before a comma", request(
        authorization=credentials().replace(", ", " , ", 1)), CLIENT
    yield "quote in a token", request(authorization=credentials().replace(
        "algorithm=MD5", 'algorithm=MD5"')), CLIENT
    yield "a letter beyond ASCII in a quoted string", request(
        authorization=credentials(cnonce="caf\u00e9")), CLIENT
    yield "unterminated quoted string", request(
        authorization=credentials().replace('cnonce="0a4f113b"',
                                            'cnonce="0a4f113b')), CLIENT
    yield "parameter without a value", request(
        authorization=credentials() + ", stale="), CLIENT
    yield "Basic", request(authorization="Basic YWxpY2U6d29uZGVybGFuZA=="), \
        CLIENT
    yield "two Authorization", request(extra=[
        "Authorization: " + credentials()]), CLIENT
    yield "Proxy-Authorization too", request(extra=[
        "Proxy-Authorization: " + credentials()]), CLIENT
    yield "not following the redirect", request(agent="other"), CLIENT
    yield "no User-Agent", request(agent=None), CLIENT
    yield "Supported without the tag", request(
        agent="other", extra=["Supported: path, outbound"]), CLIENT
    yield "To of another user", request(headers=_lines(
        to="sip:bob@example.com")), CLIENT
    yield "To with a port", request(headers=_lines(
        to="sip:alice@example.com:5060")), CLIENT
    yield "two Via", request(extra=[
        "Via: SIP/2.0/UDP 192.0.2.8:5060;branch=z9hG4bK2"]), CLIENT
    yield "two Route", request(extra=["Route: <sip:127.0.0.1;lr>",
                                      "Route: <sip:127.0.0.1:5062;lr>"]), \
        CLIENT
    yield "Require path", request(extra=["Require: path"]), CLIENT
    yield "Proxy-Require", request(extra=["Proxy-Require: foo"]), CLIENT
    yield "sealed client address", request(extra=[
        "Sipdist-Client: 192.0.2.99"]), CLIENT
    yield "Request-URI other domain", request(uri="sip:example.org"), CLIENT


def _scanned(data):
    """
    The header lines of a request by name, as the scan hands them on
    (these tests' requests have one of each).
    """
    head = data.split(b"\r\n\r\n")[0].split(b"\r\n")[1:]
    values = {line.partition(b": ")[0]: line for line in head}
    if b"Authorization" in values:
        values[b"Authorization"] = fastchallenge._VALUES[
            b"Authorization"].match(
            values[b"Authorization"].partition(b": ")[2])
    return values
