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
     with C{Retry-After}).

When the store and the credential source answer from memory (memory and file
stores, cached LDAP) their Deferreds have fired already, so all of it
happens in the datagram's reactor turn.
"""

from twisted.logger import Logger
from twisted.python.failure import Failure

from sipdist.auth.server import Authenticated, Challenge
from sipdist.decision import (
    AUTO, Assignment, Proxy, Redirect, Serve, decide)
from sipdist.sip.message import countVias
from sipdist.services.registrar import RegistrarError, contactHeaderValues
from sipdist.store import StoreUnavailable
from sipdist.sip.uri import URIError, normaliseAOR

SUPPORTED_OPTIONS = frozenset(("path", "outbound", "gruu"))


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
    """

    __slots__ = ("request", "transaction", "viaCount", "auth", "aor",
                 "serve", "proxyAuth")

    def __init__(self, request, transaction, serve, proxyAuth):
        self.request = request
        self.transaction = transaction
        self.viaCount = countVias(request)
        self.auth = None
        self.aor = None
        self.serve = serve
        self.proxyAuth = proxyAuth


class DistributionProcessor:
    """
    The request processor of a role that consults the store.

    @ivar role: C{"home"}, C{"distributor"} or C{"internal-edge"}.
    @ivar policy: the redirect policy, C{"auto"}, C{"proxy"} or
        C{"redirect"}.
    @ivar router: handles requests other than REGISTER:
        C{router(request, transaction, processor) -> bool}, typically
        calling L{handle} with its own C{serve}; C{None} leaves them to the
        rest of the chain.
    """

    _log = Logger()

    def __init__(self, server, role, store, authenticator, registrar=None,
                 proxy=None, policy=AUTO, domains=(), router=None):
        self.server = server
        self.role = role
        self.store = store
        self.authenticator = authenticator
        self.registrar = registrar
        self.proxy = proxy
        self.policy = policy
        self.router = router
        self.domains = frozenset(d.lower() for d in domains) | frozenset(
            [server.domain.lower()])
        self.redirects = 0
        self.proxied = 0
        self.served = 0

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

    def forUs(self, uri):
        """
        Whether a Request-URI's host names a domain we serve (our domain,
        or one of our own addresses).
        """
        host = uri.host.lower()
        return host in self.domains or host in self.server.localHosts

    def respond(self, request, transaction, code, phrase, headers=()):
        response = self.server.response(request, code, phrase)
        for name, value in headers:
            response.addHeader(name, value)
        transaction.respond(response)

    # The common sequence

    def handle(self, request, transaction, serve, proxyAuth=True):
        """
        Authenticate a request, look its user up, decide and act.

        @param serve: called with the L{Context} when the user is assigned
            here (home role); it must answer the transaction.
        @param proxyAuth: challenge with 407 (C{True}) or 401.
        """
        context = Context(request, transaction, serve, proxyAuth)
        header = "proxy-authorization" if proxyAuth else "authorization"
        d = self.authenticator.authenticate(
            request.method, request.uriText, request.values(header),
            transaction.flow.remote[0], proxy=proxyAuth)
        # With cached stores and credentials every Deferred here has fired
        # already and the callbacks run at once.
        d.addCallbacks(self._authenticated, self._failed, (context,), None,
                       (context,))

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
            self.respond(request, transaction, result.code, result.phrase,
                         result.headers)
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
        d.addCallbacks(self._lookedUp, self._failed, (context,), None,
                       (context,))

    def _lookedUp(self, serverId, context):
        try:
            if serverId is None:
                self._decided(Assignment(), context)
                return
            d = self.store.getServer(serverId)
        except Exception:
            self._failed(Failure(), context)
            return
        d.addCallbacks(self._gotServer, self._failed, (serverId, context),
                       None, (context,))

    def _gotServer(self, record, serverId, context):
        if record is None:
            assignment = Assignment(serverId)
        else:
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

    def _decided(self, assignment, context):
        outcome = decide(context.viaCount, assignment, self.role,
                         self.server.name, self.policy)
        if self.handover is not None and isinstance(
                outcome, (Redirect, Proxy)) and self.handover(context,
                                                             outcome):
            outcome = Serve()
        if isinstance(outcome, Serve):
            self.served += 1
            context.serve(context)
        elif isinstance(outcome, Redirect):
            self._redirect(outcome, context)
        elif isinstance(outcome, Proxy):
            self._proxy(outcome, context)
        else:
            self._log.info("{method} of {aor}: {code} {phrase}",
                           method=context.request.method, aor=context.aor,
                           code=outcome.code, phrase=outcome.phrase)
            headers = ()
            if outcome.retryAfter:
                headers = [("Retry-After", str(outcome.retryAfter))]
            self.respond(context.request, context.transaction, outcome.code,
                         outcome.phrase, headers)

    def signed(self, response, context, contact=None):
        """
        Add the signature headers (see L{sipdist.auth.signature}) to a
        response to an authenticated request.
        """
        request = context.request
        for name, value in self.authenticator.sign(
                context.auth, response.code, request.header("call-id"),
                request.header("cseq"), contact):
            response.addHeader(name, value)
        return response

    def _redirect(self, outcome, context):
        self.redirects += 1
        contact = f"<{outcome.uri}>"
        response = self.server.response(context.request, 301,
                                        "Moved Permanently")
        response.headers["contact"] = [contact]
        context.transaction.respond(self.signed(response, context, contact))

    def _proxy(self, outcome, context):
        request, transaction = context.request, context.transaction
        if self.proxy is None:
            self.respond(request, transaction, 500,
                         "Server Internal Error (No Proxy Configured)")
            return
        self.proxied += 1
        # The Request-URI stays as it is (the digest response covers it);
        # the request goes to the assigned server as next hop.  A REGISTER
        # gets a Path through us so the home can reach the user back along
        # the hops; a dialog-creating request a Record-Route.
        register = request.method == "REGISTER"
        self.proxy.forward(request, transaction, nextHop=outcome.uri,
                           recordRoute=not register, addPath=register)

    # REGISTER

    def register(self, request, transaction):
        try:
            uri = request.uri
        except URIError:
            self.respond(request, transaction, 400, "Bad Request-URI")
            return
        if uri.username is not None or not self.forUs(uri):
            self.respond(request, transaction, 404,
                         "Not Found (Domain Not Served Here)")
            return
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
            bindings = self.registrar.register(context.aor, request,
                                               transaction.flow)
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
        transaction.respond(self.signed(response, context))
