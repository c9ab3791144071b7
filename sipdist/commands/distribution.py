# -*- test-case-name: tests.test_distribution_cli -*-
"""
C{sipdist} commands changing the distribution of users over the home
servers, for any store string (C{--store}, as the admin commands):

  - C{sipdist drain SERVER}: mark a server C{draining} and move its users
    to the active servers at a bounded rate (C{--rate} users per second);
  - C{sipdist rebalance [--dry-run]}: compute the plan of
    L{sipdist.pool.rebalance} (users of down and draining servers move, servers
    above their share shed users) and apply it; with C{--dry-run} only
    print it: who moves where, the load before and after;
  - C{sipdist status}: every server with its state, users assigned, and
    the health and load figures it reports to an C{OPTIONS}
    (C{--no-probe} to skip the checks), or, with C{--status-url}, as the
    monitor sees them (its status listener's C{/status}, with
    C{--status-token} or a client certificate where it requires one).

Running servers learn of every change through the store's watching.
"""

from twisted.internet import defer
from twisted.python import usage

from sipdist.commands.store import _StoreCommand
from sipdist.commands.main import CommandError
from sipdist.pool.rebalance import (
    DEFAULT_TOLERANCE, applyPlan, computePlan, readState)
from sipdist.store import ACTIVE, DOWN, DRAINING, UnknownServer


def _positive(text, name):
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise usage.UsageError(f"--{name}: {text!r} is not a number") \
            from None
    if value <= 0:
        raise usage.UsageError(f"--{name}: must be above 0")
    return value


class _PlanCommand(_StoreCommand):
    """
    Shared by drain and rebalance: compute, print, apply.
    """

    optFlags = [
        ["dry-run", "n", "print the plan, change nothing"],
        ["quiet", "q", "do not list every move"],
    ]
    optParameters = [
        ["rate", "r", "50", "users moved per second at most (0: no "
                            "limit)"],
        ["weights", "w", None, "file of 'AOR WEIGHT' lines (heavy users)"],
        ["limit", None, "50", "moves listed at most (0: all)"],
    ]

    # The clock writes are spread over; tests give a task.Clock.
    clock = None

    def postOptions(self):
        if self["rate"] in ("0", 0):
            self["rate"] = None
        else:
            self["rate"] = _positive(self["rate"], "rate")
        try:
            self["limit"] = int(self["limit"])
        except ValueError:
            raise usage.UsageError("--limit: an integer") from None
        self.weights = {}
        if self["weights"]:
            from sipdist.pool.monitor import readWeights
            try:
                self.weights = readWeights(self["weights"])
            except ValueError as e:
                raise usage.UsageError(f"--weights: {e}") from None

    def run(self, reactor):
        self.reactor = self.clock or reactor
        return _StoreCommand.run(self, reactor)

    def printPlan(self, plan):
        limit = self["limit"] or None
        for line in plan.describe(verbose=not self["quiet"], limit=limit):
            self.print(line)

    async def applyPlan(self, store, plan):
        if self["dry-run"]:
            self.print("dry run: nothing changed")
            return
        if not plan:
            return

        def progress(done, total):
            if self["rate"]:
                self.print(f"moved {done} of {total}")

        done = await applyPlan(store, plan, self.reactor, rate=self["rate"],
                               progress=progress)
        self.print(f"moved {done} user(s)")


class Drain(_PlanCommand):
    synopsis = "[--rate=N] [--dry-run] [options] SERVER"
    longdesc = ("Mark SERVER draining (it keeps its users until they are "
                "moved, and gets no new ones) and move its users to the "
                "active servers, spread by capacity weight, at most --rate "
                "per second.  Each moved user's next registration refresh "
                "is answered with a redirect to its new home; its "
                "subscriptions are ended with reason=deactivated and made "
                "again.  Take the server down once 'sipdist status' shows "
                "it has no users and no registrations left.")

    def parseArgs(self, serverId):
        self.serverId = serverId

    async def act(self, store):
        record = await store.getServer(self.serverId)
        if record is None:
            raise UnknownServer(f"no server {self.serverId!r}")
        servers, assignments = await readState(store)
        if record.state == ACTIVE:
            servers = [s if s.id != record.id else s.updated(state=DRAINING)
                       for s in servers]
            if not self["dry-run"]:
                await store.updateServer(record.id, state=DRAINING)
            self.print(f"{record.id} marked draining")
        else:
            self.print(f"{record.id} is {record.state} already")
        plan = computePlan(servers, assignments, self.weights, balance=False)
        plan.moves = [m for m in plan.moves if m.old == record.id]
        self.printPlan(plan)
        if not any(s.state == ACTIVE and s.weight > 0 for s in servers):
            raise CommandError("no active server to move the users to")
        await self.applyPlan(store, plan)


class Rebalance(_PlanCommand):
    synopsis = "[--dry-run] [--tolerance=F] [--rate=N] [options]"
    longdesc = ("Decide whether the distribution is acceptable (no users "
                "on down or draining servers, no active server above its "
                "capacity-weighted share by more than the tolerance) and, "
                "if not, move as few users as possible to make it so.  "
                "Prints the plan: the reasons, each server's users and load "
                "before and after, and who moves where.")

    optParameters = _PlanCommand.optParameters + [
        ["tolerance", "t", str(DEFAULT_TOLERANCE),
         "how far above its share a server may be (0.1: 10%)"],
    ]

    def postOptions(self):
        _PlanCommand.postOptions(self)
        try:
            self["tolerance"] = float(self["tolerance"])
        except ValueError:
            raise usage.UsageError("--tolerance: a number") from None
        if self["tolerance"] < 0:
            raise usage.UsageError("--tolerance: 0 or more")

    async def act(self, store):
        servers, assignments = await readState(store)
        plan = computePlan(servers, assignments, self.weights,
                           tolerance=self["tolerance"])
        self.printPlan(plan)
        await self.applyPlan(store, plan)


class Status(_StoreCommand):
    synopsis = "[--no-probe] [--timeout=SECONDS] [options]"
    longdesc = ("List every server of the store: its state, the users "
                "assigned to it, and (unless --no-probe) whether it answers "
                "an OPTIONS and the load it reports: registered users, "
                "active subscriptions, transactions per second.")

    optFlags = [["no-probe", None, "do not send health checks"]]
    optParameters = [
        ["timeout", "t", "2", "seconds to wait for an answer"],
        ["status-url", None, None,
         "the /status of the distributor running the monitor "
         "(http://127.0.0.1:8081/status, or https://...): health and load "
         "as the monitor sees them, no OPTIONS sent"],
        ["status-token", None, None,
         "file holding the token of that listener (--status-token)"],
        ["status-ca", None, None,
         "PEM CA certificates an https listener is verified against "
         "(default: the system's)"],
        ["status-cert", None, None,
         "PEM client certificate for an https listener that requires one"],
        ["status-key", None, None, "the key of --status-cert"],
    ]

    # Tests give a prober (see sipdist.pool.monitor.Prober).
    prober = None

    def postOptions(self):
        from urllib.parse import urlsplit

        from sipdist.config import ConfigurationError
        from sipdist.pool.status import readToken
        from sipdist.sip.tls import TLSConfigError, clientContextFactory

        self["timeout"] = _positive(self["timeout"], "timeout")
        self.token = self.tlsOptions = None
        url = self["status-url"]
        tls = [n for n in ("status-ca", "status-cert", "status-key")
               if self[n]]
        if url is None:
            given = tls + (["status-token"] if self["status-token"] else [])
            if given:
                raise usage.UsageError(f"--{given[0]} goes with --status-url")
            return
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise usage.UsageError(f"--status-url: {url!r} is not an http:// "
                                   f"or https:// URL")
        if self["status-token"]:
            try:
                self.token = readToken(self["status-token"])
            except ConfigurationError as e:
                raise usage.UsageError(str(e)) from None
        if parts.scheme == "http":
            if tls:
                raise usage.UsageError(f"--{tls[0]}: only for an https:// "
                                       f"--status-url")
            return
        try:
            self.tlsOptions = clientContextFactory(
                parts.hostname, self["status-ca"] or (),
                self["status-cert"], self["status-key"])
        except TLSConfigError as e:
            raise usage.UsageError(str(e)) from None

    def run(self, reactor):
        self.reactor = reactor
        return _StoreCommand.run(self, reactor)

    async def act(self, store):
        servers = await store.listServers()
        counts = await store.countUsers()
        if not servers:
            self.print("no servers")
            return
        probes = {}
        if self["status-url"]:
            probes = await self._fromMonitor()
        elif not self["no-probe"]:
            probes = await self._probe(servers)
        self.print(f"{'server':<14} {'state':<9} {'health':<8} {'users':>7} "
                   f"{'registered':>10} {'subscr':>7} {'tps':>6}  uri")
        for record in servers:
            health, load = probes.get(record.id, ("-", {}))
            self.print(
                f"{record.id:<14} {record.state:<9} {health:<8} "
                f"{counts.get(record.id, 0):>7} "
                f"{load.get('registered', '-'):>10} "
                f"{load.get('subscriptions', '-'):>7} "
                f"{load.get('tps', '-'):>6}  {record.uri} "
                f"weight={record.weight}")
        total = sum(counts.values())
        stranded = sum(counts.get(s.id, 0) for s in servers
                       if s.state in (DOWN, DRAINING))
        self.print(f"total {total} user(s) on {len(servers)} server(s)"
                   + (f"; {stranded} on down or draining servers"
                      if stranded else ""))

    async def _fromMonitor(self):
        """
        Health and load of every server as the monitor behind
        C{--status-url} sees them.
        """
        from sipdist.pool.status import StatusFetchError, fetchStatus
        url = self["status-url"]
        try:
            document = await fetchStatus(
                self.reactor, url, token=self.token,
                tlsOptions=self.tlsOptions, timeout=self["timeout"])
        except StatusFetchError as e:
            raise CommandError(str(e)) from None
        monitor = document.get("monitor") if isinstance(document, dict) \
            else None
        if not isinstance(monitor, dict):
            raise CommandError(f"{url}: that server runs no monitor "
                               f"(twistd sipdist --monitor)")
        probes = {}
        for sid, seen in (monitor.get("servers") or {}).items():
            if isinstance(seen, dict):
                probes[sid] = (str(seen.get("status", "-")),
                               dict(seen.get("load") or {}))
        return probes

    async def _probe(self, servers):
        prober, stop = self.prober, None
        if prober is None:
            prober, stop = await _standaloneProber(
                self.reactor, self["timeout"], _listenFor(servers))
        try:
            results = await defer.DeferredList(
                [prober.probe(s.uri) for s in servers], consumeErrors=True)
        finally:
            if stop is not None:
                await stop()
        probes = {}
        for record, (ok, result) in zip(servers, results):
            if ok:
                load = getattr(result, "load", result)
                busy = getattr(result, "busy", None)
                probes[record.id] = ("busy" if busy else "up", load)
            else:
                probes[record.id] = ("no-answer", {})
        return probes


def _listenFor(servers):
    """
    Where the checks are sent from: loopback only when every server is on
    loopback, else every interface.
    """
    from sipdist.sip.uri import URIError, parseURI
    loopback = {"127.0.0.1", "localhost", "::1", "[::1]"}
    for record in servers:
        try:
            host = parseURI(record.uri).host.lower()
        except URIError:
            continue
        if host not in loopback:
            return "udp:0"
    return "udp:0:interface=127.0.0.1"


async def _standaloneProber(reactor, timeout, listen):
    """
    A L{sipdist.pool.monitor.Prober} with its own UDP port and transaction
    layer, and the coroutine function stopping them.
    """
    from sipdist.pool.monitor import Prober
    from sipdist.server import SIPServer
    from sipdist.sip.transaction import TransactionLayer
    from sipdist.sip.transport import TransportLayer
    from sipdist.sip.uri import parseURI

    user = SIPServer(reactor, "sipdist-status", "localhost")
    transactions = TransactionLayer(reactor, user, T1=0.5)
    user.transactions = transactions
    transport = TransportLayer(reactor, transactions)
    await transport.listen(listen)
    prober = Prober(reactor, transactions, transport,
                    parseURI("sip:status@localhost"), timeout=timeout)

    async def stop():
        transactions.stop()
        await transport.stopListening()

    return prober, stop


commands = [
    ("drain", Drain, "Move every user off a server (maintenance)"),
    ("rebalance", Rebalance,
     "Make the distribution acceptable (--dry-run: print the plan)"),
    ("status", Status, "Servers, state, health, load, users per server"),
]
