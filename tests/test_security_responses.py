"""
Reflection and lockout, on real sockets on loopback.

Reflection: nothing a sender writes in a request or a response makes a
server of the pool send to a third address.  A "victim" (UDP and TCP sinks
on 127.0.0.2) counts what it receives; it must receive nothing.

Lockout: through an edge every client reaches the homes from the edge's
address; one user's wrong passwords slow that user down at that client
address only, never the other users behind the edge, and never the same
user elsewhere.
"""

from twisted.internet import defer, endpoints, reactor
from twisted.internet.protocol import DatagramProtocol, Factory, Protocol
from twisted.trial.unittest import TestCase

from sipdist.auth.client import answerChallenge
from sipdist.server import buildServer
from sipdist.services.proxy import BRANCH_PREFIX
from sipdist.sip.message import StreamFramer, parseMessage
from sipdist.store import ServerRecord
from sipdist.store.memory import MemoryAssignmentStore
from tests.distribution_helpers import waitFor

VICTIM = "127.0.0.2"
SECRET = "pool-nonce-secret-0123456789abcdef"
PASSWORD = "wonderland"
USERS = f"memory:alice:{PASSWORD},bob:{PASSWORD}"
T1 = 0.02


class Sink(DatagramProtocol):
    """
    A UDP socket counting the bytes it receives.
    """

    def __init__(self):
        self.received = 0
        self.datagrams = []

    def datagramReceived(self, data, addr):
        self.received += len(data)
        self.datagrams.append(data)


class StreamSink(Protocol):
    def connectionMade(self):
        self.factory.connections += 1

    def dataReceived(self, data):
        self.factory.received += len(data)


class StreamSinkFactory(Factory):
    protocol = StreamSink
    connections = 0
    received = 0


def invite(via, callId):
    return (
        "INVITE sip:bob@example.com SIP/2.0\r\n"
        f"Via: {via}\r\n"
        "Max-Forwards: 70\r\n"
        "From: <sip:mallory@example.com>;tag=m1\r\n"
        "To: <sip:bob@example.com>\r\n"
        f"Call-ID: {callId}\r\nCSeq: 1 INVITE\r\n"
        "Contact: <sip:mallory@127.0.0.1>\r\n"
        "Content-Length: 0\r\n\r\n").encode("ascii")


def forgedResponse(home, secondVia):
    """
    A 200 whose top Via carries a branch of ours at the home's address, and
    whose second Via names the victim.
    """
    host, port = home
    return (
        "SIP/2.0 200 OK\r\n"
        f"Via: SIP/2.0/TCP {host}:{port};branch={BRANCH_PREFIX}abc.1\r\n"
        f"Via: {secondVia}\r\n"
        "From: <sip:mallory@example.com>;tag=m1\r\n"
        "To: <sip:bob@example.com>;tag=b1\r\n"
        "Call-ID: forged\r\nCSeq: 1 INVITE\r\n"
        "Content-Length: 0\r\n\r\n").encode("ascii")


class Sender(Protocol):
    def __init__(self, data):
        self.data = data

    def connectionMade(self):
        self.transport.write(self.data)


class ReflectionTests(TestCase):
    """
    A home on 127.0.0.1 (UDP and TCP); an attacker on 127.0.0.1; the victim
    on 127.0.0.2.
    """

    @defer.inlineCallbacks
    def setUp(self):
        config = {"role": "home", "name": "home1", "domain": "example.com",
                  "listen": ["udp:0:interface=127.0.0.1",
                             "tcp:0:interface=127.0.0.1"],
                  "credentials": USERS, "secret": SECRET, "t1": T1}
        self.service = buildServer(config, reactor,
                                   store=MemoryAssignmentStore())
        self.service.startService()
        self.addCleanup(self.service.stopService)
        yield self.service.transportService.ready
        transport = self.service.transport
        self.udp = transport.localAddress("UDP")
        self.tcp = transport.localAddress("TCP")
        self.sink = Sink()
        port = reactor.listenUDP(0, self.sink, interface=VICTIM)
        self.addCleanup(port.stopListening)
        self.sinkPort = port.getHost().port
        self.streamSink = StreamSinkFactory()
        port = reactor.listenTCP(0, self.streamSink, interface=VICTIM)
        self.addCleanup(port.stopListening)
        self.streamSinkPort = port.getHost().port

    @defer.inlineCallbacks
    def test_maddrInvite(self):
        """
        An INVITE over UDP whose Via names the victim in sent-by and maddr,
        without rport, gets its 407 at the sender's own address (at the
        sent-by port), once (a challenge is not retransmitted: the client
        retransmits its INVITE); the victim receives nothing.
        """
        attacker = Sink()
        try:
            port = reactor.listenUDP(self.sinkPort, attacker,
                                     interface="127.0.0.1")
        except Exception as e:
            self.skipTest(f"port {self.sinkPort} taken on 127.0.0.1: {e}")
        self.addCleanup(port.stopListening)
        port.write(invite(f"SIP/2.0/UDP {VICTIM}:{self.sinkPort};"
                          f"maddr={VICTIM};branch=z9hG4bKrefl1", "refl1"),
                   self.udp)
        transactions = self.service.transactions
        yield waitFor(lambda: transactions.serverCreated == 1
                      and transactions.active == 0)
        codes = [parseMessage(d).code for d in attacker.datagrams]
        self.assertEqual(codes, [407])
        self.assertEqual(self.sink.received, 0)

    @defer.inlineCallbacks
    def forge(self, secondVia):
        connected = yield endpoints.connectProtocol(
            endpoints.TCP4ClientEndpoint(reactor, *self.tcp),
            Sender(forgedResponse(self.tcp, secondVia)))
        self.addCleanup(connected.transport.loseConnection)
        transactions = self.service.transactions
        yield waitFor(lambda: transactions.strayResponses == 1
                      or self.sink.received or self.streamSink.connections,
                      timeout=5)
        # What a relay would have done happens within the same turns of the
        # reactor as the drop: give it a few more.
        for _ in range(5):
            yield waitFor(lambda: True)

    @defer.inlineCallbacks
    def test_forgedResponseUDP(self):
        """
        A response over TCP with one of our branches on top and the victim
        (UDP) in the second Via is dropped and counted: the victim receives
        nothing.
        """
        yield self.forge(f"SIP/2.0/UDP {VICTIM}:{self.sinkPort};"
                         f"branch=z9hG4bKv1")
        self.assertEqual(self.sink.received, 0)

    @defer.inlineCallbacks
    def test_forgedResponseTCP(self):
        """
        The same with the victim's TCP port in the second Via: no
        connection is made to it.
        """
        yield self.forge(f"SIP/2.0/TCP {VICTIM}:{self.streamSinkPort};"
                         f"received={VICTIM};branch=z9hG4bKv2")
        self.assertEqual((self.streamSink.connections,
                          self.streamSink.received), (0, 0))


class RegisterClient(Protocol):
    """
    A TCP client sending one request at a time and firing a Deferred with
    each response.
    """

    def connectionMade(self):
        self.framer = StreamFramer(self._message, self._error, lambda: None,
                                   65535)
        self.waiting = None

    def dataReceived(self, data):
        self.framer.dataReceived(data)

    def _message(self, data):
        response = parseMessage(data, stream=True)
        if response.code < 200:
            return
        d, self.waiting = self.waiting, None
        if d is not None:
            d.callback(response)

    def _error(self, error):
        self.transport.loseConnection()

    def send(self, data):
        self.waiting = d = defer.Deferred()
        self.transport.write(data)
        return d


class EdgeLockoutTests(TestCase):
    """
    Two homes and an edge in front of them, all in this process (as in
    L{tests.test_topologies}); clients over TCP to the edge from 127.0.0.1
    (and, for "another address", 127.0.0.3).
    """

    @defer.inlineCallbacks
    def start(self, name, role, **extra):
        config = {"role": role, "name": name, "domain": "example.com",
                  "listen": ["tcp:0:interface=127.0.0.1"],
                  "credentials": USERS, "secret": SECRET, "t1": T1}
        config.update(extra)
        service = buildServer(config, reactor, store=self.store)
        service.startService()
        self.addCleanup(service.stopService)
        yield service.transportService.ready
        port = service.transportService.ports[0].getHost().port
        return service, f"sip:127.0.0.1:{port};transport=tcp"

    edgeSecret = SECRET

    @defer.inlineCallbacks
    def setUp(self):
        self.store = MemoryAssignmentStore()
        self.home1, uri1 = yield self.start("home1", "home")
        self.home2, uri2 = yield self.start("home2", "home")
        yield self.store.addServer(ServerRecord("home1", uri1))
        yield self.store.addServer(ServerRecord("home2", uri2))
        yield self.store.assignUser("alice@example.com", "home1")
        yield self.store.assignUser("bob@example.com", "home2")
        self.edge, _ = yield self.start(
            "edge", "edge", listen=["tcp:0:interface=127.0.0.1"],
            secret=self.edgeSecret,
            **{"inside-listen": ["tcp:0:interface=127.0.0.1"],
               "next-hop": [uri1, uri2]})
        self.edgePort = self.edge.transportService.ports[0].getHost().port
        self.cseq = 0

    @defer.inlineCallbacks
    def client(self, source="127.0.0.1"):
        endpoint = endpoints.TCP4ClientEndpoint(
            reactor, "127.0.0.1", self.edgePort, bindAddress=(source, 0))
        client = yield endpoints.connectProtocol(endpoint, RegisterClient())
        self.addCleanup(client.transport.loseConnection)
        return client

    def register(self, client, user, authorization=None):
        self.cseq += 1
        host = client.transport.getHost()
        auth = f"Authorization: {authorization}\r\n" if authorization else ""
        data = (
            "REGISTER sip:example.com SIP/2.0\r\n"
            f"Via: SIP/2.0/TCP {host.host}:{host.port};"
            f"branch=z9hG4bKlock{self.cseq}\r\n"
            "Max-Forwards: 70\r\n"
            f"From: <sip:{user}@example.com>;tag=t{self.cseq}\r\n"
            f"To: <sip:{user}@example.com>\r\n"
            f"Call-ID: lock-{user}-{host.host}\r\n"
            f"CSeq: {self.cseq} REGISTER\r\n"
            f"Contact: <sip:{user}@{host.host}:{host.port};transport=tcp>\r\n"
            f"{auth}Expires: 600\r\nContent-Length: 0\r\n\r\n")
        return client.send(data.encode("ascii"))

    @defer.inlineCallbacks
    def login(self, client, user, password):
        """
        A REGISTER, and the answer to its challenge.

        @return: the final response to the answer (or the first response
            if it was not a challenge).
        """
        response = yield self.register(client, user)
        if response.code != 401:
            return response
        value, _ = answerChallenge(response.values("www-authenticate"),
                                   "REGISTER", "sip:example.com", user,
                                   password)
        response = yield self.register(client, user, value)
        return response

    @defer.inlineCallbacks
    def test_oneUsersMistakes(self):
        """
        Alice gets her password wrong 25 times through the edge: she is
        slowed down (403 with a short Retry-After) at her address; bob,
        behind the same edge at the same address, registers at once; alice
        with the right password from another address registers at once too.
        """
        mallory = yield self.client()
        codes = []
        for _ in range(25):
            response = yield self.login(mallory, "alice", "wrong")
            codes.append(response.code)
            if response.code == 403:
                retry = int(response.header("retry-after"))
                self.assertLessEqual(retry, 60)
        self.assertEqual(codes[:9], [401] * 9)
        self.assertIn(403, codes)
        bob = yield self.client()
        response = yield self.login(bob, "bob", PASSWORD)
        self.assertEqual(response.code, 200)
        elsewhere = yield self.client("127.0.0.3")
        response = yield self.login(elsewhere, "alice", PASSWORD)
        self.assertEqual(response.code, 200)


class EdgeWithoutSecretTests(EdgeLockoutTests):
    """
    An edge without the pool's secret states no client address: its
    clients share its address at the homes, and still one user's mistakes
    slow down nobody else.
    """

    edgeSecret = None

    @defer.inlineCallbacks
    def test_oneUsersMistakes(self):
        """
        Alice gets her password wrong 25 times; bob, behind the same edge,
        registers at once.
        """
        mallory = yield self.client()
        codes = []
        for _ in range(25):
            response = yield self.login(mallory, "alice", "wrong")
            codes.append(response.code)
        self.assertIn(403, codes)
        bob = yield self.client()
        response = yield self.login(bob, "bob", PASSWORD)
        self.assertEqual(response.code, 200)
