# -*- test-case-name: tests.test_interop -*-
"""
Tests for the interop harness in L{tests.interop}: real sipsak and SIPp
processes against a tiny SIP responder written here with plain string
handling (independent of sipdist's message layer).
"""

import hashlib
import os
import re

from twisted.internet.protocol import DatagramProtocol, Factory, Protocol
from twisted.internet.ssl import TLSVersion
from twisted.trial import unittest
from twisted.trial.unittest import SynchronousTestCase, TestCase

from sipdist import testca
from sipdist.sip.tls import serverContextFactory, tlsServerEndpoint
from tests import interop

REALM = "sipdist.test"
NONCE = "4f2e8a1c9b7d"

_HEADER_NAMES = {
    "v": "via", "f": "from", "t": "to", "i": "call-id", "l": "content-length",
}


def _headers(text):
    """
    The header lines of a SIP message as C{(lowercase long name, value)}.
    """
    head = text.split("\r\n\r\n", 1)[0].split("\r\n")
    result = []
    for line in head[1:]:
        if ":" not in line:
            continue
        name, value = line.split(":", 1)
        name = name.strip().lower()
        result.append((_HEADER_NAMES.get(name, name), value.strip()))
    return result


def _header(text, name):
    for key, value in _headers(text):
        if key == name:
            return value
    return None


def _digestParams(value):
    return {m.group(1).lower(): m.group(3) if m.group(3) is not None
            else m.group(4)
            for m in re.finditer(r'(\w+)=("([^"]*)"|([^",\s]*))', value)}


def _md5(text):
    return hashlib.md5(text.encode("utf-8")).hexdigest()


class Responder:
    """
    Answers every SIP request but ACK, copying Via, From, To (adding a tag),
    Call-ID and CSeq; with C{users}, asks for Digest credentials (401) and
    refuses wrong ones (403).

    @ivar requests: the text of every request received.
    """

    def __init__(self, status=200, users=None):
        self.status = status
        self.users = users
        self.requests = []

    def _credentialsOK(self, request, method):
        authorization = _header(request, "authorization")
        if authorization is None:
            return None
        params = _digestParams(authorization)
        password = self.users.get(params.get("username"))
        if password is None or params.get("nonce") != NONCE:
            return False
        ha1 = _md5(f"{params['username']}:{REALM}:{password}")
        ha2 = _md5(f"{method}:{params.get('uri')}")
        if params.get("qop"):
            expected = _md5(f"{ha1}:{NONCE}:{params.get('nc')}:"
                            f"{params.get('cnonce')}:{params['qop']}:{ha2}")
        else:
            expected = _md5(f"{ha1}:{NONCE}:{ha2}")
        return params.get("response") == expected

    def answer(self, data):
        """
        The response to C{data} (bytes), or L{None} for an ACK.
        """
        request = data.decode("utf-8", "replace")
        self.requests.append(request)
        method = request.split(" ", 1)[0]
        if method == "ACK":
            return None
        status, reason, extra = self.status, "Whatever", []
        if status == 200:
            reason = "OK"
        if self.users is not None:
            ok = self._credentialsOK(request, method)
            if ok is None:
                status, reason = 401, "Unauthorized"
                extra.append(f'WWW-Authenticate: Digest realm="{REALM}", '
                             f'nonce="{NONCE}", algorithm=MD5')
            elif not ok:
                status, reason = 403, "Forbidden"
        lines = [f"SIP/2.0 {status} {reason}"]
        for name, value in _headers(request):
            if name == "to" and ";tag=" not in value:
                value += ";tag=responder"
            if name in ("via", "from", "to", "call-id", "cseq"):
                lines.append(f"{name.title()}: {value}")
        lines.extend(extra)
        lines.append("Content-Length: 0")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8")


class _UDPResponder(DatagramProtocol):
    def __init__(self, responder):
        self.responder = responder

    def datagramReceived(self, data, address):
        response = self.responder.answer(data)
        if response is not None:
            self.transport.write(response, address)


class _StreamResponder(Protocol):
    """
    Frames SIP messages on a stream by Content-Length.
    """

    def __init__(self, responder):
        self.responder = responder
        self.buffer = b""

    def dataReceived(self, data):
        self.buffer += data
        for _ in range(100):
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            length = _header(self.buffer[:end + 4].decode("utf-8", "replace"),
                             "content-length")
            total = end + 4 + int(length or 0)
            if len(self.buffer) < total:
                return
            message, self.buffer = self.buffer[:total], self.buffer[total:]
            response = self.responder.answer(message)
            if response is not None:
                self.transport.write(response)


class _ResponderMixin:
    """
    Start responders on loopback with the real reactor.
    """

    timeout = 90

    def setUp(self):
        from twisted.internet import reactor
        self.reactor = reactor

    def listenUDP(self, responder):
        port = self.reactor.listenUDP(0, _UDPResponder(responder),
                                      interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return port.getHost().port

    def listenTCP(self, responder):
        port = self.reactor.listenTCP(
            0, Factory.forProtocol(lambda: _StreamResponder(responder)),
            interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return port.getHost().port

    async def listenTLS(self, responder):
        directory = self.mktemp()
        files = testca.makeCA(directory)
        self.caCertificate = files["ca.pem"]
        options = serverContextFactory(
            files["server.pem"], files["server.key"],
            maximumVersion=TLSVersion.TLSv1_2)
        port = await tlsServerEndpoint(self.reactor, 0, "127.0.0.1",
                                       options).listen(
            Factory.forProtocol(lambda: _StreamResponder(responder)))
        self.addCleanup(port.stopListening)
        return port.getHost().port


def _summary(result):
    code, stdout, stderr = result
    return f"exit {code}\nstdout:\n{stdout[-3000:]}\nstderr:\n{stderr[-3000:]}"


class SipsakTests(_ResponderMixin, TestCase):
    """
    L{interop.runSipsak} runs the real sipsak.
    """

    async def test_udp(self):
        """
        sipsak sends OPTIONS over UDP to the address given as proxy, with the
        URI as Request-URI, and exits 0 on 200.
        """
        responder = Responder()
        port = self.listenUDP(responder)
        result = await interop.runSipsak(
            self.reactor, "sip:bob@127.0.0.1", proxy=("127.0.0.1", port))
        self.assertEqual(result[0], 0, _summary(result))
        (request,) = responder.requests
        self.assertTrue(request.startswith("OPTIONS sip:bob@127.0.0.1 SIP/2.0"))
        self.assertIn("SIP/2.0/UDP", _header(request, "via"))

    async def test_tcp(self):
        """
        With C{transport="tcp"} sipsak uses TCP.
        """
        responder = Responder()
        port = self.listenTCP(responder)
        result = await interop.runSipsak(
            self.reactor, "sip:bob@127.0.0.1", transport="tcp",
            proxy=f"127.0.0.1:{port}")
        self.assertEqual(result[0], 0, _summary(result))
        (request,) = responder.requests
        self.assertIn("SIP/2.0/TCP", _header(request, "via"))

    async def test_tls(self):
        """
        With C{transport="tls"} sipsak talks TLS (1.2) to a server built with
        L{serverContextFactory}.
        """
        responder = Responder()
        port = await self.listenTLS(responder)
        result = await interop.runSipsak(
            self.reactor, "sip:bob@localhost", transport="tls",
            proxy=f"127.0.0.1:{port}", caCertificate=self.caCertificate)
        self.assertEqual(result[0], 0, _summary(result))
        (request,) = responder.requests
        self.assertIn("SIP/2.0/TLS", _header(request, "via"))

    async def test_errorResponse(self):
        """
        sipsak exits 1 on a final response other than 2xx.
        """
        port = self.listenUDP(Responder(status=404))
        result = await interop.runSipsak(
            self.reactor, "sip:bob@127.0.0.1", proxy=("127.0.0.1", port))
        self.assertEqual(result[0], 1, _summary(result))

    async def test_noAnswer(self):
        """
        sipsak exits 3 when nothing listens there (ICMP port unreachable on
        loopback, or no answer within 64*T1).
        """
        port = interop.freePort("udp")
        result = await interop.runSipsak(
            self.reactor, "sip:bob@127.0.0.1", proxy=("127.0.0.1", port),
            t1=50, timeout=20)
        self.assertEqual(result[0], 3, _summary(result))


class SippTests(_ResponderMixin, TestCase):
    """
    L{interop.runSipp} runs the real SIPp.
    """

    async def test_optionsUDP(self):
        """
        The OPTIONS scenario over UDP succeeds for every call when each gets
        a 200; SIPp exits 0.
        """
        responder = Responder()
        port = self.listenUDP(responder)
        result = await interop.runSipp(
            self.reactor, interop.OPTIONS_SCENARIO, ("127.0.0.1", port),
            calls=3, rate=50, timeout=20)
        self.assertEqual(result[0], 0, _summary(result))
        self.assertEqual(len(responder.requests), 3)
        for request in responder.requests:
            self.assertTrue(request.startswith("OPTIONS sip:service@"))
            self.assertIn("SIP/2.0/UDP 127.0.0.1:", _header(request, "via"))

    async def test_optionsTCP(self):
        """
        The OPTIONS scenario works over TCP (C{-t t1}).
        """
        responder = Responder()
        port = self.listenTCP(responder)
        result = await interop.runSipp(
            self.reactor, interop.OPTIONS_SCENARIO, f"127.0.0.1:{port}",
            transport="t1", calls=3, rate=50, timeout=20)
        self.assertEqual(result[0], 0, _summary(result))
        self.assertEqual(len(responder.requests), 3)
        self.assertIn("SIP/2.0/TCP", _header(responder.requests[0], "via"))

    async def test_builtinScenario(self):
        """
        A built-in scenario runs with C{-sn}: C{uac} sends INVITE, ACK, BYE.
        """
        responder = Responder()
        port = self.listenUDP(responder)
        result = await interop.runSipp(
            self.reactor, "uac", ("127.0.0.1", port), timeout=20,
            extra=["-d", "0"])
        self.assertEqual(result[0], 0, _summary(result))
        methods = [r.split(" ", 1)[0] for r in responder.requests]
        self.assertEqual(methods, ["INVITE", "ACK", "BYE"])

    async def test_failedCall(self):
        """
        SIPp exits 1 when a call gets an unexpected response.
        """
        port = self.listenUDP(Responder(status=404))
        result = await interop.runSipp(
            self.reactor, interop.OPTIONS_SCENARIO, ("127.0.0.1", port),
            timeout=20)
        self.assertEqual(result[0], 1, _summary(result))

    async def test_authentication(self):
        """
        With C{username}/C{password} (C{-au}/C{-ap}) the scenario answers a
        401 with valid Digest credentials.
        """
        responder = Responder(users={"alice": "alice-secret"})
        port = self.listenUDP(responder)
        result = await interop.runSipp(
            self.reactor, interop.OPTIONS_SCENARIO, ("127.0.0.1", port),
            service="alice", username="alice", password="alice-secret",
            timeout=20)
        self.assertEqual(result[0], 0, _summary(result))
        self.assertEqual(len(responder.requests), 2)
        self.assertIn('username="alice"',
                      _header(responder.requests[1], "authorization"))

    async def test_wrongPassword(self):
        """
        Wrong credentials get a 403 and the call fails.
        """
        port = self.listenUDP(Responder(users={"alice": "alice-secret"}))
        result = await interop.runSipp(
            self.reactor, interop.OPTIONS_SCENARIO, ("127.0.0.1", port),
            service="alice", username="alice", password="wrong", timeout=20)
        self.assertEqual(result[0], 1, _summary(result))

    async def test_injectionFile(self):
        """
        With an injection file (C{-inf}), each call is made as the next user
        of the file.
        """
        responder = Responder()
        port = self.listenUDP(responder)
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("SEQUENTIAL\nalice;alice-secret\nbob;bob-secret\n")
        result = await interop.runSipp(
            self.reactor, interop.OPTIONS_USERS_SCENARIO, ("127.0.0.1", port),
            calls=2, rate=50, injectionFile=os.path.abspath(path), timeout=20)
        self.assertEqual(result[0], 0, _summary(result))
        users = [re.match(r"<sip:(\w+)@", _header(r, "from")).group(1)
                 for r in responder.requests]
        self.assertEqual(sorted(users), ["alice", "bob"])

    async def test_perUserCredentials(self):
        """
        L{interop.runSippUsers} runs SIPp once per user, each authenticating
        with its own credentials.
        """
        users = {"alice": "alice-secret", "bob": "bob-secret"}
        responder = Responder(users=users)
        port = self.listenUDP(responder)
        results = await interop.runSippUsers(
            self.reactor, interop.OPTIONS_SCENARIO, ("127.0.0.1", port),
            users.items(), timeout=20)
        self.assertEqual([user for user, _ in results], ["alice", "bob"])
        for user, result in results:
            self.assertEqual(result[0], 0, _summary(result))
        authorized = [_digestParams(_header(r, "authorization"))["username"]
                      for r in responder.requests
                      if _header(r, "authorization")]
        self.assertEqual(authorized, ["alice", "bob"])

    def test_tlsNeedsSupport(self):
        """
        C{transport="l1"} needs a SIPp built with TLS: without, it skips
        (fails under C{CI=true}) before running anything.
        """
        if interop.sippSupportsTLS():
            self.assertIsNone(interop.requireSippTLS())
            return
        self.patch(os, "environ", {k: v for k, v in os.environ.items()
                                   if k != "CI"})
        error = self.assertRaises(
            unittest.SkipTest, interop.runSipp, self.reactor,
            interop.OPTIONS_SCENARIO, "127.0.0.1:5061", transport="l1")
        self.assertIn("sipp has no TLS", str(error))
        self.patch(os, "environ", dict(os.environ, CI="true"))
        self.assertRaises(
            unittest.FailTest, interop.runSipp, self.reactor,
            interop.OPTIONS_SCENARIO, "127.0.0.1:5061", transport="l1")


class RunProcessTests(TestCase):
    """
    L{interop.runProcess} is bounded in time.
    """

    timeout = 30

    async def test_output(self):
        """
        The exit code and both outputs are collected.
        """
        from twisted.internet import reactor
        result = await interop.runProcess(
            reactor, ["/bin/sh", "-c", "echo out; echo err >&2; exit 3"],
            timeout=10)
        self.assertEqual(result, (3, "out\n", "err\n"))

    async def test_timeoutKills(self):
        """
        A process still running at the timeout is killed and the result is
        a L{interop.ToolTimeout}.
        """
        from twisted.internet import reactor
        d = interop.runProcess(reactor, ["/bin/sleep", "30"], timeout=0.2)
        with self.assertRaises(interop.ToolTimeout) as context:
            await d
        self.assertEqual(context.exception.argv, ["/bin/sleep", "30"])


class RequireToolTests(SynchronousTestCase):
    """
    L{interop.requireTool} finds tools or skips, and fails under CI.
    """

    def setEnvironment(self, **values):
        environ = {k: v for k, v in os.environ.items() if k != "CI"}
        environ.update(values)
        self.patch(os, "environ", environ)

    def test_found(self):
        """
        An installed tool's path is returned.
        """
        self.setEnvironment()
        path = interop.requireTool("sh")
        self.assertEqual(os.path.basename(path), "sh")
        self.assertTrue(os.access(path, os.X_OK))

    def test_missingSkips(self):
        """
        A missing tool skips the test, naming the package to install.
        """
        self.setEnvironment(PATH="/nonexistent")
        error = self.assertRaises(unittest.SkipTest, interop.requireTool,
                                  "sipp")
        self.assertEqual(str(error),
                         "sipp not installed: apt-get install sip-tester")

    def test_missingFailsInCI(self):
        """
        Under C{CI=true} a missing tool fails the test instead.
        """
        self.setEnvironment(PATH="/nonexistent", CI="true")
        error = self.assertRaises(unittest.FailTest, interop.requireTool,
                                  "sipsak")
        self.assertIn("sipsak not installed: apt-get install sipsak",
                      str(error))


class FreePortTests(SynchronousTestCase):
    """
    L{interop.freePort} gives a port that can be bound.
    """

    def test_bindable(self):
        """
        The port returned can be bound on loopback for its kind.
        """
        import socket
        for kind, sockType in (("udp", socket.SOCK_DGRAM),
                               ("tcp", socket.SOCK_STREAM)):
            port = interop.freePort(kind)
            self.assertTrue(0 < port < 65536)
            with socket.socket(socket.AF_INET, sockType) as s:
                s.bind(("127.0.0.1", port))

    def test_badKind(self):
        """
        Only udp and tcp are known.
        """
        self.assertRaises(ValueError, interop.freePort, "sctp")
