# -*- test-case-name: tests.test_store_file -*-
"""
The file assignment store (C{file:PATH}): a text file a human can edit.

Format (see C{docs/stores.rst})::

    # comments run from '#' to the end of the line
    server home1 sip:127.0.0.1:5070 weight=10 state=active
    server home2 sip:127.0.0.1:5080 tls-uri=sips:127.0.0.1:5081
    user alice@example.com home1
    user sip:bob@example.com home2

Writes lock C{PATH.lock}, re-read the file if it changed, and replace it
atomically (temporary file in the same directory, C{fsync}, rename), keeping
comments, blank lines and the order of the lines.  The file is polled for
changes; a file with a bad line is reported (C{PATH:LINE: what}) and the
last good content keeps serving.

A reload of a file changed by someone else than a store (an editor, a copy,
a truncation) is refused when it would drop every server or more than
C{maxDrop} of the users (default half): an empty or cut-short file is a
fault, not a decision.  The refusal is logged in one line and the last
good content keeps serving.  Writes made through a store (the C{sipdist
store} commands, the monitor) record the stamp of the file they write in
C{PATH.lock}; a reload of that very file is never refused.  Files larger than C{THREAD_THRESHOLD} are
read and parsed in the reactor's thread pool when it has one.
"""

import errno
import fcntl
import os
import tempfile

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IReactorThreads
from twisted.internet.task import LoopingCall
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger

from sipdist.store import (
    InvalidValue, ServerChanged, ServerRecord, StoreConfigError,
    StoreUnavailable, UserChanged, aorKey,
)
from sipdist.store.memory import MemoryAssignmentStore, Tables

THREAD_THRESHOLD = 4 * 1024 * 1024
# The share of the users an external change of the file may drop.
MAX_DROP = 0.5
MAX_FILE_SIZE = 1024 * 1024 * 1024


def _fields(line):
    hash_ = line.find("#")
    if hash_ >= 0:
        line = line[:hash_]
    return line.split()


_SERVER_OPTIONS = ("weight", "state", "tcp-uri", "tls-uri")


def _serverFromFields(fields):
    if len(fields) < 3:
        raise InvalidValue("expected: server ID URI [weight=N] [state=S] "
                           "[tcp-uri=URI] [tls-uri=URI]")
    options = {}
    for item in fields[3:]:
        key, sep, value = item.partition("=")
        if not sep or key not in _SERVER_OPTIONS:
            raise InvalidValue(f"unknown server option {item!r} "
                               f"(weight=N, state=S, tcp-uri=URI, "
                               f"tls-uri=URI)")
        if key in options:
            raise InvalidValue(f"{key} given twice")
        options[key] = value
    return ServerRecord(fields[1], fields[2], options.get("weight", 1),
                        options.get("state", "active"),
                        options.get("tcp-uri"), options.get("tls-uri"))


def formatServer(record):
    line = (f"server {record.id} {record.uri} weight={record.weight} "
            f"state={record.state}")
    if record.tcpUri is not None:
        line += f" tcp-uri={record.tcpUri}"
    if record.tlsUri is not None:
        line += f" tls-uri={record.tlsUri}"
    return line


def parseAssignments(text, path="<string>"):
    """
    Parse the content of an assignment file.

    @return: a L{Tables}.
    @raise StoreConfigError: C{PATH:LINE: what is wrong} for the first bad
        line.
    """
    tables = Tables()
    servers, users, counts = tables.servers, tables.users, tables.counts
    userLines = []
    for number, line in enumerate(text.splitlines(), 1):
        fields = _fields(line)
        if not fields:
            continue
        try:
            kind = fields[0]
            if kind == "user":
                if len(fields) != 3:
                    raise InvalidValue("expected: user AOR SERVER-ID")
                userLines.append((number, fields[1], fields[2]))
            elif kind == "server":
                record = _serverFromFields(fields)
                if record.id in servers:
                    raise InvalidValue(f"server {record.id!r} listed twice")
                servers[record.id] = record
                counts[record.id] = 0
            else:
                raise InvalidValue(f"unknown keyword {kind!r} "
                                   f"(expected 'server' or 'user')")
        except InvalidValue as e:
            raise StoreConfigError(f"{path}:{number}: {e}") from None
    for number, aor, serverId in userLines:
        try:
            key = aorKey(aor)
            record = servers.get(serverId)
            if record is None:
                raise InvalidValue(f"no server {serverId!r} in this file")
            if key in users:
                raise InvalidValue(f"{key} listed twice")
        except InvalidValue as e:
            raise StoreConfigError(f"{path}:{number}: {e}") from None
        users[key] = record.id
        counts[record.id] += 1
    return tables


def renderAssignments(text, tables):
    """
    The content of an assignment file holding C{tables}, keeping the lines
    of C{text} (the current content) that are still right, its comments and
    its order; new servers follow the last server line, new users go last.
    """
    servers, users = tables.servers, tables.users
    out, seenServers, seenUsers = [], set(), set()
    lastServer = None
    for line in text.splitlines():
        fields = _fields(line)
        if not fields:
            out.append(line)
            continue
        comment = line[line.find("#"):] if "#" in line else ""
        if fields[0] == "server" and len(fields) >= 2:
            record = servers.get(fields[1])
            if record is None or record.id in seenServers:
                continue
            seenServers.add(record.id)
            try:
                same = _serverFromFields(fields) == record
            except InvalidValue:
                same = False
            out.append(line if same else
                       f"{formatServer(record)} {comment}".rstrip())
            lastServer = len(out)
        elif fields[0] == "user" and len(fields) >= 2:
            try:
                key = aorKey(fields[1])
            except InvalidValue:
                continue
            sid = users.get(key)
            if sid is None or key in seenUsers:
                continue
            seenUsers.add(key)
            if len(fields) == 3 and fields[2] == sid:
                out.append(line)
            else:
                out.append(f"user {fields[1]} {sid} {comment}".rstrip())
        else:
            out.append(line)
    newServers = [formatServer(servers[k]) for k in sorted(servers)
                  if k not in seenServers]
    if newServers:
        at = len(out) if lastServer is None else lastServer
        if lastServer is None:
            at = 0
            while at < len(out) and not _fields(out[at]):
                at += 1
        out[at:at] = newServers
    out.extend(f"user {key} {sid}" for key, sid in users.items()
               if key not in seenUsers)
    return "\n".join(out) + "\n" if out else ""


def writeAtomically(path, text, beforeReplace=None):
    """
    Replace the file at C{path} with C{text}: a reader sees the old content
    or the new, never a part.

    @param beforeReplace: called with the stamp the new file will have
        (a rename keeps inode and modification time), before it replaces
        the old one.

    @raise OSError: if it cannot be written; the old file is left as it was.
    """
    directory = os.path.dirname(os.path.abspath(path))
    fd, temp = tempfile.mkstemp(
        dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.chmod(temp, os.stat(path).st_mode & 0o7777)
        except FileNotFoundError:
            os.chmod(temp, 0o644)
        if beforeReplace is not None:
            beforeReplace(_stamp(temp))
        os.replace(temp, path)
    except BaseException:
        try:
            os.unlink(temp)
        except OSError:
            pass
        raise
    try:
        dirfd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dirfd)
    except OSError:
        pass
    finally:
        os.close(dirfd)


def _stamp(path):
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


def _formatStamp(stamp):
    return " ".join(str(n) for n in stamp) + "\n"


def _recordedStamp(path):
    """
    The stamp the last store write recorded in C{PATH.lock}, or L{None}.
    """
    try:
        with open(path + ".lock", "r", encoding="ascii") as f:
            text = f.read(200)
    except (OSError, UnicodeDecodeError):
        return None
    try:
        return tuple(int(n) for n in text.split())
    except ValueError:
        return None


def dropProblem(old, new, maxDrop):
    """
    Why replacing the tables C{old} by C{new} looks like a damaged file
    rather than a decision, or L{None} if it does not.

    @param maxDrop: the share (0 to 1) of C{old}'s users C{new} may lack.
    """
    if old.servers and not new.servers:
        return (f"it has no servers (had {len(old.servers)}) and "
                f"{len(new.users)} users (had {len(old.users)})")
    total = len(old.users)
    if not total:
        return None
    newUsers = new.users
    dropped = sum(1 for key in old.users if key not in newUsers)
    if dropped > maxDrop * total:
        return (f"it drops {dropped} of {total} users "
                f"({dropped / total:.0%}), more than maxDrop={maxDrop:g}")
    return None


def _read(path):
    try:
        with open(path, "r", encoding="utf-8") as f:
            stamp = _stamp(path)
            text = f.read(MAX_FILE_SIZE + 1)
    except FileNotFoundError:
        return None, ""
    except UnicodeDecodeError as e:
        raise StoreConfigError(f"{path}: not UTF-8 text ({e.reason})") from None
    except OSError as e:
        raise StoreConfigError(f"{path}: {e.strerror}") from None
    if len(text) > MAX_FILE_SIZE:
        raise StoreConfigError(f"{path}: larger than {MAX_FILE_SIZE} bytes")
    return stamp, text


def _readAndParse(path):
    stamp, text = _read(path)
    return stamp, parseAssignments(text, path)


def diffTables(old, new):
    """
    @return: the L{ServerChanged} and L{UserChanged} events turning C{old}
        into C{new}: servers added or changed, users, servers removed.
    """
    events = []
    for sid, record in new.servers.items():
        if old.servers.get(sid) != record:
            events.append(ServerChanged(sid, old.servers.get(sid), record))
    oldUsers, newUsers = old.users, new.users
    for key, sid in newUsers.items():
        before = oldUsers.get(key)
        if before != sid:
            events.append(UserChanged(key, before, sid))
    for key, sid in oldUsers.items():
        if key not in newUsers:
            events.append(UserChanged(key, sid, None))
    for sid, record in old.servers.items():
        if sid not in new.servers:
            events.append(ServerChanged(sid, record, None))
    return events


class FileAssignmentStore(MemoryAssignmentStore):
    """
    Assignments in a text file, served from memory.

    @param path: the file; it need not exist yet (an empty store), its
        directory must.
    @param poll: seconds between checks of the file for changes; 0 to
        never check (one-shot commands).
    @param lockTimeout: seconds a write waits for another writer's lock.
    @param maxDrop: the share of the users (0 to 1) a reload of a file
        changed outside a store may drop (see the module docstring).
    @raise StoreConfigError: the directory does not exist or the file is not
        valid.

    @ivar lastError: the message of the last failed reload, or L{None}.
    """

    _log = Logger()

    def __init__(self, reactor, path, poll=1.0, lockTimeout=5.0,
                 maxDrop=MAX_DROP):
        MemoryAssignmentStore.__init__(self, reactor)
        self.path = path
        self.maxDrop = maxDrop
        self.lastError = None
        self._lockTimeout = lockTimeout
        self._generation = 0
        self._reloading = False
        self._badStamp = False
        directory = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(directory):
            raise StoreConfigError(f"{path}: directory {directory} "
                                   f"does not exist")
        self._stamp, self._tables = _readAndParse(path)
        if self._stamp is None:
            self._log.warn("assignment file {path} does not exist yet: "
                           "empty store", path=path)
        self._poller = None
        if poll and poll > 0 and reactor is not None:
            self._poller = LoopingCall(self.checkFile)
            self._poller.clock = reactor
            self._poller.start(poll, now=False)

    def close(self):
        if self._poller is not None and self._poller.running:
            self._poller.stop()
        return succeed(None)

    # Reloading.

    def checkFile(self):
        """
        Reload the file if it changed on disk since it was last read or
        written.

        @return: L{Deferred} firing when done (with L{None}; a bad file is
            logged and kept in L{lastError}).
        """
        current = _stamp(self.path)
        if self._reloading or current in (self._stamp, self._badStamp):
            return succeed(None)
        generation = self._generation
        big = (os.path.getsize(self.path) > THREAD_THRESHOLD
               if os.path.exists(self.path) else False)
        if big and IReactorThreads.providedBy(self._reactor):
            self._reloading = True
            d = deferToThreadPool(self._reactor,
                                  self._reactor.getThreadPool(),
                                  self._readAndParseOrFail)
        else:
            d = succeed(self._readAndParseOrFail())

        def loaded(result):
            self._reloading = False
            if generation != self._generation:
                return None
            if isinstance(result, StoreConfigError):
                self._rejected(result)
            else:
                self._replace(*result)

        d.addCallback(loaded)
        return d

    def _readAndParseOrFail(self):
        stamp = _stamp(self.path)
        if stamp is None:
            error = StoreConfigError(f"{self.path}: file is gone; "
                                     f"keeping the last good content")
            error.stamp = None
            return error
        try:
            stamp, tables = _readAndParse(self.path)
        except StoreConfigError as e:
            # Keep the stamp of the bad file: it is not read again until
            # it changes.
            e.stamp = stamp
            return e
        error = self._guard(stamp, tables)
        if error is not None:
            return error
        return stamp, tables

    def _guard(self, stamp, tables):
        """
        A L{StoreConfigError} refusing C{tables} read from a file changed
        outside a store that drops too much, or L{None}.
        """
        if stamp is None or stamp == _recordedStamp(self.path):
            return None
        problem = dropProblem(self._tables, tables, self.maxDrop)
        if problem is None:
            return None
        error = StoreConfigError(
            f"{self.path}: refusing the changed file: {problem} (a damaged "
            f"file? remove users with sipdist unassign, or "
            f"raise maxDrop)")
        error.stamp = stamp
        return error

    def _rejected(self, error):
        message = str(error)
        self._badStamp = getattr(error, "stamp", _stamp(self.path))
        if message != self.lastError:
            self._log.error("{error}; serving the last good content",
                            error=message)
        self.lastError = message

    def _replace(self, stamp, tables):
        events = diffTables(self._tables, tables)
        self._stamp, self._tables, self.lastError = stamp, tables, None
        self._badStamp = False
        self._log.info("reloaded {path}: {servers} servers, {users} users, "
                       "{changes} changes", path=self.path,
                       servers=len(tables.servers), users=len(tables.users),
                       changes=len(events))
        self._notify(events)

    # Writing.

    def _mutate(self, compute, *args):
        d = self._lock()
        d.addCallback(self._mutateLocked, compute, args)
        return d

    def _mutateLocked(self, lock, compute, args):
        try:
            stamp, text = _read(self.path)
            if stamp != self._stamp:
                tables = parseAssignments(text, self.path)
                error = self._guard(stamp, tables)
                if error is not None:
                    self._rejected(error)
                    raise error
                self._replace(stamp, tables)
            events, result = compute(*args)
            if not events:
                return result
            self._tables.apply(events)
            try:
                writeAtomically(self.path,
                                renderAssignments(text, self._tables),
                                lambda stamp: _recordStamp(lock, stamp))
            except OSError as e:
                self._tables.apply(_inverse(events))
                raise StoreUnavailable(
                    f"cannot write {self.path}: {e.strerror}") from None
            self._generation += 1
            self._stamp = _stamp(self.path)
        finally:
            _unlock(lock)
        self._notify(events)
        return result

    def _lock(self):
        lockPath = self.path + ".lock"
        try:
            fd = os.open(lockPath, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            return fail(StoreUnavailable(f"cannot open {lockPath}: "
                                         f"{e.strerror}"))
        step = 0.05
        tries = [max(1, int(self._lockTimeout / step))]
        d = Deferred()

        def attempt():
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                if e.errno not in (errno.EAGAIN, errno.EACCES):
                    os.close(fd)
                    d.errback(StoreUnavailable(f"cannot lock {lockPath}: "
                                               f"{e.strerror}"))
                    return
                tries[0] -= 1
                if tries[0] <= 0 or self._reactor is None:
                    os.close(fd)
                    d.errback(StoreUnavailable(
                        f"{lockPath} is held by another writer"))
                    return
                self._reactor.callLater(step, attempt)
                return
            d.callback(fd)

        attempt()
        return d


def _recordStamp(fd, stamp):
    """
    Write C{stamp} into the lock file (open as C{fd}): the file with this
    stamp was written by a store, deliberately.
    """
    data = _formatStamp(stamp).encode("ascii")
    os.ftruncate(fd, 0)
    os.pwrite(fd, data, 0)


def _unlock(fd):
    try:
        fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _inverse(events):
    inverse = []
    for event in reversed(events):
        if type(event) is UserChanged:
            inverse.append(UserChanged(event.aor, event.new, event.old))
        else:
            inverse.append(ServerChanged(event.serverId, event.new, event.old))
    return inverse
