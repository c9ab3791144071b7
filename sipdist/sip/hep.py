# -*- test-case-name: tests.test_hep -*-
"""
SIP capture to Homer over HEPv3 (the Homer Encapsulation Protocol, version
3, as Homer's heplify-server and captagent speak it).

A HEPv3 packet is the magic C{b"HEP3"}, its total length (2 bytes, header
included), then chunks: vendor id (2 bytes, 0 for the generic chunks used
here), chunk type (2 bytes), chunk length (2 bytes, its 6-byte header
included) and the value.  Every number is in network byte order.  The
chunks written by L{encode}, in this order:

  ====  ======================================================
  type  value
  ====  ======================================================
   1    IP family (1 byte: 2 IPv4, 10 IPv6)
   2    IP protocol (1 byte: 17 UDP, 6 TCP; TLS is TCP)
   3/4  IPv4 source / destination (4 bytes each)
   5/6  IPv6 source / destination (16 bytes each)
   7/8  source / destination port (2 bytes each)
   9    timestamp, seconds (4 bytes)
   10   timestamp, microseconds (4 bytes)
   11   protocol type (1 byte: 1 SIP)
   12   capture agent id (4 bytes)
   14   authentication key (text, only with a password)
   17   correlation id (the message's Call-ID, when it has one)
   15   payload (the SIP message as it was on the wire)
  ====  ======================================================

L{HEPSender} sends one such packet per SIP message from a UDP port of its
own to the collector: a send the kernel cannot take at once (buffer full,
no route) is dropped, counted and logged at a bounded rate, never waited
for, so capture never slows or breaks the SIP path.
"""

import re
import socket
import struct

from twisted.application.service import Service
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger

from sipdist.config import ConfigurationError
from sipdist.logs import LogLimiter

MAGIC = b"HEP3"
VENDOR_GENERIC = 0

FAMILY = 1
PROTOCOL = 2
IPV4_SOURCE = 3
IPV4_DESTINATION = 4
IPV6_SOURCE = 5
IPV6_DESTINATION = 6
SOURCE_PORT = 7
DESTINATION_PORT = 8
SECONDS = 9
MICROSECONDS = 10
PROTOCOL_TYPE = 11
CAPTURE_ID = 12
AUTH_KEY = 14
PAYLOAD = 15
CORRELATION_ID = 17

# Values of the chunks above.
AF_INET = 2
AF_INET6 = 10
IPPROTO = {"UDP": 17, "TCP": 6, "TLS": 6}
PROTOCOL_SIP = 1

DEFAULT_CAPTURE_ID = 2001

# The largest HEP packet sent: the total length field has 16 bits, and a
# UDP datagram over IPv4 carries at most 65507 bytes.  A message whose
# packet would be larger is not captured (counted in HEPSender.tooLarge).
MAX_PACKET = 65507

# Where the Call-ID is looked for: the header section of the first bytes.
_CALL_ID_SCAN = 8192
# (Letter classes rather than re.IGNORECASE: several times faster.)
_CALL_ID = re.compile(
    rb"\n(?:[Cc][Aa][Ll][Ll]-[Ii][Dd]|[Ii])[ \t]*:[ \t]*([^\r\n]{1,255})")


class PacketTooLarge(ValueError):
    """
    The packet would exceed what the 16-bit length (or a UDP datagram)
    holds.
    """


# The chunks every packet has, in one struct (vendor, type, length, value
# each): IPv4 and IPv6.
_FIXED = "HHHB HHHB HHH{n}s HHH{n}s HHHH HHHH HHHI HHHI HHHB HHHI"
_FIXED4 = struct.Struct("!" + _FIXED.format(n=4).replace(" ", ""))
_FIXED6 = struct.Struct("!" + _FIXED.format(n=16).replace(" ", ""))


def _chunk(kind, value):
    return struct.pack("!HHH", VENDOR_GENERIC, kind, 6 + len(value)) + value


def _pack(host):
    """
    C{(True, 4 bytes)} for an IPv4 address, C{(False, 16 bytes)} for an
    IPv6 one (its zone, C{%eth0}, left out).

    @raise ValueError: C{host} is not an IP address.
    """
    try:
        return True, socket.inet_pton(socket.AF_INET, host)
    except (OSError, TypeError):
        pass
    try:
        return False, socket.inet_pton(socket.AF_INET6, host.split("%", 1)[0])
    except (OSError, TypeError, AttributeError):
        raise ValueError(f"{host!r} is not an IP address")


_MAPPED = b"\x00" * 10 + b"\xff\xff"


def _addresses(source, destination):
    """
    The family and packed addresses of two hosts; when one is IPv4 and the
    other IPv6, the IPv4 one is written as an IPv4-mapped IPv6 address.
    """
    v4, a = _pack(source)
    w4, b = _pack(destination)
    if v4 and w4:
        return AF_INET, a, b
    if v4:
        a = _MAPPED + a
    if w4:
        b = _MAPPED + b
    return AF_INET6, a, b


def callId(data):
    """
    The Call-ID of a raw SIP message (long or compact form), as bytes, or
    C{None}: read from the first bytes of its header section without
    parsing it, so that malformed messages are correlated too.
    """
    head = data[:_CALL_ID_SCAN]
    end = head.find(b"\r\n\r\n")
    if end != -1:
        head = head[:end + 2]
    match = _CALL_ID.search(head)
    if match is None:
        return None
    return match.group(1).strip() or None


def encode(payload, transport, source, destination, seconds, captureId,
           password=None, correlation=None):
    """
    One HEPv3 packet carrying a SIP message.

    @param payload: the message's bytes.
    @param transport: C{"UDP"}, C{"TCP"} or C{"TLS"} (sent as TCP).
    @param source: C{(host, port)} the message came from, C{host} an IP
        address (text).
    @param destination: C{(host, port)} it went to.
    @param seconds: when (POSIX time, a float).
    @param captureId: the capture agent id (32-bit unsigned).
    @param password: text sent as the authentication key, or C{None}.
    @param correlation: the correlation id (bytes: the Call-ID), or
        C{None} for none.
    @raise PacketTooLarge: the packet would exceed L{MAX_PACKET} bytes.
    @raise ValueError: a host is not an IP address, or a port does not
        fit its chunk.
    """
    family, src, dst = _addresses(source[0], destination[0])
    whole = int(seconds)
    micro = min(999999, int(round((seconds - whole) * 1e6)))
    if family == AF_INET:
        fixed, sourceType, destinationType = _FIXED4, IPV4_SOURCE, \
            IPV4_DESTINATION
    else:
        fixed, sourceType, destinationType = _FIXED6, IPV6_SOURCE, \
            IPV6_DESTINATION
    size = 6 + len(src)
    head = fixed.pack(
        0, FAMILY, 7, family,
        0, PROTOCOL, 7, IPPROTO[transport.upper()],
        0, sourceType, size, src,
        0, destinationType, size, dst,
        0, SOURCE_PORT, 8, source[1],
        0, DESTINATION_PORT, 8, destination[1],
        0, SECONDS, 10, whole,
        0, MICROSECONDS, 10, micro,
        0, PROTOCOL_TYPE, 7, PROTOCOL_SIP,
        0, CAPTURE_ID, 10, captureId)
    chunks = [head]
    if password:
        chunks.append(_chunk(AUTH_KEY, password.encode("utf-8")))
    if correlation:
        chunks.append(_chunk(CORRELATION_ID, correlation))
    chunks.append(_chunk(PAYLOAD, payload))
    total = 6 + sum(map(len, chunks))
    if total > MAX_PACKET:
        raise PacketTooLarge(f"HEP packet of {total} bytes is too large")
    chunks.insert(0, MAGIC + struct.pack("!H", total))
    return b"".join(chunks)


def parseDestination(text, getaddrinfo=socket.getaddrinfo):
    """
    Resolve a C{--hep} value, C{udp:HOST:PORT} (an IPv6 address in
    brackets: C{udp:[::1]:9060}), once.

    @return: C{(family, (address, port))}, C{family} a C{socket.AF_*}.
    @raise ConfigurationError: one line saying what is wrong.
    """
    kind, _, rest = text.partition(":")
    if kind.lower() != "udp" or not rest:
        raise ConfigurationError(
            f"--hep={text}: expected udp:HOST:PORT (HEP is sent over UDP)")
    if rest.startswith("["):
        host, bracket, port = rest[1:].partition("]")
        if not bracket or not port.startswith(":"):
            raise ConfigurationError(
                f"--hep={text}: expected udp:[IPV6]:PORT")
        port = port[1:]
    else:
        host, _, port = rest.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigurationError(
            f"--hep={text}: expected udp:HOST:PORT with a port from 1 to "
            f"65535")
    try:
        found = getaddrinfo(host, int(port), 0, socket.SOCK_DGRAM)
    except (OSError, UnicodeError) as e:
        raise ConfigurationError(f"--hep={text}: cannot resolve {host}: {e}")
    for family, _, _, _, address in found:
        if family in (socket.AF_INET, socket.AF_INET6):
            return family, (address[0], address[1])
    raise ConfigurationError(f"--hep={text}: {host} has no IP address")


class HEPSender(DatagramProtocol):
    """
    Sends a HEPv3 packet for each SIP message a L{TransportLayer} receives
    or sends: set it as the layer's C{capture}.

    @ivar sent: packets handed to the kernel.
    @ivar sendErrors: packets the kernel refused (buffer full, no route,
        ...) and were dropped.
    @ivar tooLarge: messages not captured because their packet would exceed
        L{MAX_PACKET} bytes (they are skipped, not truncated).
    @ivar unencodable: messages not captured because an address was not an
        IP address.
    """

    noisy = False
    _log = Logger()

    def __init__(self, reactor, destination, captureId=DEFAULT_CAPTURE_ID,
                 password=None):
        """
        @param destination: C{(family, (address, port))} from
            L{parseDestination}.
        """
        self._reactor = reactor
        self.family, self.destination = destination
        self.captureId = captureId
        self.password = password
        self.sent = 0
        self.sendErrors = 0
        self.tooLarge = 0
        self.unencodable = 0
        self._errorLog = LogLimiter(reactor, burst=5, period=60.0)
        self._port = None

    def start(self):
        """
        Open the sending port (an ephemeral UDP port of the destination's
        family).
        """
        interface = "::" if self.family == socket.AF_INET6 else ""
        self._port = self._reactor.listenUDP(0, self, interface=interface)

    def stop(self):
        port, self._port = self._port, None
        if port is not None:
            return port.stopListening()

    def datagramReceived(self, data, addr):
        # A collector has nothing to say to us.
        pass

    def capture(self, data, transport, source, destination):
        """
        Send one message's packet; never raises, never waits.

        @param data: the message's bytes as they were on the wire.
        @param transport: C{"UDP"}, C{"TCP"} or C{"TLS"}.
        @param source: C{(host, port)} it came from.
        @param destination: C{(host, port)} it went to.
        """
        if self.transport is None:
            return
        try:
            packet = encode(data, transport, source, destination,
                            self._reactor.seconds(), self.captureId,
                            self.password, callId(data))
        except PacketTooLarge:
            self.tooLarge += 1
            return
        except (ValueError, KeyError, TypeError, struct.error):
            self.unencodable += 1
            return
        try:
            self.transport.write(packet, self.destination)
        except Exception as e:
            self.sendErrors += 1
            suppressed = self._errorLog.allow()
            if suppressed is not None:
                self._log.warn(
                    "HEP capture: cannot send to {host}:{port}: {error} "
                    "({suppressed} more not logged)",
                    host=self.destination[0], port=self.destination[1],
                    error=e, suppressed=suppressed)
            return
        self.sent += 1

    def stats(self):
        """
        @return: the counters, as a L{dict} for the status endpoint.
        """
        return {"sent": self.sent, "send_errors": self.sendErrors,
                "too_large": self.tooLarge, "unencodable": self.unencodable}


class HEPService(Service):
    """
    Runs a L{HEPSender} for a transport layer: its port opens with the
    service, and the layer's messages are captured while it runs.
    """

    def __init__(self, sender, layer):
        self.sender = sender
        self.layer = layer

    _log = Logger()

    def startService(self):
        Service.startService(self)
        self.sender.start()
        self.layer.capture = self.sender.capture
        host, port = self.sender.destination
        self._log.info(
            "capturing SIP messages to the HEP collector {host}:{port} "
            "(capture id {captureId})", host=host, port=port,
            captureId=self.sender.captureId)

    def stopService(self):
        Service.stopService(self)
        if self.layer.capture == self.sender.capture:
            self.layer.capture = None
        return self.sender.stop()
