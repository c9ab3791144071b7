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

Before the chain, in RFC 3261 order (the transport has already checked
syntax, version, URI scheme and Max-Forwards): the extension check
(section 8.2.2.3 for a UAS, 16.3 step 5 for a proxy), a C{420 Bad
Extension} with C{Unsupported} listing the option-tags we do not know, so it
comes before any authentication the chain does; then the answer to an
C{OPTIONS} addressed to the server itself.
"""

import socket
import time

from twisted.application.service import MultiService
from twisted.logger import Logger
from twisted.python.reflect import namedAny
from zope.interface import implementer

import sipdist
from sipdist.jitparams import compiledCode
from sipdist.logs import LogLimiter
from sipdist.interfaces import ITransactionUser
from sipdist.pool.status import installStatus
from sipdist.roles.chains import ROLES, chainFor
from sipdist.sip.hep import (
    DEFAULT_CAPTURE_ID, HEPSender, HEPService, parseDestination)
from sipdist.sip.tls import clientContextFactory
from sipdist.sip.message import hasToTag, responseTo
from sipdist.sip.overload import OverloadControl
from sipdist.sip.transaction import TransactionLayer
from sipdist.sip.transport import TransportLayer, TransportService

SERVER_HEADER = f"sipdist/{sipdist.__version__}"

# What every role understands; a role adds its own.
BASE_METHODS = ("OPTIONS", "ACK", "CANCEL")
SUPPORTED = "path, outbound"
# The option-tags of SUPPORTED, for Require and Proxy-Require.
SUPPORTED_TAGS = frozenset(t.strip() for t in SUPPORTED.split(","))
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
    serverHeader = SERVER_HEADER

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
        self.failureLog = LogLimiter(reactor, log=self._log,
                                     what="transactions failed")

    def addMethods(self, methods):
        """
        Allow C{methods} too (they appear in C{Allow}).
        """
        self.methods = tuple(dict.fromkeys(self.methods + tuple(methods)))
        self._allow = ", ".join(self.methods)

    def addressesUs(self, uri):
        """
        Whether a Request-URI names this server rather than a user.
        """
        return uri.username is None and (
            uri.host.lower() in self.localHosts or not self.localHosts)

    def response(self, request, code, phrase=None, toTag=None):
        """
        A response to C{request} carrying our C{Server} header (and
        C{toTag}, if given, as the tag it adds to the To).
        """
        response = responseTo(request, code, phrase, toTag)
        response.headers["server"] = [self.serverHeader]
        return response

    # ITransactionUser

    def unsupportedExtensions(self, request):
        """
        The option-tags of C{request} this server does not support: those
        of C{Proxy-Require} (every role may proxy a request: section 16.3
        step 5), and those of C{Require} when the server itself is the UAS
        (a REGISTER, which a registrar or redirecting role answers, or a
        request addressed to the server; section 8.2.2.3).  A proxy never
        refuses a request for its C{Require}: that is for the UAS.  A
        C{CANCEL} is never refused (section 8.2.2.3).

        @rtype: L{list} of L{str}
        """
        headers = request.headers
        if "proxy-require" not in headers and "require" not in headers:
            return []
        if request.method == "CANCEL":
            return []
        tags = request.values("proxy-require")
        if "require" in headers and (
                request.method == "REGISTER" or self.addressesUs(request.uri)):
            tags = tags + request.values("require")
        return list(dict.fromkeys(
            tag for tag in tags if tag.lower() not in SUPPORTED_TAGS))

    def requestReceived(self, request, transaction):
        method = request.method
        unsupported = self.unsupportedExtensions(request)
        if unsupported:
            response = self.response(request, 420, "Bad Extension")
            response.headers["unsupported"] = [", ".join(unsupported)]
            response.headers["supported"] = [SUPPORTED]
            transaction.respond(response)
            return
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
        """
        A response that matches no client transaction of ours: dropped (the
        transaction layer counts it in C{strayResponses}).  It is never
        relayed to the Via under ours: a forged response carrying one of
        our branches would otherwise make us send it wherever its second Via
        points.
        """
        self._log.debug("dropped a stray {code} from {flow}",
                        code=response.code, flow=flow)

    def transactionFailed(self, transaction, reason):
        if self.failureLog.allow() is not None:
            self._log.info("transaction {transaction} failed: {reason}",
                           transaction=transaction, reason=reason)


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
    # The HEP capture's sender (--hep), or None.
    hep = None

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
    @raise sipdist.config.ConfigurationError: one line saying what is
        wrong.
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
    transport.receiveBuffer = config.get("udp-receive-buffer", 4194304)
    if config.get("worker-id"):
        # One of --workers N processes: the ports are shared.
        from sipdist.workers import ReusePortListener
        transport.listener = ReusePortListener(reactor)
    overload = OverloadControl(
        reactor, transactions, transport=transport,
        maxLag=config.get("overload-lag", 0.2),
        maxTransactions=config.get("overload-transactions", 10000),
        retryAfter=config.get("overload-retry-after", 2),
        maxSpread=config.get("overload-retry-spread", 30),
        maxBacklog=config.get("overload-backlog", 262144),
        cpu=time.process_time, compiled=compiledCode())
    overload.watch(server.failureLog)
    transportService = TransportService(
        transport, listen, config.get("tls-server-options"))
    service = ServerService(server, transactions, transport, transportService)
    overload.setServiceParent(service)
    if config.get("hep"):
        sender = HEPSender(
            reactor, parseDestination(config["hep"]),
            captureId=config.get("hep-id", DEFAULT_CAPTURE_ID),
            password=config.get("hep-password"))
        HEPService(sender, transport).setServiceParent(service)
        service.hep = sender
    role = ROLES[config.get("role", "home")]
    assemble = namedAny(role.assemble)
    links = assemble(service, config, reactor, store=store, checker=checker)
    server.processors = chainFor(role.name, links)
    installStatus(service, config, reactor)
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

    # After a reload of the TLS files (sipdist.tap.reload).
    options.forget = cache.clear
    return options
