"""
RFC 3263 server location: unit tests over a small named fake resolver, and
end to end against a L{twisted.names} DNS server on loopback with SRV
records, including failover to the second SRV target.
"""

import random

from twisted.internet import defer, reactor
from twisted.names import dns
from twisted.names.error import DNSNameError
from twisted.trial.unittest import SynchronousTestCase, TestCase

from sipdist.client.discovery import (
    DiscoveryError, ServerLocator, Target, asURI, orderSRV)
from sipdist.client.login import Login
from tests.client_helpers import (
    startAgent, startDNS, startServers, zone)


class FakeResolver:
    """
    Answers from a dict C{(type, name) -> [payload]}; a missing name is
    NXDOMAIN.  Records every query.
    """

    def __init__(self, records):
        self.records = records
        self.queries = []

    def _answer(self, kind, name, timeout=None):
        self.queries.append((kind, name))
        payloads = self.records.get((kind, name.lower()))
        if payloads is None:
            return defer.fail(DNSNameError(name))
        answers = [dns.RRHeader(name, kind, payload=p) for p in payloads]
        return defer.succeed((answers, [], []))

    def lookupNamingAuthorityPointer(self, name, timeout=None):
        return self._answer(dns.NAPTR, name)

    def lookupService(self, name, timeout=None):
        return self._answer(dns.SRV, name)

    def lookupAddress(self, name, timeout=None):
        return self._answer(dns.A, name)

    def lookupIPV6Address(self, name, timeout=None):
        return self._answer(dns.AAAA, name)


def srv(priority, weight, port, target):
    return dns.Record_SRV(priority, weight, port, target)


class LocatorTests(SynchronousTestCase):
    """
    L{ServerLocator.findServers} follows RFC 3263 section 4.
    """

    def find(self, uri, records, **kw):
        resolver = FakeResolver(records)
        locator = ServerLocator(resolver, random=random.Random(1))
        result = self.successResultOf(locator.findServers(uri, **kw))
        return result, resolver.queries

    def test_numericHost(self):
        """
        A numeric host needs no DNS: UDP, port 5060 by default.
        """
        targets, queries = self.find("sip:192.0.2.1", {})
        self.assertEqual(targets, [Target("UDP", "192.0.2.1", 5060)])
        self.assertEqual(queries, [])

    def test_numericSips(self):
        """
        A sips: URI with a numeric host is TLS on 5061, its identity the
        address.
        """
        targets, _ = self.find("sips:192.0.2.1", {})
        self.assertEqual(targets, [Target("TLS", "192.0.2.1", 5061)])
        self.assertEqual(targets[0].tlsHostname, "192.0.2.1")

    def test_transportParameter(self):
        """
        The transport parameter picks the transport.
        """
        targets, _ = self.find("sip:192.0.2.1:5070;transport=tcp", {})
        self.assertEqual(targets, [Target("TCP", "192.0.2.1", 5070)])

    def test_portSkipsSRV(self):
        """
        With an explicit port a name is resolved with A/AAAA only.
        """
        targets, queries = self.find("sip:proxy.example.com:5080", {
            (dns.A, "proxy.example.com"): [dns.Record_A("192.0.2.7")]})
        self.assertEqual(targets, [Target("UDP", "192.0.2.7", 5080,
                                          "proxy.example.com")])
        self.assertNotIn(dns.SRV, [kind for kind, _ in queries])

    def test_srvOrder(self):
        """
        Without NAPTR records the client asks for _sips._tcp, _sip._tcp,
        _sip._udp in that order; within a service, lower priority first.
        The TLS identity is the domain, not the SRV target.
        """
        targets, queries = self.find("sip:example.com", {
            (dns.SRV, "_sip._tcp.example.com"): [
                srv(20, 0, 5062, "b.example.com"),
                srv(10, 0, 5061, "a.example.com")],
            (dns.SRV, "_sip._udp.example.com"): [
                srv(10, 0, 5060, "c.example.com")],
            (dns.A, "a.example.com"): [dns.Record_A("192.0.2.1")],
            (dns.A, "b.example.com"): [dns.Record_A("192.0.2.2")],
            (dns.A, "c.example.com"): [dns.Record_A("192.0.2.3")]})
        self.assertEqual(
            [(t.transport, t.host, t.port) for t in targets],
            [("TCP", "192.0.2.1", 5061), ("TCP", "192.0.2.2", 5062),
             ("UDP", "192.0.2.3", 5060)])
        self.assertEqual({t.tlsHostname for t in targets}, {"example.com"})
        services = [name for kind, name in queries if kind == dns.SRV]
        self.assertEqual(services, ["_sips._tcp.example.com",
                                    "_sip._tcp.example.com",
                                    "_sip._udp.example.com"])

    def test_naptr(self):
        """
        NAPTR records name the SRV records to use, in order then
        preference; services we do not know are skipped.
        """
        targets, queries = self.find("sip:example.com", {
            (dns.NAPTR, "example.com"): [
                dns.Record_NAPTR(20, 10, b"s", b"SIP+D2U", b"",
                                 b"_sip._udp.example.com"),
                dns.Record_NAPTR(10, 10, b"s", b"SIP+D2T", b"",
                                 b"_sip._tcp.example.com"),
                dns.Record_NAPTR(5, 10, b"s", b"SIP+D2X", b"",
                                 b"_sip._x.example.com")],
            (dns.SRV, "_sip._tcp.example.com"): [
                srv(10, 0, 5070, "tcp.example.com")],
            (dns.SRV, "_sip._udp.example.com"): [
                srv(10, 0, 5060, "udp.example.com")],
            (dns.A, "tcp.example.com"): [dns.Record_A("192.0.2.1")],
            (dns.A, "udp.example.com"): [dns.Record_A("192.0.2.2")]})
        self.assertEqual([t.transport for t in targets], ["TCP", "UDP"])
        self.assertNotIn((dns.SRV, "_sips._tcp.example.com"), queries)

    def test_sipsOnlyTLS(self):
        """
        A sips: URI only looks for _sips._tcp.
        """
        targets, queries = self.find("sips:example.com", {
            (dns.SRV, "_sips._tcp.example.com"): [
                srv(10, 0, 5061, "tls.example.com")],
            (dns.A, "tls.example.com"): [dns.Record_A("192.0.2.1")]})
        self.assertEqual(targets, [Target("TLS", "192.0.2.1", 5061,
                                          "example.com")])
        self.assertNotIn((dns.SRV, "_sip._udp.example.com"), queries)

    def test_noSRV(self):
        """
        Without SRV records the domain's own address is used, UDP 5060.
        """
        targets, _ = self.find("sip:example.com", {
            (dns.A, "example.com"): [dns.Record_A("192.0.2.9")]})
        self.assertEqual(targets, [Target("UDP", "192.0.2.9", 5060,
                                          "example.com")])

    def test_nothing(self):
        """
        A domain with no record at all fails with one line.
        """
        locator = ServerLocator(FakeResolver({}))
        failure = self.failureResultOf(
            locator.findServers("sip:nowhere.example"), DiscoveryError)
        self.assertIn("nowhere.example", str(failure.value))

    def test_weights(self):
        """
        Within a priority a heavier target comes first more often (RFC
        2782's weighted choice), and every target is kept.
        """
        records = [srv(10, 90, 1, "heavy"), srv(10, 10, 2, "light")]
        rng = random.Random(3)
        firsts = [orderSRV(records, rng)[0].port for _ in range(200)]
        self.assertGreater(firsts.count(1), firsts.count(2))
        self.assertEqual(sorted(r.port for r in orderSRV(records, rng)),
                         [1, 2])

    def test_asURI(self):
        """
        A server may be given as host, host:port or a URI.
        """
        self.assertEqual(str(asURI("127.0.0.1:5060")), "sip:127.0.0.1:5060")
        self.assertEqual(str(asURI("<sips:example.com>")), "sips:example.com")
        self.assertRaises(DiscoveryError, asURI, "sip:")


class DNSServerTests(TestCase):
    """
    Discovery against a real L{twisted.names} server on loopback.
    """

    timeout = 30

    @defer.inlineCallbacks
    def test_srvFailover(self):
        """
        The login tries the SRV target of the lowest priority first; when it
        does not answer (nothing listens there) it fails over to the next
        and registers there.
        """
        dead, live = yield startServers(self, reactor, 2, kind="tcp")
        deadPort = dead.port
        yield dead.stop()
        resolver = startDNS(self, reactor, zone("example.com", [
            ("_sip._tcp.example.com",
             dns.Record_SRV(10, 0, deadPort, "dead.example.com")),
            ("_sip._tcp.example.com",
             dns.Record_SRV(20, 0, live.port, "live.example.com")),
            ("dead.example.com", dns.Record_A("127.0.0.1")),
            ("live.example.com", dns.Record_A("127.0.0.1")),
        ]))
        ua = yield startAgent(self, reactor, resolver=resolver)
        result = yield Login(ua, ua.locator).run()
        self.assertEqual(result.target.port, live.port)
        self.assertEqual(result.target.transport, "TCP")
        kinds = [e.kind for e in ua.events]
        self.assertEqual(kinds[:5], ["discovering", "discovered", "trying",
                                     "no-answer", "trying"])
        self.assertEqual(live.authenticated, 1)

    @defer.inlineCallbacks
    def test_udpTimeoutFailover(self):
        """
        Over UDP a target that never answers is left after the transaction
        times out (64*T1), for the next SRV target.
        """
        live, = yield startServers(self, reactor, 1)
        silent = reactor.listenUDP(0, __import__(
            "twisted.internet.protocol", fromlist=["DatagramProtocol"]
        ).DatagramProtocol(), interface="127.0.0.1")
        self.addCleanup(silent.stopListening)
        resolver = startDNS(self, reactor, zone("example.com", [
            ("_sip._udp.example.com",
             dns.Record_SRV(10, 0, silent.getHost().port, "a.example.com")),
            ("_sip._udp.example.com",
             dns.Record_SRV(20, 0, live.port, "b.example.com")),
            ("a.example.com", dns.Record_A("127.0.0.1")),
            ("b.example.com", dns.Record_A("127.0.0.1")),
        ]))
        ua = yield startAgent(self, reactor, resolver=resolver, T1=0.01)
        result = yield Login(ua, ua.locator).run()
        self.assertEqual(result.target.port, live.port)
        self.assertIn("no-answer", [e.kind for e in ua.events])

    @defer.inlineCallbacks
    def test_redirectTargetByName(self):
        """
        A redirect naming its target by host name is resolved through the
        same DNS.
        """
        s0, s1 = yield startServers(self, reactor, 2)
        from tests.client_helpers import Redirect

        class Named:
            uri = f"sip:home.example.com:{s1.port}"

        s0.action = Redirect(Named)
        resolver = startDNS(self, reactor, zone("example.com", [
            ("_sip._udp.example.com",
             dns.Record_SRV(10, 0, s0.port, "dist.example.com")),
            ("dist.example.com", dns.Record_A("127.0.0.1")),
            ("home.example.com", dns.Record_A("127.0.0.1")),
        ]))
        ua = yield startAgent(self, reactor, resolver=resolver)
        result = yield Login(ua, ua.locator).run()
        self.assertEqual(result.target.port, s1.port)
        self.assertEqual(result.target.name, "home.example.com")
