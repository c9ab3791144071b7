"""
Tests for L{sipdist.roles.distribution}: REGISTER through the home and distributor roles,
driven through the real transaction layer on a clock.
"""

from twisted.internet.defer import fail, succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from sipdist.auth.client import answerChallenge, verifySignature
from sipdist.auth.digest import parseDigest
from sipdist.sip.message import parseMessage
from sipdist.config import ConfigurationError
from sipdist.pool.monitor import Answer, ProbeFailed
from sipdist.server import buildServer
from sipdist.store import ServerRecord, StoreUnavailable
from sipdist.store.memory import MemoryAssignmentStore
from tests.test_server import RecordingFlow

CREDENTIALS = "memory:alice:alice-pw,bob:bob-pw,mallory:mallory-pw,zoe:zoe-pw"

# What a client that follows the distribution redirect (ours) adds.
FOLLOWS = ("Supported: sipdist-redirect",)


def registerBytes(user="alice", contact=None, cseq=1, callID="reg-1",
                  vias=("SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKc1;rport",),
                  expires=None, extra=(), to=None, uri="sip:example.com"):
    contact = contact or f"<sip:{user}@192.0.2.1:5060>"
    lines = [f"REGISTER {uri} SIP/2.0"]
    lines += [f"Via: {v}" for v in vias]
    lines += [
        "Max-Forwards: 70",
        f"From: <sip:{user}@example.com>;tag=f{cseq}",
        f"To: <sip:{to or user}@example.com>",
        f"Call-ID: {callID}",
        f"CSeq: {cseq} REGISTER",
        f"Contact: {contact}",
    ]
    if expires is not None:
        lines.append(f"Expires: {expires}")
    lines += list(extra)
    lines.append("Content-Length: 0")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8")


class Harness:
    """
    A server of some role on a clock, with a memory store holding home1
    and home2, fed through its transaction layer.  Requests arrive on a
    flow of C{transport} (the Via values the tests write say UDP).
    """

    def __init__(self, role="home", name="home1", policy="auto", store=None,
                 transport="UDP", userAgents=()):
        self.clock = Clock()
        self.store = store or MemoryAssignmentStore()
        if store is None:
            self.store.addServer(ServerRecord("home1", "sip:127.0.0.1:5070"))
            self.store.addServer(ServerRecord("home2", "sip:127.0.0.1:5080"))
            self.store.assignUser("alice@example.com", "home1")
            self.store.assignUser("bob@example.com", "home2")
            self.store.assignUser("mallory@example.com", "home2")
        config = {"role": role, "name": name, "domain": "example.com",
                  "listen": [], "credentials": CREDENTIALS,
                  "secret": "test-secret-0123456789",
                  "redirect-policy": policy,
                  "redirect-user-agent": list(userAgents)}
        self.service = buildServer(config, self.clock, store=self.store)
        # The other homes answer a backup's probes (tests.test_standby
        # makes them fail).
        self.prober = FakeProber()
        if getattr(self.service, "standby", None) is not None:
            self.service.standby.prober = self.prober
        self.proxy = RecordingProxy()
        self.service.processor.proxy = self.proxy
        self.layer = self.service.transactions
        self.flow = RecordingFlow()
        self.flow.transport = transport
        self.branch = 0

    def send(self, data):
        self.layer.messageReceived(parseMessage(data), self.flow)
        return self.flow.sent[-1]

    def register(self, user="alice", password=None, **kw):
        """
        REGISTER, answer the challenge, REGISTER again: the final response
        and the client session to verify it with.
        """
        self.branch += 1
        kw.setdefault("vias", (f"SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKa{self.branch};rport",))
        cseq = kw.pop("cseq", 1)
        challenge = self.send(registerBytes(user, cseq=cseq, **kw))
        if challenge.code != 401:
            return challenge, None
        value, session = answerChallenge(
            challenge.values("www-authenticate"), "REGISTER",
            kw.get("uri", "sip:example.com"), user, password or f"{user}-pw")
        self.branch += 1
        kw["vias"] = (kw["vias"][0].replace(
            f"z9hG4bKa{self.branch - 1}", f"z9hG4bKa{self.branch}"),) + tuple(kw["vias"][1:])
        extra = tuple(kw.pop("extra", ())) + (f"Authorization: {value}",)
        return self.send(registerBytes(user, cseq=cseq + 1, extra=extra, **kw)), session


class FakeProber:
    """
    Stands for the probes of L{sipdist.pool.monitor.Prober}: every home
    answers, unless its URI is in C{dead}; keeps the URIs probed.
    """

    def __init__(self):
        self.dead = set()
        self.probed = []

    def probe(self, uri, late=None):
        self.probed.append(uri)
        if uri in self.dead:
            return fail(ProbeFailed("connection refused"))
        return succeed(Answer())


class RecordingProxy:
    """
    Stands for the stateful proxy: keeps what it is asked to forward.
    """

    def __init__(self):
        self.forwarded = []

    def forward(self, request, transaction, **kwargs):
        self.forwarded.append((request, kwargs))


def outOfDialog(method, user="alice", to="bob", cseq=1, extra=(),
                branch="z9hG4bKo1"):
    """
    An out-of-dialog request from C{user} to C{to}, with one Via.
    """
    lines = [f"{method} sip:{to}@example.com SIP/2.0",
             f"Via: SIP/2.0/UDP 192.0.2.1:5060;branch={branch};rport",
             "Max-Forwards: 70",
             f"From: <sip:{user}@example.com>;tag=f1",
             f"To: <sip:{to}@example.com>",
             f"Call-ID: ood-{method}",
             f"CSeq: {cseq} {method}",
             f"Contact: <sip:{user}@192.0.2.1:5060>"]
    lines += list(extra)
    lines += ["Content-Length: 0", "", ""]
    return "\r\n".join(lines).encode("utf-8")


def authenticated(harness, method, user="alice", extra=()):
    """
    Send C{method} from C{user}, answer the 407, send it again: the final
    response.
    """
    challenge = harness.send(outOfDialog(method, user, extra=extra))
    assert challenge.code == 407, challenge.code
    value, _ = answerChallenge(
        challenge.values("proxy-authenticate"), method, "sip:bob@example.com",
        user, f"{user}-pw")
    return harness.send(outOfDialog(
        method, user, cseq=2, branch="z9hG4bKo2",
        extra=tuple(extra) + (f"Proxy-Authorization: {value}",)))


def signed(response, session):
    """
    Whether the response verifies for the client; only a redirect's
    Contact is covered by the signature, and the backup home it names, if
    any.
    """
    contact = response.header("contact") if 300 <= response.code < 400 else None
    headers = [(name, value) for name, values in response.headers.items()
               for value in values]
    return verifySignature(session, response.code, response.header("call-id"),
                           response.header("cseq"), contact, headers,
                           response.header("sipdist-backup"))


class HomeTests(SynchronousTestCase):
    """
    A home server's REGISTER handling.
    """

    def setUp(self):
        self.home = Harness()

    def test_challengeFirst(self):
        """
        A REGISTER without credentials is challenged, and nothing about the
        user's assignment is revealed.  By default a standard client is
        challenged with MD5 alone (what SIPp, sipsak and baresip answer); a
        client listing the option tag with SHA-256 first, then MD5.
        """
        for user in ("alice", "bob", "nobody"):
            response = self.home.send(registerBytes(user))
            self.assertEqual(response.code, 401)
            self.assertEqual(
                [parseDigest(v)["algorithm"]
                 for v in response.values("www-authenticate")], ["MD5"])
            self.assertIsNone(response.header("contact"))
            response = self.home.send(registerBytes(user, extra=FOLLOWS))
            self.assertEqual(response.code, 401)
            self.assertEqual(
                [parseDigest(v)["algorithm"]
                 for v in response.values("www-authenticate")],
                ["SHA-256", "MD5"])
            self.assertIsNone(response.header("contact"))

    def test_ourClientUsesSHA256(self):
        """
        Our client, offered both, authenticates with SHA-256 and its 200 is
        signed.
        """
        response, session = self.home.register("alice", extra=FOLLOWS)
        self.assertEqual(response.code, 200)
        self.assertEqual(session.algorithm.name, "SHA-256")
        self.assertTrue(signed(response, session))

    def test_registerToHomeAddress(self):
        """
        A REGISTER whose Request-URI names the home's own address (what a
        standard client sends after retargeting to a redirect's Contact) is
        a REGISTER for the domain.
        """
        for uri in ("sip:127.0.0.1:5070", "sip:127.0.0.1",
                    "sip:127.0.0.1:5070;transport=udp"):
            response, session = self.home.register("alice", uri=uri,
                                                   callID=f"reg-{uri}")
            self.assertEqual(response.code, 200, uri)
            self.assertTrue(signed(response, session))

    def test_registerToStoreAddress(self):
        """
        A REGISTER whose Request-URI names this home as the store does (the
        Contact of a redirect to it), an address it does not otherwise know
        as its own, is a REGISTER for the domain; another host is a 404.
        """
        store = MemoryAssignmentStore()
        store.addServer(ServerRecord("home1", "sip:home1.example.net:5070"))
        store.assignUser("alice@example.com", "home1")
        home = Harness(store=store)
        response, session = home.register(
            "alice", uri="sip:home1.example.net:5070")
        self.assertEqual(response.code, 200)
        self.assertTrue(signed(response, session))
        response = home.send(registerBytes(uri="sip:home2.example.net"))
        self.assertEqual((response.code, response.phrase),
                         (404, "Not Found (Domain Not Served Here)"))

    def test_registerToStoreAddressStoreDown(self):
        """
        When the store cannot say what this server's address is, a REGISTER
        for another host gets a 503 naming the store, not a 404.
        """
        home = Harness()

        def down(serverId):
            return fail(StoreUnavailable("down"))

        home.store.getServer = down
        response = home.send(registerBytes(uri="sip:home1.example.net"))
        self.assertEqual(
            (response.code, response.phrase),
            (503, "Service Unavailable (Assignment Store Down)"))

    def test_staleCredentialsRechallenged(self):
        """
        Credentials computed for another Request-URI (the client rewrote
        it and kept them) get a fresh 401, never a 400 nor a registration;
        answering it registers.
        """
        challenge = self.home.send(registerBytes("alice"))
        value, _ = answerChallenge(
            challenge.values("www-authenticate"), "REGISTER",
            "sip:example.com", "alice", "alice-pw")
        uri = "sip:127.0.0.1:5070"
        again = self.home.send(registerBytes(
            "alice", cseq=2, uri=uri, callID="reg-2",
            extra=(f"Authorization: {value}",)))
        self.assertEqual(again.code, 401)
        self.assertEqual(self.home.service.registrar.lookup(
            "sip:alice@example.com"), [])
        value, _ = answerChallenge(
            again.values("www-authenticate"), "REGISTER", uri, "alice",
            "alice-pw")
        response = self.home.send(registerBytes(
            "alice", cseq=3, uri=uri, callID="reg-2",
            extra=(f"Authorization: {value}",)))
        self.assertEqual(response.code, 200)

    def test_serveOwnUser(self):
        """
        A user assigned here is registered: a 200 listing the binding,
        signed so the client can verify it.
        """
        response, session = self.home.register("alice")
        self.assertEqual(response.code, 200)
        self.assertEqual(response.values("contact"),
                         ["<sip:alice@192.0.2.1:5060>;expires=3600"])
        self.assertTrue(signed(response, session))
        [binding] = self.home.service.registrar.lookup("sip:alice@example.com")
        self.assertEqual(str(binding.uri), "sip:alice@192.0.2.1:5060")

    def test_redirectOtherUser(self):
        """
        A user assigned elsewhere, talking to us directly (one Via) with a
        client that follows the redirect (the option tag), gets a signed 301
        whose Contact is its home server; no binding is kept.
        """
        response, session = self.home.register("bob", extra=FOLLOWS)
        self.assertEqual((response.code, response.phrase), (301, "Moved Permanently"))
        self.assertEqual(response.header("contact"), "<sip:127.0.0.1:5080>")
        self.assertTrue(signed(response, session))
        self.assertEqual(self.home.service.registrar.lookup("sip:bob@example.com"), [])

    def test_tamperedRedirect(self):
        """
        Changing the Contact of the 301 breaks its signature.
        """
        response, session = self.home.register("bob", extra=FOLLOWS)
        response.setHeader("contact", "<sip:evil.example.com>")
        self.assertFalse(signed(response, session))

    def test_wrongPassword(self):
        """
        A wrong password is challenged again, then refused with 403 past the
        failure threshold.
        """
        codes = [self.home.register("alice", "wrong")[0].code for _ in range(11)]
        self.assertEqual(codes[:10], [401] * 10)
        self.assertEqual(codes[10], 403)

    def test_otherUsersAOR(self):
        """
        An authenticated user may not register someone else's address.
        """
        response, _ = self.home.register("mallory", to="alice")
        self.assertEqual(response.code, 403)

    def test_unassignedUser(self):
        """
        An authenticated user without an assignment gets a 404 saying so.
        """
        response, _ = self.home.register("zoe")
        self.assertEqual((response.code, response.phrase),
                         (404, "Not Found (No Home Server Assigned)"))

    def test_homeDown(self):
        """
        A user whose home server is down gets 503 with Retry-After.
        """
        self.home.store.updateServer("home2", state="down")
        response, _ = self.home.register("bob")
        self.assertEqual(response.code, 503)
        self.assertEqual(response.header("retry-after"), "30")

    def test_reassignment(self):
        """
        After the store moves a user, its next refresh at the old home is
        answered with a 301 to the new one (for a client that follows it).
        """
        self.assertEqual(self.home.register("alice")[0].code, 200)
        self.home.store.moveUser("alice@example.com", "home2")
        response, session = self.home.register("alice", cseq=10,
                                               extra=FOLLOWS)
        self.assertEqual(response.code, 301)
        self.assertEqual(response.header("contact"), "<sip:127.0.0.1:5080>")

    def test_policyProxyWithoutProxy(self):
        """
        Without a proxy configured, a request to be proxied gets a 500 that
        says so rather than no answer.
        """
        home = Harness(policy="proxy")
        home.service.processor.proxy = None
        response, _ = home.register("bob")
        self.assertEqual(response.code, 500)

    def test_otherDomain(self):
        """
        A REGISTER for a domain we do not serve is a 404.
        """
        response = self.home.send(registerBytes(uri="sip:elsewhere.example"))
        self.assertEqual(response.code, 404)

    def test_unsupportedRequire(self):
        """
        A REGISTER requiring an extension we lack is a 420 naming it.
        """
        response = self.home.send(registerBytes(extra=("Require: foo, path",)))
        self.assertEqual(response.code, 420)
        self.assertEqual(response.header("unsupported"), "foo")

    def test_registrarErrors(self):
        """
        Registrar errors reach the client: too short an interval is a 423
        with Min-Expires.
        """
        response, _ = self.home.register("alice", expires=10)
        self.assertEqual(response.code, 423)
        self.assertEqual(response.header("min-expires"), "60")

    def test_optionsLists(self):
        """
        OPTIONS shows REGISTER among the methods of a home.
        """
        response = self.home.send(registerBytes().replace(
            b"REGISTER sip:example.com", b"OPTIONS sip:127.0.0.1").replace(
            b"1 REGISTER", b"1 OPTIONS"))
        self.assertIn("REGISTER", response.header("allow"))


class UnsealedRouteTests(SynchronousTestCase):
    """
    A request without credentials whose Route names the server (by its
    C{sd} parameter, or its address) and then a foreign host: the open
    relay of the issue, in each store role.
    """

    def test_challengedNotRelayed(self):
        """
        It is challenged (407) like any new request, whether in a dialog
        (To tag) or not, and nothing is sent anywhere.
        """
        for role in ("home", "distributor", "internal-edge"):
            harness = Harness(role=role)
            for toTag in ("", ";tag=t1"):
                message = "\r\n".join([
                    "INVITE sip:victim@203.0.113.66 SIP/2.0",
                    "Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKr1" + toTag[5:],
                    "Via: SIP/2.0/UDP 192.0.2.9:5060;branch=z9hG4bKr0",
                    "Max-Forwards: 70",
                    "Route: <sip:127.0.0.1:5070;lr;sd=home1>",
                    "Route: <sip:203.0.113.66;lr>",
                    "From: <sip:mallory@example.com>;tag=m1",
                    "To: <sip:bob@example.com>" + toTag,
                    "Call-ID: relay-1" + toTag,
                    "CSeq: 1 INVITE", "Content-Length: 0", "", ""])
                response = harness.send(message.encode("utf-8"))
                expected = 481 if toTag else 407
                self.assertEqual(response.code, expected, (role, toTag))
            self.assertEqual(harness.service.proxy.forwarded, 0, role)
            self.assertEqual(harness.flow.sent[0].code, 407)


class DistributorTests(SynchronousTestCase):
    """
    A distributor is never a home.
    """

    def test_redirectsEveryone(self):
        """
        Every user talking to the distributor directly with a client that
        follows the redirect is redirected to its home, and the distributor
        keeps no binding (it has no registrar).
        """
        distributor = Harness(role="distributor", name="distributor")
        self.assertIsNone(distributor.service.registrar)
        for user, port in (("alice", 5070), ("bob", 5080)):
            response, session = distributor.register(user, extra=FOLLOWS)
            self.assertEqual(response.code, 301)
            self.assertEqual(response.header("contact"), f"<sip:127.0.0.1:{port}>")
            self.assertTrue(signed(response, session))

    def test_unassigned(self):
        """
        An unassigned user gets a 404 from the distributor too.
        """
        response, _ = Harness(role="distributor", name="distributor").register("zoe")
        self.assertEqual(response.code, 404)


class TransportTests(SynchronousTestCase):
    """
    A redirect (to a client that follows it: the option tag) or a proxied
    leg goes to the home's URI for the transport the REGISTER arrived on;
    TLS is never continued in clear.
    """

    def harness(self, transport, **kw):
        store = MemoryAssignmentStore()
        store.addServer(ServerRecord(
            "home1", "sip:127.0.0.1:5070",
            tcpUri="sip:127.0.0.1:5072;transport=tcp",
            tlsUri="sips:home1.example.com:5071"))
        store.addServer(ServerRecord("home2", "sip:127.0.0.1:5080"))
        store.assignUser("alice@example.com", "home1")
        store.assignUser("bob@example.com", "home2")
        return Harness(role="distributor", name="distributor", store=store,
                       transport=transport, **kw)

    def test_redirectKeepsTransport(self):
        """
        A REGISTER that arrived over TLS is redirected to the home's TLS
        URI, over TCP to its TCP URI, over UDP to its main URI; each 301 is
        signed with its Contact.
        """
        for transport, contact in (
                ("TLS", "<sips:home1.example.com:5071>"),
                ("TCP", "<sip:127.0.0.1:5072;transport=tcp>"),
                ("UDP", "<sip:127.0.0.1:5070>")):
            response, session = self.harness(transport).register("alice", extra=FOLLOWS)
            self.assertEqual((response.code, response.header("contact")),
                             (301, contact), transport)
            self.assertTrue(signed(response, session))

    def test_plainRecordOverTCP(self):
        """
        A home with one plain C{sip:} URI is named with C{transport=tcp} to
        a client on TCP, so the client stays on TCP.
        """
        response, _ = self.harness("TCP").register("bob", extra=FOLLOWS)
        self.assertEqual(response.header("contact"),
                         "<sip:127.0.0.1:5080;transport=tcp>")

    def test_noTLSAddress(self):
        """
        A REGISTER over TLS for a user whose home has no TLS URI gets a 503
        naming the problem, not a redirect over TCP or UDP.
        """
        distributor = self.harness("TLS")
        response, _ = distributor.register("bob")
        self.assertEqual(
            (response.code, response.phrase),
            (503, "Service Unavailable (No TLS Address For Home Server)"))
        self.assertIsNone(response.header("contact"))
        self.assertEqual(distributor.service.processor.redirects, 0)

    def test_sipsRequestURI(self):
        """
        A REGISTER whose Request-URI is C{sips:} is treated as TLS whatever
        flow it came on: redirected to a TLS URI or refused.
        """
        response, _ = self.harness("TCP").register(
            "alice", uri="sips:example.com", extra=FOLLOWS)
        self.assertEqual(response.header("contact"),
                         "<sips:home1.example.com:5071>")
        response, _ = self.harness("TCP").register(
            "bob", uri="sips:example.com", extra=FOLLOWS)
        self.assertEqual(response.code, 503)

    def test_proxiedKeepsTransport(self):
        """
        A REGISTER that came through another proxy (two Via values) over
        TLS or TCP is proxied to the home's URI for that transport; over
        TLS to a home without a TLS URI it is refused, not proxied.
        """
        vias = ("SIP/2.0/TLS 192.0.2.9:5061;branch=z9hG4bKe1",
                "SIP/2.0/TLS 192.0.2.1:5061;branch=z9hG4bKc1;rport")
        for transport, nextHop in (
                ("TLS", "sips:home1.example.com:5071"),
                ("TCP", "sip:127.0.0.1:5072;transport=tcp")):
            distributor = self.harness(transport)
            proxy = distributor.service.processor.proxy = RecordingProxy()
            distributor.register("alice", vias=vias)
            self.assertEqual([kw["nextHop"] for _, kw in proxy.forwarded],
                             [nextHop], transport)
        distributor = self.harness("TLS")
        proxy = distributor.service.processor.proxy = RecordingProxy()
        response, _ = distributor.register("bob", vias=vias)
        self.assertEqual(response.code, 503)
        self.assertEqual(proxy.forwarded, [])

class StandardClientTests(SynchronousTestCase):
    """
    A standard RFC 3261 client (no option tag, no configured User-Agent) is
    proxied, never sent a 3xx it would misread; a client that follows the
    distribution redirect is redirected.
    """

    def test_registerProxiedWithPath(self):
        """
        A REGISTER with one Via and without the option tag is proxied to
        the user's home with a Path through the distributor carrying the
        client's flow token; the distributor answers nothing itself after
        the challenge.
        """
        distributor = Harness(role="distributor", name="distributor")
        response, _ = distributor.register("bob")
        self.assertEqual(response.code, 401)
        self.assertEqual(len(distributor.flow.sent), 1)
        [(request, kwargs)] = distributor.proxy.forwarded
        self.assertEqual(request.method, "REGISTER")
        # With the user's backup home (home1) as fallback.
        self.assertEqual(kwargs.pop("failover").uri, "sip:127.0.0.1:5070")
        self.assertEqual(kwargs, {"nextHop": "sip:127.0.0.1:5080",
                                  "recordRoute": False, "addPath": True,
                                  "flowToken": True})
        self.assertEqual(request.uriText, "sip:example.com")
        self.assertEqual(distributor.service.processor.redirects, 0)
        self.assertEqual(distributor.service.processor.proxied, 1)

    def test_homeProxiesStandardClient(self):
        """
        A home proxies a standard client of another home the same way.
        """
        home = Harness()
        home.register("bob")
        [(_, kwargs)] = home.proxy.forwarded
        self.assertEqual(kwargs["nextHop"], "sip:127.0.0.1:5080")
        self.assertTrue(kwargs["addPath"])
        self.assertEqual(home.service.registrar.lookup("sip:bob@example.com"),
                         [])

    def test_optionTagForms(self):
        """
        The option tag is recognised in any case, among other tags, in the
        compact form of Supported.
        """
        for header in ("Supported: path, SIPDIST-Redirect",
                       "k: sipdist-redirect",
                       "Supported: outbound\r\nSupported: sipdist-redirect"):
            distributor = Harness(role="distributor", name="distributor")
            response, session = distributor.register("bob", extra=(header,))
            self.assertEqual(response.code, 301, header)
            self.assertTrue(signed(response, session))
            self.assertEqual(distributor.proxy.forwarded, [])

    def test_otherTagsProxied(self):
        """
        Option tags other than ours do not make a client one that follows
        the redirect.
        """
        distributor = Harness(role="distributor", name="distributor")
        distributor.register("bob", extra=("Supported: path, outbound, "
                                           "sipdist-redirectx",))
        self.assertEqual(len(distributor.proxy.forwarded), 1)

    def test_userAgentPattern(self):
        """
        A client whose User-Agent matches a configured pattern is
        redirected without the option tag; another is proxied.
        """
        distributor = Harness(role="distributor", name="distributor",
                              userAgents=[r"^Acme ?Phone/[0-9]"])
        response, session = distributor.register(
            "bob", extra=("User-Agent: AcmePhone/2.1",))
        self.assertEqual(response.code, 301)
        self.assertTrue(signed(response, session))
        response, _ = distributor.register(
            "alice", extra=("User-Agent: Linphone/5.2 (belle-sip/5.2)",))
        self.assertEqual(response.code, 401)
        [(request, _)] = distributor.proxy.forwarded
        self.assertIn("alice", request.header("from"))

    def test_policyRedirectForcesRegister(self):
        """
        The redirect policy redirects even a standard client's REGISTER
        (for deployments whose clients all follow it).
        """
        distributor = Harness(role="distributor", name="distributor",
                              policy="redirect")
        response, session = distributor.register("bob")
        self.assertEqual(response.code, 301)
        self.assertTrue(signed(response, session))

    def test_policyProxyProxiesOurClient(self):
        """
        The proxy policy proxies even a client that follows the redirect.
        """
        distributor = Harness(role="distributor", name="distributor",
                              policy="proxy")
        distributor.register("bob", extra=FOLLOWS)
        self.assertEqual(len(distributor.proxy.forwarded), 1)

    def test_outOfDialogNeverRedirected(self):
        """
        An INVITE, MESSAGE or SUBSCRIBE from a standard client is proxied
        to the caller's home with a Record-Route, under every policy: a 3xx
        naming a server would make the client call that server.
        """
        for policy in ("auto", "redirect"):
            for method in ("INVITE", "MESSAGE", "SUBSCRIBE"):
                distributor = Harness(role="distributor", name="distributor",
                                      policy=policy)
                authenticated(distributor, method)
                self.assertEqual(len(distributor.flow.sent), 1,
                                 [r.code for r in distributor.flow.sent])
                [(request, kwargs)] = distributor.proxy.forwarded
                self.assertEqual(request.method, method)
                self.assertEqual(request.uriText, "sip:bob@example.com")
                self.assertEqual(kwargs.pop("failover").uri,
                                 "sip:127.0.0.1:5080")
                self.assertEqual(kwargs, {"nextHop": "sip:127.0.0.1:5070",
                                          "recordRoute": True,
                                          "addPath": False,
                                          "flowToken": True})

    def test_outOfDialogFromOurClient(self):
        """
        An out-of-dialog request from a client that follows the redirect
        may still be redirected to the caller's home (signed 301).
        """
        distributor = Harness(role="distributor", name="distributor")
        response = authenticated(distributor, "MESSAGE", extra=FOLLOWS)
        self.assertEqual(response.code, 301)
        self.assertEqual(response.header("contact"), "<sip:127.0.0.1:5070>")
        self.assertEqual(distributor.proxy.forwarded, [])

    def test_badUserAgentPattern(self):
        """
        A User-Agent pattern that is not a regular expression is a
        configuration error naming the option.
        """
        error = self.assertRaises(ConfigurationError, Harness,
                                  userAgents=["("])
        self.assertIn("--redirect-user-agent: '(' is not a regular",
                      str(error))


class FlowTimerByTransportTests(SynchronousTestCase):
    """
    The Flow-Timer a home gives an RFC 5626 client depends on the
    transport: over UDP, where the keep-alives are how the client learns of
    a failed home, 15 s by default; on a connection 60 s.
    """

    def flowTimer(self, transport):
        home = Harness(transport=transport)
        response, _ = home.register(
            "alice", extra=FOLLOWS + ("Supported: outbound",))
        self.assertEqual(response.code, 200)
        return response.header("flow-timer")

    def test_udp(self):
        self.assertEqual(self.flowTimer("UDP"), "15")

    def test_tcp(self):
        self.assertEqual(self.flowTimer("TCP"), "60")
