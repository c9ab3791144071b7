# -*- test-case-name: tests.test_client_login -*-
"""
Logging in and staying registered: the client rules of the design.

L{Login} runs one login: it finds the servers (L{ServerLocator}: DNS per
RFC 3263, or the configured server URI), sends REGISTER to the first,
answers its Digest challenge, and then:

  - C{2xx}: registered; the server that answered becomes the outbound
    proxy of the user agent;
  - a C{301} whose C{Sipdist-Signature} verifies (see C{docs/auth.rst})
    and whose Contact names a server: the client follows it, and that
    server becomes its next (and, once it answers 2xx, its outbound) proxy;
  - a C{301} that does not verify (no signature, wrong signature, altered
    Contact, or no credentials were sent): I{ignored}.  The client does not
    go where it points; it treats the server that sent it as unusable and
    goes on with the next server it found (SRV failover); when there is none
    the login fails saying so;
  - a redirect to a server this login was already redirected I{from}
    (including the server that sends it): a loop; the login fails and the
    redirect is not followed;
  - a sixth redirect in one login (more than L{MAX_REDIRECTS}): the login
    fails;
  - a redirect received over TLS is followed over TLS only: to a C{sips:}
    or C{transport=tls} Contact (the server's certificate verified as
    for any TLS server), or to a name whose DNS records offer TLS.  A
    Contact that can only be reached over TCP or UDP fails the login
    rather than continue it in clear;
  - no answer (connection refused, transaction timeout) or C{503}: the next
    server found (failover); C{401}/C{407} after answering the server's own
    challenge: wrong credentials, the login fails; any other final response:
    the login fails with it.

A TLS server that cannot prove its identity fails the login at once, with
the reason (L{sipdist.client.tlscheck}).

L{Registration} keeps the user registered: it refreshes before the
registration expires (at half of it for short registrations, a minute
before for long ones); a redirect while refreshing means the user's home
has changed: the client treats itself as logged out and logs in again from
discovery; so does a refresh that gets no answer (the home server stopped
answering), or any other refusal.  Failed logins after that are retried
with growing, randomised delays (after a C{503} with C{Retry-After}, that
wait instead, with up to 10% of jitter), at most C{maxFailures} times in a
row; logins turned away with a C{Retry-After} are not counted among those
failures but retried for up to C{maxTurnedAway} seconds of waiting.
L{stop} unregisters (C{Expires: 0} on our own binding) and cancels every
timer.

It also learns that its home failed from the transport, without waiting
for the refresh: the loss of the TCP/TLS connection the registration lives
on, or an RFC 5626 keep-alive ping unanswered (pings every 80 to 100% of
the registrar's C{Flow-Timer}; a pong waiting to be read when the
deadline's timer fires, in a process busy past it, still counts).  It then
logs in again after a random wait, starting at the backup home the servers
named in a signed C{Sipdist-Backup} (see C{docs/client.rst}, I{A failed
home}).
"""

import random as _random

from twisted.internet import defer, task
from twisted.logger import Logger

from sipdist.auth.client import verifySignature
from sipdist.auth.signature import BACKUP_HEADER
from sipdist.client.events import ClientError, Event, NoAnswer
from sipdist.client.discovery import DiscoveryError, asURI
from sipdist.client.tlscheck import TLSFailure
from sipdist.sip.message import headerParams, newTag, parseNameAddr
from sipdist.sip.uri import URIError

MAX_REDIRECTS = 5
DEFAULT_EXPIRES = 3600
RETRY_DELAYS = (1, 2, 5, 10, 30, 60)
# A re-login the transport started (the home's connection lost, a
# keep-alive unanswered) waits a random time up to this first, so that the
# users of a failed home do not all arrive at once.
RELOGIN_JITTER = 2.0
# RFC 5626 section 4.4.1: keep-alives every 80 to 100% of the Flow-Timer;
# without one, every 95 to 120 s on a connection; a pong within 10 s.
DEFAULT_KEEPALIVE = (95.0, 120.0)
PONG_TIMEOUT = 10.0
# The longest Retry-After of a 503 the client waits for.
MAX_RETRY_AFTER = 600
# The longest a re-login goes on being turned away with Retry-After (the
# sum of the waits) before the registration gives up.
MAX_TURNED_AWAY = 900


class LoginFailed(ClientError):
    """
    A login did not end registered; C{str()} is the one-line reason.

    @ivar retryAfter: the longest C{Retry-After} (seconds) of the C{503}s
        the login met, or L{None}.
    """

    retryAfter = None


def retryAfter(response):
    """
    The seconds of a response's C{Retry-After} (RFC 3261 section 20.33:
    delta-seconds, then an optional comment and parameters), or L{None}.
    """
    value = response.header("retry-after")
    if not value:
        return None
    head = value.strip().split(";")[0].split("(")[0].strip()
    return int(head) if head.isdigit() else None


def registerSupported(request):
    """
    A REGISTER also lists C{outbound} (RFC 5626) in C{Supported}: the
    registrar then tells us its C{Flow-Timer}.
    """
    tags = ", ".join(request.values("supported") + ["outbound"])
    request.headers["supported"] = [tags]
    return request


def backupValue(response):
    """
    The one C{Sipdist-Backup} value of a response, or L{None} (none, or
    more than one).
    """
    values = response.headers.get(BACKUP_HEADER.lower(), [])
    return values[0] if len(values) == 1 else None


def verifiedBackup(outcome, contact):
    """
    Whether the response of C{outcome} is signed for the request it
    answers (over C{contact}, its Contact as received, for a redirect),
    and the backup home it names if the signature covers it: C{(verified,
    backup URI or None)}.  A backup the signature does not cover is never
    used.
    """
    response = outcome.response
    if outcome.session is None:
        return False, None
    args = (outcome.session, response.code, response.callID or "",
            response.header("cseq") or "", contact, response.headers)
    value = backupValue(response)
    if value is not None and verifySignature(*args, backup=value):
        try:
            return True, parseNameAddr(value)[1]
        except (URIError, ValueError):
            return True, None
    return verifySignature(*args), None


def signedBackup(outcome):
    """
    The backup home a signed 2xx names (and its signature covers), or
    L{None}.
    """
    if backupValue(outcome.response) is None:
        return None
    return verifiedBackup(outcome, None)[1]


def flowTimer(response):
    """
    The C{Flow-Timer} (RFC 5626 section 4.4.1) of a response, in seconds,
    or L{None}.
    """
    value = (response.header("flow-timer") or "").strip()
    return int(value) if value.isdigit() and int(value) > 0 else None


class LoginResult:
    """
    A successful login.

    @ivar target: the L{Target} that registered us (the outbound proxy).
    @ivar expires: the registration lifetime granted, in seconds.
    @ivar contact: the Contact value registered.
    @ivar redirects: the L{Target}s the login was redirected from, in order.
    @ivar callId: the Call-ID of the REGISTER requests.
    @ivar cseq: the CSeq number of the last REGISTER.
    @ivar flow: the flow the registration was made on, or L{None}.
    @ivar backup: the URI of the backup home the servers named (in a
        C{Sipdist-Backup} their signature covers), or L{None}.
    @ivar flowTimer: the registrar's C{Flow-Timer}, or L{None}.
    """

    def __init__(self, target, expires, contact, redirects, callId, cseq,
                 flow=None, backup=None, flowTimer=None):
        self.target = target
        self.expires = expires
        self.contact = contact
        self.redirects = redirects
        self.callId = callId
        self.cseq = cseq
        self.flow = flow
        self.backup = backup
        self.flowTimer = flowTimer


def grantedExpires(response, contact, requested):
    """
    The lifetime the registrar granted our binding: the C{expires}
    parameter of our Contact in the 2xx, else its C{Expires} header, else
    what we asked for.  A Contact that starts with our own C{<URI>}
    exactly is ours without parsing either.
    """
    values = response.values("contact")
    if isinstance(contact, str) and contact.startswith("<"):
        prefix = contact[:contact.find(">") + 1]
        for value in values if prefix else ():
            if value.startswith(prefix):
                expires = headerParams(value[len(prefix):]).get("expires")
                if expires and expires.isdigit():
                    return int(expires)
    try:
        ours = parseNameAddr(contact)[1] if isinstance(contact, str) \
            else None
    except (URIError, ValueError):
        ours = None
    for value in values if ours is not None else ():
        try:
            _, uri, params = parseNameAddr(value)
        except (URIError, ValueError):
            continue
        if (uri.username, uri.host, uri.port) == (
                ours.username, ours.host, ours.port):
            expires = params.get("expires")
            if expires and expires.isdigit():
                return int(expires)
    header = response.header("expires")
    if header and header.strip().isdigit():
        return int(header.strip())
    return requested


def refreshDelay(expires):
    """
    When to refresh a registration granted for C{expires} seconds.
    """
    if expires <= 120:
        return max(1.0, expires / 2)
    return expires - 60.0


class Login:
    """
    One login, from discovery to a 2xx (see the module docstring).

    @param ua: the L{sipdist.client.core.UserAgent}.
    @param locator: a L{sipdist.client.discovery.ServerLocator}.
    @param server: the server to start from (a configured outbound proxy or
        C{--server} URI); L{None}: the domain of the AOR, by DNS.
    @param expires: the registration lifetime asked for.
    @param backup: the URI of a backup home to try first (the user's home
        was lost); when it cannot be reached (no answer, connection
        refused) the login goes on from C{server} or DNS as usual.
    @param backupSecure: reach the backup over TLS only.
    """

    _log = Logger()

    def __init__(self, ua, locator, server=None, expires=DEFAULT_EXPIRES,
                 maxRedirects=MAX_REDIRECTS, backup=None, backupSecure=False):
        self.ua = ua
        self.locator = locator
        self.server = server
        self.expires = expires
        self.maxRedirects = maxRedirects
        self.backup = backup
        self.backupSecure = backupSecure

    def _emit(self, kind, text, **fields):
        self.ua.notify(Event(kind, text, **fields))

    @defer.inlineCallbacks
    def _find(self, uri, why, secure=False):
        try:
            if secure:
                targets = yield self.locator.findServers(
                    uri, transports=("TLS",))
            else:
                targets = yield self.locator.findServers(uri)
        except DiscoveryError as e:
            raise LoginFailed(f"{why}: {e}") from None
        return targets

    @defer.inlineCallbacks
    def run(self):
        """
        @return: L{Deferred} firing with a L{LoginResult}, failing with
            L{LoginFailed}.  Requests out of dialogs that the agent is asked
            to send meanwhile wait for it (L{UserAgent.whenLoggedIn}).
        """
        ua = self.ua
        ua.loginStarted()
        target = None
        try:
            result = yield self._run()
            target = result.target
            return result
        finally:
            ua.loginEnded(target)

    @defer.inlineCallbacks
    def _discover(self):
        ua = self.ua
        if self.server is not None:
            start = asURI(self.server)
            self._emit("discovering", f"using the configured server {start}",
                       uri=start)
        else:
            start = asURI(f"sip:{ua.domain}")
            self._emit("discovering",
                       f"looking up SIP servers of {ua.domain} "
                       f"(NAPTR, SRV, A/AAAA)", uri=start)
        candidates = yield self._find(start, "server discovery failed")
        self._emit("discovered", "servers: " + ", ".join(
            str(t) for t in candidates), targets=list(candidates))
        return candidates

    @defer.inlineCallbacks
    def _backupTargets(self):
        """
        The targets of the backup home, or none when its name does not
        resolve (the login then starts from discovery).
        """
        uri = asURI(self.backup)
        self._emit("discovering", f"going straight to the backup home {uri}",
                   uri=uri)
        try:
            targets = yield self._find(uri, "the backup home cannot be found",
                                       self.backupSecure)
        except LoginFailed as e:
            self._emit("no-answer", str(e))
            return []
        if self.backupSecure:
            targets = [t for t in targets if t.transport == "TLS"]
        return targets

    @defer.inlineCallbacks
    def _run(self):
        ua = self.ua
        fallback = self.backup is not None
        if fallback:
            candidates = yield self._backupTargets()
        else:
            candidates = yield self._discover()

        callId = f"{newTag()}{newTag()}@sipdist"
        cseq = 1
        redirectedFrom = []
        lastProblem = None
        lastRetryAfter = None
        backup = None
        registrar = asURI(f"sip:{ua.domain}")
        while True:
            if not candidates and fallback and not redirectedFrom:
                # The backup home did not answer: from the start, as usual.
                fallback = False
                candidates = yield self._discover()
            if not candidates:
                break
            target = candidates.pop(0)
            self._emit("trying", f"REGISTER {ua.aor} at {target}",
                       target=target)
            request = ua.newRequest("REGISTER", registrar, to=ua.aor,
                                    callId=callId, cseq=cseq)
            registerSupported(request)
            request.headers["expires"] = [str(self.expires)]
            try:
                outcome = yield ua.send(request, target)
            except TLSFailure as e:
                raise LoginFailed(str(e)) from None
            except NoAnswer as e:
                lastProblem = str(e)
                self._emit("no-answer", f"{e}; trying the next server"
                           if candidates else str(e), target=target)
                continue
            cseq = outcome.request.cseq()[0] + 1
            response = outcome.response
            code = response.code
            # The backup answered: whatever it said (a 503 with Retry-After
            # included), the login does not fall back on discovery.
            fallback = False
            if 200 <= code < 300:
                contact = outcome.request.header("contact")
                expires = grantedExpires(response, contact, self.expires)
                via = (f" after {len(redirectedFrom)} redirect(s)"
                       if redirectedFrom else "")
                self._emit("registered",
                           f"registered at {target} for {expires} s{via}",
                           target=target, expires=expires)
                return LoginResult(target, expires, contact,
                                   list(redirectedFrom), callId, cseq - 1,
                                   flow=outcome.flow,
                                   backup=signedBackup(outcome) or backup,
                                   flowTimer=flowTimer(response))
            if code == 301:
                redirect = yield self._redirect(outcome, redirectedFrom)
                if redirect is None:
                    lastProblem = (f"the redirect from {target} was ignored "
                                   f"(its signature does not verify)")
                    continue
                candidates, backup = redirect
                continue
            if code in (401, 407):
                raise LoginFailed(
                    f"authentication failed at {target}: {code} "
                    f"{response.phrase} (wrong user name or password?)")
            if code == 503 or code == 408:
                lastProblem = f"{target} answered {code} {response.phrase}"
                after = retryAfter(response) if code == 503 else None
                if after is not None:
                    lastProblem += f" (retry after {after} s)"
                    lastRetryAfter = max(after, lastRetryAfter or 0)
                self._emit("no-answer", lastProblem, target=target,
                           retryAfter=after)
                continue
            raise LoginFailed(f"{target} refused the registration: {code} "
                              f"{response.phrase}")
        failure = LoginFailed(f"login failed: {lastProblem}")
        failure.retryAfter = lastRetryAfter
        raise failure

    @defer.inlineCallbacks
    def _redirect(self, outcome, redirectedFrom):
        """
        Check a 301: C{None} if it is to be ignored, else the targets to go
        to and the backup home it names (or L{None}); raise L{LoginFailed}
        for a loop or too many redirects.
        """
        response = outcome.response
        target = outcome.target
        contacts = response.values("contact")
        contact = response.header("contact")
        verified, backup = False, None
        if contact is not None and len(contacts) == 1:
            verified, backup = verifiedBackup(outcome, contact)
        if not verified:
            self._emit("redirect-ignored",
                       f"redirect from {target} to {contact} ignored: its "
                       f"signature does not verify", target=target,
                       contact=contact)
            return None
        try:
            uri = parseNameAddr(contacts[0])[1]
        except (URIError, ValueError):
            self._emit("redirect-ignored",
                       f"redirect from {target} ignored: bad Contact "
                       f"{contact!r}", target=target, contact=contact)
            return None
        redirectedFrom.append(target)
        if len(redirectedFrom) > self.maxRedirects:
            raise LoginFailed(
                f"more than {self.maxRedirects} redirects in one login (the "
                f"last from {target} to {uri}): giving up")
        secure = target.transport == "TLS"
        targets = yield self._find(uri, f"the redirect from {target} to "
                                        f"{uri} cannot be followed", secure)
        if secure:
            targets = [t for t in targets if t.transport == "TLS"]
            if not targets:
                raise LoginFailed(
                    f"the redirect from {target} to {uri} would continue a "
                    f"TLS login without TLS: not following it")
        seen = {t.address for t in redirectedFrom}
        for candidate in targets:
            if candidate.address in seen:
                raise LoginFailed(
                    f"redirect loop: {target} redirects to {uri}, which "
                    f"already redirected this login; not following it")
        also = f"; backup home {backup}" if backup is not None else ""
        self._emit("redirect",
                   f"redirected by {target} to {uri} (signature verified)"
                   f"{also}", target=target, uri=uri, targets=list(targets),
                   backup=backup)
        return targets, backup


class Registration:
    """
    Keep a user registered (see the module docstring).

    @ivar state: C{"idle"}, C{"logging-in"}, C{"registered"}, C{"stopped"}
        or C{"failed"}.
    @ivar result: the L{LoginResult} of the last successful login.
    @ivar failed: a L{Deferred} failing with L{LoginFailed} when the
        registration is lost for good (C{maxFailures} logins in a row
        failed).
    @ivar logins: how many logins succeeded.
    @ivar watch: with C{watchRegistration}, the subscription to the user's
        own C{reg} event (RFC 3680) at its home, or L{None}.
    """

    _log = Logger()

    def __init__(self, ua, locator, server=None, expires=DEFAULT_EXPIRES,
                 maxRedirects=MAX_REDIRECTS, retryDelays=RETRY_DELAYS,
                 maxFailures=10, watchRegistration=False,
                 reloginJitter=RELOGIN_JITTER, keepAlive=True,
                 pongTimeout=PONG_TIMEOUT, maxRetryAfter=MAX_RETRY_AFTER,
                 random=None, maxTurnedAway=MAX_TURNED_AWAY):
        """
        @param watchRegistration: after each login, subscribe to the user's
            own registration state (the C{reg} event, RFC 3680).  When the
            home ends that subscription because the user was moved to
            another home (C{reason=deactivated}), refresh at once: the old
            home answers with its signed C{301} and the client logs in at
            the new home, without waiting for its refresh timer.
        @param retryDelays: the caps of the waits between failed logins;
            each wait is a random time between half the cap and the cap
            (RFC 5626 section 4.5), or the server's C{Retry-After} when
            longer (at most C{maxRetryAfter}).
        @param reloginJitter: a login started by the transport (the
            connection to the home lost, a keep-alive unanswered) waits a
            random time up to this many seconds first.
        @param keepAlive: on a TCP or TLS registration, send RFC 5626
            keep-alives (every 80 to 100% of the registrar's C{Flow-Timer},
            else of 95 to 120 s); a pong not received within C{pongTimeout}
            seconds is a lost home.
        @param random: a L{random.Random} (tests give their own).
        @param maxTurnedAway: logins turned away with a C{503} and
            C{Retry-After} are not failures counted against
            C{maxFailures}; the registration gives up once it would have
            waited more than this many seconds on them since the last
            other failure.
        """
        self.ua = ua
        self.locator = locator
        self.server = server
        self.expires = expires
        self.maxRedirects = maxRedirects
        self.retryDelays = tuple(retryDelays)
        self.maxFailures = maxFailures
        self.state = "idle"
        self.result = None
        self.logins = 0
        self.failed = defer.Deferred()
        self.watchRegistration = watchRegistration
        self.watch = None
        self.reloginJitter = reloginJitter
        self.keepAlive = keepAlive
        self.pongTimeout = pongTimeout
        self.maxRetryAfter = maxRetryAfter
        self.maxTurnedAway = maxTurnedAway
        self._random = random or _random.Random()
        self._timer = None
        self._waiting = None
        # The flow the registration lives on while we watch it, and the
        # keep-alive timer on it (ping, or pong deadline).
        self._flow = None
        self._pingTimer = None
        self._pingSent = None
        self._pingTries = 0
        # Whether the pong's deadline has passed and the reactor is given
        # one more turn to read it.
        self._pongLastLook = False
        # A re-login the transport asked for, waiting for its jitter.
        self._rehoming = None

    def _emit(self, kind, text, **fields):
        self.ua.notify(Event(kind, text, **fields))

    def _login(self, backup=None, backupSecure=False):
        self.state = "logging-in"
        login = Login(self.ua, self.locator, self.server, self.expires,
                      self.maxRedirects, backup=backup,
                      backupSecure=backupSecure)
        return login.run()

    @defer.inlineCallbacks
    def start(self):
        """
        The first login.

        @return: L{Deferred} firing with the L{LoginResult}, failing with
            L{LoginFailed}.
        """
        try:
            result = yield self._login()
        except LoginFailed:
            self.state = "failed"
            raise
        self._registered(result)
        return result

    def _registered(self, result):
        if self.state == "stopped":
            return
        self.result = result
        self.logins += 1
        self.state = "registered"
        self._schedule(result.expires)
        self._watchFlow(result.flow)
        if self.watchRegistration:
            self._watch()

    # The flow to the home: its loss, and RFC 5626 keep-alives.

    def _watchFlow(self, flow):
        """
        Watch the flow the registration was made (or refreshed) on: its
        loss, and, on a connection, the keep-alives.
        """
        if flow is self._flow:
            return
        self._unwatchFlow()
        if flow is None:
            return
        if getattr(flow, "reliable", False):
            if not flow.addLostCallback(self._flowLost):
                self._flowFailed(flow, "the connection to the home is closed")
                return
        elif not (self.result.flowTimer and hasattr(flow, "sendKeepAlive")):
            # Over UDP, STUN keep-alives only for a registrar that asked
            # for them with its Flow-Timer.
            return
        self._flow = flow
        self._schedulePing()

    def _unwatchFlow(self):
        flow, self._flow = self._flow, None
        if flow is not None and getattr(flow, "reliable", False):
            flow.removeLostCallback(self._flowLost)
        self._cancelPing()

    def _cancelPing(self):
        if self._pingTimer is not None and self._pingTimer.active():
            self._pingTimer.cancel()
        self._pingTimer = None
        self._pingSent = None

    def keepAliveInterval(self):
        """
        The seconds until the next keep-alive: 80 to 100% of the
        registrar's C{Flow-Timer}, else 95 to 120 s (RFC 5626 section
        4.4.1); L{None} when keep-alives are off.
        """
        if not self.keepAlive:
            return None
        timer = self.result.flowTimer if self.result is not None else None
        if timer:
            return self._random.uniform(0.8 * timer, timer)
        return self._random.uniform(*DEFAULT_KEEPALIVE)

    def _schedulePing(self):
        self._cancelPing()
        interval = self.keepAliveInterval()
        if interval is None:
            return
        self._pingTimer = self.ua._reactor.callLater(interval, self._ping)

    def _ping(self):
        self._pingTimer = None
        flow = self._flow
        if flow is None:
            return
        if not flow.sendKeepAlive():
            self._flowFailed(flow, "the connection to the home is closed")
            return
        self._pingSent = self.ua._reactor.seconds()
        self._pingTries = 1
        self._pongLastLook = False
        self._awaitPong()

    def _awaitPong(self):
        """
        Wait for the pong: on a connection until the pong timeout; over
        UDP, sending the STUN request again after 0.5, 1.5, 3.5 ... s (RFC
        5389 section 7.2.1) within it.
        """
        flow, sent = self._flow, self._pingSent
        left = sent + self.pongTimeout - self.ua._reactor.seconds()
        if flow.reliable:
            step = left
        else:
            step = min(left, 0.5 * (2 ** self._pingTries - 1) - (
                self.pongTimeout - left))
        self._pingTimer = self.ua._reactor.callLater(max(step, 0),
                                                     self._pongDue)

    def _pongDue(self):
        self._pingTimer = None
        flow, sent = self._flow, self._pingSent
        if flow is None:
            return
        last = flow.lastReceived
        if last is not None and last >= sent:
            self._pingSent = None
            self._schedulePing()
            return
        if self.ua._reactor.seconds() >= sent + self.pongTimeout:
            if not self._pongLastLook:
                # The verdict after one more turn of the reactor: it runs
                # timers before reading what has arrived, so a process
                # that was busy past the deadline would otherwise take a
                # pong waiting to be read for none (and leave a home that
                # answered, for its backup).
                self._pongLastLook = True
                self._pingTimer = self.ua._reactor.callLater(0,
                                                             self._pongDue)
                return
            self._pingSent = None
            self._flowFailed(flow, f"no keep-alive pong from the home within "
                                   f"{self.pongTimeout:g} s")
            return
        flow.sendKeepAlive()
        self._pingTries += 1
        self._awaitPong()

    def _flowLost(self, flow):
        if flow is not self._flow and getattr(self._flow, "_flow",
                                              None) is not flow:
            return
        self._flowFailed(flow, "the connection to the home was lost")

    def _flowFailed(self, flow, reason):
        """
        The home is gone (RFC 5626 section 4.4: a flow failure): log in
        again after a random wait, at the backup home first.
        """
        self._unwatchFlow()
        if self.state != "registered" or self._rehoming is not None:
            return
        if getattr(flow, "connected", False):
            flow.close()
        delay = self._random.uniform(0, self.reloginJitter)
        target = self.result.target
        self._cancelTimer()
        self._emit("flow-failed", f"{reason} ({target}): logging in again in "
                   f"{delay:.1f} s", target=target, delay=delay)
        self._rehoming = self.ua._reactor.callLater(delay, self._rehome)

    def _rehome(self):
        self._rehoming = None
        if self.state != "registered":
            return
        backup = self.result.backup
        self._emit("relogin", f"the home {self.result.target} is lost: "
                   + (f"going to the backup home {backup}" if backup is not None
                      else "logging in again from discovery"),
                   target=self.result.target, backup=backup)
        self._relogin(backup=backup,
                      backupSecure=self.result.target.transport == "TLS")

    def _watch(self):
        """
        Subscribe to our own registration state at the home we just
        registered at.
        """
        d = self.ua.subscribe(self.ua.aor, event="reg",
                              expires=max(self.result.expires, 60))

        def watching(subscription):
            subscription.onDeactivated = self._deactivated
            self.watch = subscription
            return subscription

        def notWatching(failure):
            self._emit("watch-failed", f"cannot watch the registration: "
                       f"{failure.getErrorMessage()}")

        d.addCallbacks(watching, notWatching)

    @defer.inlineCallbacks
    def _renewWatch(self):
        """
        Renew the registration watch with the registration, for as long:
        the notifier ends a subscription that is not renewed when it
        expires.  A renewal refused (or a watch that failed before) makes
        a new subscription.
        """
        watch = self.watch
        expires = max(self.result.expires, 60)
        if watch is not None:
            renewed = yield watch.refresh(expires)
            if self.watch is not watch or self.state != "registered":
                return
            if renewed:
                self._emit("watch-renewed", f"registration watch renewed "
                           f"for {expires} s", expires=expires)
                return
            self.watch = None
            self._emit("watch-failed", "the registration watch was not "
                       "renewed: subscribing again")
        self._watch()

    def _deactivated(self, subscription):
        if subscription is not self.watch or self.state != "registered":
            return
        self.watch = None
        self._emit("deactivated", "the home ended our registration watch "
                   "(we were moved): refreshing now")
        self.refresh()

    def _schedule(self, expires):
        self._cancelTimer()
        self._timer = self.ua._reactor.callLater(refreshDelay(expires),
                                                 self._timedRefresh)

    def _cancelTimer(self):
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _timedRefresh(self):
        self._timer = None
        self.refresh()

    def _registerRequest(self, expires):
        ua = self.ua
        result = self.result
        result.cseq += 1
        request = ua.newRequest("REGISTER", asURI(f"sip:{ua.domain}"),
                                to=ua.aor, callId=result.callId,
                                cseq=result.cseq)
        registerSupported(request)
        request.headers["expires"] = [str(expires)]
        return request

    @defer.inlineCallbacks
    def refresh(self):
        """
        Refresh the registration now (the timer calls this).

        @return: L{Deferred} firing when the refresh, or the new login it
            led to, is over.
        """
        if self.state != "registered" or self._rehoming is not None:
            return
        self._cancelTimer()
        target = self.result.target
        request = self._registerRequest(self.expires)
        try:
            outcome = yield self.ua.send(request, target)
        except (NoAnswer, TLSFailure) as e:
            if self.state != "registered" or self._rehoming is not None:
                return
            self._emit("relogin", f"the home server {target} stopped "
                       f"answering ({e}): logging in again from discovery",
                       target=target)
            yield self._relogin()
            return
        if self.state != "registered" or self._rehoming is not None:
            return
        response = outcome.response
        self.result.cseq = outcome.request.cseq()[0]
        code = response.code
        if 200 <= code < 300:
            expires = grantedExpires(response,
                                     outcome.request.header("contact"),
                                     self.expires)
            self.result.expires = expires
            self.result.flowTimer = flowTimer(response)
            self.result.backup = (signedBackup(outcome)
                                  or self.result.backup)
            self._emit("refreshed", f"refreshed at {target} for {expires} s",
                       target=target, expires=expires)
            self._schedule(expires)
            self._watchFlow(outcome.flow)
            if self.watchRegistration:
                yield self._renewWatch()
            return
        if 300 <= code < 400:
            self._emit("relogin", f"redirected by {target} while refreshing "
                       f"({code} to {response.header('contact')}): logged "
                       f"out, logging in again from discovery",
                       target=target, code=code)
        elif code == 503 and retryAfter(response) is not None:
            wait = self._retryAfterWait(retryAfter(response))
            self._emit("relogin", f"refresh refused by {target}: {code} "
                       f"{response.phrase}; logging in again in {wait:.1f} s "
                       f"(Retry-After)", target=target, code=code, delay=wait)
            yield self._relogin(wait=wait)
            return
        else:
            self._emit("relogin", f"refresh refused by {target}: {code} "
                       f"{response.phrase}; logging in again from discovery",
                       target=target, code=code)
        yield self._relogin()

    def retryDelay(self, failures, error=None):
        """
        The wait after C{failures} failed logins in a row.  When the last
        login was turned away with a C{Retry-After} (RFC 3261 section
        21.5.4), the server's word: that many seconds (at most
        C{maxRetryAfter}), plus up to 10% so that the clients it turned
        away together do not come back together; the backoff of failures
        in a row is not added to it, nor does it replace it when longer.
        Otherwise (RFC 5626 section 4.5) a random time between half and
        all of the cap C{retryDelays} gives for that count (the last cap
        thereafter).
        """
        after = getattr(error, "retryAfter", None)
        if after:
            return self._retryAfterWait(after)
        cap = self.retryDelays[min(failures, len(self.retryDelays)) - 1]
        return self._random.uniform(cap / 2.0, cap)

    def _retryAfterWait(self, after):
        """
        The wait for a C{Retry-After} of C{after} seconds: at most
        C{maxRetryAfter}, plus up to 10% of jitter.
        """
        after = min(after, self.maxRetryAfter)
        return self._random.uniform(after, after * 1.1)

    @defer.inlineCallbacks
    def _relogin(self, backup=None, backupSecure=False, wait=None):
        """
        Log in again until it works: at most C{maxFailures} failed logins
        in a row, not counting those turned away with a C{Retry-After}
        (the server is there and said when to come back), which are
        retried for up to C{maxTurnedAway} seconds of waiting since the
        last other failure.  The first login starts at C{backup} when
        given (and so do the retries: a backup that does not answer falls
        back on discovery within each login), after C{wait} seconds when
        given.
        """
        self.ua.outboundProxy = None
        self._unwatchFlow()
        failures = 0
        # Seconds waited, since the last other failure, because servers
        # turned the logins away with a Retry-After.
        turnedAway = 0.0
        if wait:
            self.state = "logging-in"
            if not (yield self._pause(wait)):
                return
        while self.state not in ("stopped", "failed"):
            try:
                result = yield self._login(backup, backupSecure)
            except LoginFailed as e:
                if self.state == "stopped":
                    return
                if e.retryAfter:
                    # Turned away for now, not refused: the server said
                    # when to come back.
                    delay = self._retryAfterWait(e.retryAfter)
                    if turnedAway + delay > self.maxTurnedAway:
                        self._giveUp(f"giving up after being turned away "
                                     f"for {turnedAway:.0f} s: {e}")
                        return
                    turnedAway += delay
                else:
                    failures += 1
                    turnedAway = 0.0
                    if failures >= self.maxFailures:
                        self._giveUp(f"giving up after {failures} failed "
                                     f"logins: {e}")
                        return
                    delay = self.retryDelay(failures, e)
                self._emit("retry", f"{e}; trying again in {delay:.1f} s",
                           delay=delay)
                if not (yield self._pause(delay)):
                    return
                continue
            self._registered(result)
            return

    def _giveUp(self, reason):
        self.state = "failed"
        self._emit("failed", reason)
        self.failed.errback(LoginFailed(reason))

    @defer.inlineCallbacks
    def _pause(self, delay):
        """
        Wait C{delay} seconds; C{False} if L{stop} ended the wait.
        """
        self._waiting = task.deferLater(self.ua._reactor, delay,
                                        lambda: None)
        try:
            yield self._waiting
        except defer.CancelledError:
            return False
        finally:
            self._waiting = None
        return True

    @defer.inlineCallbacks
    def stop(self):
        """
        Unregister (when registered) and stop every timer.

        @return: L{Deferred} firing when done; never fails.
        """
        # A home whose connection was lost is not asked to unregister.
        wasRegistered = self.state == "registered" and self._rehoming is None
        self.state = "stopped"
        self._cancelTimer()
        self._unwatchFlow()
        if self._rehoming is not None and self._rehoming.active():
            self._rehoming.cancel()
        self._rehoming = None
        if self._waiting is not None:
            self._waiting.cancel()
        if not wasRegistered or self.result is None:
            return
        target = self.result.target
        request = self._registerRequest(0)
        contact = self.result.contact
        if contact:
            request.headers["contact"] = [contact + ";expires=0"]
        try:
            outcome = yield self.ua.send(request, target)
        except (ClientError, TLSFailure) as e:
            self._emit("unregister-failed", f"cannot unregister: {e}")
            return
        code = outcome.response.code
        if 200 <= code < 300:
            self._emit("unregistered", f"unregistered at {target}",
                       target=target)
        else:
            self._emit("unregister-failed", f"unregister refused by {target}:"
                       f" {code} {outcome.response.phrase}")
