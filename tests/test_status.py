# -*- test-case-name: tests.test_status -*-
"""
Tests for L{sipdist.status}: the HTTP status endpoint.
"""

import json
import socket

from twisted.internet import defer, reactor
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent, readBody

from tests.distribution_helpers import startPool, waitFor


def freePort():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class StatusTests(TestCase):
    """
    C{GET /status} on a running distributor with its monitor and a home.
    """

    timeout = 20

    @defer.inlineCallbacks
    def get(self, port):
        agent = Agent(reactor)
        response = yield agent.request(
            b"GET", f"http://127.0.0.1:{port}/status".encode())
        body = yield readBody(response)
        return response, body

    @defer.inlineCallbacks
    def test_status(self):
        """
        A home reports its load figures and subscription counters; the
        distributor running the monitor reports each server's health.
        """
        pool = yield startPool(self, homes=(), distributor=False)
        homePort, distributorPort = freePort(), freePort()
        yield pool.start("home1", **{
            "status-listen": f"tcp:{homePort}:interface=127.0.0.1"})
        yield pool.start("distributor", "distributor", monitor=True, **{
            "monitor-interval": 0.1, "monitor-timeout": 0.1,
            "status-listen": f"tcp:{distributorPort}:interface=127.0.0.1"})
        monitor = pool.services["distributor"].monitor
        yield waitFor(lambda: "home1" in monitor.health
                      and monitor.health["home1"].status == "up")
        response, body = yield self.get(homePort)
        self.assertEqual(response.code, 200)
        self.assertEqual(response.headers.getRawHeaders(b"content-type"),
                         [b"application/json"])
        document = json.loads(body)
        self.assertEqual(document["name"], "home1")
        self.assertEqual(document["load"]["registered"], 0)
        self.assertEqual(document["subscriptions"]["subscriptions"], 0)
        response, body = yield self.get(distributorPort)
        document = json.loads(body)
        self.assertEqual(document["role"], "distributor")
        self.assertEqual(document["monitor"]["servers"]["home1"]["status"],
                         "up")

