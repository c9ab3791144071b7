# -*- test-case-name: tests.test_client_core -*-
"""
Dialogs of the client (RFC 3261 section 12): calls placed and answered
(INVITE, ACK, BYE, no media: the body is a static SDP if any) and
subscriptions (SUBSCRIBE/NOTIFY, RFC 6665).

A dialog is identified by C{(Call-ID, local tag, remote tag)}; the user
agent routes in-dialog requests to it.  In-dialog requests go to the
remote target (the peer's Contact) through the user agent's outbound proxy
when it has one, with the route set learnt from Record-Route as Route
headers.
"""

from twisted.internet import defer
from twisted.logger import Logger

from sipdist.client.events import ClientError, Event
from sipdist.sip.message import (
    Request, formatNameAddr, newTag, parseNameAddr, responseTo)
from sipdist.sip.uri import URIError

STATIC_SDP = (
    "v=0\r\n"
    "o=sipdist 1 1 IN IP4 127.0.0.1\r\n"
    "s=sipdist\r\n"
    "c=IN IP4 127.0.0.1\r\n"
    "t=0 0\r\n"
    "m=audio 9 RTP/AVP 0\r\n"
    "a=inactive\r\n")


class CallFailed(ClientError):
    """
    A call was not established; C{code} is the final status (0 if none).
    """

    def __init__(self, message, code=0):
        ClientError.__init__(self, message)
        self.code = code


def _tag(value):
    try:
        return parseNameAddr(value)[2].get("tag")
    except (URIError, ValueError):
        return None


class Dialog:
    """
    The state of a dialog: identifiers, remote target, route set, CSeq.
    """

    _log = Logger()

    def __init__(self, ua, callId, localTag, remoteTag, localURI, remoteURI,
                 remoteTarget, routeSet, cseq):
        self.ua = ua
        self.callId = callId
        self.localTag = localTag
        self.remoteTag = remoteTag
        self.localURI = localURI
        self.remoteURI = remoteURI
        self.remoteTarget = remoteTarget
        self.routeSet = routeSet
        self.cseq = cseq
        self.ended = False

    @property
    def key(self):
        return (self.callId, self.localTag, self.remoteTag)

    def target(self):
        """
        Where in-dialog requests go.
        """
        ua = self.ua
        if ua.outboundProxy is not None:
            return ua.outboundProxy
        if self.routeSet:
            uri = parseNameAddr(self.routeSet[0])[1]
        else:
            uri = self.remoteTarget
        return ua.nextHop(uri)

    def newRequest(self, method, cseq=None):
        if cseq is None:
            self.cseq += 1
            cseq = self.cseq
        request = Request(method, self.remoteTarget)
        headers = request.headers
        if self.routeSet:
            headers["route"] = list(self.routeSet)
        headers["max-forwards"] = ["70"]
        headers["from"] = [formatNameAddr(self.localURI,
                                          {"tag": self.localTag})]
        headers["to"] = [formatNameAddr(self.remoteURI,
                                        {"tag": self.remoteTag})]
        headers["call-id"] = [self.callId]
        headers["cseq"] = [f"{cseq} {method}"]
        return request

    def requestReceived(self, request, transaction):
        if request.method == "BYE":
            transaction.respond(responseTo(request, 200))
            self.end("remote hangup")
        else:
            transaction.respond(responseTo(request, 200))

    def ackReceived(self, request):
        pass

    def end(self, reason):
        if not self.ended:
            self.ended = True
            self.ua.removeDialog(self)
            self.ua.notify(Event("dialog-ended",
                                 f"dialog {self.callId} ended: {reason}",
                                 dialog=self, reason=reason))


class _CallMixin:
    def hangup(self):
        """
        Send BYE.

        @return: L{Deferred} firing with the final response to the BYE.
        """
        dialog = self.dialog
        if dialog is None or dialog.ended:
            return defer.succeed(None)
        bye = dialog.newRequest("BYE")
        d = self.ua.send(bye, dialog.target(), withContact=False)
        dialog.end("local hangup")
        d.addCallback(lambda outcome: outcome.response)
        return d


class OutgoingCall(_CallMixin):
    """
    A call placed by the user agent.

    @ivar deferred: fires with this object once the 2xx came and the ACK
        was sent; fails with L{CallFailed}.
    @ivar dialog: the L{Dialog}, once established.
    @ivar response: the final response to the INVITE.
    """

    def __init__(self, ua, uri, sdp=None):
        self.ua = ua
        self.uri = uri
        self.sdp = sdp
        self.dialog = None
        self.response = None
        self.deferred = defer.Deferred()

    def start(self):
        ua = self.ua
        self.localTag = newTag()
        request = ua.newRequest("INVITE", self.uri, fromTag=self.localTag)
        if self.sdp is not None:
            request.headers["content-type"] = ["application/sdp"]
            request.body = self.sdp.encode("utf-8") if isinstance(
                self.sdp, str) else self.sdp
        d = ua.whenLoggedIn()
        d.addCallback(lambda _: ua.send(request, ua.nextHop(self.uri)))
        d.addCallbacks(self._answered, self._failed)

    def _failed(self, failure):
        if not self.deferred.called:
            self.deferred.errback(CallFailed(
                f"call to {self.uri} failed: {failure.getErrorMessage()}"))

    def _answered(self, outcome):
        response = outcome.response
        self.response = response
        if not 200 <= response.code < 300:
            self.deferred.errback(CallFailed(
                f"call to {self.uri} failed: {response.code} "
                f"{response.phrase}", response.code))
            return
        ua = self.ua
        request = outcome.request
        contact = response.header("contact")
        try:
            remoteTarget = parseNameAddr(contact)[1] if contact else self.uri
        except URIError:
            remoteTarget = self.uri
        routeSet = list(reversed(response.values("record-route")))
        number = request.cseq()[0]
        self.dialog = dialog = Dialog(
            ua, request.callID, self.localTag, _tag(response.header("to")),
            ua.aor, self.uri, remoteTarget, routeSet, number)
        ua.addDialog(dialog)
        ack = dialog.newRequest("ACK", cseq=number)
        for key in ("authorization", "proxy-authorization"):
            if key in request.headers:
                ack.headers[key] = list(request.headers[key])
        flow = outcome.flow
        sent = ua._prepare(ack, flow, withContact=False)
        flow.send(sent)
        self.deferred.callback(self)


class IncomingCall(_CallMixin):
    """
    An INVITE received: L{answer} or L{reject} it.

    @ivar request: the INVITE.
    @ivar deferred: fires with this object when the ACK for the 2xx
        arrives.
    """

    def __init__(self, ua, request, transaction):
        self.ua = ua
        self.request = request
        self.transaction = transaction
        self.dialog = None
        self.deferred = defer.Deferred()
        self.localTag = newTag()
        ringing = responseTo(request, 180, toTag=self.localTag)
        transaction.respond(ringing)

    @property
    def caller(self):
        return self.request.header("from")

    def answer(self, sdp=STATIC_SDP):
        """
        Answer with C{200}, the static SDP as body.
        """
        ua = self.ua
        request = self.request
        response = responseTo(request, 200, toTag=self.localTag)
        flow = self.transaction.flow
        response.headers["contact"] = [formatNameAddr(ua.contactURI(flow))]
        if request.headers.get("record-route"):
            response.headers["record-route"] = list(
                request.headers["record-route"])
        if sdp:
            response.headers["content-type"] = ["application/sdp"]
            response.body = sdp.encode("utf-8")
        fromValue = request.header("from")
        display, remoteURI, _ = parseNameAddr(fromValue)
        contact = request.header("contact")
        remoteTarget = parseNameAddr(contact)[1] if contact else remoteURI
        self.dialog = dialog = _AnsweredDialog(
            self, ua, request.callID, self.localTag, _tag(fromValue),
            parseNameAddr(request.header("to"))[1], remoteURI, remoteTarget,
            list(request.values("record-route")), 0)
        ua.addDialog(dialog)
        self.transaction.respond(response)

    def reject(self, code=486, phrase="Busy Here"):
        self.transaction.respond(responseTo(self.request, code, phrase,
                                            toTag=self.localTag))


class _AnsweredDialog(Dialog):
    def __init__(self, call, *args):
        Dialog.__init__(self, *args)
        self._call = call

    def ackReceived(self, request):
        if not self._call.deferred.called:
            self._call.deferred.callback(self._call)


class Subscription:
    """
    A subscription to a user's events.

    A NOTIFY ending it with C{reason=deactivated} (the user moved to another
    home, RFC 6665 section 4.1.3) makes the client subscribe again at once,
    through its outbound proxy, at most L{MAX_RESUBSCRIBES} times in a row
    -- or, when C{onDeactivated} is set, calls it with the subscription
    instead.

    @ivar notifications: the NOTIFY requests received (the last 16).
    @ivar resubscribed: how many times it subscribed again.
    @ivar restarting: the L{Deferred} of the last new SUBSCRIBE (fires with
        this subscription, never fails), or L{None}.
    """

    MAX_RESUBSCRIBES = 3

    def __init__(self, ua, uri, event, expires):
        self.ua = ua
        self.uri = uri
        self.event = event
        self.expires = expires
        self.notifications = []
        self.onNotify = None
        self.onDeactivated = None
        self.dialog = None
        self.resubscribed = 0
        self.restarting = None

    def _terminated(self, state):
        reason = ""
        for param in state.split(";")[1:]:
            name, _, value = param.partition("=")
            if name.strip() == "reason":
                reason = value.strip()
        if reason != "deactivated":
            return
        if self.onDeactivated is not None:
            self.onDeactivated(self)
            return
        if self.resubscribed >= self.MAX_RESUBSCRIBES:
            self.ua.notify(Event("subscription-ended",
                                 f"subscription to {self.uri} deactivated "
                                 f"again: not resubscribing", uri=self.uri))
            return
        self.resubscribed += 1
        self.ua.notify(Event("resubscribe",
                             f"subscription to {self.uri} deactivated: "
                             f"subscribing again", uri=self.uri))
        self.restarting = d = self.start()
        d.addErrback(lambda f: self.ua.notify(Event(
            "subscription-ended", f"resubscribing failed: "
            f"{f.getErrorMessage()}", uri=self.uri)))

    @defer.inlineCallbacks
    def start(self):
        ua = self.ua
        self.localTag = newTag()
        request = ua.newRequest("SUBSCRIBE", self.uri, fromTag=self.localTag)
        request.headers["event"] = [self.event]
        request.headers["expires"] = [str(self.expires)]
        request.headers["accept"] = ["application/pidf+xml"]
        # The dialog exists as soon as a NOTIFY comes (possibly before the
        # 2xx): key it by Call-ID and our tag until the remote tag is known.
        # A (re-)subscription made while the agent logs in again waits for
        # the server it will be registered at.
        yield ua.whenLoggedIn()
        outcome = yield ua.send(request, ua.nextHop(self.uri))
        response = outcome.response
        if not 200 <= response.code < 300:
            raise ClientError(f"SUBSCRIBE to {self.uri} refused: "
                              f"{response.code} {response.phrase}")
        contact = response.header("contact")
        remoteTarget = parseNameAddr(contact)[1] if contact else self.uri
        self.dialog = dialog = _SubscriptionDialog(
            self, ua, outcome.request.callID, self.localTag,
            _tag(response.header("to")), ua.aor, self.uri, remoteTarget,
            list(reversed(response.values("record-route"))),
            outcome.request.cseq()[0])
        ua.addDialog(dialog)
        return self


    @defer.inlineCallbacks
    def refresh(self, expires=None):
        """
        Renew the subscription in its dialog (a SUBSCRIBE with the same
        Call-ID and tags), for C{expires} seconds (default: as before).

        @return: L{Deferred} firing with C{True} when the notifier accepted
            it (2xx), C{False} when it refused it, did not answer or there
            is no dialog (the dialog then ends: subscribe anew).
        """
        dialog = self.dialog
        if dialog is None or dialog.ended:
            return False
        if expires is not None:
            self.expires = expires
        request = dialog.newRequest("SUBSCRIBE")
        request.headers["event"] = [self.event]
        request.headers["expires"] = [str(self.expires)]
        request.headers["accept"] = ["application/pidf+xml"]
        try:
            outcome = yield self.ua.send(request, dialog.target())
        except Exception as e:
            dialog.end(f"subscription refresh failed: {e}")
            return False
        dialog.cseq = max(dialog.cseq, outcome.request.cseq()[0])
        code = outcome.response.code
        if 200 <= code < 300:
            return True
        dialog.end(f"subscription refresh refused: {code} "
                   f"{outcome.response.phrase}")
        return False


class _SubscriptionDialog(Dialog):
    def __init__(self, subscription, *args):
        Dialog.__init__(self, *args)
        self._subscription = subscription

    def requestReceived(self, request, transaction):
        if request.method != "NOTIFY":
            Dialog.requestReceived(self, request, transaction)
            return
        transaction.respond(responseTo(request, 200))
        subscription = self._subscription
        subscription.notifications = (subscription.notifications
                                      + [request])[-16:]
        if subscription.onNotify is not None:
            subscription.onNotify(request)
        state = (request.header("subscription-state") or "").lower()
        if state.startswith("terminated"):
            self.end("subscription terminated")
            subscription._terminated(state)
