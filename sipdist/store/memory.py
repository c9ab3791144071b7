# -*- test-case-name: tests.test_store -*-
"""
The in-memory assignment store (C{memory:}), and the tables the file store
keeps in memory too.

Lookups are dictionary reads returning a Deferred that has already fired.
"""

from twisted.internet.defer import fail, succeed
from twisted.logger import Logger
from zope.interface import implementer

from sipdist.interfaces import IAssignmentStore
from sipdist.store import (
    InvalidValue, ServerChanged, ServerExists, ServerInUse, ServerRecord,
    StoreError, UnknownServer, UnknownUser, UserChanged, Watchers, aorKey,
    checkServerId,
)


class Tables:
    """
    Users, servers and per-server counts, changed only through L{apply} so
    that the counts stay right.

    @ivar users: normalised AOR to server id (the id object is the server
        record's, so a million users share a handful of strings).
    @ivar servers: server id to L{ServerRecord}.
    @ivar counts: server id to number of users.
    """

    def __init__(self):
        self.users = {}
        self.servers = {}
        self.counts = {}
        self._serverList = None

    def serverList(self):
        """
        The server records sorted by id, as a L{tuple}: the same object
        until a server changes.
        """
        listed = self._serverList
        if listed is None:
            servers = self.servers
            listed = self._serverList = tuple(servers[k]
                                              for k in sorted(servers))
        return listed

    def apply(self, events):
        users, servers, counts = self.users, self.servers, self.counts
        for event in events:
            if type(event) is UserChanged:
                if event.old is not None:
                    counts[event.old] -= 1
                if event.new is None:
                    del users[event.aor]
                else:
                    sid = servers[event.new].id
                    users[event.aor] = sid
                    counts[sid] += 1
            else:
                self._serverList = None
                if event.new is None:
                    del servers[event.serverId]
                    del counts[event.serverId]
                else:
                    servers[event.serverId] = event.new
                    counts.setdefault(event.serverId, 0)

    # Computing changes: each returns (events, result) or raises StoreError.

    def _serverId(self, serverId):
        checkServerId(serverId)
        record = self.servers.get(serverId)
        if record is None:
            raise UnknownServer(f"no server {serverId!r}")
        return record.id

    def changeAssign(self, aor, serverId, mustExist=False):
        key = aorKey(aor)
        sid = self._serverId(serverId)
        old = self.users.get(key)
        if mustExist and old is None:
            raise UnknownUser(f"{key} has no assignment")
        return ([] if old == sid else [UserChanged(key, old, sid)]), old

    def changeRemove(self, aor):
        key = aorKey(aor)
        old = self.users.get(key)
        if old is None:
            raise UnknownUser(f"{key} has no assignment")
        return [UserChanged(key, old, None)], old

    def changeAssignMany(self, pairs):
        wanted = {}
        for aor, serverId in pairs:
            wanted[aorKey(aor)] = self._serverId(serverId)
        users = self.users
        events = [UserChanged(key, users.get(key), sid)
                  for key, sid in wanted.items() if users.get(key) != sid]
        return events, len(wanted)

    def changeRemoveMany(self, aors):
        users = self.users
        keys = dict.fromkeys(aorKey(aor) for aor in aors)
        events = [UserChanged(key, users[key], None)
                  for key in keys if key in users]
        return events, len(events)

    def changeAddServer(self, record):
        if not isinstance(record, ServerRecord):
            raise InvalidValue(f"not a server record: {record!r}")
        if record.id in self.servers:
            raise ServerExists(f"server {record.id!r} exists already")
        return [ServerChanged(record.id, None, record)], record

    def changeUpdateServer(self, serverId, uri=None, weight=None, state=None,
                           tcpUri=None, tlsUri=None):
        old = self.servers.get(self._serverId(serverId))
        new = old.updated(uri, weight, state, tcpUri, tlsUri)
        return ([] if new == old else [ServerChanged(old.id, old, new)]), new

    def changeRemoveServer(self, serverId):
        sid = self._serverId(serverId)
        if self.counts[sid]:
            raise ServerInUse(f"server {sid!r} still has {self.counts[sid]} "
                              f"users; move them first")
        return [ServerChanged(sid, self.servers[sid], None)], self.servers[sid]

    def usersOf(self, serverId, limit=None):
        sid = self._serverId(serverId)
        result = []
        if limit is not None and limit <= 0:
            return result
        for aor, owner in self.users.items():
            if owner == sid:
                result.append(aor)
                if limit is not None and len(result) >= limit:
                    break
        return result


@implementer(IAssignmentStore)
class MemoryAssignmentStore:
    """
    Assignments held in dictionaries; gone when the process ends.

    @param reactor: unused, accepted so that every provider is built alike.
    """

    _log = Logger()

    def __init__(self, reactor=None):
        self._reactor = reactor
        self._tables = Tables()
        self._watchers = Watchers()

    # Reading.

    def lookupUser(self, aor):
        try:
            key = aorKey(aor)
        except InvalidValue:
            return fail()
        return succeed(self._tables.users.get(key))

    def getServer(self, serverId):
        return succeed(self._tables.servers.get(serverId))

    def answersAtOnce(self, aor):
        """
        Whether L{lookupUser} of C{aor}, L{getServer} and L{listServers}
        answer now, from memory, without starting any I/O or refresh: always
        here.  (Not part of L{IAssignmentStore}: the fast paths of
        L{sipdist.roles} use it when a store has it.)
        """
        return True

    def listServers(self):
        return succeed(list(self._tables.serverList()))

    # Reading from memory, without a Deferred (not part of
    # IAssignmentStore: the fast paths of sipdist.roles use these when a
    # store has them).

    def userAtOnce(self, aor):
        """
        L{lookupUser}'s answer, now.

        @raise InvalidValue: for an address-of-record L{lookupUser} fails.
        """
        return self._tables.users.get(aorKey(aor))

    def serverAtOnce(self, serverId):
        """
        L{getServer}'s answer, now.
        """
        return self._tables.servers.get(serverId)

    def serversAtOnce(self):
        """
        L{listServers}'s answer, now, as a L{tuple} that stays the same
        object until a server changes.
        """
        return self._tables.serverList()

    def countUsers(self):
        return succeed(dict(self._tables.counts))

    def usersOf(self, serverId, limit=None):
        return self._read(self._tables.usersOf, serverId, limit)

    def _read(self, f, *args):
        try:
            return succeed(f(*args))
        except StoreError:
            return fail()

    # Writing.

    def assignUser(self, aor, serverId):
        return self._mutate(self._tables.changeAssign, aor, serverId)

    def moveUser(self, aor, serverId):
        return self._mutate(self._tables.changeAssign, aor, serverId, True)

    def removeUser(self, aor):
        return self._mutate(self._tables.changeRemove, aor)

    def assignUsers(self, pairs):
        return self._mutate(self._tables.changeAssignMany, pairs)

    def removeUsers(self, aors):
        return self._mutate(self._tables.changeRemoveMany, aors)

    def addServer(self, record):
        return self._mutate(self._tables.changeAddServer, record)

    def updateServer(self, serverId, uri=None, weight=None, state=None,
                     tcpUri=None, tlsUri=None):
        return self._mutate(self._tables.changeUpdateServer, serverId,
                            uri, weight, state, tcpUri, tlsUri)

    def removeServer(self, serverId):
        return self._mutate(self._tables.changeRemoveServer, serverId)

    def _mutate(self, compute, *args):
        try:
            events, result = compute(*args)
        except Exception:
            return fail()
        self._tables.apply(events)
        self._notify(events)
        return succeed(result)

    def _notify(self, events):
        if self._watchers:
            for event in events:
                self._watchers.notify(event)

    # Watching.

    def watch(self, callback):
        return self._watchers.add(callback)

    def close(self):
        return succeed(None)
