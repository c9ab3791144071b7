"""
Transport and security kept across a redirect or a proxied leg, end to
end on loopback: a distributor and two homes listening on UDP and TCP (one
port) and TLS, sharing a memory store in which home1 has a TLS URI and home2
only its plain C{sip:} URI.  Clients: the project's client over TLS, SIPp
over TCP.
"""

try:
    import tomllib
except ImportError:  # Python < 3.11
    import tomli as tomllib

from twisted.internet import defer, reactor
from twisted.python.filepath import FilePath
from twisted.trial.unittest import TestCase

from sipdist.client.login import Login, LoginFailed
from sipdist.server import buildServer
from sipdist.services.proxy import nextHopFor
from sipdist.sip.tls import serverContextFactory
from sipdist.sip.uri import parseURI
from sipdist.store import ServerRecord, serverURIFor
from sipdist.store.file import parseAssignments
from sipdist.store.memory import MemoryAssignmentStore
from sipdist.testca import makeCA
from tests.client_helpers import startAgent
from tests.interop import freeSIPPort, requireTool, runSipp

PASSWORD = "wonderland"
SECRET = "pool-nonce-secret-0123456789abcdef"
SIPP = FilePath(__file__).parent().child("sipp")


class Pool:
    """
    The servers of one test.

    @ivar services: name to L{sipdist.server.ServerService}.
    @ivar ports: name to C{{"udp": P, "tcp": P, "tls": T}}.
    """

    def __init__(self, testCase):
        self.testCase = testCase
        self.certs = makeCA(testCase.mktemp())
        self.store = MemoryAssignmentStore()
        self.services = {}
        self.ports = {}

    @defer.inlineCallbacks
    def start(self, name, role, policy="auto", algorithms=("SHA-256", "MD5")):
        port = freeSIPPort()
        certs = self.certs
        config = {"role": role, "name": name, "domain": "example.com",
                  "listen": [f"udp:{port}:interface=127.0.0.1",
                             f"tcp:{port}:interface=127.0.0.1",
                             "sips:0:interface=127.0.0.1"],
                  "tls-server-options": serverContextFactory(
                      certs["server.pem"], certs["server.key"]),
                  "tls-ca": certs["ca.pem"], "tls-cert": certs["server.pem"],
                  "tls-key": certs["server.key"],
                  "credentials": f"memory:alice:{PASSWORD},bob:{PASSWORD}",
                  "secret": SECRET, "t1": 0.05, "redirect-policy": policy,
                  "digest-algorithms": list(algorithms),
                  # The SIPp redirect scenario names itself a client that
                  # follows the distribution redirect.
                  "redirect-user-agent": ["^SIPp sipdist"]}
        service = buildServer(config, reactor, store=self.store)
        service.startService()
        self.testCase.addCleanup(service.stopService)
        yield service.transportService.ready
        self.services[name] = service
        self.ports[name] = {
            "udp": port, "tcp": port,
            "tls": service.transportService.ports[2].getHost().port}

    @defer.inlineCallbacks
    def startAll(self, policy="auto", algorithms=("SHA-256", "MD5")):
        """
        The distributor (with C{policy}) and both homes; alice on home1
        (UDP/TCP and TLS URIs), bob on home2 (one plain URI).
        """
        yield self.start("distributor", "distributor", policy, algorithms)
        yield self.start("home1", "home", algorithms=algorithms)
        yield self.start("home2", "home", algorithms=algorithms)
        home1, home2 = self.ports["home1"], self.ports["home2"]
        yield self.store.addServer(ServerRecord(
            "home1", f"sip:127.0.0.1:{home1['udp']}",
            tlsUri=f"sips:127.0.0.1:{home1['tls']}"))
        yield self.store.addServer(ServerRecord(
            "home2", f"sip:127.0.0.1:{home2['udp']}"))
        yield self.store.assignUser("alice@example.com", "home1")
        yield self.store.assignUser("bob@example.com", "home2")

    def binding(self, home, user):
        [binding] = self.services[home].registrar.lookup(
            f"sip:{user}@example.com")
        return binding

    @defer.inlineCallbacks
    def login(self, user):
        """
        Log C{user} in over TLS at the distributor with the project's
        client, which verifies every server's certificate against the test
        CA.
        """
        ua = yield startAgent(self.testCase, reactor, f"{user}@example.com",
                              PASSWORD, caCertificates=[self.certs["ca.pem"]])
        server = f"sips:127.0.0.1:{self.ports['distributor']['tls']}"
        result = yield Login(ua, ua.locator, server=server).run()
        return result


class ClientTLSTests(TestCase):
    """
    The project's client logging in over TLS stays on TLS.
    """

    timeout = 30

    @defer.inlineCallbacks
    def test_redirectStaysTLS(self):
        """
        A login over TLS at the distributor is redirected to the home's
        C{sips:} URI and ends registered there over TLS.
        """
        pool = Pool(self)
        yield pool.startAll()
        result = yield pool.login("alice")
        self.assertEqual(
            (result.target.transport, result.target.port),
            ("TLS", pool.ports["home1"]["tls"]))
        self.assertEqual(
            [(t.transport, t.port) for t in result.redirects],
            [("TLS", pool.ports["distributor"]["tls"])])
        self.assertEqual(pool.binding("home1", "alice").flow.transport, "TLS")
        self.assertEqual(pool.services["distributor"].processor.redirects, 1)

    @defer.inlineCallbacks
    def test_noTLSAddressNoDowngrade(self):
        """
        A login over TLS for a user whose home has no TLS URI fails, saying
        why; nothing reaches that home over UDP or TCP.
        """
        pool = Pool(self)
        yield pool.startAll()
        failure = yield self.assertFailure(pool.login("bob"), LoginFailed)
        self.assertIn("No TLS Address For Home Server", str(failure))
        home2 = pool.services["home2"]
        self.assertEqual(home2.registrar.lookup("sip:bob@example.com"), [])
        self.assertEqual(home2.processor.served, 0)
        self.assertEqual(pool.services["distributor"].processor.redirects, 0)

    @defer.inlineCallbacks
    def test_proxiedLegStaysTLS(self):
        """
        A distributor that proxies (redirect policy C{proxy}) sends a
        REGISTER that came over TLS to the home over TLS: the binding at
        the home came on a TLS connection, through the distributor's Path.
        """
        pool = Pool(self)
        yield pool.startAll(policy="proxy")
        result = yield pool.login("alice")
        self.assertEqual(
            (result.target.transport, result.target.port),
            ("TLS", pool.ports["distributor"]["tls"]))
        binding = pool.binding("home1", "alice")
        self.assertEqual(binding.flow.transport, "TLS")
        self.assertEqual(len(binding.path), 1)
        self.assertEqual(pool.services["distributor"].processor.proxied, 1)


class SippTCPTests(TestCase):
    """
    SIPp over TCP is redirected, or proxied, to the home over TCP, though
    the home's record is one plain C{sip:} URI.
    """

    timeout = 60

    def runSipp(self, pool, scenario, **kw):
        return runSipp(
            reactor, SIPP.child(scenario).path,
            f"127.0.0.1:{pool.ports['distributor']['tcp']}", transport="t1",
            username="alice", password=PASSWORD, service="alice",
            extra=["-key", "domain", "example.com", "-auth_uri",
                   "example.com"] + kw.pop("extra", []), **kw)

    @defer.inlineCallbacks
    def test_redirectOverTCP(self):
        """
        SIPp registering over TCP at the distributor gets a 301 whose
        Contact names the home with C{transport=tcp}.
        """
        requireTool("sipp")
        pool = Pool(self)
        yield pool.startAll(algorithms=("MD5",))
        workdir = FilePath(self.mktemp())
        workdir.makedirs()
        code, out, err = yield self.runSipp(
            pool, "register_redirect.xml", workdir=workdir.path,
            extra=["-trace_logs"])
        self.assertEqual(code, 0, (out[-800:], err[-800:]))
        [log] = workdir.globChildren("*_logs.log")
        [line] = [line for line in log.getContent().decode().splitlines()
                  if line.startswith("301 to ")]
        home1 = pool.ports["home1"]["tcp"]
        self.assertTrue(line.startswith(
            f"301 to sip:127.0.0.1:{home1};transport=tcp "), line)

    @defer.inlineCallbacks
    def test_proxiedOverTCP(self):
        """
        SIPp registering over TCP at a distributor that proxies gets its
        200 from the home, which got the REGISTER over TCP.
        """
        requireTool("sipp")
        pool = Pool(self)
        yield pool.startAll(policy="proxy", algorithms=("MD5",))
        code, out, err = yield self.runSipp(pool, "register_auth.xml")
        self.assertEqual(code, 0, (out[-800:], err[-800:]))
        binding = pool.binding("home1", "alice")
        self.assertEqual(binding.flow.transport, "TCP")
        self.assertEqual(len(binding.path), 1)
        self.assertEqual(pool.services["distributor"].processor.proxied, 1)


class ShippedDeploymentTests(TestCase):
    """
    The local deployment shipped in C{etc/} (started by C{etc/run-local})
    names, for every home and transport, an address that home listens on.
    """

    def test_recordsMatchListeners(self):
        """
        Each home's record in C{etc/assignments.conf} gives a URI for UDP,
        TCP and TLS, and each leads (RFC 3263 for a numeric host: its
        transport and port) to an endpoint in that home's C{listen}.
        """
        etc = FilePath(__file__).parent().parent().child("etc")
        tables = parseAssignments(
            etc.child("assignments.conf").getContent().decode("utf-8"))
        self.assertEqual(sorted(tables.servers), ["home1", "home2"])
        kinds = {"udp": "UDP", "tcp": "TCP", "sips": "TLS"}
        for name, record in tables.servers.items():
            with etc.child(f"{name}.toml").open() as f:
                config = tomllib.load(f)
            listening = set()
            for endpoint in config["listen"]:
                kind, port = endpoint.split(":")[:2]
                listening.add((kinds[kind], "127.0.0.1", int(port)))
            for transport in ("UDP", "TCP", "TLS"):
                uri = serverURIFor(record, transport)
                self.assertIsNotNone(uri, (name, transport))
                hop = nextHopFor(parseURI(uri))
                self.assertEqual(hop[0], transport, uri)
                self.assertIn(hop, listening, (name, uri))
