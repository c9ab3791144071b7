# -*- test-case-name: tests.test_roles -*-
"""
The roles that consult the assignment store: C{home}, C{distributor} and
C{internal-edge}.  Each is the same L{DistributionProcessor} on a
L{sipdist.server.SIPServer}, differing in what L{sipdist.decision.decide}
lets it do (only a home serves users; a home has a registrar).

For a request from a user (a REGISTER, or an out-of-dialog request such as
INVITE, MESSAGE or SUBSCRIBE handed over by the C{router}) the processor:

  1. authenticates it (C{401} for REGISTER, where we act as registrar;
     C{407} otherwise, where we act as proxy) -- nothing about the user's
     assignment, nor whether the user exists, is revealed before;
  2. checks the identity (a user registers its own address only);
  3. looks the user up in the store and decides;
  4. serves (the registrar's signed C{200}, or the router's routing of the
     request to its target), redirects (a signed C{301} whose Contact is
     the assigned server), proxies (to the assigned server: Path for a
     REGISTER, Record-Route otherwise), or rejects (C{404}, C{480}, C{503}
     with C{Retry-After}).  The assigned server's URI is the one for the
     transport the request arrived on (L{sipdist.services.targets}): TLS
     stays TLS, and a server without a TLS URI gets a TLS client a C{503}
     rather than a redirect or a leg in clear.
     What is proxied to a user's home goes to the user's backup home
     when the home is dead or marked down (L{sipdist.pool.failover}).
     A REGISTER of a client that follows the redirect and talks to us
     directly, whose home is marked down, is redirected to the user's
     backup home (which serves it temporarily, L{sipdist.pool.standby})
     rather than answered C{503}, unless we are that backup.

Whether the client follows the distribution redirect (a fact of
L{sipdist.decision.decide}) is read from the request: the option tag
L{REDIRECT_OPTION_TAG} in C{Supported}, or a C{User-Agent} that one of the
configured patterns (C{--redirect-user-agent}) matches.  Any other client is
a standard RFC 3261 client and is proxied, never sent a C{3xx} it would
misread.

When the store and the credential source answer from memory (memory and file
stores, cached LDAP) their Deferreds have fired already, so all of it
happens in the datagram's reactor turn.
"""

import re
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from sipdist.auth.clientaddress import HEADER
from sipdist.auth.signature import BACKUP_HEADER
from sipdist.auth.server import Authenticated, Challenge
from sipdist.deferreds import NOT_FIRED, firedResult, whenFired
from sipdist.decision import (
    ACTIVE as ACTIVE_STATE, AUTO, DOWN, REDIRECT_OPTION_TAG, Assignment,
    SERVER_DOWN, Proxy, Redirect, Serve, decide)
from sipdist.sip.message import countVias, hasCredentials
from sipdist.services.registrar import RegistrarError, contactHeaderValues
from sipdist.services.routing import PEER_HEADER
from sipdist.services.targets import arrivalTransport, noAddress, serverURIFor
from sipdist.pool.rebalance import preference
from sipdist.store import ACTIVE, StoreUnavailable
from sipdist.sip.uri import URIError, normaliseAOR, parseURI

SUPPORTED_OPTIONS = frozenset(("path", "outbound", "gruu",
                               REDIRECT_OPTION_TAG))


def fingerprint(key, remote, callID, cseq):
    """
    The fingerprint of a request that may be answered statelessly (see
    L{sipdist.auth.nonce.NonceCounts}): a non-zero 64-bit integer naming
    its server transaction key, its Call-ID and CSeq values and the
    address its answer goes to, so that only its retransmissions, answered
    to the same address, share it.
    """
    return hash((key, remote, callID, cseq)) or 1


def hasOptionTag(request):
    """
    Whether C{request}'s C{Supported} lists L{REDIRECT_OPTION_TAG}.
    """
    for value in request.values("supported"):
        if value.strip().lower() == REDIRECT_OPTION_TAG:
            return True
    return False


def followsRedirect(request, userAgents=(), tagged=None):
    """
    Whether the client that sent C{request} has shown it follows the
    distribution redirect: C{Supported} lists L{REDIRECT_OPTION_TAG}, or
    one of the compiled patterns C{userAgents} matches (C{search}) its
    C{User-Agent}.

    @param tagged: L{hasOptionTag} of the request, when known.
    """
    if tagged is None:
        tagged = hasOptionTag(request)
    if tagged:
        return True
    if userAgents:
        return agentFollows(userAgents, request.header("user-agent"))
    return False


def agentFollows(userAgents, agent):
    """
    Whether one of the compiled patterns C{userAgents} matches (C{search})
    the C{User-Agent} value C{agent} (C{None} or empty: no).
    """
    if not agent:
        return False
    # A client sends the same User-Agent on every request: the answer of
    # the patterns is remembered (a bounded table).
    key = (userAgents, agent)
    follows = _AGENT_MATCHES.get(key)
    if follows is None:
        follows = any(p.search(agent) for p in userAgents)
        if len(_AGENT_MATCHES) >= MAX_AGENTS_REMEMBERED:
            _AGENT_MATCHES.clear()
        _AGENT_MATCHES[key] = follows
    return follows


# (patterns, User-Agent) -> whether one of the patterns matches it; emptied
# when full.
MAX_AGENTS_REMEMBERED = 1024
_AGENT_MATCHES = {}


def compileUserAgents(patterns):
    """
    Compile the C{--redirect-user-agent} patterns.

    @raise ValueError: naming the pattern that is not a regular expression.
    """
    compiled = []
    for pattern in patterns:
        try:
            compiled.append(re.compile(pattern))
        except (re.error, TypeError) as e:
            raise ValueError(f"{pattern!r} is not a regular expression: {e}")
    return tuple(compiled)


# Backup homes remembered by a DistributionProcessor (see withBackup); the
# table is emptied when full.
MAX_BACKUPS_REMEMBERED = 4096

# Seconds a home asks an RFC 5626 client to keep its flow alive within
# (the Flow-Timer header of its 200 to a REGISTER supporting outbound).
DEFAULT_FLOW_TIMER = 60
# Over UDP, where the keep-alives are how a client learns that its home
# failed (a connection's loss tells it at once): shorter.
DEFAULT_FLOW_TIMER_UDP = 15


def backupRecord(aor, records, assignedId, transport, exclude=()):
    """
    The backup home of a user: the first server, in the user's
    capacity-weighted rendezvous order (L{sipdist.pool.rebalance.preference},
    the order the rebalancer moves users in), that is C{active}, has a
    weight, is not its assigned server (nor one of C{exclude}) and has a
    URI for C{transport}.

    @param records: the L{sipdist.store.ServerRecord}s of the pool.
    @return: C{(server id, URI for transport)}, or L{None}.
    """
    eligible = {r.id: r for r in records
                if r.id != assignedId and r.id not in exclude
                and r.state == ACTIVE and r.weight > 0}
    for serverId in preference(aor, eligible.values()):
        uri = serverURIFor(eligible[serverId], transport)
        if uri is not None:
            return serverId, uri
    return None


def backupFor(aor, records, assignedId, transport, exclude=()):
    """
    The URI of the backup home of a user (L{backupRecord}), or L{None}.
    """
    backup = backupRecord(aor, records, assignedId, transport, exclude)
    return None if backup is None else backup[1]


def wantsFlowTimer(request):
    """
    Whether a REGISTER asks for RFC 5626 keep-alives: C{outbound} in its
    C{Supported}, or a Contact with a C{reg-id}.
    """
    if "outbound" in {t.lower() for t in request.values("supported")}:
        return True
    return any(";reg-id=" in v.replace(" ", "").lower()
               for v in request.values("contact"))


class Context:
    """
    One request on its way through L{DistributionProcessor.handle}.

    @ivar request: the request.
    @ivar transaction: its server transaction.
    @ivar viaCount: Via values as received.
    @ivar auth: the L{Authenticated} result, once authenticated.
    @ivar aor: the normalised address-of-record of the user, once known.
    @ivar serve: called with this context when the user is served here.
    @ivar proxyAuth: challenge with 407 (we act as a proxy for it).
    @ivar record: the L{sipdist.store.ServerRecord} of the user's server,
        once read.
    @ivar tagged: whether the request lists the option tag.
    @ivar followsRedirect: whether the client follows the distribution
        redirect (see L{followsRedirect}).
    @ivar standby: whether this backup home serves the user temporarily
        (L{sipdist.pool.standby}).
    @ivar peer: the id of the pool server whose valid peer signature the
        request carried (it relayed it to us as the user's backup home,
        L{sipdist.pool.failover}), or C{None}.
    @ivar fingerprint: the request's L{fingerprint} when it may be answered
        statelessly (a REGISTER over UDP: its signed C{301}), else 0.
    """

    __slots__ = ("request", "transaction", "viaCount", "auth", "aor",
                 "serve", "proxyAuth", "record", "tagged", "followsRedirect",
                 "started", "standby", "peer", "fingerprint")

    def __init__(self, request, transaction, serve, proxyAuth,
                 userAgents=(), taggedAlgorithms=None):
        self.request = request
        self.transaction = transaction
        self.viaCount = countVias(request)
        self.tagged = tagged = hasOptionTag(request)
        self.followsRedirect = followsRedirect(request, userAgents, tagged)
        self.auth = None
        self.aor = None
        self.serve = serve
        self.proxyAuth = proxyAuth
        self.record = None
        self.standby = False
        self.peer = None
        # When handle() took the request (only while decisions are logged).
        self.started = None
        flow = transaction.flow
        self.fingerprint = (
            fingerprint(transaction.key, flow.remote,
                        request.header("call-id"), request.header("cseq"))
            if request.method == "REGISTER" and not flow.reliable else 0)


class LookupStats:
    """
    The store lookups of a processor: how many were answered at once (from
    the store's memory or cache), how many had to wait for the store and
    how long (a histogram with the bounds of L{BUCKETS}), how many failed.
    Counts only: bounded whatever the traffic.

    @ivar atOnce: lookups answered at once.
    @ivar buckets: waited lookups per bound of L{BUCKETS} (not cumulative;
        the last one counts those over every bound).
    @ivar waitedSum: seconds spent waiting, in total.
    @ivar failed: lookups that failed (store down, deadline passed).
    """

    BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 2.0)

    def __init__(self):
        self.atOnce = 0
        self.buckets = [0] * (len(self.BUCKETS) + 1)
        self.waitedSum = 0.0
        self.failed = 0

    @property
    def waitedCount(self):
        return sum(self.buckets)

    def answeredAtOnce(self, d):
        """
        Count a lookup whose answer C{d} (a fired L{Deferred}, or a plain
        value) came at once.
        """
        self.atOnce += 1
        if firedResult(d) is NOT_FIRED:
            self.failed += 1

    def waited(self, result, started, clock):
        """
        Count a lookup that waited from C{started}; pass C{result} on.
        """
        elapsed = max(clock.seconds() - started, 0.0)
        self.waitedSum += elapsed
        index = 0
        for bound in self.BUCKETS:
            if elapsed <= bound:
                break
            index += 1
        self.buckets[index] += 1
        if isinstance(result, Failure):
            self.failed += 1
        return result


class DistributionProcessor:
    """
    The request processor of a role that consults the store.

    @ivar role: C{"home"}, C{"distributor"} or C{"internal-edge"}.
    @ivar policy: the redirect policy, C{"auto"}, C{"proxy"} or
        C{"redirect"}.
    @ivar userAgents: compiled patterns (L{compileUserAgents}): a client
        whose C{User-Agent} one matches follows the distribution redirect
        without the option tag.
    @ivar taggedAlgorithms: the Digest algorithms a request listing the
        option tag is challenged with (our client weighs every challenge
        and prefers SHA-256); C{None}: the authenticator's own.  Other
        clients get the authenticator's (C{--digest-algorithms}).
    @ivar router: handles requests other than REGISTER:
        C{router(request, transaction, processor) -> bool}, typically
        calling L{handle} with its own C{serve}; C{None} leaves them to the
        rest of the chain.
    @ivar clientSeal: a L{sipdist.auth.clientaddress.ClientAddressSeal}
        with the pool's secret, or C{None}: the client address an edge
        states in a header it sealed is the address failed authentications
        are counted against (else: where the request came from).
    """

    _log = Logger()

    def __init__(self, server, role, store, authenticator, registrar=None,
                 proxy=None, policy=AUTO, domains=(), router=None,
                 userAgents=(), taggedAlgorithms=None, clientSeal=None):
        self.clientSeal = clientSeal
        self.server = server
        self.role = role
        self.store = store
        self.authenticator = authenticator
        self.registrar = registrar
        self.proxy = proxy
        self.policy = policy
        self.router = router
        self.userAgents = tuple(userAgents)
        self.taggedAlgorithms = taggedAlgorithms
        self.domains = frozenset(d.lower() for d in domains) | frozenset(
            [server.domain.lower()])
        self.redirects = 0
        self.proxied = 0
        self.served = 0
        self.lookups = LookupStats()
        # The Flow-Timer of our 200s to REGISTERs supporting outbound (0:
        # none), and whether our 301s and 200s name a backup home.
        self.flowTimer = DEFAULT_FLOW_TIMER
        self.flowTimerUDP = DEFAULT_FLOW_TIMER_UDP
        self.offerBackup = True
        # (aor, assigned server, transport, exclusions) -> Sipdist-Backup
        # value, over the server records _backupPool (see backupValue).
        self._backups = {}
        self._backupPool = ()

    def __call__(self, request, transaction):
        # A new request: whatever Route it carries was not sealed by the
        # pool (Proxy.routeInDialog took those), so it is not followed; the
        # request goes where the decision and the router send it, to our
        # users and servers only.
        request.headers.pop("route", None)
        if request.method == "REGISTER":
            self.register(request, transaction)
            return True
        router = self.router
        if router is not None:
            return router(request, transaction, self)
        return False

    def clientHost(self, request, flow):
        """
        The address of the client that sent C{request}: the one stated in
        a C{Sipdist-Client} header sealed by an edge of the pool, else the
        address it came from.
        """
        seal = self.clientSeal
        values = request.headers.get(HEADER)
        if seal is not None and values:
            stated = seal.address(values, request.header("call-id"),
                                  request.header("cseq"))
            if stated is not None:
                return stated[0]
        return flow.remote[0]

    def forUs(self, uri):
        """
        Whether a Request-URI's host names a domain we serve (our domain,
        or one of our own addresses).  A REGISTER is also for us when its
        host is that of our record in the store (see L{register}).
        """
        host = uri.host.lower()
        return host in self.domains or host in self.server.localHosts

    def respond(self, request, transaction, code, phrase, headers=(),
                stateless=False):
        """
        Answer C{request} on C{transaction}.

        @param stateless: answer as a stateless UAS (see
            L{sipdist.sip.transaction.ServerTransaction.respond}): a
            challenge to a request without credentials or a stale one.
        """
        response = self.server.response(request, code, phrase)
        for name, value in headers:
            response.addHeader(name, value)
        transaction.respond(response, stateless=stateless)

    # The common sequence

    def handle(self, request, transaction, serve, proxyAuth=True):
        """
        Authenticate a request, look its user up, decide and act.

        @param serve: called with the L{Context} when the user is assigned
            here (home role); it must answer the transaction.
        @param proxyAuth: challenge with 407 (C{True}) or 401.
        """
        context = Context(request, transaction, serve, proxyAuth,
                          self.userAgents)
        if PEER_HEADER in request.headers:
            # Whoever signed it, it goes no further than us.
            if self.peerOf is not None:
                context.peer = self.peerOf(request, transaction.flow)
            del request.headers[PEER_HEADER]
        if self.logDecisions:
            context.started = self.server._reactor.seconds()
        header = "proxy-authorization" if proxyAuth else "authorization"
        d = self.authenticator.authenticate(
            request.method, request.uriText, request.values(header),
            self.clientHost(request, transaction.flow), proxy=proxyAuth,
            algorithms=self.taggedAlgorithms if context.tagged else None,
            fingerprint=context.fingerprint)
        # With cached stores and credentials every Deferred here has fired
        # already: its result is taken at once, without a callback chain.
        whenFired(d, self._authenticated, self._failed, (context,))

    def _failed(self, failure, context):
        request, transaction = context.request, context.transaction
        if failure.check(StoreUnavailable):
            self._log.warn("assignment store unavailable: {reason}",
                           reason=failure.getErrorMessage())
            self.respond(request, transaction, 503,
                         "Service Unavailable (Assignment Store Down)",
                         [("Retry-After", "10")])
            return
        self._log.failure("{method} from {flow}", failure,
                          method=request.method, flow=transaction.flow)
        self.respond(request, transaction, 500, "Server Internal Error",
                     [("Retry-After", "5")])

    def _authenticated(self, result, context):
        try:
            self._checkIdentity(result, context)
        except Exception:
            self._failed(Failure(), context)

    def _checkIdentity(self, result, context):
        request, transaction = context.request, context.transaction
        if not isinstance(result, Authenticated):
            # A challenge to a request without credentials, or a stale one
            # (a nonce too old, a count used already), is answered
            # statelessly (RFC 3261 section 8.2.7); one to credentials that
            # failed is not: a retransmission of the request must not count
            # as a second failure.  (A replay answered statefully would
            # hold the transaction of the request it copies: that
            # request's own retransmissions would be absorbed there, their
            # answer sent to the replay's source.)
            self.respond(request, transaction, result.code, result.phrase,
                         result.headers,
                         stateless=isinstance(result, Challenge)
                         and (result.stale or not hasCredentials(request)))
            if not isinstance(result, Challenge):
                self._log.info("{method} from {flow} refused: {code} {phrase}",
                               method=request.method, flow=transaction.flow,
                               code=result.code, phrase=result.phrase)
            return None
        context.auth = result
        context.aor = aor = result.aor
        if request.method == "REGISTER":
            try:
                registered = normaliseAOR(request.nameAddr("to")[1])
            except (URIError, ValueError, KeyError):
                self.respond(request, transaction, 400, "Bad To Header")
                return None
            if registered != aor:
                self._log.info("{user} may not register {aor}", user=aor,
                               aor=registered)
                self.respond(request, transaction, 403,
                             "Forbidden (Not Your Address-Of-Record)")
                return None
        # Each step attaches its own callbacks rather than returning its
        # Deferred to the chain: with cached stores they have fired already
        # and run at once, without Deferred chaining.
        d = self.store.lookupUser(aor)
        if not isinstance(d, Deferred) or d.called:
            self.lookups.answeredAtOnce(d)
        else:
            d.addBoth(self.lookups.waited, self.server._reactor.seconds(),
                      self.server._reactor)
        whenFired(d, self._lookedUp, self._failed, (context,))

    def _lookedUp(self, serverId, context):
        try:
            if serverId is None:
                self._decided(Assignment(), context)
                return
            d = self.store.getServer(serverId)
        except Exception:
            self._failed(Failure(), context)
            return
        whenFired(d, self._gotServer, self._failed, (serverId, context),
                  (context,))

    def _gotServer(self, record, serverId, context):
        if record is None:
            assignment = Assignment(serverId)
        else:
            context.record = record
            assignment = Assignment(serverId, record.uri, record.state)
        try:
            self._decided(assignment, context)
        except Exception:
            self._failed(Failure(), context)

    # On a home, called as handover(context, outcome) when the user is
    # assigned elsewhere (a Redirect or Proxy outcome): True serves the
    # request here all the same.  sipdist.services.subscriptions keeps serving a
    # moved user's requests until its next REGISTER, which is redirected
    # and ends its registration here.
    handover = None
    # On a home, a L{sipdist.pool.standby.Standby}: a user of a home that
    # cannot be reached, who names us as its backup, is served here
    # temporarily.
    standby = None
    # A L{sipdist.pool.failover.Failover}: what we proxy to a user's home
    # goes to its backup home when the home is dead.
    failover = None
    # peerOf(request, flow): the id of the pool server that signed a
    # request (L{sipdist.services.routing.Router.peerOf}), or None.
    peerOf = None

    def _decided(self, assignment, context):
        outcome = decide(context.viaCount, assignment, self.role,
                         self.server.name, self.policy,
                         followsRedirect=context.followsRedirect,
                         register=context.request.method == "REGISTER")
        standby = self.standby
        if standby is not None and standby.applies(context, outcome):
            d = standby.check(context)
            d.addCallback(self._standbyChecked, outcome, context)
            d.addErrback(self._failed, context)
            return
        self._act(outcome, context)

    def _standbyChecked(self, serve, outcome, context):
        if serve:
            context.standby = True
            outcome = Serve()
        self._act(outcome, context)

    def _act(self, outcome, context):
        if self.handover is not None and isinstance(
                outcome, (Redirect, Proxy)) and self.handover(context,
                                                             outcome):
            outcome = Serve()
        transported = isinstance(outcome, (Redirect, Proxy))
        if transported:
            outcome = self._forTransport(outcome, context)
        if getattr(context.auth, "repeat", False) \
                and type(outcome) is not Redirect:
            # The nonce count was used by this request already, which was
            # not answered statelessly then: the replay it otherwise is.
            self._replayed(context)
            return
        if not transported and self._homeDown(outcome, context):
            return
        if self.logDecisions:
            self._logDecision(outcome, context)
        if isinstance(outcome, Serve):
            self.served += 1
            context.serve(context)
        elif isinstance(outcome, Redirect):
            self._redirect(outcome, context,
                           stateless=context.fingerprint != 0)
        elif isinstance(outcome, Proxy):
            self._proxy(outcome, context)
        else:
            self._refuse(outcome, context)

    def _homeDown(self, outcome, context):
        """
        When the decision C{outcome} is the C{503} of a user whose home is
        marked down: send the request to the user's backup home, which
        serves the user temporarily (failover), or redirect a client that
        follows the redirect there, rather than answer the C{503}.

        @return: whether it did.
        """
        record = context.record
        if (record is None or getattr(outcome, "code", None) != 503
                or record.state != DOWN):
            return False
        if self.failover is not None and self._wouldBe(context, Proxy):
            self._failOver(outcome, context)
            return True
        if (context.request.method == "REGISTER"
                and self._wouldBe(context, Redirect)):
            # It came here from discovery: its backup did not answer it,
            # or it knew none.
            self._redirectToBackup(outcome, context)
            return True
        return False

    def _refuse(self, outcome, context):
        """
        Answer C{context}'s request with the final response of the decision
        C{outcome} (a code, a phrase, perhaps a C{Retry-After}), and log it.
        """
        self._log.info("{method} of {aor}: {code} {phrase}",
                       method=context.request.method, aor=context.aor,
                       code=outcome.code, phrase=outcome.phrase)
        headers = ()
        if outcome.retryAfter:
            headers = [("Retry-After", str(outcome.retryAfter))]
        self.respond(context.request, context.transaction, outcome.code,
                     outcome.phrase, headers)

    # Whether each decision is logged (one event: --log-format=json, where
    # a log reader filters on its fields; a text log is not flooded).
    logDecisions = False

    def _logDecision(self, outcome, context):
        """
        Log one event for a decision: the method, Call-ID, user, outcome
        (serve, redirect, proxy or reject), the server chosen and the
        seconds since the request was handed to L{handle}.
        """
        request = context.request
        if isinstance(outcome, Serve):
            kind, chosen = "serve", self.server.name
        elif isinstance(outcome, (Redirect, Proxy)):
            kind = "redirect" if isinstance(outcome, Redirect) else "proxy"
            chosen = None if context.record is None else context.record.id
        else:
            kind, chosen = "reject", None
        self.logDecisionEvent(request.method, request.header("call-id"),
                              context.aor, kind, chosen,
                              getattr(outcome, "code", None), context.started)

    def logDecisionEvent(self, method, callID, user, kind, chosen, code,
                         started):
        """
        Log the event of one decision (see L{_logDecision}); C{started} is
        when the request was handed to L{handle}, or C{None}.
        """
        self._log.info(
            "decision: {method} {callID} of {user}: {outcome} "
            "{chosen} in {elapsed}s",
            decision=True, server=self.server.name, method=method,
            callID=callID, user=user, outcome=kind, chosen=chosen, code=code,
            elapsed=None if started is None else round(
                self.server._reactor.seconds() - started, 6))

    def _forTransport(self, outcome, context):
        """
        A L{Redirect} or L{Proxy} to the assigned server's URI for the
        transport the request arrived on, or the L{noAddress} rejection if
        the server has none (nor one for a stronger transport); the
        rejection is logged as every other.
        """
        transport = arrivalTransport(context.request,
                                     context.transaction.flow)
        uri = serverURIFor(context.record, transport)
        if uri is None:
            return noAddress(transport)
        if uri == outcome.uri:
            return outcome
        return type(outcome)(uri, outcome.serverId)

    def signed(self, response, context, contact=None, backup=None):
        """
        Add the signature headers (see L{sipdist.auth.signature}) to a
        response to an authenticated request; with C{backup}, also the
        C{Sipdist-Backup} header, which the signature then covers.
        """
        request = context.request
        if backup is not None:
            response.headers[BACKUP_HEADER.lower()] = [backup]
        for name, value in self.authenticator.sign(
                context.auth, response.code, request.header("call-id"),
                request.header("cseq"), contact, backup):
            response.addHeader(name, value)
        return response

    def withBackup(self, context, assignedId, then, exclude=()):
        """
        Call C{then(backup)} with the C{Sipdist-Backup} value to give the
        client of C{context} (its backup home, L{backupFor}, as C{<URI>}),
        or L{None}: for a client that follows the redirect and talks to us
        directly, when the store names one; a store that cannot list its
        servers means no backup, not a failed request.
        """
        if not (self.offerBackup and context.followsRedirect
                and context.viaCount == 1):
            then(None)
            return
        transport = arrivalTransport(context.request,
                                     context.transaction.flow)

        def pick(records):
            return self.backupValue(context.aor, assignedId, transport,
                                    exclude, records)

        def noBackup(failure):
            self._log.info("no backup home for {aor}: {reason}",
                           aor=context.aor, reason=failure.getErrorMessage())

        serversAtOnce = getattr(self.store, "serversAtOnce", None)
        if serversAtOnce is not None:
            # The same tuple as the fast path's (see backupValue).
            d, records = None, serversAtOnce()
        else:
            d = self.store.listServers()
            records = firedResult(d)
        if records is not NOT_FIRED:
            # Listed from memory: the same steps without a callback chain.
            try:
                backup = pick(records)
            except Exception:
                backup = noBackup(Failure())
            try:
                then(backup)
            except Exception:
                self._failed(Failure(), context)
            return
        d.addCallback(pick)
        d.addErrback(noBackup)
        d.addCallback(then)
        d.addErrback(lambda failure: self._failed(failure, context))

    def backupValue(self, aor, assignedId, transport, exclude, records):
        """
        The C{Sipdist-Backup} value naming the backup home of C{aor}
        (L{backupFor} over the server records C{records}), or L{None}.
        """
        # The same user, assigned server, transport, exclusions and pool
        # give the same backup: remembered (bounded) rather than hashed and
        # sorted again on every request.  The table holds the answers for
        # one pool, the last one seen: another pool empties it.  (A store
        # listing from memory gives the same tuple until its servers
        # change, told from the last by identity, not by comparing every
        # record again.)
        if records is not self._backupPool:
            records = tuple(records)
            if records != self._backupPool:
                self._backups.clear()
            self._backupPool = records
        key = (aor, assignedId, transport, tuple(exclude))
        cache = self._backups
        backup = cache.get(key, cache)
        if backup is cache:
            uri = backupFor(aor, records, assignedId, transport, exclude)
            backup = None if uri is None else f"<{uri}>"
            if len(cache) >= MAX_BACKUPS_REMEMBERED:
                cache.clear()
            cache[key] = backup
        return backup

    def _replayed(self, context):
        """
        Answer the request of C{context}, authenticated as a C{repeat}
        (see L{sipdist.auth.server.Authenticated}) but not to be redirected
        statelessly, as the replay of a nonce count it then is.
        """
        request, auth = context.request, context.auth
        challenge = self.authenticator.replayed(
            auth.nc, self.clientHost(request, context.transaction.flow),
            auth.username,
            context.proxyAuth,
            self.taggedAlgorithms if context.tagged else None)
        self.respond(request, context.transaction, challenge.code,
                     challenge.phrase, challenge.headers, stateless=True)

    def _redirect(self, outcome, context, exclude=(), stateless=False):
        """
        Answer a signed C{301} to C{outcome}'s server, naming the user's
        backup home; with C{exclude} (a redirect to a backup home), the
        next one after C{outcome}'s server, none of C{exclude}.

        @param stateless: answer as a stateless UAS (RFC 3261 section
            8.2.7), keeping no record for the retransmissions of the
            request: each comes back authenticated as a C{repeat} (the
            table of nonce counts knows the request by its fingerprint),
            is decided again and gets the same C{301}, To tag included
            (L{sipdist.auth.server.Authenticated.tag}).  A distributor
            keeps 64*T1 seconds of its C{301}s otherwise.
        """
        self.redirects += 1
        contact = f"<{outcome.uri}>"
        response = self.server.response(
            context.request, 301, "Moved Permanently",
            context.auth.tag if stateless else None)
        response.headers["contact"] = [contact]
        assignedId = None if context.record is None else context.record.id
        if exclude:
            assignedId = outcome.serverId

        def respond(backup):
            context.transaction.respond(
                self.signed(response, context, contact, backup),
                stateless=stateless)

        self.withBackup(context, assignedId, respond, exclude)

    def _wouldBe(self, context, kind):
        """
        Whether the decision for C{context} would be of type C{kind}
        (L{Proxy}, L{Redirect}) were the user's home not down.
        """
        record = context.record
        outcome = decide(context.viaCount,
                         Assignment(record.id, record.uri or "-", ACTIVE_STATE),
                         self.role, self.server.name, self.policy,
                         followsRedirect=context.followsRedirect,
                         register=context.request.method == "REGISTER")
        return isinstance(outcome, kind)

    def _redirectToBackup(self, reject, context):
        """
        Redirect the client of C{context}, whose home is marked down, to
        the user's backup home (L{backupRecord}, for the transport the
        request came in on), naming the next one as its backup; answer
        C{reject} when there is none, or when it is this server.
        """
        transport = arrivalTransport(context.request,
                                     context.transaction.flow)
        home = context.record.id

        def listed(records):
            backup = backupRecord(context.aor, records, home, transport)
            if backup is None or backup[0] == self.server.name:
                self._refuse(reject, context)
                return
            self._log.info(
                "{method} of {aor}: its home {home} is down: redirected to "
                "its backup home {backup}", method=context.request.method,
                aor=context.aor, home=home, backup=backup[0])
            self._redirect(Redirect(backup[1], backup[0]), context,
                           exclude=(home,))

        d = self.store.listServers()
        d.addCallback(listed)
        d.addErrback(self._failed, context)

    def _failOver(self, reject, context):
        """
        Send the request of C{context}, whose home is down, to the user's
        backup home; C{reject} when there is none.
        """
        transport = arrivalTransport(context.request,
                                     context.transaction.flow)

        def forwarded(sent):
            if sent:
                self.proxied += 1
                return
            self._refuse(reject, context)

        d = self.failover.forward(
            self.proxy, context.request, context.transaction, context.aor,
            context.record, None, transport, relayed=context.peer is not None,
            **self._proxyOptions(context))
        d.addCallback(forwarded)
        d.addErrback(self._failed, context)

    def _sentOrDown(self, sent, context):
        if not sent:
            reject = SERVER_DOWN
            self.respond(context.request, context.transaction, reject.code,
                         reject.phrase,
                         [("Retry-After", str(reject.retryAfter))])

    def _proxyOptions(self, context):
        register = context.request.method == "REGISTER"
        return {"recordRoute": not register, "addPath": register,
                "flowToken": True}

    def _proxy(self, outcome, context):
        request, transaction = context.request, context.transaction
        if self.proxy is None:
            self.respond(request, transaction, 500,
                         "Server Internal Error (No Proxy Configured)")
            return
        self.proxied += 1
        if self.failover is not None and context.record is not None:
            # With the user's backup home as fallback.
            d = self.failover.forward(
                self.proxy, request, transaction, context.aor,
                context.record, outcome.uri,
                arrivalTransport(request, transaction.flow),
                relayed=context.peer is not None,
                **self._proxyOptions(context))
            d.addCallback(self._sentOrDown, context)
            d.addErrback(self._failed, context)
            return
        # The Request-URI stays as it is (the digest response covers it);
        # the request goes to the assigned server as next hop.  A REGISTER
        # gets a Path through us so the home can reach the user back along
        # the hops; a dialog-creating request a Record-Route.  Both carry
        # the token of the flow the request came in on: what the home sends
        # the user back (a call, a message to a standard client registered
        # through us) comes through us and goes out on that flow, as the
        # client's NAT or connection needs.
        register = request.method == "REGISTER"
        self.proxy.forward(request, transaction, nextHop=outcome.uri,
                           recordRoute=not register, addPath=register,
                           flowToken=True)

    # REGISTER

    def register(self, request, transaction):
        try:
            uri = request.uri
        except URIError:
            self.respond(request, transaction, 400, "Bad Request-URI")
            return
        if uri.username is not None:
            self.respond(request, transaction, 404,
                         "Not Found (Domain Not Served Here)")
            return
        if self.forUs(uri):
            self._registerForUs(request, transaction)
            return
        # A Request-URI naming this server as the store names it (the
        # Contact of the redirects to us, which a standard client may have
        # made its Request-URI) is for us too, even when we listen on every
        # interface and so do not know that address otherwise.
        d = self.store.getServer(self.server.name)
        d.addCallbacks(self._ownRecord, self._ownRecordFailed,
                       (request, transaction, uri), None,
                       (request, transaction))

    def _ownRecord(self, record, request, transaction, uri):
        try:
            ours = record is not None and record.uri and (
                parseURI(record.uri).host.lower() == uri.host.lower())
        except (URIError, ValueError):
            ours = False
        if not ours:
            self.respond(request, transaction, 404,
                         "Not Found (Domain Not Served Here)")
            return
        self._registerForUs(request, transaction)

    def _ownRecordFailed(self, failure, request, transaction):
        context = Context(request, transaction, None, False)
        self._failed(failure, context)

    def _registerForUs(self, request, transaction):
        """
        A REGISTER whose Request-URI names our domain or this server.
        """
        unsupported = [t for t in request.values("require")
                       if t.lower() not in SUPPORTED_OPTIONS]
        if unsupported:
            self.respond(request, transaction, 420, "Bad Extension",
                         [("Unsupported", ", ".join(unsupported))])
            return
        self.handle(request, transaction, self._serveRegister,
                    proxyAuth=False)

    def _serveRegister(self, context):
        request, transaction = context.request, context.transaction
        server = self.server
        try:
            bindings = self.registrar.register(
                context.aor, request, transaction.flow,
                maxExpires=self.standby.maxExpires if context.standby
                else None)
        except RegistrarError as e:
            self.respond(request, transaction, e.code, e.phrase, e.headers)
            return
        except ValueError:
            self.respond(request, transaction, 400, "Bad REGISTER")
            return
        response = server.response(request, 200)
        headers = response.headers
        if bindings:
            headers["contact"] = contactHeaderValues(
                bindings, server._reactor.seconds())
        path = request.headers.get("path")
        if path and "path" in {t.lower() for t in request.values("supported")}:
            headers["path"] = list(path)
        headers["supported"] = ["path, outbound"]
        timer = self.flowTimer
        if arrivalTransport(request, transaction.flow) == "UDP":
            timer = self.flowTimerUDP
        if timer and wantsFlowTimer(request):
            headers["flow-timer"] = [str(timer)]

        def respond(backup):
            transaction.respond(self.signed(response, context, None, backup))

        if context.standby:
            # Served here for a while: the backup named is the next one,
            # neither us nor the home that failed.
            self.withBackup(context, server.name, respond,
                            exclude=(context.record.id,))
            return
        self.withBackup(context, server.name, respond)
