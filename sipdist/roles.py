# -*- test-case-name: tests.test_roles -*-
"""
The roles that consult the assignment store: C{home}, C{distributor} and
C{internal-edge}.  Each is the same L{DistributionProcessor} on a
L{sipdist.server.SIPServer}, differing in what L{sipdist.decision.decide}
lets it do (only a home serves users; a home has a registrar).

For a REGISTER the processor:

  1. checks that it is for our domain and requires nothing we lack;
  2. authenticates it (C{401} challenge; nothing about the user's
     assignment, nor whether the user exists, is revealed before);
  3. checks that the authenticated user registers its own address;
  4. looks the user up in the store and decides;
  5. serves (registrar, signed C{200}), redirects (signed C{301} whose
     Contact is the assigned server), proxies (to the assigned server, with
     a Route to it and a Path through us), or rejects (C{404}, C{480},
     C{503} with C{Retry-After}).

When the store and the credential source answer from memory (memory and file
stores, cached LDAP) their Deferreds have fired already, so all of it
happens in the datagram's reactor turn.
"""

from twisted.logger import Logger

from sipdist.auth.server import Authenticated, Challenge
from sipdist.decision import (
    AUTO, Assignment, Proxy, Redirect, Reject, Serve, decide)
from sipdist.message import countVias
from sipdist.registrar import RegistrarError, contactHeaderValues
from sipdist.store import StoreUnavailable
from sipdist.uri import URIError, normaliseAOR

SUPPORTED_OPTIONS = frozenset(("path", "outbound", "gruu"))


class DistributionProcessor:
    """
    The request processor of a role that consults the store.

    @ivar role: C{"home"}, C{"distributor"} or C{"internal-edge"}.
    @ivar policy: the redirect policy, C{"auto"}, C{"proxy"} or
        C{"redirect"}.
    """

    _log = Logger()

    def __init__(self, server, role, store, authenticator, registrar=None,
                 proxy=None, policy=AUTO, domains=()):
        self.server = server
        self.role = role
        self.store = store
        self.authenticator = authenticator
        self.registrar = registrar
        self.proxy = proxy
        self.policy = policy
        self.domains = frozenset(d.lower() for d in domains) | frozenset(
            [server.domain.lower()])
        self.redirects = 0
        self.proxied = 0
        self.served = 0

    def __call__(self, request, transaction):
        if request.method == "REGISTER":
            self.register(request, transaction)
            return True
        return False

    def forUs(self, uri):
        """
        Whether a REGISTER's Request-URI names a domain we are registrar
        for (our domain, or one of our own addresses).
        """
        host = uri.host.lower()
        return host in self.domains or host in self.server.localHosts

    # REGISTER

    def register(self, request, transaction):
        server = self.server
        try:
            uri = request.uri
        except URIError:
            transaction.respond(server.response(request, 400, "Bad Request-URI"))
            return
        if uri.username is not None or not self.forUs(uri):
            transaction.respond(server.response(
                request, 404, "Not Found (Domain Not Served Here)"))
            return
        unsupported = [t for t in request.values("require")
                       if t.lower() not in SUPPORTED_OPTIONS]
        if unsupported:
            response = server.response(request, 420, "Bad Extension")
            response.headers["unsupported"] = [", ".join(unsupported)]
            transaction.respond(response)
            return
        viaCount = countVias(request)
        d = self.authenticator.authenticate(
            "REGISTER", request.uriText, request.values("authorization"),
            transaction.flow.remote[0])
        # With cached stores and credentials every Deferred here has fired
        # already and the callbacks run at once.
        d.addCallback(self._authenticated, request, transaction, viaCount)
        d.addErrback(self._asyncError, request, transaction)

    def _asyncError(self, failure, request, transaction):
        if failure.check(StoreUnavailable):
            self._log.warn("assignment store unavailable: {reason}",
                           reason=failure.getErrorMessage())
            response = self.server.response(
                request, 503, "Service Unavailable (Assignment Store Down)")
            response.headers["retry-after"] = ["10"]
            transaction.respond(response)
            return
        self._log.failure("REGISTER from {flow}", failure,
                          flow=transaction.flow)
        self._internalError(request, transaction)

    def _internalError(self, request, transaction):
        response = self.server.response(request, 500, "Server Internal Error")
        response.headers["retry-after"] = ["5"]
        transaction.respond(response)

    def _authenticated(self, result, request, transaction, viaCount):
        server = self.server
        if not isinstance(result, Authenticated):
            response = server.response(request, result.code, result.phrase)
            for name, value in result.headers:
                response.addHeader(name, value)
            transaction.respond(response)
            if not isinstance(result, Challenge):
                self._log.info("REGISTER from {flow} refused: {code} {phrase}",
                               flow=transaction.flow, code=result.code,
                               phrase=result.phrase)
            return None
        try:
            aor = normaliseAOR(request.nameAddr("to")[1])
        except (URIError, ValueError, KeyError):
            transaction.respond(server.response(request, 400, "Bad To Header"))
            return None
        if aor != result.aor:
            self._log.info("{user} may not register {aor}",
                           user=result.aor, aor=aor)
            transaction.respond(server.response(
                request, 403, "Forbidden (Not Your Address-Of-Record)"))
            return None
        d = self.store.lookupUser(aor)
        d.addCallback(self._lookedUp, request, transaction, viaCount, result,
                      aor)
        return d

    def _lookedUp(self, serverId, request, transaction, viaCount, auth, aor):
        if serverId is None:
            return self._decided(Assignment(), request, transaction,
                                 viaCount, auth, aor)
        d = self.store.getServer(serverId)
        d.addCallback(self._gotServer, serverId, request, transaction,
                      viaCount, auth, aor)
        return d

    def _gotServer(self, record, serverId, request, transaction, viaCount,
                   auth, aor):
        if record is None:
            assignment = Assignment(serverId)
        else:
            assignment = Assignment(serverId, record.uri, record.state)
        return self._decided(assignment, request, transaction, viaCount,
                             auth, aor)

    def _decided(self, assignment, request, transaction, viaCount, auth, aor):
        outcome = decide(viaCount, assignment, self.role, self.server.name,
                         self.policy)
        if isinstance(outcome, Serve):
            self._serve(request, transaction, auth, aor)
        elif isinstance(outcome, Redirect):
            self._redirect(outcome, request, transaction, auth, aor)
        elif isinstance(outcome, Proxy):
            self._proxy(outcome, request, transaction, aor)
        else:
            self._reject(outcome, request, transaction, aor)

    def _signed(self, response, request, auth, contact=None):
        for name, value in self.authenticator.sign(
                auth, response.code, request.header("call-id"),
                request.header("cseq"), contact):
            response.addHeader(name, value)
        return response

    def _serve(self, request, transaction, auth, aor):
        server = self.server
        try:
            bindings = self.registrar.register(aor, request, transaction.flow)
        except RegistrarError as e:
            response = server.response(request, e.code, e.phrase)
            for name, value in e.headers:
                response.addHeader(name, value)
            transaction.respond(response)
            return
        except ValueError:
            transaction.respond(server.response(request, 400, "Bad REGISTER"))
            return
        self.served += 1
        response = server.response(request, 200)
        headers = response.headers
        now = server._reactor.seconds()
        if bindings:
            headers["contact"] = contactHeaderValues(bindings, now)
        path = request.headers.get("path")
        if path and "path" in {t.lower() for t in request.values("supported")}:
            headers["path"] = list(path)
        headers["supported"] = ["path, outbound"]
        transaction.respond(self._signed(response, request, auth))

    def _redirect(self, outcome, request, transaction, auth, aor):
        self.redirects += 1
        contact = f"<{outcome.uri}>"
        response = self.server.response(request, 301, "Moved Permanently")
        response.headers["contact"] = [contact]
        transaction.respond(self._signed(response, request, auth, contact))

    def _proxy(self, outcome, request, transaction, aor):
        if self.proxy is None:
            transaction.respond(self.server.response(
                request, 500, "Server Internal Error (No Proxy Configured)"))
            return
        self.proxied += 1
        # The Request-URI stays the domain (the digest response covers it);
        # the request goes to the assigned server as next hop, with a Path
        # through us so the home can reach the user back along the hops.
        self.proxy.forward(request, transaction, nextHop=outcome.uri,
                           recordRoute=False, addPath=True)

    def _reject(self, outcome, request, transaction, aor):
        self._log.info("REGISTER of {aor}: {code} {phrase}", aor=aor,
                       code=outcome.code, phrase=outcome.phrase)
        response = self.server.response(request, outcome.code, outcome.phrase)
        if outcome.retryAfter:
            response.headers["retry-after"] = [str(outcome.retryAfter)]
        transaction.respond(response)
