"""
Scripted SIP servers on loopback for the client tests: real transport,
transaction and Digest layers (L{SIPServer}, L{DigestAuthenticator}), with a
REGISTER processor whose answer after authentication each test chooses:
C{200}, a signed C{301} to another server, or a C{301} whose Contact was
altered after signing (something real roles never send).
"""

from twisted.internet import defer
from twisted.names import authority, client, dns
from twisted.names import server as names_server

from sipdist.auth.server import Authenticated, Challenge, DigestAuthenticator
from sipdist.auth.sources import makeChecker
from sipdist.client.core import UserAgent
from sipdist.client.discovery import ServerLocator
from sipdist.sip.message import responseTo
from sipdist.server import SIPServer
from sipdist.sip.transaction import TransactionLayer
from sipdist.sip.transport import TransportLayer

DOMAIN = "example.com"
SECRET = "scripted-nonce-secret-0123456789"
PASSWORD = "wonderland"


class OK:
    """
    Answer 200 (signed), granting C{expires}.
    """

    def __init__(self, expires=None):
        self.expires = expires


class Redirect:
    """
    Answer a signed 301 to C{server} (a L{ScriptedServer}); with C{sent},
    sign C{server}'s Contact but write C{sent}'s (a tampered redirect).
    """

    def __init__(self, server, sent=None):
        self.server = server
        self.sent = sent


class Refuse:
    def __init__(self, code, phrase=None):
        self.code = code
        self.phrase = phrase


class _RegisterProcessor:
    def __init__(self, server):
        self.server = server

    def __call__(self, request, transaction):
        server = self.server
        if request.method != "REGISTER":
            if request.method in server.accept:
                server.requests.append(request)
                transaction.respond(responseTo(request, 200))
                return True
            return False
        server.requests.append(request)
        d = server.authenticator.authenticate(
            "REGISTER", request.uriText,
            request.headers.get("authorization", []),
            transaction.flow.remote[0])
        d.addCallback(self._decided, request, transaction)
        return True

    def _decided(self, result, request, transaction):
        server = self.server
        if isinstance(result, Challenge):
            response = responseTo(request, result.code, result.phrase)
            for name, value in result.headers:
                response.addHeader(name, value)
            transaction.respond(response)
            return
        if not isinstance(result, Authenticated):
            transaction.respond(responseTo(request, result.code,
                                           result.phrase))
            return
        server.authenticated += 1
        action = server.action
        callId = request.callID
        cseq = request.header("cseq")
        if isinstance(action, Refuse):
            transaction.respond(responseTo(request, action.code,
                                           action.phrase))
            return
        if isinstance(action, OK):
            response = responseTo(request, 200)
            contact = request.header("contact")
            expires = action.expires
            if expires is None:
                expires = int(request.header("expires") or 3600)
            if contact:
                response.headers["contact"] = [f"{contact};expires={expires}"]
            signed = server.authenticator.sign(result, 200, callId, cseq,
                                               None)
        else:
            contact = f"<{action.server.uri}>"
            response = responseTo(request, 301, "Moved Permanently")
            signed = server.authenticator.sign(result, 301, callId, cseq,
                                               contact)
            if action.sent is not None:
                contact = f"<{action.sent.uri}>"
            response.headers["contact"] = [contact]
        for name, value in signed:
            response.addHeader(name, value)
        transaction.respond(response)


class ScriptedServer:
    """
    A SIP server on loopback UDP (and TCP, or TLS) answering REGISTER as
    C{action} says.

    @ivar requests: every REGISTER (and accepted other request) received.
    @ivar authenticated: how many REGISTERs authenticated.
    """

    def __init__(self, reactor, name, action=None, users=f"alice:{PASSWORD}",
                 accept=(), algorithms=("SHA-256", "MD5")):
        self.reactor = reactor
        self.name = name
        self.action = action or OK()
        self.accept = accept
        self.requests = []
        self.authenticated = 0
        self.authenticator = DigestAuthenticator(
            DOMAIN, SECRET, makeChecker(reactor, f"memory:{users}"), reactor,
            algorithms=algorithms)
        self.sip = SIPServer(reactor, name, DOMAIN,
                             processors=[_RegisterProcessor(self)],
                             methods=("REGISTER",) + tuple(accept))
        self.transactions = TransactionLayer(reactor, self.sip, T1=0.05)
        self.sip.transactions = self.transactions
        self.transport = TransportLayer(reactor, self.transactions)
        self.port = None
        self.uri = None

    @defer.inlineCallbacks
    def start(self, kind="udp", tlsServerOptions=None):
        port = yield self.transport.listen(f"{kind}:0:interface=127.0.0.1",
                                           tlsServerOptions)
        self.port = port.getHost().port
        if kind == "udp":
            self.uri = f"sip:127.0.0.1:{self.port}"
        elif kind == "tcp":
            self.uri = f"sip:127.0.0.1:{self.port};transport=tcp"
        else:
            self.uri = f"sips:127.0.0.1:{self.port}"
        return self

    def stop(self):
        self.transactions.stop()
        return self.transport.stopListening()

    @property
    def registers(self):
        return [r for r in self.requests if r.method == "REGISTER"]


@defer.inlineCallbacks
def startServers(testCase, reactor, count, kind="udp", **kw):
    """
    Start C{count} scripted servers named C{s0}, C{s1}...; stopped when
    the test ends.
    """
    servers = []
    for i in range(count):
        server = ScriptedServer(reactor, f"s{i}", **kw)
        yield server.start(kind)
        testCase.addCleanup(server.stop)
        servers.append(server)
    return servers


@defer.inlineCallbacks
def startAgent(testCase, reactor, aor="alice@example.com", password=PASSWORD,
               resolver=None, T1=0.05, **kw):
    """
    A started L{UserAgent} on loopback with its event list (C{ua.events}),
    stopped when the test ends.
    """
    events = []
    ua = UserAgent(reactor, aor, password, listen="udp:0:interface=127.0.0.1",
                   T1=T1, observer=events.append, **kw)
    ua.events = events
    yield ua.start()
    testCase.addCleanup(ua.stop)
    ua.locator = ServerLocator(resolver)
    return ua


def kinds(ua):
    """
    The kinds of the events an agent reported, in order.
    """
    return [e.kind for e in ua.events]


class _Zone(authority.FileAuthority):
    """
    An authoritative zone from a list of C{(name, record)}, the first
    record being its SOA.
    """

    def loadFile(self, zone):
        self.records = {}
        for name, record in zone:
            name = dns.domainString(name).lower()
            if isinstance(record, dns.Record_SOA):
                self.soa = (name, record)
            self.records.setdefault(name, []).append(record)


def zone(origin, records):
    """
    The records of a zone for C{origin} with its SOA first; C{records} are
    C{(name, record)} pairs.
    """
    soa = dns.Record_SOA(mname=f"ns.{origin}", rname=f"admin.{origin}",
                         serial=1, refresh=60, retry=60, expire=60,
                         minimum=1, ttl=1)
    return [(origin, soa)] + list(records)


def startDNS(testCase, reactor, records):
    """
    Start a L{twisted.names} DNS server on loopback UDP serving C{records}
    (see L{zone}); stopped when the test ends.

    @return: a L{client.Resolver} asking it, with the test's reactor.
    """
    factory = names_server.DNSServerFactory(authorities=[_Zone(records)])
    protocol = dns.DNSDatagramProtocol(factory)
    port = reactor.listenUDP(0, protocol, interface="127.0.0.1")
    testCase.addCleanup(port.stopListening)
    resolver = client.Resolver(
        servers=[("127.0.0.1", port.getHost().port)], reactor=reactor)
    return resolver
