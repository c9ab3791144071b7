# -*- test-case-name: tests.test_server -*-
"""
The server core: the transaction user every role is built on, and
L{buildServer}, which wires transport, transactions and the role from the
twistd options.

A role is a chain of request processors (in the manner of reSIProcate's
repro): each gets the request and its server transaction and either handles
it (answers it, or proxies it) and returns C{True}, or returns C{False} to
pass it down the chain.  The last word is C{501}/C{405}: every request gets
an answer.
"""

import os
import socket

from twisted.application.service import MultiService
from twisted.logger import Logger
from zope.interface import implementer

import sipdist
from sipdist.interfaces import ITransactionUser
from sipdist.sip.message import hasToTag, responseTo
from sipdist.sip.transaction import TransactionLayer
from sipdist.sip.transport import TransportLayer, TransportService

SERVER_HEADER = f"sipdist/{sipdist.__version__}"

# What every role understands; a role adds its own.
BASE_METHODS = ("OPTIONS", "ACK", "CANCEL")
SUPPORTED = "path, outbound"
ACCEPT = "application/sdp, application/pidf+xml, text/plain"

# Methods we know of (RFC 3261 and extensions): a request for one we do not
# handle is a 405 with Allow, anything else a 501.
KNOWN_METHODS = frozenset((
    "INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "REGISTER", "PRACK",
    "SUBSCRIBE", "NOTIFY", "PUBLISH", "INFO", "REFER", "MESSAGE", "UPDATE",
))


def localAddresses(listenDescriptions, domain, name):
    """
    The host names and addresses a Request-URI may carry to address this
    server itself.
    """
    hosts = {"localhost", "127.0.0.1", "::1", "[::1]", domain.lower(),
             name.lower(), socket.gethostname().lower()}
    for description in listenDescriptions:
        for part in description.split(":"):
            if part.startswith("interface="):
                address = part[len("interface="):].replace("\\", "")
                hosts.add(address)
                hosts.add(f"[{address}]")
    return frozenset(h for h in hosts if h)


@implementer(ITransactionUser)
class SIPServer:
    """
    The transaction user of a sipdist server.

    @ivar processors: the chain requests go down, after the built-in
        OPTIONS handling.
    @ivar methods: the methods this server handles (for C{Allow}).
    """

    _log = Logger()

    def __init__(self, reactor, name, domain, localHosts=frozenset(),
                 processors=(), methods=()):
        self._reactor = reactor
        self.name = name
        self.domain = domain
        self.localHosts = localHosts
        self.processors = list(processors)
        self.methods = tuple(dict.fromkeys(BASE_METHODS + tuple(methods)))
        self._allow = ", ".join(self.methods)
        self.transactions = None
        self.proxy = None

    def addressesUs(self, uri):
        """
        Whether a Request-URI names this server rather than a user.
        """
        return uri.username is None and (
            uri.host.lower() in self.localHosts or not self.localHosts)

    def response(self, request, code, phrase=None):
        """
        A response to C{request} carrying our C{Server} header.
        """
        response = responseTo(request, code, phrase)
        response.headers["server"] = [SERVER_HEADER]
        return response

    # ITransactionUser

    def requestReceived(self, request, transaction):
        method = request.method
        if method == "OPTIONS" and self.addressesUs(request.uri):
            transaction.respond(self.optionsResponse(request))
            return
        for processor in self.processors:
            if processor(request, transaction):
                return
        if method == "OPTIONS":
            # No processor routed it to a user: answer for ourselves, so
            # health checks naming any user still get an answer.
            transaction.respond(self.optionsResponse(request))
            return
        if hasToTag(request):
            # Inside a dialog that nothing here knows of (RFC 3261 12.2.2).
            transaction.respond(self.response(
                request, 481, "Call/Transaction Does Not Exist"))
            return
        if method in KNOWN_METHODS:
            response = self.response(request, 405, "Method Not Allowed")
            response.headers["allow"] = [self._allow]
        else:
            response = self.response(request, 501, "Not Implemented")
        transaction.respond(response)

    def optionsResponse(self, request):
        """
        The answer to an OPTIONS addressed to this server (RFC 3261 section
        11.2): what it allows, supports and accepts.
        """
        response = self.response(request, 200)
        headers = response.headers
        headers["allow"] = [self._allow]
        headers["supported"] = [SUPPORTED]
        headers["accept"] = [ACCEPT]
        headers["accept-language"] = ["en"]
        return response

    def cancelReceived(self, request, transaction, cancelled):
        if cancelled is None:
            transaction.respond(self.response(
                request, 481, "Call/Transaction Does Not Exist"))
            return
        transaction.respond(self.response(request, 200))
        self.inviteCancelled(cancelled)

    def inviteCancelled(self, transaction):
        """
        An INVITE we have not answered was cancelled: the proxy cancels its
        branches if it forwarded it, otherwise we answer it 487.
        """
        if self.proxy is not None and self.proxy.cancelled(transaction):
            return
        transaction.respond(self.response(transaction.request, 487,
                                          "Request Terminated"))

    def ackReceived(self, request, flow):
        # An ACK for a 2xx travels end to end: pass it on if it is routed
        # through us.
        if self.proxy is not None:
            self.proxy.forwardStateless(request, flow)

    def responseReceived(self, response, flow):
        if self.proxy is not None:
            self.proxy.forwardResponse(response)
            return
        self._log.debug("stray response {code} from {flow}",
                        code=response.code, flow=flow)

    def transactionFailed(self, transaction, reason):
        self._log.info("transaction {transaction} failed: {reason}",
                       transaction=transaction, reason=reason)


class ConfigurationError(Exception):
    """
    The configuration cannot make a server (a store or credential string a
    provider rejects, ...); the message is one line for the operator.
    """


class ServerService(MultiService):
    """
    A running server: its transport (listening ports and connections), its
    transaction layer, its transaction user and what the role uses (store,
    registrar, proxy).
    """

    store = None
    registrar = None
    processor = None
    proxy = None

    _log = Logger()

    def __init__(self, server, transactions, transport, transportService):
        MultiService.__init__(self)
        self.server = server
        self.transactions = transactions
        self.transport = transport
        transportService.setServiceParent(self)
        self.transportService = transportService

    def stopService(self):
        d = MultiService.stopService(self)
        self.transactions.stop()
        if self.registrar is not None:
            self.registrar.stop()
        close = getattr(self.store, "close", None)
        if close is not None:
            close()
        return d


STORE_ROLES = ("home", "distributor", "internal-edge")

# Functions called as f(service, config, reactor) once a server's role is
# built, in order: feature modules wire themselves in here (routing of calls
# and messages, subscriptions, monitoring ...).  Each may look at
# config["role"] and do nothing for roles it does not concern.
def _routingExtension(service, config, reactor):
    from sipdist.services.routing import installRouting
    installRouting(service, config, reactor)


def _edgeExtension(service, config, reactor):
    from sipdist.roles.edge import installEdge
    installEdge(service, config, reactor)


def _subscriptionsExtension(service, config, reactor):
    from sipdist.services.subscriptions import installNotifier
    installNotifier(service, config, reactor)


def _monitorExtension(service, config, reactor):
    from sipdist.pool.monitor import installLoadReport, installMonitor
    from sipdist.pool.status import installStatus
    installLoadReport(service, config, reactor)
    installMonitor(service, config, reactor)
    installStatus(service, config, reactor)


EXTENSIONS = [
    _routingExtension,
    _edgeExtension,
    _subscriptionsExtension,
    _monitorExtension,
]


def buildServer(config, reactor, store=None, checker=None):
    """
    Build the service of one server from parsed twistd options.

    @param config: a L{sipdist.tap.Options} (or a dict with the same keys;
        missing keys take the defaults of the options).
    @param reactor: the reactor to run on.
    @param store: an L{IAssignmentStore} to use instead of building one
        from C{config["store"]}.
    @param checker: a credentials checker to use instead of building one
        from C{config["credentials"]}.
    @rtype: L{ServerService}
    @raise ConfigurationError: one line saying what is wrong.
    """
    name = config["name"]
    # The edge's endpoints facing the inside come after the others.
    listen = list(config["listen"]) + list(config.get("inside-listen") or ())
    server = SIPServer(
        reactor, name, config["domain"],
        localAddresses(listen, config["domain"], name))
    transactions = TransactionLayer(
        reactor, server, T1=config.get("t1", 0.5),
        maxTransactions=config.get("max-transactions", 100000))
    server.transactions = transactions
    transport = TransportLayer(
        reactor, transactions,
        maxMessageSize=config.get("max-message-size", 65535),
        idleTimeout=config.get("idle-timeout", 900.0),
        headerTimeout=config.get("header-timeout", 10.0),
        messageTimeout=config.get("message-timeout", 30.0),
        maxBuffered=config.get("max-buffered", 64 * 1024 * 1024),
        maxConnections=config.get("max-connections", 10000),
        maxConnectionsPerHost=config.get("max-connections-per-host", 64),
        tlsClientOptions=_tlsClientOptions(config))
    transportService = TransportService(
        transport, listen, config.get("tls-server-options"))
    service = ServerService(server, transactions, transport, transportService)
    role = config.get("role", "home")
    if role in STORE_ROLES:
        _storeRole(service, config, reactor, store, checker)
    for extension in EXTENSIONS:
        extension(service, config, reactor)
    return service


def _tlsClientOptions(config):
    """
    The TLS options of the connections a server opens to other servers: the
    peer's certificate verified against C{--tls-ca} (else the platform's
    CAs) for the host name or address connected to (service-identity), and
    our C{--tls-cert} presented for mutual TLS when we have one.  Built
    once per host name (a bounded cache).
    """
    given = config.get("tls-client-options")
    if given is not None:
        return given
    from sipdist.sip.tls import clientContextFactory

    ca = config.get("tls-ca") or None
    cert = config.get("tls-cert") or None
    key = config.get("tls-key") or None
    cache = {}

    def options(hostname):
        made = cache.get(hostname)
        if made is None:
            if len(cache) >= 256:
                cache.clear()
            made = cache[hostname] = clientContextFactory(
                hostname, ca, cert, key)
        return made

    return options


def _storeRole(service, config, reactor, store, checker):
    """
    Give a server the role processor of the roles that read the store.
    """
    from sipdist.auth.limiter import FailureLimiter
    from sipdist.auth.server import DigestAuthenticator
    from sipdist.auth.sources import CredentialsConfigError, makeChecker
    from sipdist.services.registrar import Registrar
    from sipdist.roles.distribution import DistributionProcessor
    from sipdist.store import StoreError, storeFromString

    role = config.get("role", "home")
    server = service.server
    if store is None:
        try:
            store = storeFromString(reactor, config.get("store", "memory:"))
        except StoreError as e:
            raise ConfigurationError(f"--store: {e}")
    if checker is None:
        try:
            checker = makeChecker(reactor, config.get("credentials", "memory:"))
        except CredentialsConfigError as e:
            raise ConfigurationError(f"--credentials: {e}")
    secret = config.get("secret")
    if not secret:
        secret = os.urandom(32).hex()
        ServerService._log.warn(
            "no nonce secret configured (--secret-file): using a random one; "
            "the servers of a pool must share one")
    algorithms = config.get("digest-algorithms", ("SHA-256", "MD5"))
    if isinstance(algorithms, str):
        algorithms = [a.strip() for a in algorithms.split(",") if a.strip()]
    authenticator = DigestAuthenticator(
        config["domain"], secret, checker, reactor, algorithms=algorithms,
        limiter=FailureLimiter(reactor, threshold=config.get("auth-failures", 10),
                               window=config.get("auth-window", 300.0)))
    registrar = None
    if role == "home":
        registrar = Registrar(
            reactor, minExpires=config.get("min-expires", 60),
            maxExpires=config.get("max-expires", 86400),
            maxBindings=config.get("max-bindings", 10))
    proxy = _makeProxy(service, config, reactor)
    processor = DistributionProcessor(
        server, role, store, authenticator, registrar=registrar, proxy=proxy,
        policy=config.get("redirect-policy", "auto"))
    server.processors.append(processor)
    server.methods = tuple(dict.fromkeys(server.methods + ("REGISTER",)))
    server._allow = ", ".join(server.methods)
    service.store = store
    service.registrar = registrar
    service.processor = processor
    service.authenticator = authenticator


def _makeProxy(service, config, reactor):
    """
    The stateful proxy of a server: requests routed through it (Route
    naming us) and the requests its role decides to proxy.
    """
    from sipdist.services.proxy import Proxy

    proxy = Proxy(reactor, service.transactions, service.transport,
                  service.transport.localAddress,
                  routeId=service.server.name)
    server = service.server
    server.proxy = proxy
    server.processors.insert(0, proxy.routeInDialog)
    service.proxy = proxy
    return proxy
