# -*- test-case-name: tests.test_failover -*-
"""
A proxying server sending a user's request to the user's backup home when
its assigned home is dead: the backup for clients behind an edge.

A client of ours that talks to its home directly learns from the transport
that the home failed and goes to the backup named in a signed
C{Sipdist-Backup} (L{sipdist.pool.standby}).  A client behind an edge (or
a standard client, or one behind another proxy) does not: its requests
reach a distributor, an internal edge or a home that proxies them to the
user's assigned home (L{sipdist.roles.distribution}), and the client keeps
talking to that server.  So the proxying server fails over for it (RFC
3261 section 16.7: a target that cannot be reached, and the proxy tries
the next one; RFC 3263 section 4.3: the next server after a connection
failure or silence).  L{Failover.forward} proxies the request to the
assigned home with the user's backup home (the one
L{sipdist.roles.distribution.backupFor} names, on the transport the
request arrived on) as fallback, taken at once when:

  - the store marks the home C{down};
  - a probe of the home younger than C{ttl} seconds found it dead (one
    probe per home in flight, its result shared with the home's own
    L{sipdist.pool.standby.Standby});
  - the connection to the home is refused, fails or is reset;
  - the home says nothing for C{stallAfter} seconds (not even a C{100})
    and does not answer a probe either (within the probe's timeout).

A response from the home, whatever its code (a C{503} too), is its
answer: it is passed on and nothing is sent to the backup.  Nor is a
request failed over twice: a request a peer already sent to us as a
backup goes nowhere else.

The request sent to the backup carries the pool's peer signature
(C{Sipdist-Peer}, L{sipdist.services.routing.PeerSigner}): the backup
serves a user of another home temporarily only for its direct clients or
for a request a pool server signed, and then only when it is that user's
backup and finds the home down itself (its own probe, or the store): see
L{sipdist.pool.standby}.  An outsider can neither make a backup serve a
user whose home is alive nor choose where we send anything: the backup is
read from the store, never from the request.  The store is not changed;
when the home answers again, the next request goes to it.
"""

from twisted.internet import defer
from twisted.logger import Logger

from sipdist.decision import DOWN
from sipdist.deferreds import NOT_FIRED, firedResult
from sipdist.services.proxy import Failover as Plan


class Failover:
    """
    Proxies requests to a user's home with its backup as fallback (see the
    module docstring).

    @param store: the assignment store.
    @param serverId: this server's id.
    @param probes: a L{sipdist.pool.standby.Standby} whose
        C{unreachable(record)} probes a home (shared with a home's own).
    @param sign: C{sign(request)}, the pool's peer signature.
    @param stallAfter: seconds of silence from a home before it is probed.
    @ivar failedOver: requests sent to a backup at once (home known down).
    @ivar planned: requests sent to a home with a backup as fallback.
    """

    _log = Logger()

    def __init__(self, store, serverId, probes, sign, stallAfter=1.0):
        self.store = store
        self.serverId = serverId
        self.probes = probes
        self.sign = sign
        self.stallAfter = stallAfter
        self.failedOver = 0
        self.planned = 0

    def knownDead(self, record):
        """
        Whether the home of C{record} is known dead now: marked C{down} in
        the store, or found dead by a probe whose result is still used.
        """
        if record.state == DOWN:
            return True
        d = self.probes.unreachable(record, probe=False)
        result = firedResult(d)
        return result is not NOT_FIRED and bool(result)

    def forward(self, proxy, request, transaction, aor, record, homeURI,
                transport, relayed=False, **kwargs):
        """
        Proxy C{request} for the user C{aor}, whose home is C{record}
        (at C{homeURI} for C{transport}, or C{None} when it is down and
        only the backup may be tried): to the home with the backup as
        fallback; to the backup at once when the home is known dead; to
        the home alone when there is no backup or C{relayed} (a peer sent
        it to us as a backup already).

        @param kwargs: passed on to C{proxy.forward}.
        @return: L{Deferred} firing with C{True} once forwarded, C{False}
            when the home is down and there is no backup (nothing was
            sent; the caller answers).
        """
        dead = homeURI is None or self.knownDead(record)
        if relayed:
            if dead:
                return defer.succeed(False)
            proxy.forward(request, transaction, nextHop=homeURI, **kwargs)
            return defer.succeed(True)
        from sipdist.roles.distribution import backupRecord

        def listed(records):
            backup = backupRecord(aor, records, record.id, transport)
            if backup is not None and backup[0] == self.serverId:
                # We are the backup: the caller serves the user itself
                # when it may (L{sipdist.pool.standby}); never to a server
                # that is not the user's backup.
                backup = None
            if backup is None:
                if dead:
                    return False
                proxy.forward(request, transaction, nextHop=homeURI,
                              **kwargs)
                return True
            if dead:
                self.failedOver += 1
                self._log.info("home {home} of {aor} down: {method} to its "
                               "backup {backup}", home=record.id, aor=aor,
                               method=request.method, backup=backup[0])
                self.sign(request)
                proxy.forward(request, transaction, nextHop=backup[1],
                              **kwargs)
                return True
            self.planned += 1
            plan = Plan(backup[1], self.sign, self.stallAfter,
                        lambda: self.probes.unreachable(record))
            proxy.forward(request, transaction, nextHop=homeURI,
                          failover=plan, **kwargs)
            return True

        def noList(failure):
            self._log.info("no backup home for {aor}: {reason}", aor=aor,
                           reason=failure.getErrorMessage())
            if dead:
                return False
            proxy.forward(request, transaction, nextHop=homeURI, **kwargs)
            return True

        d = self.store.listServers()
        d.addCallbacks(listed, noList)
        return d


def installFailover(service, config, reactor):
    """
    Give a store role (L{sipdist.roles.base}) its L{Failover}, with
    C{--failover} (on by default), as C{service.failover} and its
    processor's; after L{sipdist.services.routing.installRouting} (whose
    signer it uses) and L{sipdist.pool.standby.installStandby} (whose
    probes a home shares).
    """
    processor = getattr(service, "processor", None)
    router = getattr(service, "router", None)
    if (not config.get("failover", True) or processor is None
            or router is None or service.store is None):
        return None
    probes = getattr(service, "standby", None)
    if probes is None:
        # Not a home: the same probes, for failing over only.
        from sipdist.pool.standby import makeStandby
        probes = makeStandby(service, config, reactor, user="failover")
        probes.deadMeans = "what we proxy to its users goes to their backup"
    failover = Failover(service.store, config["name"], probes,
                        router.signer.sign,
                        stallAfter=config.get("failover-after", 1.0))
    service.failover = processor.failover = failover
    return failover
