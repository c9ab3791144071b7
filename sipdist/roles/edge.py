# -*- test-case-name: tests.test_edge -*-
"""
The C{edge} role: the one server outside clients can reach when the home
servers are not published.

An edge consults no store and authenticates nobody (the servers inside
do).  Every request from outside that is not routed through it already
(Route naming it) goes inward to one of its next hops (C{--next-hop},
repeatable: home servers, or an internal edge), chosen at random, in
proportion to a C{weight} parameter when the URIs carry one
(C{sip:10.0.0.2:5060;transport=tcp;weight=3}); when the one chosen cannot
be reached (a TCP or TLS connection refused or failed), the others are
tried in turn, and a next hop failing its health checks (L{NextHopChecker},
C{OPTIONS} every C{--next-hop-check} seconds) is chosen last.  On its
way:

  - a C{REGISTER} gets a Path naming the edge, whose user part is the
    token of the client's flow (RFC 5626 C{ob}): the home stores it with
    the binding, and requests for the user come back with it as Route;
  - a dialog-creating request (C{INVITE}, C{SUBSCRIBE}, C{REFER}) gets a
    Record-Route naming the edge with the same token, so that the callee's
    in-dialog requests come back the same way;
  - other requests (C{MESSAGE}, C{OPTIONS} to a user ...) are just passed
    on.

A request with our Route (L{sipdist.services.proxy.Proxy.routeInDialog}: the
binding's Path, a dialog's route set) is sent over the flow its token
names: the connection the client opened, the only way to reach a client
behind NAT or a firewall (C{430 Flow Failed} once that connection is
gone).  Tokens are sealed with an HMAC under a key of the edge process
(RFC 5626 section 5.2): a Route whose token the edge did not write is
refused with C{403}, so nobody can name a flow (or a UDP address) of their
choosing.  Requests the edge sends to a client this way record-route with the
client's token too.

Requests passed inwards state the client's address (where the edge got
them from) in a C{Sipdist-Client} header sealed with the pool's secret
(L{sipdist.auth.clientaddress}): the servers inside count failed
authentications against it rather than against the edge, so one client's
wrong passwords slow down nobody else behind the edge.  The edge removes any
such header a request brings with it.

Outside and inside: C{--listen} endpoints face the clients, and
C{--inside-listen} endpoints the servers (give them other port numbers).
What the edge writes in its Via, Record-Route and Path names the side it
faces: the inside address towards the homes, the outside address towards
the clients; a dialog-creating request crossing sides gets two
Record-Route entries (RFC 5658).  An out-of-dialog request arriving on the
inside that is not routed through the edge is refused (C{403}): the edge is
not an open relay from the inside out.  Without inside endpoints, every
request counts as coming from outside.
"""

import bisect
import itertools
import os
import random as _random

from twisted.application.internet import TimerService
from twisted.application.service import Service
from twisted.logger import Logger

from sipdist.auth.clientaddress import HEADER as CLIENT_HEADER
from sipdist.auth.clientaddress import ClientAddressSeal
from sipdist.config import ConfigurationError
from sipdist.pool.monitor import Prober
from sipdist.services.proxy import NextHopError, Proxy, nextHopFor, routeKey
from sipdist.services.routing import PeerSigner, TrustedAddresses, peerOf
from sipdist.sip.uri import URIError, parseURI

EDGE_METHODS = ("REGISTER", "INVITE", "BYE", "PRACK", "UPDATE", "INFO",
                "MESSAGE", "SUBSCRIBE", "NOTIFY", "PUBLISH", "REFER")


class NextHopConfigError(ValueError):
    """
    A C{--next-hop} value is not usable; C{str()} says why, in one line.
    """


def parseNextHop(text):
    """
    Parse a C{--next-hop} value.

    @return: C{(uri, weight)}: the URI without its C{weight} parameter.
    @raise NextHopConfigError: for a bad URI or weight.
    """
    try:
        uri = parseURI(text.strip().strip("<>"))
    except URIError as e:
        raise NextHopConfigError(f"{text!r}: {e}")
    weight = uri.params.pop("weight", "1")
    if weight is None or not weight.isdigit() or int(weight) <= 0:
        raise NextHopConfigError(f"{text!r}: weight must be a positive "
                                 f"integer")
    if uri.username is not None:
        raise NextHopConfigError(f"{text!r}: a next hop is a server, "
                                 f"without a user part")
    uri = parseURI(uri.toString())
    try:
        nextHopFor(uri)
    except NextHopError as e:
        raise NextHopConfigError(f"{text!r}: {e}")
    return uri, int(weight)


class NextHops:
    """
    The next hops of an edge and the weighted random choice among them
    (O(log n) per choice).

    @param hops: C{(uri, weight)} pairs, or URI texts (see L{parseNextHop}).
    @param random: a L{random.Random} (tests give a seeded one).
    """

    def __init__(self, hops, random=None):
        parsed = [parseNextHop(h) if isinstance(h, str) else h for h in hops]
        if not parsed:
            raise NextHopConfigError("an edge needs at least one next hop")
        self.uris = [uri for uri, weight in parsed]
        self.weights = [weight for uri, weight in parsed]
        self.down = set()
        self._random = random or _random.Random()
        self._rebuild()

    def _rebuild(self):
        # The hops chosen from: those not marked down, or all of them when
        # every one is.
        up = [i for i in range(len(self.uris)) if i not in self.down]
        self._candidates = up or list(range(len(self.uris)))
        self._cumulative = list(itertools.accumulate(
            self.weights[i] for i in self._candidates))
        self._total = self._cumulative[-1]
        rest = [i for i in range(len(self.uris)) if i not in self._candidates]
        self._rest = [self.uris[i] for i in rest]

    def markDown(self, index):
        """
        Choose the hop at C{index} last (a failing health check).
        """
        if index not in self.down:
            self.down.add(index)
            self._rebuild()

    def markUp(self, index):
        """
        Choose the hop at C{index} again.
        """
        if index in self.down:
            self.down.discard(index)
            self._rebuild()

    def _index(self):
        candidates = self._candidates
        if len(candidates) == 1:
            return 0
        point = self._random.random() * self._total
        index = bisect.bisect_right(self._cumulative, point)
        return min(index, len(candidates) - 1)

    def choose(self):
        """
        @return: the L{URI} of the next hop for one request.
        """
        return self.uris[self._candidates[self._index()]]

    def order(self):
        """
        @return: the next hops to try for one request: the one L{choose}
            would pick, then the other hops not marked down in their
            configured order, then those marked down (the fallbacks when
            it cannot be reached).
        """
        uris = self.uris
        if len(uris) == 1:
            return uris
        candidates = self._candidates
        chosen = self._index()
        return ([uris[candidates[chosen]]]
                + [uris[i] for i in candidates[:chosen]]
                + [uris[i] for i in candidates[chosen + 1:]] + self._rest)


class NextHopChecker(TimerService):
    """
    Health checks of an edge's next hops: every C{interval} seconds an
    C{OPTIONS} to each (L{sipdist.pool.monitor.Prober}); a hop that fails
    C{threshold} checks in a row (silence, or a non-2xx answer: unlike the
    monitor, which moves users, an edge only prefers another hop, so a
    busy hop is avoided too) is chosen last (L{NextHops.markDown})
    until it answers again.  At most one check per hop is in flight.
    """

    _log = Logger()

    def __init__(self, reactor, nextHops, prober, interval=10.0,
                 threshold=2):
        self._reactor = reactor
        self.nextHops = nextHops
        self.prober = prober
        self.interval = interval
        self.threshold = threshold
        self.failures = [0] * len(nextHops.uris)
        self._pending = set()
        # TimerService runs check every interval, on our reactor.
        TimerService.__init__(self, interval, self.check)
        self.clock = reactor

    def check(self):
        """
        Probe every next hop that has no check in flight.
        """
        for index, uri in enumerate(self.nextHops.uris):
            if index in self._pending:
                continue
            self._pending.add(index)
            d = self.prober.probe(uri.toString())
            d.addCallbacks(self._answered, self._failed, (index,), None,
                           (index,))

    def _answered(self, answer, index):
        if getattr(answer, "busy", None) is not None:
            # Alive but refusing (a 503): chosen last all the same, the
            # other hops take the traffic.
            return self._failing(index, answer.busy)
        self._pending.discard(index)
        self.failures[index] = 0
        if index in self.nextHops.down:
            self._log.info("next hop {uri} answers again",
                           uri=self.nextHops.uris[index])
            self.nextHops.markUp(index)

    def _failed(self, failure, index):
        self._failing(index, failure.getErrorMessage())

    def _failing(self, index, reason):
        self._pending.discard(index)
        self.failures[index] += 1
        if (self.failures[index] >= self.threshold
                and index not in self.nextHops.down):
            self._log.warn("next hop {uri} is failing ({reason}): chosen "
                           "last until it answers",
                           uri=self.nextHops.uris[index], reason=reason)
            self.nextHops.markDown(index)


def stripClientAddress(request):
    """
    Remove every C{Sipdist-Client} header from C{request}: only the edge
    states a client's address.
    """
    request.removeHeader(CLIENT_HEADER)


class Sides:
    """
    Which of a server's listening ports face the outside and which the
    inside, and the address of each side per transport.

    @ivar split: whether there are inside ports at all.
    """

    def __init__(self):
        self.split = False
        self._outside = {}
        self._inside = {}
        self._insidePorts = set()
        self._outsidePorts = set()

    def learn(self, ports, insideFlags, advertisedHost=None):
        """
        Record the listening ports once they listen.

        @param ports: the listening ports, in the order of C{insideFlags}.
        @param insideFlags: for each, whether it faces the inside.
        @param advertisedHost: the host to name for a port listening on
            every interface (give each endpoint its C{interface=} instead,
            so that each side is named by its own address).
        """
        for port, inside in zip(ports, insideFlags):
            transportName = _transportOf(port)
            host = port.getHost()
            address = host.host
            if address in ("", "0.0.0.0", "::"):
                address = advertisedHost or "127.0.0.1"
            side = self._inside if inside else self._outside
            side.setdefault(transportName, (address, host.port))
            if inside:
                self.split = True
                self._insidePorts.add((transportName, host.port))
            else:
                self._outsidePorts.add((transportName, host.port))

    def isInside(self, flow):
        """
        Whether a flow is on the inside: it came in on an inside port, or
        it is a connection the edge opened (only ever inwards: clients are
        reached over the connections they opened, on outside ports).
        """
        if not self.split:
            return False
        local = getattr(flow, "local", None)
        if local is None:
            return True
        key = (flow.transport, local[1])
        return key in self._insidePorts or key not in self._outsidePorts

    def address(self, transportName, inside):
        """
        Our C{(host, port)} on a side for a transport, or C{None}.
        """
        side = self._inside if inside else self._outside
        address = side.get(transportName)
        if address is None and side:
            address = next(iter(side.values()))
        return address

    def addresses(self):
        """
        Every C{(host, port)} we listen on.
        """
        return set(self._outside.values()) | set(self._inside.values())


def _transportOf(port):
    """
    C{"UDP"}, C{"TCP"} or C{"TLS"}: what a listening port of a
    L{sipdist.sip.transport.TransportLayer} carries.
    """
    factory = getattr(port, "factory", None)
    for candidate in (factory, getattr(factory, "wrappedFactory", None)):
        name = getattr(candidate, "_transportName", None)
        if name is not None:
            return name
    return "UDP"


class EdgeProxy(Proxy):
    """
    The proxy of an edge: its addresses depend on the side a flow is on
    (see L{Sides}).
    """

    def __init__(self, *args, sides, **kwargs):
        Proxy.__init__(self, *args, **kwargs)
        self.sides = sides

    def routeInDialog(self, request, serverTransaction):
        """
        L{Proxy.routeInDialog}, on a request rid of any C{Sipdist-Client}
        header first: that header is the edge's to write (L{EdgeProcessor}),
        and this link is the first of the edge's chain, so every request
        loses what it brought.
        """
        stripClientAddress(request)
        return Proxy.routeInDialog(self, request, serverTransaction)

    def addressFor(self, transport, flow=None, hop=None):
        sides = self.sides
        if not sides.split:
            return self.address(transport)
        if flow is None and hop is not None and hop[0] != "UDP":
            existing = getattr(self.transport, "existingFlow", None)
            if existing is not None:
                flow = existing(*hop)
        inside = flow is None or sides.isInside(flow)
        return sides.address(transport, inside) or self.address(transport)

    def _ownAddresses(self):
        own = Proxy._ownAddresses(self)
        for host, port in self.sides.addresses():
            own.add((host.strip("[]").lower(), port))
        return own


class EdgeProcessor:
    """
    The request processor of an edge (see the module docstring).

    Counters: C{forwarded}, C{refused}.
    """

    _log = Logger()

    def __init__(self, server, proxy, nextHops, sides, clientSeal=None):
        """
        @param clientSeal: a L{ClientAddressSeal} with the pool's secret:
            requests passed inwards state the client's address in a sealed
            C{Sipdist-Client} header, so that the servers inside count
            failed authentications per client, not per edge.  C{None}
            (no C{--secret-file}): no header.
        """
        self.clientSeal = clientSeal
        self.server = server
        self.proxy = proxy
        self.nextHops = nextHops
        self.sides = sides
        self.forwarded = 0
        self.refused = 0

    def __call__(self, request, transaction):
        if self.sides.split and self.sides.isInside(transaction.flow):
            self.refused += 1
            transaction.respond(self.server.response(
                request, 403, "Forbidden (Not Routed Through This Edge)"))
            return True
        if request.method == "OPTIONS":
            try:
                if request.uri.username is None:
                    return False
            except URIError:
                return False
        if self.nextHops is None:
            transaction.respond(self.server.response(
                request, 503, "Service Unavailable (No Next Hop)"))
            return True
        self.forwarded += 1
        # A new request: a Route it carries was not sealed by the pool
        # (the route-set link took those) and is not followed; it goes to
        # a next hop, which authenticates it.
        request.headers.pop("route", None)
        stripClientAddress(request)
        if self.clientSeal is not None:
            host, port = transaction.flow.remote
            request.setHeader(CLIENT_HEADER, self.clientSeal.value(
                host, port, request.header("call-id"),
                request.header("cseq")))
        register = request.method == "REGISTER"
        self.proxy.forward(request, transaction,
                           nextHop=self.nextHops.order(),
                           recordRoute=not register, addPath=register,
                           flowToken=True)
        return True


class _SideLearner(Service):
    """
    Tells the L{Sides} of an edge which ports face which side once they
    listen.
    """

    def __init__(self, transportService, sides, insideFlags):
        self.transportService = transportService
        self.transport = transportService.layer
        self.sides = sides
        self.insideFlags = insideFlags

    def startService(self):
        Service.startService(self)
        ready = getattr(self.transportService, "ready", None)
        if ready is not None:
            ready.addCallback(self._ready)

    def _ready(self, ports):
        self.sides.learn(ports, self.insideFlags,
                         getattr(self.transport, "advertisedHost", None))
        return ports


def assemble(service, config, reactor, store=None, checker=None):
    """
    The C{edge} role's adapter: build an edge's parts on C{service}.  An
    edge reads no store and checks no credentials (C{store} and C{checker}
    are not used): the servers inside do.

    @return: the parts of the chain (L{sipdist.roles.chains.ROLES}) by
        link name.
    @raise ConfigurationError: without a usable next hop.
    """
    hops = config.get("next-hop") or ()
    nextHops = None
    if hops:
        try:
            nextHops = NextHops(hops, random=config.get("random"))
        except NextHopConfigError as e:
            raise ConfigurationError(f"--next-hop: {e}")
    else:
        EdgeProcessor._log.warn(
            "edge {name} has no --next-hop: requests from outside get 503",
            name=config.get("name"))
    sides = Sides()
    outside = list(config.get("listen") or ())
    inside = list(config.get("inside-listen") or ())
    transportService = service.transportService
    flags = [False] * len(outside) + [True] * len(inside)
    _SideLearner(transportService, sides, flags).setServiceParent(service)
    server = service.server
    # Flow tokens only ever come back to this process: a key of its own
    # seals them.
    # Route entries are sealed with the pool's key, so that the servers
    # inside can check the edge's and the edge theirs: an edge needs the
    # pool's --secret-file too.
    secret = config.get("secret")
    if not secret:
        EdgeProcessor._log.warn(
            "edge {name} has no --secret-file: it cannot verify the pool's "
            "signatures, and relays nothing along a Path to its clients",
            name=config.get("name"))
        secret = os.urandom(32)
    signer = PeerSigner(secret, server.name, reactor)
    trusted = TrustedAddresses(config.get("trusted-peer") or ())
    proxy = EdgeProxy(reactor, service.transactions, service.transport,
                      service.transport.localAddress,
                      routeId=server.name, sides=sides,
                      tokenKey=os.urandom(32), routeKey=routeKey(secret),
                      peerVerify=lambda request, flow: peerOf(
                          signer, trusted, request, flow))
    server.proxy = proxy
    secret = config.get("secret")
    if not secret:
        EdgeProcessor._log.warn(
            "edge {name} has no --secret-file: the servers inside count "
            "failed authentications against the edge's address, not the "
            "clients'", name=config.get("name"))
    processor = EdgeProcessor(
        server, proxy, nextHops, sides,
        ClientAddressSeal(secret) if secret else None)
    server.addMethods(EDGE_METHODS)
    service.proxy = proxy
    service.processor = processor
    service.sides = sides
    service.nextHops = nextHops
    interval = config.get("next-hop-check") or 0
    if nextHops is not None and interval > 0:
        prober = Prober(reactor, service.transactions, service.transport,
                        parseURI(f"sip:{server.name}@{config['domain']}"),
                        timeout=min(2.0, interval))
        service.nextHopChecker = NextHopChecker(reactor, nextHops, prober,
                                                interval)
        service.nextHopChecker.setServiceParent(service)
    return {"route-set": proxy.routeInDialog, "edge": processor}
