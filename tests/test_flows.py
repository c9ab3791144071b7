"""
The distribution flows end to end, on real sockets on loopback: home
servers and a distributor sharing one assignment store, driven by the
client library, by a raw UDP client (for a request that already passed
through a proxy) and by SIPp.
"""

from twisted.internet import defer, reactor
from twisted.internet.protocol import DatagramProtocol
from twisted.python.filepath import FilePath
from twisted.trial.unittest import TestCase

from sipdist.auth.client import answerChallenge, verifySignature
from sipdist.client.login import Login
from sipdist.sip.message import Response, parseMessage, responseTo
from sipdist.server import buildServer
from sipdist.store import ServerRecord
from sipdist.store.memory import MemoryAssignmentStore
from sipdist.testca import makeCA
from sipdist.sip.tls import serverContextFactory
from tests.client_helpers import startAgent
from tests.interop import requireTool, runSipp, runSipsak

PASSWORD = "wonderland"
SECRET = "pool-nonce-secret-0123456789abcdef"
HERE = FilePath(__file__).parent()

SCHEMES = {"udp": "sip:127.0.0.1:{port}",
           "tcp": "sip:127.0.0.1:{port};transport=tcp",
           "tls": "sips:127.0.0.1:{port}"}


@defer.inlineCallbacks
def startDeployment(testCase, kind="udp", algorithms=None,
                    domain="example.com", **options):
    """
    Start a distributor and two home servers listening on C{kind} on free
    loopback ports, sharing one memory store in which alice is assigned to
    home1 and bob to home2.

    @param algorithms: C{--digest-algorithms}; the shipped default when
        L{None}.
    @param domain: the SIP domain (realm) of the users.
    @param options: more options of every server (C{"redirect-user-agent"}
        ...); without them, the shipped defaults.

    @return: C{(store, services, uris, caPath)}
    """
    store = MemoryAssignmentStore()
    tlsOptions = ca = None
    if kind == "tls":
        certs = FilePath(testCase.mktemp())
        certs.makedirs()
        makeCA(certs.path)
        ca = certs.child("ca.pem").path
        tlsOptions = serverContextFactory(certs.child("server.pem").path,
                                          certs.child("server.key").path)
    listen = {"udp": "udp:0:interface=127.0.0.1",
              "tcp": "tcp:0:interface=127.0.0.1",
              "tls": "sips:0:interface=127.0.0.1"}[kind]
    services, uris = {}, {}
    for name, role in (("distributor", "distributor"), ("home1", "home"),
                       ("home2", "home")):
        config = {"role": role, "name": name, "domain": domain,
                  "listen": [listen], "tls-server-options": tlsOptions,
                  "credentials": f"memory:alice:{PASSWORD},bob:{PASSWORD}",
                  "secret": SECRET, "t1": 0.05}
        if algorithms is not None:
            config["digest-algorithms"] = list(algorithms)
        if ca is not None:
            # The servers trust each other's certificates (a backup home
            # probes the user's home over TLS).
            config["tls-ca"] = ca
        config.update(options)
        service = buildServer(config, reactor, store=store)
        service.startService()
        testCase.addCleanup(service.stopService)
        yield service.transportService.ready
        port = service.transportService.ports[0].getHost().port
        services[name] = service
        uris[name] = SCHEMES[kind].format(port=port)
    yield store.addServer(ServerRecord("home1", uris["home1"]))
    yield store.addServer(ServerRecord("home2", uris["home2"]))
    yield store.assignUser(f"alice@{domain}", "home1")
    yield store.assignUser(f"bob@{domain}", "home2")
    return store, services, uris, ca


class Figure1Tests(TestCase):
    """
    Figure 1: a client reaches the wrong home server first, is redirected by
    a signed 301 and registers at its own home server.
    """

    timeout = 30

    @defer.inlineCallbacks
    def figure1(self, kind):
        store, services, uris, ca = yield startDeployment(self, kind)
        ua = yield startAgent(self, reactor, "bob@example.com", PASSWORD,
                              caCertificates=[ca] if ca else None)
        result = yield Login(ua, ua.locator, server=uris["home1"]).run()
        home1Port = services["home1"].transportService.ports[0].getHost().port
        home2Port = services["home2"].transportService.ports[0].getHost().port
        self.assertEqual([t.port for t in result.redirects], [home1Port])
        self.assertEqual(result.target.port, home2Port)
        self.assertEqual(result.target.transport, kind.upper())
        kinds = [e.kind for e in ua.events]
        self.assertIn("redirect", kinds)
        self.assertEqual(kinds[-1], "registered")
        # The binding is on home2 only.
        self.assertEqual(
            len(services["home2"].registrar.lookup("sip:bob@example.com")), 1)
        self.assertEqual(
            services["home1"].registrar.lookup("sip:bob@example.com"), [])
        self.assertEqual(services["home1"].processor.redirects, 1)
        self.assertEqual(services["home2"].processor.served, 1)

    def test_udp(self):
        return self.figure1("udp")

    def test_tcp(self):
        return self.figure1("tcp")

    def test_tls(self):
        return self.figure1("tls")


class _RawClient(DatagramProtocol):
    """
    Sends requests from a UDP port and collects the responses.
    """

    def __init__(self):
        self.waiting = []

    def datagramReceived(self, data, addr):
        if self.waiting:
            self.waiting.pop(0).callback(parseMessage(data))

    def request(self, data, addr):
        d = defer.Deferred()
        self.waiting.append(d)
        self.transport.write(data, addr)
        return d


def throughProxy(port, branch, extra=""):
    """
    A REGISTER for alice as a proxy would pass it on: our Via on top, the
    client's below.
    """
    return (
        "REGISTER sip:example.com SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK{branch}\r\n"
        "Via: SIP/2.0/UDP 192.0.2.7:5060;branch=z9hG4bKclient;received=192.0.2.7\r\n"
        "Max-Forwards: 69\r\n"
        "From: <sip:alice@example.com>;tag=a1\r\n"
        "To: <sip:alice@example.com>\r\n"
        "Call-ID: two-vias@192.0.2.7\r\n"
        f"CSeq: {branch} REGISTER\r\n"
        "Contact: <sip:alice@192.0.2.7:5060>\r\n"
        "Supported: path\r\n"
        f"{extra}"
        "Content-Length: 0\r\n\r\n").encode("ascii")


class TwoViaTests(TestCase):
    """
    A request that already passed through a proxy (two Via values) is
    proxied to the assigned server, not redirected.
    """

    timeout = 30

    @defer.inlineCallbacks
    def test_proxiedWithPath(self):
        """
        home2 receives alice's REGISTER with two Via values: it challenges,
        then proxies the authenticated REGISTER to home1 with a Path through
        itself; home1 stores the binding with that Path and its signed 200
        comes back through home2 to the sender.
        """
        store, services, uris, ca = yield startDeployment(self)
        client = _RawClient()
        port = reactor.listenUDP(0, client, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        me = port.getHost().port
        home2 = ("127.0.0.1",
                 services["home2"].transportService.ports[0].getHost().port)

        challenge = yield client.request(throughProxy(me, 1), home2)
        self.assertEqual(challenge.code, 401)
        value, session = answerChallenge(
            challenge.values("www-authenticate"), "REGISTER",
            "sip:example.com", "alice", PASSWORD)
        response = yield client.request(
            throughProxy(me, 2, f"Authorization: {value}\r\n"), home2)

        self.assertEqual(response.code, 200)
        self.assertEqual(response.viaCount(), 2)
        headers = [(n, v) for n, vs in response.headers.items() for v in vs]
        self.assertTrue(verifySignature(
            session, 200, response.header("call-id"), response.header("cseq"),
            None, headers))
        [binding] = services["home1"].registrar.lookup("sip:alice@example.com")
        [path] = binding.path
        self.assertIn(f":{home2[1]}", path)
        self.assertEqual(services["home2"].processor.proxied, 1)
        self.assertEqual(services["home2"].processor.redirects, 0)
        self.assertEqual(
            services["home2"].registrar.lookup("sip:alice@example.com"), [])
        self.assertIn(";lr", response.header("path"))


class SippTests(TestCase):
    """
    SIPp drives the distributor flow.
    """

    timeout = 60

    @defer.inlineCallbacks
    def test_distributorRedirect(self):
        """
        SIPp, configured as a client that follows the redirect (its
        User-Agent), registers with MD5 authentication at the distributor
        and gets the 301 naming alice's home server.
        """
        requireTool("sipp")
        store, services, uris, ca = yield startDeployment(
            self, **{"redirect-user-agent": ["^SIPp sipdist"]})
        port = services["distributor"].transportService.ports[0].getHost().port
        scenario = HERE.child("sipp").child("register_redirect.xml").path
        workdir = FilePath(self.mktemp())
        workdir.makedirs()
        code, out, err = yield runSipp(
            reactor, scenario, f"127.0.0.1:{port}", transport="u1", calls=3,
            username="alice", password=PASSWORD, service="alice",
            workdir=workdir.path,
            extra=["-key", "domain", "example.com", "-auth_uri", "example.com",
                   "-trace_logs"])
        self.assertEqual(code, 0, (out[-800:], err[-800:]))
        self.assertEqual(services["distributor"].processor.redirects, 3)
        [log] = workdir.globChildren("*_logs.log")
        redirects = [line for line in log.getContent().decode().splitlines()
                     if line.startswith("301 to ")]
        self.assertEqual(len(redirects), 3)
        for line in redirects:
            self.assertTrue(line.startswith(f"301 to {uris['home1']} "), line)

    @defer.inlineCallbacks
    def test_homeRegister(self):
        """
        SIPp registers with MD5 authentication ([authentication]) at alice's
        home server and gets a 200; the binding is stored there.
        """
        requireTool("sipp")
        store, services, uris, ca = yield startDeployment(self)
        port = services["home1"].transportService.ports[0].getHost().port
        code, out, err = yield runSipp(
            reactor, HERE.child("sipp").child("register_auth.xml").path,
            f"127.0.0.1:{port}", transport="u1", calls=2,
            username="alice", password=PASSWORD, service="alice",
            extra=["-key", "domain", "example.com", "-auth_uri", "example.com"])
        self.assertEqual(code, 0, (out[-800:], err[-800:]))
        self.assertEqual(services["home1"].processor.served, 2)
        [binding] = services["home1"].registrar.lookup("sip:alice@example.com")
        self.assertEqual(binding.uri.username, "alice")

    @defer.inlineCallbacks
    def test_homeTableOfRecords(self):
        """
        SIPp logs in 200 times at a home whose transaction table holds 20:
        the records its completed transactions leave for retransmissions
        (the 200s': a challenge leaves none) make way (the oldest ended
        early), and every login ends 200, none refused with 503.
        """
        requireTool("sipp")
        store, services, uris, ca = yield startDeployment(
            self, **{"max-transactions": 20})
        home = services["home1"]
        port = home.transportService.ports[0].getHost().port
        code, out, err = yield runSipp(
            reactor, HERE.child("sipp").child("register_auth.xml").path,
            f"127.0.0.1:{port}", transport="u1", calls=200, rate=100,
            username="alice", password=PASSWORD, service="alice",
            extra=["-key", "domain", "example.com", "-auth_uri", "example.com"])
        self.assertEqual(code, 0, (out[-800:], err[-800:]))
        self.assertEqual(home.processor.served, 200)
        layer = home.transactions
        self.assertEqual(layer.rejected, 0)
        self.assertGreaterEqual(layer.evicted, 180)
        self.assertLessEqual(layer.active, 20)


class StandardClientTests(TestCase):
    """
    Standard RFC 3261 clients (SIPp, sipsak), unchanged, register through
    the distributor with the shipped defaults (redirect policy, Digest
    algorithms): the distributor proxies their REGISTER to the home, with a
    Path through itself, and the home's 200 comes back to them.
    """

    timeout = 60

    def assertRegisteredThrough(self, services, home, aor):
        distributor = services["distributor"]
        port = distributor.transportService.ports[0].getHost().port
        [binding] = services[home].registrar.lookup(aor)
        [path] = binding.path
        self.assertIn(f"127.0.0.1:{port}", path)
        self.assertEqual(distributor.processor.redirects, 0)
        self.assertGreaterEqual(distributor.processor.proxied, 1)

    @defer.inlineCallbacks
    def test_sipp(self):
        """
        SIPp's REGISTER (MD5, no option tag) at the distributor ends 200:
        registered at alice's home.
        """
        requireTool("sipp")
        store, services, uris, ca = yield startDeployment(self)
        port = services["distributor"].transportService.ports[0].getHost().port
        code, out, err = yield runSipp(
            reactor, HERE.child("sipp").child("register_auth.xml").path,
            f"127.0.0.1:{port}", transport="u1", calls=1,
            username="alice", password=PASSWORD, service="alice",
            extra=["-key", "domain", "example.com", "-auth_uri",
                   "example.com"])
        self.assertEqual(code, 0, (out[-800:], err[-800:]))
        self.assertRegisteredThrough(services, "home1",
                                     "sip:alice@example.com")
        self.assertEqual(services["home1"].processor.served, 1)

    @defer.inlineCallbacks
    def test_sipsak(self):
        """
        sipsak's REGISTER (usrloc mode, MD5) at the distributor ends 200:
        registered at bob's home.  (sipsak insists on resolving the
        domain of its URI, hence a deployment whose domain is localhost.)
        """
        requireTool("sipsak")
        store, services, uris, ca = yield startDeployment(
            self, domain="localhost")
        port = services["distributor"].transportService.ports[0].getHost().port
        code, out, err = yield runSipsak(
            reactor, "sip:bob@localhost", proxy=f"127.0.0.1:{port}",
            extra=["-U", "-u", "bob", "-a", PASSWORD, "-x", "60", "-vv"])
        self.assertEqual(code, 0, (out[-1500:], err[-800:]))
        self.assertIn("All usrloc tests completed successful", out)
        self.assertRegisteredThrough(services, "home2", "sip:bob@localhost")


class _RawPhone(DatagramProtocol):
    """
    A standard client on a UDP port: sends requests, collects responses,
    answers every request it receives with 200 and keeps it.
    """

    def __init__(self):
        self.waiting = []
        self.received = []

    def datagramReceived(self, data, addr):
        message = parseMessage(data)
        if isinstance(message, Response):
            if message.code >= 200 and self.waiting:
                self.waiting.pop(0).callback(message)
            return
        self.received.append(message)
        self.transport.write(responseTo(message, 200).toBytes(), addr)

    def request(self, data, addr):
        d = defer.Deferred()
        self.waiting.append(d)
        self.transport.write(data, addr)
        return d


def standardRequest(method, port, user, target, cseq, extra=()):
    """
    A request as a standard client sends it: one Via, no option tag.
    """
    lines = [f"{method} {target} SIP/2.0",
             f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK{user}{cseq};"
             "rport",
             "Max-Forwards: 70",
             f"From: <sip:{user}@example.com>;tag={user}t",
             "To: <" + (f"sip:{user}@example.com" if method == "REGISTER"
                        else target) + ">",
             f"Call-ID: {method}-{user}@127.0.0.1",
             f"CSeq: {cseq} {method}",
             f"Contact: <sip:{user}@127.0.0.1:{port}>",
             "User-Agent: standard/1.0"]
    lines += list(extra)
    lines += ["Content-Length: 0", "", ""]
    return "\r\n".join(lines).encode("ascii")


class StandardClientCallTests(TestCase):
    """
    Two standard clients through the distributor: registered at their
    homes by proxy, and a MESSAGE between them proxied end to end.
    """

    timeout = 30

    @defer.inlineCallbacks
    def authenticated(self, phone, port, method, user, target, header,
                      distributor):
        challenge = yield phone.request(
            standardRequest(method, port, user, target, 1), distributor)
        self.assertEqual(challenge.code, 401 if header == "authorization"
                         else 407)
        values = challenge.values("www-authenticate" if header ==
                                  "authorization" else "proxy-authenticate")
        value, _ = answerChallenge(values, method, target, user, PASSWORD)
        name = "Authorization" if header == "authorization" else \
            "Proxy-Authorization"
        response = yield phone.request(standardRequest(
            method, port, user, target, 2, [f"{name}: {value}"]),
            distributor)
        return response

    @defer.inlineCallbacks
    def test_messageBetweenStandardClients(self):
        """
        alice (home1) and bob (home2) register at the distributor without
        the option tag: both are proxied to their homes (200, no 3xx).
        alice's MESSAGE to bob, sent to the distributor, is proxied (never
        a 3xx) and reaches bob, whose 200 comes back to alice.
        """
        store, services, uris, ca = yield startDeployment(self)
        distributor = ("127.0.0.1", services["distributor"]
                       .transportService.ports[0].getHost().port)
        phones = {}
        for user in ("alice", "bob"):
            phone = _RawPhone()
            listening = reactor.listenUDP(0, phone, interface="127.0.0.1")
            self.addCleanup(listening.stopListening)
            port = listening.getHost().port
            phones[user] = (phone, port)
            response = yield self.authenticated(
                phone, port, "REGISTER", user, "sip:example.com",
                "authorization", distributor)
            self.assertEqual(response.code, 200, response.phrase)
        self.assertEqual(services["distributor"].processor.redirects, 0)
        self.assertEqual(len(services["home1"].registrar.lookup(
            "sip:alice@example.com")), 1)
        self.assertEqual(len(services["home2"].registrar.lookup(
            "sip:bob@example.com")), 1)

        phone, port = phones["alice"]
        response = yield self.authenticated(
            phone, port, "MESSAGE", "alice", "sip:bob@example.com",
            "proxy-authorization", distributor)
        self.assertEqual(response.code, 200, response.phrase)
        [message] = phones["bob"][0].received
        self.assertEqual(message.method, "MESSAGE")
        self.assertEqual(message.uriText, f"sip:bob@127.0.0.1:{phones['bob'][1]}")
        self.assertEqual(services["distributor"].processor.redirects, 0)
