# -*- test-case-name: tests.test_overload -*-
"""
Overload control: shed new work early and cheaply, answered, instead of
losing it silently.

An L{OverloadControl} measures the load of one process with a timer on
the injected reactor every C{interval} seconds:

  - the event-loop lag: how late that timer fires.  A process busy with
    more requests than it can handle runs long reactor turns (a UDP port
    reads up to C{maxThroughput} bytes of datagrams per turn) and its
    timers fire late;
  - the bytes waiting in the UDP ports' receive buffers (Linux): a
    process too busy for its datagrams leaves them queued there, where
    the event loop cannot see them, until the kernel drops them;
  - the transactions in progress (the table less the completed records
    that wait for retransmissions: a UDP server keeps those 32 s, so the
    table grows with the rate of requests, not with the work pending).

Above any threshold (C{maxLag}, C{maxBacklog}, C{maxTransactions}) in
C{samples} measurements in a row, it sheds a fraction of the new requests
that grows by C{rise} with each measurement above a threshold and falls
back to 0 within C{hold} seconds once they are below: a control loop that
admits what the process can handle.  A request shed (a new one outside a
dialog: no To tag) gets a stateless C{503} with C{Retry-After}: over UDP
from L{OverloadControl.shedDatagram} before it is parsed, otherwise from
the transaction layer before it creates a transaction; the transaction
user never sees it.  It never sheds an C{ACK} or a C{CANCEL}, a request
matching a transaction in progress (a retransmission), a request inside a
dialog, nor an C{OPTIONS}: the pool's monitor keeps seeing the server
alive.  A request with credentials (the second step of a login whose
challenge was paid for already) is shed only when the fraction is 1.
Work already in progress thus finishes first.

When the load is over it gives the memory of the peak back: the
transaction tables are rebuilt (a Python dict never shrinks) and the C
allocator is asked to return its free pages (C{malloc_trim}, where the C
library has it).
"""

import ctypes
import ctypes.util

from twisted.application.service import Service
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from sipdist.sip.message import MAGIC_COOKIE, newTag, parseVia

#: Requests never shed: the monitor's health check, and requests that end
#: or acknowledge work already admitted.
NEVER_SHED = frozenset(("OPTIONS", "ACK", "CANCEL"))
_NEVER_SHED_BYTES = frozenset(m.encode("ascii") for m in NEVER_SHED)
# The headers a response copies, by their full and compact names.
_COPIED = frozenset((b"from", b"to", b"call-id", b"cseq"))
_CREDENTIALS = frozenset((b"authorization", b"proxy-authorization"))
_COMPACT = {b"v": b"via", b"f": b"from", b"t": b"to", b"i": b"call-id"}


def _mallocTrim():
    """
    glibc's C{malloc_trim(0)}, or C{None} where there is none.
    """
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None)
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return lambda: trim(0)


class OverloadControl(Service):
    """
    Decides when the transaction layer sheds new requests (see the module
    docstring).  A service: its timer runs while it runs.

    @param reactor: an L{IReactorTime}.
    @param layer: the L{sipdist.sip.transaction.TransactionLayer} it
        measures and compacts; it sets itself as the layer's C{overload}.
    @param maxLag: event-loop lag (s) above which it sheds.
    @param maxTransactions: transactions in progress above which it sheds
        (C{None}: they are not a criterion).
    @param transport: the L{sipdist.sip.transport.TransportLayer} whose UDP
        backlog it measures (C{receiveQueued}), or C{None}.
    @param maxBacklog: bytes queued in the UDP receive buffers above which
        it sheds (keep it well below the buffers' size).
    @param interval: seconds between measurements.
    @param samples: how many measurements in a row above a threshold it
        takes to shed (one slow reactor turn is not an overload).
    @param rise: how much the fraction of new requests shed grows with
        each measurement above a threshold once shedding (up to 1).
    @param hold: seconds it takes the fraction to fall from 1 to 0 while
        the measurements stay below the thresholds.
    @param retryAfter: the C{Retry-After} of the C{503} (s).
    @param trim: called to give free memory back to the system once the
        tables were compacted (the C library's C{malloc_trim} by default;
        C{None}: nothing).

    @ivar lag: the last lag measured (s).
    @ivar backlog: the last UDP backlog measured (bytes).
    @ivar shedding: whether new requests are shed now.
    @ivar fraction: which fraction of them.
    @ivar shed: how many requests were shed (cumulative).
    @ivar episodes: how many times shedding started (cumulative).
    """

    _log = Logger()

    def __init__(self, reactor, layer, maxLag=0.2, maxTransactions=None,
                 transport=None, maxBacklog=262144,
                 interval=0.05, samples=3, rise=0.25, hold=1.0, retryAfter=2,
                 trim=_mallocTrim()):
        self._reactor = reactor
        self._layer = layer
        self.maxLag = maxLag
        self.maxTransactions = maxTransactions
        self._transport = transport
        self.maxBacklog = maxBacklog
        self.backlog = 0
        self.interval = interval
        self.samples = samples
        self.rise = rise
        self.hold = hold
        self.retryAfter = retryAfter
        self._trim = trim
        self.lag = 0.0
        self.shedding = False
        self.shed = 0
        self.episodes = 0
        self.fraction = 0.0
        self._credit = 0.0
        self._over = 0
        self._expected = None
        self._shedAtStart = 0
        if transport is not None:
            transport.datagramFilter = self.shedDatagram
        self._loop = LoopingCall(self._measure)
        self._loop.clock = reactor
        layer.overload = self

    def startService(self):
        Service.startService(self)
        self._expected = self._reactor.seconds()
        self._loop.start(self.interval, now=True)

    def stopService(self):
        Service.stopService(self)
        if self._loop.running:
            self._loop.stop()

    def _measure(self):
        now = self._reactor.seconds()
        self.lag = lag = max(now - self._expected, 0.0)
        self._expected = now + self.interval
        layer = self._layer
        active = layer.inProgress()
        backlogOver = False
        transport = self._transport
        if transport is not None:
            queued = transport.receiveQueued()
            if queued is None:
                self._transport = None
            else:
                self.backlog = queued[0]
                backlogOver = self.backlog > self.maxBacklog
        if lag > self.maxLag or backlogOver or (
                self.maxTransactions is not None
                and active > self.maxTransactions):
            self._over += 1
        else:
            self._over = 0
        if self._over >= self.samples:
            self.fraction = min(self.fraction + self.rise, 1.0)
            if not self.shedding:
                self.shedding = True
                self.episodes += 1
                self._shedAtStart = self.shed
                self._log.warn(
                    "overloaded (event-loop lag {lag:.3f} s, {backlog} bytes "
                    "of datagrams waiting, {active} transactions in "
                    "progress): new requests get 503", lag=lag,
                    backlog=self.backlog, active=active)
        elif self.shedding and not self._over:
            self.fraction = max(
                self.fraction - self.interval / self.hold, 0.0)
            if not self.fraction:
                self.shedding = False
                self._log.info("load back to normal: {count} requests shed",
                               count=self.shed - self._shedAtStart)
        if not self.shedding and layer.compact() and self._trim is not None:
            self._trim()

    def shouldShed(self, request):
        """
        Whether to answer C{request} (a new request: it matches no
        transaction) with a stateless C{503} now: while shedding, a new
        request outside a dialog, other than OPTIONS, ACK and CANCEL, one
        in C{1 / fraction} of them; one with credentials (the second step
        of a login whose challenge was paid for already) only when the
        fraction is 1.
        """
        if not self.shedding or request.method in NEVER_SHED:
            return False
        to = request.header("to") or ""
        if ";tag=" in to.replace(" ", "").lower():
            return False
        if self.fraction < 1.0 and (request.header("authorization") or
                                    request.header("proxy-authorization")):
            return False
        self._credit += self.fraction
        if self._credit >= 1.0:
            self._credit -= 1.0
            return True
        return False

    def shedDatagram(self, protocol, data, addr):
        """
        Answer a datagram with a stateless C{503} before it is parsed, when
        it is a new request that L{shouldShed} would shed: the cheap path of
        a flood.  Only the request line and the headers the response copies
        are looked at; anything unusual (folded lines, a repeated header, a
        To tag, a Via without an RFC 3261 branch or with several values on
        its first line, a request matching a transaction) is left to the
        full path.

        @param protocol: the L{SIPDatagramProtocol} it came on (C{sendBytes}).
        @return: whether it was answered (then nothing else happens to it).
        """
        if not self.shedding:
            return False
        end = data.find(b"\r\n")
        method, _, rest = data[:end].partition(b" ")
        if not rest.endswith(b" SIP/2.0") or method in _NEVER_SHED_BYTES:
            return False
        head = data.find(b"\r\n\r\n", end)
        if end < 0 or head < 0:
            return False
        copied = {}
        vias = []
        authorized = False
        for line in data[end + 2:head].split(b"\r\n"):
            if line[:1] in (b" ", b"\t"):
                return False
            name = line[:line.find(b":")].strip().lower()
            name = _COMPACT.get(name, name)
            if name == b"via":
                vias.append(line)
            elif name in _CREDENTIALS:
                authorized = True
            elif name in _COPIED:
                if name in copied:
                    return False
                copied[name] = line
        if len(copied) != 4 or not vias:
            return False
        to = copied[b"to"]
        if b";tag=" in to.replace(b" ", b"").lower() or (
                authorized and self.fraction < 1.0):
            return False
        try:
            top = vias[0].partition(b":")[2].decode("utf-8")
            if "," in top:
                return False
            via = parseVia(top)
            methodText = method.decode("ascii")
        except (UnicodeDecodeError, ValueError):
            return False
        if not (via.branch or "").startswith(MAGIC_COOKIE):
            return False
        key = (via.branch, via.host, via.sentByPort, methodText)
        if key in self._layer._servers:
            return False
        self._credit += self.fraction
        if self._credit < 1.0:
            return False
        self._credit -= 1.0
        self.shed += 1
        # Where the response goes: section 18.2.2 and RFC 3581, as the
        # transport computes it for a parsed request.
        host, port = addr
        if via.rportRequested:
            via.rportValue = port
            via.received = host
            destination = addr
        else:
            if via.host != host:
                via.received = host
            destination = (host, via.sentByPort)
        response = b"\r\n".join(
            [b"SIP/2.0 503 Service Unavailable",
             b"Via: " + via.toString().encode("utf-8")] + vias[1:]
            + [copied[b"from"], to + b";tag=" + newTag().encode("ascii"),
               copied[b"call-id"], copied[b"cseq"],
               b"Retry-After: %d" % (self.retryAfter,),
               b"Content-Length: 0", b"", b""])
        protocol.sendBytes(response, destination)
        return True

    def stats(self):
        """
        @return: the figures, as a L{dict} for the metrics endpoint.
        """
        return {"lag": round(self.lag, 4), "shedding": self.shedding,
                "fraction": round(self.fraction, 3),
                "backlog": self.backlog,
                "shed": self.shed, "episodes": self.episodes}
