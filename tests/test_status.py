# -*- test-case-name: tests.test_status -*-
"""
Tests for L{sipdist.pool.status}: the HTTP status endpoint.
"""

import json
import os
import socket

from twisted.internet import defer, reactor
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol
from twisted.web.client import Agent, readBody
from twisted.web.http_headers import Headers

from sipdist.config import ConfigurationError
from sipdist.pool.status import (
    COOKIE, StatusFetchError, checkStatusListen, cookieValue, fetchStatus,
    parseStatusListen)
from sipdist.sip.tls import clientContextFactory
from sipdist.tap import Options
from sipdist.testca import makeCA
from tests.distribution_helpers import startPool, waitFor
from tests.helpers_store import tempDir

TOKEN = b"s3cret-status-token-0123456789"


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


def _portOf(service):
    return service.statusSite._waitingForPort.result.getHost()


def _writeToken(case, token=TOKEN):
    path = os.path.join(tempDir(case), "token")
    with open(path, "wb") as f:
        f.write(token + b"\n")
    return path


class ListenOptionsTests(SynchronousTestCase):
    """
    C{--status-listen}, C{--status-token} and C{--status-client-ca} as
    options: loopback by default, authentication required beyond it.
    """

    def parse(self, *argv):
        options = Options()
        options.parseOptions(["--role=distributor"] + list(argv))
        return options

    def test_loopbackByDefault(self):
        """
        Without C{interface}, the listener binds to the loopback address
        of its family.
        """
        self.assertEqual(parseStatusListen("tcp:8081", {}).interface,
                         "127.0.0.1")
        self.assertEqual(parseStatusListen("8081", {}).interface,
                         "127.0.0.1")
        self.assertEqual(parseStatusListen("tcp6:8081", {}).interface, "::1")
        endpoint = parseStatusListen("tcp:8081:interface=\\:\\:1", {})
        self.assertEqual(endpoint.interface, "::1")
        self.assertTrue(endpoint.loopback)
        self.parse("--status-listen=tcp:8081")
        self.parse("--status-listen=tcp:8081:interface=127.0.0.2")

    def test_elsewhereRefused(self):
        """
        A listener on an address other than loopback without a token or
        client certificates is refused with one line, by the options and
        by L{buildServer}.
        """
        for interface in ("0.0.0.0", "::", "192.0.2.1"):
            description = f"tcp:8081:interface={interface}".replace(
                "::", "\\:\\:")
            e = self.assertRaises(usage.UsageError, self.parse,
                                  f"--status-listen={description}")
            self.assertIn("is not a loopback address: give --status-token "
                          "FILE, or an ssl: listener with --status-client-ca "
                          "FILE", str(e))
            self.assertNotIn("\n", str(e))
        from sipdist.server import buildServer
        config = {"role": "distributor", "name": "d", "domain": "x",
                  "listen": ["udp:0:interface=127.0.0.1"],
                  "status-listen": "tcp:0:interface=0.0.0.0"}
        self.assertRaises(ConfigurationError, buildServer, config, reactor)

    def test_elsewhereWithToken(self):
        """
        With a token file, any address is accepted.
        """
        path = _writeToken(self)
        self.parse("--status-listen=tcp:8081:interface=0.0.0.0",
                   f"--status-token={path}")

    def test_mistakes(self):
        """
        A short or missing token file, client CAs without TLS, an unknown
        kind or option: one line each.
        """
        short = _writeToken(self, b"short")
        directory = tempDir(self)
        files = makeCA(directory)
        cases = [
            (["--status-listen=tcp:8081", f"--status-token={short}"],
             "at least 16"),
            (["--status-listen=tcp:8081", "--status-token=/nonexistent"],
             "--status-token: /nonexistent: No such file"),
            (["--status-listen=tcp:8081",
              f"--status-client-ca={files['ca.pem']}"],
             "client certificates need an ssl: --status-listen"),
            (["--status-listen=ssl:8081"], "needs certKey= and privateKey="),
            (["--status-listen=ssl:8081:certKey=/nonexistent:privateKey=/x"],
             "/nonexistent: certificate file does not exist"),
            (["--status-listen=unix:/tmp/x"], "use tcp:PORT"),
            (["--status-listen=tcp:http"], "'http' is not a port number"),
            (["--status-listen=tcp:80:mode=666"], "unknown option 'mode=666'"),
            ([f"--status-token={short}"], "go with --status-listen"),
        ]
        for argv, message in cases:
            e = self.assertRaises(usage.UsageError, self.parse, *argv)
            self.assertIn(message, str(e))

    def test_sslWithClientCA(self):
        """
        An C{ssl:} listener with client CAs may listen anywhere; its
        certificate defaults to C{--tls-cert}.
        """
        files = makeCA(tempDir(self))
        endpoint = checkStatusListen({
            "status-listen": "ssl:8443:interface=0.0.0.0",
            "tls-cert": files["server.pem"], "tls-key": files["server.key"],
            "status-client-ca": files["ca.pem"]})
        self.assertEqual((endpoint.kind, endpoint.certificate),
                         ("ssl", files["server.pem"]))


class TokenTests(TestCase):
    """
    A status listener with C{--status-token}.
    """

    timeout = 20

    @defer.inlineCallbacks
    def setUp(self):
        pool = yield startPool(self, homes=(), distributor=False)
        self.tokenFile = _writeToken(self)
        service = yield pool.start("home1", **{
            "status-listen": "tcp:0", "status-token": self.tokenFile})
        self.base = f"http://127.0.0.1:{_portOf(service).port}"

    @defer.inlineCallbacks
    def get(self, path, **headers):
        response = yield Agent(reactor).request(
            b"GET", (self.base + path).encode(),
            Headers({k.encode(): [v] for k, v in headers.items()}))
        body = yield readBody(response)
        return response, body

    @defer.inlineCallbacks
    def test_refused(self):
        """
        Without the token, or with another one, every path answers a bare
        401: no detail, no document.
        """
        for path in ("/", "/status", "/metrics", "/pool", "/nothing"):
            for headers in ({}, {"authorization": b"Bearer wrong-token"},
                            {"authorization": b"Basic " + TOKEN},
                            {"authorization": b"Bearer " + TOKEN[:-1]},
                            {"cookie": COOKIE + b"=" + TOKEN}):
                response, body = yield self.get(path, **headers)
                self.assertEqual(response.code, 401, (path, headers))
                self.assertEqual(body, b"401 Unauthorized\n")
                self.assertEqual(
                    response.headers.getRawHeaders(b"www-authenticate"),
                    [b'Bearer realm="sipdist"'])
        response, body = yield self.get("/status?token=wrong")
        self.assertEqual(response.code, 401)
        self.assertIsNone(response.headers.getRawHeaders(b"set-cookie"))

    @defer.inlineCallbacks
    def test_bearer(self):
        """
        The token in an C{Authorization: Bearer} header opens every path.
        """
        response, body = yield self.get(
            "/status", authorization=b"Bearer " + TOKEN)
        self.assertEqual(response.code, 200)
        self.assertEqual(json.loads(body)["name"], "home1")
        response, body = yield self.get(
            "/metrics", authorization=b"bearer " + TOKEN)
        self.assertEqual(response.code, 200)
        self.assertIn(b"sipdist_transactions_in_progress", body)

    @defer.inlineCallbacks
    def test_queryThenCookie(self):
        """
        A browser gives the token once in the query: it gets a cookie
        derived from the token (not the token) and a redirect to the same
        path without the query; the cookie then opens the page.
        """
        response, body = yield self.get("/pool?token=" + TOKEN.decode())
        self.assertEqual(response.code, 302)
        self.assertEqual(response.headers.getRawHeaders(b"location"),
                         [b"/pool"])
        cookie = response.headers.getRawHeaders(b"set-cookie")[0]
        self.assertNotIn(TOKEN, cookie)
        self.assertIn(b"HttpOnly", cookie)
        self.assertIn(b"SameSite=strict", cookie)
        self.assertTrue(cookie.startswith(COOKIE + b"=" + cookieValue(TOKEN)))
        response, body = yield self.get(
            "/pool", cookie=COOKIE + b"=" + cookieValue(TOKEN))
        self.assertEqual(response.code, 200)
        self.assertIn(b"<h1>sipdist pool", body)

    def test_tokenNotLogged(self):
        """
        The access log records the path without its query: a token given
        as C{?token=} is not written there.
        """
        from twisted.web.test.requesthelper import DummyRequest
        from sipdist.pool.status import _accessLogFormatter
        request = DummyRequest([b"pool"])
        request.uri = b"/pool?token=" + TOKEN
        request.path = b"/pool"
        request.code, request.sentLength = 302, 0
        request.clientproto = b"HTTP/1.0"
        line = _accessLogFormatter("[02/Dec/2026:02:50:00 +0000]", request)
        self.assertIn('"GET /pool HTTP/1.0"', line)
        self.assertNotIn(TOKEN.decode(), line)

    @defer.inlineCallbacks
    def test_fetchStatus(self):
        """
        L{fetchStatus} sends the token; without it, it fails with one line
        saying the token is missing.
        """
        document = yield defer.ensureDeferred(fetchStatus(
            reactor, self.base + "/status", token=TOKEN))
        self.assertEqual(document["name"], "home1")
        failure = yield self.assertFailure(defer.ensureDeferred(
            fetchStatus(reactor, self.base + "/status")), StatusFetchError)
        self.assertIn("401 Unauthorized (give the listener's --status-token)",
                      str(failure))


class LoopbackTests(TestCase):
    """
    A status listener without authentication.
    """

    timeout = 20

    @defer.inlineCallbacks
    def test_loopbackDefault(self):
        """
        C{tcp:0} listens on 127.0.0.1 and answers without a token.
        """
        pool = yield startPool(self, homes=(), distributor=False)
        service = yield pool.start("home1", **{"status-listen": "tcp:0"})
        address = _portOf(service)
        self.assertEqual(address.host, "127.0.0.1")
        document = yield defer.ensureDeferred(fetchStatus(
            reactor, f"http://127.0.0.1:{address.port}/status"))
        self.assertEqual(document["name"], "home1")


class ClientCertificateTests(TestCase):
    """
    An C{ssl:} status listener with C{--status-client-ca}.
    """

    timeout = 20

    @defer.inlineCallbacks
    def setUp(self):
        self.files = makeCA(tempDir(self), names=("server", "client"))
        pool = yield startPool(self, homes=(), distributor=False)
        service = yield pool.start("home1", **{
            "status-listen": "ssl:0:interface=127.0.0.1",
            "tls-cert": self.files["server.pem"],
            "tls-key": self.files["server.key"],
            "status-client-ca": self.files["ca.pem"]})
        self.url = f"https://127.0.0.1:{_portOf(service).port}/status"

    def fetch(self, name=None):
        files = self.files
        options = clientContextFactory(
            "127.0.0.1", [files["ca.pem"]],
            files[f"{name}.pem"] if name else None,
            files[f"{name}.key"] if name else None)
        return defer.ensureDeferred(fetchStatus(
            reactor, self.url, tlsOptions=options, timeout=5))

    @defer.inlineCallbacks
    def test_accepted(self):
        """
        A client presenting a certificate of the CA gets the document.
        """
        document = yield self.fetch("client")
        self.assertEqual(document["name"], "home1")

    @defer.inlineCallbacks
    def test_refused(self):
        """
        A client without a certificate, or with one of another CA, gets
        nothing: the TLS handshake fails.
        """
        for name, alert in ((None, "certificate required"),
                            ("other", "unknown ca")):
            failure = yield self.assertFailure(self.fetch(name),
                                               StatusFetchError)
            self.assertIn(alert, str(failure))
            self.assertNotIn("home1", str(failure))
