"""
SIP capture over HEPv3 (L{sipdist.sip.hep}): the encoder decoded chunk by
chunk with a decoder of the test's own, the sender's limits, the
transport's capture points, a whole login captured from a distributor and
a home, and the packets read back by a real HEP decoder (sngrep) whose
output tshark dissects as SIP.
"""

import ipaddress
import os
import socket
import struct
import tempfile

from twisted.internet import defer, endpoints, reactor, task
from twisted.internet.address import IPv4Address
from twisted.internet.protocol import DatagramProtocol, Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase, TestCase

from sipdist.client.login import Registration
from sipdist.config import ConfigurationError
from sipdist.pool.metrics import ServerCollector
from sipdist.pool.status import statusOf
from sipdist.server import buildServer
from sipdist.sip import hep
from sipdist.sip.transport import (
    SIPDatagramProtocol, TransportLayer, _StreamFactory)
from sipdist.store import ServerRecord
from sipdist.store.memory import MemoryAssignmentStore
from sipdist.tap import Options
from tests.client_helpers import startAgent
from tests.interop import requireTool, runProcess

REGISTER = (
    b"REGISTER sip:example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.7:5070;branch=z9hG4bK-hep1;rport\r\n"
    b"Max-Forwards: 70\r\n"
    b"From: <sip:alice@example.com>;tag=a1\r\n"
    b"To: <sip:alice@example.com>\r\n"
    b"Call-ID: capture-1@192.0.2.7\r\n"
    b"CSeq: 1 REGISTER\r\n"
    b"Contact: <sip:alice@192.0.2.7:5070>\r\n"
    b"Content-Length: 0\r\n\r\n")


def decode(packet):
    """
    Decode a HEPv3 packet independently of L{sipdist.sip.hep}: check the
    magic, the total length and each chunk's vendor and length.

    @return: C{{chunk type: value bytes}}.
    """
    if packet[:4] != b"HEP3":
        raise ValueError(f"bad magic {packet[:4]!r}")
    (total,) = struct.unpack("!H", packet[4:6])
    if total != len(packet):
        raise ValueError(f"total length {total} != {len(packet)}")
    chunks = {}
    offset = 6
    while offset < total:
        vendor, kind, length = struct.unpack("!HHH", packet[offset:offset + 6])
        if vendor != 0 or length < 6 or offset + length > total:
            raise ValueError(f"bad chunk at {offset}")
        if kind in chunks:
            raise ValueError(f"chunk {kind} twice")
        chunks[kind] = packet[offset + 6:offset + length]
        offset += length
    return chunks


def u8(value):
    return struct.unpack("!B", value)[0]


def u16(value):
    return struct.unpack("!H", value)[0]


def u32(value):
    return struct.unpack("!I", value)[0]


class Captured:
    """
    A decoded HEP packet, with the fields the tests look at.
    """

    def __init__(self, packet):
        c = self.chunks = decode(packet)
        self.family = u8(c[1])
        self.protocol = u8(c[2])
        if self.family == 2:
            self.source = (str(ipaddress.IPv4Address(c[3])), u16(c[7]))
            self.destination = (str(ipaddress.IPv4Address(c[4])), u16(c[8]))
        else:
            self.source = (str(ipaddress.IPv6Address(c[5])), u16(c[7]))
            self.destination = (str(ipaddress.IPv6Address(c[6])), u16(c[8]))
        self.time = u32(c[9]) + u32(c[10]) / 1e6
        self.captureId = u32(c[12])
        self.payload = c[15]
        self.correlation = c.get(17)
        self.firstLine = self.payload.split(b"\r\n", 1)[0].decode()

    def header(self, name):
        for line in self.payload.split(b"\r\n\r\n", 1)[0].split(b"\r\n")[1:]:
            key, _, value = line.partition(b":")
            if key.strip().lower() == name.lower().encode():
                return value.strip()
        return None


class EncoderTests(SynchronousTestCase):
    """
    L{hep.encode}, field by field.
    """

    def test_ipv4UDP(self):
        """
        A message over UDP/IPv4: family 2, protocol 17, the IPv4 addresses
        and ports, the time split into seconds and microseconds, SIP (1),
        the capture id, the correlation id and the payload as given; no
        authentication key without a password.
        """
        packet = hep.encode(REGISTER, "UDP", ("192.0.2.7", 5070),
                            ("198.51.100.1", 5060), 1700000000.25, 2001,
                            correlation=b"capture-1@192.0.2.7")
        c = decode(packet)
        self.assertEqual(u8(c[1]), 2)
        self.assertEqual(u8(c[2]), 17)
        self.assertEqual(c[3], bytes([192, 0, 2, 7]))
        self.assertEqual(c[4], bytes([198, 51, 100, 1]))
        self.assertEqual((u16(c[7]), u16(c[8])), (5070, 5060))
        self.assertEqual((u32(c[9]), u32(c[10])), (1700000000, 250000))
        self.assertEqual(u8(c[11]), 1)
        self.assertEqual(u32(c[12]), 2001)
        self.assertEqual(c[15], REGISTER)
        self.assertEqual(c[17], b"capture-1@192.0.2.7")
        self.assertNotIn(14, c)
        self.assertNotIn(5, c)
        self.assertEqual(sorted(c), [1, 2, 3, 4, 7, 8, 9, 10, 11, 12, 15, 17])

    def test_ipv6TCP(self):
        """
        A message over TCP/IPv6: family 10, protocol 6, the IPv6 addresses
        in chunks 5 and 6; a password goes in chunk 14.
        """
        packet = hep.encode(REGISTER, "TCP", ("2001:db8::7", 40123),
                            ("::1", 5061), 1700000001.000001, 7,
                            password="s3cret")
        c = decode(packet)
        self.assertEqual(u8(c[1]), 10)
        self.assertEqual(u8(c[2]), 6)
        self.assertEqual(c[5], ipaddress.IPv6Address("2001:db8::7").packed)
        self.assertEqual(c[6], ipaddress.IPv6Address("::1").packed)
        self.assertNotIn(3, c)
        self.assertEqual((u16(c[7]), u16(c[8])), (40123, 5061))
        self.assertEqual((u32(c[9]), u32(c[10])), (1700000001, 1))
        self.assertEqual(u32(c[12]), 7)
        self.assertEqual(c[14], b"s3cret")
        self.assertNotIn(17, c)

    def test_tlsIsTCP(self):
        """
        TLS is captured decrypted, as IP protocol 6 (TCP).
        """
        c = decode(hep.encode(REGISTER, "TLS", ("127.0.0.1", 1),
                              ("127.0.0.1", 2), 0.0, 1))
        self.assertEqual(u8(c[2]), 6)

    def test_mixedFamilies(self):
        """
        An IPv4 end with an IPv6 one (a port bound to every interface)
        is written as an IPv4-mapped IPv6 address.
        """
        c = decode(hep.encode(REGISTER, "UDP", ("127.0.0.1", 1),
                              ("::1", 2), 0.0, 1))
        self.assertEqual(u8(c[1]), 10)
        self.assertEqual(c[5],
                         ipaddress.IPv6Address("::ffff:127.0.0.1").packed)

    def test_notAnAddress(self):
        """
        A host that is not an IP address cannot be encoded.
        """
        self.assertRaises(ValueError, hep.encode, REGISTER, "UDP",
                          ("example.com", 1), ("127.0.0.1", 2), 0.0, 1)

    def test_tooLarge(self):
        """
        A message whose packet would exceed what one UDP datagram holds is
        refused rather than truncated.
        """
        body = b"x" * 65500
        self.assertRaises(hep.PacketTooLarge, hep.encode, body, "UDP",
                          ("127.0.0.1", 1), ("127.0.0.1", 2), 0.0, 1)
        packet = hep.encode(b"x" * 65000, "UDP", ("127.0.0.1", 1),
                            ("127.0.0.1", 2), 0.0, 1)
        self.assertEqual(decode(packet)[15], b"x" * 65000)


class CallIdTests(SynchronousTestCase):
    """
    L{hep.callId} reads the Call-ID from raw bytes.
    """

    def test_longForm(self):
        self.assertEqual(hep.callId(REGISTER), b"capture-1@192.0.2.7")

    def test_compactForm(self):
        """
        The compact form C{i:} is found too, whatever its case and spacing.
        """
        data = b"SIP/2.0 200 OK\r\nI :  abc \r\nCSeq: 1 X\r\n\r\n"
        self.assertEqual(hep.callId(data), b"abc")

    def test_notInBody(self):
        """
        A Call-ID line in the body is not the message's.
        """
        data = b"MESSAGE sip:a SIP/2.0\r\nCSeq: 1 X\r\n\r\nCall-ID: body\r\n"
        self.assertIsNone(hep.callId(data))

    def test_garbage(self):
        self.assertIsNone(hep.callId(b"\x00\xff garbage"))


class DestinationTests(SynchronousTestCase):
    """
    L{hep.parseDestination}: C{--hep} resolved once, or one line saying
    what is wrong.
    """

    def test_ipv4(self):
        self.assertEqual(hep.parseDestination("udp:127.0.0.1:9060"),
                         (socket.AF_INET, ("127.0.0.1", 9060)))

    def test_ipv6(self):
        self.assertEqual(hep.parseDestination("udp:[::1]:9060"),
                         (socket.AF_INET6, ("::1", 9060)))

    def test_nameResolvedOnce(self):
        """
        A host name is resolved by the resolver given, once.
        """
        calls = []

        def getaddrinfo(host, port, family, kind):
            calls.append(host)
            return [(socket.AF_INET, kind, 17, "", ("192.0.2.9", port))]

        self.assertEqual(
            hep.parseDestination("udp:homer.example:9060", getaddrinfo),
            (socket.AF_INET, ("192.0.2.9", 9060)))
        self.assertEqual(calls, ["homer.example"])

    def test_errors(self):
        """
        A wrong scheme, a missing or bad port, an unclosed bracket or a
        name that does not resolve is a L{ConfigurationError} naming the
        value.
        """
        def fails(host, port, family, kind):
            raise socket.gaierror(-2, "Name or service not known")

        for text in ("tcp:127.0.0.1:9060", "udp:127.0.0.1", "udp:host:0",
                     "udp:host:70000", "udp:[::1:9060", "9060", "udp::9060"):
            e = self.assertRaises(ConfigurationError, hep.parseDestination,
                                  text, fails)
            self.assertIn(text, str(e))
            self.assertNotIn("\n", str(e))
        e = self.assertRaises(ConfigurationError, hep.parseDestination,
                              "udp:nowhere.invalid:9060", fails)
        self.assertIn("cannot resolve nowhere.invalid", str(e))


class _Port:
    """
    A UDP port recording what is written, or raising C{error}.
    """

    def __init__(self, error=None):
        self.written = []
        self.error = error

    def write(self, data, addr):
        if self.error is not None:
            raise self.error
        self.written.append((data, addr))


class SenderTests(SynchronousTestCase):
    """
    L{hep.HEPSender}: one packet per message, never an exception.
    """

    def sender(self, error=None):
        clock = Clock()
        clock.advance(1700000000.5)
        sender = hep.HEPSender(clock, (socket.AF_INET, ("127.0.0.1", 9060)),
                               captureId=42, password="pw")
        sender.transport = _Port(error)
        return sender

    def test_sends(self):
        """
        A message goes to the destination as one packet with the
        sender's capture id, password, the clock's time and the Call-ID.
        """
        sender = self.sender()
        sender.capture(REGISTER, "UDP", ("192.0.2.7", 5070),
                       ("127.0.0.1", 5060))
        [(packet, addr)] = sender.transport.written
        self.assertEqual(addr, ("127.0.0.1", 9060))
        c = Captured(packet)
        self.assertEqual(c.captureId, 42)
        self.assertEqual(c.chunks[14], b"pw")
        self.assertEqual(c.time, 1700000000.5)
        self.assertEqual(c.correlation, b"capture-1@192.0.2.7")
        self.assertEqual(sender.stats(), {"sent": 1, "send_errors": 0,
                                          "too_large": 0, "unencodable": 0})

    def test_sendErrorCountedAndLimited(self):
        """
        A send the kernel refuses (full buffer) is dropped and counted, and
        logged at a bounded rate.
        """
        sender = self.sender(OSError(11, "Resource temporarily unavailable"))
        for _ in range(50):
            sender.capture(REGISTER, "UDP", ("192.0.2.7", 5070),
                           ("127.0.0.1", 5060))
        self.assertEqual(sender.sendErrors, 50)
        self.assertEqual(sender.sent, 0)
        logged = self.flushLoggedErrors()
        self.assertEqual(logged, [])
        self.assertEqual(sender._errorLog.total, 45)

    def test_skipped(self):
        """
        A message too large for one packet, or with an end that is not an
        IP address, is skipped and counted.
        """
        sender = self.sender()
        sender.capture(b"x" * 65500, "UDP", ("127.0.0.1", 1),
                       ("127.0.0.1", 2))
        sender.capture(REGISTER, "UDP", ("localhost", 1), ("127.0.0.1", 2))
        self.assertEqual(sender.transport.written, [])
        self.assertEqual((sender.tooLarge, sender.unencodable), (1, 1))

    def test_notStarted(self):
        """
        Before its port is open nothing is sent, and nothing fails.
        """
        sender = self.sender()
        sender.transport = None
        sender.capture(REGISTER, "UDP", ("127.0.0.1", 1), ("127.0.0.1", 2))
        self.assertEqual(sender.sent, 0)


class _UDPTransport:
    def __init__(self):
        self.written = []

    def write(self, data, addr):
        self.written.append((data, addr))


class _Handler:
    def __init__(self):
        self.messages = []

    def messageReceived(self, message, flow):
        self.messages.append((message, flow))


class TransportCaptureTests(SynchronousTestCase):
    """
    The transport layer gives its capture every SIP message as received
    and as sent, with both ends.
    """

    def setUp(self):
        self.clock = Clock()
        self.handler = _Handler()
        self.layer = TransportLayer(self.clock, self.handler)
        self.captured = []
        self.layer.capture = lambda *a: self.captured.append(a)
        self.protocol = SIPDatagramProtocol(self.layer, 0)
        self.protocol.transport = _UDPTransport()
        self.protocol.local = ("0.0.0.0", 5060)

    def test_datagramInAndOut(self):
        """
        A datagram is captured as received; the response sent to it is
        captured as sent; our end of a port bound to every interface is
        captured as the address we advertise (127.0.0.1 by default).
        """
        self.layer.datagramReceived(self.protocol, REGISTER,
                                    ("192.0.2.7", 5070))
        [(message, flow)] = self.handler.messages
        from sipdist.sip.message import responseTo
        flow.send(responseTo(message, 200))
        [received, sent] = self.captured
        self.assertEqual(received, (REGISTER, "UDP", ("192.0.2.7", 5070),
                                    ("127.0.0.1", 5060)))
        self.assertEqual(sent[1:], ("UDP", ("127.0.0.1", 5060),
                                    ("192.0.2.7", 5070)))
        self.assertTrue(sent[0].startswith(b"SIP/2.0 200 "))

    def test_rejectedCaptured(self):
        """
        A malformed datagram is captured as it arrived, and its 400 too.
        """
        bad = REGISTER.replace(b"CSeq: 1 REGISTER", b"CSeq: x REGISTER")
        self.layer.datagramReceived(self.protocol, bad, ("192.0.2.7", 5070))
        self.assertEqual(self.handler.messages, [])
        [received, sent] = self.captured
        self.assertEqual(received[0], bad)
        self.assertTrue(sent[0].startswith(b"SIP/2.0 400 "), sent[0])

    def test_filteredCaptured(self):
        """
        A datagram the overload control answers itself (the datagram
        filter) is captured before it is shed.
        """
        self.layer.datagramFilter = lambda protocol, data, addr: True
        self.layer.datagramReceived(self.protocol, REGISTER,
                                    ("192.0.2.7", 5070))
        self.assertEqual([c[0] for c in self.captured], [REGISTER])

    def test_keepAlivesNotCaptured(self):
        """
        CRLF keep-alives and STUN are not SIP messages: not captured.
        """
        from sipdist.sip import stun
        self.layer.datagramReceived(self.protocol, b"\r\n\r\n",
                                    ("192.0.2.7", 5070))
        self.layer.datagramReceived(self.protocol,
                                    stun.bindingRequest(b"0" * 12),
                                    ("192.0.2.7", 5070))
        self.assertEqual(len(self.protocol.transport.written), 1)
        self.assertEqual(self.captured, [])

    def test_captureFailureIgnored(self):
        """
        A capture that raises does not stop the message.
        """
        def broken(*a):
            raise RuntimeError("boom")

        self.layer.capture = broken
        self.layer.datagramReceived(self.protocol, REGISTER,
                                    ("192.0.2.7", 5070))
        self.assertEqual(len(self.handler.messages), 1)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_stream(self):
        """
        Over TCP each framed message is captured with the connection's
        ends, and so is what is sent on the connection.
        """
        factory = _StreamFactory(self.layer, "TCP")
        protocol = factory.buildProtocol(IPv4Address("TCP", "192.0.2.7",
                                                     40000))
        transport = StringTransport(
            hostAddress=IPv4Address("TCP", "127.0.0.1", 5060),
            peerAddress=IPv4Address("TCP", "192.0.2.7", 40000))
        protocol.makeConnection(transport)
        message = REGISTER.replace(b"UDP", b"TCP")
        protocol.dataReceived(message[:50])
        protocol.dataReceived(message[50:])
        [(request, flow)] = self.handler.messages
        from sipdist.sip.message import responseTo
        flow.send(responseTo(request, 200))
        [received, sent] = self.captured
        self.assertEqual(received, (message, "TCP", ("192.0.2.7", 40000),
                                    ("127.0.0.1", 5060)))
        self.assertEqual(sent[1:], ("TCP", ("127.0.0.1", 5060),
                                    ("192.0.2.7", 40000)))
        self.assertEqual(sent[0], transport.value())


class OptionsTests(SynchronousTestCase):
    """
    The C{--hep} options of every role.
    """

    def test_defaults(self):
        options = Options()
        options.parseOptions(["--name", "home1"])
        self.assertIsNone(options["hep"])
        self.assertEqual(options["hep-id"], hep.DEFAULT_CAPTURE_ID)
        self.assertIsNone(options["hep-password"])

    def test_badId(self):
        from twisted.python.usage import UsageError
        for value in ("-1", "4294967296", "x"):
            self.assertRaises(UsageError, Options().parseOptions,
                              [f"--hep-id={value}"])

    def test_badDestination(self):
        """
        A bad C{--hep} is a one-line L{ConfigurationError} from
        L{buildServer}.
        """
        for role in ("home", "distributor", "edge", "internal-edge"):
            options = Options()
            args = ["--role", role, "--name", "s1", "--hep", "udp:127.0.0.1"]
            if role == "edge":
                args += ["--next-hop", "sip:127.0.0.1:1"]
            options.parseOptions(args)
            e = self.assertRaises(ConfigurationError, buildServer, options,
                                  Clock())
            self.assertIn("--hep=udp:127.0.0.1", str(e))


    def test_everyRole(self):
        """
        Every role captures: its service has a sender with the options'
        destination, capture id and password.
        """
        for role in ("home", "distributor", "edge", "internal-edge"):
            options = Options()
            args = ["--role", role, "--name", "s1",
                    "--hep", "udp:127.0.0.1:9060", "--hep-id", "77",
                    "--hep-password", "pw"]
            if role == "edge":
                args += ["--next-hop", "sip:127.0.0.1:1"]
            options.parseOptions(args)
            service = buildServer(options, Clock())
            sender = service.hep
            self.assertEqual((sender.destination, sender.captureId,
                              sender.password),
                             (("127.0.0.1", 9060), 77, "pw"), role)


class Collector(DatagramProtocol):
    """
    A HEP collector on loopback: keeps every packet (at most 1000).
    """

    def __init__(self):
        self.packets = []

    def datagramReceived(self, data, addr):
        if len(self.packets) < 1000:
            self.packets.append(data)


SECRET = "pool-nonce-secret-0123456789abcdef"


@defer.inlineCallbacks
def until(predicate, timeout=10.0, step=0.02):
    """
    Wait until C{predicate()} holds, at most C{timeout} seconds.
    """
    for _ in range(int(timeout / step)):
        if predicate():
            return
        yield task.deferLater(reactor, step, lambda: None)


class PoolMixin:
    """
    A distributor and a home on loopback capturing to a collector, and a
    login through them.
    """

    timeout = 30

    @defer.inlineCallbacks
    def startPool(self):
        collector = Collector()
        port = reactor.listenUDP(0, collector, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        destination = f"udp:127.0.0.1:{port.getHost().port}"
        store = MemoryAssignmentStore()
        servers = {}
        # Each server has its own nonce secret: the home challenges the
        # credentials the client answered the distributor's challenge with.
        for name, role, captureId in (("distributor", "distributor", 11),
                                      ("home1", "home", 12)):
            config = {"role": role, "name": name, "domain": "example.com",
                      "listen": ["udp:0:interface=127.0.0.1"],
                      "credentials": "memory:alice:wonderland",
                      "secret": f"{SECRET}-{name}",
                      "redirect-policy": "auto", "t1": 0.05,
                      "hep": destination, "hep-id": captureId,
                      "hep-password": "homer"}
            service = buildServer(config, reactor, store=store)
            service.startService()
            self.addCleanup(service.stopService)
            yield service.transportService.ready
            servers[name] = service
        home = servers["home1"].transportService.ports[0].getHost().port
        yield store.addServer(ServerRecord("home1", f"sip:127.0.0.1:{home}"))
        yield store.assignUser("alice@example.com", "home1")
        return collector, servers

    @staticmethod
    def portOf(service):
        return service.transportService.ports[0].getHost().port

    @defer.inlineCallbacks
    def login(self):
        collector, servers = yield self.startPool()
        # T1 of 0.5 s: fewer retransmissions on a loaded machine (those
        # that happen are captured too, and compared once below).
        ua = yield startAgent(self, reactor, T1=0.5)
        distributor = self.portOf(servers["distributor"])
        registration = Registration(
            ua, ua.locator, server=f"sip:127.0.0.1:{distributor}")
        yield registration.start()
        self.addCleanup(registration.stop)
        client = ua.port.getHost().port
        # The exchanges below: 2 at the distributor, 2 at the home, each a
        # request in and a response out.
        yield until(lambda: len(collector.packets) >= 8)
        return collector, servers, client


class LoginCaptureTests(PoolMixin, TestCase):
    """
    A whole login captured by a distributor and a home.
    """

    @defer.inlineCallbacks
    def test_login(self):
        """
        The distributor captures REGISTER in, 401 out, REGISTER in, 301
        out; the home REGISTER in, 401 out, REGISTER in, 200 out; each
        with the client's and the server's address and port in the right
        direction, the server's capture id, the password, and the Call-ID
        as correlation id: one for the whole login, at both servers, so
        Homer shows it as one flow.
        """
        collector, servers, client = yield self.login()
        captured = [Captured(p) for p in collector.packets]
        # A retransmission (a request or a response sent again, the same
        # bytes between the same ends) counts once.
        unique = {}
        for c in captured:
            unique.setdefault((c.captureId, c.source, c.destination,
                               c.payload), c)
        for server, captureId, expected in (
                ("distributor", 11, ["REGISTER", 401, "REGISTER", 301]),
                ("home1", 12, ["REGISTER", 401, "REGISTER", 200])):
            port = self.portOf(servers[server])
            mine = [c for c in unique.values() if c.captureId == captureId]
            seen = []
            for c in mine:
                self.assertEqual((c.family, c.protocol), (2, 17))
                self.assertEqual(c.chunks[14], b"homer")
                self.assertEqual(c.correlation, c.header("call-id"))
                if c.firstLine.startswith("SIP/2.0 "):
                    seen.append(int(c.firstLine.split()[1]))
                    self.assertEqual(c.source, ("127.0.0.1", port))
                    self.assertEqual(c.destination, ("127.0.0.1", client))
                else:
                    seen.append(c.firstLine.split()[0])
                    self.assertEqual(c.source, ("127.0.0.1", client))
                    self.assertEqual(c.destination, ("127.0.0.1", port))
            self.assertEqual(seen, expected, server)
            # A response is correlated with its request.
            self.assertEqual({c.correlation for c in mine[:2]},
                             {mine[0].correlation})
            self.assertEqual({c.correlation for c in mine[2:4]},
                             {mine[2].correlation})
            # The counters, in the status document and /metrics.
            status = statusOf(servers[server], {"name": server})
            sent = len([c for c in captured if c.captureId == captureId])
            self.assertEqual(status["hep"]["sent"], sent)
            self.assertEqual(status["hep"]["send_errors"], 0)
            families = {f.name: f for f in
                        ServerCollector(servers[server], {}).collect()}
            samples = {s.labels["outcome"]: s.value
                       for s in families["sipdist_hep_packets"].samples
                       if s.name.endswith("_total")}
            self.assertEqual(samples, {"sent": sent, "send_errors": 0,
                                       "too_large": 0, "unencodable": 0})
        self.assertEqual(len({c.correlation for c in unique.values()}), 1)


def writePcap(path, packets, source, destination):
    """
    Write HEP packets into a pcap file as Ethernet/IPv4/UDP frames from
    C{source} to C{destination} (C{(IPv4 text, port)}), one a second.
    """
    def checksum(header):
        total = sum(struct.unpack(f"!{len(header) // 2}H", header))
        while total >> 16:
            total = (total & 0xFFFF) + (total >> 16)
        return ~total & 0xFFFF

    with open(path, "wb") as f:
        # Magic, version 2.4, no zone, no accuracy, snap length, Ethernet.
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, 1))
        for i, packet in enumerate(packets):
            udp = struct.pack("!HHHH", source[1], destination[1],
                              8 + len(packet), 0) + packet
            ip = struct.pack(
                "!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), i, 0, 64, 17, 0,
                ipaddress.IPv4Address(source[0]).packed,
                ipaddress.IPv4Address(destination[0]).packed)
            ip = ip[:10] + struct.pack("!H", checksum(ip)) + ip[12:]
            frame = b"\x02" * 6 + b"\x04" * 6 + b"\x08\x00" + ip + udp
            f.write(struct.pack("<IIII", 1700000000 + i, 0, len(frame),
                                len(frame)) + frame)


class DissectorTests(PoolMixin, TestCase):
    """
    The captured packets read back by real tools: sngrep decodes HEPv3
    (its EEP parser) into a pcap of the SIP messages, which tshark
    dissects as SIP.  (tshark itself has no HEP dissector: Wireshark
    decodes HEP only with a Lua plugin that Debian does not ship.)
    """

    @defer.inlineCallbacks
    def test_sngrepAndTshark(self):
        """
        Every request and response of the login comes out of sngrep's HEP
        decoder with the addresses, ports and time of its HEP chunks, and
        tshark finds the SIP method or status and the Call-ID in each.
        """
        sngrep = requireTool("sngrep")
        tshark = requireTool("tshark")
        collector, servers, client = yield self.login()
        captured = [Captured(p) for p in collector.packets]
        workdir = tempfile.mkdtemp(prefix="sipdist-hep-")
        self.addCleanup(lambda: [os.remove(os.path.join(workdir, n))
                                 for n in os.listdir(workdir)]
                        and os.rmdir(workdir))
        source = os.path.join(workdir, "hep.pcap")
        decoded = os.path.join(workdir, "sip.pcap")
        writePcap(source, collector.packets, ("127.0.0.1", 40000),
                  ("127.0.0.1", 9060))
        code, out, err = yield runProcess(
            reactor, [sngrep, "-F", "-N", "-q", "-E", "-I", source,
                      "-O", decoded], timeout=30)
        self.assertEqual(code, 0, err)
        # The servers' ports are the system's ephemeral ones: one may be a
        # port tshark gives another protocol (37008 is TZSP's), so each is
        # decoded as SIP.
        ports = sorted({port for c in captured
                        for port in (c.source[1], c.destination[1])})
        decodeAs = [a for port in ports
                    for a in ("-d", f"udp.port=={port},sip")]
        code, out, err = yield runProcess(
            reactor, [tshark, "-r", decoded] + decodeAs + [
                      "-T", "fields", "-E",
                      "separator=|", "-e", "frame.time_epoch", "-e", "ip.src",
                      "-e", "udp.srcport", "-e", "ip.dst", "-e", "udp.dstport",
                      "-e", "sip.Method", "-e", "sip.Status-Code",
                      "-e", "sip.Call-ID", "-e", "sip.CSeq.seq",
                      "-e", "sip.CSeq.method"],
            timeout=60)
        self.assertEqual(code, 0, err)
        # sngrep may write a message more than once: compare the sets.
        rows = {tuple(line.split("|")) for line in out.splitlines() if line}
        expected = set()
        for c in captured:
            method = status = ""
            if c.firstLine.startswith("SIP/2.0 "):
                status = c.firstLine.split()[1]
            else:
                method = c.firstLine.split()[0]
            expected.add((f"{c.time:.6f}", c.source[0], str(c.source[1]),
                          c.destination[0], str(c.destination[1]), method,
                          status, c.correlation.decode(),
                          c.header("cseq").split()[0].decode(), "REGISTER"))
        rows = {(f"{float(r[0]):.6f}",) + r[1:] for r in rows}
        self.assertEqual(rows, expected)
        # Without the time, retransmissions are one row.
        messages = {r[1:] for r in rows}
        self.assertEqual(
            sorted(r[4] or r[5] for r in messages),
            sorted(["REGISTER"] * 4 + ["401", "401", "301", "200"]))


class _OneResponse(Protocol):
    """
    Sends a request on connecting and fires C{done} with what comes back
    once a whole response has arrived.
    """

    def __init__(self, request):
        self.request = request
        self.received = b""
        self.done = defer.Deferred()

    def connectionMade(self):
        self.transport.write(self.request)

    def dataReceived(self, data):
        self.received += data
        if b"\r\n\r\n" in self.received and not self.done.called:
            self.done.callback(self.received)


class StreamCaptureTests(TestCase):
    """
    Capture over TCP on IPv6 loopback, with real sockets.
    """

    timeout = 20

    @defer.inlineCallbacks
    def test_tcpIPv6(self):
        """
        An OPTIONS over TCP to a home on ::1 and its 200 are captured as
        IPv6 (family 10) TCP (6) packets with the connection's two ends.
        """
        collector = Collector()
        port = reactor.listenUDP(0, collector, interface="::1")
        self.addCleanup(port.stopListening)
        config = {"role": "home", "name": "home1", "domain": "example.com",
                  "listen": ["tcp:0:interface=\\:\\:1"],
                  "credentials": "memory:alice:wonderland", "t1": 0.05,
                  "hep": f"udp:[::1]:{port.getHost().port}", "hep-id": 6}
        service = buildServer(config, reactor,
                              store=MemoryAssignmentStore())
        service.startService()
        self.addCleanup(service.stopService)
        yield service.transportService.ready
        server = service.transportService.ports[0].getHost().port
        request = (
            f"OPTIONS sip:[::1]:{server};transport=tcp SIP/2.0\r\n"
            f"Via: SIP/2.0/TCP [::1]:5999;branch=z9hG4bK-hep6\r\n"
            f"Max-Forwards: 70\r\n"
            f"From: <sip:alice@example.com>;tag=o6\r\n"
            f"To: <sip:[::1]:{server}>\r\n"
            f"Call-ID: hep-tcp-6@example.com\r\n"
            f"CSeq: 1 OPTIONS\r\n"
            f"Content-Length: 0\r\n\r\n").encode()
        client = _OneResponse(request)
        connected = yield endpoints.connectProtocol(
            endpoints.TCP6ClientEndpoint(reactor, "::1", server), client)
        self.addCleanup(connected.transport.loseConnection)
        response = yield client.done
        self.assertTrue(response.startswith(b"SIP/2.0 200 "), response)
        yield until(lambda: len(collector.packets) >= 2)
        clientPort = connected.transport.getHost().port
        [inbound, outbound] = [Captured(p) for p in collector.packets]
        for c in (inbound, outbound):
            self.assertEqual((c.family, c.protocol, c.captureId), (10, 6, 6))
            self.assertEqual(c.correlation, b"hep-tcp-6@example.com")
        self.assertEqual(inbound.payload, request)
        self.assertEqual(inbound.source, ("::1", clientPort))
        self.assertEqual(inbound.destination, ("::1", server))
        self.assertEqual(outbound.payload, response)
        self.assertEqual(outbound.source, ("::1", server))
        self.assertEqual(outbound.destination, ("::1", clientPort))
