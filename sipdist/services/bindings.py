# -*- test-case-name: tests.test_bindings -*-
"""
Registrations that survive a restart of a home: the registrar's bindings
written behind to a local journal file, and read back on start.

Why a journal of JSON lines, not sqlite3: the registrar runs on the reactor
thread, so nothing may be written per REGISTER.  A change only marks its
address-of-record dirty (a set insertion); a timer of the injected reactor
(every C{flushInterval}, 1 s by default) writes one line per dirty
address-of-record -- its whole current set of bindings -- in one C{write}.
A user refreshing ten times within a second costs one line; a storm of
N users costs N lines a second, appended sequentially.  sqlite3 would bring
the same batching only with transactions on the same timer, plus a B-tree
and a second thread or blocking commits; an append-only file whose last
line per address-of-record wins needs neither, and is read back with
nothing but C{json}.

The reactor is never held long: a flush writes at most C{chunk} (2000)
lines and leaves the rest to the reactor's next turns (a storm of many
thousand users a second is written in slices of some 30 ms).

Bounded: when the file holds more than C{compactRatio} times as many lines
as there are registered addresses-of-record (and at least C{minCompact}),
it is rewritten with one line per live address-of-record, C{chunk} lines
per turn of the reactor, into a temporary file renamed over the old one
at the end (a crash during compaction leaves the old file, complete).
Changes made meanwhile go on to the old file, and are written again to
the new one before the rename.  A start compacts it too, at once.

Durability: lines are handed to the operating system at each flush but not
C{fsync}ed (that would block the reactor).  A killed process (SIGKILL, a
crash) loses what changed since the last flush -- at most C{flushInterval}
seconds of registrations (plus the slices of a storm not yet written); a
stopped process (SIGTERM) flushes on the way out and loses nothing; an
operating system crash may lose more.

Reading back (L{BindingsJournal.load}): a line cut short or not a valid
record ends the reading there, with one log line; what came before is
kept, never a crash.  Expiry is written as absolute time (reactor seconds:
the wall clock in a real reactor), so bindings that expired while the home
was down are not restored.  A binding's flow is the transport connection
its REGISTER came on:

  - UDP: restored as the same UDP flow (our port and the client's address,
    as received/rport saw it), so a client behind NAT is still reached;
  - TCP or TLS: that connection died with the process.  The binding is
    restored only when it has a Path (the edge or distributor in front
    still holds the client's connection) or a Contact reachable over UDP
    (sent to as the Contact says); otherwise it is dropped and the client
    must register again (RFC 5626 clients notice their flow is gone).
"""

import json
import os

from twisted.logger import Logger

from sipdist.services.registrar import Binding
from sipdist.sip.message import parseNameAddr
from sipdist.sip.uri import URIError

FLUSH_INTERVAL = 1.0
COMPACT_RATIO = 4
MIN_COMPACT = 1000
MAX_LINE = 256 * 1024
CHUNK = 2000


class _Compaction:
    """
    A compaction under way: the temporary file, the addresses-of-record
    still to write, those changed since it began, the lines written.
    """

    def __init__(self, file, pending):
        self.file = file
        self.pending = pending
        self.changed = set()
        self.written = 0


class BindingsJournal:
    """
    The registrar's bindings, written behind to C{path}.

    The registrar calls L{changed} whenever the bindings of an
    address-of-record change; L{load} gives what to restore on start;
    L{stop} flushes.

    @ivar path: the file.
    @ivar flushInterval: seconds between two flushes (a change waits at
        most this long to be written).
    @ivar compactRatio: lines per registered address-of-record past which
        the file is compacted ...
    @ivar minCompact: ... when it also holds more lines than this.
    @ivar chunk: lines written in one turn of the reactor at most.
    @ivar lines: lines in the file now.
    @ivar flushes: flushes that wrote something.
    @ivar compactions: rewrites of the file.
    @ivar writeErrors: flushes the operating system refused.
    """

    _log = Logger()

    def __init__(self, reactor, path, flushInterval=FLUSH_INTERVAL,
                 compactRatio=COMPACT_RATIO, minCompact=MIN_COMPACT,
                 chunk=CHUNK):
        self._reactor = reactor
        self.path = path
        self.flushInterval = flushInterval
        self.compactRatio = compactRatio
        self.minCompact = minCompact
        self.chunk = chunk
        self._state = {}
        self._dirty = set()
        self._file = None
        self._call = None
        self._compaction = None
        self._compactCall = None
        self.lines = 0
        self.flushes = 0
        self.compactions = 0
        self.writeErrors = 0

    # The registrar's side

    def changed(self, aor, bindings):
        """
        The bindings of C{aor} are now C{bindings} (a list the registrar
        no longer changes in place; empty: none).  Written at the next
        flush.
        """
        if bindings:
            self._state[aor] = bindings
        else:
            self._state.pop(aor, None)
        self._dirty.add(aor)
        if self._compaction is not None:
            self._compaction.changed.add(aor)
        if self._call is None:
            self._call = self._reactor.callLater(self.flushInterval,
                                                 self.flush)

    def flush(self):
        """
        Write dirty addresses-of-record, one line each, at most C{chunk}
        of them in one write (the rest right after, at the reactor's next
        turn); start a compaction when the file has grown past its bound.
        """
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
        if not self._dirty:
            return
        now = self._reactor.seconds()
        batch = [self._dirty.pop()
                 for _ in range(min(self.chunk, len(self._dirty)))]
        text = "".join(
            _line(aor, self._state.get(aor, ()), now) for aor in batch)
        try:
            if self._file is None:
                self._makeDirectory()
                self._file = open(self.path, "a", encoding="utf-8")
            self._file.write(text)
            self._file.flush()
        except OSError as e:
            self.writeErrors += 1
            self._log.error("bindings file {path}: cannot write: {error}",
                            path=self.path, error=e.strerror)
            self._closeFile()
            # Written in full by the next compaction that succeeds.
            self.lines = float("inf")
            return
        self.flushes += 1
        self.lines += len(batch)
        if self._dirty:
            self._call = self._reactor.callLater(0, self.flush)
        if self._compaction is None and self.lines > max(
                self.minCompact, self.compactRatio * len(self._state)):
            self._startCompaction()

    def compact(self):
        """
        Rewrite the file at once with one line per address-of-record that
        has live bindings (on start, before the server serves).
        """
        self._abortCompaction()
        now = self._reactor.seconds()
        lines = [_line(aor, bindings, now)
                 for aor, bindings in self._state.items()
                 if any(b.expires > now for b in bindings)]
        tmp = self.path + ".tmp"
        try:
            self._makeDirectory()
            with open(tmp, "w", encoding="utf-8") as f:
                f.write("".join(lines))
            self._closeFile()
            os.replace(tmp, self.path)
        except OSError as e:
            self.writeErrors += 1
            self._log.error("bindings file {path}: cannot compact: {error}",
                            path=self.path, error=e.strerror)
            return
        self._dirty.clear()
        self.lines = len(lines)
        self.compactions += 1

    def _startCompaction(self):
        """
        Rewrite the file in the background: C{chunk} addresses-of-record
        per turn of the reactor into a temporary file, while flushes go on
        appending to the old one; then those that changed meanwhile, as
        they are now; then the temporary file replaces the old.
        """
        try:
            tmp = open(self.path + ".tmp", "w", encoding="utf-8")
        except OSError as e:
            self.writeErrors += 1
            self._log.error("bindings file {path}: cannot compact: {error}",
                            path=self.path, error=e.strerror)
            return
        self._compaction = _Compaction(tmp, list(self._state))
        self._compactCall = self._reactor.callLater(0, self._compactStep)

    def _compactStep(self):
        self._compactCall = None
        compaction = self._compaction
        now = self._reactor.seconds()
        last = not compaction.pending[self.chunk:]
        batch = compaction.pending[-self.chunk:]
        del compaction.pending[-self.chunk:]
        lines = []
        for aor in batch:
            bindings = self._state.get(aor)
            if bindings and any(b.expires > now for b in bindings):
                lines.append(_line(aor, bindings, now))
        if last:
            lines += [_line(aor, self._state.get(aor, ()), now)
                      for aor in compaction.changed]
        try:
            compaction.file.write("".join(lines))
            compaction.written += len(lines)
            if last:
                compaction.file.close()
                self._closeFile()
                os.replace(compaction.file.name, self.path)
        except OSError as e:
            self.writeErrors += 1
            self._log.error("bindings file {path}: cannot compact: {error}",
                            path=self.path, error=e.strerror)
            self._abortCompaction()
            return
        if not last:
            self._compactCall = self._reactor.callLater(0, self._compactStep)
            return
        self._compaction = None
        self.lines = compaction.written
        self.compactions += 1

    def _abortCompaction(self):
        if self._compactCall is not None and self._compactCall.active():
            self._compactCall.cancel()
        self._compactCall = None
        compaction, self._compaction = self._compaction, None
        if compaction is not None:
            try:
                compaction.file.close()
                os.remove(compaction.file.name)
            except OSError:
                pass

    def stop(self):
        """
        Flush everything and close (the service is stopping); a
        compaction under way is given up (the file it would replace is
        complete).
        """
        self._abortCompaction()
        while self._dirty:
            self.flush()
            if self._file is None:
                # The write failed (logged): what is left is lost.
                break
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
        self._closeFile()

    def _makeDirectory(self):
        directory = os.path.dirname(self.path)
        if directory:
            os.makedirs(directory, exist_ok=True)

    def _closeFile(self):
        if self._file is not None:
            try:
                self._file.close()
            except OSError:
                pass
            self._file = None

    # Start

    def load(self, flowByToken=None, hasUDP=True):
        """
        Read the file back: the bindings to restore, by address-of-record.
        The file is then compacted to them.

        @param flowByToken: C{token -> flow or None} (the transport
            layer's C{flowByToken}) to restore UDP flows.
        @param hasUDP: whether this server can send over UDP (a binding
            whose TCP/TLS flow is gone is kept for a UDP Contact only).
        @rtype: L{dict} of L{list} of L{Binding}
        """
        now = self._reactor.seconds()
        records = {}
        try:
            f = open(self.path, "rb")
        except FileNotFoundError:
            # The first start: the compaction below makes the file (and
            # says at once when it cannot be written).
            f = None
        except OSError as e:
            self._log.error("bindings file {path}: cannot read: {error}; "
                            "starting with no registrations",
                            path=self.path, error=e.strerror)
            return {}
        if f is not None:
            try:
                with f:
                    self._read(f, records)
            except OSError as e:
                self._log.error("bindings file {path}: cannot read: {error}; "
                                "kept what was read before",
                                path=self.path, error=e.strerror)
        restored = {}
        dropped = 0
        for aor, items in records.items():
            bindings = []
            for item in items:
                binding = _restore(item, now, flowByToken, hasUDP)
                if binding is None:
                    dropped += 1
                else:
                    bindings.append(binding)
            if bindings:
                restored[aor] = bindings
        self._state = dict(restored)
        self._dirty.clear()
        self.compact()
        self._log.info(
            "bindings file {path}: restored {bindings} bindings of {aors} "
            "users ({dropped} expired or unreachable dropped)",
            path=self.path, aors=len(restored), dropped=dropped,
            bindings=sum(len(b) for b in restored.values()))
        return restored

    def _read(self, f, records):
        """
        Read records from C{f} into C{records} (the last one of an
        address-of-record wins) up to the end or the first damage.
        """
        number = 0
        while True:
            raw = f.readline(MAX_LINE + 1)
            if not raw:
                return
            number += 1
            record = _parse(raw)
            if record is None:
                self._log.warn(
                    "bindings file {path} damaged at line {number}: read up "
                    "to there, the rest is dropped",
                    path=self.path, number=number)
                return
            records[record[0]] = record[1]


def _line(aor, bindings, now):
    return json.dumps(
        {"aor": aor,
         "bindings": [_record(b) for b in bindings if b.expires > now]},
        separators=(", ", ": ")) + "\n"


def _record(binding):
    flow = binding.flow
    if flow is None:
        flowRecord = None
    else:
        flowRecord = {"transport": getattr(flow, "transport", None)}
        if flowRecord["transport"] == "UDP":
            flowRecord["token"] = getattr(flow, "token", None)
    return {"contact": binding.contact, "expires": binding.expires,
            "q": binding.q, "callID": binding.callID, "cseq": binding.cseq,
            "path": list(binding.path), "instance": binding.instance,
            "regId": binding.regId, "flow": flowRecord}


def _parse(raw):
    """
    C{(aor, [binding record, ...])} from one line, or C{None} when the
    line is cut short or not a record.
    """
    if not raw.endswith(b"\n"):
        return None
    try:
        record = json.loads(raw.decode("utf-8"))
    except ValueError:
        return None
    if not isinstance(record, dict):
        return None
    aor, items = record.get("aor"), record.get("bindings")
    if not isinstance(aor, str) or not isinstance(items, list) \
            or not all(isinstance(i, dict) for i in items):
        return None
    return aor, items


def _restore(item, now, flowByToken, hasUDP):
    """
    A L{Binding} from its record, or C{None}: expired, unreadable, or its
    TCP/TLS flow gone with neither a Path nor a UDP Contact.
    """
    try:
        contact = item["contact"]
        expires = float(item["expires"])
        q = float(item.get("q", 1.0))
        cseq = int(item.get("cseq", 0))
        path = [str(p) for p in item.get("path") or ()]
        uri = parseNameAddr(contact)[1]
        flowRecord = item.get("flow") or {}
        transport = flowRecord.get("transport")
        token = flowRecord.get("token")
    except (KeyError, TypeError, ValueError, AttributeError, URIError):
        return None
    if expires <= now or not 0 <= q <= 1:
        return None
    flow = None
    if transport == "UDP":
        if flowByToken is not None and isinstance(token, str):
            flow = flowByToken(token)
    elif transport is not None and not path:
        contactTransport = uri.params.get("transport", "udp").lower()
        if not hasUDP or uri.scheme != "sip" or contactTransport != "udp":
            return None
    return Binding(
        contact=contact, uri=uri, expires=expires, q=q,
        callID=item.get("callID"), cseq=cseq, path=path, flow=flow,
        instance=item.get("instance"), regId=item.get("regId"))
