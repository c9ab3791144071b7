"""
The RFC 4475 and RFC 5118 torture messages (our own, written from the
RFCs' text: L{tests.conformance.messages}) sent to a server of every role,
over UDP and TCP, through its whole stack: transport, transactions and
role.  docs/conformance.rst says the same in prose.
"""

from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.trial.unittest import SynchronousTestCase

from sipdist.server import buildServer
from sipdist.sip.message import MessageError, parseMessage
from sipdist.sip.transport import SIPDatagramProtocol, _StreamFactory
from sipdist.store import ServerRecord
from sipdist.store.memory import MemoryAssignmentStore
from tests.conformance.messages import ACCEPTED, CORPUS, DROPPED
from tests.test_roles import CREDENTIALS
from tests.test_transport import FakeUDPTransport

ROLES = ("home", "distributor", "internal-edge", "edge")

# Cases whose framing depends on the datagram: over a stream the bytes past
# Content-Length are the next message (dblreq), a Content-Length past the
# end waits for more (clerr).
DATAGRAM_ONLY = frozenset(("dblreq", "clerr"))

# Answers that come from the role, not the parser: checked at the home
# (the registrar, the UAS for OPTIONS and unknown methods); the other roles
# relay these requests and are only checked to have accepted them.
HOME_ONLY = frozenset(("intmeth", "esc02", "lwsdisp", "zeromf", "regaut01",
                       "cparam01", "cparam02", "regescrt"))


class Stack:
    """
    A server of some role built as twistd builds it, on a memory reactor,
    with a fake UDP port and fake TCP connections feeding its transport.
    """

    def __init__(self, role):
        self.reactor = MemoryReactorClock()
        store = MemoryAssignmentStore()
        store.addServer(ServerRecord("home1", "sip:127.0.0.1:5070"))
        store.addServer(ServerRecord("home2", "sip:127.0.0.1:5080"))
        store.assignUser("alice@example.com", "home1")
        store.assignUser("bob@example.com", "home2")
        config = {"role": role, "name": "home1", "domain": "example.com",
                  "listen": [], "credentials": CREDENTIALS,
                  "secret": "test-secret-0123456789",
                  "next-hop": ["sip:127.0.0.1:5070"]}
        self.service = buildServer(config, self.reactor, store=store)
        self.transport = self.service.transport
        self.protocol = SIPDatagramProtocol(self.transport, 0)
        self.udp = FakeUDPTransport()
        self.protocol.makeConnection(self.udp)
        self.transport._datagram.append(self.protocol)
        self.transport._local.update(
            {"UDP": ("127.0.0.1", 5060), "TCP": ("127.0.0.1", 5060)})
        self.factory = _StreamFactory(self.transport, "TCP")
        self.port = 40000

    def fresh(self, data):
        """
        The message with branches of its own, so that no two sends match
        the same transaction.
        """
        return data.replace(b"branch=z9hG4bK",
                            b"branch=z9hG4bK%dx" % self.port)

    def udpAnswers(self, data):
        """
        Send C{data} as a datagram from a new source port: what came back
        to it.
        """
        self.port += 1
        data = self.fresh(data)
        source = ("192.0.2.7", self.port)
        before = len(self.udp.written)
        self.protocol.datagramReceived(data, source)
        return [parseMessage(d) for d, addr in self.udp.written[before:]
                if addr[0] == "192.0.2.7" and not d.startswith(b"SIP/2.0 100 ")]

    def tcpAnswers(self, data):
        """
        Send C{data} on a new TCP connection: what came back on it, and
        whether the connection is being closed.
        """
        self.port += 1
        data = self.fresh(data)
        addr = IPv4Address("TCP", "192.0.2.7", self.port)
        protocol = self.factory.buildProtocol(addr)
        transport = StringTransport(
            hostAddress=IPv4Address("TCP", "127.0.0.1", 5060),
            peerAddress=addr)
        protocol.makeConnection(transport)
        protocol.dataReceived(data)
        answers = []
        rest = transport.value()
        while rest:
            end = rest.find(b"\r\n\r\n")
            head = rest[:end]
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            message, rest = rest[:end + 4 + length], rest[end + 4 + length:]
            if not message.startswith(b"SIP/2.0 100 "):
                answers.append(parseMessage(message))
        return answers, transport.disconnecting

    def errors(self):
        t = self.transport
        return t.dropped, t.answeredErrors


class ConformanceTests(SynchronousTestCase):
    """
    Each message of the corpus gets, from every role, over UDP and TCP,
    the outcome the corpus names; nothing raises.
    """

    def setUp(self):
        self.failures = []

    def tearDown(self):
        self.assertEqual(self.failures, [])

    def check(self, role, case, answers, before, stack):
        try:
            self._check(role, case, answers, before, stack)
        except self.failureException as e:
            self.failures.append(str(e))

    def _check(self, role, case, answers, before, stack):
        where = f"{case.name} ({case.rfc} {case.section}) at {role}"
        errors = stack.errors()
        if case.code is DROPPED:
            self.assertEqual(answers, [], where)
            return
        if case.code is ACCEPTED or (case.name in HOME_ONLY and role != "home"):
            # Past the parser and validation: the role has it.
            self.assertEqual(errors, before, where)
            for answer in answers:
                self.assertNotIn(answer.code, (400, 416, 505), where)
            return
        self.assertTrue(answers, where)
        self.assertEqual(answers[0].code, case.code, where)
        if case.phrase is not None:
            self.assertEqual(answers[0].phrase, case.phrase, where)

    def test_udp(self):
        for role in ROLES:
            stack = Stack(role)
            for case in CORPUS:
                before = stack.errors()
                answers = stack.udpAnswers(case.data)
                self.check(role, case, answers, before, stack)

    def test_tcp(self):
        """
        Over TCP the same; a connection is closed only where the framing
        is lost (a bad Content-Length).
        """
        for role in ROLES:
            stack = Stack(role)
            for case in CORPUS:
                if case.name in DATAGRAM_ONLY:
                    continue
                before = stack.errors()
                data = case.data
                if b"\r\ncontent-length" not in data.lower():
                    data = data.replace(b"\r\n\r\n", b"\r\nContent-Length: 0"
                                        b"\r\n\r\n", 1)
                answers, closed = stack.tcpAnswers(data)
                self.check(role, case, answers, before, stack)
                if closed != (case.name == "ncl"):
                    self.failures.append(f"{case.name} at {role}: closed "
                                         f"{closed}")

    def test_bextUnsupportedNamesTags(self):
        """
        The 420 to bext01 lists the Proxy-Require option-tags we lack (a
        proxy does not act on Require).
        """
        case = [c for c in CORPUS if c.name == "bext01"][0]
        [answer] = Stack("edge").udpAnswers(case.data)
        self.assertEqual(answer.header("unsupported"),
                         "noProxiesSupportThis, nothingSupportedHere")

    def test_wsinvParsesToTheSameMessage(self):
        """
        The tortuous INVITE reads as the plain one it spells.
        """
        case = [c for c in CORPUS if c.name == "wsinv"][0]
        request = parseMessage(case.data)
        self.assertEqual(request.cseq(), (9, "INVITE"))
        self.assertEqual(request.header("max-forwards"), "0068")
        self.assertEqual(request.viaCount(), 3)
        self.assertEqual([(v.transport, v.host, v.branch)
                          for v in request.vias()],
                         [("UDP", "192.0.2.7", "z9hG4bKws1"),
                          ("TCP", "relay.example.net", "z9hG4bKrelay1"),
                          ("UDP", "192.0.2.99", "z9hG4bKlast")])
        self.assertEqual(request.nameAddr("to")[2], {"tag": "8321234356"})
        self.assertEqual(request.nameAddr("contact")[2],
                         {"newparam": "newvalue", "secondparam": None,
                          "q": "0.33"})

    def test_everyCaseHasAnOutcome(self):
        """
        Every case names RFC, section, what it exercises and its outcome.
        """
        for case in CORPUS:
            self.assertIn(case.rfc, ("4475", "5118"))
            self.assertTrue(case.exercises)
            self.assertTrue(case.code in (ACCEPTED, DROPPED)
                            or isinstance(case.code, int), case.name)
        self.assertTrue(MessageError)
