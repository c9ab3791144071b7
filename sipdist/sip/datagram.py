# -*- test-case-name: tests.test_datagram -*-
"""
The UDP port a L{sipdist.sip.transport.TransportLayer} listens with on a
real (posix) reactor: Twisted's L{udp.Port}, with a read and a write that
cost less per datagram, the same datagrams in and out.

  - L{DatagramPort.doRead} reads the datagrams waiting up to
    C{maxThroughput} bytes per wake-up, as Twisted's does (256 KB: a
    flooded port leaves the reactor to the others, and reads enough that
    the receive buffer's backlog, which the overload control watches, is
    what it would be with Twisted's port), in a loop doing less per
    datagram; the read that finds the socket empty ends it.  A read error
    other than I{would block} (an ICMP error reported on the socket, a
    lack of memory) ends that wake-up and is logged (bounded); the port
    stays open and is read again at the next one, where Twisted's raises
    and so closes the port.
  - It reads each datagram into one buffer kept by the port
    (C{recvfrom_into}) and copies out only the bytes read, where
    C{recvfrom} makes a new buffer of C{maxPacketSize} bytes (65,536 for
    sipdist) each time: on PyPy about 5% of what a datagram and its
    answer cost in bench/bench_floor.py's loop (C{--window 16}), on
    CPython no difference (measured at 3fe7759, where the port could read
    either way).
  - L{DatagramPort.write} sends to an address whose host it has already
    checked (an IP address of the port's family, not a host name, which
    the socket would resolve, blocking) without checking it again; what it
    has not seen goes through Twisted's checks.  The hosts remembered are
    bounded (L{DatagramPort.maxCheckedHosts}).
  - L{DatagramPort.writeSoon} sends a datagram written while the port
    hands over the datagrams of a wake-up together with the others
    written then, once those datagrams are handled (or once
    C{maxPending} wait, or when a datagram is written with C{write}:
    datagrams leave in the order they were written).  A datagram wakes
    the process it goes to when that process sleeps, which costs the
    sender far more than the send itself (on loopback, on a virtual
    machine: see bench/bench_wake.py); answers sent one after another
    wake it once.  An answer waits at most the handling of
    C{maxPending} - 1 other datagrams.
"""

import errno
import socket

from twisted.internet import error, udp
from twisted.internet.posixbase import PosixReactorBase
from twisted.logger import Logger
from twisted.python import log as _legacyLog

from sipdist.logs import LogLimiter

_REFUSED = (errno.ECONNREFUSED,)


class DatagramPort(udp.Port):
    """
    A UDP port reading a bounded burst of datagrams per wake-up and
    sending to known hosts without checking them again (see the module).

    @ivar maxThroughput: a wake-up reads no more datagrams once it has
        read this many bytes (L{udp.Port}'s).
    @ivar maxCheckedHosts: hosts remembered as checked; the table is
        emptied when full.
    @ivar readErrors: read errors met (each ends its wake-up).
    """

    _log = Logger()
    maxCheckedHosts = 1024
    maxPending = 32
    # While doRead hands datagrams over: what writeSoon keeps for later,
    # as (datagram, address, failed, context).
    _pending = None
    # The buffer datagrams are read into, made at the first read (and again
    # when maxPacketSize changes).
    _buffer = None

    def __init__(self, port, proto, interface="", maxPacketSize=8192,
                 reactor=None):
        udp.Port.__init__(self, port, proto, interface, maxPacketSize,
                          reactor)
        self._checked = set()
        self.readErrors = 0
        self._errorLog = LogLimiter(self.reactor, burst=5, period=60.0)

    def doRead(self):
        """
        Hand the protocol the datagrams waiting, up to C{maxThroughput}
        bytes.
        """
        receive = self.socket.recvfrom_into
        buffer = self._buffer
        if buffer is None or len(buffer) != self.maxPacketSize:
            buffer = self._buffer = bytearray(self.maxPacketSize)
        view = memoryview(buffer)
        protocol = self.protocol
        received = protocol.datagramReceived
        trim = self.addressFamily == socket.AF_INET6
        read = 0
        limit = self.maxThroughput
        pending = self._pending = []
        most = self.maxPending
        try:
            while read < limit:
                try:
                    count, addr = receive(buffer)
                except (BlockingIOError, InterruptedError):
                    return
                except OSError as e:
                    self._readFailed(e)
                    return
                data = view[:count].tobytes()
                read += count
                if trim:
                    # (host, port) without the flow and scope IDs, as
                    # udp.Port gives it.
                    addr = addr[:2]
                try:
                    received(data, addr)
                except BaseException:
                    _legacyLog.err()
                if len(pending) >= most:
                    self._sendPending(pending)
        finally:
            self._pending = None
            if pending:
                self._sendPending(pending)

    def writeSoon(self, datagram, addr, failed, context):
        """
        Send a datagram as L{write} does; while the port hands over the
        datagrams read in a wake-up, with the others written so, once they
        are handled (see the module).

        @param failed: called as C{failed(context, error)} with the
            exception (an L{OSError}, say) if the datagram cannot be sent
            later; not when L{write} raises now: what it raises is
            raised.
        """
        pending = self._pending
        if pending is None or addr[0] not in self._checked:
            self.write(datagram, addr)
        else:
            pending.append((datagram, addr, failed, context))

    def flush(self):
        """
        Send what L{writeSoon} keeps now (before a datagram another port
        sends: datagrams leave in the order they were written).
        """
        pending = self._pending
        if pending:
            self._sendPending(pending)

    def _sendPending(self, pending):
        """
        Send what L{writeSoon} kept, in the order it came.
        """
        sendto = self.socket.sendto
        for datagram, addr, failed, context in pending:
            try:
                sendto(datagram, addr)
            except (OSError, OverflowError, ValueError) as e:
                # As write: a refusal reported for an earlier datagram is
                # not this one's failure.
                if getattr(e, "errno", None) not in _REFUSED:
                    try:
                        failed(context, e)
                    except BaseException:
                        _legacyLog.err()
        del pending[:]

    def _readFailed(self, e):
        if e.errno in _REFUSED:
            # An ICMP port unreachable for a datagram sent earlier.
            if self._connectedAddr:
                self.protocol.connectionRefused()
            return
        self.readErrors += 1
        if self._errorLog.allow() is not None:
            self._log.warn("reading UDP port {port}: {error}",
                           port=self._realPortNumber, error=e)

    def write(self, datagram, addr=None):
        """
        Send a datagram, as L{udp.Port.write}: after those L{writeSoon}
        keeps, so that datagrams leave in the order they were written (a
        NOTIFY after the 200 to its SUBSCRIBE).
        """
        self.flush()
        if addr is not None and addr[0] in self._checked:
            try:
                return self.socket.sendto(datagram, addr)
            except OSError as e:
                # As udp.Port's.
                if e.errno == errno.EINTR:
                    return self.write(datagram, addr)
                if e.errno == errno.EMSGSIZE:
                    raise error.MessageLengthError("message too long")
                if e.errno == errno.ECONNREFUSED:
                    return None
                raise
        result = udp.Port.write(self, datagram, addr)
        if addr is not None and not self._connectedAddr:
            checked = self._checked
            if len(checked) >= self.maxCheckedHosts:
                checked.clear()
            checked.add(addr[0])
        return result


def listenDatagram(reactor, port, protocol, interface="",
                   maxPacketSize=8192):
    """
    Listen on a UDP port with a L{DatagramPort}, as C{reactor.listenUDP}
    does with a L{udp.Port}; a reactor that is not a posix one (a
    L{twisted.internet.testing.MemoryReactor}, say) listens its own way.
    """
    if not isinstance(reactor, PosixReactorBase):
        return reactor.listenUDP(port, protocol, interface=interface,
                                 maxPacketSize=maxPacketSize)
    p = DatagramPort(port, protocol, interface, maxPacketSize, reactor)
    p.startListening()
    return p


def adoptDatagram(reactor, fileDescriptor, addressFamily, protocol,
                  maxPacketSize=8192):
    """
    Listen on a bound UDP socket's descriptor with a L{DatagramPort}, as
    C{reactor.adoptDatagramPort} does with a L{udp.Port}.
    """
    if not isinstance(reactor, PosixReactorBase):
        return reactor.adoptDatagramPort(fileDescriptor, addressFamily,
                                         protocol, maxPacketSize)
    if addressFamily not in (socket.AF_INET, socket.AF_INET6):
        raise error.UnsupportedAddressFamily(addressFamily)
    p = DatagramPort._fromListeningDescriptor(
        reactor, fileDescriptor, addressFamily, protocol, maxPacketSize)
    p.startListening()
    return p
