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
C{samples} measurements in a row, it admits new requests at a rate and
sheds the rest: a token bucket whose rate starts a little below the rate
at which the process created transactions while it fell behind (what it
can complete), then follows the measurements: above a threshold and
rising (smoothed over a few measurements), the rate is lowered
(multiplied by C{decrease}); above but falling, it is kept (the queue
drains already); below, it is raised by a fraction if it held requests
back.  A backlog over its threshold that drains (smaller by a quarter of
the threshold than at the last measurement) neither counts nor breaks
the run: a process that reads faster than datagrams come was held up (a
long garbage collection, PyPy's JIT compiling a path), not given more
than it can serve.  Nor does a measurement above a threshold after which
PyPy's JIT compiled at least C{minCompiled} bytes of machine code
(C{compiled}): a server that has just opened its ports, or meets a new
turn of its traffic, compiles for a second or so even after a warm-up
(the real traffic takes branches the warm-up's did not), its backlog
rising meanwhile, and runs faster once compiled; while shedding, such a
measurement does not lower the admitted rate.  A backlog that fills
half the receive buffers starts shedding at once, compiling or not: they
would overflow while the process waits for more measurements.  The
functions that branch on shedding (the datagram filter, the admission)
are compiled apart from their callers
(L{sipdist.jitparams.compiledApart}): a first overload makes PyPy
compile their new branches once, not in every trace of the request's
path.  The lag counts only while at least C{minLoad} transactions a
second are created and, when the process's CPU time is measured
(C{cpu}), while the process itself used at least C{minBusy} of a core
since the last measurement: a process starved of the CPU by others (a
shared machine, a herd of clients on the same host) is late without
being overloaded by its requests, and shedding them would not give it
the CPU back; its backlog still counts.  The process thus completes
about what it can and sheds only the excess.  Shedding stops C{hold}
seconds after the last request shed, once the measurements are below
the thresholds.

A request shed (a new one outside a dialog: no To tag) gets a stateless
C{503 Service Unavailable (Overloaded)} with C{Retry-After} and the
C{Server} header.  The C{Retry-After} values are spread: the requests
shed in a second all come back after their C{Retry-After}, and when as
many come back at once as were shed (a herd of clients that lost their
home together, told the same C{Retry-After}), most are shed again.  So
while it sheds more than it admits, the control answers C{Retry-After}
values from C{retryAfter} to C{retryAfter + spread} seconds in turn, the
spread being how many seconds of the admitted rate the requests shed per
second would fill (at most C{maxSpread}): they come back at about the rate
admitted.  The 503 comes from the transaction layer before it creates a
transaction (the transaction user never sees it), or, over UDP, for a
request written the common way, from its bytes before it is parsed
(L{OverloadControl.shedDatagram}: the same bytes, at a fraction of the
cost); a datagram that comes while the bucket has a token for it is let
through unread, its token taken when a path serves it as a new request.
It never sheds an C{ACK} or a C{CANCEL}, a request matching a transaction in
progress (a retransmission), a request inside a dialog, nor an
C{OPTIONS}: the pool's monitor keeps seeing the server alive.  A request
with credentials (the second step of a login whose challenge was paid for
already) may borrow from the bucket ahead: logins under way finish first.

While it sheds, and while a log limiter it watches holds lines back, one
summary line every C{report} seconds says how many requests were shed
and how many lines were not logged; the timer stops after a quiet period.

When the load is over it gives the memory of the peak back: the
transaction tables are rebuilt (a Python dict never shrinks), a full
garbage collection empties the interpreter's free lists (the floats,
tuples, lists and dicts of the peak kept for reuse, each keeping the
pymalloc arena it sits in) and frees the cycles left, and the C allocator
is asked to return its free pages (C{malloc_trim}, where the C library has
it).
"""

import ctypes
import ctypes.util
import gc
import math
import re

from twisted.application.service import Service
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from sipdist.jitparams import compiledApart
from sipdist.sip.message import hasCredentials, newTag
from sipdist.sip.transaction import OVERLOADED

#: Requests never shed: the monitor's health check, and requests that end
#: or acknowledge work already admitted.
NEVER_SHED = frozenset(("OPTIONS", "ACK", "CANCEL"))
_NEVER_SHED_BYTES = frozenset(m.encode("ascii") for m in NEVER_SHED)
#: The token bucket holds this many seconds of the admitted rate.
BURST = 0.2
# OverloadControl._admittedDatagram of a datagram admitted while a token
# was there, the token not yet taken (see OverloadControl.shedDatagram).
_OWED = "owed"

# What the byte-level 503 takes (see _scan): a subset of what the parser
# and the validation accept, so that the full path would have shed it.
_TOKEN = rb"[A-Za-z0-9.!%*_+`'~-]+"
_LABEL = rb"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_IPV4 = rb"[0-9]{1,3}(?:\.[0-9]{1,3}){3}"
_HOST = rb"(?:" + _IPV4 + rb"|" + _LABEL + rb"(?:\." + _LABEL + rb")*)"
# 1 to 65535.
_PORT = (rb"(?:[1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}"
         rb"|655[0-2][0-9]|6553[0-5])")
_PARAMS = rb"(?:;[A-Za-z0-9_.-]+(?:=[A-Za-z0-9_.-]+)?)*"
_URI = (rb"sips?:(?:[A-Za-z0-9._+-]+@)?" + _HOST + rb"(?::" + _PORT + rb")?"
        + _PARAMS)
_REQUEST_LINE = re.compile(rb"(" + _TOKEN + rb") " + _URI + rb" SIP/2\.0\Z")
# A control character (but a tab): a Call-ID holding one is dropped by the
# full path (sipdist.sip.message.validateRequest).
_CONTROL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
# The top Via: 1 sent-by, 2 host, 3 port, 4 rport before the branch, 5
# branch, 6 rport after it.
_VIA = re.compile(
    rb"(SIP/2\.0/UDP (" + _HOST + rb")(?::(" + _PORT + rb"))?)(;rport)?"
    rb";branch=(z9hG4bK" + _TOKEN + rb")(;rport)?\Z")
# A Via under the top one (proxied requests): copied as it is.
_LOWER_VIA = re.compile(
    rb"SIP/2\.0/(?:UDP|TCP|TLS|SCTP|WS|WSS) " + _HOST + rb"(?::" + _PORT
    + rb")?(?:;branch=" + _TOKEN + rb"|;received=" + _IPV4 + rb"|;rport(?:="
    + _PORT + rb")?)*\Z")
_PARAMS_ONLY = re.compile(_PARAMS + rb"\Z")
_NAME = re.compile(_TOKEN + rb"\Z")
# What the full path does with the names it reads (lower case): the
# headers copied into the 503 or checked before it sheds, in any spelling
# or compact form, are left to it unless spelled as below.
_CHECKED = frozenset((
    b"via", b"v", b"from", b"f", b"to", b"t", b"call-id", b"i", b"cseq",
    b"max-forwards", b"content-length", b"l", b"contact", b"m"))
_CREDENTIALS = frozenset((b"authorization", b"proxy-authorization"))
# Header names seen, other than those of _scan's loop: name -> whether it
# carries credentials, or None (left to the full path).  Bounded: emptied
# when full.
_NAMES = {}
_MAX_NAMES = 256
_UNSEEN = object()


def _otherName(name):
    """
    What a header name other than those of L{_scan}'s loop means: C{True}
    for credentials, C{False} for another header, C{None} for a name the
    full path must read (one of those in another spelling, a compact form,
    not a token); remembered in C{_NAMES}.
    """
    lower = name.lower()
    if (_NAME.match(name) is None or lower in _CHECKED
            or len(lower) == 1):
        meaning = None
    else:
        meaning = lower in _CREDENTIALS
    if len(_NAMES) >= _MAX_NAMES:
        _NAMES.clear()
    _NAMES[name] = meaning
    return meaning


# A From or To value of the form the full path checks them for:
# <URI...> or "Display Name" <URI...> (anything after it), the URI with a
# colon before its first ">".
_ADDRESS = re.compile(rb'(?:<|"[^"\\]*" <)[^>]*:[^>]*>')


def _scan(data, addr, maxSize):
    """
    Read a datagram that may be shed with the byte-level C{503}: an ASCII
    request (not OPTIONS, ACK nor CANCEL) with the request line C{METHOD
    sip:URI SIP/2.0}; a top Via (UDP, an IPv4 address or a host name, an
    RFC 3261 branch, C{rport} before or after it or not at all, no other
    parameter) and any Via lines under it of one value each (C{branch},
    C{received}, C{rport} parameters only); From and To (without a tag) of
    the form C{<URI>} or C{"Name" <URI>}; Call-ID; CSeq of the same
    method; at most one Max-Forwards (1 to 255), Contact (one C{<URI>})
    and Content-Length (the body's length); all these once, spelled
    C{Name: value} in their canonical spelling, with no white space around
    the value; any other header in the form C{Name: value}; no folding.
    Its 503 must go back to C{addr}: C{rport}, or the Via's port is the
    source's.

    @return: C{(method, transaction key, whether it has credentials, the
        503 up to the end of the To value, the rest up to the CSeq line)},
        or C{None} (the full path decides).
    """
    if len(data) > maxSize:
        return None
    # (find() with a start costs more than without, in CPython 3.11.)
    first = data.find(b"\r\n")
    end = data.find(b"\r\n\r\n")
    if first < 0 or end < 0 or not data.isascii():
        return None
    match = _REQUEST_LINE.match(data, 0, first)
    if match is None:
        return None
    method = match.group(1)
    if method in _NEVER_SHED_BYTES:
        return None
    via = fromLine = toLine = callID = cseq = contact = None
    maxForwards = length = None
    lowerVias = []
    authorized = False
    for line in data[first + 2:end].split(b"\r\n"):
        name, _, value = line.partition(b": ")
        if name == b"Via":
            if via is None:
                via = _VIA.match(value)
                if via is None:
                    return None
            elif _LOWER_VIA.match(value) is None:
                return None
            else:
                lowerVias.append(line)
            continue
        if value[:1] <= b" " or value[-1:] <= b" ":
            # Empty, or white space around it: the full path strips it.
            if name in _LINES:
                return None
            meaning = _NAMES.get(name, _UNSEEN)
            if meaning is _UNSEEN:
                meaning = _otherName(name)
            if meaning is None:
                return None
            authorized = authorized or meaning
            continue
        if name == b"From":
            if fromLine is not None or _ADDRESS.match(value) is None:
                return None
            fromLine = line
        elif name == b"To":
            # ("x in bytes" costs twice x.find(), in CPython 3.11.)
            if (toLine is not None or _ADDRESS.match(value) is None
                    or value.replace(b" ", b"").lower().find(b";tag=") >= 0):
                return None
            toLine = line
        elif name == b"Call-ID":
            if callID is not None or _CONTROL.search(value) is not None:
                return None
            callID = line
        elif name == b"CSeq":
            number, _, cseqMethod = value.partition(b" ")
            if (cseq is not None or cseqMethod != method
                    or not number.isdigit() or len(number) > 9):
                return None
            cseq = line
        elif name == b"Max-Forwards":
            if (maxForwards is not None or not value.isdigit()
                    or not 0 < int(value) <= 255):
                return None
            maxForwards = value
        elif name == b"Content-Length":
            if length is not None or not value.isdigit():
                return None
            length = int(value)
        elif name == b"Contact":
            gt = value.find(b">")
            if (contact is not None or value[:1] != b"<" or gt < 2
                    or value[1:gt].find(b":") < 0 or value.find(b",") >= 0
                    or (gt + 1 < len(value)
                        and _PARAMS_ONLY.match(value, gt + 1) is None)):
                return None
            contact = value
        else:
            meaning = _NAMES.get(name, _UNSEEN)
            if meaning is _UNSEEN:
                meaning = _otherName(name)
            if meaning is None:
                return None
            authorized = authorized or meaning
    if via is None or fromLine is None or toLine is None or callID is None \
            or cseq is None:
        return None
    if len(data) != end + 4 + (length or 0):
        return None

    viaHost = via.group(2).decode("ascii")
    viaPort = via.group(3)
    sentByPort = 5060 if viaPort is None else int(viaPort)
    branch = via.group(5)
    host, port = addr
    if ":" in host:
        return None
    # Section 18.2.1 and RFC 3581, as TransportLayer._receivedRequest
    # writes it; the 503 goes to the source address only.
    if via.group(4) is not None:
        if via.group(6) is not None:
            return None
        rport = True
    else:
        rport = via.group(6) is not None
    if rport:
        viaText = b"%s;branch=%s;received=%s;rport=%d" % (
            via.group(1), branch, host.encode("ascii"), port)
    elif sentByPort != port:
        return None
    elif viaHost != host:
        viaText = b"%s;received=%s" % (via.group(0), host.encode("ascii"))
    else:
        viaText = via.group(0)
    methodText = method.decode("ascii")
    key = (branch.decode("ascii"), viaHost, sentByPort, methodText)
    head = b"\r\n".join([_STATUS_LINE, b"Via: " + viaText] + lowerVias
                        + [fromLine, toLine])
    return (methodText, key, authorized, head,
            b"\r\n" + callID + b"\r\n" + cseq)


# The headers _scan's loop reads (white space around their value: left to
# the full path).
_LINES = frozenset((b"From", b"To", b"Call-ID", b"CSeq", b"Max-Forwards",
                    b"Content-Length", b"Contact"))

_STATUS_LINE = ("SIP/2.0 503 " + OVERLOADED).encode("ascii")
def _mallocTrim():
    """
    A full garbage collection (it empties the free lists), then glibc's
    C{malloc_trim(0)} where there is one.
    """
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None)
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return gc.collect
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int

    def giveBack():
        gc.collect()
        trim(0)
    return giveBack


class OverloadControl(Service):
    """
    Decides when the transaction layer sheds new requests (see the module
    docstring).  A service: its timers run while it runs.

    @param reactor: an L{IReactorTime}.
    @param layer: the L{sipdist.sip.transaction.TransactionLayer} it
        measures and compacts; it sets itself as the layer's C{overload}
        and watches its log limiters (L{watch}).
    @param maxLag: event-loop lag (s) above which it is overloaded.
    @param maxTransactions: transactions in progress above which it is
        overloaded (C{None}: they are not a criterion).
    @param transport: the L{sipdist.sip.transport.TransportLayer} whose UDP
        backlog it measures (C{receiveQueued}), or C{None}.
    @param maxBacklog: bytes queued in the UDP receive buffers above which
        it is overloaded (keep it well below the buffers' size).
    @param interval: seconds between measurements.
    @param samples: how many measurements in a row above a threshold it
        takes to start shedding (one slow reactor turn is not an overload).
    @param decrease: what the admitted rate is multiplied by after a
        measurement above a threshold while the measurements rise
        (smoothed over a few of them).
    @param increase: what fraction of itself the admitted rate grows by
        after a measurement below every threshold but above half of one
        (three times that fraction below half of every threshold).
    @param minRate: the admitted rate never falls below this (requests/s),
        and grows by at least this much per second below the thresholds.
    @param minLoad: below this many transactions created per second
        (smoothed), the lag is not a sign of overload: the machine is
        busy with something else, and shedding would not help.
    @param cpu: a callable giving this process's CPU seconds
        (C{time.process_time}), or C{None}: not measured.
    @param minBusy: with C{cpu}, the lag counts only when the process used
        at least this fraction of a core since the last measurement (else
        it waits for the CPU others use).
    @param compiled: a callable giving the bytes of machine code a JIT has
        compiled in this process (L{sipdist.jitparams.CompiledCode}), or
        C{None}: not measured (CPython, which has no JIT).
    @param minCompiled: with C{compiled}, a measurement after which the
        JIT compiled at least this many bytes (some 10 to 20 ms of
        compiling) is a compile pause: above a threshold, it neither counts
        nor breaks the run, and while shedding it does not lower the rate
        admitted.
    @param hold: seconds without a request shed, below every threshold,
        after which shedding stops.
    @param retryAfter: the C{Retry-After} of the C{503} (s), the least one
        when spread.
    @param maxSpread: the most seconds added to C{retryAfter} to spread
        the requests shed (see the module).
    @param report: seconds between summary lines while shedding or while
        a watched log limiter holds lines back.
    @param trim: called to give free memory back to the system once the
        tables were compacted (by default a full garbage collection, then
        the C library's C{malloc_trim}; C{None}: nothing).

    @ivar lag: the last lag measured (s).
    @ivar busy: with C{cpu}, the fraction of a core the process used
        between the last two measurements.
    @ivar backlog: the last UDP backlog measured (bytes).
    @ivar pressure: the last measurement relative to its threshold (the
        highest of lag, backlog, transactions in progress; above 1:
        overloaded).
    @ivar shedding: whether new requests are shed now.
    @ivar admitRate: while shedding, how many new requests per second are
        admitted (the others are shed).
    @ivar fraction: the fraction of new requests shed since the last
        measurement.
    @ivar shed: how many requests were shed (cumulative).
    @ivar spread: the C{Retry-After} values given now are C{retryAfter} to
        C{retryAfter + spread}.
    @ivar episodes: how many times shedding started (cumulative).
    @ivar compilePauses: measurements above a threshold that were compile
        pauses (cumulative).
    """

    _log = Logger()

    def __init__(self, reactor, layer, maxLag=0.2, maxTransactions=None,
                 transport=None, maxBacklog=262144,
                 interval=0.05, samples=3, decrease=0.9, increase=0.03,
                 minRate=20.0, minLoad=50.0, hold=1.0, retryAfter=2,
                 report=10.0, trim=_mallocTrim(), cpu=None, minBusy=0.5,
                 maxSpread=30, compiled=None, minCompiled=16384):
        self._reactor = reactor
        self._layer = layer
        self.maxLag = maxLag
        self.maxTransactions = maxTransactions
        self._transport = transport
        self.maxBacklog = maxBacklog
        self.backlog = 0
        self.interval = interval
        self.samples = samples
        self.decrease = decrease
        self.increase = increase
        self.minRate = minRate
        self.minLoad = minLoad
        self.hold = hold
        self.retryAfter = retryAfter
        self.maxSpread = maxSpread
        self.spread = 0
        # Requests shed per second (smoothed).
        self._shedRate = 0.0
        self.report = report
        self._trim = trim
        self._cpu = cpu
        self._lastCPU = None
        self.minBusy = minBusy
        self.busy = None
        self._compiled = compiled
        self.minCompiled = minCompiled
        self._lastCompiled = None if compiled is None else compiled()
        self.compilePauses = 0
        self.lag = 0.0
        self.pressure = 0.0
        self.shedding = False
        self.admitRate = None
        self.fraction = 0.0
        self.shed = 0
        self.episodes = 0
        self._over = 0
        self._smoothed = 0.0
        self._expected = None
        self._last = None
        self._shedAtStart = 0
        # The token bucket of new requests admitted while shedding.
        self._tokens = 0.0
        self._refilled = None
        self._admitted = 0
        self._admittedDatagram = False
        self._datagrams = 0
        # Per measurement: requests created per second (smoothed), the
        # counters the last measurement saw.
        self._createdRate = 0.0
        self._lastCreated = layer.serverCreated
        self._lastShedCount = 0
        self._lastShedTime = None
        # The summary lines.
        self._limiters = []
        self._reportCall = None
        self._reportShed = 0
        # The transport's filter, and its call after each datagram the
        # filter let through.
        if transport is not None:
            transport.datagramFilter = self.shedDatagram
            transport.datagramDone = self._datagramDone
        self._loop = LoopingCall(self._measure)
        self._loop.clock = reactor
        layer.overload = self
        for name in ("timeoutLog", "rejectLog"):
            limiter = getattr(layer, name, None)
            if limiter is not None:
                self.watch(limiter)

    def watch(self, limiter):
        """
        Count the lines a L{sipdist.logs.LogLimiter} holds back in the
        summary lines (instead of its own summary at its next event).
        """
        self._limiters.append(limiter)

    def startService(self):
        Service.startService(self)
        self._expected = self._last = self._reactor.seconds()
        self._loop.start(self.interval, now=True)

    def stopService(self):
        Service.stopService(self)
        if self._loop.running:
            self._loop.stop()
        if self._reportCall is not None:
            if self._reportCall.active():
                self._reportCall.cancel()
            self._reportCall = None

    def _measure(self):
        now = self._reactor.seconds()
        self.lag = lag = max(now - self._expected, 0.0)
        self._expected = now + self.interval
        elapsed = max(now - self._last, 1e-3)
        self._last = now
        layer = self._layer
        created = layer.serverCreated
        self._createdRate += 0.2 * (
            (created - self._lastCreated) / elapsed - self._createdRate)
        self._lastCreated = created
        active = layer.inProgress()
        # A slow event loop with few requests is not overloaded by them
        # (the machine is busy with something else), nor one that waits
        # for the CPU others use: shedding them would not help.
        lagCounts = self._createdRate >= self.minLoad
        if self._cpu is not None:
            used = self._cpu()
            if self._lastCPU is not None:
                self.busy = (used - self._lastCPU) / elapsed
                lagCounts = lagCounts and self.busy >= self.minBusy
            self._lastCPU = used
        pressure = lag / self.maxLag if lagCounts else 0.0
        # Whether the JIT compiled code since the last measurement, enough
        # for its compiling to have held the process up.
        compiling = False
        if self._compiled is not None:
            total = self._compiled()
            compiling = total - self._lastCompiled >= self.minCompiled
            self._lastCompiled = total
        if self.maxTransactions is not None:
            pressure = max(pressure, active / self.maxTransactions)
        # Whether the pressure is only a backlog that drains, and whether
        # the receive buffers are half full.
        draining = full = False
        transport = self._transport
        if transport is not None:
            queued = transport.receiveQueued()
            if queued is None:
                self._transport = None
            else:
                before = self.backlog
                self.backlog, size = queued
                backlog = self.backlog / self.maxBacklog
                # Smaller by a quarter of the threshold since the last
                # measurement: the process reads faster than datagrams
                # come; what queued them was a pause (a long collection,
                # the JIT compiling), not more requests than it can serve.
                draining = (pressure <= 1.0
                            and self.backlog < before - self.maxBacklog / 4)
                # (No UDP port: no buffer, nothing in it.)
                full = backlog > 1.0 and 2 * self.backlog >= size
                pressure = max(pressure, backlog)
        self.pressure = pressure
        previous = self._smoothed
        self._smoothed += 0.3 * (pressure - previous)
        shedNow = self.shed - self._lastShedCount
        self._lastShedCount = self.shed
        admitted, self._admitted = self._admitted, 0
        self.fraction = (shedNow / (shedNow + admitted)
                         if shedNow else 0.0)
        if shedNow:
            self._lastShedTime = now
        self._spreadRetries(shedNow / elapsed)
        if pressure <= 1.0:
            self._over = 0
        elif compiling:
            # The compiling, not the requests, held the process up; once
            # compiled the path runs faster than before.
            self.compilePauses += 1
        elif not draining:
            self._over += 1
        if self.shedding:
            # A compile pause does not lower the rate admitted: the
            # requests did not hold the process up.
            self._control(now, pressure,
                          self._smoothed > previous and not compiling,
                          shedNow)
        elif self._over >= self.samples or full:
            # Receive buffers half full would overflow (the kernel drops
            # what comes) while the control waits for more measurements.
            self._start(lag, active)
        if (self._reportCall is None and self.report
                and (self.shedding
                     or any(limiter.suppressed
                            for limiter in self._limiters))):
            self._reportCall = self._reactor.callLater(self.report,
                                                       self._summary)
        if not self.shedding and layer.compact() and self._trim is not None:
            self._trim()

    def _spreadRetries(self, shedRate):
        """
        Set L{spread} from the rate of requests shed (per second, since the
        last measurement) and the rate admitted.
        """
        if not self.shedding:
            self._shedRate = 0.0
            self.spread = 0
            return
        self._shedRate += 0.3 * (shedRate - self._shedRate)
        admitted = max(self.admitRate, self.minRate, 1.0)
        self.spread = min(self.maxSpread,
                          max(int(math.ceil(self._shedRate / admitted)) - 1,
                              0))

    def nextRetryAfter(self):
        """
        The C{Retry-After} of the next C{503} (after L{shed} has counted
        it): C{retryAfter} plus the count of requests shed modulo
        C{spread + 1}, so that those shed together come back over
        C{spread + 1} seconds.
        """
        return self.retryAfter + self.shed % (self.spread + 1)

    def _start(self, lag, active):
        """
        Start shedding: admit a little less than the rate at which the
        process created transactions while it was falling behind (its
        capacity, less what shedding will cost).
        """
        self.limit(max(self._createdRate * 0.9, self.minRate))
        self._log.warn(
            "overloaded (event-loop lag {lag:.3f} s, {backlog} bytes "
            "of datagrams waiting, {active} transactions in "
            "progress): new requests beyond {rate:.0f}/s get 503",
            lag=lag, backlog=self.backlog, active=active,
            rate=self.admitRate)

    def limit(self, rate):
        """
        Shed from now on the new requests beyond C{rate} per second (the
        control loop then moves that rate with the measurements).
        """
        now = self._reactor.seconds()
        if not self.shedding:
            self.shedding = True
            self._admittedDatagram = False
            self.episodes += 1
            self._shedAtStart = self.shed
            self._lastShedTime = now
        self.admitRate = rate
        self._tokens = 0.0
        self._refilled = now

    def _control(self, now, pressure, rising, shed):
        """
        One step of the control loop while shedding: above a threshold and
        rising (smoothed over a few measurements), admit less
        (multiplicatively); above and falling, keep the rate (the queue
        drains already: lowering it more would overshoot); below, admit
        more if the rate held requests back (C{shed} of them since the
        last measurement): by the fraction C{increase} near the
        thresholds, by C{3 x increase} below half of them.  A rate that
        held nothing back is kept, so that a rate unused while the load
        was light does not grow and let a new peak in at once.  Shedding
        stops after C{hold} seconds below the thresholds without a request
        shed.
        """
        if pressure > 1.0:
            if rising:
                self.admitRate = max(self.admitRate * self.decrease,
                                     self.minRate)
            return
        if shed:
            increase = (self.increase if pressure > 0.5
                        else 3 * self.increase)
            self.admitRate = (self.admitRate * (1.0 + increase)
                              + self.minRate * self.interval)
        elif now - self._lastShedTime >= self.hold:
            self.shedding = False
            self._admittedDatagram = False
            self.admitRate = None
            self._log.info("load back to normal: {count} requests shed",
                           count=self.shed - self._shedAtStart)

    def _summary(self):
        """
        The summary line of one C{report} period: requests shed, lines held
        back by the watched limiters.  The timer goes on while shedding or
        while lines are held back, and stops after a quiet period.
        """
        self._reportCall = None
        shed = self.shed - self._reportShed
        self._reportShed = self.shed
        held = []
        for limiter in self._limiters:
            count = limiter.take()
            if count:
                held.append(f"{count} {limiter.what}")
        if shed or held:
            self._log.warn(
                "overload in the last {period:g} s: {shed} new requests "
                "shed with 503{admitting}; lines not logged: {held}",
                period=self.report, shed=shed,
                admitting=(f" (admitting {self.admitRate:.0f}/s)"
                           if self.shedding else ""),
                held=", ".join(held) or "none")
        if self.shedding or shed or held:
            self._reportCall = self._reactor.callLater(self.report,
                                                       self._summary)

    def _refill(self):
        """
        Fill the token bucket for the time since it was last filled.

        @return: C{(tokens, burst)}: the tokens in it now, and what it
            holds at most (C{BURST} seconds of the rate, at least 10
            requests).
        """
        now = self._reactor.seconds()
        rate = self.admitRate
        burst = max(rate * BURST, 10.0)
        tokens = self._tokens = min(
            self._tokens + (now - self._refilled) * rate, burst)
        self._refilled = now
        return tokens, burst

    @compiledApart
    def _admit(self, credentials):
        """
        Whether the token bucket admits one more new request now (then its
        token is taken).  A request with credentials (the second step of a
        login whose challenge was paid for already) may borrow a bucket's
        worth ahead.
        """
        tokens, burst = self._refill()
        if tokens >= 1.0 or (credentials and tokens > -burst):
            self._take()
            return True
        return False

    def _take(self):
        self._tokens -= 1.0
        self._admitted += 1

    def _usedAdmission(self):
        """
        The datagram being handled, admitted by L{shedDatagram}, is a new
        request a path serves: its admission is used (a token owed for it
        is taken now).
        """
        if self._admittedDatagram is _OWED:
            self._take()
        self._admittedDatagram = False

    @compiledApart
    def _datagramDone(self):
        """
        The transport has handled a datagram L{shedDatagram} let through:
        an admission it was given and no path used (a retransmission, an
        OPTIONS, a malformed request) is forgotten, not left for the next
        request that the filter does not see (one over TCP).  Called after
        every such datagram, shedding or not, so that the path a datagram
        takes through the transport is the same in both.
        """
        self._admittedDatagram = False

    @compiledApart
    def shouldShed(self, request):
        """
        Whether to answer C{request} (a new request: it matches no
        transaction) with a stateless C{503} now: while shedding, a new
        request outside a dialog, other than OPTIONS, ACK and CANCEL, when
        the admitted rate is used up (L{_admit}).
        """
        if not self.shedding or request.method in NEVER_SHED:
            return False
        to = request.header("to") or ""
        if ";tag=" in to.replace(" ", "").lower():
            return False
        if self._admittedDatagram:
            # L{shedDatagram} admitted it already.
            self._usedAdmission()
            return False
        return not self._admit(hasCredentials(request))

    @compiledApart
    def shedDatagram(self, protocol, data, addr):
        """
        Answer a datagram with a stateless C{503} before it is parsed, when
        it is a new request that L{shouldShed} would shed: the cheap path of
        a flood.  It answers only a request written the common way (see
        L{_scan}), with the bytes the full path would send (the transaction
        layer's C{503}, tests/test_overload.py compares them over a corpus),
        and only when they go back to the address it came from; anything
        else, and a request matching a transaction, is left to the full
        path.  Every 32nd datagram it also measures, when the timer is
        late: a UDP port reads many datagrams per reactor turn, and the
        control must not wait for the end of a long one.

        @param protocol: the L{SIPDatagramProtocol} it came on (C{sendBytes}).
        @return: whether it was answered (then nothing else happens to it).
        """
        self._datagrams += 1
        if not self._datagrams & 31 and self._expected is not None:
            # In a long reactor turn (a UDP port reads many datagrams per
            # turn), measure without waiting for the turn to end.
            if self._reactor.seconds() > self._expected + self.interval:
                self._measure()
        if not self.shedding:
            return False
        self._admittedDatagram = False
        if self._refill()[0] >= 1.0:
            # A token is there for it, whatever it is: admitted without
            # being read (a server near its limit admits most of what
            # comes, and the path that serves it reads it anyway).  The
            # token is taken when a path serves it as a new request
            # (shouldShed, answeredAhead), not for a retransmission nor
            # for what is never shed.
            self._admittedDatagram = _OWED
            return False
        scanned = _scan(data, addr, self._maxSize(protocol))
        if scanned is None:
            return False
        method, key, authorized, head, tail = scanned
        layer = self._layer
        if layer.serving(key):
            return False
        if self._admit(authorized):
            self._admittedDatagram = True
            return False
        self.shed += 1
        layer.rejected503("overloaded", method, addr)
        server = getattr(layer.user, "serverHeader", None)
        response = b"".join((
            head, b";tag=", newTag().encode("ascii"), tail,
            b"\r\nRetry-After: %d\r\n" % (self.nextRetryAfter(),),
            b"" if server is None
            else b"Server: " + server.encode("utf-8") + b"\r\n",
            b"Content-Length: 0\r\n\r\n"))
        # With the wake-up's other answers; a failed send is logged by the
        # protocol, as on the full path.
        protocol.sendSoon(response, addr)
        return True

    @compiledApart
    def mayAnswerAhead(self):
        """
        Whether a fast path may answer the datagram being handled: always
        while the control does not shed; while it sheds, when
        L{shedDatagram} admitted it (the full path's L{shouldShed} would
        let it through, using that admission).  A fast path that answers
        it calls L{answeredAhead}.
        """
        return not self.shedding or bool(self._admittedDatagram)

    @compiledApart
    def answeredAhead(self):
        """
        A fast path answered the datagram being handled: the admission
        L{shedDatagram} gave it, if any, is used, as the full path's
        L{shouldShed} would use it.
        """
        self._usedAdmission()

    def _maxSize(self, protocol):
        layer = getattr(protocol, "_layer", None)
        return getattr(layer, "maxMessageSize", 65535)

    def stats(self):
        """
        @return: the figures, as a L{dict} for the metrics endpoint.
        """
        return {"lag": round(self.lag, 4), "shedding": self.shedding,
                "fraction": round(self.fraction, 3),
                "admit_rate": (None if self.admitRate is None
                               else round(self.admitRate, 1)),
                "pressure": round(self.pressure, 3),
                "backlog": self.backlog,
                "shed": self.shed, "episodes": self.episodes,
                "retry_spread": self.spread,
                "busy": None if self.busy is None else round(self.busy, 3),
                "compile_pauses": self.compilePauses}
