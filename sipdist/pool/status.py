# -*- test-case-name: tests.test_status -*-
"""
An HTTP status endpoint (C{--status-listen=tcp:8081:interface=127.0.0.1}):
C{GET /status} answers a JSON document with the server's name, role, load
figures (see L{sipdist.pool.monitor.loadFigures}), counters of its parts, and,
in the distributor that runs the monitor, what the monitor knows of every
server; C{GET /metrics} answers the same figures in the Prometheus text
format (L{sipdist.pool.metrics}).  Bind it to an address only operators reach: it has no
authentication.
"""

import json

from twisted.application import strports
from twisted.web import resource, server


def statusOf(service, config):
    """
    The status document of a running server, as a L{dict}.
    """
    from sipdist.pool.monitor import loadFigures
    document = {"name": config.get("name"), "role": config.get("role", "home"),
                "load": loadFigures(service),
                "transactions": service.transactions.stats(),
                "transport": service.transport.stats()}
    proxy = getattr(service, "proxy", None)
    if proxy is not None:
        document["proxy"] = proxy.stats()
    authenticator = getattr(service, "authenticator", None)
    limiter = getattr(authenticator, "limiter", None)
    if limiter is not None:
        document["auth_failures"] = limiter.stats()
    notifier = getattr(service, "notifier", None)
    if notifier is not None:
        document["subscriptions"] = notifier.stats()
    handover = getattr(service, "handover", None)
    if handover is not None:
        document["handover"] = {"served": handover.served,
                                "released": handover.released}
    standby = getattr(service, "standby", None)
    if standby is not None:
        document["standby"] = {"served": standby.served,
                               "probes": standby.probes}
    monitor = getattr(service, "monitor", None)
    if monitor is not None:
        document["monitor"] = {"servers": monitor.status(),
                               "plans": monitor.plans,
                               "moved": monitor.moved}
    return document


class StatusResource(resource.Resource):
    """
    C{/status}: the JSON document of L{statusOf}.
    """

    isLeaf = True

    def __init__(self, service, config):
        resource.Resource.__init__(self)
        self.service = service
        self.config = config

    def render_GET(self, request):
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"cache-control", b"no-store")
        return json.dumps(statusOf(self.service, self.config), indent=1,
                          sort_keys=True).encode("utf-8") + b"\n"


def installStatus(service, config, reactor):
    """
    The extension serving L{StatusResource} on C{--status-listen}.
    """
    description = config.get("status-listen")
    if not description:
        return
    root = resource.Resource()
    root.putChild(b"status", StatusResource(service, config))
    from sipdist.pool.metrics import MetricsResource, registryFor
    service.metricsRegistry = registryFor(service, config)
    root.putChild(b"metrics", MetricsResource(service.metricsRegistry))
    site = server.Site(root)
    site.displayTracebacks = False
    web = strports.service(description, site, reactor=reactor)
    web.setServiceParent(service)
    service.statusSite = web
