"""
Tests for L{sipdist.roles.edge}: next hops, their weighted choice and failover,
the sides of an edge, what its processor forwards and how, sealed flow
tokens, and the edge's options.
"""

from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from sipdist.auth.clientaddress import HEADER as CLIENT_HEADER
from sipdist.auth.clientaddress import ClientAddressSeal
from sipdist.roles.edge import (
    EdgeProcessor, EdgeProxy, NextHopConfigError, NextHops, Sides,
    parseNextHop)
from sipdist.sip.message import parseMessage
from sipdist.services.proxy import Proxy
from sipdist.tap import Options
from tests.test_proxy import US, ProxyTestMixin, makeRequest


def request(method="INVITE", uri="sip:bob@example.com", extra=""):
    return parseMessage((
        f"{method} {uri} SIP/2.0\r\n"
        "Via: SIP/2.0/TCP 192.0.2.1:5060;branch=z9hG4bKe1\r\n"
        "Max-Forwards: 70\r\n"
        "From: <sip:alice@example.com>;tag=a\r\n"
        "To: <sip:bob@example.com>\r\n"
        f"Call-ID: e1\r\nCSeq: 1 {method}\r\n{extra}"
        "Content-Length: 0\r\n\r\n").encode("ascii"))


class FakeHost:
    def __init__(self, host, port):
        self.host = host
        self.port = port


class FakeFactory:
    def __init__(self, name):
        self._transportName = name


class FakePort:
    """
    A listening port of a transport layer: its address and its factory.
    """

    def __init__(self, transport, port, host="127.0.0.1"):
        self.factory = FakeFactory(transport) if transport != "UDP" else None
        self._host = FakeHost(host, port)

    def getHost(self):
        return self._host


class FakeFlow:
    def __init__(self, transport, local, token="tok"):
        self.transport = transport
        self.local = local
        self.remote = ("192.0.2.1", 40000)
        self.token = token


class FakeTransaction:
    def __init__(self, flow):
        self.flow = flow
        self.responses = []

    def respond(self, response, stateless=False):
        self.responses.append(response)


class FakeServer:
    def response(self, request, code, phrase=None):
        from sipdist.sip.message import responseTo
        return responseTo(request, code, phrase)


class FakeProxy:
    def __init__(self):
        self.forwarded = []

    def forward(self, request, transaction, **kwargs):
        self.forwarded.append((request.method, kwargs))


def splitSides():
    sides = Sides()
    sides.learn([FakePort("TCP", 5060, "192.0.2.10"),
                 FakePort("UDP", 5060, "192.0.2.10"),
                 FakePort("TCP", 5070, "10.0.0.10")],
                [False, False, True])
    return sides


class NextHopTests(SynchronousTestCase):
    """
    C{--next-hop} values and the weighted choice.
    """

    def test_parse(self):
        """
        The weight parameter is taken off the URI; it defaults to 1.
        """
        uri, weight = parseNextHop("sip:10.0.0.2:5070;transport=tcp;weight=3")
        self.assertEqual((str(uri), weight),
                         ("sip:10.0.0.2:5070;transport=tcp", 3))
        self.assertEqual(parseNextHop("<sips:home1.example>")[1], 1)

    def test_badValues(self):
        """
        A bad URI, weight, transport or a user part is one line.
        """
        for text in ("home1", "sip:h;weight=0", "sip:h;weight=x",
                     "sip:h;transport=sctp", "sip:bob@h"):
            error = self.assertRaises(NextHopConfigError, parseNextHop, text)
            self.assertNotIn("\n", str(error))
        self.assertRaises(NextHopConfigError, NextHops, [])

    def test_weightedChoice(self):
        """
        Each next hop is chosen in proportion to its weight: over evenly
        spread random draws, a hop of weight 3 beside one of weight 1 gets
        three quarters of them.
        """
        draws = iter([i / 100 for i in range(100)])

        class Draws:
            def random(self):
                return next(draws)

        hops = NextHops(["sip:10.0.0.1;weight=1", "sip:10.0.0.2;weight=3"],
                        random=Draws())
        counts = {}
        for _ in range(100):
            host = hops.choose().host
            counts[host] = counts.get(host, 0) + 1
        self.assertEqual(counts, {"10.0.0.1": 25, "10.0.0.2": 75})

    def test_order(self):
        """
        The hops to try: the one chosen first, then the others in their
        configured order.
        """
        hops = NextHops(["sip:a", "sip:b", "sip:c"])
        hops._random = type("R", (), {"random": lambda self: 0.5})()
        self.assertEqual([u.host for u in hops.order()], ["b", "a", "c"])

    def test_single(self):
        """
        With one next hop, it is always the one.
        """
        hops = NextHops(["sip:10.0.0.1"])
        self.assertEqual({hops.choose().host for _ in range(5)}, {"10.0.0.1"})


class SidesTests(SynchronousTestCase):
    """
    Which flows are inside, and our address on each side.
    """

    def test_sides(self):
        """
        Flows that came in on an inside port, and connections the edge
        opened, are inside; flows on outside ports are outside.
        """
        sides = splitSides()
        self.assertTrue(sides.split)
        self.assertFalse(sides.isInside(FakeFlow("TCP", ("192.0.2.10", 5060))))
        self.assertFalse(sides.isInside(FakeFlow("UDP", ("192.0.2.10", 5060))))
        self.assertTrue(sides.isInside(FakeFlow("TCP", ("10.0.0.10", 5070))))
        self.assertTrue(sides.isInside(FakeFlow("TCP", ("10.0.0.10", 41234))))
        self.assertEqual(sides.address("TCP", True), ("10.0.0.10", 5070))
        self.assertEqual(sides.address("TCP", False), ("192.0.2.10", 5060))
        # No inside UDP port: the inside address of another transport.
        self.assertEqual(sides.address("UDP", True), ("10.0.0.10", 5070))

    def test_oneSide(self):
        """
        Without inside ports, everything is outside.
        """
        sides = Sides()
        sides.learn([FakePort("TCP", 5060)], [False])
        self.assertFalse(sides.split)
        self.assertFalse(sides.isInside(FakeFlow("TCP", ("10.0.0.1", 41000))))

    def test_proxyAddresses(self):
        """
        The edge's proxy names its inside address towards a new connection
        (a next hop) and its outside address towards a client's flow.
        """
        class Transport:
            def existingFlow(self, *hop):
                return None

        proxy = EdgeProxy(None, type("T", (), {"timerC": None})(),
                          Transport(), {"TCP": ("192.0.2.10", 5060)},
                          sides=splitSides())
        self.assertEqual(proxy.addressFor("TCP", None, ("TCP", "10.0.0.2",
                                                        5060)),
                         ("10.0.0.10", 5070))
        client = FakeFlow("TCP", ("192.0.2.10", 5060))
        self.assertEqual(proxy.addressFor("TCP", client),
                         ("192.0.2.10", 5060))
        self.assertIn(("10.0.0.10", 5070), proxy._ownAddresses())


class EdgeProcessorTests(SynchronousTestCase):
    """
    What the edge does with requests that are not routed through it.
    """

    def setUp(self):
        self.proxy = FakeProxy()
        self.processor = EdgeProcessor(
            FakeServer(), self.proxy, NextHops(["sip:10.0.0.2"]),
            splitSides())
        self.outside = FakeFlow("TCP", ("192.0.2.10", 5060))

    def test_register(self):
        """
        A REGISTER goes to a next hop with a Path carrying the client's flow
        token, no Record-Route.
        """
        self.assertTrue(self.processor(request("REGISTER", "sip:example.com"),
                                       FakeTransaction(self.outside)))
        [(method, kwargs)] = self.proxy.forwarded
        self.assertEqual([str(u) for u in kwargs["nextHop"]],
                         ["sip:10.0.0.2"])
        self.assertEqual((kwargs["addPath"], kwargs["recordRoute"],
                          kwargs["flowToken"]), (True, False, True))

    def test_invite(self):
        """
        An INVITE goes to a next hop, record-routed with the flow token.
        """
        self.processor(request(), FakeTransaction(self.outside))
        [(method, kwargs)] = self.proxy.forwarded
        self.assertEqual((kwargs["addPath"], kwargs["recordRoute"],
                          kwargs["flowToken"]), (False, True, True))

    def test_clientAddressSealed(self):
        """
        A request passed inwards states the client's address in a header
        sealed with the pool's secret, replacing any such header it brought.
        """
        seal = ClientAddressSeal("pool-secret-0123456789abcdef")
        self.processor.clientSeal = seal
        forged = request(extra="Sipdist-Client: 203.0.113.9:1;mac=x\r\n")
        self.processor(forged, FakeTransaction(self.outside))
        self.assertEqual(len(forged.headers[CLIENT_HEADER]), 1)
        self.assertEqual(
            seal.address(forged.values(CLIENT_HEADER), "e1", "1 INVITE"),
            ("192.0.2.1", 40000))

    def test_clientAddressStrippedWithoutSecret(self):
        """
        An edge without the pool's secret passes no such header inwards,
        not even one the request brought.
        """
        forged = request(extra="Sipdist-Client: 203.0.113.9:1;mac=x\r\n")
        self.processor(forged, FakeTransaction(self.outside))
        self.assertNotIn(CLIENT_HEADER, forged.headers)

    def test_routeSetLinkStrips(self):
        """
        The edge's first link, the route-set one, removes any
        C{Sipdist-Client} header from every request, routed through the
        edge or not.
        """
        proxy = EdgeProxy(None, None, None, {"UDP": US}, sides=splitSides())
        forged = request(extra="Sipdist-Client: 203.0.113.9:1;mac=x\r\n")
        self.assertFalse(proxy.routeInDialog(forged,
                                             FakeTransaction(self.outside)))
        self.assertNotIn(CLIENT_HEADER, forged.headers)

    def test_fromInside(self):
        """
        A request from the inside not routed through the edge is refused
        with 403.
        """
        transaction = FakeTransaction(FakeFlow("TCP", ("10.0.0.10", 5070)))
        self.assertTrue(self.processor(request(), transaction))
        self.assertEqual(transaction.responses[0].code, 403)
        self.assertEqual(self.proxy.forwarded, [])

    def test_optionsToEdge(self):
        """
        An OPTIONS to the edge itself is left to the server.
        """
        self.assertFalse(self.processor(request("OPTIONS", "sip:192.0.2.10"),
                                        FakeTransaction(self.outside)))

    def test_noNextHop(self):
        """
        An edge without next hop answers 503.
        """
        self.processor.nextHops = None
        transaction = FakeTransaction(self.outside)
        self.processor(request(), transaction)
        self.assertEqual(transaction.responses[0].code, 503)


class EdgeOptionsTests(SynchronousTestCase):
    """
    The edge's options of C{twistd sipdist}.
    """

    def parse(self, *argv):
        options = Options()
        options.parseOptions(list(argv))
        return options

    def test_edgeOptions(self):
        """
        --next-hop, --inside-listen and --trusted-peer are repeatable.
        """
        options = self.parse(
            "--role=edge", "--next-hop=sip:10.0.0.1;transport=tcp",
            "--next-hop=sip:10.0.0.2;weight=2",
            "--inside-listen=tcp:5070:interface=10.0.0.10",
            "--trusted-peer=10.0.0.0/24")
        self.assertEqual(options["next-hop"],
                         ["sip:10.0.0.1;transport=tcp",
                          "sip:10.0.0.2;weight=2"])
        self.assertEqual(options["inside-listen"],
                         ["tcp:5070:interface=10.0.0.10"])
        self.assertEqual(options["trusted-peer"], ["10.0.0.0/24"])

    def test_errors(self):
        """
        Bad values are one line naming the option.
        """
        for argv, fragment in (
                (["--role=edge", "--next-hop=sip:h;weight=0"], "--next-hop"),
                (["--role=home", "--name=h", "--next-hop=sip:h"],
                 "only an edge"),
                (["--role=edge", "--inside-listen=tcp:x"], "--inside-listen"),
                (["--role=edge", "--trusted-peer=nope"], "--trusted-peer")):
            error = self.assertRaises(usage.UsageError, self.parse, *argv)
            self.assertIn(fragment, str(error))
            self.assertNotIn("\n", str(error))

    def test_configFile(self):
        """
        The TOML file takes lists (or one string) for the repeatable
        options.
        """
        path = self.mktemp()
        with open(path, "w") as f:
            f.write('role = "edge"\n'
                    'next-hop = ["sip:10.0.0.1", "sip:10.0.0.2;weight=2"]\n'
                    'inside-listen = "tcp:5070:interface=10.0.0.10"\n')
        options = self.parse(f"--config={path}")
        self.assertEqual(len(options["next-hop"]), 2)
        self.assertEqual(options["inside-listen"],
                         ["tcp:5070:interface=10.0.0.10"])


class FailoverTests(ProxyTestMixin, SynchronousTestCase):
    """
    A request forwarded with a list of next hops goes to the next one when
    a next hop cannot be reached.
    """

    def test_unreachableNextHop(self):
        """
        The first next hop refuses the connection: the request goes to the
        second, whose answer goes upstream.
        """
        self.transport.refused.add("down.test")
        self.forwardArgs = {"nextHop": ["sip:down.test;transport=tcp",
                                        "sip:home.test"]}
        self.receive(makeRequest("MESSAGE"))
        [sent] = self.downstream().sent
        self.assertEqual(sent.viaCount(), 3)
        self.answer(sent, 200)
        [response] = self.upstream()
        self.assertEqual(response.code, 200)
        self.assertDrained()

    def test_allUnreachable(self):
        """
        When no next hop can be reached, the answer is a 503.
        """
        self.transport.refused.update(["down.test", "gone.test"])
        self.forwardArgs = {"nextHop": ["sip:down.test;transport=tcp",
                                        "sip:gone.test;transport=tcp"]}
        self.receive(makeRequest("MESSAGE"))
        [response] = self.upstream()
        self.assertEqual(response.code, 503)
        self.assertEqual(self.transport.connects, [
            ("TCP", "down.test", 5060), ("TCP", "gone.test", 5060)])
        self.assertDrained()

    def test_answeredIsNotRetried(self):
        """
        A next hop that answers, even with an error, is not replaced.
        """
        self.forwardArgs = {"nextHop": ["sip:home.test", "sip:other.test"]}
        self.receive(makeRequest("MESSAGE"))
        [sent] = self.downstream().sent
        self.answer(sent, 503)
        [response] = self.upstream()
        self.assertEqual(response.code, 500)
        self.assertEqual(self.downstream("other.test").sent, [])
        self.assertDrained()


class SealedTokenTests(ProxyTestMixin, SynchronousTestCase):
    """
    A proxy with a token key (as an edge has) seals the flow tokens it
    writes and refuses the ones it did not write (RFC 5626 section 5.2).
    """

    def setUp(self):
        ProxyTestMixin.setUp(self)
        self.proxy = Proxy(self.clock, self.layer, self.transport,
                           {"UDP": US, "TCP": US}, tokenKey=b"k" * 32)
        self.server.proxy = self.proxy
        self.server.processors = [self.proxy.routeInDialog, self._forward]

    def register(self):
        self.forwardArgs = {"nextHop": "sip:home.test", "addPath": True,
                            "flowToken": True}
        self.receive(makeRequest("REGISTER", uri="sip:example.com"))
        [sent] = self.downstream().sent
        [path] = sent.values("path")
        return path

    def test_sealedPathRoutes(self):
        """
        The Path carries the token with its seal; a request a pool server
        signed coming back with it as Route is relayed (by routeInDialog
        alone) over the client's flow, without the signature.
        """
        path = self.register()
        self.assertIn(f"{self.client.token}.", path)
        self.proxy.peerVerify = lambda request, flow: (
            "home1" if request.headers.get("sipdist-peer") else None)
        self.server.processors = [self.proxy.routeInDialog]
        invite = makeRequest("INVITE", uri="sip:alice@10.0.0.5:5099",
                             routes=[path], branch="z9hG4bKhome",
                             extra=["Sipdist-Peer: home1;ts=0;sig=x"])
        self.receive(invite, self.downstream())
        [sent] = [m for m in self.client.sent if not hasattr(m, "code")]
        self.assertEqual(sent.uriText, "sip:alice@10.0.0.5:5099")
        self.assertNotIn("sipdist-peer", sent.headers)

    def test_pathWithoutPeerSignature(self):
        """
        The same request without a pool server's signature is not relayed
        along the Path: routeInDialog leaves it to the next processor.
        """
        path = self.register()
        self.proxy.peerVerify = lambda request, flow: None
        invite = makeRequest("INVITE", uri="sip:alice@10.0.0.5:5099",
                             routes=[path], branch="z9hG4bKhome")
        self.assertIsNotNone(self.proxy.checkRouteSet(invite,
                                                      self.downstream()))
        self.assertFalse(self.proxy.routeInDialog(invite, None))

    def test_forgedToken(self):
        """
        A Route naming a flow by a token without a valid seal, or with the
        seal of another token, is refused with 403 and sent nowhere.
        """
        path = self.register()
        seal = path.split("@")[0].rsplit(".", 1)[1]
        for token in (self.client.token, f"other.{seal}",
                      "u0-203.0.113.9-5060"):
            route = f"<sip:{token}@192.0.2.10:5060;lr;ob;sd=1>"
            request = makeRequest("MESSAGE", uri="sip:alice@10.0.0.5",
                                  routes=[route], branch=f"z9hG4bK{token}")
            home = self.downstream()
            before = len(home.sent)
            self.receive(request, home)
            [response] = home.sent[before:]
            self.assertEqual((response.code, response.phrase),
                             (403, "Forbidden (Bad Flow Token)"))
        self.assertEqual([m for m in self.client.sent
                          if not hasattr(m, "code")], [])


class EdgeRelayTests(SynchronousTestCase):
    """
    The open relay of the issue at the edge: a request from outside with
    a Route naming the edge, then a server inside, then anywhere.
    """

    def setUp(self):
        self.forwarded = []
        proxy = FakeProxy()
        proxy.forward = lambda request, transaction, **kw: \
            self.forwarded.append((request, kw))
        self.processor = EdgeProcessor(FakeServer(), proxy,
                                       NextHops(["sip:10.0.0.2"]),
                                       splitSides())

    def test_unsealedRouteDropped(self):
        """
        A request from outside that routeInDialog did not take (its Route
        was not sealed by the pool) is passed to a next hop without its
        Route: nothing downstream follows it to where the attacker chose.
        """
        r = request()
        r.addHeader("route", "<sip:192.0.2.10:5060;lr>")
        r.addHeader("route", "<sip:10.0.0.2;lr>")
        r.addHeader("route", "<sip:203.0.113.66;lr>")
        flow = FakeFlow("UDP", ("192.0.2.10", 5060))
        self.assertTrue(self.processor(r, FakeTransaction(flow)))
        [(sent, kw)] = self.forwarded
        self.assertNotIn("route", sent.headers)
        self.assertEqual([str(u) for u in kw["nextHop"]], ["sip:10.0.0.2"])


class FakeProber:
    """
    Answers each probe with the Deferred the test keeps, by URI.
    """

    def __init__(self):
        self.probes = []

    def probe(self, uri):
        from twisted.internet import defer
        d = defer.Deferred()
        self.probes.append((uri, d))
        return d

    def answer(self, ok=True):
        from sipdist.pool.monitor import ProbeFailed
        probes, self.probes = self.probes, []
        for uri, d in probes:
            if ok is True or uri not in ok:
                d.callback({})
            else:
                d.errback(ProbeFailed("no answer in 2 s"))


class NextHopCheckerTests(SynchronousTestCase):
    """
    Health checks of the next hops.
    """

    def setUp(self):
        from twisted.internet.task import Clock

        from sipdist.roles.edge import NextHopChecker
        self.clock = Clock()
        self.hops = NextHops(["sip:10.0.0.1", "sip:10.0.0.2"])
        self.prober = FakeProber()
        self.checker = NextHopChecker(self.clock, self.hops, self.prober,
                                      interval=10.0, threshold=2)
        self.checker.startService()
        self.addCleanup(self.checker.stopService)

    def test_failingHopChosenLast(self):
        """
        A hop that fails two checks in a row is put last, whatever the
        weighted choice; when it answers again it is chosen again.
        """
        self.prober.answer(ok={"sip:10.0.0.1"})
        self.assertEqual(self.hops.down, set())
        self.clock.advance(10)
        self.prober.answer(ok={"sip:10.0.0.1"})
        self.assertEqual(self.hops.down, {0})
        for _ in range(5):
            self.assertEqual([u.host for u in self.hops.order()],
                             ["10.0.0.2", "10.0.0.1"])
        self.clock.advance(10)
        self.prober.answer()
        self.assertEqual(self.hops.down, set())

    def test_oneCheckInFlight(self):
        """
        A hop whose check has not ended is not probed again.
        """
        self.assertEqual(len(self.prober.probes), 2)
        self.clock.advance(10)
        self.assertEqual(len(self.prober.probes), 2)

    def test_allDown(self):
        """
        When every hop is failing, they are all still tried.
        """
        for _ in range(2):
            self.prober.answer(ok={"sip:10.0.0.1", "sip:10.0.0.2"})
            self.clock.advance(10)
        self.assertEqual(self.hops.down, {0, 1})
        self.assertEqual(len(self.hops.order()), 2)

    def test_stop(self):
        """
        Stopping the service leaves no timer.
        """
        self.checker.stopService()
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_busyHopChosenLast(self):
        """
        A hop answering its checks with a non-2xx (a C{503}) is alive but
        refusing: after two such answers it is chosen last, as a silent
        one (unlike the monitor, which moves no user off a busy home).
        """
        from sipdist.pool.monitor import Answer
        for _ in range(2):
            probes, self.prober.probes = self.prober.probes, []
            for uri, d in probes:
                d.callback(Answer({}, "503 Service Unavailable")
                           if uri == "sip:10.0.0.1" else Answer())
            self.clock.advance(10)
        self.assertEqual(self.hops.down, {0})
