# -*- test-case-name: tests.test_metrics -*-
"""
Tests for L{sipdist.pool.metrics}: C{GET /metrics} on the status listener.
"""

from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import defer, protocol, reactor
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent, readBody

from tests.distribution_helpers import DOMAIN, startPool


def _request(method, port, number):
    return (
        f"{method} sip:{DOMAIN} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bKmetrics{number}\r\n"
        f"Max-Forwards: 70\r\n"
        f"From: <sip:alice@{DOMAIN}>;tag=m{number}\r\n"
        f"To: <sip:alice@{DOMAIN}>\r\n"
        f"Call-ID: metrics-{number}@127.0.0.1\r\n"
        f"CSeq: 1 {method}\r\n"
        f"Contact: <sip:alice@127.0.0.1:{port}>\r\n"
        f"Content-Length: 0\r\n\r\n").encode("ascii")


class _Client(protocol.DatagramProtocol):
    """
    Sends requests and fires C{done} with the status codes of the first
    C{expected} responses.
    """

    def __init__(self, expected):
        self.expected = expected
        self.codes = []
        self.done = defer.Deferred()

    def datagramReceived(self, data, address):
        self.codes.append(int(data.split(b" ", 2)[1]))
        if len(self.codes) == self.expected:
            self.done.callback(self.codes)


class MetricsTests(TestCase):
    """
    C{/metrics} of a home server started in this process.
    """

    timeout = 20

    @defer.inlineCallbacks
    def scrape(self, service):
        port = service.statusSite._waitingForPort.result.getHost().port
        response = yield Agent(reactor).request(
            b"GET", f"http://127.0.0.1:{port}/metrics".encode())
        self.assertEqual(response.code, 200)
        self.assertTrue(response.headers.getRawHeaders(b"content-type")[0]
                        .startswith(b"text/plain"))
        body = yield readBody(response)
        samples = {}
        for family in text_string_to_metric_families(body.decode()):
            for sample in family.samples:
                key = (sample.name, tuple(sorted(sample.labels.items())))
                samples[key] = sample.value
        return samples

    @defer.inlineCallbacks
    def test_countersMove(self):
        """
        Three OPTIONS and a REGISTER without credentials move the answered
        counters by exactly three 200s to OPTIONS and one 401 to REGISTER,
        and the challenged authentications by one; the process collector
        reports CPU and memory.
        """
        pool = yield startPool(self, homes=(), distributor=False)
        service = yield pool.start(
            "home1", **{"status-listen": "tcp:0:interface=127.0.0.1"})
        before = yield self.scrape(service)
        client = _Client(4)
        port = reactor.listenUDP(0, client, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        clientPort = port.getHost().port
        serverPort = service.transportService.ports[0].getHost().port
        requests = [_request("OPTIONS", clientPort, n) for n in range(3)]
        requests.append(_request("REGISTER", clientPort, 3))
        for data in requests:
            port.write(data, ("127.0.0.1", serverPort))
        codes = yield client.done
        self.assertEqual(sorted(codes), [200, 200, 200, 401])
        after = yield self.scrape(service)

        def moved(name, **labels):
            key = (name, tuple(sorted(labels.items())))
            return after.get(key, 0) - before.get(key, 0)

        self.assertEqual(moved("sipdist_requests_answered_total",
                               method="OPTIONS", code="200"), 3)
        self.assertEqual(moved("sipdist_requests_answered_total",
                               method="REGISTER", code="401"), 1)
        self.assertEqual(moved("sipdist_authentications_total",
                               outcome="challenged"), 1)
        self.assertEqual(moved("sipdist_authentications_total",
                               outcome="ok"), 0)
        self.assertEqual(moved("sipdist_transactions_created_total",
                               kind="server"), 4)
        self.assertIn(("sipdist_registered_aors", ()), after)
        self.assertIn(("sipdist_transactions_in_progress", ()), after)
        self.assertIn(("process_resident_memory_bytes", ()), after)
        self.assertIn(("process_cpu_seconds_total", ()), after)

    @defer.inlineCallbacks
    def test_registryPerServer(self):
        """
        Two servers in one process each have their own registry: a request
        to one does not move the other's counters.
        """
        pool = yield startPool(self, homes=(), distributor=False)
        first = yield pool.start(
            "home1", **{"status-listen": "tcp:0:interface=127.0.0.1"})
        second = yield pool.start(
            "home2", **{"status-listen": "tcp:0:interface=127.0.0.1"})
        self.assertIsNot(first.metricsRegistry, second.metricsRegistry)
        client = _Client(1)
        port = reactor.listenUDP(0, client, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        serverPort = first.transportService.ports[0].getHost().port
        port.write(_request("OPTIONS", port.getHost().port, 9),
                   ("127.0.0.1", serverPort))
        yield client.done
        key = ("sipdist_requests_answered_total",
               (("code", "200"), ("method", "OPTIONS")))
        firstSamples = yield self.scrape(first)
        secondSamples = yield self.scrape(second)
        self.assertEqual(firstSamples.get(key), 1)
        self.assertNotIn(key, secondSamples)


class StoreAndBindingMetricsTests(TestCase):
    """
    The store lookups and bindings on C{/metrics}.
    """

    timeout = 20
    scrape = MetricsTests.scrape

    @defer.inlineCallbacks
    def test_loginMovesLookupsAndBindings(self):
        """
        Two users logging in at their home (a memory store, so every lookup
        is answered at once) move the lookups answered at once by at least
        two, none waited, the hit ratio is 1 and two bindings are
        registered.
        """
        from tests.distribution_helpers import startClients
        pool = yield startPool(self, homes=(), distributor=False,
                               users=["alice", "bob"])
        service = yield pool.start(
            "home1", **{"status-listen": "tcp:0:interface=127.0.0.1"})
        yield pool.store.assignUsers([("alice@example.com", "home1"),
                                      ("bob@example.com", "home1")])
        before = yield self.scrape(service)
        self.assertEqual(before[("sipdist_bindings", ())], 0)
        yield startClients(self, pool, ["alice", "bob"],
                           server=pool.uris["home1"])
        after = yield self.scrape(service)
        atOnce = ("sipdist_store_lookups_total", (("answer", "at_once"),))
        waited = ("sipdist_store_lookups_total", (("answer", "waited"),))
        self.assertGreaterEqual(after[atOnce] - before.get(atOnce, 0), 2)
        self.assertEqual(after[waited], 0)
        self.assertEqual(after[("sipdist_store_cache_hit_ratio", ())], 1.0)
        self.assertEqual(after[("sipdist_bindings", ())], 2)
        self.assertEqual(after[("sipdist_registered_aors", ())], 2)
        self.assertEqual(
            after[("sipdist_store_lookup_wait_seconds_count", ())], 0)


class LookupStatsTests(TestCase):
    """
    L{sipdist.roles.distribution.LookupStats} and its exposition.
    """

    def test_waitedAndAtOnce(self):
        """
        A lookup that waits 0.03 s lands in the 0.05 s bucket, one that
        fails after 3 s in the last one (3.03 s waited in all) and is counted failed; a fired
        answer is counted at once, a fired failure at once and failed.  The
        exposition gives cumulative buckets, the sum and the ratio.
        """
        from twisted.internet.task import Clock
        from twisted.python.failure import Failure
        from prometheus_client import CollectorRegistry
        from prometheus_client.exposition import generate_latest
        from sipdist.pool.metrics import _lookupMetrics
        from sipdist.roles.distribution import LookupStats
        stats = LookupStats()
        clock = Clock()
        first, second = defer.Deferred(), defer.Deferred()
        first.addBoth(stats.waited, clock.seconds(), clock)
        second.addBoth(stats.waited, clock.seconds(), clock)
        second.addErrback(lambda _: None)
        clock.advance(0.03)
        first.callback("home1")
        clock.advance(2.97)
        second.errback(Failure(RuntimeError("store down")))
        stats.answeredAtOnce(defer.succeed("home1"))
        failed = defer.fail(RuntimeError("no"))
        stats.answeredAtOnce(failed)
        failed.addErrback(lambda _: None)
        self.assertEqual((stats.atOnce, stats.waitedCount, stats.failed),
                         (2, 2, 2))
        self.assertEqual(stats.buckets[3], 1)
        self.assertEqual(stats.buckets[-1], 1)

        class Collector:
            def collect(self):
                return _lookupMetrics(stats)

        registry = CollectorRegistry()
        registry.register(Collector())
        samples = {}
        for family in text_string_to_metric_families(
                generate_latest(registry).decode()):
            for sample in family.samples:
                samples[(sample.name, tuple(sorted(
                    sample.labels.items())))] = sample.value
        bucket = "sipdist_store_lookup_wait_seconds_bucket"
        self.assertEqual(samples[(bucket, (("le", "0.01"),))], 0)
        self.assertEqual(samples[(bucket, (("le", "0.05"),))], 1)
        self.assertEqual(samples[(bucket, (("le", "2.0"),))], 1)
        self.assertEqual(samples[(bucket, (("le", "+Inf"),))], 2)
        self.assertAlmostEqual(
            samples[("sipdist_store_lookup_wait_seconds_sum", ())], 3.03)
        self.assertEqual(samples[("sipdist_store_cache_hit_ratio", ())], 0.5)
        self.assertEqual(
            samples[("sipdist_store_lookup_failures_total", ())], 2)
