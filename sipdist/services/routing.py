# -*- test-case-name: tests.test_routing -*-
"""
Routing of calls, messages and subscriptions between users: the C{router}
of the roles that consult the store (L{sipdist.roles.distribution.DistributionProcessor}).

An out-of-dialog C{INVITE}, C{MESSAGE}, C{SUBSCRIBE}, C{PUBLISH},
C{REFER} or C{OPTIONS} to a user reaches some server of the pool.  What
happens to it:

  1. B{From a pool peer} (another server of the pool that has already
     authenticated the caller and looked the callee up, see L{PeerSigner}):
     no authentication; it goes to the callee (step 3).
  2. B{From anybody else}: the caller is authenticated (C{407}) and looked
     up, as for every request from a user (L{DistributionProcessor.handle}):
     assigned here, it goes to the callee (step 3); assigned elsewhere, it is
     redirected (a client listing the option tag C{sipdist-redirect}, one
     Via value: a signed C{301}) or proxied to the caller's home (any other
     client, or more than one Via value), which routes it in its turn.
  3. B{To the callee} (L{Router.routeToCallee}): the callee's AOR is the
     Request-URI's.  A Request-URI for a domain we do not serve is a C{404}
     (a pool is not an open relay; a deployment that must reach other
     domains puts a proxy for them in front).  The callee is looked up in
     the store: unknown, C{404}; assigned to a home server that is down,
     to the callee's backup home (C{503} without one); assigned to another
     home, the request is proxied there (Record-Route, signed as coming
     from a peer) at its URI for the transport the request arrived on
     (L{sipdist.services.targets}; no such URI, C{503}: never TLS on to
     TCP or UDP), with the callee's backup home as fallback when that home
     is dead (L{sipdist.pool.failover}); registered here temporarily, its
     home being dead, it goes to its bindings here
     (L{sipdist.pool.standby}); assigned here, it goes to
     the registrar's bindings of the callee, forking in parallel, each
     branch following the binding's Path as a Route set and, without one,
     the flow the binding registered over (RFC 3327, RFC 5626); no binding
     is a C{480}.  C{SUBSCRIBE} and C{PUBLISH} to a user of this home go to
     the event server (C{service.notifier}) when there is one, else get
     C{489 Bad Event}.

An C{OPTIONS} whose Request-URI carries a port (C{sip:ping@10.0.0.1:5060})
is a health check of a server, not a question to a user: the server
answers it itself.

Peers are recognised by a C{Sipdist-Peer} header field, and by nothing
else: the id of the server that forwarded the request, a time stamp and an
HMAC-SHA-256 over them and the fields that identify the request (method,
Request-URI, Call-ID, CSeq, From), keyed from the nonce secret every server
of the pool shares.  Nobody without the secret can make one; a header older
or newer than L{PEER_WINDOW} seconds is ignored, and it is removed from
what leaves the pool for a user agent, so clients never see it.  A source
address is never trusted by itself: a request from the pool's network may
have been relayed there from outside.  C{--trusted-peer} (addresses and
networks) narrows who may present the header: when given, a signature
from any other source address does not count.

Everything a request needs is in memory with the memory, file and cached
LDAP stores: routing is O(1) per request, one HMAC for a request between
homes.
"""

import hmac
import ipaddress
import os
from hashlib import sha256

from twisted.logger import Logger

from sipdist.decision import DOWN, DOWN_RETRY_AFTER, HOME
from sipdist.sip.message import hasToTag
from sipdist.services.targets import arrivalTransport, noAddress, serverURIFor
from sipdist.store import StoreUnavailable
from sipdist.sip.uri import URIError, normaliseAOR

# Requests from a user to a user that the router takes.
ROUTED_METHODS = frozenset((
    "INVITE", "MESSAGE", "SUBSCRIBE", "PUBLISH", "REFER", "OPTIONS"))
EVENT_METHODS = frozenset(("SUBSCRIBE", "PUBLISH"))
# What a server with a router allows (for Allow): the routed methods and the
# in-dialog ones.
ROUTER_METHODS = ("INVITE", "MESSAGE", "SUBSCRIBE", "PUBLISH", "REFER", "BYE",
                  "PRACK", "UPDATE", "INFO", "NOTIFY")

PEER_HEADER = "sipdist-peer"
PEER_WINDOW = 120
_PEER_KEY_LABEL = b"sipdist-peer-v1"


class PeerSigner:
    """
    Signs the requests a server forwards to another server of its pool, and
    recognises those signed by its peers (see the module docstring).

    @param secret: the pool's shared secret (text or bytes).
    @param name: this server's id (what its signatures name).
    @param reactor: an L{IReactorTime}.
    @param window: how many seconds a signature stays valid either way of
        its time stamp.
    """

    def __init__(self, secret, name, reactor, window=PEER_WINDOW):
        if isinstance(secret, str):
            secret = secret.encode("utf-8")
        self._key = hmac.new(secret, _PEER_KEY_LABEL, sha256).digest()
        self.name = name
        self._reactor = reactor
        self.window = window

    def _mac(self, name, stamp, request):
        get = request.headers.get
        data = "\n".join((
            name, stamp, request.method, request.uriText,
            (get("call-id") or ("",))[0], (get("cseq") or ("",))[0],
            (get("from") or ("",))[0]))
        return hmac.new(self._key, data.encode("utf-8"),
                        sha256).hexdigest()[:32]

    def sign(self, request):
        """
        Put our C{Sipdist-Peer} field on a request we forward to a peer,
        replacing any other.
        """
        stamp = str(int(self._reactor.seconds()))
        request.headers[PEER_HEADER] = [
            f"{self.name};ts={stamp};sig={self._mac(self.name, stamp, request)}"]

    def verify(self, request):
        """
        @return: the id of the peer that signed C{request}, or C{None} if
            its C{Sipdist-Peer} field is missing, malformed, stale or
            forged.
        """
        values = request.headers.get(PEER_HEADER)
        if not values or len(values) != 1:
            return None
        name, _, rest = values[0].strip().partition(";ts=")
        stamp, _, mac = rest.partition(";sig=")
        if not name or not stamp.isdigit() or len(mac) != 32:
            return None
        if abs(self._reactor.seconds() - int(stamp)) > self.window:
            return None
        if not hmac.compare_digest(mac, self._mac(name, stamp, request)):
            return None
        return name


class TrustedAddresses:
    """
    The source addresses allowed to present a peer signature
    (C{--trusted-peer}): IP addresses and networks (C{10.1.0.0/16}).
    """

    def __init__(self, descriptions=()):
        self._addresses = set()
        self._networks = []
        for description in descriptions:
            network = ipaddress.ip_network(description.strip("[]"),
                                           strict=False)
            if network.num_addresses == 1:
                self._addresses.add(str(network.network_address))
            else:
                self._networks.append(network)

    def __bool__(self):
        return bool(self._addresses or self._networks)

    def __contains__(self, host):
        host = host.strip("[]")
        if host in self._addresses:
            return True
        if not self._networks:
            return False
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(address in network for network in self._networks)


def peerOf(signer, trusted, request, flow):
    """
    The id of the pool server that signed C{request} (see L{PeerSigner}),
    which arrived on C{flow}, when C{trusted} (L{TrustedAddresses}) is
    empty or holds the flow's address; else C{None}.
    """
    peer = signer.verify(request)
    if peer is None or not trusted:
        return peer
    remote = getattr(flow, "remote", None)
    if remote is None or remote[0] not in trusted:
        Router._log.info("peer signature of {peer} from {address}, outside "
                         "--trusted-peer: not a peer", peer=peer,
                         address=remote and remote[0])
        return None
    return peer


class Router:
    """
    The router of a store role (see the module docstring).

    @param service: the L{sipdist.server.ServerService}; its C{notifier}
        (if set) serves SUBSCRIBE and PUBLISH to our users.
    @param signer: a L{PeerSigner}.
    @param trusted: a L{TrustedAddresses}.

    Counters: C{local} (delivered to bindings here), C{toPeer} (proxied to
    the callee's home), C{fromPeer} (received from a peer), C{notFound},
    C{unavailable}.
    """

    _log = Logger()

    def __init__(self, service, signer, trusted=None):
        self.service = service
        self.signer = signer
        self.trusted = trusted or TrustedAddresses()
        self.local = 0
        self.toPeer = 0
        self.fromPeer = 0
        self.notFound = 0
        self.unavailable = 0

    def __call__(self, request, transaction, processor):
        if request.method not in ROUTED_METHODS or hasToTag(request):
            return False
        try:
            uri = request.uri
        except URIError:
            processor.respond(request, transaction, 400, "Bad Request-URI")
            return True
        if uri.username is None or (
                request.method == "OPTIONS" and uri.port is not None):
            # Addressed to a server, not to a user: an OPTIONS to
            # user@host:port is a health check of that server.
            return False
        headers = request.headers
        maxForwards = headers.get("max-forwards")
        if maxForwards is not None and maxForwards[0].strip() == "0":
            # Section 16.3 step 3 comes before authentication (step 6).
            processor.respond(request, transaction, 483, "Too Many Hops")
            return True
        peer = None
        if PEER_HEADER in headers:
            peer = self.peerOf(request, transaction.flow)
            del headers[PEER_HEADER]
        if peer is not None:
            self.fromPeer += 1
            self.routeToCallee(request, transaction, processor, relayed=True)
            return True
        processor.handle(
            request, transaction,
            lambda context: self.routeToCallee(
                context.request, context.transaction, processor))
        return True

    def peerOf(self, request, flow):
        """
        The id of the pool server that signed C{request}, which arrived on
        C{flow}, or C{None}: no valid signature, or (with C{--trusted-peer})
        one presented from an address not allowed to.
        """
        return peerOf(self.signer, self.trusted, request, flow)

    def routeToCallee(self, request, transaction, processor, relayed=False):
        """
        Route a request whose caller has been vouched for to the user its
        Request-URI names.

        @param relayed: whether a pool peer sent the request to us (it
            is then not failed over again, L{sipdist.pool.failover}).
        """
        uri = request.uri
        if not processor.forUs(uri):
            self.notFound += 1
            processor.respond(request, transaction, 404,
                              "Not Found (Domain Not Served Here)")
            return
        try:
            aor = normaliseAOR(uri)
        except URIError:
            processor.respond(request, transaction, 404, "Not Found")
            return
        d = processor.store.lookupUser(aor)
        d.addCallback(self._lookedUp, aor, request, transaction, processor,
                      relayed)
        d.addErrback(self._failed, request, transaction, processor)

    def _lookedUp(self, serverId, aor, request, transaction, processor,
                  relayed=False):
        if serverId is None:
            self.notFound += 1
            processor.respond(request, transaction, 404, "Not Found")
            return None
        if serverId == processor.server.name and processor.role == HOME:
            self._deliver(aor, request, transaction, processor)
            return None
        d = processor.store.getServer(serverId)
        d.addCallback(self._gotServer, serverId, request, transaction,
                      processor, aor, relayed)
        return d

    def _gotServer(self, record, serverId, request, transaction, processor,
                   aor=None, relayed=False):
        if record is None or not record.uri:
            self.unavailable += 1
            processor.respond(request, transaction, 480,
                              "Temporarily Unavailable (Unknown Home Server)")
            return None
        transport = arrivalTransport(request, transaction.flow)
        standby = getattr(processor, "standby", None)
        registrar = processor.registrar
        if (standby is not None and registrar is not None and aor is not None
                and registrar.lookup(aor)):
            # The callee registered here temporarily, its home being dead
            # (sipdist.pool.standby): delivered here while that lasts.
            d = standby.standsIn(aor, record, transport)
            d.addCallback(self._standsIn, record, aor, request, transaction,
                          processor, transport, relayed)
            return d
        return self._toHome(record, aor, request, transaction, processor,
                            transport, relayed)

    def _standsIn(self, yes, record, aor, request, transaction, processor,
                  transport, relayed):
        if yes:
            processor.standby.served += 1
            self._deliver(aor, request, transaction, processor)
            return None
        return self._toHome(record, aor, request, transaction, processor,
                            transport, relayed)

    def _toHome(self, record, aor, request, transaction, processor,
                transport, relayed):
        failover = getattr(processor, "failover", None)
        if record.state == DOWN:
            if failover is not None and aor is not None:
                # To the callee's backup home, where it may be registered
                # temporarily.
                d = failover.forward(processor.proxy, request, transaction,
                                     aor, record, None, transport, relayed)
                d.addCallback(self._downSent, request, transaction,
                              processor)
                return d
            self._downSent(False, request, transaction, processor)
            return None
        uri = serverURIFor(record, transport)
        if uri is None:
            self.unavailable += 1
            reject = noAddress(transport)
            processor.respond(request, transaction, reject.code,
                              reject.phrase)
            return
        self.toPeer += 1
        self.signer.sign(request)
        if failover is not None and aor is not None:
            d = failover.forward(processor.proxy, request, transaction,
                                 aor, record, uri, transport, relayed)
            d.addCallback(self._homeSent, request, transaction, processor)
            return d
        processor.proxy.forward(request, transaction, nextHop=uri)
        return None

    def _homeSent(self, sent, request, transaction, processor):
        if not sent:
            # Relayed to us by a peer and its home known dead: not failed
            # over again.
            self.toPeer -= 1
            self._downSent(False, request, transaction, processor)

    def _downSent(self, sent, request, transaction, processor):
        if sent:
            self.toPeer += 1
            return
        self.unavailable += 1
        processor.respond(request, transaction, 503,
                          "Service Unavailable (Home Server Down)",
                          [("Retry-After", str(DOWN_RETRY_AFTER))])

    def _deliver(self, aor, request, transaction, processor):
        if request.method in EVENT_METHODS:
            notifier = getattr(self.service, "notifier", None)
            if notifier is None:
                processor.respond(request, transaction, 489, "Bad Event")
            else:
                notifier.subscribe(request, transaction, aor)
            return
        registrar = processor.registrar
        bindings = registrar.lookup(aor) if registrar is not None else ()
        if not bindings:
            self.unavailable += 1
            processor.respond(request, transaction, 480,
                              "Temporarily Unavailable (Not Registered)")
            return
        self.local += 1
        # The credentials were for us (RFC 3261 section 22.3).
        request.headers.pop("proxy-authorization", None)
        processor.proxy.forward(
            request, transaction,
            target=[(b.uri, b.path, b.flow) for b in bindings])

    def _failed(self, failure, request, transaction, processor):
        if failure.check(StoreUnavailable):
            self._log.warn("assignment store unavailable: {reason}",
                           reason=failure.getErrorMessage())
            processor.respond(request, transaction, 503,
                              "Service Unavailable (Assignment Store Down)",
                              [("Retry-After", "10")])
            return
        self._log.failure("routing {method} to {uri}", failure,
                          method=request.method, uri=request.uriText)
        processor.respond(request, transaction, 500, "Server Internal Error")


def installRouting(service, config, reactor):
    """
    Give a store role (see L{sipdist.roles.base}) its L{Router}.
    """
    processor = service.processor
    if processor is None:
        return
    # Without a configured secret there is no pool to trust: a random key
    # recognises nobody.
    secret = config.get("secret") or os.urandom(32)
    signer = PeerSigner(secret, service.server.name, reactor)
    router = Router(service, signer,
                    TrustedAddresses(config.get("trusted-peer") or ()))
    processor.router = router
    processor.peerOf = router.peerOf
    service.router = router
    proxy = getattr(service, "proxy", None)
    if proxy is not None:
        proxy.peerVerify = router.peerOf
        proxy.peerSign = signer.sign
