# -*- test-case-name: tests.test_proxy -*-
"""
Tests for L{sipdist.services.proxy}: the stateful proxy core (RFC 3261 section 16,
RFC 3327 Path, RFC 5626 flow tokens), driven through a real
L{TransactionLayer} and L{SIPServer} on a L{task.Clock} with recording
flows, and once end to end between two real servers on loopback.
"""

from twisted.internet import defer, reactor
from twisted.internet.protocol import DatagramProtocol
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase

from sipdist.sip.message import parseMessage, responseTo
from sipdist.services.proxy import (
    BRANCH_PREFIX, NextHopError, Proxy, ProxyContext, RouteSeals, nextHopFor,
    routeKey)
from sipdist.server import SIPServer, buildServer
from sipdist.sip.transaction import TransactionLayer
from sipdist.sip.uri import parseURI
from tests.interop import freePort

T1 = 0.5
US = ("192.0.2.10", 5060)
CLIENT = ("198.51.100.1", 5060)


def makeRequest(method="OPTIONS", uri="sip:bob@example.com", toTag=None,
                routes=(), maxForwards="70", extra=(), callID="call-1",
                cseq=1, branch="z9hG4bKclient1", vias=None):
    """
    A request as the transport hands it over: from a client behind another
    proxy (two Via values), parsed from text.
    """
    if vias is None:
        vias = [f"SIP/2.0/UDP {CLIENT[0]}:{CLIENT[1]};branch={branch}",
                "SIP/2.0/UDP ua.test:5062;branch=z9hG4bKua1"]
    lines = [f"{method} {uri} SIP/2.0"]
    lines += [f"Via: {via}" for via in vias]
    if maxForwards is not None:
        lines.append(f"Max-Forwards: {maxForwards}")
    lines += [f"Route: {route}" for route in routes]
    lines += list(extra)
    lines += [
        "From: <sip:alice@example.com>;tag=ft1",
        "To: <sip:bob@example.com>" + (f";tag={toTag}" if toTag else ""),
        f"Call-ID: {callID}",
        f"CSeq: {cseq} {method}",
        "Content-Length: 0", "", ""]
    return parseMessage("\r\n".join(lines).encode("utf-8"))


POOL_SECRET = "pool-secret-for-proxy-tests-0123456789"
SEALS = RouteSeals(routeKey(POOL_SECRET))


def sealedRoute(host="192.0.2.10", port=5060, routeId="1", callID="call-1",
                tag="ft1", hops=(), token=None, extra=""):
    """
    A Record-Route entry as the pool's server C{routeId} writes it for the
    dialog (C{callID}, C{tag}), binding the C{(host, port)} C{hops}.
    """
    user = f"{token}@" if token else ""
    params = f";sdm={SEALS.dialog(routeId, (host, port), callID, tag, token)}"
    for name, (hopHost, hopPort) in zip(("sdu", "sdn"), hops):
        params += f";{name}={SEALS.hop(routeId, callID, tag, hopHost, hopPort)}"
    return f"<sip:{user}{host}:{port}{extra};lr;sd={routeId}{params}>"


def sealOf(value, name="sdm"):
    """
    The value of seal parameter C{name} of a Route-like header value.
    """
    for param in value.strip("<>").split(";"):
        key, _, val = param.partition("=")
        if key == name:
            return val
    return None


class RecordingFlow:
    """
    A flow that records what is sent on it.
    """

    def __init__(self, transport, remote, token=None):
        self.transport = transport
        self.reliable = transport != "UDP"
        self.remote = remote
        self.token = token or f"tok-{transport}-{remote[0]}-{remote[1]}"
        self.sent = []

    def send(self, message):
        self.sent.append(message)
        return True

    def __repr__(self):
        return f"<RecordingFlow {self.transport} {self.remote}>"


class FakeTransportLayer:
    """
    Stands for L{TransportLayer}: C{connect} hands out one recording flow
    per destination, fails for the hosts in C{refused} and never fires for
    those in C{slow}.
    """

    def __init__(self):
        self.flows = {}
        self.byToken = {}
        self.connects = []
        self.refused = set()
        self.slow = set()

    def flow(self, transport, host, port):
        key = (transport, host, port)
        flow = self.flows.get(key)
        if flow is None:
            flow = self.flows[key] = RecordingFlow(transport, (host, port))
            self.byToken[flow.token] = flow
        return flow

    def connect(self, transport, host, port):
        self.connects.append((transport, host, port))
        if host in self.refused:
            return defer.fail(ConnectionRefusedError(host))
        if host in self.slow:
            return defer.Deferred()
        return defer.succeed(self.flow(transport, host, port))

    def flowByToken(self, token):
        return self.byToken.get(token)

    def existingFlow(self, transport, host, port):
        return self.flows.get((transport, host, port))


class ProxyingServer(SIPServer):
    """
    L{SIPServer} with the hooks a role adds for its proxy.
    """

    proxy = None

    def inviteCancelled(self, transaction):
        if not self.proxy.cancelled(transaction):
            SIPServer.inviteCancelled(self, transaction)

    def ackReceived(self, request, flow):
        self.proxy.forwardStateless(request, flow)


class ProxyTestMixin:
    """
    A proxy at 192.0.2.10:5060 (UDP and TCP) whose processor forwards every
    request with C{self.forwardArgs}.
    """

    def setUp(self):
        self.clock = Clock()
        self.server = ProxyingServer(self.clock, "proxy", "proxy.test",
                                     frozenset(["proxy.test"]))
        self.layer = TransactionLayer(self.clock, self.server, T1=T1)
        self.transport = FakeTransportLayer()
        self.proxy = Proxy(self.clock, self.layer, self.transport,
                           {"UDP": US, "TCP": US}, connectTimeout=10.0,
                           routeKey=routeKey(POOL_SECRET))
        self.server.proxy = self.proxy
        self.client = self.transport.flow("UDP", *CLIENT)
        self.forwardArgs = {"nextHop": "sip:home.test"}
        self.contexts = []
        self.server.processors = [self.proxy.routeInDialog, self._forward]

    def _forward(self, request, transaction):
        self.contexts.append(
            self.proxy.forward(request, transaction, **self.forwardArgs))
        return True

    def receive(self, message, flow=None):
        self.layer.messageReceived(message, flow or self.client)

    def downstream(self, host="home.test", port=5060, transport="UDP"):
        return self.transport.flow(transport, host, port)

    def answer(self, request, code, flow=None, **headers):
        """
        The next hop answers a request we sent it.
        """
        response = responseTo(request, code, toTag="dtag")
        for name, value in headers.items():
            response.headers[name.replace("_", "-")] = [value]
        self.layer.messageReceived(response, flow or self.downstream())
        return response

    def upstream(self):
        """
        The responses the client got.
        """
        return [m for m in self.client.sent if hasattr(m, "code")]

    def advance(self, seconds, step=0.5):
        for _ in range(int(seconds / step) + 1):
            self.clock.advance(step)

    def assertDrained(self):
        """
        Every response context, transaction and timer has ended.
        """
        self.advance(40)
        self.assertEqual(self.proxy.active, 0)
        self.assertEqual(self.layer.active, 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])


class NextHopTests(SynchronousTestCase):
    """
    L{nextHopFor} resolves URIs without DNS SRV.
    """

    def test_defaults(self):
        """
        UDP and 5060 by default, TLS and 5061 for sips, the transport
        parameter and maddr respected, IPv6 brackets removed.
        """
        cases = [
            ("sip:home.test", ("UDP", "home.test", 5060)),
            ("sips:home.test", ("TLS", "home.test", 5061)),
            ("sip:home.test;transport=tcp", ("TCP", "home.test", 5060)),
            ("sip:home.test:5070;transport=TLS", ("TLS", "home.test", 5070)),
            ("sip:[::1]:5080", ("UDP", "::1", 5080)),
            ("sip:x.test;maddr=192.0.2.9", ("UDP", "192.0.2.9", 5060)),
        ]
        for text, expected in cases:
            self.assertEqual(nextHopFor(parseURI(text)), expected, text)

    def test_unsupportedTransport(self):
        """
        A transport we do not have is a L{NextHopError}.
        """
        self.assertRaises(NextHopError, nextHopFor,
                          parseURI("sip:h.test;transport=sctp"))


class ForwardTests(ProxyTestMixin, SynchronousTestCase):
    """
    Requests forwarded to one target, and their responses.
    """

    def test_viaAddedAndRemoved(self):
        """
        The forwarded request carries our Via, with a branch of ours, on top
        of the received ones, and Max-Forwards decremented; the response
        goes upstream without it.
        """
        self.receive(makeRequest("REGISTER", uri="sip:example.com"))
        [sent] = self.downstream().sent
        vias = sent.values("via")
        self.assertEqual(len(vias), 3)
        top = sent.topVia()
        self.assertEqual((top.host, top.port, top.transport),
                         ("192.0.2.10", 5060, "UDP"))
        self.assertTrue(top.branch.startswith(BRANCH_PREFIX))
        self.assertEqual(vias[1:], makeRequest().values("via"))
        self.assertEqual(sent.header("max-forwards"), "69")
        self.assertEqual(sent.uriText, "sip:example.com")
        self.answer(sent, 200)
        [response] = self.upstream()
        self.assertEqual(response.code, 200)
        self.assertEqual(response.values("via"), makeRequest().values("via"))
        self.assertIsInstance(self.contexts[0], ProxyContext)
        self.assertDrained()

    def test_targetReplacesRequestURI(self):
        """
        A target becomes the Request-URI, and the request goes there.
        """
        self.forwardArgs = {"target": "sip:bob@192.0.2.20:5070"}
        self.receive(makeRequest())
        [sent] = self.downstream("192.0.2.20", 5070).sent
        self.assertEqual(sent.uriText, "sip:bob@192.0.2.20:5070")

    def test_maxForwardsMissing(self):
        """
        A request without Max-Forwards leaves with 70.
        """
        self.receive(makeRequest(maxForwards=None))
        [sent] = self.downstream().sent
        self.assertEqual(sent.header("max-forwards"), "70")

    def test_maxForwardsZero(self):
        """
        A request whose Max-Forwards is 0 is answered 483 and not forwarded.
        """
        self.receive(makeRequest("MESSAGE", maxForwards="0"))
        self.assertEqual([r.code for r in self.upstream()], [483])
        self.assertEqual(self.downstream().sent, [])
        self.assertIsNone(self.contexts[0])
        self.assertEqual(self.proxy.tooManyHops, 1)
        self.assertDrained()

    def test_loopDetected(self):
        """
        A request that comes back to us unchanged (same Request-URI, From,
        To, Call-ID, CSeq, Route) with our Via in it is answered 482.
        """
        self.receive(makeRequest())
        [sent] = self.downstream().sent
        # home.test sends it back to us.
        self.layer.messageReceived(sent, self.downstream())
        [loop] = [m for m in self.downstream().sent if hasattr(m, "code")]
        self.assertEqual((loop.code, loop.phrase), (482, "Loop Detected"))
        self.assertEqual(self.proxy.loops, 1)

    def test_spiralIsNotALoop(self):
        """
        A request that comes back retargeted (another Request-URI) is a
        spiral, and is forwarded again.
        """
        self.forwardArgs = {"target": "sip:bob@home.test"}
        self.receive(makeRequest())
        [sent] = self.downstream().sent
        self.forwardArgs = {"target": "sip:bob@192.0.2.30"}
        self.layer.messageReceived(sent, self.downstream())
        [again] = self.downstream("192.0.2.30").sent
        self.assertEqual(len(again.values("via")), 4)
        self.assertEqual(self.proxy.loops, 0)

    def test_proxyRequire(self):
        """
        A Proxy-Require we do not support is answered 420 with Unsupported.
        """
        self.receive(makeRequest(extra=["Proxy-Require: foo, path"]))
        [response] = self.upstream()
        self.assertEqual(response.code, 420)
        self.assertEqual(response.header("unsupported"), "foo")

    def test_provisionalForwarded(self):
        """
        A 180 goes upstream without our Via; a 100 does not.
        """
        self.receive(makeRequest("INVITE"))
        [sent] = self.downstream().sent
        self.answer(sent, 100)
        self.answer(sent, 180)
        self.assertEqual([r.code for r in self.upstream()], [180])
        self.assertEqual(self.upstream()[0].values("via"),
                         makeRequest().values("via"))
        self.answer(sent, 200)
        self.assertEqual([r.code for r in self.upstream()], [180, 200])
        self.assertDrained()

    def test_503BecomesA500(self):
        """
        A 503 from downstream goes upstream as a 500 (section 16.7).
        """
        self.receive(makeRequest())
        [sent] = self.downstream().sent
        self.answer(sent, 503, retry_after="30")
        [response] = self.upstream()
        self.assertEqual(response.code, 500)

    def test_timeout408(self):
        """
        A next hop that never answers gets the request retransmitted until
        timer F; the client then gets a 408, and nothing is left behind.
        """
        self.receive(makeRequest())
        self.advance(64 * T1 + 0.5)
        self.assertGreater(len(self.downstream().sent), 5)
        [response] = self.upstream()
        self.assertEqual(response.code, 408)
        self.assertEqual(self.proxy.timeouts, 1)
        self.assertDrained()

    def test_connectionRefused503(self):
        """
        A next hop that refuses the connection is a 503 naming the problem.
        """
        self.transport.refused.add("home.test")
        self.receive(makeRequest())
        [response] = self.upstream()
        self.assertEqual((response.code, response.phrase),
                         (503, "Next Hop Unreachable"))
        self.assertDrained()

    def test_connectTimeout503(self):
        """
        A connection that is never made is a 503 after connectTimeout.
        """
        self.transport.slow.add("home.test")
        self.receive(makeRequest())
        self.assertEqual(self.upstream(), [])
        self.clock.advance(10)
        self.assertEqual([r.code for r in self.upstream()], [503])
        self.assertDrained()

    def test_badNextHop502(self):
        """
        A next hop over a transport we lack is a 502.
        """
        self.forwardArgs = {"nextHop": "sip:home.test;transport=sctp"}
        self.receive(makeRequest())
        [response] = self.upstream()
        self.assertEqual(response.code, 502)
        self.assertDrained()

    def test_tableBounded(self):
        """
        Beyond maxContexts pending requests, new ones get a 503 with
        Retry-After.
        """
        self.proxy.maxContexts = 1
        self.receive(makeRequest(callID="a", branch="z9hG4bKa"))
        self.receive(makeRequest(callID="b", branch="z9hG4bKb"))
        [response] = self.upstream()
        self.assertEqual(response.code, 503)
        self.assertEqual(response.header("retry-after"), "5")


class RecordRouteTests(ProxyTestMixin, SynchronousTestCase):
    """
    Record-Route and Path.
    """

    def test_inviteRecordRouted(self):
        """
        An INVITE outside a dialog gets our Record-Route, with lr, sealed
        to its dialog (Call-ID, From tag) and binding the next hop.
        """
        self.receive(makeRequest("INVITE"))
        [sent] = self.downstream().sent
        [entry] = sent.values("record-route")
        self.assertTrue(entry.startswith("<sip:192.0.2.10:5060;lr;sd=1;"),
                        entry)
        self.assertEqual(sealOf(entry), SEALS.dialog(
            "1", ("192.0.2.10", 5060), "call-1", "ft1"))
        self.assertEqual(sealOf(entry, "sdn"),
                         SEALS.hop("1", "call-1", "ft1", "home.test", 5060))

    def test_notRecordRouted(self):
        """
        OPTIONS, an in-dialog INVITE, and an INVITE forwarded with
        recordRoute=False get no Record-Route.
        """
        self.receive(makeRequest("OPTIONS", callID="1", branch="z9hG4bK1"))
        self.receive(makeRequest("INVITE", toTag="x", callID="2",
                                 branch="z9hG4bK2"))
        self.forwardArgs["recordRoute"] = False
        self.receive(makeRequest("INVITE", callID="3", branch="z9hG4bK3"))
        for sent in self.downstream().sent:
            self.assertEqual(sent.values("record-route"), [])

    def test_doubleRecordRoute(self):
        """
        An INVITE leaving over another transport than it came on gets two
        Record-Route entries: the outer one for the next hop's transport.
        Both are sealed to the dialog.
        """
        self.forwardArgs = {"nextHop": "sip:home.test;transport=tcp"}
        self.receive(makeRequest("INVITE"))
        [sent] = self.downstream(transport="TCP").sent
        outer, inner = sent.values("record-route")
        self.assertTrue(outer.startswith(
            "<sip:192.0.2.10:5060;transport=tcp;lr;sd=1;"), outer)
        self.assertTrue(inner.startswith("<sip:192.0.2.10:5060;lr;sd=1;"),
                        inner)
        for entry in (outer, inner):
            self.assertEqual(sealOf(entry), SEALS.dialog(
                "1", ("192.0.2.10", 5060), "call-1", "ft1"))
        self.assertEqual(sent.topVia().transport, "TCP")

    def test_pathWithFlowToken(self):
        """
        A REGISTER forwarded with addPath and the client's flow token gets
        a Path naming us with the token, sealed to it, and Require: path.
        """
        self.forwardArgs = {"nextHop": "sip:home.test", "addPath": True,
                            "flowToken": True}
        self.receive(makeRequest("REGISTER", uri="sip:example.com"))
        [sent] = self.downstream().sent
        token = self.client.token
        seal = SEALS.path("1", ("192.0.2.10", 5060), token)
        self.assertEqual(sent.values("path"),
                         [f"<sip:{token}@192.0.2.10:5060;lr;ob;sd=1;"
                          f"sdm={seal}>"])
        self.assertEqual(sent.values("require"), ["path"])
        self.assertEqual(sent.values("record-route"), [])

    def test_inboundRequestUsesFlowToken(self):
        """
        A request from the registrar's side whose Route is our Path entry
        goes to the client over the flow the token names, our Route removed;
        the response comes back the way it came.
        """
        route = f"<sip:{self.client.token}@192.0.2.10:5060;lr;ob;sd=1>"
        invite = makeRequest("INVITE", uri="sip:alice@10.0.0.5:5099",
                             routes=[route], branch="z9hG4bKhome")
        self.receive(invite, self.downstream())
        [sent] = [m for m in self.client.sent if not hasattr(m, "code")]
        self.assertEqual(sent.uriText, "sip:alice@10.0.0.5:5099")
        self.assertEqual(sent.values("route"), [])
        self.answer(sent, 486, flow=self.client)
        [response] = [m for m in self.downstream().sent
                      if hasattr(m, "code") and m.code == 486]
        self.assertEqual(response.values("via"), invite.values("via"))

    def test_outboundRequestIgnoresOwnToken(self):
        """
        A request arriving on the very flow its token names is going the
        other way: it follows the next Route, when that is the hop the
        sealed entry binds.
        """
        route = sealedRoute(token=self.client.token,
                            hops=[("home.test", 5070)])
        self.receive(makeRequest("BYE", toTag="t", routes=[
            route, "<sip:home.test:5070;lr>"]))
        [sent] = self.downstream("home.test", 5070).sent
        self.assertEqual(sent.values("route"), ["<sip:home.test:5070;lr>"])

    def test_flowGone430(self):
        """
        A token whose flow is gone is answered 430 Flow Failed.
        """
        self.receive(makeRequest("INVITE", routes=[
            "<sip:gone@192.0.2.10:5060;lr;sd=1>"]), self.downstream())
        [response] = [m for m in self.downstream().sent if hasattr(m, "code")]
        self.assertEqual(response.code, 430)


class RoutingTests(ProxyTestMixin, SynchronousTestCase):
    """
    Loose routing (section 16.4) and requests in a dialog.
    """

    def test_looseRouting(self):
        """
        An in-dialog request whose top Route is ours, sealed to its dialog,
        loses that entry and goes to the next Route (the hop the entry
        binds); its Request-URI is kept.
        """
        self.receive(makeRequest(
            "BYE", uri="sip:bob@192.0.2.77", toTag="t",
            routes=[sealedRoute(hops=[("next.test", 5070)]),
                    "<sip:next.test:5070;lr>"]))
        [sent] = self.downstream("next.test", 5070).sent
        self.assertEqual(sent.values("route"), ["<sip:next.test:5070;lr>"])
        self.assertEqual(sent.uriText, "sip:bob@192.0.2.77")

    def test_calleeSideUsesToTag(self):
        """
        The callee's requests carry the dialog's first From tag in their
        To: the seal checks against it too.
        """
        request = makeRequest(
            "BYE", uri="sip:alice@192.0.2.77", toTag="ft1",
            routes=[sealedRoute(hops=[("192.0.2.77", 5060)])])
        request.headers["from"] = ["<sip:bob@example.com>;tag=callee"]
        self.assertIsNone(self.proxy.checkRouteSet(request, self.client))

    def test_routeByParameterAlone(self):
        """
        A Route with our sd parameter but another host is not ours: not
        relayed, left to the next processor.
        """
        request = makeRequest("BYE", uri="sip:bob@192.0.2.77", toTag="t",
                              routes=["<sip:proxy.example;lr;sd=1>"])
        self.assertFalse(self.proxy.routeInDialog(request, None))
        self.assertFalse(self.proxy.isOwnURI(parseURI(
            "sip:proxy.example;lr;sd=1")))

    def test_targetIgnoredWhileRouteRemains(self):
        """
        While a Route not naming us remains, the target does not replace
        the Request-URI and the request follows the Route.
        """
        self.forwardArgs = {"target": "sip:other@192.0.2.99"}
        self.receive(makeRequest(routes=["<sip:next.test;lr>"]))
        [sent] = self.downstream("next.test").sent
        self.assertEqual(sent.uriText, "sip:bob@example.com")

    def test_initialRequestToUsAlone(self):
        """
        An initial request whose only Route is ours is left to the role's
        decision (routeInDialog returns False).
        """
        request = makeRequest(routes=["<sip:192.0.2.10;lr>"])
        self.assertFalse(self.proxy.routeInDialog(request, None))

    def test_ackFor2xxStateless(self):
        """
        An ACK for a 2xx with our sealed Route is forwarded statelessly to
        the Request-URI it binds; its retransmission gets the same branch.
        An ACK not routed through us is dropped.
        """
        ack = makeRequest("ACK", uri="sip:bob@192.0.2.77", toTag="t",
                          routes=[sealedRoute(hops=[("192.0.2.77", 5060)])])
        self.receive(ack)
        self.receive(ack)
        first, second = self.downstream("192.0.2.77").sent
        self.assertEqual(first.values("route"), [])
        self.assertEqual(first.header("max-forwards"), "69")
        self.assertTrue(first.topVia().branch.startswith(BRANCH_PREFIX))
        self.assertEqual(first.topVia().branch, second.topVia().branch)
        self.assertEqual(self.layer.active, 0)
        stray = makeRequest("ACK", uri="sip:bob@192.0.2.88", toTag="t")
        self.assertFalse(self.proxy.forwardStateless(stray, self.client))
        self.assertNotIn(("UDP", "192.0.2.88", 5060), self.transport.flows)

    def test_ackUnsealedDropped(self):
        """
        An ACK whose Route names us without a seal, or with a seal for
        another dialog, or towards a hop the seal does not bind, is not
        forwarded.
        """
        for route in ["<sip:192.0.2.10;lr;sd=1>",
                      sealedRoute(callID="other", hops=[("192.0.2.77", 5060)]),
                      sealedRoute(hops=[("192.0.2.78", 5060)])]:
            ack = makeRequest("ACK", uri="sip:bob@192.0.2.77", toTag="t",
                              routes=[route])
            self.assertFalse(self.proxy.forwardStateless(ack, self.client))
        self.assertNotIn(("UDP", "192.0.2.77", 5060), self.transport.flows)


class RouteSealTests(ProxyTestMixin, SynchronousTestCase):
    """
    What L{Proxy.routeInDialog} relays without authentication: only a
    request along a route set the pool sealed, to the hop the route set
    was made with.  Anything else goes on down the chain (here, a
    processor recording it, standing for the authenticating one).
    """

    def setUp(self):
        ProxyTestMixin.setUp(self)
        self.passedOn = []
        self.server.processors = [self.proxy.routeInDialog, self._record]

    def _record(self, request, transaction):
        self.passedOn.append(request)
        transaction.respond(responseTo(request, 407, "Proxy Authentication "
                                                     "Required"))
        return True

    def relayed(self, route, uri="sip:bob@192.0.2.77", **kw):
        """
        Send a BYE with C{route}; return whether it was relayed.
        """
        kw.setdefault("toTag", "t")
        self.sends = getattr(self, "sends", 0) + 1
        kw.setdefault("branch", f"z9hG4bKseal{self.sends}")
        before = len(self.passedOn)
        self.receive(makeRequest("BYE", uri=uri, routes=route, **kw))
        return len(self.passedOn) == before

    def test_openRelayRefused(self):
        """
        The relay of the issue: our Route with another after it, no seal,
        a To tag: not relayed but handed on (and challenged), nothing sent
        to the foreign host.
        """
        self.assertFalse(self.relayed(["<sip:192.0.2.10;lr>",
                                       "<sip:evil.test;lr>"]))
        self.assertFalse(self.relayed(["<sip:192.0.2.10;lr;sd=1>",
                                       "<sip:evil.test;lr>"],
                                      branch="z9hG4bK2"))
        self.assertEqual(self.transport.flows.get(("UDP", "evil.test", 5060)),
                         None)
        self.assertEqual([m.code for m in self.upstream()], [407, 407])
        self.assertEqual(self.proxy.unsealed, 2)

    def test_forgedSeal(self):
        """
        A seal made with another key, or garbage, is refused.
        """
        forged = RouteSeals(routeKey("not-the-pool-secret-0123456789"))
        route = ("<sip:192.0.2.10:5060;lr;sd=1;sdm="
                 f"{forged.dialog('1', ('192.0.2.10', 5060), 'call-1', 'ft1')}"
                 ";sdn="
                 f"{forged.hop('1', 'call-1', 'ft1', '192.0.2.77', 5060)}>")
        self.assertFalse(self.relayed([route]))
        self.assertFalse(self.relayed(
            ["<sip:192.0.2.10:5060;lr;sd=1;sdm=d.AAAAAAAAAAAAAAAA>"],
            branch="z9hG4bK2"))

    def test_sealOfAnotherDialog(self):
        """
        A valid seal taken from another dialog does not carry a request of
        this one.
        """
        route = sealedRoute(callID="mine", hops=[("192.0.2.77", 5060)])
        self.assertFalse(self.relayed([route], callID="victim"))
        self.assertTrue(self.relayed([route], callID="mine",
                                     branch="z9hG4bK2"))

    def test_foreignHopAfterSealedEntry(self):
        """
        A sealed entry of a real dialog with a foreign Route appended, or
        a Request-URI changed to a foreign host, is not relayed: the hop
        after us is not one the route set was made with.
        """
        route = sealedRoute(hops=[("192.0.2.77", 5060)])
        self.assertFalse(self.relayed([route, "<sip:evil.test;lr>"]))
        self.assertFalse(self.relayed([route], uri="sip:x@evil.test",
                                      branch="z9hG4bK2"))
        self.assertFalse(self.relayed(
            [route], uri="sip:bob@192.0.2.77;maddr=evil.test",
            branch="z9hG4bK3"))
        self.assertNotIn(("UDP", "evil.test", 5060), self.transport.flows)

    def test_tokenMovedToAnotherDialog(self):
        """
        A flow token taken from one dialog's entry and put in an entry
        sealed for another dialog does not reach that flow: the seal covers
        the token.
        """
        victim = self.transport.flow("TCP", "198.51.100.9", 40000)
        route = sealedRoute(hops=[("192.0.2.77", 5060)])
        moved = route.replace("<sip:", f"<sip:{victim.token}@")
        self.assertFalse(self.relayed([moved]))
        self.assertEqual(victim.sent, [])

    def test_nextSealedEntryOfThePool(self):
        """
        The hop after us may be another server's entry of the same dialog,
        sealed with the pool's key (the route set grows after us).
        """
        self.assertTrue(self.relayed([
            sealedRoute(),
            sealedRoute(host="192.0.2.20", routeId="home2")]))
        [sent] = self.downstream("192.0.2.20", 5060).sent
        self.assertEqual(len(sent.values("route")), 1)

    def test_sealedEntryMovedToAnotherHost(self):
        """
        Another server's sealed entry of the same dialog, its host changed
        to a foreign one (or a maddr added), is not a hop of the route set:
        the seal covers the entry's address.
        """
        entry = sealedRoute(host="192.0.2.20", routeId="home2")
        for moved in (entry.replace("192.0.2.20", "203.0.113.66"),
                      entry.replace(";lr", ";maddr=203.0.113.66;lr")):
            self.assertFalse(self.relayed([sealedRoute(), moved]))
        self.assertNotIn(("UDP", "203.0.113.66", 5060), self.transport.flows)

    def test_outboundProxyRoute(self):
        """
        The lone Route naming us that a client with us as its outbound
        proxy sends is not a route set of the pool: not relayed, and said
        so.
        """
        request = makeRequest("INVITE", uri="sip:bob@192.0.2.77",
                              routes=["<sip:192.0.2.10:5060;lr>"])
        self.assertEqual(self.proxy.checkRouteSet(request, self.client),
                         "Route entry not made by the pool")

    def test_pathNeedsPeerSignature(self):
        """
        A Path entry of ours is followed only by a request a pool server
        signed.
        """
        signed = []
        self.proxy.peerVerify = lambda request, flow: (
            "home2" if request.headers.get("sipdist-peer") else None)
        seal = SEALS.path("1", ("192.0.2.10", 5060), None)
        path = f"<sip:192.0.2.10:5060;lr;sd=1;sdm={seal}>"
        request = makeRequest("INVITE", uri="sip:bob@192.0.2.77",
                              routes=[path, "<sip:edge.test;lr>"])
        self.assertIsNotNone(self.proxy.checkRouteSet(request, self.client))
        request.headers["sipdist-peer"] = ["home2;ts=0;sig=x"]
        self.assertIsNone(self.proxy.checkRouteSet(request, self.client))
        self.assertEqual(signed, [])

class ForkingTests(ProxyTestMixin, SynchronousTestCase):
    """
    Several targets: best response selection (section 16.7).
    """

    targets = ["sip:bob@192.0.2.21", "sip:bob@192.0.2.22"]

    def fork(self, method="INVITE", parallel=True):
        self.forwardArgs = {"target": self.targets, "parallel": parallel}
        self.receive(makeRequest(method))
        return [self.downstream(f"192.0.2.2{i}") for i in (1, 2)]

    def test_lowestClassWins(self):
        """
        Of a 500 and a 404, the 404 goes upstream, once both have come.
        """
        one, two = self.fork()
        self.answer(one.sent[0], 500, flow=one)
        self.assertEqual(self.upstream(), [])
        self.answer(two.sent[0], 404, flow=two)
        self.assertEqual([r.code for r in self.upstream()], [404])
        self.assertDrained()

    def test_sixHundredWins(self):
        """
        A 603 beats a 404 and cancels the pending branch.
        """
        one, two = self.fork()
        self.answer(one.sent[0], 180, flow=one)
        self.answer(two.sent[0], 180, flow=two)
        self.answer(one.sent[0], 603, flow=one)
        cancels = [m for m in two.sent if getattr(m, "method", "") == "CANCEL"]
        self.assertEqual(len(cancels), 1)
        self.answer(two.sent[0], 487, flow=two)
        self.assertEqual([r.code for r in self.upstream()], [180, 180, 603])
        self.assertDrained()

    def test_2xxForwardedAtOnce(self):
        """
        A 200 goes upstream at once and the other branch is cancelled.
        """
        one, two = self.fork()
        self.answer(two.sent[0], 180, flow=two)
        self.answer(one.sent[0], 200, flow=one)
        self.assertEqual([r.code for r in self.upstream()], [180, 200])
        self.assertIn("CANCEL", [getattr(m, "method", "") for m in two.sent])

    def test_challengesMerged(self):
        """
        Two 401s make one 401 carrying both challenges.
        """
        one, two = self.fork("MESSAGE")
        self.answer(one.sent[0], 401, flow=one,
                    www_authenticate='Digest realm="a", nonce="1"')
        self.answer(two.sent[0], 401, flow=two,
                    www_authenticate='Digest realm="b", nonce="2"')
        [response] = self.upstream()
        self.assertEqual(response.headers["www-authenticate"], [
            'Digest realm="a", nonce="1"', 'Digest realm="b", nonce="2"'])

    def test_sequential(self):
        """
        Sequential forking tries the second target after the first fails.
        """
        one, two = self.fork("MESSAGE", parallel=False)
        self.assertEqual(two.sent, [])
        self.answer(one.sent[0], 480, flow=one)
        self.assertEqual(len(two.sent), 1)
        self.answer(two.sent[0], 200, flow=two)
        self.assertEqual([r.code for r in self.upstream()], [200])
        self.assertDrained()


class CancelTests(ProxyTestMixin, SynchronousTestCase):
    """
    CANCEL (section 16.10).
    """

    def cancel(self, invite):
        text = invite.toBytes().decode("utf-8").replace(
            "INVITE sip:", "CANCEL sip:", 1).replace("1 INVITE", "1 CANCEL")
        self.receive(parseMessage(text.encode("utf-8")))

    def test_cancel487(self):
        """
        A CANCEL is answered 200, cancels the branch downstream, and the
        INVITE gets the downstream 487.
        """
        invite = makeRequest("INVITE")
        self.receive(invite)
        [sent] = self.downstream().sent
        self.answer(sent, 180)
        self.cancel(invite)
        cancels = [m for m in self.downstream().sent
                   if getattr(m, "method", "") == "CANCEL"]
        self.assertEqual(len(cancels), 1)
        self.assertEqual(cancels[0].topVia().branch, sent.topVia().branch)
        self.answer(sent, 487)
        codes = [(r.code, r.cseq()[1]) for r in self.upstream()]
        self.assertEqual(codes, [(180, "INVITE"), (200, "CANCEL"),
                                 (487, "INVITE")])
        self.assertDrained()

    def test_cancelNoAnswer(self):
        """
        When the next hop answers nothing after the CANCEL, the INVITE still
        gets a 487.
        """
        invite = makeRequest("INVITE")
        self.receive(invite)
        [sent] = self.downstream().sent
        self.answer(sent, 180)
        self.cancel(invite)
        self.advance(64 * T1 + 1)
        # The 487 is retransmitted (timer G) until the client's ACK.
        self.assertEqual(sorted(set(r.code for r in self.upstream())),
                         [180, 200, 487])
        self.assertDrained()

    def test_cancelWhileConnecting(self):
        """
        A CANCEL while the connection to the next hop is being made ends the
        INVITE with a 487 and nothing is sent.
        """
        self.transport.slow.add("home.test")
        invite = makeRequest("INVITE")
        self.receive(invite)
        self.cancel(invite)
        self.assertEqual(sorted(r.code for r in self.upstream()), [200, 487])
        self.assertDrained()

    def test_timerC(self):
        """
        An INVITE that rings longer than timer C is cancelled downstream,
        and the client gets the 487.
        """
        self.proxy = Proxy(self.clock, self.layer, self.transport,
                           {"UDP": US}, timerC=60.0)
        self.server.proxy = self.proxy
        self.server.processors = [self.proxy.routeInDialog, self._forward]
        self.receive(makeRequest("INVITE"))
        [sent] = self.downstream().sent
        self.answer(sent, 180)
        self.clock.advance(59)
        self.assertNotIn("CANCEL", [getattr(m, "method", "")
                                    for m in self.downstream().sent])
        self.clock.advance(1)
        self.assertIn("CANCEL", [getattr(m, "method", "")
                                 for m in self.downstream().sent])
        self.answer(sent, 487)
        self.assertEqual([r.code for r in self.upstream()], [180, 487])
        self.assertDrained()

    def test_badTarget(self):
        """
        A target that is not a SIP URI is a 500, without a traceback.
        """
        self.forwardArgs = {"target": "mailto:bob@example.com"}
        self.receive(makeRequest())
        self.assertEqual([r.code for r in self.upstream()], [500])
        self.assertDrained()

    def test_notOurs(self):
        """
        L{Proxy.cancelled} is False for a transaction it does not handle.
        """
        self.assertFalse(self.proxy.cancelled(object()))


class StrayResponseTests(ProxyTestMixin, SynchronousTestCase):
    """
    Responses go upstream only through the server transaction of the
    request they answer; responses matching no client transaction are
    dropped (RFC 6026).
    """

    def test_retransmitted2xxForwarded(self):
        """
        A 200 to an INVITE that arrives again while the branch is Accepted
        goes upstream again, to where the INVITE came from.
        """
        self.receive(makeRequest("INVITE"))
        [sent] = self.downstream().sent
        data = responseTo(sent, 200, toTag="dtag").toBytes()
        for _ in range(2):
            self.layer.messageReceived(parseMessage(data), self.downstream())
        codes = [r.code for r in self.upstream()]
        self.assertEqual(codes, [200, 200])
        self.assertEqual(self.upstream()[1].values("via"),
                         makeRequest().values("via"))
        self.assertEqual(self.proxy.responsesForwarded, 1)

    def test_retransmitted2xxIgnoresSecondVia(self):
        """
        A further 2xx whose Via under ours was rewritten still goes to where
        the INVITE came from, never to the address the rewritten Via names.
        """
        self.receive(makeRequest("INVITE"))
        [sent] = self.downstream().sent
        self.answer(sent, 200)
        forged = responseTo(sent, 200, toTag="dtag")
        vias = forged.values("via")
        forged.headers["via"] = [
            vias[0], "SIP/2.0/UDP 203.0.113.66:9;branch=z9hG4bKvictim"]
        self.layer.messageReceived(parseMessage(forged.toBytes()),
                                   self.downstream())
        self.assertEqual([r.code for r in self.upstream()], [200, 200])
        self.assertNotIn(("UDP", "203.0.113.66", 9), self.transport.connects)
        self.assertNotIn(("UDP", "203.0.113.66", 9), self.transport.flows)

    def forged(self, response, flow=None):
        """
        A response arrives from C{flow} (default: the next hop's).
        """
        before = self.layer.strayResponses
        self.layer.messageReceived(parseMessage(response.toBytes()),
                                   flow or self.downstream())
        return self.layer.strayResponses - before

    def test_forgedWithOurBranchDropped(self):
        """
        A response carrying one of our branches after its transaction has
        ended is dropped and counted, not relayed to its second Via, over
        UDP or TCP.
        """
        self.receive(makeRequest("INVITE"))
        [sent] = self.downstream().sent
        self.answer(sent, 486)
        self.advance(40)
        self.assertEqual(self.layer.active, 0)
        for transport in ("UDP", "TCP"):
            response = responseTo(sent, 200, toTag="dtag")
            vias = response.values("via")
            response.headers["via"] = [
                vias[0],
                f"SIP/2.0/{transport} 203.0.113.66:9;branch=z9hG4bKvictim"]
            self.assertEqual(self.forged(response), 1)
        self.assertEqual({r.code for r in self.upstream()}, {486})
        self.assertEqual([c for c in self.transport.connects
                          if c[1] == "203.0.113.66"], [])
        self.assertEqual(self.proxy.responsesForwarded, 0)

    def test_forgedOtherSentByDropped(self):
        """
        A response with the branch and method of a live client transaction
        but another sent-by in its top Via matches nothing: dropped, and
        the transaction still waits for its real answer.
        """
        self.receive(makeRequest("INVITE"))
        [sent] = self.downstream().sent
        response = responseTo(sent, 486)
        top = sent.topVia()
        response.headers["via"] = [
            f"SIP/2.0/UDP 198.51.100.5:5060;branch={top.branch}",
            "SIP/2.0/UDP 203.0.113.66:9;branch=z9hG4bKvictim"]
        self.assertEqual(self.forged(response), 1)
        self.assertEqual([r.code for r in self.upstream()], [])
        self.answer(sent, 486)
        self.assertEqual([r.code for r in self.upstream()], [486])

    def test_notOursDropped(self):
        """
        A response whose top Via is not ours, or that has a single Via, is
        dropped and counted.
        """
        request = makeRequest()
        self.assertEqual(self.forged(responseTo(request, 200)), 1)
        single = makeRequest(vias=[
            f"SIP/2.0/UDP 192.0.2.10:5060;branch={BRANCH_PREFIX}1.1"])
        self.assertEqual(self.forged(responseTo(single, 200)), 1)
        self.assertEqual(self.upstream(), [])


class ClientProtocol(DatagramProtocol):
    """
    A UDP client: fires C{received} with the first datagram it gets.
    """

    def __init__(self):
        self.received = defer.Deferred()

    def datagramReceived(self, data, addr):
        if not self.received.called:
            self.received.callback(data)


class EndToEndTests(TestCase):
    """
    Two real servers on loopback: the first proxies to the second.
    """

    timeout = 20

    @defer.inlineCallbacks
    def startServer(self, port, processor):
        service = buildServer({
            "name": f"s{port}", "role": "edge", "domain": "127.0.0.1",
            "listen": [f"udp:{port}:interface=127.0.0.1"]}, reactor)
        service.server.processors.insert(0, processor)
        service.startService()
        self.addCleanup(service.stopService)
        yield service.transportService.ready
        return service

    @defer.inlineCallbacks
    def test_proxiedRegister(self):
        """
        A REGISTER with two Via values sent to the first server reaches the
        second through the proxy, and its 200 comes back to the client
        through the first server with the client's Via values only.
        """
        firstPort = freePort("udp")
        secondPort = freePort("udp")
        seen = []

        def answer(request, transaction):
            seen.append(request)
            transaction.respond(responseTo(request, 200))
            return True

        yield self.startServer(secondPort, answer)
        proxies = []

        def toSecond(request, transaction):
            if request.method not in ("REGISTER", "OPTIONS") \
                    or request.viaCount() < 2:
                return False
            proxies[0].forward(request, transaction,
                               nextHop=f"sip:127.0.0.1:{secondPort}",
                               addPath=True, flowToken=True)
            return True

        first = yield self.startServer(firstPort, toSecond)
        proxies.append(Proxy(reactor, first.transactions, first.transport,
                             {"UDP": ("127.0.0.1", firstPort)}))
        client = ClientProtocol()
        port = reactor.listenUDP(0, client, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        clientPort = port.getHost().port
        data = (
            "REGISTER sip:127.0.0.1 SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{clientPort};branch=z9hG4bKe2e1;rport\r\n"
            "Via: SIP/2.0/UDP 192.0.2.50:5060;branch=z9hG4bKedge1\r\n"
            "Max-Forwards: 70\r\n"
            "From: <sip:alice@127.0.0.1>;tag=e2e\r\n"
            "To: <sip:alice@127.0.0.1>\r\n"
            "Call-ID: e2e-proxy\r\n"
            "CSeq: 1 REGISTER\r\n"
            f"Contact: <sip:alice@127.0.0.1:{clientPort}>\r\n"
            "Content-Length: 0\r\n\r\n").encode("ascii")
        client.transport.write(data, ("127.0.0.1", firstPort))
        data = yield client.received
        response = parseMessage(data)
        self.assertEqual(response.code, 200)
        self.assertEqual(response.viaCount(), 2)
        self.assertEqual(response.topVia().branch, "z9hG4bKe2e1")
        [request] = seen
        self.assertEqual(request.viaCount(), 3)
        self.assertEqual(request.topVia().sentByPort, firstPort)
        self.assertEqual(len(request.values("path")), 1)
        self.assertEqual(proxies[0].active, 0)
