# -*- test-case-name: tests.test_fastredirect -*-
"""
The fast path of the commonest authenticated request a distributor
receives: the second REGISTER of a login, over UDP, with valid Digest
credentials, from a client that talks to us directly and follows the
distribution redirect, which the full path answers with the signed C{301}
naming the user's home.

L{sipdist.roles.fastchallenge.FastChallenge} scans the datagram (the same
plain REGISTER it answers with a C{401}, plus one C{Authorization} written
plainly and a C{Supported} list of option tags) and hands a request that
carries credentials to L{FastRedirect}, which answers it only when every
step of the full path is sure to end in that C{301}, and decides so before
it changes anything:

  - the credentials: one Digest value for our realm and this Request-URI,
    no parameter beyond those of RFC 7616 that we use (C{username},
    C{realm}, C{nonce}, C{uri}, C{response}, C{algorithm}, C{cnonce},
    C{qop}, C{nc}), any accepted algorithm (C{MD5}, C{SHA-256} and their
    C{-sess} forms), the nonce ours and not stale, its count fresh (the
    table of counts taking it as on the full path: a full set of it by
    evicting the nonce issued first), no failure counted for the user
    from that address (the limiter), the HA1 at hand without I/O (a
    credential source with C{cachedHA1}) and the response right;
  - the To naming the user itself, without a port;
  - the user's assignment at hand without I/O (a store with
    C{answersAtOnce}), its server known, and L{sipdist.decision.decide}
    saying L{Redirect} (a client that follows it, one Via), to a server
    with a UDP URI; no handover nor standby (the home role's).

The C{301} is answered statelessly, as the full path answers it (RFC 3261
section 8.2.7; L{sipdist.roles.distribution.DistributionProcessor._redirect}):
no record is kept for timer J, the table of nonce counts keeps the
request's fingerprint with its count, and a retransmission of the request,
whose count is then used already, is recognised by it
(L{sipdist.auth.nonce.NonceCounts.repeated}) and answered again the same
way, To tag included (L{sipdist.auth.server.Authenticated.tag}).

Then it does what the full path does, with the same result: the counters
(transactions created, authentication outcomes, nonce count, limiter,
store lookups answered at once, redirects), the backup home
(L{DistributionProcessor.backupValue}, the same remembered table), the
decision event when decisions are logged, and the response's bytes: the
Via as the transport rewrites it, From, To with a fresh tag, Call-ID, CSeq,
C{Server}, C{Contact}, C{Sipdist-Backup} and the signature headers
(L{DigestAuthenticator.sign}).  Anything else (a wrong password, a stale
nonce, a replayed count, a user unknown, unassigned or assigned to a server
that is down, a client proxied rather than redirected, a cache miss) goes
down the full path with nothing changed, which answers it and counts it as
it always did.  C{tests/test_fastredirect.py} runs both paths over a corpus
and compares.
"""

from twisted.internet.defer import Deferred

from sipdist.auth.digest import DigestParseError
from sipdist.auth.interfaces import ISIPIdentity
from sipdist.auth.credentials import DigestHashChecker
from sipdist.auth.nonce import VALID
from sipdist.auth.server import Authenticated, statelessTag
from sipdist.decision import (
    REDIRECT_OPTION_TAG, Assignment, Redirect, decide)
from sipdist.deferreds import NOT_FIRED, firedResult
from sipdist.roles.distribution import (
    agentFollows, fingerprint as requestFingerprint)
from sipdist.sip import message as _message
from sipdist.sip.message import parseNameAddr
from sipdist.store import serverURIFor

# The Digest parameters a plain answer to our challenge carries.
# _onlyKnown counts them one by one; tests/test_fastscan.py holds the two
# together.
_KNOWN_PARAMETERS = frozenset((
    "username", "realm", "nonce", "uri", "response", "algorithm", "cnonce",
    "qop", "nc"))
_CALL_ID = len(b"Call-ID: ")
_CSEQ = len(b"CSeq: ")
_SUPPORTED = len(b"Supported: ")
_USER_AGENT = len(b"User-Agent: ")
_ROUTE = len(b"Route: ")
_TO = len(b"To: ")


def _onlyKnown(params):
    """
    Whether the Digest parameters C{params} (a L{dict}) are all of
    C{_KNOWN_PARAMETERS}: it holds as many of those names as it has keys.
    Each name is looked up: C{frozenset.issuperset} of a dictionary makes
    a set of its keys first, 684 ns a request on PyPy against 189 (it is
    the other way on CPython, 524 against 706: the fast path is PyPy's
    way to Kamailio's figure, CPython's is far from it either way).
    """
    return (("username" in params) + ("realm" in params)
            + ("nonce" in params) + ("uri" in params)
            + ("response" in params) + ("algorithm" in params)
            + ("cnonce" in params) + ("qop" in params)
            + ("nc" in params)) == len(params)


def answer(status, viaText, values, headers, tag=None):
    """
    The bytes of a fast path's answer to a scanned request, as the full
    path writes them: the status line (C{"301 Moved Permanently"}), the
    Via as the transport rewrote it, the request's From, its To with
    C{tag} (a fresh one by default), its Call-ID and CSeq, then
    C{headers} (lines without their end) and a Content-Length of 0.
    """
    return b"\r\n".join((
        f"SIP/2.0 {status}\r\nVia: {viaText}".encode("ascii"),
        values[b"From"],
        values[b"To"] + b";tag="
        + (tag or _message.newTag()).encode("ascii"),
        values[b"Call-ID"],
        values[b"CSeq"],
        "\r\n".join(headers).encode("utf-8"),
        b"Content-Length: 0\r\n\r\n"))


def listsTag(supported, tag):
    """
    Whether a C{Supported} line as the scan takes it (C{b"Supported: "},
    then option tags separated by C{","} or C{", "}) lists the option tag
    C{tag} (lower-case bytes), in any case: the test of a set of its tags,
    made with bytes operations and no loop over the tags (on PyPy a loop on
    every request's path is a frame made for each).
    """
    tags = supported[_SUPPORTED:].replace(b" ", b"").lower()
    return b"," + tag + b"," in b"," + tags + b","


REDIRECT_TAG = REDIRECT_OPTION_TAG.lower().encode("ascii")


def signedHeaders(backup, signature):
    """
    The header lines that end a signed answer: the C{Sipdist-Backup}
    value, if any, then the signature's two headers (which cover it:
    L{sipdist.auth.server.DigestAuthenticator.sign}).
    """
    # Written out, no loop: on PyPy a loop here would be a frame made for
    # every answer.
    (info, infoValue), (name, value) = signature
    lines = [f"{info}: {infoValue}", f"{name}: {value}"]
    if backup is None:
        return lines
    return [f"Sipdist-Backup: {backup}"] + lines


def noteRoute(proxy, line, flow):
    """
    What the route-set link (L{sipdist.services.proxy.Proxy.routeInDialog})
    does with a REGISTER's lone C{Route} of the scan's pattern,
    C{<sip:HOST[:PORT];lr>}, before the request goes on as a new one (its
    C{Route} dropped): when it names us (a client that has us as its
    outbound proxy), an unsealed entry counted and logged at debug level;
    otherwise nothing.

    @param line: the C{Route} header line, or L{None} for none.
    @param flow: the request's flow.
    """
    if line is None:
        return
    uri = parseNameAddr(line[_ROUTE:].decode("ascii"))[1]
    if proxy.isOwnURI(uri):
        proxy.unsealed += 1
        proxy._log.debug("{method} from {flow} not relayed: {reason}",
                         method="REGISTER", flow=flow,
                         reason="Route entry not made by the pool")


def _atOnce(d):
    """
    The result of a store's Deferred that has fired with a success, else
    L{NOT_FIRED} (a failure is consumed: the full path asks again).
    """
    result = firedResult(d)
    if result is NOT_FIRED and isinstance(d, Deferred):
        d.addErrback(lambda failure: None)
    return result


class Checked:
    """
    What L{FastAuthenticated.check} established of a request: its
    credentials good, its user's assignment at hand, the decision
    (C{outcome}) for it.
    """

    __slots__ = ("credentials", "identity", "nonce", "issued", "nc", "host",
                 "limiter", "counts", "serverId", "record", "follows",
                 "outcome", "fingerprint")


class FastPart:
    """
    A part of the byte-level fast path of a store role's UDP ports.

    @ivar taken: how many requests it answered.
    """

    def __init__(self, service, processor):
        """
        @param service: the L{sipdist.server.ServerService}.
        @param processor: the role's
            L{sipdist.roles.distribution.DistributionProcessor}.
        """
        self._server = service.server
        self._transactions = service.transactions
        self._processor = processor
        self._authenticator = processor.authenticator
        self.taken = 0


class FastAuthenticated(FastPart):
    """
    The steps of the full path that every fast answer to an authenticated
    REGISTER shares (see the module): the credentials, the identity, the
    assignment and whether the client follows the redirect, checked
    without changing anything.  A subclass answers (L{FastRedirect} on a
    distributor, L{sipdist.roles.fastregister.FastRegister} on a home).

    @ivar code: the status code of its answers.
    @ivar stateless: whether it answers statelessly (RFC 3261 section
        8.2.7): a request it answered comes back, when retransmitted, as a
        C{repeat} of its nonce count (see L{check}), and gets the same
        answer again.
    """

    code = None
    stateless = False

    def possible(self):
        """
        Whether this server may answer any request this way: credentials
        from a source that has C{cachedHA1}, a store that has
        C{answersAtOnce}.
        """
        processor = self._processor
        checker = self._authenticator._checker
        return (type(checker) is DigestHashChecker
                and hasattr(checker.source, "cachedHA1")
                and hasattr(processor.store, "answersAtOnce"))

    def check(self, addr, uriText, values, flow, key):
        """
        Check a scanned REGISTER as the full path would, up to the
        decision, changing nothing.

        @param addr: where it came from.
        @param flow: its transaction's L{DatagramFlow}.
        @param key: its transaction's key.
        @param uriText: its Request-URI, as written.
        @param values: its header lines by name (the L{re.Match} of the Via
            value for C{Via}, the Digest parameters as C{(name, value)}
            pairs for C{Authorization}).
        @return: a L{Checked}; or L{None} when the full path may answer
            otherwise or needs I/O.
        """
        processor = self._processor
        authenticator = self._authenticator
        checker = authenticator._checker
        if type(checker) is not DigestHashChecker:
            return None
        cachedHA1 = getattr(checker.source, "cachedHA1", None)
        store = processor.store
        answersAtOnce = getattr(store, "answersAtOnce", None)
        if cachedHA1 is None or answersAtOnce is None:
            return None

        # The credentials (DigestAuthenticator._authenticate).
        # The scan's parameters (one value, not longer than the full path
        # takes).
        pairs = values[b"Authorization"]
        params = dict(pairs)
        if len(params) != len(pairs):
            # A repeated parameter (400).
            return None
        try:
            if not _onlyKnown(params) or params.get(
                    "realm") != authenticator.realm or params.get(
                    "uri") != uriText:
                return None
            credentials = authenticator._credentials(
                params, "REGISTER", uriText)
        except DigestParseError:
            return None
        username = credentials.username
        host = addr[0]
        limiter = authenticator._limiter
        if limiter is not None and limiter.hasFailures(username, host):
            return None
        nonces = authenticator._nonces
        nonce = credentials.nonce
        if nonces.check(nonce) is not VALID:
            return None
        ha1 = cachedHA1(username, credentials.realm,
                        credentials.algorithm.base)
        if ha1 is None or not credentials.checkHash(ha1):
            return None
        identity = authenticator._realm.requestAvatar(
            username, None, ISIPIdentity)[1]
        issued = nonces.issued(nonce)
        nc = int(credentials.nc, 16)
        counts = authenticator._counts
        # The full path gives every REGISTER over UDP a fingerprint.
        fingerprint = requestFingerprint(
            key, flow.remote,
            values[b"Call-ID"][_CALL_ID:].decode("ascii"),
            values[b"CSeq"][_CSEQ:].decode("ascii"))
        if not counts.accepts(nonce, issued, nc) and not (
                self.stateless
                and counts.repeated(nonce, issued, nc, fingerprint)):
            return None

        # The identity (DistributionProcessor._checkIdentity): the To is
        # sip:user@host or sip:user@host:port, in brackets or not (the
        # scan's pattern).
        aor = identity.aor
        to = values[b"To"]
        at = to.find(b"<")
        toURI = (to[at + 1:-1] if at >= 0 else to[_TO:]).decode("ascii")
        user, _, toHost = toURI.partition("@")
        if ":" in toHost or f"{user}@{toHost.lower()}" != aor:
            return None

        # The assignment (_lookedUp, _gotServer).
        if not answersAtOnce(aor):
            return None
        if hasattr(store, "userAtOnce"):
            # Read from memory without a Deferred.
            try:
                serverId = store.userAtOnce(aor)
            except Exception:
                return None
            if serverId is None:
                return None
            record = store.serverAtOnce(serverId)
        else:
            serverId = _atOnce(store.lookupUser(aor))
            if serverId is NOT_FIRED or serverId is None:
                return None
            record = _atOnce(store.getServer(serverId))
        if record is NOT_FIRED or record is None:
            return None
        supported = values.get(b"Supported")
        follows = supported is not None and listsTag(supported, REDIRECT_TAG)
        if not follows and processor.userAgents:
            agent = values.get(b"User-Agent")
            follows = agent is not None and agentFollows(
                processor.userAgents, agent[_USER_AGENT:].decode("ascii"))
        checked = Checked()
        checked.credentials = credentials
        checked.identity = identity
        checked.nonce = nonce
        checked.issued = issued
        checked.nc = nc
        checked.host = host
        checked.limiter = limiter
        checked.counts = counts
        checked.serverId = serverId
        checked.record = record
        checked.follows = follows
        checked.fingerprint = fingerprint
        # The decision (_decided), for a REGISTER of one Via.
        checked.outcome = decide(
            1, Assignment(serverId, record.uri, record.state),
            processor.role, self._server.name, processor.policy,
            followsRedirect=follows, register=True)
        return checked

    def backup(self, checked, assignedId, exclude=()):
        """
        The C{Sipdist-Backup} value the full path gives (L{None} for none;
        L{NOT_FIRED} when the store cannot list its servers at once or the
        choice failed, and the full path must answer).
        """
        processor = self._processor
        if not (processor.offerBackup and checked.follows):
            return None
        store = processor.store
        if hasattr(store, "serversAtOnce"):
            records = store.serversAtOnce()
        else:
            records = _atOnce(store.listServers())
            if records is NOT_FIRED:
                return NOT_FIRED
        try:
            return processor.backupValue(checked.identity.aor, assignedId,
                                         "UDP", exclude, records)
        except Exception:
            return NOT_FIRED

    def signature(self, checked, code, callID, cseq, contact, backup):
        """
        The signature headers of the answer (L{DigestAuthenticator.sign}
        of the authenticator's L{Authenticated} result), or L{None} when
        they cannot be made (the full path answers then).
        """
        identity = checked.identity
        try:
            return self._authenticator.sign(
                Authenticated(identity.username, identity.aor,
                              self._authenticator.realm, checked.credentials),
                code, callID, cseq, contact, backup)
        except ValueError:
            return None

    def decided(self, checked, values, flow, callID, outcome, chosen):
        """
        The side effects of the full path from the transaction's creation
        to the decision, in its order: the counters, the route-set link's
        (L{noteRoute}), the nonce count, the limiter, and the decision
        event (C{outcome}, the server C{chosen}) when decisions are logged.
        """
        layer = self._transactions
        layer.serverCreated += 1
        layer._created()
        processor = self._processor
        noteRoute(processor.proxy, values.get(b"Route"), flow)
        checked.counts.use(checked.nonce, checked.issued, checked.nc,
                           checked.fingerprint)
        identity = checked.identity
        if checked.limiter is not None:
            checked.limiter.succeeded(identity.username, checked.host)
        self._authenticator.outcomes["ok"] += 1
        processor.lookups.atOnce += 1
        if processor.logDecisions:
            processor.logDecisionEvent(
                "REGISTER", callID, identity.aor, outcome, chosen, None,
                self._server._reactor.seconds())


class FastRedirect(FastAuthenticated):
    """
    Answers an authenticated REGISTER with the signed C{301} (see the
    module), given the facts L{FastChallenge} scanned.
    """

    code = 301
    stateless = True

    def possible(self):
        """
        Whether this server may answer any request this way: a role
        without handover nor standby (not a home), and
        L{FastAuthenticated.possible}.
        """
        processor = self._processor
        return (processor.handover is None and processor.standby is None
                and FastAuthenticated.possible(self))

    def __call__(self, addr, uriText, values, viaText, flow, key):
        """
        Answer a scanned REGISTER, or leave it to the full path.

        @param addr: where it came from.
        @param uriText: its Request-URI, as written.
        @param values: its header lines by name (the L{re.Match} of the Via
            value for C{Via}, the Digest parameters as C{(name, value)}
            pairs for C{Authorization}).
        @param viaText: its Via value as the response carries it.
        @param flow: its transaction's L{DatagramFlow}.
        @param key: its transaction's key.
        @return: the bytes of the response, every side effect of the full
            path done but the transaction's (counting the answer and
            sending it, statelessly); or L{None}, nothing done.
        """
        processor = self._processor
        if processor.handover is not None or processor.standby is not None:
            return None
        checked = self.check(addr, uriText, values, flow, key)
        if checked is None:
            return None
        if type(checked.outcome) is not Redirect:
            return None
        record = checked.record
        server = self._server
        uri = serverURIFor(record, "UDP")
        if uri is None:
            return None
        backup = self.backup(checked, checked.serverId)
        if backup is NOT_FIRED:
            return None

        # The signed 301 (_redirect, signed).
        contact = f"<{uri}>"
        callID = values[b"Call-ID"][_CALL_ID:].decode("ascii")
        cseq = values[b"CSeq"][_CSEQ:].decode("ascii")
        signature = self.signature(checked, 301, callID, cseq, contact,
                                   backup)
        if signature is None:
            return None

        # Decided: the side effects of the full path, in its order.
        self.decided(checked, values, flow, callID, "redirect", record.id)
        processor.redirects += 1
        self.taken += 1
        return answer("301 Moved Permanently", viaText, values,
                      [f"Server: {server.serverHeader}",
                       f"Contact: {contact}"]
                      + signedHeaders(backup, signature),
                      statelessTag(checked.credentials.response))
