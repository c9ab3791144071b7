# -*- test-case-name: tests.test_metrics -*-
"""
C{GET /metrics} on the C{--status-listen} listener: the figures of
L{sipdist.pool.status.statusOf} in the Prometheus text format, built by
C{prometheus_client}.

Each server has its own L{CollectorRegistry} (several servers may run in
one process), holding a L{ServerCollector} that reads the counters the
server already keeps when it is scraped, and C{prometheus_client}'s
L{ProcessCollector} (CPU and memory of the process).  Nothing is counted on
the SIP path for this endpoint.

The exposition is generated in the reactor thread (C{generate_latest}):
C{prometheus_client.twisted.MetricsResource} would run the collectors in
the global reactor's thread pool, reading the server's tables while the
reactor changes them.
"""

from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.core import (
    CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily)
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from twisted.web import resource

from sipdist.pool.monitor import BUSY, FAILING, UNKNOWN, UP

MONITOR_STATES = (UP, BUSY, FAILING, UNKNOWN)


def _counter(name, documentation, value=None, label=None, values=()):
    """
    A counter family: one C{value}, or one sample per C{(labelValue,
    count)} of C{values} under the label C{label}.
    """
    if label is None:
        return CounterMetricFamily(name, documentation, value=value)
    family = CounterMetricFamily(name, documentation, labels=[label])
    for labelValue, count in values:
        family.add_metric([labelValue], count)
    return family


class ServerCollector:
    """
    A collector reading the counters of one running server at scrape time.
    """

    def __init__(self, service, config):
        self.service = service
        self.config = config

    def describe(self):
        # No description: the families depend on the role.
        return []

    def collect(self):
        service = self.service
        stats = service.transactions.stats()
        answered = CounterMetricFamily(
            "sipdist_requests_answered",
            "Final responses sent by server transactions, by request "
            "method and response code.", labels=["method", "code"])
        for (method, code), count in sorted(
                service.transactions.answered.items()):
            answered.add_metric([method, str(code)], count)
        yield answered
        yield GaugeMetricFamily(
            "sipdist_transactions_in_progress",
            "Transactions in the transaction layer's tables.",
            value=stats["active"])
        yield _counter(
            "sipdist_transactions_created", "Transactions created.",
            label="kind", values=[("server", stats["server_created"]),
                                  ("client", stats["client_created"])])
        for key, help in (
                ("rejected", "Requests refused because the table was full."),
                ("evicted", "Records of completed transactions ended "
                 "before timer J to make room in a full table."),
                ("timeouts", "Transactions that timed out."),
                ("transport_errors", "Transactions failed by the transport."),
                ("stray_responses", "Responses matching no transaction.")):
            yield _counter(f"sipdist_transactions_{key}", help, stats[key])
        overload = stats.get("overload")
        if overload is not None:
            yield GaugeMetricFamily(
                "sipdist_overload_lag_seconds",
                "Reactor lag measured by overload control.",
                value=overload["lag"])
            yield GaugeMetricFamily(
                "sipdist_overload_shedding",
                "1 while overload control sheds new requests.",
                value=1 if overload["shedding"] else 0)
            yield _counter("sipdist_overload_shed",
                           "Requests shed with 503.", overload["shed"])
            yield _counter("sipdist_overload_episodes",
                           "Times shedding started.", overload["episodes"])
        transport = service.transport.stats()
        yield GaugeMetricFamily(
            "sipdist_connections", "Open stream connections.",
            value=transport["connections"])
        hep = getattr(service, "hep", None)
        if hep is not None:
            yield _counter(
                "sipdist_hep_packets",
                "SIP messages captured to Homer (--hep): sent, dropped "
                "because the kernel refused the send, skipped because too "
                "large or not encodable.", label="outcome",
                values=sorted(hep.stats().items()))
        registrar = service.registrar
        if registrar is not None:
            yield GaugeMetricFamily(
                "sipdist_registered_aors",
                "Addresses-of-record with bindings here.",
                value=registrar.count)
            yield GaugeMetricFamily(
                "sipdist_bindings",
                "Bindings (registered contacts) of all addresses-of-record "
                "here.", value=registrar.bindingCount)
        notifier = getattr(service, "notifier", None)
        if notifier is not None:
            yield GaugeMetricFamily(
                "sipdist_subscriptions", "Subscriptions held here.",
                value=notifier.count)
        processor = service.processor
        if hasattr(processor, "redirects"):
            yield _counter(
                "sipdist_distribution_decisions",
                "Requests of the pool's users: served here, redirected "
                "(301) or proxied to their home.", label="outcome",
                values=[("served", processor.served),
                        ("redirected", processor.redirects),
                        ("proxied", processor.proxied)])
        lookups = getattr(processor, "lookups", None)
        if lookups is not None:
            yield from _lookupMetrics(lookups)
        proxy = service.proxy
        if proxy is not None:
            proxyStats = proxy.stats()
            yield GaugeMetricFamily(
                "sipdist_proxy_pending", "Proxied requests pending.",
                value=proxyStats["active"])
            yield _counter("sipdist_proxy_forwarded",
                           "Requests forwarded.", proxyStats["forwarded"])
        authenticator = getattr(service, "authenticator", None)
        outcomes = getattr(authenticator, "outcomes", None)
        if outcomes is not None:
            yield _counter(
                "sipdist_authentications",
                "Authentication outcomes (a failed attempt is challenged "
                "again, so counted under failed and challenged).",
                label="outcome", values=sorted(outcomes.items()))
        monitor = getattr(service, "monitor", None)
        if monitor is not None:
            state = GaugeMetricFamily(
                "sipdist_monitor_server_state",
                "1 for the state the monitor sees each server in, 0 for "
                "the others.", labels=["server", "state"])
            for sid, health in sorted(monitor.health.items()):
                for name in MONITOR_STATES:
                    state.add_metric([sid, name],
                                     1 if health.status == name else 0)
            yield state
            yield _counter("sipdist_rebalance_moved",
                           "Users moved by rebalancing plans.",
                           monitor.moved)
            done, total = monitor.progress or (0, 0)
            yield GaugeMetricFamily(
                "sipdist_rebalance_pending",
                "Moves of the plan being applied not yet made.",
                value=total - done)


def _lookupMetrics(lookups):
    """
    The store lookups of a processor's L{LookupStats}: counted by how they
    were answered, the wait of those that waited as a histogram, and the
    share answered at once (the cache hit ratio).
    """
    yield _counter(
        "sipdist_store_lookups",
        "Assignment store lookups: answered at once (cache or memory) or "
        "after waiting for the store.", label="answer",
        values=[("at_once", lookups.atOnce),
                ("waited", lookups.waitedCount)])
    yield _counter("sipdist_store_lookup_failures",
                   "Lookups that failed (store down, deadline passed).",
                   lookups.failed)
    cumulative, buckets = 0, []
    for bound, count in zip(lookups.BUCKETS, lookups.buckets):
        cumulative += count
        buckets.append((repr(bound), cumulative))
    buckets.append(("+Inf", cumulative + lookups.buckets[-1]))
    yield HistogramMetricFamily(
        "sipdist_store_lookup_wait_seconds",
        "How long lookups that were not answered at once waited.",
        buckets=buckets, sum_value=lookups.waitedSum)
    total = lookups.atOnce + lookups.waitedCount
    yield GaugeMetricFamily(
        "sipdist_store_cache_hit_ratio",
        "Share of lookups answered at once since start (0 before any).",
        value=lookups.atOnce / total if total else 0.0)


def registryFor(service, config):
    """
    A new L{CollectorRegistry} with the collectors of C{service} and of
    the process.
    """
    registry = CollectorRegistry()
    registry.register(ServerCollector(service, config))
    ProcessCollector(registry=registry)
    return registry


class MetricsResource(resource.Resource):
    """
    C{/metrics}: the exposition of a registry, generated at each request.
    """

    isLeaf = True

    def __init__(self, registry):
        resource.Resource.__init__(self)
        self.registry = registry

    def render_GET(self, request):
        request.setHeader(b"content-type", CONTENT_TYPE_LATEST.encode())
        request.setHeader(b"cache-control", b"no-store")
        return generate_latest(self.registry)
