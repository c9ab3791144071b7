# -*- test-case-name: tests.test_proxy -*-
"""
The stateful proxy core (RFC 3261 section 16, RFC 3327 Path, RFC 5626 flow
tokens) every role forwards requests with.

A L{Proxy} sits beside the server's transaction user (L{sipdist.server.
SIPServer}): a role's processor calls L{Proxy.forward} with the request, its
server transaction and the target; the proxy keeps a I{response context}
(L{ProxyContext}) for it, sends one client transaction per target through
the L{TransactionLayer}, forwards provisional responses upstream, picks the
best final response (section 16.7) and sends it through the server
transaction.  Timeouts become C{408}, a next hop that cannot be reached
C{503}, a C{503} from downstream C{500}.

What a request gets on its way through (section 16.6):

  - C{Max-Forwards} decremented (C{483} at 0, C{70} when absent);
  - loop detection (section 16.3 step 4): our branches carry a hash of the
    fields that identify the request as received (Request-URI, From, To,
    Call-ID, CSeq number, Route, Proxy-Require, Proxy-Authorization); a
    request that carries a Via of ours with the same hash has looped
    (C{482});
  - our own top Route entries removed (loose routing, section 16.4);
  - the Request-URI replaced by the target, unless a Route remains;
  - a Record-Route for dialog-creating requests (two when the request
    leaves on another transport than it came on), a Path for REGISTER;
  - our Via, with a fresh branch.

Responses go upstream only through the server transaction of the request
they answer, so to where that request came from: a response matching no
client transaction of ours (branch, CSeq method and sent-by) is dropped and
counted by the transaction layer, never sent on to the Via under ours (RFC
6026 replaced that stateless forwarding of stray 2xx with the Accepted
state, whose further 2xx go up the same server transaction).

Our Record-Route and Path URIs carry C{lr} and a C{sd} parameter naming this
proxy, and when asked the token of the client's flow in their user part
(RFC 5626): a request that later comes back through us with that Route is
sent over that flow (L{TransportLayer.flowByToken}), unless it came in on
that flow itself (then it is going the other way).

Wiring with L{sipdist.server.SIPServer} (processors and hooks only)::

    proxy = Proxy(reactor, service.transactions, service.transport,
                  {"UDP": ("192.0.2.10", 5060), "TCP": ("192.0.2.10", 5060)})

    def toHome(request, transaction):
        if request.viaCount() < 2:
            return False
        proxy.forward(request, transaction, nextHop=homeURI,
                      addPath=request.method == "REGISTER")
        return True

    server.processors[:0] = [proxy.routeInDialog, toHome]
    # in SIPServer.inviteCancelled:  if proxy.cancelled(transaction): return
    # in SIPServer.ackReceived:      proxy.forwardStateless(request, flow)
"""

import hmac
import os
from base64 import urlsafe_b64encode
from collections import deque
from hashlib import sha256
from urllib.parse import quote, unquote

from twisted.logger import Logger

from sipdist.auth.hmacsha256 import HMACSHA256
from sipdist.logs import LogLimiter
from sipdist.sip.message import (
    MAGIC_COOKIE, Request, hasToTag, parseNameAddr, responseTo)

# The header a pool server signs the requests it sends to its peers with
# (sipdist.services.routing.PeerSigner): removed from what leaves the pool.
PEER_HEADER = "sipdist-peer"
from sipdist.sip.transaction import (
    TransactionLayerFull, TransactionLayerStopped, TransactionTimeout,
    TransportError)
from sipdist.sip.uri import URIError, parseURI

# Our branches: MAGIC_COOKIE + "sd" + loop hash + "." + counter (stateful),
# MAGIC_COOKIE + "sdx" + hash (stateless, the same for a retransmission).
BRANCH_PREFIX = MAGIC_COOKIE + "sd"
_BRANCH_MARK = "branch=" + BRANCH_PREFIX
_STATELESS_PREFIX = BRANCH_PREFIX + "x"

# The URI parameter naming the server that wrote a Record-Route or Path
# entry (informative: it never makes a URI ours).
ROUTE_PARAM = "sd"
# The seal of our Record-Route and Path entries: "d." + an HMAC over the
# dialog (Call-ID, From tag) for a Record-Route, "p." + an HMAC over the
# flow token for a Path; and the HMACs binding the hops next to the entry
# in a dialog: the one towards the caller (upstream) and the callee
# (downstream).  See RouteSeals.
SEAL_PARAM = "sdm"
UPSTREAM_PARAM = "sdu"
DOWNSTREAM_PARAM = "sdn"
_ROUTE_KEY_LABEL = b"sipdist-route-v1"

DIALOG_CREATING = frozenset(("INVITE", "SUBSCRIBE", "REFER"))
TRANSPORTS = ("UDP", "TCP", "TLS")
DEFAULT_PORTS = {"UDP": 5060, "TCP": 5060, "TLS": 5061}

# Extensions we honour in Proxy-Require (section 16.3 step 5).
PROXY_SUPPORTED = frozenset(("path", "outbound"))

_HASH_MASK = (1 << 48) - 1


class NextHopError(ValueError):
    """
    A URI cannot be used as a next hop (unsupported transport, bad host).
    """


def nextHopFor(uri):
    """
    Where a request for C{uri} goes (RFC 3263 without DNS SRV): the
    C{transport} parameter, or TLS for C{sips:}, else UDP; C{maddr} over the
    host; the port, else 5060 (5061 for TLS).

    @type uri: L{URI}
    @return: C{(transport, host, port)}, C{host} without IPv6 brackets.
    @raise NextHopError: for a transport we do not have.
    """
    transport = uri.params.get("transport")
    if transport is None:
        transport = "TLS" if uri.scheme == "sips" else "UDP"
    else:
        transport = transport.upper()
        if uri.scheme == "sips" and transport == "TCP":
            transport = "TLS"
        if transport not in DEFAULT_PORTS:
            raise NextHopError(f"unsupported transport {transport}")
    host = uri.params.get("maddr") or uri.host
    if host.startswith("["):
        host = host[1:-1]
    if not host:
        raise NextHopError("no host")
    port = uri.port
    if port is None:
        port = DEFAULT_PORTS[transport]
    return transport, host, port


def routeKey(secret):
    """
    The key that seals a pool's Record-Route and Path entries, derived from
    the pool's shared secret (text or bytes) under its own label, so that
    it is unrelated to the nonce and peer keys made from the same secret.
    """
    if isinstance(secret, str):
        secret = secret.encode("utf-8")
    return hmac.new(secret, _ROUTE_KEY_LABEL, sha256).digest()


class RouteSeals:
    """
    Seals for the Route entries a pool writes (Record-Route, Path), which
    only the holders of the pool's key can make and check.

      - a Record-Route entry is sealed to its dialog: C{d.} + HMAC(server
        id, the entry's own host and port, Call-ID, From tag of the
        dialog-creating request, the flow
        token in the entry if any, so that a token cannot be moved from
        one dialog's entry to another's).  A request
        of the dialog carries that tag in its From (the caller's requests)
        or its To (the callee's);
      - the hops next to it in the dialog are bound to it too: C{sdu} is
        an HMAC over the dialog and the C{host:port} the entry sends to
        towards the caller (the Record-Route below it, or the caller's
        Contact), C{sdn} over the one towards the callee (where the request
        went from it);
      - a Path entry is sealed to the flow token it carries (C{p.} +
        HMAC(server id, host and port, token)); a request following a Path
        is only relayed
        when a pool server signed it (see L{Proxy.routeInDialog}).

    @param key: bytes (see L{routeKey}).
    """

    def __init__(self, key):
        self._key = key
        self._hmac = HMACSHA256(key)

    def _mac(self, *parts):
        data = "\n".join(parts).encode("utf-8")
        digest = self._hmac.digest(data)
        return urlsafe_b64encode(digest[:12]).decode("ascii")

    def dialog(self, routeId, at, callId, tag, token=None):
        """
        The seal of a Record-Route entry of server C{routeId} at C{at}
        (the C{(host, port)} the entry sends to; C{token}: the flow token
        in its user part, as written, or C{None}).
        """
        return "d." + self._mac("d", routeId, _at(at), callId, tag,
                                token or "")

    def path(self, routeId, at, token):
        """
        The seal of a Path entry of server C{routeId} at C{at} (C{token}:
        its flow token as written, or C{None}).
        """
        return "p." + self._mac("p", routeId, _at(at), token or "")

    def hop(self, routeId, callId, tag, host, port):
        """
        The binding of the hop at C{host:port} to a Record-Route entry.
        """
        return self._mac("h", routeId, callId, tag, _at((host, port)))

    def check(self, expected, given):
        """
        Whether a seal given in a request is the one expected.
        """
        return given is not None and hmac.compare_digest(
            expected.encode("ascii"), given.encode("ascii", "replace"))


def _at(address):
    """
    C{"host:port"} of a C{(host, port)}, as the seals cover it.
    """
    host, port = address
    return f"{_unbracket(host).lower()}:{port}"


def _dialogOf(request):
    """
    C{(Call-ID, [tags])} of a request: the tag of its From and of its To,
    those present.
    """
    get = request.headers.get
    callId = (get("call-id") or ("",))[0].strip()
    tags = []
    for name in ("from", "to"):
        try:
            tag = request.nameAddr(name)[2].get("tag")
        except (URIError, ValueError, KeyError):
            tag = None
        if tag:
            tags.append(tag)
    return callId, tags


def _hostPort(uri):
    """
    The C{(host, port)} a request for C{uri} is sent to (L{nextHopFor}).

    @raise NextHopError: see L{nextHopFor}.
    """
    transport, host, port = nextHopFor(uri)
    return host, port


def _bracket(host):
    if ":" in host and not host.startswith("["):
        return f"[{host}]"
    return host


def _unbracket(host):
    if host.startswith("["):
        return host[1:-1]
    return host


class _Reject(Exception):
    """
    The request is answered here with C{code} (and C{headers}).
    """

    def __init__(self, code, phrase, headers=None):
        Exception.__init__(self, f"{code} {phrase}")
        self.code = code
        self.phrase = phrase
        self.headers = headers


class _Local:
    """
    A final response we generate for a branch (timeout, unreachable next
    hop), built against the server transaction's request when chosen.
    """

    __slots__ = ("code", "phrase")

    def __init__(self, code, phrase):
        self.code = code
        self.phrase = phrase


def _rank(code):
    # Section 16.7 step 6: a 6xx wins, else the lowest class.
    return 0 if code >= 600 else code // 100


class _Branch:
    """
    One target of a response context: its request, client transaction and
    final answer.
    """

    __slots__ = ("context", "request", "client", "done", "hop", "target",
                 "heard", "stall")

    def __init__(self, context, request, hop, target=None):
        self.context = context
        self.request = request
        self.hop = hop
        self.target = target
        self.client = None
        self.done = False
        # Whether any response (a 100 too) came on the branch; the timer
        # after which a silent next hop is checked (see Failover).
        self.heard = False
        self.stall = None


class Failover:
    """
    Where a request goes when its next hop is dead (RFC 3261 section 16.7,
    RFC 3263 section 4.3): the request given to L{Proxy.forward} with
    C{failover} goes to its C{nextHop} first, and to C{uri} when that hop
    cannot be reached: connection refused, failed or reset (a C{503 Next
    Hop Unreachable} of our own), or silent for C{stallAfter} seconds
    (no response at all, not even a C{100}) and C{check()} fires with
    C{True} (the hop does not answer a probe either).  A response from
    the first hop, whatever its code, is its answer: passed on, never
    retried elsewhere (a home that answers is alive; its user is not
    served elsewhere).

    @ivar uri: the fallback next hop (a L{URI} or its text).
    @ivar sign: C{sign(request)} applied to the request sent to C{uri}
        (the pool's peer signature, so the fallback knows a pool server
        sent it there), or C{None}.
    @ivar stallAfter: seconds of silence before C{check} is called.
    @ivar check: C{check()} returning a L{Deferred} that fires with
        whether the first hop is dead; C{None}: silence is never taken
        for death (the transaction's own timeout applies).
    """

    __slots__ = ("uri", "sign", "stallAfter", "check")

    def __init__(self, uri, sign=None, stallAfter=1.0, check=None):
        self.uri = uri
        self.sign = sign
        self.stallAfter = stallAfter
        self.check = check


class ProxyContext:
    """
    The response context of one proxied request (RFC 3261 section 16.7).

    @ivar request: the request as received.
    @ivar serverTransaction: where responses go.
    @ivar branches: every L{_Branch} started.
    @ivar finalSent: whether a final response has gone upstream.
    @ivar cancelled: whether the request was CANCELled.
    @ivar response: the final response sent upstream, once sent.
    """

    __slots__ = ("proxy", "request", "serverTransaction", "invite",
                 "branches", "pending", "targets", "best", "challenges",
                 "finalSent", "cancelled", "response", "base", "flow",
                 "options", "hasRoute", "loopHash", "nextHop", "parallel",
                 "fallbacks", "failover", "failedOver")

    def __init__(self, proxy, request, serverTransaction):
        self.proxy = proxy
        self.request = request
        self.serverTransaction = serverTransaction
        self.invite = request.method == "INVITE"
        self.branches = []
        self.pending = 0
        self.targets = None
        self.best = None
        self.challenges = None
        self.finalSent = False
        self.cancelled = False
        self.response = None
        self.failover = None
        self.failedOver = False

    def __repr__(self):
        return (f"<ProxyContext {self.request.method} "
                f"{len(self.branches)} branches, {self.pending} pending>")


class Proxy:
    """
    A stateful proxy core.

    @param reactor: an L{IReactorTime} (connect timeouts).
    @param transactions: the server's L{sipdist.sip.transaction.TransactionLayer}.
    @param transport: the server's L{sipdist.sip.transport.TransportLayer} (or
        anything with C{connect(transport, host, port)} returning a
        L{Deferred} of a flow, and C{flowByToken(token)}).
    @param addresses: our address for each transport: a mapping or a
        callable taking C{"UDP"}, C{"TCP"} or C{"TLS"} and returning
        C{(host, port)} (or C{None}); what our Via, Record-Route and Path
        carry.  A transport without an address borrows the first one found.
    @param recordRoute: C{False} to never Record-Route.
    @param maxForwards: the Max-Forwards a request without one gets.
    @param timerC: if not C{None}, the transaction layer's timer C (s).
    @param aliases: further C{(host, port)} pairs that name this server in
        a Route (a host name, a public address).
    @param routeId: the value of the C{sd} parameter of our Record-Route
        and Path URIs; give the same one across restarts so that dialogs
        survive them even when our address in a Route is not recognised.
    @param maxContexts: how many proxied requests may be pending at once;
        beyond it requests are answered C{503} with C{Retry-After}.
    @param connectTimeout: seconds a new connection to a next hop may take.
    @param retryAfter: C{Retry-After} of that C{503} (s).
    @param tokenKey: bytes to seal the flow tokens we write in Path and
        Record-Route with (an HMAC appended, RFC 5626 section 5.2), so that
        a Route with a token we did not write is refused with C{403}
        rather than sent over the flow it names; C{None}: tokens as they
        are.
    @param routeKey: the pool's key for sealing our Record-Route and Path
        entries (L{routeKey}, L{RouteSeals}); every server of the pool must
        have the same one for dialogs through several of them to work.
        C{None}: a random key (entries only this process can check).
    @param peerVerify: C{verify(request, flow)} returning the id of the
        pool server that signed a request arriving on C{flow} or C{None}
        (L{sipdist.services.routing.Router.peerOf}); a request following
        a Path is relayed only when it returns an id.  C{None}: no Path is
        followed.
    @param peerSign: C{sign(request)}: sign a request leaving along a
        binding's Path (so that the servers on the Path relay it).

    Counters: C{forwarded}, C{loops}, C{tooManyHops}, C{rejected},
    C{timeouts}, C{unreachable}, C{statelessForwarded},
    C{responsesForwarded}; C{active} is the number of contexts.
    """

    _log = Logger()

    def __init__(self, reactor, transactions, transport, addresses,
                 recordRoute=True, maxForwards=70, timerC=None, aliases=(),
                 routeId="1", maxContexts=50000, connectTimeout=10.0,
                 retryAfter=5, tokenKey=None, routeKey=None,
                 peerVerify=None, peerSign=None):
        self._reactor = reactor
        self._tokenKey = tokenKey
        # (the key, its HMACSHA256), made when first used.
        self._tokenHMAC = None
        if routeKey is None:
            routeKey = os.urandom(32)
        self.seals = RouteSeals(routeKey)
        self.peerVerify = peerVerify
        self.peerSign = peerSign
        self.transactions = transactions
        self.transport = transport
        if callable(addresses):
            self._addressOf = addresses
        else:
            mapping = dict(addresses)
            self._addressOf = mapping.get
        self.recordRoute = recordRoute
        self.maxForwards = maxForwards
        self.busyLog = LogLimiter(reactor, log=self._log,
                                  what="503 Proxy Busy")
        if timerC is not None:
            transactions.timerC = timerC
        self.aliases = frozenset(
            (_unbracket(h).lower(), p) for h, p in aliases)
        self.routeId = routeId
        self.maxContexts = maxContexts
        self.connectTimeout = connectTimeout
        self.retryAfter = retryAfter
        self._contexts = {}
        self._counter = 0
        self.forwarded = 0
        self.loops = 0
        self.tooManyHops = 0
        self.rejected = 0
        self.timeouts = 0
        self.unreachable = 0
        self.statelessForwarded = 0
        self.responsesForwarded = 0
        self.unsealed = 0

    # Addresses

    def address(self, transport):
        """
        Our C{(host, port)} for a transport (see C{addresses}).
        """
        address = self._addressOf(transport)
        if address is None:
            for other in TRANSPORTS:
                address = self._addressOf(other)
                if address is not None:
                    break
            else:
                raise NextHopError("no local address configured")
        return address

    def _ownAddresses(self):
        own = set(self.aliases)
        for transport in TRANSPORTS:
            address = self._addressOf(transport)
            if address is not None:
                own.add((_unbracket(address[0]).lower(), address[1]))
        return own

    def isOwnURI(self, uri, own=None):
        """
        Whether a Route URI names this proxy: its host and port are among
        our addresses (or C{aliases}).  A C{sd} parameter naming us does
        not make a URI ours: anybody can write one.
        """
        if own is None:
            own = self._ownAddresses()
        port = uri.port
        if port is None:
            try:
                port = nextHopFor(uri)[2]
            except NextHopError:
                return False
        return (_unbracket(uri.host).lower(), port) in own

    @property
    def active(self):
        """
        How many proxied requests are pending.
        """
        return len(self._contexts)

    def stats(self):
        """
        @return: the counters, as a L{dict} for the metrics endpoint.
        """
        return {
            "active": self.active,
            "forwarded": self.forwarded,
            "loops": self.loops,
            "too_many_hops": self.tooManyHops,
            "rejected": self.rejected,
            "timeouts": self.timeouts,
            "unreachable": self.unreachable,
            "stateless_forwarded": self.statelessForwarded,
            "responses_forwarded": self.responsesForwarded,
            "unsealed_routes": self.unsealed,
        }

    # Building what we add

    def addressFor(self, transport, flow=None, hop=None):
        """
        Our C{(host, port)} as the peer on the other end of C{flow} (or,
        before a flow exists, at C{hop}, a C{(transport, host, port)}) sees
        us: what our Via, Record-Route and Path facing it carry.  A proxy
        with interfaces on several networks (an edge) overrides it; this
        one has one address per transport (L{address}).
        """
        return self.address(transport)

    def _routeURI(self, transport, token=None, outbound=False, address=None,
                  seal=None):
        """
        One of our Record-Route or Path entries.

        @param seal: C{seal((host, port))} returns the C{(name, value)}
            parameters sealing the entry at that address (L{RouteSeals}).
        """
        host, port = address or self.address(transport)
        if token is None:
            user = ""
        else:
            if self._tokenKey is not None:
                token = token + "." + self._tokenMAC(token)
            user = quote(token, safe="") + "@"
        if transport == "UDP":
            tp = ""
        else:
            tp = ";transport=" + transport.lower()
        ob = ";ob" if outbound else ""
        params = seal((host, port)) if seal is not None else ()
        sealed = "".join(f";{name}={value}" for name, value in params)
        return (f"<sip:{user}{_bracket(host)}:{port}{tp};lr{ob};"
                f"{ROUTE_PARAM}={self.routeId}{sealed}>")

    def _dialogSeal(self, request, upstream=None, downstream=None,
                    token=None):
        """
        The sealer (for L{_routeURI}) of a Record-Route entry for a
        dialog-creating C{request} (as received), binding the hops at
        C{upstream} and C{downstream} (C{(host, port)} or C{None}) and the
        flow C{token} the entry carries.
        """
        callId, tags = _dialogOf(request)
        try:
            fromTag = request.nameAddr("from")[2].get("tag") or ""
        except (URIError, ValueError, KeyError):
            fromTag = ""
        seals = self.seals
        if token is not None:
            token = self._sealedToken(token)
        routeId = self.routeId

        def seal(at):
            params = [(SEAL_PARAM, seals.dialog(routeId, at, callId, fromTag,
                                                token))]
            if upstream is not None:
                params.append((UPSTREAM_PARAM, seals.hop(
                    routeId, callId, fromTag, *upstream)))
            if downstream is not None:
                params.append((DOWNSTREAM_PARAM, seals.hop(
                    routeId, callId, fromTag, *downstream)))
            return params
        return seal

    def _upstreamHop(self, request):
        """
        The C{(host, port)} a dialog's requests towards the caller go to
        from us: the Record-Route below ours, or the caller's Contact;
        C{None} if neither can be read.
        """
        for name in ("record-route", "contact"):
            values = request.values(name)
            if values:
                try:
                    return _hostPort(parseNameAddr(values[0])[1])
                except (URIError, ValueError):
                    return None
        return None

    def _sealedToken(self, token):
        """
        A flow token as our Route URIs carry it (with its MAC, if sealed).
        """
        if self._tokenKey is not None:
            return token + "." + self._tokenMAC(token)
        return token

    def _tokenMAC(self, token):
        tokenHMAC = self._tokenHMAC
        if tokenHMAC is None or tokenHMAC[0] != self._tokenKey:
            tokenHMAC = self._tokenHMAC = (self._tokenKey,
                                           HMACSHA256(self._tokenKey))
        digest = tokenHMAC[1].digest(token.encode("utf-8"))
        return urlsafe_b64encode(digest[:12]).decode("ascii")

    def _via(self, transport, branch, address=None):
        host, port = address or self.address(transport)
        return f"SIP/2.0/{transport} {_bracket(host)}:{port};branch={branch};rport"

    def _loopHash(self, request):
        headers = request.headers
        get = headers.get
        key = (request.uriText, get("from")[0], get("to")[0],
               get("call-id")[0], request.cseq()[0], tuple(get("route", ())),
               tuple(get("proxy-require", ())),
               tuple(get("proxy-authorization", ())))
        # The hash only has to be stable within this process: a loop comes
        # back to the process that sent it.
        return format(hash(key) & _HASH_MASK, "x")

    def _newBranch(self, loopHash):
        self._counter = counter = self._counter + 1
        return f"{BRANCH_PREFIX}{loopHash}.{counter:x}"

    # Checks on the request as received

    def _checks(self, request):
        """
        Max-Forwards, Proxy-Require and loop detection (section 16.3).

        @return: the new Max-Forwards and the loop hash.
        @raise _Reject: with the answer.
        """
        headers = request.headers
        maxForwards = headers.get("max-forwards")
        if maxForwards is None:
            newMaxForwards = self.maxForwards
        else:
            text = maxForwards[0].strip()
            if not text.isdigit():
                raise _Reject(400, "Bad Max-Forwards")
            value = int(text)
            if value <= 0:
                self.tooManyHops += 1
                raise _Reject(483, "Too Many Hops")
            newMaxForwards = value - 1
        proxyRequire = headers.get("proxy-require")
        if proxyRequire:
            unsupported = [
                v for v in request.values("proxy-require")
                if v.lower() not in PROXY_SUPPORTED]
            if unsupported:
                raise _Reject(420, "Bad Extension",
                              {"unsupported": [", ".join(unsupported)]})
        loopHash = self._loopHash(request)
        for line in headers.get("via", ()):
            if _BRANCH_MARK in line:
                self._checkLoop(request, loopHash)
                break
        return newMaxForwards, loopHash

    def _checkLoop(self, request, loopHash):
        own = self._ownAddresses()
        mark = BRANCH_PREFIX + loopHash + "."
        try:
            vias = request.vias()
        except ValueError:
            raise _Reject(400, "Malformed Via Header")
        for via in vias:
            branch = via.branch
            if (branch and branch.startswith(mark)
                    and (_unbracket(via.host).lower(), via.sentByPort) in own):
                self.loops += 1
                raise _Reject(482, "Loop Detected")

    def _popOwnRoutes(self, request, arrivedOn):
        """
        Remove our entries from the top of the Route (section 16.4).

        @return: C{(popped, flow)}: how many were ours, and the flow named
            by a flow token in them when the request did not come in on it
            (C{None} otherwise).
        @raise _Reject: for a bad Route, or a token whose flow is gone
            (C{430 Flow Failed}, RFC 5626).
        """
        values = request.values("route")
        own = self._ownAddresses()
        popped = 0
        token = None
        for value in values:
            try:
                uri = parseNameAddr(value)[1]
            except (URIError, ValueError):
                raise _Reject(400, "Bad Route Header")
            if not self.isOwnURI(uri, own):
                break
            popped += 1
            if uri.username is not None:
                token = unquote(uri.username)
                if self._tokenKey is not None:
                    token, _, mac = token.rpartition(".")
                    if not token or not hmac.compare_digest(
                            mac, self._tokenMAC(token)):
                        raise _Reject(403, "Forbidden (Bad Flow Token)")
        if popped:
            rest = values[popped:]
            if rest:
                request.headers["route"] = rest
            else:
                del request.headers["route"]
        if token is None:
            return popped, None
        if getattr(arrivedOn, "token", None) == token:
            # It comes from the flow the token names: it goes the other way.
            return popped, None
        flow = self.transport.flowByToken(token)
        if flow is None:
            raise _Reject(430, "Flow Failed")
        return popped, flow

    # Forwarding

    def forward(self, request, serverTransaction, target=None,
                recordRoute=True, addPath=False, flowToken=None,
                nextHop=None, parallel=True, failover=None):
        """
        Proxy a request statefully (RFC 3261 section 16.6) and answer its
        server transaction with the best final response.

        @param request: the request as received.
        @param serverTransaction: its L{ServerTransaction}.
        @param target: the new Request-URI (a L{URI} or its text), a list of
            them to fork to, or C{None} to keep the Request-URI.  Ignored
            while a Route not naming us remains (loose routing).  A target
            may also be a C{(uri, routeSet, flow)} tuple: a registered
            contact with the Path it registered with, put as Route values
            on its branch (RFC 3327), and the flow it registered over (or
            C{None}), used when it has no route set and is still open
            (RFC 5626 section 5.3).
        @param recordRoute: C{False} not to Record-Route this request (only
            dialog-creating requests outside a dialog are record-routed).
        @param addPath: add a Path for a REGISTER (RFC 3327); with
            C{Require: path} so a registrar without Path support refuses it
            rather than ignoring it.
        @param flowToken: the token of the flow requests coming back must
            use (C{True}: the flow the request came in on); put in the user
            part of our Path or (outer) Record-Route URI.
        @param nextHop: a L{URI} (or text) to send the request to without
            changing its Request-URI or adding a Route: another proxy such
            as the user's home server.  It takes precedence over the Route.
            A list of them: the first, and when it cannot be reached
            (connection refused or failed, a C{503 Next Hop Unreachable} of
            our own), the next one, and so on.
        @param parallel: fork to every target at once (C{True}) or one
            after the other, moving on after a failure response (C{False}).
        @param failover: a L{Failover}: where the request goes when
            C{nextHop} (a single one) is dead.
        @return: the L{ProxyContext}, or C{None} if the request was
            answered at once (483, 482, 503 ...).
        """
        try:
            context = self._start(request, serverTransaction, target,
                                  recordRoute, addPath, flowToken, nextHop,
                                  parallel, failover)
        except _Reject as reject:
            self._answer(request, serverTransaction, reject)
            return None
        except URIError as e:
            self._log.warn("cannot proxy {request!r}: bad target: {error}",
                           request=request, error=str(e))
            self._answer(request, serverTransaction,
                         _Reject(500, "Bad Proxy Target"))
            return None
        except Exception:
            self._log.failure("cannot proxy {request!r}", request=request)
            self._answer(request, serverTransaction,
                         _Reject(500, "Proxy Error"))
            return None
        return context

    def _answer(self, request, serverTransaction, reject):
        self.rejected += 1
        response = responseTo(request, reject.code, reject.phrase)
        if reject.headers:
            response.headers.update(reject.headers)
        serverTransaction.respond(response)

    def _start(self, request, serverTransaction, target, recordRoute,
               addPath, flowToken, nextHop, parallel, failover=None):
        if request.method == "ACK":
            raise ValueError("an ACK is forwarded with forwardStateless")
        contexts = self._contexts
        if serverTransaction in contexts:
            raise ValueError("the transaction is already being proxied")
        if len(contexts) >= self.maxContexts:
            if self.busyLog.allow() is not None:
                self._log.warn("{count} requests being proxied: 503 to "
                               "{method}", count=len(contexts),
                               method=request.method)
            raise _Reject(503, "Proxy Busy",
                          {"retry-after": [str(self.retryAfter)]})
        newMaxForwards, loopHash = self._checks(request)

        base = Request(request.method, request.uriText)
        base.headers = {k: v[:] for k, v in request.headers.items()}
        base.body = request.body
        base.headers["max-forwards"] = [str(newMaxForwards)]
        arrivedOn = serverTransaction.flow
        flow = None
        if "route" in base.headers:
            flow = self._popOwnRoutes(base, arrivedOn)[1]
        hasRoute = "route" in base.headers

        if flowToken is True:
            flowToken = getattr(arrivedOn, "token", None)
        options = (recordRoute and self.recordRoute
                   and request.method in DIALOG_CREATING
                   and not hasToTag(request),
                   addPath and request.method == "REGISTER",
                   flowToken,
                   arrivedOn.transport)
        if options[1]:
            require = base.values("require")
            if "path" not in (v.lower() for v in require):
                base.addHeader("require", "path")
        fallbacks = None
        if isinstance(nextHop, list):
            hops = [parseURI(h) if isinstance(h, str) else h for h in nextHop]
            nextHop = hops[0] if hops else None
            if len(hops) > 1:
                fallbacks = deque(hops[1:])
        elif isinstance(nextHop, str):
            nextHop = parseURI(nextHop)
        if failover is not None and nextHop is not None:
            fallback = failover.uri
            if isinstance(fallback, str):
                fallback = parseURI(fallback)
            fallbacks = deque([fallback])

        if target is None or hasRoute:
            targets = [None]
        elif isinstance(target, list):
            targets = [_target(t) for t in target]
            if not targets:
                raise _Reject(480, "Temporarily Unavailable")
        else:
            targets = [_target(target)]

        context = ProxyContext(self, request, serverTransaction)
        context.base = base
        context.flow = flow
        context.options = options
        context.hasRoute = hasRoute
        context.loopHash = loopHash
        context.targets = deque(targets)
        context.nextHop = nextHop
        context.fallbacks = fallbacks
        context.failover = failover
        context.parallel = parallel
        contexts[serverTransaction] = context
        self.forwarded += 1
        first = True
        while context.targets and not context.finalSent:
            self._startBranch(context, context.targets.popleft(),
                              copy=not first or len(context.targets) > 0
                              or fallbacks is not None)
            first = False
            if not parallel:
                break
        self._maybeFinish(context)
        return context

    def _startBranch(self, context, target, copy=True):
        base = context.base
        if copy:
            request = Request(base.method, base.uriText)
            request.headers = {k: v[:] for k, v in base.headers.items()}
            request.body = base.body
        else:
            request = base
        uri = routes = None
        flow = context.flow
        if target is not None:
            uri, routes, targetFlow = target
            request.uri = uri
            if routes:
                for value in reversed(routes):
                    request.insertHeader("route", value)
            elif (flow is None and targetFlow is not None
                    and getattr(targetFlow, "connected", True)):
                flow = targetFlow
        nextHop = context.nextHop
        try:
            if flow is not None:
                hop = (flow.transport,) + tuple(flow.remote)
            elif nextHop is not None:
                hop = nextHopFor(nextHop)
            elif context.hasRoute or routes:
                hop = nextHopFor(parseNameAddr(request.values("route")[0])[1])
            elif uri is not None:
                hop = nextHopFor(uri)
            else:
                hop = nextHopFor(context.request.uri)
        except (URIError, ValueError) as e:
            self._log.info("no next hop for {request!r}: {error}",
                           request=context.request, error=e)
            self._branchAnswered(context, None, _Local(502, "Bad Next Hop"))
            return
        transport = hop[0]
        recordRoute, path, token, inTransport = context.options
        address = self.addressFor(transport, flow, hop)
        if recordRoute:
            if token is None and flow is not None and flow is context.flow:
                # Leaving over the flow a token named (towards a client an
                # edge reaches only that way): the callee's in-dialog
                # requests must come back over it too.
                token = getattr(flow, "token", None)
            inAddress = self.addressFor(inTransport,
                                        context.serverTransaction.flow)
            upstream = self._upstreamHop(context.request)
            downstream = (_unbracket(hop[1]), hop[2])
            if uri is not None and not routes:
                # To a registered contact: the dialog's requests go to the
                # callee's Contact, whatever flow this one left on.
                try:
                    downstream = _hostPort(uri)
                except NextHopError:
                    pass
            if inTransport != transport or inAddress != address:
                # Double record-routing (RFC 5658): the inner entry faces the
                # caller, the outer one the callee.
                request.insertHeader("record-route", self._routeURI(
                    inTransport, address=inAddress,
                    seal=self._dialogSeal(context.request, upstream)))
                upstream = None
            request.insertHeader("record-route", self._routeURI(
                transport, token, address=address,
                seal=self._dialogSeal(context.request, upstream,
                                      downstream, token)))
        if path:
            sealed = None if token is None else self._sealedToken(token)
            request.insertHeader("path", self._routeURI(
                transport, token, outbound=token is not None,
                address=address,
                seal=lambda at: [(SEAL_PARAM, self.seals.path(
                    self.routeId, at, sealed))]))
        if routes and self.peerSign is not None:
            # Along a binding's Path: the servers on it relay only what a
            # pool server signed.
            self.peerSign(request)
        elif not (context.hasRoute or routes or nextHop is not None):
            # Leaving the pool for a user agent.
            request.headers.pop(PEER_HEADER, None)
        failover = context.failover
        if failover is not None and context.failedOver \
                and failover.sign is not None:
            failover.sign(request)
        request.insertHeader(
            "via", self._via(transport, self._newBranch(context.loopHash),
                             address))
        branch = _Branch(context, request, hop, target)
        context.branches.append(branch)
        context.pending += 1
        if (failover is not None and failover.check is not None
                and not context.failedOver and flow is None):
            branch.stall = self._reactor.callLater(
                failover.stallAfter, self._stalled, branch)
        if flow is not None:
            self._connected(flow, branch, None)
            return
        d = self.transport.connect(transport, hop[1], hop[2])
        if d.called:
            d.addCallbacks(self._connected, self._connectFailed,
                           (branch, None), None, (branch, None))
            return
        timeout = self._reactor.callLater(self.connectTimeout,
                                          self._connectTimedOut, branch)
        d.addCallbacks(self._connected, self._connectFailed,
                       (branch, timeout), None, (branch, timeout))

    def _stalled(self, branch):
        """
        The first hop of a request with a L{Failover} has said nothing for
        C{stallAfter} seconds: ask whether it is dead, and when it is (and
        still silent), give up on it for the fallback.
        """
        branch.stall = None
        context = branch.context
        if branch.done or branch.heard:
            return

        def checked(dead):
            if not dead or branch.done or branch.heard:
                return
            self.unreachable += 1
            self._log.info("{hop} silent and not answering a probe: given "
                           "up", hop=branch.hop)
            self._branchAnswered(context, branch,
                                 _Local(503, "Next Hop Unreachable"))

        def failed(failure):
            self._log.failure("checking {hop}", failure, hop=branch.hop)

        d = context.failover.check()
        d.addCallback(checked)
        d.addErrback(failed)

    def _connectTimedOut(self, branch):
        if not branch.done and branch.client is None:
            self._log.info("no connection to {hop} in time", hop=branch.hop)
            self.unreachable += 1
            self._branchAnswered(branch.context, branch,
                                 _Local(503, "Next Hop Unreachable"))

    def _connectFailed(self, failure, branch, timeout):
        if timeout is not None and timeout.active():
            timeout.cancel()
        if branch.done:
            return
        self.unreachable += 1
        self._log.info("cannot connect to {hop}: {reason}", hop=branch.hop,
                       reason=failure.getErrorMessage())
        self._branchAnswered(branch.context, branch,
                             _Local(503, "Next Hop Unreachable"))

    def _connected(self, flow, branch, timeout):
        if timeout is not None and timeout.active():
            timeout.cancel()
        if branch.done:
            return
        context = branch.context
        if context.cancelled or context.finalSent and not context.invite:
            self._branchAnswered(context, branch, None)
            return
        try:
            client = self.transactions.sendRequest(branch.request, flow)
        except ValueError:
            self._log.failure("cannot send {request!r}",
                              request=branch.request)
            self._branchAnswered(context, branch, _Local(500, "Proxy Error"))
            return
        branch.client = client
        client.onProvisional = lambda response: self._provisional(
            branch, response)
        if context.invite:
            client.onFurther2xx = lambda response: self._further2xx(
                branch, response)
        client.deferred.addCallbacks(self._final, self._failed,
                                     (branch,), None, (branch,))

    # Responses

    def _provisional(self, branch, response):
        branch.heard = True
        if response.code == 100 or branch.done:
            return
        context = branch.context
        if context.finalSent or not _stripOurVia(response):
            return
        context.serverTransaction.respond(response)

    def _further2xx(self, branch, response):
        """
        A 2xx to an INVITE arriving again on a branch whose client
        transaction is in the Accepted state (RFC 6026): it goes upstream
        through the server transaction, so to where the INVITE came from,
        whatever the Via values under ours say.
        """
        if not _stripOurVia(response):
            return
        self.responsesForwarded += 1
        branch.context.serverTransaction.respond(response)

    def _final(self, response, branch):
        context = branch.context
        branch.heard = True
        if branch.done:
            return
        if not _stripOurVia(response):
            response = _Local(502, "Bad Response Downstream")
        self._branchAnswered(context, branch, response)

    def _failed(self, failure, branch):
        if failure.check(TransactionTimeout):
            self.timeouts += 1
            local = _Local(408, "Request Timeout")
        elif failure.check(TransportError):
            self.unreachable += 1
            local = _Local(503, "Next Hop Unreachable")
        elif failure.check(TransactionLayerFull):
            local = _Local(503, "Server Busy")
        elif failure.check(TransactionLayerStopped):
            local = _Local(503, "Shutting Down")
        else:
            self._log.failure("branch of {request!r} failed", failure,
                              request=branch.request)
            local = _Local(500, "Proxy Error")
        self._branchAnswered(branch.context, branch, local)

    def _branchAnswered(self, context, branch, response):
        """
        A branch has its final answer (C{None}: it was never sent).
        """
        if branch is not None:
            if branch.done:
                return
            branch.done = True
            context.pending -= 1
            if branch.stall is not None:
                if branch.stall.active():
                    branch.stall.cancel()
                branch.stall = None
        if response is not None:
            code = response.code
            if 200 <= code < 300 and not isinstance(response, _Local):
                self._send(context, response)
                if context.invite:
                    self._cancelPending(context)
            else:
                best = context.best
                if (best is None or _rank(code) < _rank(best.code)
                        or _rank(code) == _rank(best.code)
                        and isinstance(best, _Local)
                        and not isinstance(response, _Local)):
                    context.best = response
                if (code == 401 or code == 407) and not isinstance(
                        response, _Local):
                    if context.challenges is None:
                        context.challenges = []
                    context.challenges.append(response)
                if code >= 600 and context.invite:
                    self._cancelPending(context)
        if (branch is not None and context.fallbacks
                and isinstance(response, _Local) and response.code == 503
                and not context.finalSent and not context.cancelled):
            # The next hop cannot be reached: the next one in the list.
            context.nextHop = context.fallbacks.popleft()
            context.failedOver = True
            self._log.info("{hop} unreachable: trying {next}", hop=branch.hop,
                           next=context.nextHop)
            self._startBranch(context, branch.target)
        if (not context.pending and context.targets and not context.finalSent
                and not context.cancelled
                and (context.best is None or context.best.code < 600)):
            # Sequential forking: the next target.
            self._startBranch(context, context.targets.popleft())
        self._maybeFinish(context)

    def _maybeFinish(self, context):
        if context.pending:
            return
        if context.targets and not context.finalSent \
                and not context.cancelled:
            return
        if self._contexts.get(context.serverTransaction) is context:
            del self._contexts[context.serverTransaction]
        if context.finalSent:
            return
        best = context.best
        request = context.request
        if context.cancelled and (best is None or isinstance(best, _Local)):
            response = responseTo(request, 487, "Request Terminated")
        elif best is None:
            response = responseTo(request, 500, "Proxy Error")
        elif isinstance(best, _Local):
            response = responseTo(request, best.code, best.phrase)
        else:
            response = best
            if response.code == 503:
                # Section 16.7 step 6: a 503 means the next hop is
                # unavailable, not us.
                response.code = 500
                response.phrase = "Next Hop Unavailable"
            elif response.code in (401, 407) and context.challenges \
                    and len(context.challenges) > 1:
                _mergeChallenges(response, context.challenges)
        self._send(context, response)

    def _send(self, context, response):
        first = not context.finalSent
        context.finalSent = True
        if first:
            context.response = response
            if not context.invite or response.code >= 300:
                context.targets.clear()
        context.serverTransaction.respond(response)

    def _cancelPending(self, context):
        context.targets.clear()
        for branch in context.branches:
            if not branch.done and branch.client is not None:
                branch.client.cancel()

    # CANCEL

    def cancelled(self, serverTransaction):
        """
        The INVITE of C{serverTransaction} was CANCELled (section 16.10):
        cancel every pending branch; the request is answered C{487} (or
        with a downstream 487, or a 2xx that raced the CANCEL) when they
        have ended.

        @return: C{True} if this proxy is handling that transaction (the
            caller answers nothing), C{False} otherwise.
        """
        context = self._contexts.get(serverTransaction)
        if context is None:
            return False
        if context.finalSent:
            return True
        context.cancelled = True
        context.targets.clear()
        for branch in context.branches:
            if not branch.done:
                if branch.client is not None:
                    branch.client.cancel()
                elif context.flow is None:
                    # Still connecting: it will never be sent.
                    self._branchAnswered(context, branch, None)
        self._maybeFinish(context)
        return True

    # In-dialog requests and route sets

    def routeInDialog(self, request, serverTransaction):
        """
        A processor for requests following a route set the pool made: the
        top Route names us, and L{checkRouteSet} finds it sealed by the
        pool for this request and the hop after us one the route set was
        made with.  They are forwarded statefully along the route
        (L{forward} with no target), without authentication: the dialog
        or the binding was authenticated when it was set up.  Anything
        else is left to the next processor, which treats it as a new
        request (authenticated, and routed only to our users and servers).

        @return: C{True} if the request was taken.
        """
        lines = request.headers.get("route")
        if not lines:
            return False
        try:
            values = request.values("route")
            uri = parseNameAddr(values[0])[1]
        except (URIError, ValueError):
            self._answer(request, serverTransaction,
                         _Reject(400, "Bad Route Header"))
            return True
        if not self.isOwnURI(uri):
            return False
        flow = getattr(serverTransaction, "flow", None)
        reason = self.checkRouteSet(request, flow)
        if reason is not None:
            self.unsealed += 1
            # A lone unsealed Route naming us is what every client that
            # has us as its outbound proxy sends (RFC 3261 section 8.1.2):
            # nothing to relay, not worth a line each.  Anything more is.
            log = self._log.info
            if len(values) == 1 and not uri.params.get(SEAL_PARAM):
                log = self._log.debug
            log("{method} from {flow} not relayed: {reason}",
                method=request.method, flow=flow, reason=reason)
            return False
        self.forward(request, serverTransaction)
        return True

    def checkRouteSet(self, request, arrivedOn=None):
        """
        Whether a request may be relayed along its Route set without being
        authenticated here.

        Every Route entry of ours at the top must carry the pool's seal
        (L{RouteSeals}): a Record-Route entry sealed to the request's
        dialog (its Call-ID and the tag of its From or To), or a Path
        entry, which is followed only by a request a pool server signed
        (C{peerVerify}).  And where the request goes after us must be a
        hop the route set was made with: the flow a sealed token of ours
        names; for a Path, what the signing server put next; for a
        dialog, the hop bound to one of our entries (C{sdu}, C{sdn}) or a
        next Route entry that itself carries a valid seal of the pool for
        the same dialog.

        @param arrivedOn: the flow the request came in on.
        @return: C{None} if it may be relayed, else why not (text).
        """
        try:
            values = request.values("route")
        except ValueError:
            return "bad Route"
        own = self._ownAddresses()
        popped = []
        for value in values:
            try:
                uri = parseNameAddr(value)[1]
            except (URIError, ValueError):
                return "bad Route"
            if not self.isOwnURI(uri, own):
                break
            popped.append(uri)
        if not popped:
            return "top Route not ours"
        rest = values[len(popped):]
        seals = self.seals
        callId, tags = _dialogOf(request)
        kinds = set()
        tokenFlow = False
        for uri in popped:
            seal = uri.params.get(SEAL_PARAM) or ""
            routeId = uri.params.get(ROUTE_PARAM) or ""
            if not routeId and not seal:
                return "Route entry not made by the pool"
            if routeId != self.routeId:
                return "Route entry of another server"
            try:
                at = _hostPort(uri)
            except NextHopError:
                return "bad Route"
            token = None
            if uri.username is not None:
                token = unquote(uri.username)
                if self._tokenKey is not None:
                    bare, _, mac = token.rpartition(".")
                    if not bare or not hmac.compare_digest(
                            mac, self._tokenMAC(bare)):
                        return "bad flow token"
                else:
                    bare = token
                if getattr(arrivedOn, "token", None) != bare:
                    tokenFlow = True
            if seal.startswith("p."):
                if not seals.check(seals.path(self.routeId, at, token),
                                   seal):
                    return "bad Path seal"
                kinds.add("p")
            elif seal.startswith("d."):
                tags = [t for t in tags if seals.check(
                    seals.dialog(self.routeId, at, callId, t, token), seal)]
                if not tags:
                    return "Record-Route seal not for this dialog"
                kinds.add("d")
            else:
                return "unsealed Route entry"
        if "p" in kinds:
            if "d" in kinds:
                return "Path and Record-Route entries mixed"
            if (self.peerVerify is None
                    or self.peerVerify(request, arrivedOn) is None):
                return "Path followed without a pool server's signature"
            return None
        if tokenFlow:
            # Out over the client's own connection (sealed token).
            return None
        try:
            nextURI = parseNameAddr(rest[0])[1] if rest else request.uri
            host, port = _hostPort(nextURI)
        except (URIError, ValueError):
            return "bad next hop"
        for uri in popped:
            for name in (UPSTREAM_PARAM, DOWNSTREAM_PARAM):
                given = uri.params.get(name)
                if given is None:
                    continue
                for tag in tags:
                    if seals.check(seals.hop(self.routeId, callId, tag, host,
                                             port), given):
                        return None
        if rest:
            # Another server's entry of this dialog, at the address it
            # sealed (the route set grew after us).
            seal = nextURI.params.get(SEAL_PARAM) or ""
            routeId = nextURI.params.get(ROUTE_PARAM) or ""
            token = (None if nextURI.username is None
                     else unquote(nextURI.username))
            if seal.startswith("d.") and any(
                    seals.check(seals.dialog(routeId, (host, port), callId,
                                             tag, token), seal)
                    for tag in tags):
                return None
        return "next hop not in the route set made for this dialog"

    def forwardStateless(self, request, flow=None, force=False):
        """
        Forward a request statelessly (section 16.11): an ACK for a 2xx
        (from L{ITransactionUser.ackReceived}).  Our Route entries are
        removed and it goes to the next Route, or the Request-URI, or the
        flow named by a flow token in our Route.

        @param flow: the flow it came in on.
        @param force: forward it even when its top Route did not name us
            (by default such a request is not ours to forward: dropped).
        @return: C{True} if it was sent on (or is being, a connection being
            made), C{False} if it was dropped.
        """
        try:
            return self._forwardStateless(request, flow, force)
        except (_Reject, URIError, ValueError) as e:
            self._log.info("dropped {request!r}: {reason}",
                           request=request, reason=str(e))
            return False

    def _forwardStateless(self, request, flow, force):
        headers = request.headers
        maxForwards = headers.get("max-forwards")
        if maxForwards is not None:
            text = maxForwards[0].strip()
            if not text.isdigit() or int(text) <= 0:
                return False
            newMaxForwards = str(int(text) - 1)
        else:
            newMaxForwards = str(self.maxForwards)
        copy = Request(request.method, request.uriText)
        copy.headers = {k: v[:] for k, v in headers.items()}
        copy.body = request.body
        copy.headers["max-forwards"] = [newMaxForwards]
        popped = 0
        out = None
        if "route" in copy.headers:
            if not force:
                reason = self.checkRouteSet(request, flow)
                if reason is not None:
                    self.unsealed += 1
                    raise _Reject(403, reason)
            popped, out = self._popOwnRoutes(copy, flow)
        if not popped and not force:
            return False
        if out is not None:
            hop = (out.transport,) + tuple(out.remote)
        elif "route" in copy.headers:
            hop = nextHopFor(parseNameAddr(copy.values("route")[0])[1])
        else:
            hop = nextHopFor(request.uri)
        top = request.topVia()
        key = (top.branch, top.host, top.sentByPort, request.method)
        branch = f"{_STATELESS_PREFIX}{hash(key) & _HASH_MASK:x}"
        copy.insertHeader("via", self._via(hop[0], branch))
        self.statelessForwarded += 1
        if out is not None:
            _sendQuietly(out, copy, self._log)
            return True
        d = self.transport.connect(hop[0], hop[1], hop[2])
        d.addCallback(_sendQuietly, copy, self._log)
        d.addErrback(self._statelessFailed, hop)
        return True

    def _statelessFailed(self, failure, hop):
        self._log.info("cannot forward statelessly to {hop}: {reason}",
                       hop=hop, reason=failure.getErrorMessage())


def _target(target):
    """
    A target of L{Proxy.forward} as C{(uri, routeSet, flow)}.
    """
    if isinstance(target, tuple):
        uri, routes, flow = target
    else:
        uri, routes, flow = target, None, None
    if isinstance(uri, str):
        uri = parseURI(uri)
    return uri, routes, flow


def _sendQuietly(flow, message, log):
    try:
        if flow.send(message) is False:
            log.info("cannot send {message!r} to {remote}", message=message,
                     remote=flow.remote)
    except Exception:
        log.failure("sending {message!r} failed", message=message)
    return flow


def _stripOurVia(response):
    """
    Remove the top Via (ours) from a response before it goes upstream.

    @return: C{False} if nothing would be left (a response to a request we
        originated, or a broken one).
    """
    lines = response.headers.get("via")
    if not lines:
        return False
    first = lines[0]
    if "," not in first:
        if len(lines) == 1:
            return False
        response.removeHeader("via")
        response.headers["via"] = lines[1:]
        return True
    try:
        response.popTopVia()
    except ValueError:
        return False
    return "via" in response.headers


def _mergeChallenges(response, challenges):
    """
    Section 16.7 step 7: the 401/407 sent upstream carries every
    WWW-Authenticate and Proxy-Authenticate of the branches' 401/407.
    """
    for key in ("www-authenticate", "proxy-authenticate"):
        merged = []
        for other in challenges:
            for value in other.headers.get(key, ()):
                if value not in merged:
                    merged.append(value)
        if merged:
            response.headers[key] = merged
