"""
Tests for L{sipdist.roles.distribution}: REGISTER through the home and distributor roles,
driven through the real transaction layer on a clock.
"""

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from sipdist.auth.client import answerChallenge, verifySignature
from sipdist.sip.message import parseMessage
from sipdist.server import buildServer
from sipdist.store import ServerRecord
from sipdist.store.memory import MemoryAssignmentStore
from tests.test_server import RecordingFlow

CREDENTIALS = "memory:alice:alice-pw,bob:bob-pw,mallory:mallory-pw,zoe:zoe-pw"


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
    and home2, fed through its transaction layer.
    """

    def __init__(self, role="home", name="home1", policy="auto", store=None):
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
                  "redirect-policy": policy}
        self.service = buildServer(config, self.clock, store=self.store)
        self.layer = self.service.transactions
        self.flow = RecordingFlow()
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


def signed(response, session):
    """
    Whether the response verifies for the client; only a redirect's
    Contact is covered by the signature.
    """
    contact = response.header("contact") if 300 <= response.code < 400 else None
    headers = [(name, value) for name, values in response.headers.items()
               for value in values]
    return verifySignature(session, response.code, response.header("call-id"),
                           response.header("cseq"), contact, headers)


class HomeTests(SynchronousTestCase):
    """
    A home server's REGISTER handling.
    """

    def setUp(self):
        self.home = Harness()

    def test_challengeFirst(self):
        """
        A REGISTER without credentials is challenged, SHA-256 first, and
        nothing about the user's assignment is revealed.
        """
        for user in ("alice", "bob", "nobody"):
            response = self.home.send(registerBytes(user))
            self.assertEqual(response.code, 401)
            self.assertIn("SHA-256", response.values("www-authenticate")[0])
            self.assertIsNone(response.header("contact"))

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
        A user assigned elsewhere, talking to us directly (one Via), gets a
        signed 301 whose Contact is its home server; no binding is kept.
        """
        response, session = self.home.register("bob")
        self.assertEqual((response.code, response.phrase), (301, "Moved Permanently"))
        self.assertEqual(response.header("contact"), "<sip:127.0.0.1:5080>")
        self.assertTrue(signed(response, session))
        self.assertEqual(self.home.service.registrar.lookup("sip:bob@example.com"), [])

    def test_tamperedRedirect(self):
        """
        Changing the Contact of the 301 breaks its signature.
        """
        response, session = self.home.register("bob")
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
        answered with a 301 to the new one.
        """
        self.assertEqual(self.home.register("alice")[0].code, 200)
        self.home.store.moveUser("alice@example.com", "home2")
        response, session = self.home.register("alice", cseq=10)
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
        Every user talking to the distributor directly is redirected to its
        home, and the distributor keeps no binding (it has no registrar).
        """
        distributor = Harness(role="distributor", name="distributor")
        self.assertIsNone(distributor.service.registrar)
        for user, port in (("alice", 5070), ("bob", 5080)):
            response, session = distributor.register(user)
            self.assertEqual(response.code, 301)
            self.assertEqual(response.header("contact"), f"<sip:127.0.0.1:{port}>")
            self.assertTrue(signed(response, session))

    def test_unassigned(self):
        """
        An unassigned user gets a 404 from the distributor too.
        """
        response, _ = Harness(role="distributor", name="distributor").register("zoe")
        self.assertEqual(response.code, 404)
