# -*- test-case-name: tests.test_admin -*-
"""
C{sipdist} commands administering the assignment store, for any store
string (C{--store}, default C{$SIPDIST_STORE} or
C{file:etc/assignments.conf}).

Each command prints its result on standard output, or one error line on
standard error and exits with status 1.
"""

import os
import sys

from twisted.internet.defer import ensureDeferred
from twisted.python import usage

from sipdist.commands.main import CommandError, OptionsAnywhere
from sipdist.store import (
    STATES, InvalidValue, ServerRecord, StoreError, aorKey, storeFromString,
)

DEFAULT_STORE = "file:etc/assignments.conf"


def defaultStore():
    """
    @return: C{$SIPDIST_STORE} if set, else L{DEFAULT_STORE}.
    """
    return os.environ.get("SIPDIST_STORE") or DEFAULT_STORE


class _StoreCommand(OptionsAnywhere):
    """
    A command working on a store; subclasses define C{act(store)}, a
    coroutine printing through C{self.out}.
    """

    # The store factory and output are attributes so that tests can run
    # commands in-process against one store.
    storeFactory = staticmethod(storeFromString)
    out = None
    closeStore = True

    def __init__(self):
        usage.Options.__init__(self)
        self["store"] = defaultStore()

    def opt_store(self, description):
        """
        The assignment store: memory:, file:PATH or ldap://HOST:PORT/BASE?...
        (default: $SIPDIST_STORE or file:etc/assignments.conf).
        """
        self["store"] = description

    opt_s = opt_store

    def print(self, line):
        (self.out or sys.stdout).write(line + "\n")

    def run(self, reactor):
        return ensureDeferred(self._run(reactor))

    async def _run(self, reactor):
        try:
            store = self.storeFactory(reactor, self["store"])
        except StoreError as e:
            raise CommandError(str(e)) from None
        try:
            return await self.act(store)
        except StoreError as e:
            raise CommandError(str(e)) from None
        finally:
            if self.closeStore:
                await store.close()


def _aor(text):
    try:
        return aorKey(text)
    except InvalidValue as e:
        raise usage.UsageError(str(e)) from None


_TCP_HELP = ("the URI for clients on TCP (default: URI with "
             "transport=tcp, when URI is a plain sip: URI)")
_TLS_HELP = ("the URI for clients on TLS, sips: or transport=tls (default: "
             "none; TLS clients are refused rather than sent to URI)")


class ServerAdd(_StoreCommand):
    synopsis = ("[--weight=N] [--state=S] [--tcp-uri=URI] [--tls-uri=URI] "
                "ID URI")
    optParameters = [
        ["weight", "w", "1", "capacity weight, 0 to 1000000"],
        ["state", None, "active", f"one of {', '.join(STATES)}"],
        ["tcp-uri", None, None, _TCP_HELP],
        ["tls-uri", None, None, _TLS_HELP],
    ]

    def parseArgs(self, serverId, uri):
        try:
            self.record = ServerRecord(serverId, uri, self["weight"],
                                       self["state"], self["tcp-uri"],
                                       self["tls-uri"])
        except InvalidValue as e:
            raise usage.UsageError(str(e)) from None

    async def act(self, store):
        record = await store.addServer(self.record)
        self.print(f"added server {_describe(record)}")


class ServerList(_StoreCommand):
    synopsis = "[options]"

    async def act(self, store):
        servers = await store.listServers()
        counts = await store.countUsers()
        if not servers:
            self.print("no servers")
        for record in servers:
            self.print(f"{_describe(record)} users={counts.get(record.id, 0)}")


class ServerSet(_StoreCommand):
    synopsis = ("[--state=S] [--weight=N] [--uri=URI] [--tcp-uri=URI] "
                "[--tls-uri=URI] ID")
    optParameters = [
        ["state", None, None, f"one of {', '.join(STATES)}"],
        ["weight", "w", None, "capacity weight, 0 to 1000000"],
        ["uri", None, None, "the server's main SIP URI"],
        ["tcp-uri", None, None, "the URI for clients on TCP; "
                                "--tcp-uri= (empty) removes it"],
        ["tls-uri", None, None, "the URI for clients on TLS; "
                                "--tls-uri= (empty) removes it"],
    ]

    def parseArgs(self, serverId):
        self.serverId = serverId

    def postOptions(self):
        if all(self[name] is None for name in (
                "state", "weight", "uri", "tcp-uri", "tls-uri")):
            raise usage.UsageError("nothing to set: give --state, --weight, "
                                   "--uri, --tcp-uri or --tls-uri")

    async def act(self, store):
        # The transport URIs are passed only when given, so that providers
        # written before they existed keep working for the rest.
        record = await store.updateServer(self.serverId, self["uri"],
                                          self["weight"], self["state"],
                                          **_transportChanges(
                                              self["tcp-uri"],
                                              self["tls-uri"]))
        self.print(f"server {_describe(record)}")


class ServerRemove(_StoreCommand):
    synopsis = "[options] ID"

    def parseArgs(self, serverId):
        self.serverId = serverId

    async def act(self, store):
        record = await store.removeServer(self.serverId)
        self.print(f"removed server {record.id}")


class Assign(_StoreCommand):
    synopsis = "[options] AOR SERVER-ID"

    def parseArgs(self, aor, serverId):
        self.aor, self.serverId = _aor(aor), serverId

    async def act(self, store):
        old = await store.assignUser(self.aor, self.serverId)
        if old is None:
            self.print(f"{self.aor} assigned to {self.serverId}")
        elif old == self.serverId:
            self.print(f"{self.aor} already on {self.serverId}")
        else:
            self.print(f"{self.aor} moved from {old} to {self.serverId}")


class Move(Assign):
    synopsis = "[options] AOR SERVER-ID"

    async def act(self, store):
        old = await store.moveUser(self.aor, self.serverId)
        self.print(f"{self.aor} moved from {old} to {self.serverId}")


class Unassign(_StoreCommand):
    synopsis = "[options] AOR"

    def parseArgs(self, aor):
        self.aor = _aor(aor)

    async def act(self, store):
        old = await store.removeUser(self.aor)
        self.print(f"{self.aor} unassigned (was on {old})")


class Lookup(_StoreCommand):
    synopsis = "[options] AOR"

    def parseArgs(self, aor):
        self.aor = _aor(aor)

    async def act(self, store):
        serverId = await store.lookupUser(self.aor)
        if serverId is None:
            raise CommandError(f"{self.aor} has no assignment")
        record = await store.getServer(serverId)
        if record is None:
            self.print(f"{self.aor} {serverId} (no such server record)")
            return 1
        self.print(f"{self.aor} {serverId} {record.uri} state={record.state}"
                   f"{_transportURIs(record)}")


class Counts(_StoreCommand):
    synopsis = "[options]"

    async def act(self, store):
        counts = await store.countUsers()
        if not counts:
            self.print("no servers")
        for serverId in sorted(counts):
            self.print(f"{serverId} {counts[serverId]}")
        self.print(f"total {sum(counts.values())}")


class Import(_StoreCommand):
    synopsis = "[options] FILE"
    longdesc = ("Read FILE in the file store format ('server ID URI "
                "[weight=N] [state=S] [tcp-uri=URI] [tls-uri=URI]' and "
                "'user AOR SERVER-ID' lines, "
                "'#' comments): add or update its servers, then assign its "
                "users in one batch.  Nothing is changed if a line is bad.")

    def parseArgs(self, path):
        self.path = path

    async def act(self, store):
        from sipdist.store.file import parseAssignments
        try:
            with open(self.path, encoding="utf-8") as f:
                text = f.read()
        except (OSError, UnicodeDecodeError) as e:
            raise CommandError(f"cannot read {self.path}: "
                               f"{getattr(e, 'strerror', None) or e}") \
                from None
        tables = parseAssignments(text, self.path)
        added = updated = 0
        for record in tables.servers.values():
            current = await store.getServer(record.id)
            if current is None:
                await store.addServer(record)
                added += 1
            elif current != record:
                # A transport URI the file does not give is removed ("").
                changes = _transportChanges(
                    None if record.tcpUri == current.tcpUri
                    else record.tcpUri or "",
                    None if record.tlsUri == current.tlsUri
                    else record.tlsUri or "")
                await store.updateServer(record.id, record.uri, record.weight,
                                         record.state, **changes)
                updated += 1
        count = await store.assignUsers(tables.users.items())
        self.print(f"imported {self.path}: {added} servers added, "
                   f"{updated} updated, {count} users assigned")


def _transportChanges(tcpUri, tlsUri):
    changes = {}
    if tcpUri is not None:
        changes["tcpUri"] = tcpUri
    if tlsUri is not None:
        changes["tlsUri"] = tlsUri
    return changes


def _transportURIs(record):
    text = ""
    if record.tcpUri is not None:
        text += f" tcp-uri={record.tcpUri}"
    if record.tlsUri is not None:
        text += f" tls-uri={record.tlsUri}"
    return text


def _describe(record):
    return (f"{record.id} {record.uri} weight={record.weight} "
            f"state={record.state}{_transportURIs(record)}")


commands = [
    ("server-add", ServerAdd, "Add a home server to the assignment store"),
    ("server-list", ServerList, "List home servers with their user counts"),
    ("server-set", ServerSet,
     "Change a server's state, weight or URIs"),
    ("server-remove", ServerRemove, "Remove a server that has no users"),
    ("assign", Assign, "Assign a user to a server (or move it there)"),
    ("move", Move, "Move an assigned user to another server"),
    ("unassign", Unassign, "Remove a user's assignment"),
    ("lookup", Lookup, "Show the server a user is assigned to"),
    ("counts", Counts, "Show the number of users per server"),
    ("import", Import, "Import servers and assignments from a file"),
]


def commandsByName():
    """
    @return: list of C{(name, OptionsClass)} of the commands above.
    """
    return [(name, optionsClass) for name, optionsClass, _ in commands]
