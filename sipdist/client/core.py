# -*- test-case-name: tests.test_client_core -*-
"""
The client core: a SIP user agent built on L{sipdist.sip.transport} and
L{sipdist.sip.transaction}.

L{UserAgent} owns a transport layer (one UDP port of its own, TCP and TLS
connections it opens) and a transaction layer, and is the transaction user
of the latter (L{ITransactionUser}), so that it receives the requests
servers send it: INVITE, ACK, BYE, MESSAGE, NOTIFY, OPTIONS.

Sending (L{UserAgent.send}): a request is built without Via, handed with a
L{sipdist.client.discovery.Target}; the core opens the flow (checking a TLS
server's identity first, L{sipdist.client.tlscheck}), adds the Via, runs
the client transaction, and answers C{401}/C{407} challenges with Digest
(L{sipdist.auth.client}), SHA-256 preferred over MD5.  It gives back an
L{Outcome}: the final response, the Digest session that authorised the
request (to verify a signed C{301} or C{200}), the request as sent and its
flow.

Every request out of a dialog lists the option tag C{sipdist-redirect} in
C{Supported} (L{sipdist.decision.REDIRECT_OPTION_TAG}): the servers
redirect only clients that show they follow the redirect, and proxy the
others.

The outbound proxy: once logged in, every request out of a dialog is sent
to L{UserAgent.outboundProxy} (the server a redirect named), keeping its
Request-URI (the registrar domain, the callee).  The client does not add a
C{Route} header for it: the proxy is the next hop by construction (RFC 3261
section 8.1.2 allows either), and a server that is the home of the user
handles the request as addressed to it.

Nothing here reads the global reactor; the reactor, the CA certificates and
the observer of events are given by the caller.
"""

import socket
import uuid

from twisted.internet import defer
from twisted.logger import Logger
from zope.interface import implementer

import sipdist
from sipdist.decision import REDIRECT_OPTION_TAG
from sipdist.auth.client import ChallengeError, answerChallenge
from sipdist.client.dialog import OutgoingCall, Subscription
from sipdist.client.discovery import Target
from sipdist.client.events import Event, NoAnswer
from sipdist.client.tlscheck import checkTLS
from sipdist.interfaces import ITransactionUser
from sipdist.sip.message import (
    Request, Via, formatNameAddr, newBranch, newTag, parseNameAddr,
    responseTo)
from sipdist.sip.transaction import TransactionLayer
from sipdist.sip.transport import TransportLayer
from sipdist.sip.uri import URIError, normaliseAOR, parseURI

USER_AGENT = f"sipdist-client/{sipdist.__version__}"
MAX_AUTH_ATTEMPTS = 3
MAX_DIALOGS = 64
ALLOW = "INVITE, ACK, BYE, CANCEL, OPTIONS, MESSAGE, NOTIFY"


class Outcome:
    """
    What came of a request.

    @ivar response: the final L{sipdist.sip.message.Response}.
    @ivar session: the L{sipdist.auth.client.ClientSession} that authorised
        the request as sent, or C{None}.
    @ivar request: the request as last sent (with Via, CSeq, credentials).
    @ivar flow: the flow it went on.
    @ivar target: the L{Target} it was sent to.
    """

    def __init__(self, response, session, request, flow, target):
        self.response = response
        self.session = session
        self.request = request
        self.flow = flow
        self.target = target


class _TracedFlow:
    """
    A flow that reports what is sent on it to the user agent's tracer.
    """

    def __init__(self, flow, tracer):
        self._flow = flow
        self._tracer = tracer

    def __getattr__(self, name):
        return getattr(self._flow, name)

    def send(self, message):
        self._tracer("out", message, self._flow)
        return self._flow.send(message)


class _Receiver:
    """
    Between the transport and the transaction layer: reports what arrives to
    the tracer.
    """

    def __init__(self, ua):
        self._ua = ua

    def messageReceived(self, message, flow):
        ua = self._ua
        if ua.tracer is not None:
            ua._trace("in", message, flow)
        ua.transactions.messageReceived(message, flow)


def localAddressFor(host, port):
    """
    The local address the system would send from to reach C{host:port}
    (a UDP socket is connected and asked; nothing is sent).
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as s:
            s.connect((host, port))
            return s.getsockname()[0]
    except OSError:
        return "127.0.0.1" if family == socket.AF_INET else "::1"


# The namespace of the instance ids derived by L{instanceFor}.
INSTANCE_NAMESPACE = uuid.UUID("5b1d7a3e-2f0c-4e61-9a57-3c2de1f0a8b4")


def instanceFor(aor, device=None):
    """
    The RFC 5626 instance id of a client, C{urn:uuid:...}: a name-based
    UUID (version 5) of the address-of-record and the device, by default
    this host's name.  It is the same at every start, with nothing to keep
    on disk; two clients of one account on one host must name distinct
    devices (or be given their own instance ids).
    """
    if device is None:
        device = socket.gethostname()
    return f"urn:uuid:{uuid.uuid5(INSTANCE_NAMESPACE, f'{aor}|{device}')}"


def asInstance(text):
    """
    An instance id given as a UUID or a C{urn:uuid:} URN, as
    C{urn:uuid:...}.

    @raise ValueError: not a UUID.
    """
    value = text.strip().strip('"<>')
    if value.lower().startswith("urn:uuid:"):
        value = value[len("urn:uuid:"):]
    return f"urn:uuid:{uuid.UUID(value)}"


@implementer(ITransactionUser)
class UserAgent:
    """
    A SIP user agent for one address-of-record.

    @param reactor: provides time, UDP, TCP (and TLS through them).
    @param aor: the address-of-record (C{alice@example.com} or
        C{sip:alice@example.com}).
    @param password: the Digest password.
    @param username: the Digest user name (default: the user part).
    @param caCertificates: paths of PEM CA certificates TLS servers are
        verified against (L{None}: the platform's).
    @param listen: where the UDP port listens.
    @param T1: the RFC 3261 T1 (transaction timeouts are 64*T1).
    @param observer: called with every L{sipdist.client.events} event.
    @param tracer: called with C{(direction, message, flow)} for every
        message sent (C{"out"}) or received (C{"in"}), or L{None}.
    @param instance: the RFC 5626 instance id of this client (a UUID or
        C{urn:uuid:} URN); default L{instanceFor} the AOR on this host.
        Every REGISTER's Contact carries it (C{+sip.instance}) with
        C{reg-id=1}: the registrar replaces the binding of our previous
        flow instead of adding one when we connect again.

    @ivar outboundProxy: the L{Target} requests out of dialogs go to, once
        set by the login, else L{None}.
    @ivar onMessage: called with each incoming MESSAGE request.
    @ivar onInvite: called with an L{IncomingCall} for each incoming INVITE;
        L{None}: calls are refused with C{480}.
    @ivar onNotify: called with each incoming NOTIFY request.
    """

    _log = Logger()

    def __init__(self, reactor, aor, password, username=None,
                 caCertificates=None, listen="udp:0", T1=0.5, observer=None,
                 tracer=None, maxConnections=32, instance=None):
        self._reactor = reactor
        text = normaliseAOR(aor)
        self.aor = parseURI(text)
        self.instance = (asInstance(instance) if instance is not None
                         else instanceFor(text))
        self.username = username or self.aor.username
        self.password = password
        self.domain = self.aor.host
        self.caCertificates = caCertificates
        self.listenDescription = listen
        self.observer = observer
        self.tracer = tracer
        self.outboundProxy = None
        # While a login runs: the Deferreds of requests waiting for it.
        self._loginWaiters = None
        self.onMessage = None
        self.onInvite = None
        self.onNotify = None
        self.transactions = TransactionLayer(reactor, self, T1=T1,
                                             maxTransactions=1000)
        self.transport = TransportLayer(
            reactor, _Receiver(self), tlsClientOptions=self._tlsOptions,
            maxConnections=maxConnections, maxConnectionsPerHost=8)
        self._session = None
        self._sessionHeader = "authorization"
        self._nonceCounts = {}
        self._verifiedTLS = set()
        self._dialogs = {}
        self.port = None

    # Life cycle

    @defer.inlineCallbacks
    def start(self):
        """
        Start listening on the UDP port.

        @return: L{Deferred} firing when listening.
        """
        if self.port is None:
            self.port = yield self.transport.listen(self.listenDescription)
        return self

    def stop(self):
        """
        End every transaction and close the port and the connections.
        """
        self.transactions.stop()
        self.port = None
        return self.transport.stopListening()

    # Events

    def notify(self, event):
        """
        Give an event to the observer.
        """
        if self.observer is not None:
            try:
                self.observer(event)
            except Exception:
                self._log.failure("observer failed on {event!r}", event=event)

    def _trace(self, direction, message, flow):
        try:
            self.tracer(direction, message, flow)
        except Exception:
            self._log.failure("tracer failed")

    # Connections

    def _tlsOptions(self, hostname):
        from sipdist.sip.tls import clientContextFactory
        return clientContextFactory(hostname, self.caCertificates)

    @defer.inlineCallbacks
    def connect(self, target):
        """
        The flow to a target; a TLS server's identity is checked once first.

        @return: L{Deferred} firing with a flow, failing with L{NoAnswer}
            (connection refused) or L{sipdist.client.tlscheck.TLSFailure}.
        """
        if target.transport == "TLS":
            key = (target.host, target.port, target.tlsHostname)
            if key not in self._verifiedTLS:
                yield checkTLS(self._reactor, target.host, target.port,
                               target.tlsHostname,
                               self._tlsOptions(target.tlsHostname))
                if len(self._verifiedTLS) > 64:
                    self._verifiedTLS.clear()
                self._verifiedTLS.add(key)
        try:
            flow = yield self.transport.connect(
                target.transport, target.host, target.port,
                tlsHostname=target.tlsHostname)
        except Exception as e:
            raise NoAnswer(f"cannot connect to {target}: "
                           f"{e.__class__.__name__}: {e}") from None
        if self.tracer is not None:
            flow = _TracedFlow(flow, self._trace)
        return flow

    def localAddress(self, flow):
        """
        C{(host, port)} of this agent as reached over C{flow}: the
        connection's local end for TCP and TLS, the UDP port with the
        address that routes to the peer for UDP.
        """
        if flow.transport != "UDP":
            return flow.local
        host = localAddressFor(*flow.remote)
        return host, self.port.getHost().port

    def contactURI(self, flow):
        """
        The Contact URI for requests sent on C{flow}.
        """
        host, port = self.localAddress(flow)
        if ":" in host:
            host = f"[{host}]"
        text = f"sip:{self.username}@{host}:{port}"
        if flow.transport != "UDP":
            text += f";transport={flow.transport.lower()}"
        return parseURI(text)

    # Requests

    def newRequest(self, method, uri, to=None, callId=None, cseq=1,
                   fromTag=None):
        """
        A request from this agent's AOR, without Via and Contact (added when
        it is sent).  It lists the option tag L{REDIRECT_OPTION_TAG} in
        C{Supported}: this client follows a signed C{301} by using its
        Contact as outbound proxy, so the servers may redirect it.

        @param uri: the Request-URI (L{URI} or text).
        @param to: the To URI (default: C{uri}).
        """
        if isinstance(uri, str):
            uri = parseURI(uri)
        request = Request(method, uri)
        headers = request.headers
        headers["max-forwards"] = ["70"]
        headers["from"] = [formatNameAddr(self.aor,
                                          {"tag": fromTag or newTag()})]
        headers["to"] = [formatNameAddr(to or uri)]
        headers["call-id"] = [callId or f"{newTag()}{newTag()}@sipdist"]
        headers["cseq"] = [f"{cseq} {method}"]
        headers["user-agent"] = [USER_AGENT]
        headers["supported"] = [REDIRECT_OPTION_TAG]
        return request

    def _prepare(self, request, flow, withContact):
        """
        A copy of C{request} for one transmission: a fresh top Via for
        C{flow}, and the Contact.
        """
        # A shallow copy (copy.copy, through the pickle protocol, costs
        # several times this), with lists of its own.
        sent = object.__new__(type(request))
        sent.__dict__.update(request.__dict__)
        sent.headers = {k: list(v) for k, v in request.headers.items()}
        sent._vias = None
        host, port = self.localAddress(flow)
        via = Via(host if ":" not in host else f"[{host}]", port,
                  flow.transport)
        via.branch = newBranch()
        via.rportRequested = True
        sent.headers["via"] = [via.toString()]
        if withContact and "contact" not in sent.headers:
            params = None
            if request.method == "REGISTER":
                # RFC 5626 section 4.2: one flow (reg-id 1) of this
                # instance at a time.
                params = {"+sip.instance": f'"<{self.instance}>"',
                          "reg-id": "1"}
            sent.headers["contact"] = [formatNameAddr(self.contactURI(flow),
                                                      params)]
        return sent

    def _authorize(self, request, session=None):
        """
        Add credentials from C{session} (default: the last one) to
        C{request}, with the next nonce count.

        @return: the session copy that authorised it, or C{None}.
        """
        base = session or self._session
        if base is None:
            return None
        nc = self._nonceCounts.get(base.nonce, 0) + 1
        if len(self._nonceCounts) > 16:
            self._nonceCounts.clear()
        self._nonceCounts[base.nonce] = nc
        used = base.copy()
        value = used.authorize(request.method, request.uriText, nc)
        request.headers.pop("authorization", None)
        request.headers.pop("proxy-authorization", None)
        request.headers[self._sessionHeader] = [value]
        return used

    @defer.inlineCallbacks
    def send(self, request, target, withContact=None, preemptive=True):
        """
        Send a request to C{target}, answering challenges.

        @param withContact: add a Contact header (default: for REGISTER,
            INVITE and SUBSCRIBE).
        @param preemptive: send the last Digest session's credentials in the
            first attempt (saves a round trip once logged in).
        @return: L{Deferred} firing with an L{Outcome} (whatever the final
            status), failing with L{NoAnswer} or
            L{sipdist.client.tlscheck.TLSFailure}.
        """
        from sipdist.sip.transaction import TransactionError
        if withContact is None:
            withContact = request.method in ("REGISTER", "INVITE",
                                             "SUBSCRIBE")
        flow = yield self.connect(target)
        number, method = request.cseq()
        fresh = False
        session = None
        for attempt in range(MAX_AUTH_ATTEMPTS + 1):
            sent = self._prepare(request, flow, withContact)
            sent.headers["cseq"] = [f"{number} {method}"]
            if session is not None or (preemptive and attempt == 0):
                used = self._authorize(sent, session)
            else:
                used = None
            transaction = self.transactions.sendRequest(sent, flow)
            try:
                response = yield transaction.deferred
            except TransactionError as e:
                raise NoAnswer(f"no answer from {target} to {method}: "
                               f"{e}") from None
            code = response.code
            if code not in (401, 407) or attempt == MAX_AUTH_ATTEMPTS:
                break
            header = "www-authenticate" if code == 401 else \
                "proxy-authenticate"
            values = response.headers.get(header, [])
            stale = any("stale=true" in v.replace(" ", "").lower()
                        for v in values)
            if fresh and not stale:
                break  # Our answer to this server's challenge was refused.
            try:
                value, session = answerChallenge(
                    values, method, sent.uriText, self.username,
                    self.password)
            except ChallengeError as e:
                self.notify(Event("challenge-unanswerable",
                                  f"cannot answer the challenge of {target}: "
                                  f"{e}", target=target, code=code))
                break
            self._sessionHeader = ("authorization" if code == 401
                                   else "proxy-authorization")
            self._session = session
            self._nonceCounts[session.nonce] = 0
            self.notify(Event(
                "challenge",
                f"challenged by {target}: {code} realm={session.realm!r}"
                f"{' (stale nonce)' if stale else ''}, answering with "
                f"Digest {session.algorithm.name}", target=target, code=code,
                realm=session.realm, algorithm=session.algorithm.name,
                stale=stale))
            fresh = True
            number += 1
        request.headers["cseq"] = [f"{number} {method}"]
        return Outcome(response, used, sent, flow, target)

    # The login gate: requests out of dialogs wait while a login runs, so
    # they go to the server it ends at, not to the domain meanwhile.

    MAX_LOGIN_WAITERS = 1000

    def loginStarted(self):
        """
        A login (or a re-login after a redirect) begins: forget the outbound
        proxy and hold requests out of dialogs until L{loginEnded}.
        """
        self.outboundProxy = None
        if self._loginWaiters is None:
            self._loginWaiters = []

    def loginEnded(self, target=None):
        """
        The login ended, at C{target} (the new outbound proxy), or failed
        (C{None}): the requests held go on.
        """
        if target is not None:
            self.outboundProxy = target
        waiters, self._loginWaiters = self._loginWaiters, None
        for d in waiters or ():
            d.callback(target)

    def whenLoggedIn(self):
        """
        @return: a L{Deferred} firing when no login is running (at once if
            none is).  Past L{MAX_LOGIN_WAITERS} waiting requests, it fires
            at once: the table stays bounded.
        """
        waiters = self._loginWaiters
        if waiters is None or len(waiters) >= self.MAX_LOGIN_WAITERS:
            return defer.succeed(self.outboundProxy)
        d = defer.Deferred()
        waiters.append(d)
        return d

    def nextHop(self, uri):
        """
        Where a request out of a dialog for C{uri} goes: the outbound proxy
        when there is one, else the URI's host.
        """
        if self.outboundProxy is not None:
            return self.outboundProxy
        transport = (uri.transport or ("tls" if uri.secure else "udp")).upper()
        port = uri.port or (5061 if transport == "TLS" else 5060)
        return Target(transport, uri.host.strip("[]"), port)

    # Basic requests

    @defer.inlineCallbacks
    def message(self, to, text, contentType="text/plain"):
        """
        Send a MESSAGE (RFC 3428) to C{to}.

        @return: L{Deferred} firing with the final response.
        """
        uri = parseURI(normaliseAOR(to)) if isinstance(to, str) else to
        request = self.newRequest("MESSAGE", uri)
        request.headers["content-type"] = [contentType]
        request.body = text.encode("utf-8") if isinstance(text, str) else text
        yield self.whenLoggedIn()
        outcome = yield self.send(request, self.nextHop(uri))
        return outcome.response

    def call(self, to, sdp=None):
        """
        Place a call: INVITE (with C{sdp} as body if given), ACK the 2xx.

        @return: an L{sipdist.client.dialog.OutgoingCall}; its C{deferred}
            fires with it once established, or fails with
            L{sipdist.client.dialog.CallFailed}.
        """
        uri = parseURI(normaliseAOR(to)) if isinstance(to, str) else to
        call = OutgoingCall(self, uri, sdp)
        call.start()
        return call

    def subscribe(self, to, event="presence", expires=600):
        """
        SUBSCRIBE to C{to}'s C{event}.

        @return: L{Deferred} firing with a
            L{sipdist.client.dialog.Subscription} once the SUBSCRIBE is
            accepted (2xx), failing with L{sipdist.client.events.ClientError} otherwise.
        """
        uri = parseURI(normaliseAOR(to)) if isinstance(to, str) else to
        return Subscription(self, uri, event, expires).start()

    # Dialogs

    def addDialog(self, dialog):
        """
        Remember a dialog, so that in-dialog requests reach it.
        """
        if len(self._dialogs) >= MAX_DIALOGS:
            oldest = next(iter(self._dialogs))
            del self._dialogs[oldest]
        self._dialogs[dialog.key] = dialog

    def removeDialog(self, dialog):
        if self._dialogs.get(dialog.key) is dialog:
            del self._dialogs[dialog.key]

    def _dialogFor(self, request):
        try:
            fromTag = parseNameAddr(request.header("from"))[2].get("tag")
            toTag = parseNameAddr(request.header("to"))[2].get("tag")
        except (URIError, ValueError, TypeError):
            return None
        return self._dialogs.get((request.callID, toTag, fromTag))

    # ITransactionUser

    def requestReceived(self, request, transaction):
        method = request.method
        dialog = self._dialogFor(request)
        if dialog is not None:
            dialog.requestReceived(request, transaction)
            return
        if method == "MESSAGE":
            transaction.respond(responseTo(request, 200))
            self._hook(self.onMessage, request)
        elif method == "NOTIFY":
            # A NOTIFY may arrive before the SUBSCRIBE's 2xx: accept it.
            transaction.respond(responseTo(request, 200))
            self._hook(self.onNotify, request)
        elif method == "INVITE":
            from sipdist.client.dialog import IncomingCall
            if self.onInvite is None:
                transaction.respond(responseTo(request, 480,
                                               "Temporarily Unavailable"))
                return
            call = IncomingCall(self, request, transaction)
            self._hook(self.onInvite, call)
        elif method == "OPTIONS":
            response = responseTo(request, 200)
            response.headers["allow"] = [ALLOW]
            transaction.respond(response)
        elif method in ("BYE", "CANCEL", "ACK"):
            transaction.respond(responseTo(
                request, 481, "Call/Transaction Does Not Exist"))
        else:
            response = responseTo(request, 405, "Method Not Allowed")
            response.headers["allow"] = [ALLOW]
            transaction.respond(response)

    def _hook(self, hook, argument):
        if hook is not None:
            try:
                hook(argument)
            except Exception:
                self._log.failure("handler failed")

    def cancelReceived(self, request, transaction, cancelled):
        if cancelled is None:
            transaction.respond(responseTo(
                request, 481, "Call/Transaction Does Not Exist"))
            return
        transaction.respond(responseTo(request, 200))
        if cancelled.response is None or cancelled.response.code < 200:
            cancelled.respond(responseTo(cancelled.request, 487,
                                         "Request Terminated"))

    def ackReceived(self, request, flow):
        dialog = self._dialogFor(request)
        if dialog is not None:
            dialog.ackReceived(request)

    def responseReceived(self, response, flow):
        pass

    def transactionFailed(self, transaction, reason):
        self._log.info("{transaction} failed: {reason}",
                       transaction=transaction, reason=reason)
