# -*- test-case-name: tests.test_registrar -*-
"""
The registrar of a home server (RFC 3261 section 10.3, RFC 3327 Path) and
the location lookup its proxy uses.

Bindings live in memory, per address-of-record, each with its expiry on the
injected clock.  Expired bindings are removed by a periodic sweep over a
heap of check times, one per address-of-record: its earliest expiry when it
was scheduled (O(log n), no timer per binding).  A refresh, which only
makes a binding last longer, adds nothing to the heap: the check finds the
binding refreshed and schedules the next one at the earliest expiry then.
So a burst of refreshes leaves no entry, float or string behind (objects
that would outlive the burst among its garbage, and keep the memory of its
peak from going back: see the memory paragraph of docs/operations.rst).
Expired bindings are never returned by L{Registrar.lookup} even before the
sweep reaches them.
Everything is bounded: contacts per AOR, AORs in all.  With a journal
(L{sipdist.services.bindings}) every change is also written behind to a
file, and L{Registrar.restore} takes the bindings back on start.
"""

import heapq
from dataclasses import dataclass, field

from twisted.logger import Logger

from sipdist.jitparams import compiledApart
from sipdist.sip.message import HEADER_PARAMETER, parseNameAddr, quotedEnd
from sipdist.sip.uri import URIError, comparisonKey

DEFAULT_EXPIRES = 3600
MIN_EXPIRES = 60
MAX_EXPIRES = 86400
MAX_BINDINGS_PER_AOR = 10
MAX_AORS = 1000000
SWEEP_INTERVAL = 5.0


class RegistrarError(Exception):
    """
    A REGISTER that must be refused.

    @ivar code: the status code.
    @ivar phrase: the reason phrase, naming the problem.
    @ivar headers: extra headers, as C{(name, value)}.
    """

    def __init__(self, code, phrase, headers=()):
        Exception.__init__(self, f"{code} {phrase}")
        self.code = code
        self.phrase = phrase
        self.headers = list(headers)


@dataclass
class Binding:
    """
    One contact of an address-of-record.

    @ivar contact: the Contact value as registered (without header
        parameters C{expires} and C{q}).
    @ivar uri: its parsed URI, the key bindings are compared on.
    @ivar expires: absolute expiry time (reactor seconds).
    @ivar q: the preference, 0.0 to 1.0.
    @ivar callID: Call-ID of the REGISTER that made or refreshed it.
    @ivar cseq: CSeq number of that REGISTER.
    @ivar path: the Path values of that REGISTER, to be used as a Route set
        for requests to this contact (RFC 3327).
    @ivar flow: the transport flow the REGISTER came in on.
    @ivar instance: the C{+sip.instance} parameter (RFC 5626), if any.
    @ivar regId: the C{reg-id} parameter (RFC 5626), if any.
    @ivar key: C{uri}'s L{comparisonKey}, made when first needed and kept
        (L{sameBinding}): each REGISTER of its address-of-record compares
        its contacts with it.
    """

    contact: str
    uri: object
    expires: float
    q: float = 1.0
    callID: str = None
    cseq: int = 0
    path: list = field(default_factory=list)
    flow: object = None
    instance: str = None
    regId: str = None
    key: tuple = field(default=None, init=False, repr=False, compare=False)

    def remaining(self, now):
        return max(0, int(self.expires - now + 0.5))


class Registration:
    """
    What a REGISTER changes (L{Registrar.plan}), not yet made.

    @ivar aor: the address-of-record.
    @ivar bindings: its bindings after the change; L{None} for a query.
    @ivar current: a query's answer (its current bindings).
    @ivar added: the new bindings among C{bindings}; L{None} when a
        C{Contact: *} removes them.
    """

    __slots__ = ("aor", "bindings", "current", "added")

    def __init__(self, aor, bindings, current, added):
        self.aor = aor
        self.bindings = bindings
        self.current = current
        self.added = added


class Registrar:
    """
    Bindings of the users served here.

    @ivar minExpires: shortest registration accepted (else C{423}).
    @ivar maxExpires: longest registration granted (longer ones are cut).
    @ivar defaultExpires: when the REGISTER asks for no expiry.
    @ivar maxBindings: contacts per address-of-record (else C{403}).
    @ivar maxAORs: addresses-of-record in all (else C{503}).
    @ivar journal: told of every change of an address-of-record's
        bindings (C{journal.changed(aor, bindings)}) and stopped with the
        registrar: a L{sipdist.services.bindings.BindingsJournal}, or
        C{None} (bindings in memory only).
    """

    _log = Logger()

    def __init__(self, reactor, minExpires=MIN_EXPIRES, maxExpires=MAX_EXPIRES,
                 defaultExpires=DEFAULT_EXPIRES,
                 maxBindings=MAX_BINDINGS_PER_AOR, maxAORs=MAX_AORS,
                 sweepInterval=SWEEP_INTERVAL, journal=None):
        self._reactor = reactor
        self.journal = journal
        self.minExpires = minExpires
        self.maxExpires = maxExpires
        self.defaultExpires = defaultExpires
        self.maxBindings = maxBindings
        self.maxAORs = maxAORs
        self.sweepInterval = sweepInterval
        self._bindings = {}
        # Bindings in all.
        self._count = 0
        # When each address-of-record with bindings is next checked (its
        # earliest expiry when it was scheduled), and the heap of those
        # (time, aor).  An entry whose time is no longer the one in _due
        # was superseded (by an earlier one, or its address-of-record lost
        # its bindings); the heap is rebuilt from _due when those
        # outnumber the live ones.
        self._due = {}
        self._heap = []
        self._sweepCall = None
        self._observers = []
        # Contact value -> what plan() reads of it (see _contact).
        self._contacts = {}

    # Registration

    def register(self, aor, request, flow=None, maxExpires=None):
        """
        Apply a REGISTER (already authenticated and authorised for C{aor}).

        @param aor: the normalised address-of-record.
        @param request: the L{sipdist.sip.message.Request}.
        @param flow: the flow it arrived on.
        @param maxExpires: the longest lifetime granted to this request's
            bindings, when shorter than the registrar's own.
        @return: the current bindings of C{aor} (for the C{200}).
        @raise RegistrarError: what to answer instead of C{200}.
        """
        contacts = request.values("contact")
        callID = request.header("call-id")
        cseq = request.cseq()[0]
        headerExpires = self._headerExpires(request)
        return self.apply(self.plan(
            aor, contacts, callID, cseq, headerExpires,
            request.values("path"), flow, maxExpires))

    @compiledApart
    def plan(self, aor, contacts, callID, cseq, headerExpires, path=(),
             flow=None, maxExpires=None):
        """
        Check a REGISTER's contacts and work out what it changes, changing
        nothing: a REGISTER applies whole or not at all.  (L{register}
        reads them from the request; the home's fast path,
        L{sipdist.roles.fastregister}, from the datagram.)

        @param contacts: its C{Contact} values.
        @param callID: its C{Call-ID}.
        @param cseq: its C{CSeq} number.
        @param headerExpires: its C{Expires} in seconds, or L{None}.
        @param path: its C{Path} values.
        @return: a L{Registration} for L{apply}.
        @raise RegistrarError: what to answer instead of C{200}.
        """
        # Loops written out in this method's own frame, no comprehension
        # or generator: on PyPy each of those is a frame of its own, made
        # for every REGISTER to enter its compiled loop.
        now = self._reactor.seconds()
        # _current's loop, here rather than called: a call to it is a frame
        # on PyPy (plan 0.37 us and 2.5 KB a call instead of 0.22 and 1.8).
        current = []
        for binding in self._bindings.get(aor, ()):
            if binding.expires > now:
                current.append(binding)

        if not contacts:
            # A query: the bindings are returned unchanged.
            return Registration(aor, None, current, ())
        for value in contacts:
            if value.strip() == "*":
                if len(contacts) != 1 or headerExpires != 0:
                    raise RegistrarError(
                        400, "Contact * Needs Expires 0 And No Other Contact")
                remaining = []
                for binding in current:
                    if binding.callID == callID and cseq <= binding.cseq:
                        remaining.append(binding)
                return Registration(aor, remaining, remaining, None)

        added = []
        replaced = []
        for value in contacts:
            uri, params, instance, key, contact = self._contact(value)
            expires = headerExpires
            if "expires" in params:
                expires = _seconds(params["expires"])
                if expires is None:
                    raise RegistrarError(400, "Bad Contact Expires")
            if expires is None:
                expires = self.defaultExpires
            if 0 < expires < self.minExpires:
                raise RegistrarError(
                    423, "Interval Too Brief",
                    [("Min-Expires", str(self.minExpires))])
            expires = min(expires, self.maxExpires)
            if maxExpires is not None:
                expires = min(expires, maxExpires)
            q = 1.0
            if "q" in params:
                try:
                    q = float(params["q"])
                except (TypeError, ValueError):
                    q = -1
                if not 0 <= q <= 1:
                    raise RegistrarError(400, "Bad Contact q")
            # A reg-id without an instance id is not an RFC 5626 flow:
            # the Contact is bound as any other.
            regId = params.get("reg-id") if instance is not None else None
            if regId is not None:
                regId = regId.strip()
                if not regId.isdigit() or not 0 < int(regId) < 2 ** 31:
                    raise RegistrarError(400, "Bad Contact reg-id")
            for binding in current:
                if sameBinding(binding, key, instance, regId):
                    if binding.callID == callID and cseq <= binding.cseq:
                        raise RegistrarError(500, "Out Of Order REGISTER")
                    replaced.append(binding)
            if expires > 0:
                added.append((uri, contact, params, expires, q, instance,
                              regId, key))

        kept = []
        for binding in current:
            for other in replaced:
                if other is binding:
                    break
            else:
                kept.append(binding)
        if len(kept) + len(added) > self.maxBindings:
            raise RegistrarError(403, "Too Many Contacts")
        if not current and added and len(self._bindings) >= self.maxAORs:
            raise RegistrarError(503, "Registrar Full",
                                 [("Retry-After", "60")])

        path = list(path)
        new = []
        for uri, contact, params, expires, q, instance, regId, key in added:
            binding = Binding(
                contact=contact, uri=uri, expires=now + expires, q=q,
                callID=callID, cseq=cseq, path=path, flow=flow,
                instance=params.get("+sip.instance") if instance else None,
                regId=regId)
            binding.key = key
            new.append(binding)
        return Registration(aor, kept + new, None, new)

    #: Contact values whose reading L{_contact} remembers (the table is
    #: emptied when full), and the longest remembered.
    maxContactsRemembered = 4096
    maxContactLength = 512

    def _contact(self, value):
        """
        What L{plan} reads of a C{Contact} value: its URI, its header
        parameters, its instance id (L{instanceId}), its URI's
        L{comparisonKey} and the value as a binding keeps it
        (L{_stripParams}).  A client writes the same value in each
        REGISTER of its login and its refreshes: it is read once and
        remembered (the URI and the parameters are shared by the bindings
        made of it, which never change them).

        @raise RegistrarError: C{400} for a value that is not one.
        """
        known = self._contacts.get(value)
        if known is not None:
            return known
        try:
            display, uri, params = parseNameAddr(value)
        except (URIError, ValueError):
            raise RegistrarError(400, "Bad Contact Header")
        known = (uri, params, instanceId(params.get("+sip.instance")),
                 comparisonKey(uri), _stripParams(value))
        if len(value) <= self.maxContactLength:
            contacts = self._contacts
            if len(contacts) >= self.maxContactsRemembered:
                contacts.clear()
            contacts[value] = known
        return known

    def apply(self, registration):
        """
        Make the change a L{plan} worked out (nothing happened in between).

        @return: the current bindings of its address-of-record, most
            preferred first (for the C{200}).
        """
        aor, bindings = registration.aor, registration.bindings
        if bindings is None:
            return self._sorted(registration.current)
        added = registration.added
        if added is None:
            # Contact: * (section 10.3 step 6).
            self._store(aor, bindings)
            return self._sorted(bindings)
        if added:
            self._schedule(aor, added)
        self._store(aor, bindings)
        self._ensureSweep()
        return self._sorted(bindings)

    def _headerExpires(self, request):
        value = request.header("expires")
        if value is None:
            return None
        seconds = _seconds(value)
        if seconds is None:
            raise RegistrarError(400, "Bad Expires Header")
        return seconds

    @compiledApart
    def _schedule(self, aor, bindings):
        """
        Check C{aor} when the first of C{bindings} (new ones) expires, at
        the latest: an entry in the heap only when that is earlier than its
        next check (a new address-of-record, a binding shorter than the
        others), not for a refresh.
        """
        expires = bindings[0].expires
        for binding in bindings:
            expires = min(expires, binding.expires)
        due = self._due.get(aor)
        if due is not None and due <= expires:
            return
        self._due[aor] = expires
        heap = self._heap
        heapq.heappush(heap, (expires, aor))
        if len(heap) > 2 * len(self._due) + 64:
            # Superseded entries: one per address-of-record again.
            self._heap = [(when, key) for key, when in self._due.items()]
            heapq.heapify(self._heap)

    def _store(self, aor, bindings):
        before = self._bindings.get(aor)
        self._count += len(bindings) - len(before or ())
        if bindings:
            self._bindings[aor] = bindings
        else:
            self._bindings.pop(aor, None)
            # Its entry in the heap, if any, is now superseded.
            self._due.pop(aor, None)
        if self.journal is not None and (before or bindings):
            self.journal.changed(aor, bindings)
        if bool(before) != bool(bindings):
            for observer in list(self._observers):
                observer(aor, bool(bindings))

    def restore(self, bindings):
        """
        Take back bindings read from a journal on start (within the
        bounds: contacts per address-of-record, addresses-of-record).

        @param bindings: L{list} of L{Binding} by address-of-record.
        """
        for aor, restored in bindings.items():
            if len(self._bindings) >= self.maxAORs:
                break
            restored = restored[:self.maxBindings]
            self._count += len(restored) - len(self._bindings.get(aor, ()))
            self._bindings[aor] = restored
            if restored:
                self._schedule(aor, restored)
        self._ensureSweep()

    # Lookup

    def lookup(self, aor):
        """
        The current bindings of an address-of-record, most preferred
        first.

        @rtype: L{list} of L{Binding}
        """
        return self._sorted(self._current(aor, self._reactor.seconds()))

    def _current(self, aor, now):
        bindings = self._bindings.get(aor)
        if not bindings:
            return []
        return [b for b in bindings if b.expires > now]

    @staticmethod
    def _sorted(bindings):
        if len(bindings) < 2:
            # No sort (on PyPy a frame and a compiled loop of its own).
            return list(bindings)
        return sorted(bindings, key=_preference)

    def remove(self, aor):
        """
        Forget every binding of C{aor} (the user moved to another home).

        @return: the bindings removed.
        """
        removed = self._bindings.get(aor, [])
        self._store(aor, [])
        return removed

    def aors(self):
        """
        The addresses-of-record with bindings (some may have just expired).
        """
        return list(self._bindings)

    @property
    def count(self):
        """
        How many addresses-of-record have bindings.
        """
        return len(self._bindings)

    @property
    def bindingCount(self):
        """
        How many bindings (contacts) all addresses-of-record have together.
        """
        return sum(len(bindings) for bindings in self._bindings.values())

    def observe(self, observer):
        """
        Call C{observer(aor, registered)} when an address-of-record gains
        its first binding or loses its last.

        @return: a callable that stops the observation.
        """
        self._observers.append(observer)
        return lambda: self._observers.remove(observer)

    # Expiry

    def _ensureSweep(self):
        if self._sweepCall is None and self._heap:
            self._sweepCall = self._reactor.callLater(self.sweepInterval,
                                                      self._sweep)

    def _sweep(self):
        self._sweepCall = None
        now = self._reactor.seconds()
        heap = self._heap
        due = self._due
        touched = {}
        while heap and heap[0][0] <= now:
            when, aor = heapq.heappop(heap)
            if due.get(aor) == when:
                touched[aor] = None
        for aor in touched:
            current = self._current(aor, now)
            self._store(aor, current)
            if current:
                when = min(b.expires for b in current)
                due[aor] = when
                heapq.heappush(heap, (when, aor))
        self._ensureSweep()

    def stop(self):
        """
        Cancel the sweep timer and flush the journal (the service is
        stopping).
        """
        if self._sweepCall is not None and self._sweepCall.active():
            self._sweepCall.cancel()
        self._sweepCall = None
        if self.journal is not None:
            self.journal.stop()


def instanceId(value):
    """
    The instance id of a C{+sip.instance} Contact parameter (RFC 5626
    section 4.1: a quoted C{<urn>}), compared without quotes, case
    insensitively; L{None} for none.
    """
    if value is None:
        return None
    text = value.strip().strip('"').strip()
    return text.lower() or None


def _preference(binding):
    return -binding.q


def sameBinding(binding, key, instance, regId):
    """
    Whether a REGISTER's Contact (the L{comparisonKey} C{key} of its URI,
    its instance id and C{reg-id}) updates C{binding}: RFC 5626 section 6,
    the same instance id and C{reg-id} (whatever the URI: a client that
    connects again has a new port); with an instance id and no C{reg-id},
    the same instance id without one (RFC 5627); else the same URI (RFC
    3261 section 10.3).
    """
    if instance is not None:
        return instanceId(binding.instance) == instance and \
            binding.regId == regId
    known = binding.key
    if known is None:
        known = binding.key = comparisonKey(binding.uri)
    return known == key


def _seconds(text):
    text = text.strip()
    if not text.isdigit() or len(text) > 10:
        return None
    return int(text)


def _stripParams(value):
    """
    A Contact value without the header parameters the registrar owns
    (C{expires}, C{q}): those are written anew in the C{200}.  The others
    (C{+sip.instance}, C{reg-id} ...) are kept as written.
    """
    value = value.strip()
    lt = value.find("<", quotedEnd(value))
    end = -1 if lt < 0 else value.find(">", lt)
    if end < 0:
        head, _, params = value.partition(";")
        value = f"<{head.strip()}>"
        params = ";" + params if params else ""
    else:
        params = value[end + 1:]
        value = value[:end + 1]
    kept = [p.strip() for p in HEADER_PARAMETER.findall(params)
            if p.strip() and p.strip().split("=", 1)[0].strip().lower()
            not in ("expires", "q")]
    return value + "".join(";" + p for p in kept)


@compiledApart
def contactHeaderValues(bindings, now, prefix=""):
    """
    The Contact values of a C{200} to a REGISTER: each binding with its
    remaining time and preference, after C{prefix} (the home's fast path
    gives C{"Contact: "} and has its header lines).
    """
    values = []
    for b in bindings:
        value = f"{prefix}{b.contact};expires={b.remaining(now)}"
        if b.q != 1.0:
            value += f";q={b.q:g}"
        values.append(value)
    return values
