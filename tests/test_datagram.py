"""
Tests for L{sipdist.sip.datagram}: sipdist's UDP port, over real sockets on
127.0.0.1, read by hand (one C{doRead} is one wake-up of the reactor).
"""

import errno
import socket

from twisted.internet import error, reactor
from twisted.internet.protocol import DatagramProtocol
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase, TestCase

from sipdist.sip.datagram import DatagramPort, adoptDatagram, listenDatagram
from sipdist.sip.transport import TransportLayer


class Recorder(DatagramProtocol):
    noisy = False

    def __init__(self):
        self.received = []
        self.refused = 0

    def datagramReceived(self, data, addr):
        self.received.append((data, addr))

    def connectionRefused(self):
        self.refused += 1


class FailingSocket:
    """
    A socket whose reads fail with C{errno}, then read from C{real}.
    """

    def __init__(self, real, errors):
        self._real = real
        self._errors = list(errors)

    def recvfrom_into(self, buffer):
        if self._errors:
            raise OSError(self._errors.pop(0), "failed")
        return self._real.recvfrom_into(buffer)

    def __getattr__(self, name):
        return getattr(self._real, name)


class DatagramPortTests(SynchronousTestCase):

    def setUp(self):
        self.reactor = MemoryReactorClock()
        self.protocol = Recorder()
        self.port = DatagramPort(0, self.protocol, "127.0.0.1", 8192,
                                 self.reactor)
        self.port.startListening()
        self.addCleanup(self._stop)
        self.address = ("127.0.0.1", self.port.getHost().port)
        self.client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.client.bind(("127.0.0.1", 0))
        self.addCleanup(self.client.close)

    def _stop(self):
        self.port.stopListening()
        self.reactor.advance(0)

    def send(self, count, start=0):
        for i in range(start, start + count):
            self.client.sendto(b"datagram %d" % (i,), self.address)

    def test_burst(self):
        """
        One wake-up hands the protocol every datagram waiting, in order,
        each with its sender's address; the next finds none.
        """
        self.send(10)
        self.port.doRead()
        source = self.client.getsockname()
        self.assertEqual(self.protocol.received,
                         [(b"datagram %d" % (i,), source) for i in range(10)])
        self.port.doRead()
        self.assertEqual(len(self.protocol.received), 10)

    def test_datagramsAreBytes(self):
        """
        Each datagram is handed over as L{bytes} of its own (read into the
        port's buffer, copied out), whatever the size of the one read
        after it.
        """
        self.client.sendto(b"x" * 1000, self.address)
        self.client.sendto(b"short", self.address)
        self.client.sendto(b"", self.address)
        self.port.doRead()
        data = [d for d, a in self.protocol.received]
        self.assertEqual(data, [b"x" * 1000, b"short", b""])
        self.assertEqual({type(d) for d in data}, {bytes})

    def test_truncated(self):
        """
        A datagram longer than C{maxPacketSize} is handed over cut to that
        size (the socket drops the rest), as Twisted's port does; a change
        of C{maxPacketSize} holds from the next wake-up.
        """
        self.client.sendto(b"a" * 9000, self.address)
        self.port.doRead()
        self.port.maxPacketSize = 100
        self.client.sendto(b"b" * 150, self.address)
        self.client.sendto(b"c" * 50, self.address)
        self.port.doRead()
        self.assertEqual([d for d, a in self.protocol.received],
                         [b"a" * 8192, b"b" * 100, b"c" * 50])

    def test_boundPerWakeUp(self):
        """
        A wake-up reads no more datagrams once it has read
        C{maxThroughput} bytes; the rest wait for the next ones (the
        reactor serves the other sockets between).
        """
        self.assertEqual(self.port.maxThroughput, 256 * 1024)
        self.port.maxThroughput = 4 * len(b"datagram 0")
        self.send(10)
        counts = []
        for wakeUp in range(4):
            self.port.doRead()
            counts.append(len(self.protocol.received))
        self.assertEqual(counts, [4, 8, 10, 10])

    def test_twoPorts(self):
        """
        Two flooded ports read in turn each get C{maxThroughput} bytes of
        datagrams handled per wake-up: neither starves the other.
        """
        other = Recorder()
        port = DatagramPort(0, other, "127.0.0.1", 8192, self.reactor)
        port.startListening()
        self.addCleanup(port.stopListening)
        self.port.maxThroughput = port.maxThroughput = 3 * len(b"datagram 0")
        self.send(9)
        for i in range(9):
            self.client.sendto(b"other 0000", ("127.0.0.1",
                                               port.getHost().port))
        self.port.doRead()
        port.doRead()
        self.assertEqual((len(self.protocol.received), len(other.received)),
                         (3, 3))

    def test_protocolFails(self):
        """
        An exception from the protocol is logged; the datagrams after it
        are still handed over.
        """
        failed = []

        def received(data, addr):
            if not failed:
                failed.append(data)
                raise RuntimeError("boom")
            self.protocol.received.append((data, addr))
        self.protocol.datagramReceived = received
        self.send(3)
        self.port.doRead()
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertEqual([d for d, a in self.protocol.received],
                         [b"datagram 1", b"datagram 2"])

    def test_refused(self):
        """
        An ICMP port unreachable reported on a connected port's socket is
        given to the protocol as C{connectionRefused}; the port stays open
        and reads on.
        """
        closed = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        closed.bind(("127.0.0.1", 0))
        target = closed.getsockname()
        closed.close()
        self.port.connect(*target)
        self.port.write(b"anyone?")
        self.port.doRead()
        self.assertEqual(self.protocol.refused, 1)
        self.assertTrue(self.port.connected)
        self.assertEqual(self.port.readErrors, 0)

    def test_readError(self):
        """
        Any other read error (here C{EMSGSIZE}, C{ENOMEM}) ends that
        wake-up, is counted and logged, at most 5 lines a minute; the port
        stays open and the next wake-up reads what waits.
        """
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        self.port.socket = FailingSocket(
            self.port.socket, [errno.EMSGSIZE] + [errno.ENOMEM] * 9)
        self.send(2)
        for wakeUp in range(10):
            self.assertIsNone(self.port.doRead())
        self.assertEqual(self.protocol.received, [])
        self.assertEqual(self.port.readErrors, 10)
        warnings = [e for e in events
                    if e.get("log_format", "").startswith("reading UDP")]
        self.assertEqual(len(warnings), 5)
        self.assertEqual(warnings[0]["error"].errno, errno.EMSGSIZE)
        self.port.doRead()
        self.assertEqual(len(self.protocol.received), 2)
        self.assertTrue(self.port.connected)

    def test_interrupted(self):
        """
        A read interrupted by a signal ends the wake-up quietly.
        """
        self.port.socket = FailingSocket(self.port.socket, [errno.EINTR])
        self.send(1)
        self.port.doRead()
        self.assertEqual(self.port.readErrors, 0)
        self.port.doRead()
        self.assertEqual(len(self.protocol.received), 1)

    def test_write(self):
        """
        Datagrams written to an address arrive there, the first and the
        next ones (sent without the address checked again).
        """
        target = self.client.getsockname()
        self.client.settimeout(5)
        for i in range(3):
            self.port.write(b"answer %d" % (i,), target)
            self.assertEqual(self.client.recv(100), b"answer %d" % (i,))
        self.assertEqual(self.port._checked, {"127.0.0.1"})

    def test_writeHostName(self):
        """
        A host name is refused every time (never resolved), as is an IPv6
        address on an IPv4 port; neither is remembered.
        """
        for i in range(2):
            self.assertRaises(error.InvalidAddressError, self.port.write,
                              b"x", ("localhost", 9))
            self.assertRaises(error.InvalidAddressError, self.port.write,
                              b"x", ("::1", 9))
        self.assertEqual(self.port._checked, set())

    def test_writeTooLong(self):
        """
        A datagram too long for UDP raises L{error.MessageLengthError},
        to a checked address too.
        """
        target = self.client.getsockname()
        self.port.write(b"x", target)
        self.assertRaises(error.MessageLengthError, self.port.write,
                          b"x" * 70000, target)

    def test_checkedBounded(self):
        """
        At most C{maxCheckedHosts} hosts are remembered; the table is
        emptied when full.
        """
        self.port.maxCheckedHosts = 2
        for host in ("127.0.0.2", "127.0.0.3", "127.0.0.4"):
            self.port.write(b"x", (host, 9))
            self.assertLessEqual(len(self.port._checked), 2)
        self.assertEqual(self.port._checked, {"127.0.0.4"})

    def _answering(self, answer=None):
        """
        Make the protocol answer each datagram with C{answer(data)} (its
        own bytes, by default) through C{writeSoon}; record, for each, the
        answers the client could read while it was handled.

        @return: the list of those counts, filled as datagrams come.
        """
        seen = []
        failures = []
        self.client.setblocking(False)
        self.arrived = []

        def drain():
            while True:
                try:
                    self.arrived.append(self.client.recv(100))
                except BlockingIOError:
                    return

        def received(data, addr):
            drain()
            seen.append(len(self.arrived))
            self.port.writeSoon(data if answer is None else answer(data),
                                addr, failed, data)

        def failed(context, error):
            failures.append((context, error))
        self.protocol.datagramReceived = received
        self.drain = drain
        self.failures = failures
        return seen

    def test_writeSoonWaitsForTheBurst(self):
        """
        Answers written with C{writeSoon} while a wake-up hands its
        datagrams over are sent once they are all handled, in order (the
        first to an address not checked yet at once, as L{write}).
        """
        seen = self._answering()
        self.send(6)
        self.port.doRead()
        self.drain()
        self.assertEqual(seen, [0, 1, 1, 1, 1, 1])
        self.assertEqual(self.arrived,
                         [b"datagram %d" % (i,) for i in range(6)])
        self.assertIsNone(self.port._pending)
        self.assertEqual(self.failures, [])

    def test_writeSoonBounded(self):
        """
        At most C{maxPending} answers wait: then they are sent, before the
        next datagram is handled.
        """
        self.assertEqual(self.port.maxPending, 32)
        self.port.maxPending = 3
        self.port.write(b"checked", self.client.getsockname())
        self.client.recv(100)
        seen = self._answering()
        self.send(8)
        self.port.doRead()
        self.drain()
        self.assertEqual(seen, [0, 0, 0, 3, 3, 3, 6, 6])
        self.assertEqual(len(self.arrived), 8)

    def test_writeInOrder(self):
        """
        A datagram written with C{write} while answers wait leaves after
        them: datagrams leave in the order they were written (a NOTIFY
        after the 200 to its SUBSCRIBE).
        """
        self.port.write(b"checked", self.client.getsockname())
        self.client.recv(100)
        self._answering()

        def received(data, addr):
            if data == b"datagram 2":
                self.port.write(b"at once", addr)
            else:
                self.port.writeSoon(data, addr, None, None)
        self.protocol.datagramReceived = received
        self.send(4)
        self.port.doRead()
        self.drain()
        self.assertEqual(self.arrived, [b"datagram 0", b"datagram 1",
                                        b"at once", b"datagram 3"])

    def test_flush(self):
        """
        C{flush} sends the answers waiting at once (before what another
        port sends); outside a wake-up it does nothing.
        """
        self.port.flush()
        self.port.write(b"checked", self.client.getsockname())
        self.client.recv(100)
        seen = self._answering()
        answer = self.protocol.datagramReceived

        def received(data, addr):
            answer(data, addr)
            if data == b"datagram 1":
                self.port.flush()
        self.protocol.datagramReceived = received
        self.send(4)
        self.port.doRead()
        self.drain()
        self.assertEqual(seen, [0, 0, 2, 2])
        self.assertEqual(len(self.arrived), 4)

    def test_writeSoonOutsideBurst(self):
        """
        Outside a wake-up, C{writeSoon} sends at once; what L{write}
        raises, it raises (a host name is never resolved).
        """
        self._answering()
        target = self.client.getsockname()
        for i in range(2):
            self.port.writeSoon(b"now %d" % (i,), target, None, None)
            self.drain()
            self.assertEqual(self.arrived[-1], b"now %d" % (i,))
        self.assertRaises(error.InvalidAddressError, self.port.writeSoon,
                          b"x", ("localhost", 9), None, None)

    def test_writeSoonFails(self):
        """
        An answer that cannot be sent when its turn comes is reported to
        its C{failed} with the error and its context; a refusal reported
        for an earlier datagram is not its failure; the others are sent,
        also when C{failed} raises (logged).
        """
        self.port.write(b"checked", self.client.getsockname())
        self.client.recv(100)
        real = self.port.socket
        errors = {b"datagram 1": errno.ENOBUFS,
                  b"datagram 2": errno.ECONNREFUSED,
                  b"datagram 3": errno.EPERM}

        class Failing:
            def sendto(self, data, addr):
                if data in errors:
                    raise OSError(errors[data], "failed")
                return real.sendto(data, addr)

            def __getattr__(self, name):
                return getattr(real, name)

        self._answering()
        self.port.socket = Failing()
        self.addCleanup(setattr, self.port, "socket", real)
        failures = self.failures

        def failed(context, error):
            failures.append((context, error))
            raise RuntimeError("the caller's bug")
        self.protocol.datagramReceived = (
            lambda data, addr: self.port.writeSoon(data, addr, failed, data))
        self.send(5)
        self.port.doRead()
        self.drain()
        self.assertEqual(self.arrived, [b"datagram 0", b"datagram 4"])
        self.assertEqual([(c, e.errno) for c, e in failures],
                         [(b"datagram 1", errno.ENOBUFS),
                          (b"datagram 3", errno.EPERM)])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 2)


class ListenTests(TestCase):

    def test_posix(self):
        """
        On a posix reactor, the transport layer listens on UDP with a
        L{DatagramPort}, which answers a request as Twisted's would.
        """
        layer = TransportLayer(reactor)
        d = layer.listen("udp:0:interface=127.0.0.1")
        port = self.successResultOf(d)
        self.addCleanup(layer.stopListening)
        self.assertIsInstance(port, DatagramPort)
        self.assertEqual(port.maxPacketSize, layer.maxMessageSize + 1)

    def test_adopt(self):
        """
        L{adoptDatagram} listens on a bound socket's descriptor (the
        workers' shared port) with a L{DatagramPort}.
        """
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        sock.setblocking(False)
        try:
            port = adoptDatagram(reactor, sock.fileno(), sock.family,
                                 Recorder(), 8192)
        finally:
            sock.close()
        self.addCleanup(port.stopListening)
        self.assertIsInstance(port, DatagramPort)
        self.assertEqual(port.readErrors, 0)

    def test_memoryReactor(self):
        """
        A reactor that is not a posix one listens its own way.
        """
        asked = []

        class Memory(MemoryReactorClock):
            def listenUDP(self, *args, **kwargs):
                asked.append((args, kwargs))
                return "port"
        protocol = Recorder()
        self.assertEqual(
            listenDatagram(Memory(), 5999, protocol, "127.0.0.1", 100),
            "port")
        self.assertEqual(asked, [((5999, protocol), {
            "interface": "127.0.0.1", "maxPacketSize": 100})])
