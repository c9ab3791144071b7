# -*- test-case-name: tests.test_transaction -*-
"""
SIP transactions (RFC 3261 section 17, with the RFC 6026 Accepted states).

Between the transport (below) and a transaction user (above, an
L{ITransactionUser}: a UAS/UAC core or a proxy core) sits a
L{TransactionLayer}.  It owns a bounded table of client and server
transactions and every timer of section 17, all scheduled on an injected
L{IReactorTime} (a L{twisted.internet.task.Clock} in tests):

  - INVITE client (L{ClientTransaction}): A (retransmit, T1 doubling), B
    (timeout 64*T1), D (wait for retransmitted finals, 32 s), M (RFC 6026,
    64*T1 in Accepted), plus timer C (section 16.6, 180 s after the last
    provisional) which CANCELs the INVITE.
  - non-INVITE client: E (retransmit T1 doubling up to T2), F (timeout
    64*T1), K (T4).
  - INVITE server (L{ServerTransaction}): 100 Trying when the user has not
    answered within 200 ms, G (retransmit a non-2xx final, T1 doubling up to
    T2; not for a 401/407 sent before any provisional response: the
    client's INVITE retransmissions each get it once), H (no ACK, 64*T1),
    I (T4), L (RFC 6026, 64*T1 in Accepted).
  - non-INVITE server: J (64*T1).

On reliable flows (TCP, TLS) nothing is retransmitted and D, I, J, K are
zero.  Every transaction terminates, and cancels its timers when it does; a
server transaction its user never answers is ended after a bounded time
(C{inviteTimeout}, 64*T1 + T4 for non-INVITE) and reported through
L{ITransactionUser.transactionFailed}.

The transport calls L{TransactionLayer.messageReceived}C{(message, flow)};
a flow has C{transport}, C{reliable}, C{remote} and C{send(message)}
(C{send} raising or returning C{False} is a transport error).

Usage by a transaction user::

    @implementer(ITransactionUser)
    class Registrar:
        def requestReceived(self, request, transaction):
            transaction.respond(responseTo(request, 200))
        def cancelReceived(self, request, transaction, cancelled):
            transaction.respond(responseTo(request, 481 if cancelled is None
                                           else 200))
        def ackReceived(self, request, flow): pass
        def responseReceived(self, response, flow): pass
        def transactionFailed(self, transaction, reason): pass

    layer = TransactionLayer(reactor, Registrar())
    transport = ...Transport(layer)      # calls layer.messageReceived

    # client side: the user adds the top Via with newBranch() first
    tx = layer.sendRequest(request, flow)
    tx.onProvisional = lambda response: ...
    tx.deferred.addCallbacks(finalResponse, lambda f: f.trap(TransactionError))

A full table answers new requests with a stateless C{503} carrying
C{Retry-After}; L{TransactionLayer.sendRequest} then fails its Deferred with
L{TransactionLayerFull}.
"""

import struct
import weakref
from array import array
from collections import deque
from collections.abc import Mapping

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from sipdist.jitparams import compiledApart
from sipdist.logs import LogLimiter
from sipdist.sip.message import MAGIC_COOKIE, Request, responseTo
from sipdist.sip.transport import DatagramFlow
from sipdist.sip.twistedsip import sip

# States (compare with "is").
CALLING = "Calling"
TRYING = "Trying"
PROCEEDING = "Proceeding"
COMPLETED = "Completed"
CONFIRMED = "Confirmed"
ACCEPTED = "Accepted"
TERMINATED = "Terminated"

# A challenge to an INVITE over UDP before any provisional response is not
# retransmitted by timer G: the client, which has not stopped retransmitting
# its INVITE, gets it again for each INVITE retransmission (absorbed in
# Completed).  One response per request received, so an INVITE whose source
# address is forged cannot have the 401/407 sent eleven times to that
# address (RFC 3261 section 26.3.2.4 asks for challenges that cost little).
_CHALLENGES = frozenset((401, 407))

# The methods L{TransactionLayer.answered} counts by name; any other is
# counted as "other", so the table stays bounded whatever clients send.
_COUNTED_METHODS = frozenset((
    "INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "REGISTER", "SUBSCRIBE",
    "NOTIFY", "PUBLISH", "MESSAGE", "INFO", "PRACK", "UPDATE", "REFER"))

#: The reason phrases of the stateless 503s: shed by the overload control,
#: the transaction table full.
OVERLOADED = "Service Unavailable (Overloaded)"
TABLE_FULL = "Service Unavailable (Transaction Table Full)"

TRYING_DELAY = 0.2  # section 17.2.1: 100 Trying unless the TU answered by then

_sipRequest = sip.Request


class TransactionError(Exception):
    """
    A client transaction ended without a final response, or a server
    transaction failed.
    """


class TransactionTimeout(TransactionError):
    """
    No final response came in time (timer B or F: the user answers 408), or
    no ACK came for a non-2xx final response (timer H).
    """


class TransportError(TransactionError):
    """
    The flow could not send a message (section 8.1.3.1: a client user
    answers as if it had received 503; section 17.2.4).
    """


class TransactionLayerFull(TransactionError):
    """
    The transaction table is full (the user answers 503).
    """


class TransactionLayerStopped(TransactionError):
    """
    The transaction layer was stopped before the transaction ended.
    """


def _send(layer, flow, message, failed=None, context=None):
    """
    Send a message on a flow; a flow that refuses or raises counts as a
    transport error.

    @param failed: if given, a flow that can (L{DatagramFlow.sendSoon})
        may send the message with the other answers of its port's
        wake-up, and calls C{failed(context, error)} if it cannot then.
    @return: whether the message went out (or will).
    """
    try:
        sendSoon = None if failed is None else getattr(flow, "sendSoon", None)
        if sendSoon is None:
            ok = flow.send(message) is not False
        else:
            ok = sendSoon(message, failed, context) is not False
    except Exception:
        layer._log.failure("sending {message!r} failed", message=message)
        ok = False
    if not ok:
        layer.transportErrors += 1
    return ok


def _cancel(call):
    if call is not None and call.active():
        call.cancel()


def _derivedRequest(request, method, to):
    """
    An ACK for a non-2xx final response (section 17.1.1.3) or a CANCEL
    (section 9.1): Request-URI, top Via value, Route, From, Call-ID, CSeq
    number and Max-Forwards of C{request}.
    """
    derived = Request(method, request.uriText)
    headers = request.headers
    out = derived.headers
    via = request.values("via")
    out["via"] = [via[0]]
    maxForwards = headers.get("max-forwards")
    out["max-forwards"] = [maxForwards[0] if maxForwards else "70"]
    route = headers.get("route")
    if route:
        out["route"] = list(route)
    out["from"] = [headers["from"][0]]
    out["to"] = [to]
    out["call-id"] = [headers["call-id"][0]]
    out["cseq"] = [f"{request.cseq()[0]} {method}"]
    return derived


class ServerTransaction:
    """
    A server transaction, created by the layer for each new request and
    handed to the user, who answers through L{respond}.

    @ivar request: the request that created it.
    @ivar flow: the flow it came on; responses go back through it.
    @ivar state: C{Trying}, C{Proceeding}, C{Completed}, C{Confirmed},
        C{Accepted} or C{Terminated}.
    @ivar response: the last response sent, or C{None}.
    @ivar cancelled: C{True} once a CANCEL matched this INVITE transaction
        before its final response.
    @ivar key: its key in the layer's table.
    """

    __slots__ = ("request", "flow", "_state", "response", "cancelled", "key",
                 "_layer", "_invite", "_reliable", "_retransmit", "_timeout",
                 "_position", "__weakref__")

    _log = Logger()

    def __init__(self, layer, key, request, flow):
        self._layer = layer
        self.key = key
        self.request = request
        self.flow = flow
        self._invite = invite = request.method == "INVITE"
        self._state = PROCEEDING if invite else TRYING
        self._reliable = flow.reliable
        self.response = None
        self.cancelled = False
        self._retransmit = None
        self._timeout = None
        # Its record's position in the layer's _CompletedRecords, once it
        # has one.
        self._position = None

    @property
    def state(self):
        """
        Its state; C{Terminated} once the record it left in the layer has
        ended (timer J), as if it had been told.
        """
        state = self._state
        if state is COMPLETED and self._position is not None \
                and self._position < self._layer._completedJ.head:
            # Its record has ended (timer J).
            return TERMINATED
        return state

    @state.setter
    def state(self, state):
        self._state = state

    def __repr__(self):
        return (f"<ServerTransaction {self.request.method} {self.state} "
                f"{self.key[0]}>")

    @property
    def isInvite(self):
        return self._invite

    def respond(self, response, stateless=False):
        """
        Send a response and run the state machine.  A provisional response
        after a final one, or a second final response (other than a further
        2xx to an INVITE, RFC 6026), is ignored and logged.

        @param stateless: the final response is one that a stateless UAS
            gives (RFC 3261 section 8.2.7): a non-INVITE transaction over
            an unreliable flow ends once it is sent, keeping nothing for
            the retransmissions of the request, each a new request.  A
            challenge to a request that carried no credentials (each
            retransmission challenged with a nonce of its own: a flood of
            requests without credentials, whose sources may be forged,
            leaves no record behind for timer J), or a redirect that the
            user gives a retransmission again (a distributor's signed
            C{301}, L{sipdist.roles.distribution}).  An INVITE transaction
            keeps its record (the ACK is absorbed there).
        """
        state = self.state
        code = response.code
        if state is not TRYING and state is not PROCEEDING:
            if state is ACCEPTED and 200 <= code < 300:
                self._transmit(response)
                return
            self._log.warn(
                "{code} to {method} ignored: transaction {state}",
                code=code, method=self.request.method, state=state)
            return
        layer = self._layer
        if code < 200:
            self.response = response
            self._state = PROCEEDING
            if self._invite:
                _cancel(self._retransmit)
                self._retransmit = None
                if self._timeout is not None:
                    # The user is alive: restart its deadline.
                    self._timeout.cancel()
                    self._timeout = layer._reactor.callLater(
                        layer.inviteTimeout, self._userTimeout)
            self._transmit(response)
            return
        _cancel(self._retransmit)
        _cancel(self._timeout)
        self._retransmit = self._timeout = None
        provisional = self.response is not None
        self.response = response
        method = self.request.method
        key = (method if method in _COUNTED_METHODS else "other", code)
        answered = layer.answered
        answered[key] = answered.get(key, 0) + 1
        if not self._invite:
            self._state = COMPLETED
            if self._reliable or (stateless and (
                    code in _CHALLENGES or 300 <= code < 400)):
                if self._transmit(response):
                    self._terminate()
            else:
                # Timer J: only retransmissions of the request are left to
                # absorb, so the table keeps the response's bytes, not this
                # transaction with its messages (_CompletedServerRecord).
                data = response.toBytes()
                if getattr(self.flow, "sendSoon", None) is None:
                    if self._transmit(_Wire(data, response)):
                        layer._completed(self, data)
                    return
                # The port may send it with the other answers of its
                # wake-up (DatagramPort.writeSoon): the record is kept
                # meanwhile, so that a retransmission read in the same
                # wake-up is absorbed, and ended if the send fails.
                kept = layer._completed(self, data)
                if not _send(layer, self.flow, _Wire(data, response),
                             self._unsentLater, kept):
                    self._unsent(kept)
        elif code < 300:
            self._state = ACCEPTED
            if self._transmit(response):
                self._timeout = layer._reactor.callLater(
                    layer._64T1, self._terminate)  # timer L
        else:
            self._state = COMPLETED
            if self._transmit(response):
                # Timers G and H: only the response's bytes are needed now
                # (a request spoofing its source can leave this state
                # waiting 64*T1 for an ACK that never comes).  No timer G
                # for a challenge sent before any provisional response
                # (see _CHALLENGES).
                layer._inviteCompleted(
                    self, response.toBytes(),
                    retransmit=provisional or code not in _CHALLENGES)

    def _transmit(self, message):
        ok = _send(self._layer, self.flow, message)
        if not ok:
            self._fail(TransportError(f"cannot send to {self.flow.remote}"))
        return ok

    def _fail(self, reason):
        self._terminate()
        self._layer._transactionFailed(self, reason)

    def _unsent(self, kept):
        """
        The final response could not be sent: its record C{kept} ends, and
        the transaction fails.
        """
        self._layer.discardCompleted(kept)
        self._fail(TransportError(f"cannot send to {self.flow.remote}"))

    def _unsentLater(self, kept, error):
        """
        The final response could not be sent at the end of the wake-up
        (the flow's protocol has logged C{error}): a transport error, as
        L{_send} counts one at once.
        """
        self._layer.transportErrors += 1
        self._unsent(kept)

    def _terminate(self):
        if self.state is TERMINATED:
            return
        self._state = TERMINATED
        _cancel(self._retransmit)
        _cancel(self._timeout)
        self._retransmit = self._timeout = None
        self._layer._removeServer(self)

    def _delivered(self):
        """
        The user has seen the request: if it has not answered yet, start the
        100 Trying timer (INVITE) and the deadline for its final response.
        """
        state = self.state
        if state is not TRYING and state is not PROCEEDING:
            return
        layer = self._layer
        callLater = layer._reactor.callLater
        if self._invite:
            if self.response is None:
                self._retransmit = callLater(TRYING_DELAY, self._sendTrying)
            self._timeout = callLater(layer.inviteTimeout, self._userTimeout)
        else:
            self._timeout = callLater(layer._64T1 + layer.T4,
                                      self._userTimeout)

    def _sendTrying(self):
        self._retransmit = None
        if self.state is PROCEEDING and self.response is None:
            self.response = responseTo(self.request, 100)
            self._transmit(self.response)

    def _userTimeout(self):
        self._timeout = None
        layer = self._layer
        layer.timeouts += 1
        if layer.timeoutLog.allow() is not None:
            self._log.warn("no final response to {method} from the user "
                           "in time", method=self.request.method)
        if self._invite:
            # Answer, so that the client is not left ringing, then let the
            # state machine run to its end.
            timeout = responseTo(self.request, 408)
            last = self.response
            if last is not None and last.code > 100:
                # Same To tag as the provisional responses: same dialog.
                timeout.headers["to"] = list(last.headers["to"])
            self.respond(timeout)
            layer._transactionFailed(
                self, TransactionTimeout("the user did not answer"))
        else:
            # The client has given up (timer F) already.
            self._fail(TransactionTimeout("the user did not answer"))

    def _matched(self, request, flow):
        """
        A request matching this transaction arrived: a retransmission, or
        the ACK of an INVITE.
        """
        state = self.state
        if request.method == "ACK":
            if state is ACCEPTED:
                self._layer._deliver(self._layer.user.ackReceived,
                                     request, flow)
            return
        self._layer.absorbed += 1
        if state is PROCEEDING:
            if self.response is None:
                _cancel(self._retransmit)
                self._retransmit = None
                self._sendTrying()
            else:
                self._transmit(self.response)
        # Trying, Accepted: absorbed.


class _Wire:
    """
    A message already serialised: C{toBytes} returns the bytes; other
    attributes are the message's (for flows that trace what they send).
    """

    __slots__ = ("data", "message")

    def __init__(self, data, message):
        self.data = data
        self.message = message

    def toBytes(self):
        return self.data

    def __getattr__(self, name):
        message = self.message
        if message is None:
            # Only the bytes were kept: parse them for whoever looks (a
            # flow tracing what it sends).
            from sipdist.sip.message import parseMessage
            message = parseMessage(self.data)
        return getattr(message, name)


class _ExpiryQueue:
    """
    Records that all wait the same time before something happens to them
    (timers G at one interval, H, I, J, K): a queue in expiry order and one
    timer, instead of a timer each.  C{action} names the record's method
    called when its time comes (a record that no longer needs it does
    nothing).  Records due within C{granularity} of the first of a group
    are handled together when the last of them is due (never early, at
    most C{granularity} late): the queue holds the records themselves,
    and a time and a count per group, so that a record costs no object of
    its own here (a busy UDP server holds 64*T1 seconds of them, and
    small objects made during a peak keep its memory: see the memory
    paragraph of docs/operations.rst).
    """

    granularity = 0.1

    def __init__(self, reactor, delay, action="_terminate"):
        self._reactor = reactor
        self.delay = delay
        self.action = action
        self._queue = deque()
        # [due of its last record, records, due of its first record].
        self._groups = deque()
        self._call = None

    def add(self, record):
        now = self._reactor.seconds()
        due = now + self.delay
        self._queue.append(record)
        groups = self._groups
        if groups:
            last = groups[-1]
            if due - last[2] < self.granularity:
                last[0] = due
                last[1] += 1
                return
        groups.append([due, 1, due])
        if self._call is None:
            # The head is due first (it may be older than this record when
            # a sweep adds records back).
            self._call = self._reactor.callLater(
                max(groups[0][0] - now, 0.0), self._sweep)

    def _sweep(self):
        self._call = None
        now = self._reactor.seconds()
        queue = self._queue
        groups = self._groups
        action = self.action
        while groups and groups[0][0] <= now:
            # One record at a time, the groups kept right before its
            # action: an action may add records, or prune the queue
            # (an INVITE record's termination prunes every INVITE queue).
            head = groups[0]
            head[1] -= 1
            if not head[1]:
                groups.popleft()
            getattr(queue.popleft(), action)()
        if groups and self._call is None:
            self._call = self._reactor.callLater(
                max(groups[0][0] - now, self.granularity), self._sweep)

    def prune(self):
        """
        Drop the records at the head of the queue that have terminated;
        stop the timer if none is left.
        """
        queue = self._queue
        groups = self._groups
        while queue and queue[0].state is TERMINATED:
            queue.popleft()
            head = groups[0]
            head[1] -= 1
            if not head[1]:
                groups.popleft()
        if not queue and self._call is not None:
            if self._call.active():
                self._call.cancel()
            self._call = None

    def clear(self):
        self._queue.clear()
        self._groups.clear()
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None


# One record of _CompletedRecords: when timer J ends it, the hash of its
# key; the lengths of the response, of the key's branch, sent-by host and
# method, and of the peer's host; the key's sent-by port, the peer's port,
# the number of the UDP port it came on.  Then those five byte strings.
_RECORD = struct.Struct("<dqIHHHHqHH")
# A record discarded before its time has this port number (written at
# _NUMBER_OFFSET), which no port is given (maxProtocols is lower).
_NUMBER = struct.Struct("<H")
_NUMBER_OFFSET = _RECORD.size - _NUMBER.size
_DISCARDED = 0xFFFF


def _keyBytes(key):
    """
    The branch, sent-by host and method of an RFC 3261 server transaction
    key as a record holds them (UTF-8), and its sent-by port.

    @raise TypeError, ValueError, AttributeError: C{key} is not of that
        shape (an RFC 2543 key).
    """
    branch, sentBy, sentByPort, method = key
    return branch.encode(), sentBy.encode(), sentByPort, method.encode()


def _size(fields):
    """
    The size of a record of L{_CompletedRecords} from its header's fields.
    """
    return _RECORD.size + sum(fields[2:7])


class _CompletedRecords:
    """
    The completed non-INVITE server transactions over UDP (the L{DatagramFlow}
    of a UDP port) waiting for timer J, kept out of the interpreter's small
    object allocator: each is one record in a buffer of 64 KiB chunks (its
    key, the peer's address, the response's bytes), found through an
    open-addressing index in two C{array}s.  A record costs no Python
    object: a busy server holds 64*T1 seconds of them, and small objects
    made during a peak, interleaved with the few that outlive it, would keep
    the memory of the peak (arenas of 1 MiB are given back only when
    empty).  Chunks are C library memory, freed once their last record has
    ended; the index is rebuilt at a size fitting what it holds.

    Records all wait the same C{delay} and leave in the order they came:
    one timer for the oldest, records due within C{granularity} of it
    handled together (never early, at most C{granularity} late).  A record
    has a position, growing with each record: the records before C{head}
    have ended.
    """

    chunkSize = 1 << 16
    granularity = 0.1
    # The UDP ports a record can name (one a listening port).
    maxProtocols = 256
    minSlots = 16

    def __init__(self, reactor, delay):
        self._reactor = reactor
        self.delay = delay
        self._chunks = deque()
        # Position of the first chunk; of the oldest record; of the next;
        # the last chunk and the position where it ends.
        self._base = self.head = self._tail = 0
        self._last = None
        self._end = 0
        self._count = 0
        self._protocols = []
        # The port of the last record and its number.
        self._protocol = None
        self._number = 0
        self._call = None
        self._newIndex(self.minSlots)

    def __len__(self):
        return self._count

    def _newIndex(self, size):
        # Per slot: the hash of a record's key; its position + 1 (0: a
        # free slot, -1: a removed record's).
        self._hashes = array("q", (0,)) * size
        self._positions = array("q", (0,)) * size
        self._mask = size - 1
        self._removed = 0

    def add(self, key, flow, data):
        """
        Keep the record of a transaction keyed C{key} that answered C{data}
        (bytes) on C{flow} (a L{DatagramFlow}) until timer J.

        @return: its position, or C{None} when it cannot be kept here (a
            key other than RFC 3261's branch, sent-by host and port and
            method, an address of another shape, a message larger than a
            chunk, too many ports): the caller keeps an object instead.
        """
        protocol = flow._protocol
        if protocol is not self._protocol and not self._choose(protocol):
            return None
        try:
            branch, sentBy, sentByPort, method = _keyBytes(key)
            host, port = flow.remote
            host = host.encode()
            h = hash(key)
            record = b"".join((
                _RECORD.pack(self._reactor.seconds() + self.delay, h,
                             len(data), len(branch), len(sentBy),
                             len(method), len(host), sentByPort, port,
                             self._number),
                branch, sentBy, method, data, host))
        except (TypeError, ValueError, AttributeError, struct.error):
            # Not a key of RFC 3261 (or not one of str, str, int, str).
            return None
        size = len(record)
        if size > self.chunkSize:
            return None
        if (self._count + self._removed + 1) * 2 > self._mask + 1:
            self._grow()
        position = self._tail
        if position + size > self._end:
            position = self._newChunk(position)
        offset = position - self._end + self.chunkSize
        self._last[offset:offset + size] = record
        self._tail = position + size
        positions = self._positions
        mask = self._mask
        i = h & mask
        while positions[i] > 0:
            i = (i + 1) & mask
        if positions[i]:
            self._removed -= 1
        self._hashes[i] = h
        positions[i] = position + 1
        self._count += 1
        if self._call is None:
            self._call = self._reactor.callLater(self.delay, self._sweep)
        return position

    def _choose(self, protocol):
        """
        Make C{protocol} the port of the next records.

        @return: C{False} if there are too many ports.
        """
        protocols = self._protocols
        for number, known in enumerate(protocols):
            if known is protocol:
                break
        else:
            if len(protocols) >= self.maxProtocols:
                return False
            number = len(protocols)
            protocols.append(protocol)
        self._protocol = protocol
        self._number = number
        return True

    def _newChunk(self, position):
        """
        Start a chunk for a record that does not fit in the last one (whose
        rest is left unused, marked by a negative time where a header
        fits).

        @return: the record's position.
        """
        chunkSize = self.chunkSize
        if self._chunks:
            offset = position - self._end + chunkSize
            if chunkSize - offset >= _RECORD.size:
                _RECORD.pack_into(self._last, offset, -1.0, 0, 0, 0, 0, 0,
                                  0, 0, 0, 0)
            position = self._end
        else:
            # Positions start a chunk here (see clear).
            self._base = self.head = position
        self._last = bytearray(chunkSize)
        self._chunks.append(self._last)
        self._end = position + chunkSize
        return position

    def _grow(self):
        """
        A new index, a quarter full, from the old one.
        """
        hashes, positions = self._hashes, self._positions
        self._newIndex(self._size(self._count + 1))
        newHashes, newPositions, mask = (self._hashes, self._positions,
                                         self._mask)
        for i, stored in enumerate(positions):
            if stored > 0:
                h = hashes[i]
                j = h & mask
                while newPositions[j]:
                    j = (j + 1) & mask
                newHashes[j] = h
                newPositions[j] = stored

    def _shrink(self):
        """
        A new index, a quarter full, from the records (fewer than the old
        index's slots).
        """
        self._newIndex(self._size(self._count))
        hashes, positions, mask = self._hashes, self._positions, self._mask
        for position, fields in self._records():
            h = fields[1]
            j = h & mask
            while positions[j]:
                j = (j + 1) & mask
            hashes[j] = h
            positions[j] = position + 1

    def _size(self, count):
        size = self.minSlots
        while size < 4 * count:
            size *= 2
        return size

    def _chunkAt(self, position):
        return self._chunks[(position - self._base) // self.chunkSize]

    def _next(self, position):
        """
        The position of the first record at or after C{position} (the
        tail if none).
        """
        chunkSize = self.chunkSize
        while position < self._tail:
            offset = position % chunkSize
            if (chunkSize - offset >= _RECORD.size
                    and _RECORD.unpack_from(self._chunkAt(position),
                                            offset)[0] >= 0):
                return position
            position += chunkSize - offset
        return self._tail

    def _records(self):
        """
        The position and header fields of each record, oldest first.
        """
        position = self._next(self.head)
        while position < self._tail:
            fields = _RECORD.unpack_from(self._chunkAt(position),
                                         position % self.chunkSize)
            if fields[9] != _DISCARDED:
                yield position, fields
            position = self._next(position + _size(fields))

    def find(self, key):
        """
        The position of the record keyed C{key}, or C{None}.
        """
        if not self._count:
            return None
        h = hash(key)
        positions = self._positions
        mask = self._mask
        i = h & mask
        stored = positions[i]
        if not stored:
            return None
        try:
            branch, sentBy, sentByPort, method = _keyBytes(key)
        except (TypeError, ValueError, AttributeError):
            # Not a key of this table's shape (RFC 2543).
            return None
        lengths = (len(branch), len(sentBy), len(method))
        prefix = branch + sentBy + method
        while stored:
            if stored > 0 and self._hashes[i] == h:
                position = stored - 1
                chunk = self._chunkAt(position)
                offset = position % self.chunkSize
                fields = _RECORD.unpack_from(chunk, offset)
                if (fields[3:6] == lengths and fields[7] == sentByPort
                        and chunk.startswith(prefix,
                                             offset + _RECORD.size)):
                    return position
            i = (i + 1) & mask
            stored = positions[i]
        return None

    def record(self, layer, position, key=None):
        """
        A L{_CompletedServerRecord} made from the record at C{position}
        (its key read back from the record unless given).
        """
        chunk = self._chunkAt(position)
        offset = position % self.chunkSize
        (_, _, dataLength, branchLength, sentByLength, methodLength,
         hostLength, sentByPort, port, number) = _RECORD.unpack_from(
            chunk, offset)
        start = offset + _RECORD.size
        if key is None:
            strings = []
            for length in (branchLength, sentByLength, methodLength):
                strings.append(chunk[start:start + length].decode())
                start += length
            key = (strings[0], strings[1], sentByPort, strings[2])
        else:
            start += branchLength + sentByLength + methodLength
        data = bytes(chunk[start:start + dataLength])
        start += dataLength
        host = chunk[start:start + hostLength].decode("utf-8")
        return _CompletedServerRecord.alone(
            layer, key, DatagramFlow(self._protocols[number], (host, port)),
            data)

    def _sweep(self):
        self._call = None
        now = self._reactor.seconds()
        due = self._endOldest(now, 0)
        if not self._count:
            self.clear()
            return
        self._shrinkIfSparse()
        self._call = self._reactor.callLater(
            max(due - now, self.granularity), self._sweep)

    def evict(self, count):
        """
        End the C{count} oldest records before their timer J: the table is
        full, and a new request is worth more than the chance of an old
        one's retransmission.  The timer then fires for the new oldest.
        """
        if count >= self._count:
            self.clear()
            return
        self._endOldest(float("-inf"), count)
        self._shrinkIfSparse()

    def _shrinkIfSparse(self):
        """
        A smaller index when this one is less than a sixteenth full.
        """
        size = self._mask + 1
        if self._count * 16 < size and size > self.minSlots:
            self._shrink()

    def _endOldest(self, now, count):
        """
        End the oldest records: at least C{count} of them, and any due by
        C{now}.

        @return: when the oldest record left is due (or the last one
            ended, if none is left).
        """
        chunkSize = self.chunkSize
        position = self.head
        due = None
        while self._count:
            position = self._next(position)
            fields = _RECORD.unpack_from(self._chunkAt(position),
                                         position % chunkSize)
            if fields[9] != _DISCARDED:
                due = fields[0]
                if count <= 0 and due > now:
                    break
                count -= 1
                self._unindex(fields[1], position)
                self._count -= 1
            position += _size(fields)
            self.head = position
            while position - self._base >= chunkSize:
                self._chunks.popleft()
                self._base += chunkSize
        return due

    def _unindex(self, h, position):
        """
        Take the record at C{position}, whose key hashes to C{h}, out of
        the index.
        """
        positions = self._positions
        mask = self._mask
        stored = position + 1
        i = h & mask
        while positions[i] != stored:
            i = (i + 1) & mask
        if positions[(i + 1) & mask]:
            positions[i] = -1
            self._removed += 1
        else:
            positions[i] = 0

    def discard(self, position):
        """
        End the record at C{position} before its time (its response could
        not be sent): it is found no more, and the records before it pass
        over it when they end.  A record that has ended already is left.
        """
        if not self.head <= position < self._tail:
            return
        chunk = self._chunkAt(position)
        offset = position % self.chunkSize
        fields = _RECORD.unpack_from(chunk, offset)
        if fields[9] == _DISCARDED:
            return
        self._unindex(fields[1], position)
        _NUMBER.pack_into(chunk, offset + _NUMBER_OFFSET, _DISCARDED)
        self._count -= 1
        if not self._count:
            # Nothing left to wait for: no timer, no chunk.
            self.clear()

    def clear(self):
        """
        End every record: free the chunks, start a small index.
        """
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
        self._chunks.clear()
        self._last = None
        chunkSize = self.chunkSize
        # Positions keep growing: from the next chunk on.
        self._base = self.head = self._tail = self._end = (
            -(-self._tail // chunkSize) * chunkSize)
        self._count = 0
        self._newIndex(self.minSlots)


class _CompletedServerRecord:
    """
    What is left of a non-INVITE server transaction over an unreliable flow
    once its final response is sent (Completed state, timer J): the bytes to
    send again for each retransmitted request.  A handful of objects instead
    of the request and response with all their headers, which matters to
    memory and to the garbage collector when a busy server holds 64*T1
    seconds of them.
    """

    __slots__ = ("key", "flow", "data", "_layer", "_transaction")
    state = COMPLETED
    isInvite = False
    cancelled = False

    def __init__(self, layer, transaction, data):
        self._layer = layer
        self.key = transaction.key
        self.flow = transaction.flow
        self.data = data
        # Whoever still holds the transaction sees it end with timer J.
        self._transaction = weakref.ref(transaction)

    @classmethod
    def alone(cls, layer, key, flow, data):
        """
        The record of a transaction keyed C{key} that nobody holds (made
        by a fast path, or read back from L{_CompletedRecords}): it sent
        C{data} over C{flow}.
        """
        record = cls.__new__(cls)
        record._layer = layer
        record.key = key
        record.flow = flow
        record.data = data
        record._transaction = _gone
        return record

    def __repr__(self):
        return f"<ServerTransaction (completed) {self.key[0]}>"

    def _matched(self, request, flow):
        self._layer.absorbed += 1
        try:
            self.flow.send(_Wire(self.data, None))
        except Exception:
            self._layer._log.failure("resending to {remote} failed",
                                     remote=self.flow.remote)

    def _terminate(self):
        transaction = self._transaction()
        if transaction is not None:
            transaction.state = TERMINATED
        self._layer._removeServer(self)


def _gone():
    """
    The weak reference of a record to a transaction that is gone or never
    existed (a byte-level fast path's).
    """
    return None


class _ServerTable(Mapping):
    """
    A read-only view of a L{TransactionLayer}'s server transactions and
    records by key (see L{TransactionLayer._servers}).
    """

    def __init__(self, layer):
        self._layer = layer

    def __getitem__(self, key):
        layer = self._layer
        try:
            return layer._serverTable[key]
        except KeyError:
            position = layer._completedJ.find(key)
            if position is None:
                raise
            return layer._completedJ.record(layer, position, key)

    def __iter__(self):
        layer = self._layer
        yield from list(layer._serverTable)
        completed = layer._completedJ
        for position, _ in list(completed._records()):
            yield completed.record(layer, position).key

    def __len__(self):
        layer = self._layer
        return len(layer._serverTable) + layer._completedJ._count


class _CompletedInviteRecord:
    """
    What is left of an INVITE server transaction once its non-2xx final
    response is sent (Completed state): the response's bytes, sent again
    at each timer G over an unreliable flow and for each retransmitted
    INVITE, until the ACK (Confirmed, then timer I) or timer H.  Its
    timers are the layer's shared queues, not a timer each.

    @ivar code: the status code of the response.
    """

    __slots__ = ("key", "flow", "data", "code", "state", "_layer",
                 "_reliable", "_interval", "_transaction")
    isInvite = True
    cancelled = False
    request = None

    def __init__(self, layer, transaction, data, code):
        self._layer = layer
        self.key = transaction.key
        self.flow = transaction.flow
        self.data = data
        self.code = code
        self.state = COMPLETED
        self._reliable = transaction._reliable
        self._interval = layer.T1
        # Whoever still holds the transaction sees its state change.
        self._transaction = weakref.ref(transaction)

    def __repr__(self):
        return f"<ServerTransaction INVITE {self.state} {self.key[0]}>"

    @property
    def transaction(self):
        """
        The L{ServerTransaction} this record replaced, while something
        holds it; else this record.
        """
        return self._transaction() or self

    def _setState(self, state):
        self.state = state
        transaction = self._transaction()
        if transaction is not None:
            transaction.state = state

    def _resend(self):
        layer = self._layer
        if _send(layer, self.flow, _Wire(self.data, None)):
            return True
        self._terminate()
        layer._transactionFailed(
            self.transaction,
            TransportError(f"cannot send to {self.flow.remote}"))
        return False

    def _matched(self, request, flow):
        if request.method == "ACK":
            if self.state is COMPLETED:
                self._setState(CONFIRMED)
                if self._reliable:
                    self._terminate()
                else:
                    self._layer._timerI.add(self)
            return
        self._layer.absorbed += 1
        if self.state is COMPLETED:
            self._resend()

    def _timerG(self):
        if self.state is not COMPLETED:
            return
        if self._resend():
            layer = self._layer
            self._interval = interval = min(self._interval * 2, layer.T2)
            layer._timerGQueue(interval).add(self)

    def _timerH(self):
        if self.state is not COMPLETED:
            return
        layer = self._layer
        if layer.timeoutLog.allow() is not None:
            layer._log.info("no ACK for {code} to INVITE from {remote}",
                            code=self.code, remote=self.flow.remote)
        layer.timeouts += 1
        self._terminate()
        layer._transactionFailed(self.transaction,
                                 TransactionTimeout("no ACK (timer H)"))

    def _terminate(self):
        if self.state is TERMINATED:
            return
        self._setState(TERMINATED)
        layer = self._layer
        layer._removeServer(self)
        layer._pruneInviteTimers()


class _CompletedClientRecord:
    """
    What is left of a non-INVITE client transaction over an unreliable flow
    once its final response arrived (Completed state, timer K): nothing but
    its key, to absorb retransmissions of that response.
    """

    __slots__ = ("key", "_layer", "_transaction")
    state = COMPLETED

    def __init__(self, layer, transaction):
        self._layer = layer
        self.key = transaction.key
        self._transaction = weakref.ref(transaction)

    def __repr__(self):
        return f"<ClientTransaction (completed) {self.key[0]}>"

    def _sentBy(self, via):
        return True  # absorbed either way

    def _responseReceived(self, response, flow):
        pass  # a retransmitted final response: absorbed

    def _terminate(self):
        transaction = self._transaction()
        if transaction is not None:
            transaction.state = TERMINATED
        self._layer._removeClient(self)


class ClientTransaction:
    """
    A client transaction, created by L{TransactionLayer.sendRequest}.

    @ivar request: the request it sends.
    @ivar flow: the flow it sends on (the ACK and CANCEL go there too).
    @ivar state: C{Calling}, C{Trying}, C{Proceeding}, C{Completed},
        C{Accepted} or C{Terminated}.
    @ivar deferred: fires once, with the first final response, or fails
        with L{TransactionTimeout}, L{TransportError},
        L{TransactionLayerFull} or L{TransactionLayerStopped}.
    @ivar onProvisional: C{None}, or a callable given each 1xx response
        received before the final one.
    @ivar onFurther2xx: C{None}, or a callable given each further 2xx to
        an INVITE received in the Accepted state (a retransmission, or
        another fork's); without it they go to the user's
        C{responseReceived}.
    """

    __slots__ = ("request", "flow", "state", "deferred", "onProvisional",
                 "onFurther2xx", "key", "_layer", "_invite", "_reliable", "_retransmit",
                 "_timeout", "_interval", "_cancelWanted", "_cancelSent",
                 "_ack", "_lastLook", "__weakref__")

    _log = Logger()

    def __init__(self, layer, key, request, flow):
        self._layer = layer
        self.key = key
        self.request = request
        self.flow = flow
        self._invite = invite = request.method == "INVITE"
        self.state = CALLING if invite else TRYING
        self._reliable = flow.reliable
        self.deferred = Deferred()
        self.onProvisional = None
        self.onFurther2xx = None
        self._retransmit = None
        self._timeout = None
        self._interval = 0.0
        self._cancelWanted = False
        self._cancelSent = False
        self._ack = None
        # Whether timer B or F has fired and the reactor is given one more
        # turn to read a response that has already arrived.
        self._lastLook = False

    def __repr__(self):
        return (f"<ClientTransaction {self.request.method} {self.state} "
                f"{self.key[0]}>")

    def _sentBy(self, via):
        """
        Whether a response's top Via names the sent-by of our request.
        """
        try:
            ours = self.request.topVia()
        except ValueError:
            return False
        return (via.host.lower() == ours.host.lower()
                and via.sentByPort == ours.sentByPort)

    def cancel(self):
        """
        Cancel this INVITE (section 9.1): send a CANCEL once a provisional
        response has come (at once if one has), nothing if a final one has.
        If no final response follows the CANCEL within 64*T1, the
        transaction fails with L{TransactionTimeout}.  No effect on a
        non-INVITE transaction.
        """
        if not self._invite or self._cancelWanted:
            return
        self._cancelWanted = True
        if self.state is PROCEEDING:
            self._sendCancel()

    def _sendCancel(self):
        self._cancelSent = True
        layer = self._layer
        request = self.request
        cancel = _derivedRequest(request, "CANCEL", request.headers["to"][0])
        try:
            transaction = layer.sendRequest(cancel, self.flow)
        except ValueError:
            self._log.failure("cannot send CANCEL")
        else:
            transaction.deferred.addErrback(lambda f: None)
        _cancel(self._timeout)
        self._timeout = layer._reactor.callLater(layer._64T1,
                                                 self._timerCancelled)

    def _start(self):
        if not self._transmit(self.request):
            return
        layer = self._layer
        callLater = layer._reactor.callLater
        if self._invite:
            if not self._reliable:
                self._interval = layer.T1
                self._retransmit = callLater(layer.T1, self._timerA)
        else:
            if not self._reliable:
                self._interval = layer.T1
                self._retransmit = callLater(layer.T1, self._timerE)
        self._timeout = callLater(layer._64T1, self._timerBF)

    def _send(self, message):
        return _send(self._layer, self.flow, message)

    def _transmit(self, message):
        if self._send(message):
            return True
        self._fail(TransportError(f"cannot send to {self.flow.remote}"))
        return False

    def _fail(self, reason):
        self._terminate()
        self.deferred.errback(reason)

    def _terminate(self):
        if self.state is TERMINATED:
            return
        self.state = TERMINATED
        _cancel(self._retransmit)
        _cancel(self._timeout)
        self._retransmit = self._timeout = None
        self._layer._removeClient(self)

    def _timerA(self):
        self._retransmit = None
        if self._transmit(self.request):
            self._interval = interval = self._interval * 2
            self._retransmit = self._layer._reactor.callLater(
                interval, self._timerA)

    def _timerE(self):
        self._retransmit = None
        if self._transmit(self.request):
            layer = self._layer
            if self.state is TRYING:
                interval = min(self._interval * 2, layer.T2)
            else:
                interval = layer.T2
            self._interval = interval
            self._retransmit = layer._reactor.callLater(interval,
                                                        self._timerE)

    def _timerBF(self):
        """
        Timer B or F: the transaction times out, after one more turn of
        the reactor.  The reactor runs its timers before it reads what
        has arrived, so a process busy past the deadline would otherwise
        fail a transaction whose response waits to be read.
        """
        if not self._lastLook:
            self._lastLook = True
            self._timeout = self._layer._reactor.callLater(0, self._timerBF)
            return
        self._timeout = None
        self._layer.timeouts += 1
        self._fail(TransactionTimeout(
            f"no response to {self.request.method} (timer "
            f"{'B' if self._invite else 'F'})"))

    def _timerC(self):
        self._timeout = None
        if self._layer.timeoutLog.allow() is not None:
            self._log.info("no final response to INVITE: timer C, "
                           "cancelling")
        self._cancelWanted = False
        self.cancel()

    def _timerCancelled(self):
        self._timeout = None
        self._layer.timeouts += 1
        self._fail(TransactionTimeout("no final response after CANCEL"))

    def _responseReceived(self, response, flow):
        code = response.code
        state = self.state
        layer = self._layer
        if not self._invite:
            if state is not TRYING and state is not PROCEEDING:
                return  # Completed: retransmitted final absorbed.
            if code < 200:
                self.state = PROCEEDING
                self._provisional(response)
                return
            _cancel(self._retransmit)
            _cancel(self._timeout)
            self._retransmit = self._timeout = None
            self.state = COMPLETED
            if self._reliable:
                self._terminate()
            else:
                # Timer K: only retransmissions of the final response are
                # left to absorb; the table keeps a small record instead of
                # this transaction and its messages.
                layer._clientCompleted(self)
            self.deferred.callback(response)
            return
        if code < 200:
            if state is CALLING:
                self.state = PROCEEDING
                _cancel(self._retransmit)
                _cancel(self._timeout)
                self._retransmit = self._timeout = None
                if self._cancelWanted:
                    self._sendCancel()
                else:
                    self._timeout = layer._reactor.callLater(
                        layer.timerC, self._timerC)
            elif state is PROCEEDING:
                if not self._cancelSent:
                    _cancel(self._timeout)
                    self._timeout = layer._reactor.callLater(
                        layer.timerC, self._timerC)
            else:
                return
            self._provisional(response)
        elif code < 300:
            if state is CALLING or state is PROCEEDING:
                _cancel(self._retransmit)
                _cancel(self._timeout)
                self._retransmit = None
                self.state = ACCEPTED
                self._timeout = layer._reactor.callLater(
                    layer._64T1, self._terminate)  # timer M
                self.deferred.callback(response)
            else:
                # Accepted: a retransmitted or forked 2xx (RFC 6026); or a
                # 2xx from another fork after a non-2xx.
                hook = self.onFurther2xx
                if hook is not None:
                    layer._deliver(hook, response)
                else:
                    layer._deliver(layer.user.responseReceived, response,
                                   flow)
        else:
            if state is CALLING or state is PROCEEDING:
                _cancel(self._retransmit)
                _cancel(self._timeout)
                self._retransmit = self._timeout = None
                self.state = COMPLETED
                self._ack = _derivedRequest(
                    self.request, "ACK",
                    response.header("to") or self.request.header("to"))
                if self._send(self._ack) and not self._reliable:
                    self._timeout = layer._reactor.callLater(
                        layer.timerD, self._terminate)  # timer D
                else:
                    self._terminate()
                self.deferred.callback(response)
            elif state is COMPLETED:
                self._send(self._ack)

    def _provisional(self, response):
        hook = self.onProvisional
        if hook is not None:
            try:
                hook(response)
            except Exception:
                self._log.failure("onProvisional failed for {response!r}",
                                  response=response)


class TransactionLayer:
    """
    The transaction layer: matches messages to transactions, creates server
    transactions for new requests, and passes what belongs to no
    transaction to the user.

    @param reactor: an L{IReactorTime}.
    @param user: an L{ITransactionUser}.
    @param T1: RTT estimate (s).
    @param T2: maximum retransmission interval for non-INVITE requests and
        INVITE responses (s).
    @param T4: maximum time a message stays in the network (s).
    @param maxTransactions: bound of the table (client and server); a new
        request beyond it is answered C{503} statelessly.
    @param retryAfter: the C{Retry-After} of that C{503} (s).
    @param timerC: how long an INVITE client transaction waits for a final
        response after its last provisional one before it cancels (s).
    @param inviteTimeout: how long an INVITE server transaction waits for a
        final response from the user after its last provisional one before
        it answers C{408} itself (s).

    Counters (cumulative, for metrics): C{serverCreated}, C{clientCreated},
    C{rejected} (503 when full), C{evicted} (records of completed
    transactions ended before timer J to make room, see L{room}),
    C{absorbed} (retransmissions), C{timeouts},
    C{transportErrors}, C{strayResponses} (responses matching no client
    transaction: branch, CSeq method and sent-by); C{active} is the size of
    the table.
    """

    _log = Logger()

    #: An L{sipdist.sip.overload.OverloadControl} saying which new requests
    #: to shed (answered 503 statelessly), or C{None}.
    overload = None

    def __init__(self, reactor, user, T1=0.5, T2=4.0, T4=5.0,
                 maxTransactions=100000, retryAfter=10, timerC=180.0,
                 inviteTimeout=200.0):
        self._reactor = reactor
        self.user = user
        self.T1 = T1
        self.T2 = T2
        self.T4 = T4
        self._64T1 = 64 * T1
        self.timerD = max(32.0, 64 * T1)
        self.timerC = timerC
        self.inviteTimeout = inviteTimeout
        self.maxTransactions = maxTransactions
        self.retryAfter = retryAfter
        # Server transactions and the records of completed INVITE ones
        # (and of non-INVITE ones _completedJ cannot keep), by key.
        self._serverTable = {}
        self._clients = {}
        # The records of completed non-INVITE server transactions over UDP
        # (timer J).
        self._completedJ = _CompletedRecords(reactor, self._64T1)
        # The transactions and records at their peak, for compact().
        self._peak = 0
        # Timers J (records _completedJ cannot keep) and K of completed
        # non-INVITE transactions.
        self._timerJ = _ExpiryQueue(reactor, self._64T1)
        self._timerK = _ExpiryQueue(reactor, T4)
        # Timers of INVITE server transactions that sent a non-2xx final
        # response: G (one queue per interval: T1, 2*T1 ... T2), H, I.
        self._timerG = {}
        self._timerH = _ExpiryQueue(reactor, self._64T1, "_timerH")
        self._timerI = _ExpiryQueue(reactor, T4)
        self.serverCreated = 0
        self.clientCreated = 0
        # (method, final code) -> final responses sent by server
        # transactions; bounded: methods outside _COUNTED_METHODS are
        # "other", and codes are 200-699.
        self.answered = {}
        self.rejected = 0
        self.evicted = 0
        self.absorbed = 0
        self.timeouts = 0
        self.transportErrors = 0
        self.strayResponses = 0
        self._rateSecond = 0
        self._rateCount = 0
        self._lastRate = 0
        # Overload multiplies these lines: at most 20 per 10 s, then a
        # summary.  (The 503 of a full table has its own limit.)
        self.timeoutLog = LogLimiter(reactor, log=self._log,
                                     what="transactions timed out")
        # A flood fills the table: one line per 10 s, not one per request.
        self.rejectLog = LogLimiter(reactor, burst=1, period=10.0,
                                    log=self._log, what="503s to new requests")

    @property
    def active(self):
        """
        How many transactions are in the table.
        """
        return (len(self._serverTable) + len(self._clients)
                + self._completedJ._count)

    @property
    def _servers(self):
        """
        The server transactions and records by key, as a read-only mapping
        (for inspection: a record of L{_completedJ} is made into an object
        when looked at).
        """
        return _ServerTable(self)

    @compiledApart
    def room(self):
        """
        Whether one more transaction fits in the table.  When it is full
        of the records of completed non-INVITE transactions over UDP
        (kept for timer J: 32 s of them at the default T1), the oldest are
        ended early to make room (C{evicted}), a 64th of the table at a
        time: a server busier than C{maxTransactions} requests per 64*T1
        keeps its records for less than timer J rather than answer new
        requests C{503}.  Transactions in progress are never ended so.
        """
        completed = self._completedJ
        over = (len(self._serverTable) + len(self._clients)
                + completed._count + 1 - self.maxTransactions)
        if over <= 0:
            return True
        if completed._count < over:
            return False
        count = min(completed._count,
                    over - 1 + max(self.maxTransactions // 64, 1))
        completed.evict(count)
        self.evicted += count
        return True

    def serving(self, key):
        """
        Whether a server transaction (or what is left of it) has C{key}.
        """
        return (key in self._serverTable
                or self._completedJ.find(key) is not None)

    def inProgress(self):
        """
        How many transactions have not sent (server) or received (client)
        their final response: the table less the completed records waiting
        for retransmissions.  Cheap: a few lengths.
        """
        records = (len(self._timerJ._queue) + len(self._timerK._queue)
                   + self._completedJ._count)
        for queue in (self._timerH, self._timerI):
            records += len(queue._queue)
        return max(self.active - records, 0)

    def createdPerSecond(self):
        """
        Transactions created during the last complete second.
        """
        now = int(self._reactor.seconds())
        if now == self._rateSecond:
            return self._lastRate
        if now == self._rateSecond + 1:
            return self._rateCount
        return 0

    def _created(self):
        now = int(self._reactor.seconds())
        if now != self._rateSecond:
            self._lastRate = (self._rateCount
                              if now == self._rateSecond + 1 else 0)
            self._rateSecond = now
            self._rateCount = 0
        self._rateCount += 1

    def stats(self):
        """
        @return: the counters, as a L{dict} for the metrics endpoint.
        """
        return {
            "active": self.active,
            "server_transactions": (len(self._serverTable)
                                    + self._completedJ._count),
            "client_transactions": len(self._clients),
            "created_per_second": self.createdPerSecond(),
            "server_created": self.serverCreated,
            "client_created": self.clientCreated,
            "rejected": self.rejected,
            "evicted": self.evicted,
            "absorbed": self.absorbed,
            "timeouts": self.timeouts,
            "transport_errors": self.transportErrors,
            "stray_responses": self.strayResponses,
            "overload": (None if self.overload is None
                         else self.overload.stats()),
        }

    def _serverKey(self, request, via):
        method = request.method
        if method == "ACK":
            method = "INVITE"
        branch = via.branch
        if branch is not None and branch.startswith(MAGIC_COOKIE):
            return (branch, via.host, via.sentByPort, method)
        # RFC 2543 peer (section 17.2.3): the request's identity.
        fromValue = request.header("from") or ""
        tag = fromValue.rpartition(";tag=")[2] if ";tag=" in fromValue else ""
        return ("", request.uriText, tag, request.header("call-id"),
                request.cseq()[0], via.host, via.sentByPort, branch, method)

    def findServerTransaction(self, cancel):
        """
        The INVITE server transaction a CANCEL matches (section 9.2), or
        C{None}.
        """
        try:
            key = self._serverKey(cancel, cancel.topVia())
        except Exception:
            return None
        return self._serverTable.get(key[:-1] + ("INVITE",))

    def messageReceived(self, message, flow):
        """
        Called by the transport with every parsed, validated message.
        """
        if isinstance(message, _sipRequest):
            self._requestReceived(message, flow)
        else:
            self._responseReceived(message, flow)

    def _requestReceived(self, request, flow):
        try:
            via = request.topVia()
            key = self._serverKey(request, via)
        except Exception:
            self._log.warn("dropped {request!r} from {remote}: bad Via or "
                           "CSeq", request=request, remote=flow.remote)
            return
        servers = self._serverTable
        transaction = servers.get(key)
        if transaction is not None:
            transaction._matched(request, flow)
            return
        completed = self._completedJ
        if completed._count:
            position = completed.find(key)
            if position is not None:
                completed.record(self, position, key)._matched(request, flow)
                return
        method = request.method
        if method == "ACK":
            self._deliver(self.user.ackReceived, request, flow)
            return
        overload = self.overload
        if overload is not None and overload.shouldShed(request):
            overload.shed += 1
            self._reject(request, flow, overload.nextRetryAfter(),
                         "overloaded", OVERLOADED)
            return
        if not self.room():
            self.rejected += 1
            self._reject(request, flow, self.retryAfter,
                         f"transaction table full ({self.maxTransactions})",
                         TABLE_FULL)
            return
        transaction = ServerTransaction(self, key, request, flow)
        servers[key] = transaction
        self.serverCreated += 1
        self._created()
        if method == "CANCEL":
            cancelled = servers.get(key[:-1] + ("INVITE",))
            if isinstance(cancelled, _CompletedInviteRecord):
                cancelled = cancelled._transaction()
                if cancelled is None:
                    # Answered already, and only its response's bytes are
                    # left: the CANCEL has no effect (section 9.2).
                    transaction.respond(responseTo(request, 200))
                    return
            if cancelled is not None and cancelled.state is PROCEEDING:
                cancelled.cancelled = True
            ok = self._deliver(self.user.cancelReceived, request,
                               transaction, cancelled)
        else:
            ok = self._deliver(self.user.requestReceived, request,
                               transaction)
        if not ok:
            state = transaction.state
            if state is TRYING or state is PROCEEDING:
                transaction.respond(responseTo(request, 500))
            return
        transaction._delivered()

    def _reject(self, request, flow, retryAfter, why, phrase):
        """
        Answer C{request} with a stateless C{503}: C{phrase},
        C{Retry-After}, and the user's C{Server} header when it has one;
        log C{why} (within C{rejectLog}'s limit).
        """
        self.rejected503(why, request.method, flow.remote)
        response = responseTo(request, 503, phrase)
        headers = response.headers
        headers["retry-after"] = [str(retryAfter)]
        server = getattr(self.user, "serverHeader", None)
        if server is not None:
            headers["server"] = [server]
        try:
            flow.send(response)
        except Exception:
            self._log.failure("sending 503 to {remote} failed",
                              remote=flow.remote)

    def rejected503(self, why, method, remote):
        """
        Log a stateless C{503} to a C{method} request from C{remote}, within
        C{rejectLog}'s limit (for the overload control's byte-level 503 as
        well).
        """
        if self.rejectLog.allow() is not None:
            self._log.warn("{why}: 503 to {method} from {remote}",
                           why=why, method=method, remote=remote)

    def compact(self):
        """
        Say when a load is over: the transactions and the records of
        completed ones down to an eighth of their peak since the last time
        it said so.  Then the transaction tables are rebuilt (a Python dict
        keeps the size of its peak); the records of completed non-INVITE
        transactions over UDP have given their memory back to the C
        library already.

        @return: whether a load is over (the time to ask the C library to
            return its free memory).
        """
        size = (len(self._serverTable) + len(self._clients)
                + self._completedJ._count)
        if size * 8 < self._peak:
            self._serverTable = dict(self._serverTable)
            self._clients = dict(self._clients)
            self._peak = size
            return True
        if size > self._peak:
            self._peak = size
        return False

    def _responseReceived(self, response, flow):
        try:
            via = response.topVia()
            key = (via.branch, response.cseq()[1])
        except Exception:
            self._log.warn("dropped {response!r} from {remote}: bad Via or "
                           "CSeq", response=response, remote=flow.remote)
            return
        transaction = self._clients.get(key)
        if transaction is not None and not transaction._sentBy(via):
            # Our branch and method, but not the sent-by we wrote: not a
            # response to our request (section 17.1.3 matches on branch and
            # method; the sent-by is checked as well so that a response
            # made up from a branch seen elsewhere matches nothing).
            transaction = None
        if transaction is None:
            self.strayResponses += 1
            self._deliver(self.user.responseReceived, response, flow)
        else:
            transaction._responseReceived(response, flow)

    def sendRequest(self, request, flow):
        """
        Start a client transaction: send C{request} on C{flow} and run
        the timers.  The request carries its top Via with a fresh RFC 3261
        branch already.

        @return: the L{ClientTransaction}; when the table is full its
            C{deferred} has failed with L{TransactionLayerFull}, when
            sending failed with L{TransportError}.
        @raise ValueError: for an ACK (an ACK for a 2xx is sent by the user
            directly on a flow), a request without a branch, or a branch
            already in use.
        """
        method = request.method
        if method == "ACK":
            raise ValueError("an ACK is not sent in a client transaction")
        via = request.topVia()
        if via is None or not via.branch:
            raise ValueError("the request has no Via branch")
        key = (via.branch, method)
        clients = self._clients
        if key in clients:
            raise ValueError(f"branch {via.branch} already in use")
        transaction = ClientTransaction(self, key, request, flow)
        if not self.room():
            self.rejected += 1
            transaction.state = TERMINATED
            transaction.deferred.errback(
                TransactionLayerFull("transaction table full"))
            return transaction
        clients[key] = transaction
        self.clientCreated += 1
        self._created()
        transaction._start()
        return transaction

    def stop(self):
        """
        Terminate every transaction and cancel its timers (the service is
        stopping); pending client transactions fail with
        L{TransactionLayerStopped}.
        """
        for transaction in list(self._serverTable.values()):
            transaction._terminate()
        self._timerJ.clear()
        self._completedJ.clear()
        self._timerK.clear()
        for queue in self._inviteQueues():
            queue.clear()
        for transaction in list(self._clients.values()):
            if isinstance(transaction, _CompletedClientRecord) \
                    or transaction.deferred.called:
                transaction._terminate()
            else:
                transaction._fail(TransactionLayerStopped("stopped"))

    def _completed(self, transaction, data):
        """
        Replace a non-INVITE server transaction that sent its final
        response over an unreliable flow by a record until timer J fires.

        @return: what L{discardCompleted} takes to end the record early.
        """
        flow = transaction.flow
        if type(flow) is DatagramFlow:
            position = self._completedJ.add(transaction.key, flow, data)
            if position is not None:
                transaction._position = position
                self._removeServer(transaction)
                return position
        record = _CompletedServerRecord(self, transaction, data)
        self._serverTable[record.key] = record
        self._timerJ.add(record)
        return record

    def keepCompleted(self, key, flow, data):
        """
        Keep the record of a non-INVITE server transaction keyed C{key}
        that sent its final response C{data} (bytes) over C{flow} (a
        L{DatagramFlow}) until timer J, as if it had been created and
        answered here (for a byte-level fast path).

        @return: what L{discardCompleted} takes to end the record early.
        """
        position = self._completedJ.add(key, flow, data)
        if position is not None:
            return position
        record = _CompletedServerRecord.alone(self, key, flow, data)
        self._serverTable[key] = record
        self._timerJ.add(record)
        return record

    def discardCompleted(self, kept):
        """
        End a record kept by L{keepCompleted} before timer J: its response
        could not be sent after all, and a retransmission of the request
        is a new transaction, as when a transaction cannot send its final
        response.

        @param kept: what L{keepCompleted} returned.
        """
        if isinstance(kept, int):
            self._completedJ.discard(kept)
        else:
            # Timer J still ends it: nothing then, as it is gone.
            kept._terminate()

    def _inviteCompleted(self, transaction, data, retransmit=True):
        """
        Replace an INVITE server transaction that sent a non-2xx final
        response by a record until the ACK or timer H.

        @param retransmit: whether timer G retransmits the response over an
            unreliable flow.
        """
        record = _CompletedInviteRecord(self, transaction, data,
                                        transaction.response.code)
        self._serverTable[record.key] = record
        if retransmit and not record._reliable:
            self._timerGQueue(self.T1).add(record)
        self._timerH.add(record)

    def _timerGQueue(self, interval):
        queue = self._timerG.get(interval)
        if queue is None:
            queue = self._timerG[interval] = _ExpiryQueue(
                self._reactor, interval, "_timerG")
        return queue

    def _inviteQueues(self):
        return list(self._timerG.values()) + [self._timerH, self._timerI]

    def _pruneInviteTimers(self):
        for queue in self._inviteQueues():
            queue.prune()

    def _clientCompleted(self, transaction):
        """
        Replace a non-INVITE client transaction that got its final response
        over an unreliable flow by a record until timer K fires.
        """
        record = _CompletedClientRecord(self, transaction)
        self._clients[record.key] = record
        self._timerK.add(record)

    def _removeServer(self, transaction):
        if self._serverTable.get(transaction.key) is transaction:
            del self._serverTable[transaction.key]

    def _removeClient(self, transaction):
        if self._clients.get(transaction.key) is transaction:
            del self._clients[transaction.key]

    def _deliver(self, method, *args):
        try:
            method(*args)
        except Exception:
            self._log.failure("transaction user failed in {method}",
                              method=method.__name__)
            return False
        return True

    def _transactionFailed(self, transaction, reason):
        self._deliver(self.user.transactionFailed, transaction, reason)
