# -*- test-case-name: tests.test_auth_server -*-
"""
L{DigestAuthenticator}: the one object a SIP server asks, for every request
it must authenticate, whether to serve it, challenge it or reject it, and
which headers sign the response it then sends.

It works on strings: the method, the Request-URI as written, the values of
the C{Authorization} (or C{Proxy-Authorization}) header fields and the
source host.  Its answer is one of L{Authenticated}, L{Challenge} or
L{Rejected}, through a L{Deferred} that has already fired when the
credential source holds its data in memory.
"""

import re

from twisted.cred.error import UnauthorizedLogin
from twisted.internet.defer import fail, succeed
from twisted.logger import Logger

from sipdist.auth import nonce as _nonce
from sipdist.auth.credentials import SIPDigestCredentials, SIPRealm
from sipdist.auth.digest import (
    DEFAULT_ALGORITHMS, DigestParseError, algorithm as _algorithm, challenge,
    challengeLines, parseDigest)
from sipdist.auth.interfaces import ISIPDigestCredentials, ISIPIdentity
from sipdist.auth.signature import responseHeaders
from sipdist.deferreds import NOT_FIRED, firedResult

# At most this many Authorization values are looked at in one request.
MAX_CREDENTIALS = 8
_HEX = frozenset("0123456789abcdefABCDEF")


def statelessTag(response):
    """
    The To tag of a stateless answer to a request whose Digest response
    (the C{response} parameter of its credentials) is C{response}: see
    L{Authenticated.tag}.
    """
    return response[:16].lower()


class Authenticated:
    """
    The request carries valid credentials.

    @ivar username: the authenticated user name.
    @ivar aor: the user's address-of-record, C{sip:username@domain}.
    @ivar realm, algorithm, nonce, nc, cnonce, qop, uri: the Digest exchange
        (C{algorithm} is the canonical name), needed by L{sign}.
    @ivar repeat: the nonce count was used already, by this very request
        (its fingerprint, see L{sipdist.auth.nonce.NonceCounts}): a
        retransmission of a request that was answered statelessly, which
        only that answer may be given again (see
        L{DigestAuthenticator.authenticate}).
    @ivar tag: the To tag of a stateless answer to the request, the same
        for its retransmissions and different for every other request: the
        first 16 characters of its Digest response, which covers the nonce
        and its count.
    """

    __slots__ = ("username", "aor", "realm", "algorithm", "nonce", "nc",
                 "cnonce", "qop", "uri", "_alg", "_sessionHA1", "repeat",
                 "_response")

    def __init__(self, username, aor, realm, credentials, repeat=False):
        self.username = username
        self.aor = aor
        self.realm = realm
        self._alg = credentials.algorithm
        self.algorithm = credentials.algorithm.name
        self.nonce = credentials.nonce
        self.nc = credentials.nc
        self.cnonce = credentials.cnonce
        self.qop = credentials.qop
        self.uri = credentials.uri
        self._sessionHA1 = credentials.sessionHA1
        self.repeat = repeat
        self._response = credentials.response

    @property
    def tag(self):
        # Made when asked: only a stateless redirect uses it.
        return statelessTag(self._response)

    def __repr__(self):
        return f"<Authenticated {self.aor} {self.algorithm}>"


class Challenge:
    """
    Answer the request with C{code} (401, or 407 as a proxy) and these
    headers (C{WWW-Authenticate} or C{Proxy-Authenticate}, one per
    algorithm, most preferred first).

    @ivar stale: whether the credentials were good but the nonce was not
        (expired or already used with this count); the client retries
        without asking its user.
    """

    __slots__ = ("code", "phrase", "headers", "stale")

    def __init__(self, code, phrase, headers, stale):
        self.code = code
        self.phrase = phrase
        self.headers = headers
        self.stale = stale

    def __repr__(self):
        return f"<Challenge {self.code} stale={self.stale}>"


class Rejected:
    """
    Answer the request with C{code}, the reason phrase C{phrase} and
    C{headers}: 400 for malformed credentials, 403 with C{Retry-After}
    while the user must wait before trying again from that address (see
    L{sipdist.auth.limiter}), 503 with C{Retry-After} when the credential
    source fails.
    """

    __slots__ = ("code", "phrase", "headers")

    def __init__(self, code, phrase, headers=()):
        self.code = code
        self.phrase = phrase
        self.headers = list(headers)

    def __repr__(self):
        return f"<Rejected {self.code} {self.phrase!r}>"


_SCHEME_NAME = re.compile(r"[ \t]*([-!%'*+.0-9A-Z_`a-z~]+)[ \t]+(?![ \t]*=)")


def _isOtherScheme(value):
    """
    Whether an Authorization value names a scheme other than Digest (a
    token followed by white space); a value that names none is malformed,
    not another scheme.
    """
    match = _SCHEME_NAME.match(value)
    return match is not None and match.group(1).lower() != "digest"


class DigestAuthenticator:
    """
    SIP Digest authentication for one realm.

    @ivar realm: the realm challenged for.
    @ivar algorithms: the algorithms challenged with by default, in the
        order listed.
    @ivar accepted: the names of the algorithms whose credentials are
        accepted: C{algorithms} and C{extraAlgorithms}.
    """

    _log = Logger()

    def __init__(self, realm, secret, checker, reactor, nonceLifetime=300,
                 limiter=None, algorithms=DEFAULT_ALGORITHMS, domain=None,
                 maxNonces=100000, sourceRetryAfter=5, extraAlgorithms=()):
        """
        @param realm: the realm (usually the SIP domain).
        @param secret: the nonce secret shared by the servers of the pool.
        @param checker: an L{ICredentialsChecker} for
            L{sipdist.auth.interfaces.ISIPDigestCredentials}, for example
            from L{sipdist.auth.sources.makeChecker}.
        @param reactor: an L{IReactorTime}.
        @param nonceLifetime: seconds before a nonce is stale.
        @param limiter: a L{sipdist.auth.limiter.FailureLimiter} or L{None}.
        @param algorithms: the algorithm names challenged with, in this
            order (RFC 8760: most preferred first); credentials using an
            algorithm neither here nor in C{extraAlgorithms} get 400.
        @param domain: the host part of the identities given (default:
            C{realm}).
        @param maxNonces: size of the table of nonce counts.
        @param sourceRetryAfter: C{Retry-After} of the 503 sent when the
            credential source fails.
        @param extraAlgorithms: algorithm names accepted besides
            C{algorithms}: those a caller challenges some clients with
            (L{authenticate}'s C{algorithms}).
        """
        if ISIPDigestCredentials not in getattr(
                checker, "credentialInterfaces", ()):
            raise ValueError(
                "the credential source cannot check SIP Digest answers "
                "(it needs plaintext passwords, as LDAP bind mode does)")
        self.realm = realm
        self.algorithms = tuple(_algorithm(a).name for a in algorithms)
        self._offered = frozenset(self.algorithms) | frozenset(
            _algorithm(a).name for a in extraAlgorithms)
        self.accepted = self._offered
        self._nonces = _nonce.NonceFactory(secret, realm, reactor,
                                           nonceLifetime)
        self._counts = _nonce.NonceCounts(maxNonces)
        self._limiter = limiter
        # The cred split of a Portal (credentials, checker, realm), called
        # directly: Portal.login would wrap a checker that answers at once
        # in three more Deferred layers, on every request.
        self._checker = checker
        self._realm = SIPRealm(realm if domain is None else domain)
        for interface in checker.credentialInterfaces:
            if interface.implementedBy(SIPDigestCredentials):
                break
        else:
            raise ValueError(f"{checker!r} does not check SIP digest "
                             f"credentials")
        self._sourceRetryAfter = sourceRetryAfter
        # What authenticate() answered: "ok", "challenged" (a challenge,
        # after failed credentials too), "limited" (403 of the failure
        # limiter), "rejected" (other refusals); and "failed", the
        # credentials the source refused (also counted as challenged).
        self.outcomes = dict.fromkeys(
            ("ok", "challenged", "failed", "limited", "rejected"), 0)

    @property
    def limiter(self):
        """
        The L{sipdist.auth.limiter.FailureLimiter}, or L{None}.
        """
        return self._limiter

    def challenge(self, proxy=False, stale=False, algorithms=None):
        """
        A fresh L{Challenge}: what a request without credentials gets.

        @param algorithms: the algorithm names to challenge with, in order
            (default: L{algorithms}); each must be accepted.
        """
        nonce = self._nonces.mint()
        values = challenge(self.realm, nonce, algorithms or self.algorithms,
                           stale)
        if proxy:
            return Challenge(407, "Proxy Authentication Required",
                             [("Proxy-Authenticate", v) for v in values],
                             stale)
        return Challenge(401, "Unauthorized",
                         [("WWW-Authenticate", v) for v in values], stale)

    def challengeLines(self):
        """
        The header lines of a fresh L{challenge} (a C{401}'s, with the
        default algorithms), as one text joined by CRLF
        (L{sipdist.auth.digest.challengeLines}): what the fast path's
        C{401} writes.
        """
        return challengeLines("WWW-Authenticate", self.realm,
                              self._nonces.mint(), self.algorithms)

    def authenticate(self, method, uri, authorizationHeaderValues,
                     sourceHost, body=b"", proxy=False, algorithms=None,
                     fingerprint=0):
        """
        Authenticate a request (see L{_authenticate}), counting the
        outcome in L{outcomes}.
        """
        d = self._authenticate(method, uri, authorizationHeaderValues,
                               sourceHost, body, proxy, algorithms,
                               fingerprint)
        result = firedResult(d)
        if result is NOT_FIRED:
            d.addCallback(self._counted)
            return d
        # Answered from memory: counted now, without a callback chain.
        return succeed(self._counted(result))

    def _counted(self, result):
        outcomes = self.outcomes
        if isinstance(result, Authenticated):
            outcomes["ok"] += 1
        elif isinstance(result, Challenge):
            outcomes["challenged"] += 1
        elif result.code == 403:
            outcomes["limited"] += 1
        else:
            outcomes["rejected"] += 1
        return result

    def _authenticate(self, method, uri, authorizationHeaderValues,
                      sourceHost, body=b"", proxy=False, algorithms=None,
                      fingerprint=0):
        """
        Authenticate a request.

        @param method: the request method (C{"REGISTER"}).
        @param uri: the Request-URI as written in the request line.
        @param authorizationHeaderValues: the values of the
            C{Authorization} header fields (C{Proxy-Authorization} when
            C{proxy}); each value is one set of credentials.
        @param sourceHost: the address of the client: where the request
            came from, or the client address an edge stated in a sealed
            header (L{sipdist.auth.clientaddress}); failures are counted
            per user and this address.
        @param body: the body (unused: only C{qop=auth} is offered).
        @param proxy: challenge with 407/C{Proxy-Authenticate}.
        @param algorithms: the algorithms to challenge this request with,
            in order (default: L{algorithms}); credentials of any accepted
            algorithm are checked whatever the challenge listed.
        @param fingerprint: the request's fingerprint (see
            L{sipdist.auth.nonce.NonceCounts}), kept with the nonce count
            it uses, or 0.  A request that may be answered statelessly
            gives one: when it comes again (the same fingerprint and
            count), it is L{Authenticated} with C{repeat} set rather than
            challenged as a replay, and its user must then give it the
            same stateless answer or treat it as the replay it would
            otherwise be (L{replayed}).
        @return: L{Deferred} firing with L{Authenticated}, L{Challenge} or
            L{Rejected}; it never fails.
        """
        limiter = self._limiter
        if algorithms is not None:
            algorithms = tuple(
                name for name in (_algorithm(a).name for a in algorithms)
                if name in self._offered)
        if authorizationHeaderValues:
            # Credentials of a scheme other than Digest are not for us:
            # they count as absent, and the request is challenged (RFC
            # 4475 section 3.3.7).
            authorizationHeaderValues = [
                value for value in authorizationHeaderValues
                if not _isOtherScheme(value)]
        if not authorizationHeaderValues:
            return succeed(self.challenge(proxy, algorithms=algorithms))
        if len(authorizationHeaderValues) > MAX_CREDENTIALS:
            return succeed(Rejected(400, "Too many Authorization headers"))
        params = None
        try:
            for value in authorizationHeaderValues:
                candidate = parseDigest(value)
                if candidate.get("realm") == self.realm:
                    params = candidate
                    break
            if params is None:
                # Credentials for some other realm: ask for ours.
                return succeed(self.challenge(proxy, algorithms=algorithms))
            if params.get("uri") and params["uri"] != uri:
                # Computed for another Request-URI: a client that rewrote
                # the Request-URI (following a redirect) and sent the old
                # credentials.  They are never accepted; a fresh challenge
                # (RFC 7616 section 3.3) lets it answer for this one.
                self._log.info(
                    "credentials from {host} for {credentialsURI}, not for "
                    "the Request-URI {uri}: challenged again",
                    host=sourceHost, credentialsURI=params["uri"], uri=uri)
                return succeed(self.challenge(proxy, algorithms=algorithms))
            credentials = self._credentials(params, method, uri)
        except DigestParseError as e:
            self._log.debug("bad credentials from {host}: {reason}",
                            host=sourceHost, reason=e.phrase)
            return succeed(Rejected(e.code, e.phrase))

        username = credentials.username
        if limiter is not None:
            retry = limiter.retryAfter(username, sourceHost)
            if retry is not None:
                return succeed(self._tooMany(retry))

        state = self._nonces.check(credentials.nonce)
        if state is _nonce.INVALID:
            return succeed(self.challenge(proxy, algorithms=algorithms))

        try:
            d = self._checker.requestAvatarId(credentials)
        except Exception:
            d = fail()
        else:
            avatarId = firedResult(d)
            if avatarId is not NOT_FIRED:
                # The source answered from memory: no callback chain.
                try:
                    return succeed(self._loggedIn(
                        avatarId, credentials, state, sourceHost, proxy,
                        algorithms, fingerprint))
                except Exception:
                    return fail()
        d.addCallbacks(self._loggedIn, self._failed,
                       callbackArgs=(credentials, state, sourceHost, proxy,
                                     algorithms, fingerprint),
                       errbackArgs=(username, sourceHost, proxy, algorithms))
        return d

    def _credentials(self, params, method, uri):
        """
        Check the parameters of a Digest value and build the credentials.

        @raise DigestParseError: what is missing or wrong.
        """
        get = params.get
        if not (get("username") and get("nonce") and get("uri")
                and get("response")):
            # Which one, in this order (a loop only here: on PyPy a loop
            # on every request's path is a frame made for each).
            for name in ("username", "nonce", "uri", "response"):
                if not get(name):
                    raise DigestParseError(
                        f"Missing digest parameter {name}")
        if get("userhash", "false").lower() != "false":
            raise DigestParseError("Digest userhash not supported")
        alg = _algorithm(get("algorithm"))
        if alg.name not in self._offered:
            raise DigestParseError("Digest algorithm not offered")
        qop = get("qop")
        if qop is None:
            raise DigestParseError("Digest qop=auth required")
        if qop.lower() != "auth":
            raise DigestParseError("Unsupported digest qop")
        nc = get("nc")
        if nc is None or len(nc) != 8 or not _HEX.issuperset(nc):
            raise DigestParseError("Malformed digest nonce count")
        if nc == "00000000":
            raise DigestParseError("Malformed digest nonce count")
        if not get("cnonce"):
            raise DigestParseError("Missing digest parameter cnonce")
        if params["uri"] != uri:
            raise DigestParseError("Digest URI does not match Request-URI")
        return SIPDigestCredentials(
            params["username"], params["realm"], alg, params["nonce"], nc,
            params["cnonce"], "auth", params["uri"], method,
            params["response"])

    def _loggedIn(self, avatarId, credentials, state, host, proxy,
                  algorithms, fingerprint=0):
        identity = self._realm.requestAvatar(avatarId, None, ISIPIdentity)[1]
        if state is _nonce.STALE:
            return self.challenge(proxy, True, algorithms)
        nonce = credentials.nonce
        issued = self._nonces.issued(nonce)
        nc = int(credentials.nc, 16)
        counts = self._counts
        repeat = False
        if not counts.use(nonce, issued, nc, fingerprint):
            if not counts.repeated(nonce, issued, nc, fingerprint):
                return self.replayed(credentials.nc, host, identity.username,
                                     proxy, algorithms)
            repeat = True
        if self._limiter is not None:
            self._limiter.succeeded(identity.username, host)
        return Authenticated(identity.username, identity.aor, self.realm,
                             credentials, repeat)

    def replayed(self, nc, host, username, proxy=False, algorithms=None):
        """
        The answer to credentials whose nonce count was used already: a
        stale challenge (a fresh nonce for the client), logged.
        """
        self._log.info("replayed nonce count {nc} from {host} for {username}",
                       nc=nc, host=host, username=username)
        return self.challenge(proxy, True, algorithms)

    def _failed(self, failure, username, host, proxy, algorithms):
        if failure.check(UnauthorizedLogin):
            self._log.info("authentication of {username} from {host} failed",
                           username=username, host=host)
            self.outcomes["failed"] += 1
            if self._limiter is not None:
                self._limiter.failed(username, host)
            return self.challenge(proxy, algorithms=algorithms)
        self._log.failure("credential source failed for {username}",
                          failure, username=username)
        return Rejected(503, "Credentials source unavailable",
                        [("Retry-After", str(self._sourceRetryAfter))])

    def _tooMany(self, retry):
        return Rejected(403, "Too many failed authentications",
                        [("Retry-After", str(retry))])

    def sign(self, authenticated, code, callId, cseq, contact=None,
             backup=None):
        """
        The headers that sign a response to an authenticated request: the
        C{Authentication-Info} (C{qop}, C{rspauth}, C{cnonce}, C{nc}) and
        the C{Sipdist-Signature} covering C{code}, C{callId}, C{cseq} and
        C{contact} (the Contact header value of a redirect, as sent), and
        C{backup} (the C{Sipdist-Backup} value, as sent) when given.

        @type authenticated: L{Authenticated}
        @return: a L{list} of C{(name, value)}.
        """
        a = authenticated
        return responseHeaders(a._alg, a._sessionHA1, a.nonce, a.cnonce,
                               a.nc, a.qop, a.uri, code, callId, cseq,
                               contact, backup)
