# -*- test-case-name: tests.test_standby -*-
"""
A backup home serving the users of a failed home before the monitor has
marked it down.

A client of ours learns that its home failed from the transport at once
(the connection lost) and goes straight to the backup home the servers
named in a signed C{Sipdist-Backup}.  The monitor marks the home down
only after C{--monitor-down-after} seconds of silence (10 s by default,
so that a busy home is not taken for a dead one), and the store moves its
users after that.  Meanwhile the store still names the failed home, and
the backup would redirect the client back to it.

L{Standby} lets the backup serve such a client I{temporarily}, without
touching the store, when all of these hold:

  - the client follows the distribution redirect and talks to the backup
    directly (one Via): the clients the backup was named to; or the
    request was relayed to us by a server of the pool that found the
    user's home dead (more than one Via, and the pool's peer signature,
    which only a pool server can make: L{sipdist.pool.failover}) --
    the clients behind an edge or another proxy;
  - it authenticated (the check runs after Digest, on the decision);
  - this server I{is} the user's backup home: the one
    L{sipdist.roles.distribution.backupFor} names for it, on the
    transport the request came in on (a user cannot pick a server);
  - the user's assigned home is marked C{down} in the store (the monitor
    agrees already), or does not answer the backup's own probe: an
    C{OPTIONS} to it that fails (connection refused, or no response
    within C{timeout} seconds).  Any response, a C{503} too, is a live
    home, and the client is redirected to it as usual; so it is when the
    probe fails for another reason (a TLS failure, a bad URI): only
    silence and connection failures mean a dead home.  A probe's result
    is used for C{ttl} seconds from when the probe was sent, and one
    probe is in flight per home.  A result older than half of C{ttl -
    timeout} is refreshed by a new probe while it is still used, so that
    while a failed home's users keep arriving none of them waits for a
    probe (a silent home would make them wait up to C{timeout} every
    C{ttl} seconds): ten thousand clients of a failed home cost one
    probe every C{(ttl - timeout) / 2 + timeout} seconds at most.

So nobody can move a user at will: only the user itself, only to its one
backup, only while its home cannot be reached from the backup either; and
the store is not changed by it (the monitor still decides where the users
go).  A temporary registration is granted for at most C{maxExpires}
seconds, so that the client comes back soon and is decided again: served
for good once the store has moved it here, redirected to its home when
that answers again (the redirect ends its registration here), redirected
elsewhere when the store moved it elsewhere.
"""

from twisted.internet import defer
from twisted.logger import Logger

from sipdist.decision import DOWN, Proxy, Redirect
from sipdist.services.targets import arrivalTransport

# Seconds a probe of a home may take before the home counts as unreachable.
PROBE_TIMEOUT = 1.0
# Seconds a probe's result is used for.
PROBE_TTL = 2.0
# The longest temporary registration, in seconds.
STANDBY_EXPIRES = 120
# Homes whose probe results are kept at most.
MAX_HOMES = 1000


class Standby:
    """
    Decides whether this backup home serves a user of another home
    temporarily (see the module docstring).

    @param serverId: this server's id in the store.
    @param prober: a L{sipdist.pool.monitor.Prober} (its own timeout is
        not used: C{timeout} is).
    @ivar served: requests served temporarily.
    @ivar probes: probes sent.
    """

    _log = Logger()
    # What a dead home means here, for the log.
    deadMeans = "serving its users that name us as backup temporarily"

    def __init__(self, reactor, store, serverId, prober,
                 timeout=PROBE_TIMEOUT, ttl=PROBE_TTL,
                 maxExpires=STANDBY_EXPIRES):
        self._reactor = reactor
        self.store = store
        self.serverId = serverId
        self.prober = prober
        self.timeout = timeout
        self.ttl = ttl
        self.maxExpires = maxExpires
        self.served = 0
        self.probes = 0
        # Home id -> (alive, when probed); home id -> the Deferreds waiting
        # for the probe in flight (one per home).
        self._known = {}
        self._pending = {}

    def applies(self, context, outcome):
        """
        Whether the decision C{outcome} for C{context} is one L{check}
        may turn into a temporary serve: a redirect or proxying to the
        user's home, or the C{503} of a home marked down, for a client
        that follows the redirect and talks to us directly, or for a
        request a pool server relayed to us as the user's backup (more
        than one Via and a valid peer signature, C{context.peer}: see
        L{sipdist.pool.failover}).
        """
        direct = context.followsRedirect and context.viaCount == 1
        relayed = context.viaCount > 1 and context.peer is not None
        if not (direct or relayed):
            return False
        if context.record is None or context.record.id == self.serverId:
            return False
        if isinstance(outcome, (Redirect, Proxy)):
            return True
        return getattr(outcome, "code", None) == 503 and \
            context.record.state == DOWN

    def check(self, context):
        """
        @return: L{Deferred} firing with C{True} when this server serves
            the user of C{context} temporarily; never fails.
        """
        transport = arrivalTransport(context.request,
                                     context.transaction.flow)

        def served(yes):
            if yes:
                self.served += 1
            return yes

        def failed(failure):
            self._log.info("standby check for {aor} failed: {reason}",
                           aor=context.aor, reason=failure.getErrorMessage())
            return False

        d = self.standsIn(context.aor, context.record, transport)
        d.addCallbacks(served, failed)
        return d

    def standsIn(self, aor, record, transport):
        """
        Whether this server stands in for the home C{record} of the user
        C{aor} now: it is the user's backup home for C{transport}, and the
        home is marked down or does not answer (L{unreachable}).

        @return: L{Deferred} firing with a C{bool}.
        """
        from sipdist.roles.distribution import backupRecord

        def isBackup(records):
            backup = backupRecord(aor, records, record.id, transport)
            if backup is None or backup[0] != self.serverId:
                return False
            if record.state == DOWN:
                return True
            return self.unreachable(record)

        d = self.store.listServers()
        d.addCallback(isBackup)
        return d

    def unreachable(self, record, probe=True):
        """
        Whether the home of C{record} cannot be reached: the result of a
        probe younger than C{ttl} seconds, else of a new one (or of the
        one in flight).

        @param probe: C{False}: only a result known now, no probe.
        @return: L{Deferred} firing with a C{bool} (C{None} when nothing
            is known and C{probe} is false); never fails.
        """
        now = self._reactor.seconds()
        known = self._known.get(record.id)
        if known is not None and now - known[1] < self.ttl:
            if (probe and now - known[1] >= self.refreshAfter
                    and record.id not in self._pending):
                # Refreshed ahead: the result in hand answers meanwhile
                # (the new one if the probe has answered already).
                self._pending[record.id] = waiters = []
                self._probe(record, waiters)
                known = self._known.get(record.id, known)
            return defer.succeed(not known[0])
        if not probe:
            return defer.succeed(None)
        waiter = defer.Deferred()
        pending = self._pending.get(record.id)
        if pending is not None:
            pending.append(waiter)
            return waiter
        self._pending[record.id] = waiters = [waiter]
        self._probe(record, waiters)
        return waiter

    @property
    def refreshAfter(self):
        """
        The age (seconds from its probe) at which a result in use is
        refreshed by a new probe: half of C{ttl - timeout}.
        """
        return max(0.0, self.ttl - self.timeout) / 2

    def _probe(self, record, waiters):
        self.probes += 1
        sent = self._reactor.seconds()

        def done(alive):
            if self._pending.get(record.id) is not waiters:
                return
            del self._pending[record.id]
            if timedOut.active():
                timedOut.cancel()
            if len(self._known) >= MAX_HOMES and record.id not in self._known:
                self._known.pop(next(iter(self._known)))
            self._known[record.id] = (alive, sent)
            if not alive:
                self._log.info("home {home} does not answer: {what}",
                               home=record.id, what=self.deadMeans)
            for waiter in waiters:
                waiter.callback(not alive)

        timedOut = self._reactor.callLater(self.timeout, done, False)
        def failed(failure):
            if getattr(failure.value, "unreachable", False):
                done(False)
                return
            # Not a sign of a dead home (a TLS failure, a bad URI): it is
            # not taken for one, and the client is redirected as usual.
            self._log.warn("probe of home {home} failed: {reason}",
                           home=record.id, reason=failure.getErrorMessage())
            done(True)

        d = self.prober.probe(record.uri)
        d.addCallbacks(lambda answer: done(True), failed)


def makeStandby(service, config, reactor, user="standby"):
    """
    A L{Standby} for the server of C{service}, configured by
    C{--standby-timeout}, C{--standby-ttl} and C{--standby-expires}, whose
    OPTIONS probes come from C{sip:USER@DOMAIN}.
    """
    from sipdist.pool.monitor import Prober
    from sipdist.sip.uri import parseURI
    timeout = config.get("standby-timeout", PROBE_TIMEOUT)
    prober = Prober(reactor, service.transactions, service.transport,
                    parseURI(f"sip:{user}@{config['domain']}"),
                    timeout=timeout)
    return Standby(
        reactor, service.store, config["name"], prober, timeout=timeout,
        ttl=config.get("standby-ttl", PROBE_TTL),
        maxExpires=int(config.get("standby-expires", STANDBY_EXPIRES)))


def installStandby(service, config, reactor):
    """
    Give a home (L{sipdist.roles.base}) its L{Standby}, with C{--standby}
    (on by default), as C{service.standby} and its processor's.
    """
    if not config.get("standby", True) or service.store is None:
        return None
    standby = makeStandby(service, config, reactor)
    service.standby = service.processor.standby = standby
    return standby
