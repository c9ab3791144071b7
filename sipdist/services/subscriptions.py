# -*- test-case-name: tests.test_subscriptions -*-
"""
The notifier of a home server (RFC 6665): subscriptions to the C{reg}
event package (RFC 3680) and to C{presence} (RFC 3856, with a basic PIDF
body, RFC 3863) of the users assigned to the home.

The router of the home hands an out-of-dialog SUBSCRIBE (or a PUBLISH)
whose target user is assigned here to L{Notifier.subscribe}, once the
subscriber is authenticated.  The notifier answers C{200} with a To tag
and its Contact, and sends a NOTIFY with the current state at once and
whenever the state changes: a registration appearing or disappearing
(L{sipdist.services.registrar.Registrar.observe}), a presence document published.
Refreshes and unsubscriptions come in the dialog (L{Notifier.inDialog}, the
first processor of the chain); a subscription expires on the injected
clock (a sweep over a heap of expiry times) with a last NOTIFY
C{terminated;reason=timeout}.  A NOTIFY answered C{481} or not at all ends
the subscription (RFC 6665 section 4.2.2).

When the assignment store moves a user away from this home
(L{Notifier.storeChanged}), every subscription held here that depends on
the old assignment is terminated with C{Subscription-State:
terminated;reason=deactivated}: the watchers of the user (the subscriber
re-subscribes, and its SUBSCRIBE is routed to the user's new home), and
the user's own subscriptions held here (re-established through the user's
new outbound proxy).  A user that registers here for the first time (it
just moved here) has the subscriptions it holds here through another
server (a route set: they were made through its old home, which may be
going away) deactivated too, once the C{200} has gone out, so that it
makes them again through this home.  The C{reg} NOTIFY of a moved user says its
registration is C{terminated} and each contact C{deactivated} (RFC 3680
section 5.2: the UA should register again, and so learns of the 301).

Everything is bounded: subscriptions in all (C{503} past it), per
watched user, and per subscriber.
"""

import heapq
import itertools
from dataclasses import dataclass
from xml.sax.saxutils import escape, quoteattr

from twisted.application.service import Service
from twisted.internet.defer import succeed
from twisted.logger import Logger

from sipdist.sip.message import (
    Request, Via, formatNameAddr, newBranch, newTag, parseNameAddr)
from sipdist.services.proxy import NextHopError, nextHopFor
from sipdist.store import UserChanged
from sipdist.sip.uri import URIError, normaliseAOR, parseURI

PACKAGES = ("presence", "reg")
CONTENT_TYPES = {"presence": "application/pidf+xml",
                 "reg": "application/reginfo+xml"}
DEFAULT_EXPIRES = {"presence": 3600, "reg": 3761}
MIN_EXPIRES = 60
MAX_EXPIRES = 86400
MAX_SUBSCRIPTIONS = 100000
MAX_PER_TARGET = 1000
MAX_PER_SUBSCRIBER = 100
MAX_PUBLICATIONS = 100000
SWEEP_INTERVAL = 1.0
# Final responses to a NOTIFY that end its subscription, with the 5xx but
# 503 (RFC 6665 section 4.2.2).
ENDING_CODES = frozenset((404, 405, 408, 410, 416, 480, 481, 482, 483, 484,
                          485, 489, 501, 604))

ACTIVE = "active"
TERMINATED = "terminated"


@dataclass(eq=False)
class Subscription:
    """
    One subscription: a dialog in which we are the notifier.

    @ivar key: C{(Call-ID, our tag, the subscriber's tag)}.
    @ivar event: the package, C{presence} or C{reg}.
    @ivar eventId: the C{id} parameter of the Event header, or L{None}.
    @ivar target: the normalised AOR watched.
    @ivar subscriber: the normalised AOR of the subscriber.
    @ivar localURI: the To URI of the SUBSCRIBE (our From in NOTIFY).
    @ivar remoteURI: the From URI of the SUBSCRIBE.
    @ivar remoteTarget: the subscriber's Contact URI.
    @ivar routeSet: the Record-Route values of the SUBSCRIBE, in order.
    @ivar flow: the flow the SUBSCRIBE arrived on.
    @ivar expires: absolute expiry time.
    @ivar cseq: the CSeq number of our last NOTIFY.
    @ivar subscriberCSeq: the CSeq number of the subscriber's last request.
    @ivar version: the reginfo version (RFC 3680 section 5.3).
    @ivar state: C{active} or C{terminated}.
    """

    key: tuple
    event: str
    eventId: object
    target: str
    subscriber: str
    localURI: object
    remoteURI: object
    remoteTarget: object
    routeSet: list
    flow: object
    expires: float
    subscriberCSeq: int
    cseq: int = 0
    version: int = 0
    state: str = ACTIVE

    def remaining(self, now):
        return max(0, int(self.expires - now + 0.5))


def _eventHeader(request):
    value = request.header("event") or request.header("o") or ""
    package, _, params = value.partition(";")
    eventId = None
    for param in params.split(";"):
        name, _, pvalue = param.partition("=")
        if name.strip().lower() == "id":
            eventId = pvalue.strip()
    return package.strip().lower(), eventId


def _tag(value):
    try:
        return parseNameAddr(value)[2].get("tag")
    except (URIError, ValueError, TypeError):
        return None


def presenceDocument(aor, contacts, published=None):
    """
    A basic PIDF document (RFC 3863): C{open} when the user has a
    registered contact, C{closed} otherwise; a published document is
    passed on as it is.
    """
    if published is not None:
        return published
    basic = "open" if contacts else "closed"
    contact = ""
    if contacts:
        contact = f"\n    <contact>{escape(str(contacts[0].uri))}</contact>"
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<presence xmlns="urn:ietf:params:xml:ns:pidf" entity={quoteattr(aor)}>\n'
        '  <tuple id="sipdist">\n'
        f'    <status><basic>{basic}</basic></status>{contact}\n'
        '  </tuple>\n'
        '</presence>\n').encode("utf-8")


def reginfoDocument(aor, contacts, version, now, deactivated=False):
    """
    A full-state reginfo document (RFC 3680 section 5.3) for C{aor}: its
    registration C{active} with its contacts, C{init} without, or (moved
    away) C{terminated} with every contact C{terminated}, event
    C{deactivated}.
    """
    if deactivated:
        state = "terminated"
    elif contacts:
        state = "active"
    else:
        state = "init"
    lines = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        f'<reginfo xmlns="urn:ietf:params:xml:ns:reginfo" version="{version}"'
        ' state="full">',
        f'  <registration aor={quoteattr(aor)} id="r0" state="{state}">',
    ]
    for i, binding in enumerate(contacts):
        if deactivated:
            attributes = 'state="terminated" event="deactivated"'
        else:
            attributes = (f'state="active" event="registered" '
                          f'expires="{binding.remaining(now)}"')
        lines.append(f'    <contact id="c{i}" {attributes}>')
        lines.append(f"      <uri>{escape(str(binding.uri))}</uri>")
        lines.append("    </contact>")
    lines.append("  </registration>")
    lines.append("</reginfo>")
    return ("\n".join(lines) + "\n").encode("utf-8")


class Notifier:
    """
    The subscriptions of one home server (see the module docstring).

    @param server: the L{sipdist.server.SIPServer} (for responses).
    @param transactions: the L{sipdist.sip.transaction.TransactionLayer}
        NOTIFY requests are sent with.
    @param transport: the L{sipdist.sip.transport.TransportLayer} (flows, our
        addresses).
    @param registrar: the home's L{sipdist.services.registrar.Registrar}.
    @param name: this server's id in the store.

    @ivar notifies: NOTIFY requests sent.
    @ivar deactivated: subscriptions ended because a user moved.
    """

    _log = Logger()

    def __init__(self, reactor, server, transactions, transport, registrar,
                 name, minExpires=MIN_EXPIRES, maxExpires=MAX_EXPIRES,
                 maxSubscriptions=MAX_SUBSCRIPTIONS,
                 maxPerTarget=MAX_PER_TARGET,
                 maxPerSubscriber=MAX_PER_SUBSCRIBER,
                 sweepInterval=SWEEP_INTERVAL):
        self._reactor = reactor
        self.server = server
        self.transactions = transactions
        self.transport = transport
        self.registrar = registrar
        self.name = name
        self.minExpires = minExpires
        self.maxExpires = maxExpires
        self.maxSubscriptions = maxSubscriptions
        self.maxPerTarget = maxPerTarget
        self.maxPerSubscriber = maxPerSubscriber
        self.sweepInterval = sweepInterval
        self._subscriptions = {}
        self._byTarget = {}
        self._bySubscriber = {}
        self._heap = []
        self._counter = itertools.count()
        self._sweepCall = None
        self._published = {}
        self.notifies = 0
        self.notifyFailures = 0
        self.deactivated = 0
        self.expired = 0

    # Figures

    @property
    def count(self):
        """
        How many subscriptions are active.
        """
        return len(self._subscriptions)

    def subscriptions(self, target=None, subscriber=None):
        """
        The active subscriptions, all or those of a watched user or of a
        subscriber.
        """
        if target is not None:
            return list(self._byTarget.get(target, {}).values())
        if subscriber is not None:
            return list(self._bySubscriber.get(subscriber, {}).values())
        return list(self._subscriptions.values())

    def stats(self):
        return {"subscriptions": self.count, "notifies": self.notifies,
                "notify_failures": self.notifyFailures,
                "deactivated": self.deactivated, "expired": self.expired}

    # Requests

    def respond(self, request, transaction, code, phrase=None, headers=(),
                toTag=None):
        response = self.server.response(request, code, phrase)
        if toTag is not None:
            to = response.headers["to"][0]
            if ";tag=" in to:
                to = to.split(";tag=")[0]
            response.headers["to"] = [f"{to};tag={toTag}"]
        for name, value in headers:
            response.addHeader(name, value)
        transaction.respond(response)

    def subscribe(self, request, transaction, target):
        """
        Handle an out-of-dialog SUBSCRIBE (or PUBLISH) for C{target}, a user
        assigned to this home; the subscriber is authenticated.
        """
        if request.method == "PUBLISH":
            self.publish(request, transaction, target)
            return
        package, eventId = _eventHeader(request)
        if package not in PACKAGES:
            self.respond(request, transaction, 489, "Bad Event",
                         [("Allow-Events", ", ".join(PACKAGES))])
            return
        expires = self._expires(request, transaction, package)
        if expires is None:
            return
        try:
            fromValue = request.header("from")
            _, remoteURI, fromParams = parseNameAddr(fromValue)
            subscriber = normaliseAOR(remoteURI)
            _, localURI, _ = parseNameAddr(request.header("to"))
            contact = request.header("contact")
            remoteTarget = parseNameAddr(contact)[1] if contact else None
        except (URIError, ValueError, TypeError):
            self.respond(request, transaction, 400, "Bad From, To Or Contact")
            return
        fromTag = fromParams.get("tag")
        if not fromTag or remoteTarget is None:
            self.respond(request, transaction, 400,
                         "SUBSCRIBE Needs A From Tag And A Contact")
            return
        if expires and not self._room(target, subscriber):
            self.respond(request, transaction, 503,
                         "Service Unavailable (Too Many Subscriptions)",
                         [("Retry-After", "60")])
            return
        tag = newTag()
        now = self._reactor.seconds()
        subscription = Subscription(
            key=(request.callID, tag, fromTag), event=package,
            eventId=eventId, target=target, subscriber=subscriber,
            localURI=localURI, remoteURI=remoteURI, remoteTarget=remoteTarget,
            routeSet=list(request.values("record-route")),
            flow=transaction.flow, expires=now + expires,
            subscriberCSeq=request.cseq()[0])
        self._ok(request, transaction, subscription, expires)
        if expires:
            self._add(subscription)
            self._sendState(subscription)
        else:
            # A fetch (RFC 6665 section 4.4.3): one NOTIFY, terminated.
            self._terminate(subscription, "timeout")

    def _expires(self, request, transaction, package):
        value = request.header("expires")
        if value is None:
            expires = DEFAULT_EXPIRES[package]
        else:
            value = value.strip()
            if not value.isdigit() or len(value) > 10:
                self.respond(request, transaction, 400, "Bad Expires")
                return None
            expires = int(value)
        if 0 < expires < self.minExpires:
            self.respond(request, transaction, 423, "Interval Too Brief",
                         [("Min-Expires", str(self.minExpires))])
            return None
        return min(expires, self.maxExpires)

    def _room(self, target, subscriber):
        return (len(self._subscriptions) < self.maxSubscriptions
                and len(self._byTarget.get(target, ())) < self.maxPerTarget
                and len(self._bySubscriber.get(subscriber, ()))
                < self.maxPerSubscriber)

    def _ok(self, request, transaction, subscription, expires):
        # The Record-Route values go back in the 2xx so the subscriber
        # learns the route set too (RFC 3261 section 12.1.1).
        headers = [("Record-Route", value)
                   for value in request.headers.get("record-route", ())]
        headers += [("Contact", formatNameAddr(self._contact(
                        transaction.flow.transport))),
                    ("Expires", str(expires))]
        self.respond(request, transaction, 200, None, headers,
                     toTag=subscription.key[1])

    def inDialog(self, request, transaction):
        """
        A processor for SUBSCRIBE requests in one of our dialogs (refresh,
        or unsubscribe with C{Expires: 0}); C{481} for a SUBSCRIBE naming a
        dialog of ours that is over.

        @return: C{True} if the request was ours.
        """
        if request.method != "SUBSCRIBE":
            return False
        toTag = _tag(request.header("to"))
        if toTag is None:
            return False
        fromTag = _tag(request.header("from"))
        subscription = self._subscriptions.get(
            (request.callID, toTag, fromTag))
        if subscription is None:
            return False
        number = request.cseq()[0]
        if number <= subscription.subscriberCSeq:
            self.respond(request, transaction, 500, "Out Of Order CSeq")
            return True
        subscription.subscriberCSeq = number
        expires = self._expires(request, transaction, subscription.event)
        if expires is None:
            return True
        subscription.flow = transaction.flow
        self._ok(request, transaction, subscription, expires)
        if expires == 0:
            self._terminate(subscription, "timeout")
            return True
        subscription.expires = self._reactor.seconds() + expires
        heapq.heappush(self._heap, (subscription.expires,
                                    next(self._counter), subscription))
        self._ensureSweep()
        self._sendState(subscription)
        return True

    def publish(self, request, transaction, target):
        """
        A PUBLISH of presence (RFC 3903, simplified): the body becomes the
        user's presence document until it expires; C{SIP-If-Match} with no
        body refreshes it, C{Expires: 0} removes it.
        """
        package, _ = _eventHeader(request)
        if package != "presence":
            self.respond(request, transaction, 489, "Bad Event",
                         [("Allow-Events", "presence")])
            return
        expires = self._expires(request, transaction, "presence")
        if expires is None:
            return
        current = self._published.get(target)
        match = request.header("sip-if-match")
        if match is not None and (current is None or current[1] != match):
            self.respond(request, transaction, 412,
                         "Conditional Request Failed")
            return
        body = request.body
        if not body and current is None:
            self.respond(request, transaction, 400, "PUBLISH Without A Body")
            return
        if expires == 0:
            self._published.pop(target, None)
            self.respond(request, transaction, 200)
        else:
            if current is None and len(self._published) >= MAX_PUBLICATIONS:
                self.respond(request, transaction, 503,
                             "Service Unavailable (Too Many Publications)",
                             [("Retry-After", "60")])
                return
            etag = newTag()
            document = body or current[0]
            self._published[target] = (
                document, etag, self._reactor.seconds() + expires)
            self.respond(request, transaction, 200, None,
                         [("SIP-ETag", etag), ("Expires", str(expires))])
        for subscription in self.subscriptions(target=target):
            if subscription.event == "presence":
                self._sendState(subscription)

    # State changes

    def registrationChanged(self, aor, registered):
        """
        The registrar's observer: C{aor} gained its first binding or lost
        its last; its watchers are told.
        """
        for subscription in self.subscriptions(target=aor):
            self._sendState(subscription)
        if registered:
            routed = [s for s in self.subscriptions(subscriber=aor)
                      if s.routeSet]
            if routed:
                # After the 200 to the REGISTER has gone out, so that the
                # subscriber re-subscribes through us, its outbound proxy.
                self._reactor.callLater(0, self._rehome, routed)

    def _rehome(self, subscriptions):
        for subscription in subscriptions:
            if subscription.state == ACTIVE:
                self.deactivated += 1
                self._terminate(subscription, "deactivated")

    def storeChanged(self, event):
        """
        The store's watcher: a user moved away from this home has its
        subscriptions here deactivated (see the module docstring).
        """
        if type(event) is not UserChanged:
            return
        if event.old == self.name and event.new != self.name:
            self.deactivate(event.aor)

    def deactivate(self, aor):
        """
        End every subscription held here that watches C{aor} or that
        C{aor} made, with C{terminated;reason=deactivated}.

        @return: how many were ended.
        """
        ended = self.subscriptions(target=aor)
        ended += [s for s in self.subscriptions(subscriber=aor)
                  if s.target != aor]
        for subscription in ended:
            self.deactivated += 1
            self._terminate(subscription, "deactivated")
        return len(ended)

    def stop(self):
        """
        Cancel the sweep (the service is stopping); subscriptions are
        forgotten without NOTIFY.
        """
        if self._sweepCall is not None and self._sweepCall.active():
            self._sweepCall.cancel()
        self._sweepCall = None

    # The table

    def _add(self, subscription):
        self._subscriptions[subscription.key] = subscription
        self._byTarget.setdefault(subscription.target, {})[
            subscription.key] = subscription
        self._bySubscriber.setdefault(subscription.subscriber, {})[
            subscription.key] = subscription
        heapq.heappush(self._heap, (subscription.expires,
                                    next(self._counter), subscription))
        self._ensureSweep()

    def _remove(self, subscription):
        subscription.state = TERMINATED
        key = subscription.key
        if self._subscriptions.pop(key, None) is None:
            return
        for index, name in ((self._byTarget, subscription.target),
                            (self._bySubscriber, subscription.subscriber)):
            entries = index.get(name)
            if entries is not None:
                entries.pop(key, None)
                if not entries:
                    del index[name]

    def _ensureSweep(self):
        if self._sweepCall is None and (self._heap or self._published):
            self._sweepCall = self._reactor.callLater(self.sweepInterval,
                                                      self._sweep)

    def _sweep(self):
        self._sweepCall = None
        now = self._reactor.seconds()
        heap = self._heap
        while heap and heap[0][0] <= now:
            expires, _, subscription = heapq.heappop(heap)
            if subscription.state == ACTIVE and subscription.expires <= now:
                self.expired += 1
                self._terminate(subscription, "timeout")
        for target, (_, _, expires) in list(self._published.items()):
            if expires <= now:
                del self._published[target]
                self.registrationChanged(target, None)
        # Entries of refreshed or ended subscriptions are dropped when they
        # reach the top; keep the heap from growing past the table.
        if len(heap) > 2 * len(self._subscriptions) + 1024:
            self._heap = [e for e in heap if e[2].state == ACTIVE
                          and e[2].expires == e[0]]
            heapq.heapify(self._heap)
        self._ensureSweep()

    # NOTIFY

    def _contact(self, transport):
        address = self.transport.localAddress(transport)
        if address is None:
            for other in ("UDP", "TCP", "TLS"):
                address = self.transport.localAddress(other)
                if address is not None:
                    transport = other
                    break
            else:
                address = ("127.0.0.1", 5060)
        host, port = address
        if ":" in host:
            host = f"[{host}]"
        scheme = "sips" if transport == "TLS" else "sip"
        params = "" if transport in ("UDP", "TLS") else ";transport=tcp"
        return parseURI(f"{scheme}:{self.name}@{host}:{port}{params}")

    def _body(self, subscription, deactivated=False):
        aor = subscription.target
        contacts = self.registrar.lookup(aor) if self.registrar else []
        if subscription.event == "presence":
            published = self._published.get(aor)
            return presenceDocument(aor, [] if deactivated else contacts,
                                    published[0] if published else None)
        version = subscription.version
        subscription.version += 1
        return reginfoDocument(aor, contacts, version,
                               self._reactor.seconds(), deactivated)

    def _sendState(self, subscription):
        now = self._reactor.seconds()
        state = f"active;expires={subscription.remaining(now)}"
        self._notify(subscription, state, self._body(subscription))

    def _terminate(self, subscription, reason):
        self._remove(subscription)
        body = self._body(subscription, deactivated=reason == "deactivated")
        self._notify(subscription, f"terminated;reason={reason}", body)

    def _notify(self, subscription, state, body):
        subscription.cseq += 1
        request = Request("NOTIFY", subscription.remoteTarget)
        headers = request.headers
        if subscription.routeSet:
            headers["route"] = list(subscription.routeSet)
        callId, ourTag, theirTag = subscription.key
        headers["max-forwards"] = ["70"]
        headers["from"] = [formatNameAddr(subscription.localURI,
                                          {"tag": ourTag})]
        headers["to"] = [formatNameAddr(subscription.remoteURI,
                                        {"tag": theirTag})]
        headers["call-id"] = [callId]
        headers["cseq"] = [f"{subscription.cseq} NOTIFY"]
        event = subscription.event
        if subscription.eventId:
            event += f";id={subscription.eventId}"
        headers["event"] = [event]
        headers["subscription-state"] = [state]
        headers["content-type"] = [CONTENT_TYPES[subscription.event]]
        request.body = body
        try:
            if subscription.routeSet:
                hop = nextHopFor(parseNameAddr(subscription.routeSet[0])[1])
            else:
                hop = nextHopFor(subscription.remoteTarget)
        except (NextHopError, URIError, ValueError) as e:
            self._log.info("cannot notify {subscriber}: {reason}",
                           subscriber=subscription.subscriber, reason=str(e))
            self._remove(subscription)
            return
        flow = subscription.flow
        if (flow is not None and flow.transport != "UDP"
                and not subscription.routeSet
                and getattr(flow, "connected", False)):
            # The subscriber's own connection (it may be behind a NAT).
            d = succeed(flow)
        else:
            d = self.transport.connect(*hop)
        self.notifies += 1
        d.addCallback(self._send, request, subscription)
        d.addErrback(self._failed, subscription)

    def _send(self, flow, request, subscription):
        contact = self._contact(flow.transport)
        via = Via(contact.host, contact.port, flow.transport)
        via.branch = newBranch()
        via.rportRequested = True
        request.headers["via"] = [via.toString()]
        request.headers["contact"] = [formatNameAddr(contact)]
        transaction = self.transactions.sendRequest(request, flow)
        transaction.deferred.addCallback(self._answered, subscription)
        transaction.deferred.addErrback(self._failed, subscription)

    def _answered(self, response, subscription):
        # RFC 6665 section 4.2.2: these end the subscription.
        code = response.code
        if code in ENDING_CODES or (code >= 500 and code != 503):
            self._log.info("NOTIFY to {subscriber} answered {code}: "
                           "subscription ended", subscriber=subscription.
                           subscriber, code=code)
            self.notifyFailures += 1
            self._remove(subscription)

    def _failed(self, failure, subscription):
        self.notifyFailures += 1
        self._log.info("NOTIFY to {subscriber} failed: {reason}",
                       subscriber=subscription.subscriber,
                       reason=failure.getErrorMessage())
        self._remove(subscription)


class Handover:
    """
    The C{handover} hook of a home's L{sipdist.roles.distribution.DistributionProcessor}:
    a user moved away keeps being served here (its SUBSCRIBE, MESSAGE,
    INVITE routed as before) while it has bindings here, so that what it
    sends before it learns of the move (a re-SUBSCRIBE after a
    C{deactivated} NOTIFY) is not lost; its next REGISTER is redirected and
    ends its registration here.
    """

    def __init__(self, registrar):
        self.registrar = registrar
        self.served = 0
        self.released = 0

    def __call__(self, context, outcome):
        registrar = self.registrar
        aor = context.aor
        if context.request.method == "REGISTER":
            if registrar.lookup(aor):
                self.released += 1
                registrar.remove(aor)
            return False
        if registrar.lookup(aor):
            self.served += 1
            return True
        return False


class NotifierService(Service):
    """
    Watches the store for moves while the server runs; stops the
    notifier's timer when it stops.
    """

    def __init__(self, notifier, store):
        self.notifier = notifier
        self.store = store
        self._unwatch = None

    def startService(self):
        Service.startService(self)
        self._unwatch = self.store.watch(self.notifier.storeChanged)

    def stopService(self):
        Service.stopService(self)
        if self._unwatch is not None:
            self._unwatch()
            self._unwatch = None
        self.notifier.stop()


def installNotifier(service, config, reactor):
    """
    Give a home server (L{sipdist.roles.home}) a L{Notifier} as
    C{service.notifier} (the registrar observed, the store watched) and
    the L{Handover} hook.

    @return: the notifier; its C{inDialog} is a link of the home's chain.
    """
    notifier = Notifier(
        reactor, service.server, service.transactions, service.transport,
        service.registrar, config["name"],
        minExpires=config.get("min-expires", MIN_EXPIRES),
        maxExpires=config.get("max-expires", MAX_EXPIRES))
    service.notifier = notifier
    service.registrar.observe(notifier.registrationChanged)
    service.handover = service.processor.handover = Handover(
        service.registrar)
    NotifierService(notifier, service.store).setServiceParent(service)
    return notifier
