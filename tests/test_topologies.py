"""
The topologies of the design end to end, on real sockets on loopback: an
edge in front of the home servers (Figure 8), an edge and an internal edge
(Figure 10), a forward proxy in front of a distributor (Figure 12); calls
and messages between users of different home servers through them, CANCEL,
Max-Forwards exhaustion and a forwarding loop.

Clients are the project's client library (L{sipdist.client}) over TCP to
the edge, so that "over the client's own connection" is observable: the
client opens exactly one connection, and requests for it arrive on it.
"""

from twisted.internet import defer, reactor, task
from twisted.python.filepath import FilePath
from twisted.trial.unittest import TestCase

from sipdist.client.dialog import CallFailed
from sipdist.client.login import Login
from sipdist.server import buildServer
from sipdist.store import ServerRecord
from sipdist.store.memory import MemoryAssignmentStore
from sipdist.testca import makeCA
from sipdist.sip.tls import serverContextFactory
from tests.client_helpers import startAgent
from tests.interop import freePort, requireTool, runSipp

SIPP = FilePath(__file__).parent().child("sipp")

PASSWORD = "wonderland"
SECRET = "pool-nonce-secret-0123456789abcdef"
USERS = f"memory:alice:{PASSWORD},bob:{PASSWORD},carol:{PASSWORD}"
LOOPBACK = "interface=127.0.0.1"


def _port(service, index=0):
    return service.transportService.ports[index].getHost().port


class Deployment:
    """
    Servers started for one test, sharing a memory store: alice is assigned
    to home1, bob and carol to home2.

    @ivar services: the L{ServerService}s by name.
    @ivar uris: the URI of each server (of the edge: its outside).
    """

    def __init__(self, testCase, kind="tcp", algorithms=("SHA-256", "MD5"),
                 t1=0.05):
        self.testCase = testCase
        self.t1 = t1
        self.kind = kind
        self.algorithms = list(algorithms)
        self.store = MemoryAssignmentStore()
        self.services = {}
        self.uris = {}
        self.tlsOptions = None
        self.ca = None
        if kind == "tls":
            certs = FilePath(testCase.mktemp())
            certs.makedirs()
            makeCA(certs.path)
            self.ca = certs.child("ca.pem").path
            self.cert = certs.child("server.pem").path
            self.key = certs.child("server.key").path
            self.tlsOptions = serverContextFactory(
                self.cert, self.key, [self.ca], requireClientCertificate=True)

    def uriOf(self, port, kind=None):
        kind = kind or self.kind
        if kind == "tls":
            return f"sips:127.0.0.1:{port}"
        if kind == "tcp":
            return f"sip:127.0.0.1:{port};transport=tcp"
        return f"sip:127.0.0.1:{port}"

    def listen(self, kind=None):
        kind = kind or self.kind
        return {"udp": f"udp:0:{LOOPBACK}", "tcp": f"tcp:0:{LOOPBACK}",
                "tls": f"sips:0:{LOOPBACK}"}[kind]

    @defer.inlineCallbacks
    def start(self, name, role, **extra):
        config = {"role": role, "name": name, "domain": "example.com",
                  "listen": [self.listen()], "credentials": USERS,
                  "secret": SECRET, "t1": self.t1,
                  "digest-algorithms": self.algorithms,
                  "tls-server-options": self.tlsOptions}
        if self.kind == "tls":
            config.update({"tls-ca": self.ca, "tls-cert": self.cert,
                           "tls-key": self.key})
        config.update(extra)
        service = buildServer(config, reactor, store=self.store)
        service.startService()
        self.testCase.addCleanup(service.stopService)
        yield service.transportService.ready
        self.services[name] = service
        self.uris[name] = self.uriOf(_port(service))
        return service

    @defer.inlineCallbacks
    def homes(self):
        yield self.start("home1", "home")
        yield self.start("home2", "home")
        yield self.store.addServer(ServerRecord("home1", self.uris["home1"]))
        yield self.store.addServer(ServerRecord("home2", self.uris["home2"]))
        yield self.store.assignUser("alice@example.com", "home1")
        yield self.store.assignUser("bob@example.com", "home2")
        yield self.store.assignUser("carol@example.com", "home2")

    @defer.inlineCallbacks
    def edge(self, nextHops, name="edge", outside="tcp", **extra):
        """
        An edge listening on C{outside} (loopback) for clients and on the
        deployment's kind for the servers inside.
        """
        extra.update({"inside-listen": [self.listen()],
                      "next-hop": nextHops})
        service = yield self.start(
            name, "edge", listen=[self.listen(outside)], **extra)
        self.uris[name] = self.uriOf(_port(service), outside)
        self.uris[name + "-inside"] = self.uriOf(_port(service, 1))
        return service

    @defer.inlineCallbacks
    def agent(self, user, server):
        """
        A client of C{user} logged in at C{server} (a URI).
        """
        ua = yield startAgent(self.testCase, reactor, f"{user}@example.com",
                              PASSWORD, T1=self.t1)
        ua.result = yield Login(ua, ua.locator, server=server).run()
        return ua

    def bindings(self, home, user):
        return self.services[home].registrar.lookup(
            f"sip:{user}@example.com")


def _assertAllSealed(testCase, deployment):
    """
    Every request that followed a route set through the deployment was
    relayed on the pool's seals (none was turned away as unsealed), and
    some were.
    """
    proxies = [service.proxy for service in deployment.services.values()]
    testCase.assertEqual([p.unsealed for p in proxies], [0] * len(proxies))
    testCase.assertTrue(any(p.forwarded for p in proxies))


def _connections(ua):
    return ua.transport.connectionCount


def _answering(ua, calls):
    def onInvite(call):
        calls.append(call)
        call.answer()
    ua.onInvite = onInvite


@defer.inlineCallbacks
def _call(caller, callee, waitForCallee=True):
    """
    C{callee} answers every call; C{caller} calls it.

    @return: C{(outgoing call, incoming call)} once the caller's side is
        established (and the callee's, with C{waitForCallee}).
    """
    calls = []
    _answering(callee, calls)
    call = caller.call(str(callee.aor))
    yield call.deferred
    [incoming] = calls
    if waitForCallee:
        yield incoming.deferred
    return call, incoming


class Figure8Tests(TestCase):
    """
    Figure 8: client -> edge -> home1 -> (proxy) home2.
    """

    timeout = 30

    @defer.inlineCallbacks
    def test_registerThroughEdgeAndHome1(self):
        """
        bob registers through the edge, whose next hop is home1; home1
        proxies to home2, bob's home; the binding ends on home2 with a Path
        through home1 and the edge (whose entry carries bob's flow token).
        """
        d = Deployment(self)
        yield d.homes()
        yield d.edge([d.uris["home1"]])
        bob = yield d.agent("bob", d.uris["edge"])
        [binding] = d.bindings("home2", "bob")
        self.assertEqual(d.bindings("home1", "bob"), [])
        home1, edge = binding.path
        self.assertIn(";sd=home1", home1)
        self.assertIn(";sd=edge", edge)
        self.assertIn(";ob", edge)
        # The edge's Path entry names its inside address.
        insidePort = _port(d.services["edge"], 1)
        self.assertIn(f"@127.0.0.1:{insidePort};", edge)
        self.assertEqual(_connections(bob), 1)
        self.assertEqual(d.services["home1"].processor.proxied, 1)

    @defer.inlineCallbacks
    def test_nextHopDown(self):
        """
        One of the edge's next hops is down (nothing listens): whichever is
        chosen first, bob registers through the other.
        """
        d = Deployment(self)
        yield d.homes()
        down = f"sip:127.0.0.1:{freePort('tcp')};transport=tcp"
        yield d.edge([down, d.uris["home1"]])
        for _ in range(3):
            ua = yield d.agent("bob", d.uris["edge"])
            yield ua.stop()
        # Three logins; stopping does not unregister, but each login
        # carries the same RFC 5626 instance id and reg-id (bob's on this
        # host), so each replaced the binding of the one before.
        [binding] = d.bindings("home2", "bob")
        self.assertEqual(binding.regId, "1")

    @defer.inlineCallbacks
    def test_healthChecks(self):
        """
        With health checks, an edge whose UDP next hop does not answer
        (nothing would tell it but timeouts) chooses it last once it has
        failed its checks, while home1 answers them.
        """
        d = Deployment(self, "udp")
        yield d.homes()
        down = f"sip:127.0.0.1:{freePort('udp')}"
        edge = yield d.edge([down, d.uris["home1"]], outside="udp",
                            **{"next-hop-check": 0.1})
        hops = edge.nextHops
        for _ in range(100):
            if hops.down:
                break
            yield task.deferLater(reactor, 0.05, lambda: None)
        self.assertEqual(hops.down, {0})
        self.assertEqual(edge.nextHopChecker.failures[1], 0)
        bob = yield d.agent("bob", d.uris["edge"])
        self.assertEqual(bob.result.redirects, [])
        self.assertEqual(len(d.bindings("home2", "bob")), 1)

    @defer.inlineCallbacks
    def test_callFromHome1OverClientConnection(self):
        """
        A call from alice (home1) to bob (home2, behind the edge) reaches
        bob over the connection bob opened to the edge; INVITE/200/ACK/BYE
        complete.
        """
        d = Deployment(self)
        yield d.homes()
        yield d.edge([d.uris["home1"]])
        bob = yield d.agent("bob", d.uris["edge"])
        alice = yield d.agent("alice", d.uris["edge"])
        call, incoming = yield _call(alice, bob)
        flow = incoming.transaction.flow
        self.assertEqual(flow.transport, "TCP")
        self.assertEqual(flow.remote[1], _port(d.services["edge"]))
        self.assertEqual(_connections(bob), 1)
        response = yield call.hangup()
        self.assertEqual(response.code, 200)
        self.assertTrue(incoming.dialog.ended)
        self.assertEqual(d.services["home1"].router.toPeer, 1)
        self.assertEqual(d.services["home2"].router.fromPeer, 1)
        self.assertEqual(d.services["home2"].router.local, 1)

    @defer.inlineCallbacks
    def test_calleeHangsUp(self):
        """
        The callee's BYE follows the route set back through the edge to the
        caller's connection.
        """
        d = Deployment(self)
        yield d.homes()
        yield d.edge([d.uris["home1"]])
        bob = yield d.agent("bob", d.uris["edge"])
        alice = yield d.agent("alice", d.uris["edge"])
        call, incoming = yield _call(alice, bob)
        response = yield incoming.hangup()
        self.assertEqual(response.code, 200)
        self.assertTrue(call.dialog.ended)
        _assertAllSealed(self, d)

    @defer.inlineCallbacks
    def test_message(self):
        """
        A MESSAGE from bob (home2) to alice (home1), both behind the edge,
        is delivered and answered 200.
        """
        d = Deployment(self)
        yield d.homes()
        yield d.edge([d.uris["home1"], d.uris["home2"]])
        alice = yield d.agent("alice", d.uris["edge"])
        bob = yield d.agent("bob", d.uris["edge"])
        received = []
        alice.onMessage = received.append
        response = yield bob.message("alice@example.com", "hello alice")
        self.assertEqual(response.code, 200)
        [message] = received
        self.assertEqual(message.body, b"hello alice")
        self.assertNotIn("sipdist-peer", message.headers)
        self.assertNotIn("proxy-authorization", message.headers)

    @defer.inlineCallbacks
    def test_subscribe(self):
        """
        alice (home1) subscribes to the presence of bob (home2) through the
        edge: home1 routes the SUBSCRIBE to home2, whose notifier accepts
        it; its NOTIFY comes back to alice along the route set.
        """
        d = Deployment(self)
        yield d.homes()
        yield d.edge([d.uris["home1"]])
        alice = yield d.agent("alice", d.uris["edge"])
        notified = defer.Deferred()
        subscription = yield alice.subscribe("bob@example.com")
        if subscription.notifications:
            notified.callback(subscription.notifications[0])
        else:
            subscription.onNotify = lambda request: (
                notified.called or notified.callback(request))
        notify = yield notified
        self.assertEqual(notify.method, "NOTIFY")
        self.assertEqual(d.services["home2"].router.fromPeer, 1)
        self.assertEqual(_connections(alice), 1)

    @defer.inlineCallbacks
    def test_notRegisteredAndUnknown(self):
        """
        A call to a user with no binding is a 480; to a user the store does
        not know, a 404.
        """
        d = Deployment(self)
        yield d.homes()
        yield d.edge([d.uris["home1"]])
        alice = yield d.agent("alice", d.uris["edge"])
        failure = yield self.assertFailure(
            alice.call("carol@example.com").deferred, CallFailed)
        self.assertEqual(failure.code, 480)
        failure = yield self.assertFailure(
            alice.call("nobody@example.com").deferred, CallFailed)
        self.assertEqual(failure.code, 404)


class FlowTests(TestCase):
    """
    Requests to a user follow the flow the user registered over.
    """

    timeout = 30

    @defer.inlineCallbacks
    def test_directBindingUsesItsFlow(self):
        """
        bob registered directly at home2 over TCP: a call from alice
        (through the edge and home1) reaches him over the connection he
        opened to home2.
        """
        d = Deployment(self)
        yield d.homes()
        yield d.edge([d.uris["home1"]])
        bob = yield d.agent("bob", d.uris["home2"])
        alice = yield d.agent("alice", d.uris["edge"])
        call, incoming = yield _call(alice, bob, waitForCallee=False)
        self.assertEqual(incoming.transaction.flow.remote[1],
                         _port(d.services["home2"]))
        self.assertEqual(_connections(bob), 1)
        response = yield call.hangup()
        self.assertEqual(response.code, 200)

    @defer.inlineCallbacks
    def test_flowGone(self):
        """
        Once the connection bob registered over through the edge is closed,
        the edge cannot reach him: a call to him gets 430 Flow Failed
        (RFC 5626).
        """
        d = Deployment(self)
        yield d.homes()
        yield d.edge([d.uris["home1"]])
        bob = yield d.agent("bob", d.uris["edge"])
        alice = yield d.agent("alice", d.uris["edge"])
        edge = d.services["edge"].transport
        before = edge.connectionCount
        yield bob.stop()
        # Until the edge has seen bob's connection close (bounded).
        for _ in range(500):
            if edge.connectionCount < before:
                break
            yield task.deferLater(reactor, 0.01, lambda: None)
        self.assertEqual(edge.connectionCount, before - 1)
        failure = yield self.assertFailure(
            alice.call("bob@example.com").deferred, CallFailed)
        self.assertEqual(failure.code, 430)


class Figure10Tests(TestCase):
    """
    Figure 10: client -> edge -> internal edge -> home2.
    """

    timeout = 30

    @defer.inlineCallbacks
    def deployment(self):
        d = Deployment(self)
        yield d.homes()
        yield d.start("internal-edge", "internal-edge")
        yield d.edge([d.uris["internal-edge"]])
        return d

    @defer.inlineCallbacks
    def test_register(self):
        """
        bob's registration ends on home2 with a Path through the internal
        edge and the edge; home1 is not in the path.
        """
        d = yield self.deployment()
        bob = yield d.agent("bob", d.uris["edge"])
        [binding] = d.bindings("home2", "bob")
        internal, edge = binding.path
        self.assertIn(";sd=internal-edge", internal)
        self.assertIn(";sd=edge", edge)
        self.assertEqual(d.services["internal-edge"].processor.proxied, 1)
        self.assertEqual(d.services["home1"].processor.served, 0)
        self.assertEqual(d.services["home1"].processor.proxied, 0)
        self.assertEqual(_connections(bob), 1)

    @defer.inlineCallbacks
    def test_callAndMessage(self):
        """
        A call from alice (home1) to bob (home2), both behind the edge and
        the internal edge, completes over bob's own connection; so does a
        MESSAGE back.
        """
        d = yield self.deployment()
        bob = yield d.agent("bob", d.uris["edge"])
        alice = yield d.agent("alice", d.uris["edge"])
        call, incoming = yield _call(alice, bob)
        self.assertEqual(incoming.transaction.flow.remote[1],
                         _port(d.services["edge"]))
        received = []
        alice.onMessage = received.append
        response = yield bob.message("alice@example.com", "hi")
        self.assertEqual(response.code, 200)
        self.assertEqual(len(received), 1)
        response = yield call.hangup()
        self.assertEqual(response.code, 200)
        self.assertEqual(_connections(bob), 1)
        self.assertEqual(_connections(alice), 1)
        _assertAllSealed(self, d)


class Figure12Tests(TestCase):
    """
    Figure 12: client -> forward proxy -> distributor -> home2: the
    distributor proxies (two Via values) instead of redirecting.
    """

    timeout = 30

    @defer.inlineCallbacks
    def test_forwardProxyToDistributor(self):
        """
        A second sipdist acting as a plain forward proxy (an edge whose next
        hop is the distributor) passes bob's REGISTER on; the distributor
        proxies it to home2 and redirects nothing.
        """
        d = Deployment(self)
        yield d.homes()
        yield d.start("distributor", "distributor")
        yield d.start("forward", "edge",
                      **{"next-hop": [d.uris["distributor"]]})
        bob = yield d.agent("bob", d.uris["forward"])
        self.assertEqual(bob.result.redirects, [])
        [binding] = d.bindings("home2", "bob")
        self.assertEqual(len(binding.path), 2)
        distributor = d.services["distributor"].processor
        self.assertEqual((distributor.proxied, distributor.redirects), (1, 0))
        alice = yield d.agent("alice", d.uris["forward"])
        received = []
        bob.onMessage = received.append
        response = yield alice.message("bob@example.com", "through a proxy")
        self.assertEqual(response.code, 200)
        self.assertEqual(len(received), 1)


def _inviteRequest(ua, uri, cseq=1, callId=None, authorization=None):
    request = ua.newRequest("INVITE", uri, callId=callId, cseq=cseq)
    if authorization is not None:
        request.headers["proxy-authorization"] = [authorization]
    return request


class CallControlTests(TestCase):
    """
    CANCEL, Max-Forwards and loops through the edge.
    """

    timeout = 30

    @defer.inlineCallbacks
    def deployment(self):
        d = Deployment(self)
        yield d.homes()
        yield d.edge([d.uris["home1"]])
        return d

    @defer.inlineCallbacks
    def test_cancelRingingCall(self):
        """
        alice cancels her call while bob's phone rings: the CANCEL follows
        the INVITE hop by hop, bob's INVITE is answered 487, and so is
        alice's.
        """
        from sipdist.auth.client import answerChallenge
        from sipdist.sip.uri import parseURI

        d = yield self.deployment()
        bob = yield d.agent("bob", d.uris["edge"])
        alice = yield d.agent("alice", d.uris["edge"])
        ringing = []
        bob.onInvite = ringing.append
        uri = parseURI("sip:bob@example.com")
        flow = yield alice.connect(alice.outboundProxy)
        request = _inviteRequest(alice, uri)
        first = alice.transactions.sendRequest(
            alice._prepare(request, flow, True), flow)
        challenge = yield first.deferred
        self.assertEqual(challenge.code, 407)
        value, session = answerChallenge(
            challenge.values("proxy-authenticate"), "INVITE",
            request.uriText, "alice", PASSWORD)
        request = _inviteRequest(alice, uri, cseq=2, callId=request.callID,
                                 authorization=value)
        client = alice.transactions.sendRequest(
            alice._prepare(request, flow, True), flow)
        provisional = defer.Deferred()
        client.onProvisional = lambda response: (
            response.code == 180 and not provisional.called
            and provisional.callback(response))
        yield provisional
        client.cancel()
        response = yield client.deferred
        self.assertEqual(response.code, 487)
        [call] = ringing
        self.assertEqual(call.transaction.response.code, 487)

    @defer.inlineCallbacks
    def test_maxForwards(self):
        """
        A request with Max-Forwards 0 is answered 483 by the edge; with 1,
        the edge passes it on with 0 and home1 answers 483 (before asking
        for credentials; the transport layer checks it, RFC 3261 section
        16.3 step 3).
        """
        d = yield self.deployment()
        alice = yield d.agent("alice", d.uris["edge"])
        for value in ("0", "1"):
            request = alice.newRequest("MESSAGE", "sip:bob@example.com")
            request.headers["max-forwards"] = [value]
            outcome = yield alice.send(request, alice.outboundProxy,
                                       preemptive=False)
            self.assertEqual(outcome.response.code, 483, value)
        self.assertEqual(d.services["edge"].transport.answeredErrors, 1)
        self.assertEqual(d.services["home1"].transport.answeredErrors, 1)

    @defer.inlineCallbacks
    def test_loop(self):
        """
        Two edges whose next hops point at each other: the request comes
        back to the first, which answers 482 Loop Detected.
        """
        from sipdist.roles.edge import NextHops

        d = Deployment(self)
        yield d.homes()
        first = yield d.start("edge-a", "edge", **{"next-hop": ["sip:x"]})
        second = yield d.start("edge-b", "edge", **{"next-hop": ["sip:x"]})
        first.processor.nextHops = NextHops([d.uris["edge-b"]])
        second.processor.nextHops = NextHops([d.uris["edge-a"]])
        ua = yield startAgent(self, reactor, "alice@example.com", PASSWORD)
        failure = yield self.assertFailure(
            Login(ua, ua.locator, server=d.uris["edge-a"]).run(),
            Exception)
        self.assertIn("482", str(failure))
        self.assertEqual(first.proxy.loops, 1)


class TLSBetweenServersTests(TestCase):
    """
    TLS between the servers, with certificates verified (service-identity)
    and mutual TLS: the homes require a client certificate from the pool's
    CA.
    """

    timeout = 30

    @defer.inlineCallbacks
    def test_figure8OverMutualTLS(self):
        """
        Figure 8 with TLS inside (edge -> home1 -> home2, homes requiring
        client certificates): registration and a call complete, over TLS
        connections between the servers.
        """
        d = Deployment(self, "tls")
        yield d.homes()
        yield d.edge([d.uris["home1"]])
        self.assertTrue(d.uris["home1"].startswith("sips:"))
        bob = yield d.agent("bob", d.uris["edge"])
        alice = yield d.agent("alice", d.uris["edge"])
        [binding] = d.bindings("home2", "bob")
        self.assertIn(";transport=tls", binding.path[0])
        call, incoming = yield _call(alice, bob, waitForCallee=False)
        response = yield call.hangup()
        self.assertEqual(response.code, 200)
        flows = [p.flow for p in d.services["home2"].transport._open]
        self.assertTrue(flows)
        self.assertEqual({f.transport for f in flows}, {"TLS"})

    @defer.inlineCallbacks
    def test_unverifiedServerRefused(self):
        """
        A home whose certificate is not from the CA the edge trusts is not
        talked to: the login through the edge fails, and the home saw no
        request.
        """
        from sipdist.client.login import LoginFailed

        # The refused handshake ends in a transaction timeout (64*T1).
        d = Deployment(self, "tls", t1=0.01)
        certs = FilePath(d.ca).parent()
        other = serverContextFactory(certs.child("other.pem").path,
                                     certs.child("other.key").path)
        yield d.start("home1", "home", **{"tls-server-options": other})
        yield d.edge([d.uris["home1"]])
        ua = yield startAgent(self, reactor, "alice@example.com", PASSWORD,
                              T1=0.01)
        yield self.assertFailure(
            Login(ua, ua.locator, server=d.uris["edge"]).run(), LoginFailed)
        self.assertEqual(d.services["home1"].processor.served, 0)
        self.assertEqual(d.services["home1"].processor.proxied, 0)

    @defer.inlineCallbacks
    def test_clientCertificateRequired(self):
        """
        An edge without a certificate of its own cannot connect to a home
        that requires one (mutual TLS): the login through it fails.
        """
        from sipdist.client.login import LoginFailed
        from sipdist.sip.tls import clientContextFactory

        d = Deployment(self, "tls", t1=0.01)
        yield d.homes()
        yield d.edge([d.uris["home1"]], **{
            "tls-client-options":
                lambda hostname: clientContextFactory(hostname, [d.ca])})
        ua = yield startAgent(self, reactor, "alice@example.com", PASSWORD,
                              T1=0.01)
        yield self.assertFailure(
            Login(ua, ua.locator, server=d.uris["edge"]).run(), LoginFailed)
        self.assertEqual(d.services["home1"].processor.served, 0)
        self.assertEqual(d.services["home1"].processor.proxied, 0)


class SippTests(TestCase):
    """
    SIPp as the clients: Figure 12 with SIPp registering through a forward
    proxy, and a call between SIPp users of different homes through the
    edge.
    """

    timeout = 60

    def sipp(self, scenario, target, user, extra=(), **kw):
        return runSipp(
            reactor, SIPP.child(scenario).path, target, transport="u1",
            calls=1, username=user, password=PASSWORD, service=user,
            extra=["-key", "domain", "example.com"] + list(extra), **kw)

    @defer.inlineCallbacks
    def test_registerThroughForwardProxy(self):
        """
        SIPp registers bob through a forward proxy (a sipdist edge) at the
        distributor, which proxies the REGISTER to home2.
        """
        requireTool("sipp")
        d = Deployment(self, "udp", algorithms=("MD5",))
        yield d.homes()
        yield d.start("distributor", "distributor")
        forward = yield d.start("forward", "edge",
                                **{"next-hop": [d.uris["distributor"]]})
        code, out, err = yield self.sipp(
            "register_auth.xml", f"127.0.0.1:{_port(forward)}", "bob",
            ["-auth_uri", "example.com"])
        self.assertEqual(code, 0, (out[-800:], err[-800:]))
        self.assertEqual(len(d.bindings("home2", "bob")), 1)
        distributor = d.services["distributor"].processor
        self.assertEqual((distributor.proxied, distributor.redirects), (1, 0))

    @defer.inlineCallbacks
    def test_callThroughEdge(self):
        """
        SIPp bob registers through the edge (edge -> home1 -> home2) and
        answers (tests/sipp/uas_rr.xml) on the port it registered from; SIPp
        alice (home1) calls him through the edge: INVITE/407/ACK, INVITE
        with credentials, 180, 200, ACK and BYE all complete.
        """
        requireTool("sipp")
        d = Deployment(self, "udp", algorithms=("MD5",))
        yield d.homes()
        edge = yield d.edge([d.uris["home1"]], outside="udp")
        target = f"127.0.0.1:{_port(edge)}"
        calleePort = freePort("udp")
        code, out, err = yield self.sipp(
            "register_auth.xml", target, "bob", ["-auth_uri", "example.com"],
            localPort=calleePort)
        self.assertEqual(code, 0, (out[-800:], err[-800:]))
        [binding] = d.bindings("home2", "bob")
        self.assertEqual(len(binding.path), 2)
        callee = self.sipp("uas_rr.xml", target, "bob", localPort=calleePort)
        # Give the callee's SIPp a moment to bind its port (the INVITE would
        # be retransmitted anyway).
        yield task.deferLater(reactor, 0.5, lambda: None)
        caller = yield self.sipp(
            "invite_auth.xml", target, "alice",
            ["-key", "callee", "bob", "-auth_uri", "bob@example.com"])
        calleeResult = yield callee
        self.assertEqual(caller[0], 0, (caller[1][-800:], caller[2][-800:]))
        self.assertEqual(calleeResult[0], 0,
                         (calleeResult[1][-800:], calleeResult[2][-800:]))
        self.assertEqual(d.services["home1"].router.toPeer, 1)
        self.assertEqual(d.services["home2"].router.local, 1)
