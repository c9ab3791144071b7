# -*- test-case-name: tests.test_status -*-
"""
Tests for L{sipdist.pool.status}: the HTTP status endpoint.
"""

import json
import socket

from twisted.internet import defer, reactor
from twisted.trial.unittest import TestCase
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol

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
        """
        C{GET /status} over HTTP/1.0.

        @return: C{(status code, headers text, body)}.
        """
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port)
        protocol = _HTTP10()
        yield connectProtocol(endpoint, protocol)
        data = yield protocol.done
        head, _, body = data.partition(b"\r\n\r\n")
        code = int(head.split(b" ", 2)[1])
        return code, head.lower(), body

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
        code, head, body = yield self.get(homePort)
        self.assertEqual(code, 200)
        self.assertIn(b"content-type: application/json", head)
        document = json.loads(body)
        self.assertEqual(document["name"], "home1")
        self.assertEqual(document["load"]["registered"], 0)
        self.assertEqual(document["subscriptions"]["subscriptions"], 0)
        self.assertEqual(document["auth_failures"],
                         {"pairs": 0, "addresses": 0, "slowed": 0})
        self.assertEqual(document["transactions"]["stray_responses"], 0)
        code, head, body = yield self.get(distributorPort)
        document = json.loads(body)
        self.assertEqual(document["role"], "distributor")
        self.assertEqual(document["monitor"]["servers"]["home1"]["status"],
                         "up")



class _HTTP10(Protocol):
    """
    Sends one HTTP/1.0 GET and collects the answer until the server
    closes.
    """

    def __init__(self):
        self.done = defer.Deferred()
        self._data = []

    def connectionMade(self):
        self.transport.write(b"GET /status HTTP/1.0\r\nHost: localhost\r\n\r\n")

    def dataReceived(self, data):
        self._data.append(data)

    def connectionLost(self, reason):
        self.done.callback(b"".join(self._data))
