# -*- test-case-name: tests.test_transport -*-
"""
The SIP transport layer (RFC 3261 section 18) over UDP, TCP and TLS.

L{TransportLayer} receives bytes, parses and validates them with
L{sipdist.sip.message}, answers what is malformed itself (statelessly, with the
reason phrase naming the problem) and hands every good message to its
C{handler} (the transaction layer) as C{handler.messageReceived(message,
flow)}.

A I{flow} is where a message came from and where its answer goes:

  - L{DatagramFlow} for UDP: the response address is computed once, when the
    request arrives, per section 18.2.2 and RFC 3581 (C{received} added to
    the top Via when the source differs from sent-by, C{rport} filled in
    when asked for, and the response sent to the source port in that case,
    else to the sent-by port of the source address); C{maddr} is ignored,
    so responses never go to an address the sender chose;
  - L{StreamFlow} for TCP and TLS: one per connection, responses go back on
    the connection the request came in on; when it has closed the response
    is not sent (section 18.2.2 allows a new connection to the source
    address at the sent-by port; we open none, so nothing a sender writes
    picks where a response goes).

Open connections are kept in a table keyed by the peer's address and by the
sent-by of the requests received on them, so a request to a peer that has a
connection open to us reuses it (clients behind NAT and firewalls can only be
reached that way).  Everything is bounded: message size (C{513}), number of
connections overall and per source address, idle time of a connection.

What a connection costs in memory is bounded too (see the Limits section of
docs/security.rst): the bytes of its unfinished message (at most the
maximum message size), the bytes of every connection's unfinished messages
together (C{maxBuffered}: past it the connections whose unfinished message
is the oldest are closed), and the time a message may take to arrive
(C{headerTimeout} for its header section, C{messageTimeout} for all of
it), so a peer sending a byte at a time (slowloris) is closed at the
deadline.  Only a complete message or a keep-alive counts as activity for
the idle timeout.
"""

import os
import socket
import sys
from base64 import urlsafe_b64encode

from twisted.application.service import Service
from twisted.internet import defer, endpoints
from twisted.internet import error as netError
from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.internet.protocol import DatagramProtocol, Factory, Protocol
from twisted.logger import Logger

from sipdist.logs import LogLimiter as _LogLimiter
from sipdist.sip import stun
from sipdist.sip.datagram import listenDatagram
from sipdist.sip.message import (
    DEFAULT_MAX_SIZE, MessageError, Request, StreamFramer, errorResponse,
    parseMessage, validateRequest, validateResponse)

DEFAULT_IDLE_TIMEOUT = 900.0
DEFAULT_HEADER_TIMEOUT = 10.0
DEFAULT_MESSAGE_TIMEOUT = 30.0
DEFAULT_MAX_BUFFERED = 64 * 1024 * 1024
DEFAULT_MAX_CONNECTIONS = 10000
DEFAULT_MAX_CONNECTIONS_PER_HOST = 64
# Distinct reasons kept in TransportLayer.dropReasons; the rest count as
# "Other".
MAX_DROP_REASONS = 64
# Aliases (sent-by addresses) remembered per connection.
_MAX_ALIASES = 4


# getsockopt(SOL_SOCKET, SO_MEMINFO): Linux's sk_meminfo, whose first two
# 32-bit values are the receive queue's bytes and the receive buffer's size.
_SO_MEMINFO = getattr(socket, "SO_MEMINFO", 55)


def _token():
    return urlsafe_b64encode(os.urandom(9)).decode("ascii")


# Connections waiting to be accepted (the listen backlog) on a TCP or TLS
# port unless its description says otherwise (backlog=N): the clients of a
# failed home all connect to their backup within seconds, and a connection
# the kernel drops from a full backlog is tried again by the client only
# after 1, 3, 7 ... s (the SYN retransmissions).  The kernel caps it at
# net.core.somaxconn.
LISTEN_BACKLOG = 1024


class DatagramFlow:
    """
    A UDP peer: messages to it are datagrams from our listening port.

    @ivar transport: C{"UDP"}.
    @ivar reliable: C{False}.
    @ivar remote: C{(host, port)} messages are sent to.
    @ivar local: C{(host, port)} of our port.
    """

    __slots__ = ("_protocol", "remote")
    transport = "UDP"
    reliable = False

    def __init__(self, protocol, remote):
        self._protocol = protocol
        self.remote = remote

    @property
    def local(self):
        return self._protocol.local

    @property
    def token(self):
        """
        A text naming this flow, for L{TransportLayer.flowByToken}.
        """
        host, port = self.remote
        return f"u{self._protocol.index}-{host}-{port}"

    def send(self, message):
        """
        Serialise and send a message.

        @return: C{True} if it was handed to the network.
        """
        return self._protocol.sendBytes(message.toBytes(), self.remote)

    def sendSoon(self, message, failed, context):
        """
        Send a message as L{send} does, or with the other answers of the
        port's wake-up (L{SIPDatagramProtocol.sendSoon}).

        @param failed: called as C{failed(context, error)} if it is not
            sent after all (once this has returned C{True}).
        @return: C{True} if it was handed to the network or will be.
        """
        sendSoon = getattr(self._protocol, "sendSoon", None)
        if sendSoon is None:
            return self.send(message)
        return sendSoon(message.toBytes(), self.remote, failed, context)

    def sendKeepAlive(self):
        """
        Send an RFC 5626 keep-alive over UDP: a STUN Binding request
        (section 4.4.2), which the peer answers with a Binding success
        response (noted in L{lastReceived}).

        @return: C{True} if it was handed to the network.
        """
        return self._protocol.sendBytes(stun.bindingRequest(os.urandom(12)),
                                        self.remote, capture=False)

    @property
    def lastReceived(self):
        """
        When the peer last answered a STUN Binding request (the reactor's
        clock), or L{None}.
        """
        layer = getattr(self._protocol, "_layer", None)
        if layer is None:
            return None
        return layer._stunAnswered.get(tuple(self.remote))

    def __eq__(self, other):
        return (isinstance(other, DatagramFlow)
                and other._protocol is self._protocol
                and other.remote == self.remote)

    def __hash__(self):
        return hash(self.remote)

    def __repr__(self):
        return f"<DatagramFlow {self.remote[0]}:{self.remote[1]}>"


# Callbacks one connection holds for its loss (StreamFlow.addLostCallback).
MAX_LOST_CALLBACKS = 16


class StreamFlow:
    """
    A TCP or TLS connection.

    @ivar transport: C{"TCP"} or C{"TLS"}.
    @ivar reliable: C{True}.
    @ivar remote: the peer's C{(host, port)}.
    @ivar token: a random text naming this connection, for
        L{TransportLayer.flowByToken} (an edge names the flow a client's
        requests must come back on).
    """

    reliable = True

    def __init__(self, protocol, transport):
        self._protocol = protocol
        self.transport = transport
        self.token = "c" + _token()
        peer = protocol.transport.getPeer()
        self.remote = (peer.host, peer.port)
        host = protocol.transport.getHost()
        self.local = (host.host, host.port)

    @property
    def connected(self):
        return self._protocol.connected

    def send(self, message):
        """
        Serialise and write a message on the connection.

        @return: C{False} if the connection is gone.
        """
        if not self._protocol.connected:
            return False
        data = message.toBytes()
        self._protocol.transport.write(data)
        self._protocol._layer._capture(data, self.transport, self.local,
                                       self.remote)
        return True

    def close(self):
        self._protocol.transport.loseConnection()

    @property
    def lastReceived(self):
        """
        When bytes last arrived on the connection (the reactor's clock), or
        L{None} if none have: an RFC 5626 pong, or anything else, shows the
        peer alive.
        """
        return self._protocol.lastReceived

    def sendKeepAlive(self):
        """
        Send an RFC 5626 keep-alive ping (a double CRLF) on the connection;
        the peer answers with a CRLF pong.

        @return: C{False} if the connection is gone.
        """
        if not self._protocol.connected:
            return False
        self._protocol.transport.write(b"\r\n\r\n")
        return True

    def addLostCallback(self, callback):
        """
        Call C{callback(flow)} once, when the connection is lost (closed or
        reset by either side).  At most L{MAX_LOST_CALLBACKS} are held: past
        them the oldest is dropped.

        @return: C{False} (and nothing is held) if the connection is gone
            already.
        """
        if not self._protocol.connected:
            return False
        callbacks = self._protocol.lostCallbacks
        if callback not in callbacks:
            callbacks.append(callback)
            del callbacks[:-MAX_LOST_CALLBACKS]
        return True

    def removeLostCallback(self, callback):
        """
        Forget a callback given to L{addLostCallback}, if held.
        """
        callbacks = self._protocol.lostCallbacks
        if callback in callbacks:
            callbacks.remove(callback)

    def __repr__(self):
        return f"<StreamFlow {self.transport} {self.remote[0]}:{self.remote[1]}>"


# What a UDP port's write raises for a datagram it cannot send (a
# datagram too long for UDP raises Twisted's MessageLengthError).
_UNSENDABLE = (OSError, OverflowError, ValueError, netError.MessageLengthError)


class SIPDatagramProtocol(DatagramProtocol):
    """
    A UDP port receiving and sending SIP messages for a L{TransportLayer}.
    """

    noisy = False

    def __init__(self, layer, index):
        self._layer = layer
        self.index = index
        self.local = None

    def startProtocol(self):
        host = self.transport.getHost()
        self.local = (host.host, host.port)

    def datagramReceived(self, data, addr):
        self._layer.datagramReceived(self, data, addr)

    def sendBytes(self, data, addr, capture=True):
        """
        Send a datagram; a SIP message (C{capture}) is also given to the
        layer's capture.
        """
        if self.transport is None:
            return False
        others = self._layer._datagram
        if len(others) > 1:
            # What the other ports keep for the end of their wake-up goes
            # first (a NOTIFY after the 200 to a SUBSCRIBE that came on
            # another port); this port's own write sees to its own.
            for other in others:
                flush = getattr(other.transport, "flush", None)
                if other is not self and flush is not None:
                    flush()
        try:
            self.transport.write(data, addr)
        except _UNSENDABLE as e:
            self._sendFailed(addr, e)
            return False
        layer = self._layer
        if capture and layer.capture is not None:
            layer._capture(data, "UDP", layer._captureLocal(self.local, "UDP"),
                           addr)
        return True

    def sendSoon(self, data, addr, failed=None, context=None):
        """
        Send a SIP message as L{sendBytes} does, or let the port send it
        with the other answers of the datagrams it reads in this wake-up
        (L{sipdist.sip.datagram.DatagramPort.writeSoon}), when it can and
        nothing is captured.  A failure is logged, now or then, as
        L{sendBytes} logs it.

        @param failed: if given, called as C{failed(context, error)} if it
            is not sent after all (once this has returned C{True}).
        @return: C{False} if it cannot be sent (then C{failed} is not
            called).
        """
        transport = self.transport
        writeSoon = getattr(transport, "writeSoon", None)
        if writeSoon is None or self._layer.capture is not None:
            return self.sendBytes(data, addr)
        try:
            writeSoon(data, addr, self._unsent, (addr, failed, context))
        except _UNSENDABLE as e:
            self._sendFailed(addr, e)
            return False
        return True

    def _unsent(self, context, error):
        addr, failed, context = context
        self._sendFailed(addr, error)
        if failed is not None:
            failed(context, error)

    def _sendFailed(self, addr, error):
        """
        Log a datagram that could not be sent (at most 20 lines in 10 s,
        then a count of those not logged).
        """
        layer = self._layer
        if layer._sendLog.allow() is not None:
            layer._log.warn("cannot send to {addr}: {error}", addr=addr,
                            error=error)


class SIPStreamProtocol(Protocol):
    """
    A TCP or TLS connection carrying SIP messages.
    """

    flow = None

    def __init__(self, layer, transportName):
        self._layer = layer
        self._transportName = transportName
        # When the last complete message or keep-alive arrived.
        self.lastActivity = 0.0
        # When the first byte of the unfinished message arrived, or None.
        self.messageStarted = None
        # Bytes of this connection counted in the layer's bufferedBytes.
        self.counted = 0
        self._timer = None
        self.aliases = []
        # When bytes last arrived (None: never), and who is told of the
        # connection's loss (StreamFlow.addLostCallback).
        self.lastReceived = None
        self.lostCallbacks = []

    def connectionMade(self):
        self.flow = StreamFlow(self, self._transportName)
        self._framer = StreamFramer(self._messageFramed, self._framingError,
                                    self._keepAlive, self._layer.maxMessageSize)
        self._layer._connectionMade(self)

    def dataReceived(self, data):
        self.lastReceived = self._layer._reactor.seconds()
        self._framer.dataReceived(data)
        self._layer._framed(self)

    def _messageFramed(self, data):
        self._layer._capture(data, self._transportName, self.flow.remote,
                             self.flow.local)
        self._layer._messageComplete(self)
        self._layer._messageReceived(data, self.flow, stream=True)

    def _framingError(self, error):
        self._layer._log.info(
            "closing {flow}: {code} {phrase}", flow=self.flow,
            code=error.code, phrase=error.phrase)
        response = errorResponse(error, stream=True)
        if response is not None:
            self.flow.send(response)
        self.transport.loseConnection()

    def _keepAlive(self):
        # RFC 5626 section 4.4.1: answer a double-CRLF ping with one CRLF.
        self.lastActivity = self._layer._reactor.seconds()
        self.transport.write(b"\r\n")

    def connectionLost(self, reason):
        # Twisted leaves C{connected} set: a flow held elsewhere (a
        # registrar's binding, a subscription) must see the connection gone
        # and fall back on the Contact rather than write to nothing.
        self.connected = 0
        self._layer._connectionLost(self)
        callbacks, self.lostCallbacks = self.lostCallbacks, []
        for callback in callbacks:
            try:
                callback(self.flow)
            except Exception:
                self._layer._log.failure("a lost-connection callback failed")


class _StreamFactory(Factory):
    noisy = False

    def __init__(self, layer, transportName):
        self._layer = layer
        self._transportName = transportName

    def buildProtocol(self, addr):
        if not self._layer._admit(addr):
            return None
        return SIPStreamProtocol(self._layer, self._transportName)


class TransportLayer:
    """
    The transport layer of one SIP server or client.

    @ivar handler: receives C{messageReceived(message, flow)} for every
        well-formed message.
    @ivar maxMessageSize: larger messages are answered C{513}.
    @ivar idleTimeout: seconds without a complete message or keep-alive
        after which a connection is closed.
    @ivar headerTimeout: seconds a connection's message may take from its
        first byte to the end of its header section before the connection
        is closed (C{0}: no deadline).
    @ivar messageTimeout: the same up to the end of its body.
    @ivar maxBuffered: bytes of unfinished messages held for all
        connections together; past it, the connections whose unfinished
        message started first are closed until the total is below.
    @ivar maxConnections: connections open at once, all peers together.
    @ivar maxConnectionsPerHost: connections open at once from one address.
    @ivar bufferedBytes: bytes of unfinished messages held now.
    @ivar receiveBuffer: C{SO_RCVBUF} asked for each UDP port (bytes; the
        kernel caps it at C{net.core.rmem_max}), or C{None} for the
        system's default: a burst of datagrams waits there for the reactor
        instead of being dropped.
    @ivar capture: a callable C{(data, transport, source, destination)}
        given the bytes of every SIP message as received (before it is
        parsed, so malformed and shed ones too) and as sent, with the
        transport's name and the C{(host, port)} of each end, or C{None}
        (see L{sipdist.sip.hep}).  Keep-alives and STUN are not given.  It
        must not block; what it raises is logged and ignored.
    @ivar datagramFilter: a callable C{(protocol, data, addr)} that sees each
        datagram before it is parsed and returns C{True} when it answered
        it itself (the overload control's early 503), or C{None}.
    @ivar fastPath: a callable C{(protocol, data, addr)} that sees each
        datagram the C{datagramFilter} did not answer, before it is parsed,
        and returns C{True} when it answered it itself exactly as the full
        path would have (L{sipdist.roles.fastchallenge}), or C{None}.
    @ivar datagramDone: a callable without arguments, called once the
        fast path or the full path has handled a datagram the
        C{datagramFilter} let through (the overload control forgets the
        admission it gave the datagram, if any), or C{None}.

    Counters: C{dropped} (and C{dropReasons}: how many for each reason
    phrase, at most L{MAX_DROP_REASONS} of them), C{answeredErrors}, C{closedSlow} (deadline
    passed), C{closedOverBuffer} (closed to bring C{bufferedBytes} under
    C{maxBuffered}), C{refused} (connections past C{maxConnections} or
    C{maxConnectionsPerHost}).
    """

    _log = Logger()
    receiveBuffer = None
    datagramFilter = None
    datagramDone = None
    fastPath = None
    capture = None

    def __init__(self, reactor, handler=None, maxMessageSize=DEFAULT_MAX_SIZE,
                 idleTimeout=DEFAULT_IDLE_TIMEOUT,
                 maxConnections=DEFAULT_MAX_CONNECTIONS,
                 maxConnectionsPerHost=DEFAULT_MAX_CONNECTIONS_PER_HOST,
                 tlsClientOptions=None, headerTimeout=DEFAULT_HEADER_TIMEOUT,
                 messageTimeout=DEFAULT_MESSAGE_TIMEOUT,
                 maxBuffered=DEFAULT_MAX_BUFFERED):
        """
        @param tlsClientOptions: a callable C{(hostname) ->
            IOpenSSLClientConnectionCreator} used for outgoing TLS
            connections (see L{sipdist.sip.tls.clientContextFactory}).
        """
        self._reactor = reactor
        self.handler = handler
        self.maxMessageSize = maxMessageSize
        self.idleTimeout = idleTimeout
        self.headerTimeout = headerTimeout
        self.messageTimeout = messageTimeout
        self.maxBuffered = maxBuffered
        self.bufferedBytes = 0
        # Connections with an unfinished message, oldest message first.
        self._unfinished = {}
        self.closedSlow = 0
        self.closedOverBuffer = 0
        self.refused = 0
        self._refusedLog = _LogLimiter(reactor)
        self.maxConnections = maxConnections
        self.maxConnectionsPerHost = maxConnectionsPerHost
        self._tlsClientOptions = tlsClientOptions
        self._datagram = []
        self._ports = []
        # transport name -> (host, port) we listen on, first port of each.
        self._local = {}
        # (transport, host, port) -> protocol
        self._connections = {}
        self._byToken = {}
        self._perHost = {}
        self._open = set()
        self._pending = {}
        self.dropped = 0
        # Reason phrase -> how many messages were dropped for it.
        self.dropReasons = {}
        self.answeredErrors = 0
        self._badInputLog = _LogLimiter(reactor)
        self._captureLog = _LogLimiter(reactor, burst=5, period=60.0)
        # Datagrams that could not be sent (a firewall refusing every
        # answer would otherwise log a line per request).
        self._sendLog = _LogLimiter(reactor, log=self._log,
                                    what="cannot send")
        self._stunAnswered = {}

    # Listening

    def listen(self, description, tlsServerOptions=None):
        """
        Start listening.

        @param description: C{udp:PORT[:interface=ADDR]},
            C{tcp:PORT[:interface=ADDR]}, Twisted's C{ssl:…} or C{tls:…}
            server endpoint strings, or C{sips:PORT[:interface=ADDR]} for
            TLS with C{tlsServerOptions}.
        @return: a L{Deferred} firing with the listening port.
        """
        kind, args, kwargs = parseListen(description)
        listener = self.listener or self._reactor
        if kind == "udp":
            protocol = SIPDatagramProtocol(self, len(self._datagram))
            if listener is self._reactor:
                # sipdist's own port on a posix reactor (see
                # sipdist.sip.datagram); what listens instead of the
                # reactor (--workers) uses it too.
                port = listenDatagram(
                    listener, int(args[0]), protocol,
                    interface=kwargs.get("interface", ""),
                    maxPacketSize=self.maxMessageSize + 1)
            else:
                port = listener.listenUDP(
                    int(args[0]), protocol,
                    interface=kwargs.get("interface", ""),
                    maxPacketSize=self.maxMessageSize + 1)
            sock = getattr(port, "socket", None)
            if self.receiveBuffer and sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF,
                                self.receiveBuffer)
            self._datagram.append(protocol)
            self._listening(port, "UDP", kwargs.get("interface"))
            return defer.succeed(port)
        if kind == "sips":
            if tlsServerOptions is None:
                raise ValueError(
                    f"{description}: sips: needs a TLS certificate and key")
            from sipdist.sip.tls import tlsServerEndpoint
            endpoint = tlsServerEndpoint(
                listener, int(args[0]), kwargs.get("interface", ""),
                tlsServerOptions,
                backlog=int(kwargs.get("backlog", LISTEN_BACKLOG)))
            transportName = "TLS"
        else:
            if kind == "tcp" and "backlog" not in kwargs:
                description += f":backlog={LISTEN_BACKLOG}"
            endpoint = endpoints.serverFromString(listener, description)
            transportName = "TLS" if kind in ("ssl", "tls") else "TCP"
        d = endpoint.listen(_StreamFactory(self, transportName))
        d.addCallback(self._listening, transportName, kwargs.get("interface"))
        return d

    def _listening(self, port, transportName, interface):
        self._ports.append(port)
        if transportName not in self._local:
            host = port.getHost()
            address = interface or self.advertisedHost or host.host
            if address in ("", "0.0.0.0", "::"):
                address = "127.0.0.1"
            self._local[transportName] = (address, host.port)
        return port

    advertisedHost = None

    # What listens instead of the reactor (its listenUDP, listenTCP and
    # listenSSL): sipdist.workers.ReusePortListener for --workers.
    listener = None

    def localAddress(self, transportName):
        """
        The C{(host, port)} we listen on for a transport (the first such
        port), as our Via and Record-Route name it; C{None} if we do not
        listen on that transport.  The host is the listening interface, or
        C{advertisedHost} when listening on every interface.
        """
        return self._local.get(transportName)

    def stopListening(self):
        """
        Stop every listening port and close every connection.
        """
        ds = [defer.maybeDeferred(p.stopListening) for p in self._ports]
        self._ports = []
        self._datagram = []
        self._local = {}
        for protocol in list(self._open):
            protocol.transport.loseConnection()
        return defer.gatherResults(ds, consumeErrors=True)

    # Capture

    def _capture(self, data, transportName, source, destination):
        capture = self.capture
        if capture is None:
            return
        try:
            capture(data, transportName, source, destination)
        except Exception:
            if self._captureLog.allow() is not None:
                self._log.failure("capturing a message failed")

    def _captureLocal(self, local, transportName):
        """
        The address to capture for our end of a UDP port: the port's own,
        or, for a port bound to every interface, the address we advertise
        (see L{localAddress}).
        """
        if local is None:
            return ("127.0.0.1", 0)
        host, port = local
        if host in ("", "0.0.0.0", "::"):
            advertised = self._local.get(transportName)
            host = advertised[0] if advertised else "127.0.0.1"
        return host, port

    # Receiving

    def datagramReceived(self, protocol, data, addr):
        if not data.strip(b"\r\n"):
            # A CRLF keep-alive over UDP: nothing to answer.
            return
        if data[0] < 2 and stun.isStun(data):
            self._stunReceived(protocol, data, addr)
            return
        if self.capture is not None:
            self._capture(data, "UDP", addr,
                          self._captureLocal(protocol.local, "UDP"))
        datagramFilter = self.datagramFilter
        if datagramFilter is not None and datagramFilter(protocol, data, addr):
            return
        datagramDone = self.datagramDone
        try:
            self._handleDatagram(protocol, data, addr)
        finally:
            if datagramDone is not None:
                datagramDone()

    def _handleDatagram(self, protocol, data, addr):
        """
        Give a datagram to the fast path, else to the full path.
        """
        fastPath = self.fastPath
        if fastPath is not None and fastPath(protocol, data, addr):
            return
        self._messageReceived(data, DatagramFlow(protocol, addr), stream=False)

    # Peers whose STUN Binding success responses we remember (the latest
    # time for each); the table is emptied when full.
    MAX_STUN_PEERS = 4096

    def _stunReceived(self, protocol, data, addr):
        """
        RFC 5626 section 4.4.2 over UDP: answer a STUN Binding request with
        the address it came from; note when a Binding success response
        arrived from a peer (see L{DatagramFlow.lastReceived}).  Other STUN
        messages are dropped.
        """
        kind, transactionId = stun.parse(data)
        if kind == stun.BINDING_REQUEST:
            try:
                answer = stun.bindingSuccess(transactionId, addr[0], addr[1])
            except ValueError:
                return
            protocol.sendBytes(answer, addr, capture=False)
        elif kind == stun.BINDING_SUCCESS:
            answered = self._stunAnswered
            if len(answered) >= self.MAX_STUN_PEERS:
                answered.clear()
            answered[(addr[0], addr[1])] = self._reactor.seconds()

    def _messageReceived(self, data, flow, stream):
        try:
            message = parseMessage(data, self.maxMessageSize, stream)
            if isinstance(message, Request):
                validateRequest(message)
                if not stream:
                    flow = self._receivedRequest(message, flow)
                else:
                    self._aliasConnection(message, flow)
            else:
                validateResponse(message)
        except MessageError as error:
            self._answerError(error, flow, stream)
            return
        except Exception:
            self._log.failure("dropping a message from {flow}", flow=flow)
            self.dropped += 1
            reasons = self.dropReasons
            reasons["Internal Error"] = reasons.get("Internal Error", 0) + 1
            return
        handler = self.handler
        if handler is not None:
            handler.messageReceived(message, flow)

    def _receivedRequest(self, request, flow):
        """
        Section 18.2.1 and RFC 3581: record the source in the top Via and
        compute where responses go: the source address always (C{received}),
        at the source port when the request asked for C{rport}, else at the
        sent-by port.  A C{maddr} in the Via is ignored, multicast or not:
        no response of ours goes to an address other than the one the
        request came from.
        """
        via = request.topVia()
        host, port = flow.remote
        if via.rportRequested:
            via.rportValue = port
            via.received = host
            request.setTopVia(via)
            return flow
        if via.host != host:
            via.received = host
            request.setTopVia(via)
        # maddr is never honoured: it would let the sender point our
        # responses (and an INVITE's retransmitted final response) at an
        # address of its choosing (docs/security.rst, "Where responses go").
        if via.transport != "UDP":
            # The Via names another transport than the one the request
            # came over (section 18.2.2 gives no port for that): the
            # response goes back over UDP to where the request came from,
            # not to that transport's default port.
            return flow
        responsePort = via.sentByPort
        if responsePort == port:
            return flow
        return DatagramFlow(flow._protocol, (host, responsePort))

    def _answerError(self, error, flow, stream):
        response = errorResponse(error, stream)
        suppressed = self._badInputLog.allow()
        if response is None:
            self.dropped += 1
            reasons = self.dropReasons
            reason = error.phrase
            if error.message is not None and error.message.method == "ACK":
                reason = "ACK Not Answered: " + reason
            if reason in reasons or len(reasons) < MAX_DROP_REASONS:
                reasons[reason] = reasons.get(reason, 0) + 1
            else:
                reasons["Other"] = reasons.get("Other", 0) + 1
            if suppressed is not None:
                self._log.info(
                    "dropped a message from {flow}: {code} {phrase} "
                    "({suppressed} more not logged)", flow=flow,
                    code=error.code, phrase=error.phrase, suppressed=suppressed)
            return
        self.answeredErrors += 1
        if suppressed is not None:
            self._log.info(
                "answered {code} {phrase} to {flow} ({suppressed} more not "
                "logged)", flow=flow, code=error.code, phrase=error.phrase,
                suppressed=suppressed)
        if not stream:
            try:
                flow = self._receivedRequest(error.message, flow)
            except ValueError:
                pass
        flow.send(response)

    # Connections

    def _admit(self, addr):
        host = getattr(addr, "host", None)
        if len(self._open) + len(self._pending) >= self.maxConnections:
            self._refused(host, f"{len(self._open)} connections open")
            return False
        if self._perHost.get(host, 0) >= self.maxConnectionsPerHost:
            self._refused(host, "too many from that address")
            return False
        return True

    def _refused(self, host, reason):
        self.refused += 1
        suppressed = self._refusedLog.allow()
        if suppressed is not None:
            self._log.warn("refusing a connection from {host}: {reason} "
                           "({suppressed} more not logged)", host=host,
                           reason=reason, suppressed=suppressed)

    def _connectionMade(self, protocol):
        flow = protocol.flow
        host = flow.remote[0]
        self._open.add(protocol)
        self._perHost[host] = self._perHost.get(host, 0) + 1
        self._connections[(flow.transport, host, flow.remote[1])] = protocol
        self._byToken[flow.token] = protocol
        protocol.lastActivity = self._reactor.seconds()
        self._schedule(protocol)

    def _framed(self, protocol):
        """
        A connection's framer has consumed what arrived: account for the
        bytes it holds now, start the deadlines of a message that has just
        started, and close connections if all together hold too much.
        """
        if protocol not in self._open:
            return
        framer = protocol._framer
        held = framer.buffered
        self.bufferedBytes += held - protocol.counted
        protocol.counted = held
        if framer.inMessage:
            if protocol.messageStarted is None:
                protocol.messageStarted = self._reactor.seconds()
                self._unfinished[protocol] = None
                self._schedule(protocol)
        elif protocol.messageStarted is not None:
            # The framer gave up on it (framing error).
            protocol.messageStarted = None
            self._unfinished.pop(protocol, None)
        if self.bufferedBytes > self.maxBuffered:
            self._shed()

    def _messageComplete(self, protocol):
        protocol.lastActivity = self._reactor.seconds()
        if protocol.messageStarted is not None:
            protocol.messageStarted = None
            self._unfinished.pop(protocol, None)

    def _shed(self):
        """
        Close the connections whose unfinished message is the oldest until
        the bytes held are within C{maxBuffered}.
        """
        while self.bufferedBytes > self.maxBuffered and self._unfinished:
            protocol = next(iter(self._unfinished))
            self.closedOverBuffer += 1
            self._close(protocol, "too many bytes of unfinished messages "
                                  "held for all connections")

    def _close(self, protocol, reason):
        """
        Close a connection now, dropping what it holds.
        """
        self._release(protocol)
        suppressed = self._badInputLog.allow()
        if suppressed is not None:
            self._log.info("closing {flow}: {reason} ({suppressed} more not "
                           "logged)", flow=protocol.flow, reason=reason,
                           suppressed=suppressed)
        transport = protocol.transport
        abort = getattr(transport, "abortConnection", None)
        if abort is not None:
            abort()
        else:
            transport.loseConnection()

    def _release(self, protocol):
        protocol._framer.discard()
        self.bufferedBytes -= protocol.counted
        protocol.counted = 0
        protocol.messageStarted = None
        self._unfinished.pop(protocol, None)

    def _deadline(self, protocol):
        """
        The next deadline of a connection and what passing it means, or
        C{(None, None)}.
        """
        deadlines = []
        started = protocol.messageStarted
        if started is not None:
            if self.headerTimeout and protocol._framer.inHeaders:
                deadlines.append((started + self.headerTimeout,
                                  "header section not complete in time"))
            if self.messageTimeout:
                deadlines.append((started + self.messageTimeout,
                                  "message not complete in time"))
        elif self.idleTimeout:
            deadlines.append((protocol.lastActivity + self.idleTimeout,
                              "idle"))
        return min(deadlines) if deadlines else (None, None)

    def _schedule(self, protocol):
        """
        Make the connection's timer fire at its next deadline, or earlier.
        """
        deadline, _ = self._deadline(protocol)
        timer = protocol._timer
        if deadline is None:
            if timer is not None and timer.active():
                timer.cancel()
            protocol._timer = None
            return
        delay = max(0.0, deadline - self._reactor.seconds())
        if timer is not None and timer.active():
            if timer.getTime() > deadline:
                timer.reset(delay)
            return
        protocol._timer = self._reactor.callLater(
            delay, self._checkDeadlines, protocol)

    def _checkDeadlines(self, protocol):
        protocol._timer = None
        if protocol not in self._open:
            return
        deadline, reason = self._deadline(protocol)
        if deadline is not None and self._reactor.seconds() >= deadline:
            if reason == "idle":
                self._log.info("closing idle {flow}", flow=protocol.flow)
                self._release(protocol)
                protocol.transport.loseConnection()
            else:
                self.closedSlow += 1
                self._close(protocol, reason)
            return
        self._schedule(protocol)

    def _aliasConnection(self, request, flow):
        # A request's sent-by names where its sender listens: remember it so
        # requests to that address reuse this connection.
        protocol = flow._protocol
        if len(protocol.aliases) >= _MAX_ALIASES:
            return
        via = request.topVia()
        key = (flow.transport, via.host, via.sentByPort)
        if key not in self._connections:
            self._connections[key] = protocol
            protocol.aliases.append(key)

    def _connectionLost(self, protocol):
        if protocol not in self._open:
            return
        self._open.discard(protocol)
        flow = protocol.flow
        host = flow.remote[0]
        count = self._perHost.get(host, 1) - 1
        if count:
            self._perHost[host] = count
        else:
            self._perHost.pop(host, None)
        for key in [(flow.transport, host, flow.remote[1])] + protocol.aliases:
            if self._connections.get(key) is protocol:
                del self._connections[key]
        self._byToken.pop(flow.token, None)
        self._release(protocol)
        if protocol._timer is not None and protocol._timer.active():
            protocol._timer.cancel()
        protocol._timer = None

    def receiveQueued(self):
        """
        What waits in the receive buffers of the UDP ports, from the
        kernel's accounting (Linux C{SO_MEMINFO}: about 1.3 KB for a small
        datagram): C{(queued bytes, buffer bytes)} summed over the ports, or
        C{None} where the system cannot tell.  One system call per port.
        """
        queued = size = 0
        for protocol in self._datagram:
            sock = getattr(protocol.transport, "socket", None)
            if sock is None:
                continue
            try:
                info = sock.getsockopt(socket.SOL_SOCKET, _SO_MEMINFO, 36)
            except OSError:
                return None
            queued += int.from_bytes(info[0:4], sys.byteorder)
            size += int.from_bytes(info[4:8], sys.byteorder)
        return queued, size

    @property
    def connectionCount(self):
        return len(self._open)

    def stats(self):
        """
        @return: the connection figures and counters, as a L{dict} for the
            status endpoint.
        """
        return {
            "connections": len(self._open),
            "max_connections": self.maxConnections,
            "buffered_bytes": self.bufferedBytes,
            "max_buffered": self.maxBuffered,
            "closed_slow": self.closedSlow,
            "closed_over_buffer": self.closedOverBuffer,
            "refused": self.refused,
            "answered_errors": self.answeredErrors,
            "dropped": self.dropped,
            "drop_reasons": dict(self.dropReasons),
        }

    def flowByToken(self, token):
        """
        The flow a token names (see C{flow.token}), or C{None} if that
        connection is gone.
        """
        if token.startswith("u"):
            try:
                index, host, port = token[1:].rsplit("-", 2)
                protocol = self._datagram[int(index)]
                return DatagramFlow(protocol, (host, int(port)))
            except (ValueError, IndexError):
                return None
        protocol = self._byToken.get(token)
        return None if protocol is None else protocol.flow

    def existingFlow(self, transport, host, port):
        """
        An open connection to or from C{(host, port)}, or C{None}.
        """
        protocol = self._connections.get((transport, host, port))
        if protocol is None or not protocol.connected:
            return None
        return protocol.flow

    def connect(self, transport, host, port, tlsHostname=None):
        """
        A flow to a peer: a UDP flow from our first UDP port, an existing
        connection to the peer, or a new connection.

        @param transport: C{"UDP"}, C{"TCP"} or C{"TLS"}.
        @param tlsHostname: the name the peer's certificate must carry
            (default: C{host}).
        @return: a L{Deferred} firing with the flow.
        """
        transport = transport.upper()
        if transport == "UDP":
            if not self._datagram:
                return defer.fail(ConnectionError("no UDP port to send from"))
            return defer.succeed(DatagramFlow(self._datagram[0], (host, port)))
        existing = self.existingFlow(transport, host, port)
        if existing is not None:
            return defer.succeed(existing)
        key = (transport, host, port)
        waiting = self._pending.get(key)
        if waiting is not None:
            d = defer.Deferred()
            waiting.append(d)
            return d
        if len(self._open) + len(self._pending) >= self.maxConnections:
            return defer.fail(ConnectionError("too many connections"))
        if transport == "TLS":
            if self._tlsClientOptions is None:
                return defer.fail(ConnectionError("TLS is not configured"))
            endpoint = endpoints.wrapClientTLS(
                self._tlsClientOptions(tlsHostname or host),
                streamEndpoint(self._reactor, host, port))
        elif transport == "TCP":
            endpoint = streamEndpoint(self._reactor, host, port)
        else:
            return defer.fail(ValueError(f"unsupported transport {transport}"))
        self._pending[key] = waiting = []
        d = endpoint.connect(_StreamFactory(self, transport))

        def connected(protocol):
            del self._pending[key]
            if selfConnected(protocol.transport):
                # Nothing listens there, and the kernel gave the connection
                # that very address as its own (a TCP simultaneous open
                # with itself, on loopback, to a port of the ephemeral
                # range): what we sent would come back to us.
                protocol.transport.abortConnection()
                refused = netError.ConnectionRefusedError(
                    f"{host}:{port}: connected to itself, nothing listens")
                for w in waiting:
                    w.errback(refused)
                raise refused
            self._connections.setdefault(key, protocol)
            if key not in protocol.aliases:
                protocol.aliases.append(key)
            for w in waiting:
                w.callback(protocol.flow)
            return protocol.flow

        def failed(failure):
            del self._pending[key]
            for w in waiting:
                w.errback(failure)
            return failure

        d.addCallbacks(connected, failed)
        return d


def selfConnected(transport):
    """
    Whether a new connection's two ends are the same address: nothing
    listened where it went, and the kernel gave it that very address as
    its own (a TCP simultaneous open with itself, on one host, to a port
    of the ephemeral range).  What it sends would come back to it.
    """
    try:
        local, peer = transport.getHost(), transport.getPeer()
    except Exception:
        return False
    ends = [(getattr(a, "host", None), getattr(a, "port", None))
            for a in (local, peer)]
    return ends[0] == ends[1] and ends[0][1] is not None


def streamEndpoint(reactor, host, port):
    """
    The client endpoint of a TCP connection to C{host:port}.  An address
    is connected to directly: a L{endpoints.HostnameEndpoint} resolves
    even an address in a thread, builds a class per connection (its
    interface declarations cost a millisecond of CPU), and reports a
    refused connection only when its next attempt would start, 0.3 s
    later.  A name goes through a L{endpoints.HostnameEndpoint}.
    """
    if isIPAddress(host):
        return endpoints.TCP4ClientEndpoint(reactor, host, port)
    if isIPv6Address(host):
        return endpoints.TCP6ClientEndpoint(reactor, host, port)
    return endpoints.HostnameEndpoint(reactor, host, port)


# File descriptors kept for what is not a SIP connection: listening
# sockets, log and store files, LDAP connections, the status endpoint.
FILE_RESERVE = 64


def fitConnectionsToFileLimit(wanted, rlimit, reserve=FILE_RESERVE,
                              log=None):
    """
    Raise the process's soft limit of open files (C{RLIMIT_NOFILE}) to its
    hard limit, and lower the number of connections allowed at once to
    what that limit leaves after C{reserve} descriptors: past it, accepting
    a connection would fail with C{EMFILE} before the limit of connections
    applied (and the server could no longer open a file either).

    @param wanted: the configured C{--max-connections}.
    @param rlimit: an object with C{getrlimit}, C{setrlimit},
        C{RLIMIT_NOFILE} and C{RLIM_INFINITY}: the L{resource} module, or a
        fake in tests.
    @param log: a L{Logger} for the one line saying the limit was lowered.
    @return: the number of connections to allow (at least 1).
    """
    soft, hard = rlimit.getrlimit(rlimit.RLIMIT_NOFILE)
    infinity = rlimit.RLIM_INFINITY
    target = hard if hard != infinity else max(soft, wanted + reserve)
    if soft != infinity and target > soft:
        try:
            rlimit.setrlimit(rlimit.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            pass
        soft = rlimit.getrlimit(rlimit.RLIMIT_NOFILE)[0]
    if soft == infinity or wanted + reserve <= soft:
        return wanted
    allowed = max(1, soft - reserve)
    if log is None:
        log = TransportLayer._log
    log.warn(
        "--max-connections lowered from {wanted} to {allowed}: the limit of "
        "open files is {soft} (hard limit {hard}) and {reserve} are kept for "
        "listening sockets, files and the store; raise it (ulimit -n, "
        "LimitNOFILE=) to allow more", wanted=wanted, allowed=allowed,
        soft=soft, hard="unlimited" if hard == infinity else hard,
        reserve=reserve)
    return allowed


def parseListen(description):
    """
    Split a listening description into C{(kind, args, kwargs)}.

    @raise ValueError: with a one-line explanation.
    """
    kind, _, rest = description.partition(":")
    kind = kind.lower()
    if kind not in ("udp", "tcp", "ssl", "tls", "sips"):
        raise ValueError(
            f"{description!r}: a listening endpoint starts with udp:, tcp:, "
            f"ssl:, tls: or sips:")
    args, kwargs = [], {}
    if kind in ("ssl", "tls"):
        # Twisted parses these itself; validate them at start-up.
        return kind, args, kwargs
    # Allow IPv6 interfaces written with escaped colons (interface=\:\:1).
    parts = []
    current = ""
    i = 0
    while i < len(rest):
        c = rest[i]
        if c == "\\" and i + 1 < len(rest):
            current += rest[i + 1]
            i += 2
            continue
        if c == ":":
            parts.append(current)
            current = ""
        else:
            current += c
        i += 1
    parts.append(current)
    for part in parts:
        if "=" in part:
            name, _, value = part.partition("=")
            kwargs[name] = value
        elif part:
            args.append(part)
    if len(args) != 1 or not args[0].isdigit() or int(args[0]) > 65535:
        raise ValueError(f"{description!r}: needs one port number")
    unknown = set(kwargs) - {"interface", "backlog"}
    if unknown:
        raise ValueError(
            f"{description!r}: unknown option {sorted(unknown)[0]!r}")
    return kind, args, kwargs


class TransportService(Service):
    """
    Starts a L{TransportLayer}'s listening ports with the service and stops
    them with it.
    """

    _log = Logger()

    def __init__(self, layer, descriptions, tlsServerOptions=None):
        self.layer = layer
        self.descriptions = list(descriptions)
        self.tlsServerOptions = tlsServerOptions
        self.ports = []

    def startService(self):
        Service.startService(self)
        ds = []
        for description in self.descriptions:
            try:
                d = self.layer.listen(description, self.tlsServerOptions)
            except Exception as e:
                d = defer.fail(e)
            d.addCallback(self._listening, description)
            d.addErrback(self._cannotListen, description)
            ds.append(d)
        # Each port's failure is reported (logged, the reactor stopped) and
        # handed on to ready alone, which the caller handles: none is left
        # for the garbage collector to report (at exit, where Python 3.13.0
        # crashed doing so).
        self.ready = defer.gatherResults(ds, consumeErrors=True)

    def _listening(self, port, description):
        self.ports.append(port)
        host = port.getHost()
        self._log.info("listening on {description} ({host}:{port})",
                       description=description, host=host.host, port=host.port)
        return port

    def _cannotListen(self, failure, description):
        self._log.critical("cannot listen on {description}: {reason}",
                           description=description,
                           reason=failure.getErrorMessage())
        reactor = self.layer._reactor
        if getattr(reactor, "running", False):
            reactor.stop()
        return failure

    def stopService(self):
        Service.stopService(self)
        return self.layer.stopListening()
