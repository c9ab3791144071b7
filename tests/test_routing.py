"""
Tests for L{sipdist.services.routing}: peer signatures, trusted addresses and the
router's decisions, with a small fake processor, store, registrar and
proxy on a L{Clock}.
"""

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from sipdist.sip.message import parseMessage
from sipdist.services.registrar import Binding
from sipdist.services.routing import (
    PEER_HEADER, PEER_WINDOW, PeerSigner, Router, TrustedAddresses)
from sipdist.store import ServerRecord, StoreUnavailable
from sipdist.sip.uri import parseURI

SECRET = "pool-secret-0123456789abcdef"


def request(method="INVITE", uri="sip:bob@example.com", toTag=None,
            extra=(), maxForwards="70"):
    lines = [f"{method} {uri} SIP/2.0",
             "Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKr1",
             f"Max-Forwards: {maxForwards}",
             "From: <sip:alice@example.com>;tag=a",
             "To: <sip:bob@example.com>" + (f";tag={toTag}" if toTag else ""),
             "Call-ID: c1", f"CSeq: 1 {method}"]
    lines += list(extra)
    lines += ["Content-Length: 0", "", ""]
    return parseMessage("\r\n".join(lines).encode("ascii"))


class FakeFlow:
    def __init__(self, host="192.0.2.1", transport="UDP"):
        self.remote = (host, 5060)
        self.transport = transport


class FakeTransaction:
    def __init__(self, host="192.0.2.1", transport="UDP"):
        self.flow = FakeFlow(host, transport)


class FakeStore:
    """
    Users and servers in dicts; C{down} makes every lookup fail with
    L{StoreUnavailable}.
    """

    def __init__(self):
        self.users = {"sip:bob@example.com": "home2",
                      "sip:alice@example.com": "home1",
                      "sip:lost@example.com": "nowhere",
                      "sip:dan@example.com": "home3"}
        self.servers = {
            "home1": ServerRecord("home1", "sip:10.0.0.1"),
            "home2": ServerRecord("home2", "sip:10.0.0.2"),
            "home3": ServerRecord("home3", "sip:10.0.0.3", state="down")}
        self.down = False

    def lookupUser(self, aor):
        if self.down:
            return defer.fail(StoreUnavailable("down"))
        return defer.succeed(self.users.get(aor))

    def getServer(self, serverId):
        return defer.succeed(self.servers.get(serverId))


class FakeRegistrar:
    def __init__(self):
        self.bindings = {}

    def lookup(self, aor):
        return self.bindings.get(aor, [])


class FakeProxy:
    def __init__(self):
        self.forwarded = []

    def forward(self, request, transaction, **kwargs):
        self.forwarded.append((request, kwargs))


class FakeServer:
    name = "home1"
    localHosts = frozenset(["10.0.0.1"])


class FakeProcessor:
    """
    Stands for L{DistributionProcessor}: records its answers, and
    C{handle} records the request and serves it when C{assignedHere}.
    """

    def __init__(self, role="home"):
        self.server = FakeServer()
        self.role = role
        self.store = FakeStore()
        self.registrar = FakeRegistrar()
        self.proxy = FakeProxy()
        self.answers = []
        self.handled = []
        self.assignedHere = True

    def forUs(self, uri):
        return uri.host.lower() in ("example.com", "10.0.0.1")

    def respond(self, request, transaction, code, phrase, headers=()):
        self.answers.append((code, phrase, list(headers)))

    def handle(self, request, transaction, serve, proxyAuth=True):
        self.handled.append(request)
        if self.assignedHere:
            context = type("Context", (), {})()
            context.request, context.transaction = request, transaction
            serve(context)


class FakeNotifier:
    def __init__(self):
        self.subscriptions = []

    def subscribe(self, request, transaction, aor):
        self.subscriptions.append(aor)


class FakeService:
    notifier = None


class PeerSignerTests(SynchronousTestCase):
    """
    The C{Sipdist-Peer} signature.
    """

    def setUp(self):
        self.clock = Clock()
        self.clock.advance(1000000)
        self.signer = PeerSigner(SECRET, "home1", self.clock)
        self.other = PeerSigner(SECRET, "home2", self.clock)

    def test_roundTrip(self):
        """
        A peer sharing the secret recognises our signature and learns our
        id.
        """
        r = request()
        self.signer.sign(r)
        self.assertEqual(self.other.verify(r), "home1")

    def test_forgedOrTampered(self):
        """
        A signature with another secret, or on a request whose Request-URI
        or From changed since, is not recognised.
        """
        r = request()
        PeerSigner("another-secret-0123456789", "home1", self.clock).sign(r)
        self.assertIsNone(self.other.verify(r))
        r = request()
        self.signer.sign(r)
        r.uri = "sip:carol@example.com"
        self.assertIsNone(self.other.verify(r))
        r = request()
        self.signer.sign(r)
        r.headers["from"] = ["<sip:mallory@example.com>;tag=a"]
        self.assertIsNone(self.other.verify(r))

    def test_stale(self):
        """
        A signature older than the window is not recognised.
        """
        r = request()
        self.signer.sign(r)
        self.clock.advance(self.signer.window + 1)
        self.assertIsNone(self.other.verify(r))

    def test_malformed(self):
        """
        Missing, repeated or malformed fields are not recognised, without
        an exception.
        """
        for values in ([], ["home1"], ["home1;ts=x;sig=y"], ["a", "b"],
                       [";ts=1;sig=" + "0" * 32]):
            r = request()
            r.headers[PEER_HEADER] = values
            self.assertIsNone(self.other.verify(r))


class TrustedAddressesTests(SynchronousTestCase):
    """
    C{--trusted-peer} addresses and networks.
    """

    def test_membership(self):
        trusted = TrustedAddresses(["10.1.0.0/16", "192.0.2.7", "::1"])
        self.assertIn("10.1.2.3", trusted)
        self.assertIn("192.0.2.7", trusted)
        self.assertIn("[::1]", trusted)
        self.assertNotIn("10.2.0.1", trusted)
        self.assertNotIn("not-an-address", trusted)
        self.assertFalse(TrustedAddresses())


class RouterTests(SynchronousTestCase):
    """
    What the router does with requests to users.
    """

    def setUp(self):
        self.clock = Clock()
        self.service = FakeService()
        self.router = Router(self.service,
                             PeerSigner(SECRET, "home1", self.clock),
                             TrustedAddresses(["10.9.9.9"]))
        self.processor = FakeProcessor()

    def route(self, r, host="192.0.2.1", transport="UDP"):
        return self.router(r, FakeTransaction(host, transport),
                           self.processor)

    def test_notTaken(self):
        """
        REGISTER, BYE, in-dialog requests, requests to a server and OPTIONS
        health checks (user@host:port) are left to the rest of the chain.
        """
        for r in (request("BYE"), request("INVITE", toTag="t"),
                  request("MESSAGE", uri="sip:example.com"),
                  request("OPTIONS", uri="sip:ping@10.0.0.1:5060")):
            self.assertFalse(self.route(r), r)
        self.assertEqual(self.processor.answers, [])

    def test_untrustedIsAuthenticated(self):
        """
        A request from a client goes through the processor's authenticate,
        lookup and decide sequence; a forged peer field is removed first.
        """
        self.processor.assignedHere = False
        r = request(extra=[f"Sipdist-Peer: home2;ts=0;sig={'0' * 32}"])
        self.assertTrue(self.route(r))
        self.assertEqual(self.processor.handled, [r])
        self.assertNotIn(PEER_HEADER, r.headers)

    def test_calleeElsewhere(self):
        """
        A callee assigned to another home: the request is proxied there,
        signed as coming from us.
        """
        r = request()
        self.route(r)
        [(sent, kwargs)] = self.processor.proxy.forwarded
        self.assertEqual(kwargs, {"nextHop": "sip:10.0.0.2"})
        peer = PeerSigner(SECRET, "home2", self.clock)
        self.assertEqual(peer.verify(sent), "home1")
        self.assertEqual(self.router.toPeer, 1)

    def test_calleeElsewhereByTransport(self):
        """
        The leg to the callee's home uses its URI for the transport the
        request came on: TCP to its TCP URI, TLS to its TLS URI.
        """
        self.processor.store.servers["home2"] = ServerRecord(
            "home2", "sip:10.0.0.2", tlsUri="sips:home2.example.com")
        self.route(request(), transport="TCP")
        self.route(request(), transport="TLS")
        self.assertEqual(
            [kwargs for _, kwargs in self.processor.proxy.forwarded],
            [{"nextHop": "sip:10.0.0.2;transport=tcp"},
             {"nextHop": "sips:home2.example.com"}])

    def test_calleeElsewhereNoTLS(self):
        """
        A request that came over TLS (or names a C{sips:} callee) for a
        callee whose home has no TLS URI is a 503 saying so; it is not
        proxied over TCP or UDP.
        """
        self.route(request(), transport="TLS")
        self.route(request(uri="sips:bob@example.com"), transport="TCP")
        self.assertEqual(self.processor.proxy.forwarded, [])
        self.assertEqual(
            [answer[:2] for answer in self.processor.answers],
            [(503, "Service Unavailable (No TLS Address For Home Server)")]
            * 2)
        self.assertEqual(self.router.unavailable, 2)

    def test_fromPeer(self):
        """
        A request signed by a peer is routed without authentication, and
        the field does not go further.
        """
        r = request(uri="sip:alice@example.com")
        PeerSigner(SECRET, "home2", self.clock).sign(r)
        self.processor.registrar.bindings["sip:alice@example.com"] = [
            Binding("<sip:alice@192.0.2.5>", parseURI("sip:alice@192.0.2.5"),
                    100.0, path=["<sip:10.0.0.9;lr>"])]
        self.route(r, host="10.9.9.9")
        self.assertEqual(self.processor.handled, [])
        [(sent, kwargs)] = self.processor.proxy.forwarded
        self.assertNotIn(PEER_HEADER, sent.headers)
        [(uri, path, flow)] = kwargs["target"]
        self.assertEqual(str(uri), "sip:alice@192.0.2.5")
        self.assertEqual(path, ["<sip:10.0.0.9;lr>"])
        self.assertEqual(self.router.fromPeer, 1)

    def test_trustedAddressAloneIsNotAPeer(self):
        """
        A request from a C{--trusted-peer} address without a peer signature
        is authenticated like any other: it may have been relayed there
        from outside (the forged identity of the issue).
        """
        r = request()
        self.route(r, host="10.9.9.9")
        self.assertEqual(self.processor.handled, [r])
        self.assertEqual(self.router.fromPeer, 0)

    def test_signatureOutsideTrustedAddresses(self):
        """
        With C{--trusted-peer} given, a valid peer signature presented from
        another address does not count: the request is authenticated.
        """
        r = request()
        PeerSigner(SECRET, "home2", self.clock).sign(r)
        self.route(r, host="192.0.2.1")
        self.assertEqual(self.processor.handled, [r])
        self.assertEqual(self.router.fromPeer, 0)

    def test_expiredSignature(self):
        """
        A peer signature older than the window is not a peer's.
        """
        r = request()
        PeerSigner(SECRET, "home2", self.clock).sign(r)
        self.clock.advance(PEER_WINDOW + 1)
        self.route(r, host="10.9.9.9")
        self.assertEqual(self.processor.handled, [r])

    def test_localWithoutBinding(self):
        """
        A callee of this home without binding: 480.
        """
        self.route(request(uri="sip:alice@example.com"))
        self.assertEqual(self.processor.answers[0][:1], (480,))
        self.assertEqual(self.processor.proxy.forwarded, [])

    def test_unknownAndForeign(self):
        """
        A callee the store does not know, or of a domain we do not serve,
        is a 404.
        """
        self.route(request(uri="sip:nobody@example.com"))
        self.route(request(uri="sip:bob@elsewhere.example"))
        self.assertEqual([a[0] for a in self.processor.answers], [404, 404])
        self.assertEqual(self.processor.answers[1][1],
                         "Not Found (Domain Not Served Here)")

    def test_serverUnknownOrDown(self):
        """
        A callee assigned to a server the store does not know is a 480; to
        a server that is down, a 503 with Retry-After.
        """
        self.route(request(uri="sip:lost@example.com"))
        self.route(request(uri="sip:dan@example.com"))
        codes = [a[0] for a in self.processor.answers]
        self.assertEqual(codes, [480, 503])
        self.assertEqual(self.processor.answers[1][2][0][0], "Retry-After")

    def test_storeDown(self):
        """
        The store failing is a 503 with Retry-After, not a traceback.
        """
        self.processor.store.down = True
        self.route(request())
        [(code, phrase, headers)] = self.processor.answers
        self.assertEqual(code, 503)

    def test_subscribeToLocalUser(self):
        """
        A SUBSCRIBE or PUBLISH to a user of this home goes to the notifier
        when there is one, else gets 489.
        """
        self.route(request("SUBSCRIBE", uri="sip:alice@example.com"))
        self.assertEqual(self.processor.answers[0][:2], (489, "Bad Event"))
        self.service.notifier = notifier = FakeNotifier()
        self.route(request("SUBSCRIBE", uri="sip:alice@example.com"))
        self.route(request("PUBLISH", uri="sip:alice@example.com"))
        self.assertEqual(notifier.subscriptions,
                         ["sip:alice@example.com"] * 2)

    def test_subscribeToRemoteUser(self):
        """
        A SUBSCRIBE to a user of another home is proxied there.
        """
        self.route(request("SUBSCRIBE"))
        [(sent, kwargs)] = self.processor.proxy.forwarded
        self.assertEqual(kwargs["nextHop"], "sip:10.0.0.2")

    def test_maxForwardsZero(self):
        """
        An OPTIONS to a user with Max-Forwards 0 (the transport lets OPTIONS
        through) is a 483, before any authentication.
        """
        self.route(request("OPTIONS", maxForwards="0"))
        self.assertEqual(self.processor.answers[0][0], 483)
        self.assertEqual(self.processor.handled, [])

    def test_badRequestURI(self):
        """
        A Request-URI that does not parse is a 400.
        """
        r = request()
        r.uri = "sip:"
        self.assertTrue(self.route(r))
        self.assertEqual(self.processor.answers[0][0], 400)
