# -*- test-case-name: tests.test_auth_server -*-
"""
Tests for L{sipdist.auth.server.DigestAuthenticator}: what each request
gets, from a real client answer (L{sipdist.auth.client}).
"""

from hypothesis import given, settings, strategies as st
from twisted.internet.defer import Deferred, fail
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from sipdist.auth.client import answerChallenge
from sipdist.auth.credentials import (
    DigestHashChecker, InMemoryDigestHashSource)
from sipdist.auth.digest import parseDigest
from sipdist.auth.interfaces import IDigestHashSource
from sipdist.auth.limiter import FailureLimiter
from sipdist.auth.server import (
    Authenticated, Challenge, DigestAuthenticator, Rejected)

SECRET = b"pool secret, at least 16 bytes"
REALM = "example.com"
URI = "sip:example.com"
HOST = "192.0.2.10"


@implementer(IDigestHashSource)
class SlowSource:
    """
    A source answering only when the test fires its Deferreds.
    """

    def __init__(self, source):
        self.source = source
        self.pending = []

    def getHA1(self, username, realm, algorithm):
        d = Deferred()
        self.pending.append((d, self.source.getHA1(username, realm,
                                                   algorithm)))
        return d

    def release(self):
        for d, result in self.pending:
            result.chainDeferred(d)
        self.pending = []


@implementer(IDigestHashSource)
class BrokenSource:
    """
    A source whose backend is down.
    """

    def getHA1(self, username, realm, algorithm):
        return fail(ConnectionRefusedError("directory down"))


class AuthenticatorTestsMixin:
    """
    Helpers: an authenticator over a memory source with alice/wonderland.
    """

    def setUp(self):
        self.clock = Clock()
        self.clock.advance(1_700_000_000)
        self.limiter = FailureLimiter(self.clock, threshold=3, window=120)
        self.source = InMemoryDigestHashSource({"alice": "wonderland",
                                                "bob": "builder"})
        self.auth = self.makeAuthenticator(self.source)

    def makeAuthenticator(self, source, **kw):
        kw.setdefault("limiter", self.limiter)
        return DigestAuthenticator(REALM, SECRET, DigestHashChecker(source),
                                   self.clock, nonceLifetime=300, **kw)

    def result(self, values, method="REGISTER", uri=URI, host=HOST,
               proxy=False, auth=None):
        auth = self.auth if auth is None else auth
        return self.successResultOf(
            auth.authenticate(method, uri, values, host, proxy=proxy))

    def challengeValues(self, proxy=False):
        result = self.result([], proxy=proxy)
        self.assertIsInstance(result, Challenge)
        return [value for _, value in result.headers]

    def answer(self, user="alice", password="wonderland", nc=1,
               method="REGISTER", uri=URI, challenge=None):
        if challenge is None:
            challenge = self.challengeValues()
        return answerChallenge(challenge, method, uri, user, password,
                               nc=nc)


class ChallengeTests(AuthenticatorTestsMixin, SynchronousTestCase):
    """
    Requests without usable credentials get a challenge.
    """

    def test_noCredentials(self):
        """
        A request without Authorization gets 401 with two WWW-Authenticate
        values, SHA-256 first then MD5, both C{qop="auth"}.
        """
        result = self.result([])
        self.assertEqual((result.code, result.phrase, result.stale),
                         (401, "Unauthorized", False))
        self.assertEqual([name for name, _ in result.headers],
                         ["WWW-Authenticate", "WWW-Authenticate"])
        params = [parseDigest(value) for _, value in result.headers]
        self.assertEqual([p["algorithm"] for p in params], ["SHA-256", "MD5"])
        self.assertEqual({p["qop"] for p in params}, {"auth"})
        self.assertEqual({p["realm"] for p in params}, {REALM})

    def test_perRequestAlgorithms(self):
        """
        A caller may challenge one request with other algorithms than the
        default ones, among those accepted; credentials of every accepted
        algorithm are checked whatever the challenge listed.
        """
        auth = self.makeAuthenticator(self.source, algorithms=("MD5",),
                                      extraAlgorithms=("SHA-256", "MD5"))
        self.assertEqual(auth.accepted, frozenset(["MD5", "SHA-256"]))
        result = self.successResultOf(auth.authenticate(
            "REGISTER", URI, [], HOST))
        self.assertEqual([parseDigest(v)["algorithm"]
                          for _, v in result.headers], ["MD5"])
        tagged = self.successResultOf(auth.authenticate(
            "REGISTER", URI, [], HOST, algorithms=("sha-256", "MD5")))
        challenge = [v for _, v in tagged.headers]
        self.assertEqual([parseDigest(v)["algorithm"] for v in challenge],
                         ["SHA-256", "MD5"])
        # Our client answers SHA-256; a standard one MD5: both accepted.
        value, _ = answerChallenge(challenge, "REGISTER", URI, "alice",
                                   "wonderland")
        self.assertIn("SHA-256", value)
        self.assertIsInstance(self.result([value], auth=auth), Authenticated)
        value, _ = answerChallenge(challenge[1:], "REGISTER", URI, "alice",
                                   "wonderland", nc=2)
        self.assertIsInstance(self.result([value], auth=auth), Authenticated)

    def test_perRequestAlgorithmsNotAccepted(self):
        """
        An algorithm asked for but not accepted is left out of the
        challenge; credentials in an algorithm not accepted get 400.
        """
        auth = self.makeAuthenticator(self.source, algorithms=("MD5",))
        result = self.successResultOf(auth.authenticate(
            "REGISTER", URI, [], HOST, algorithms=("SHA-256", "MD5")))
        self.assertEqual([parseDigest(v)["algorithm"]
                          for _, v in result.headers], ["MD5"])
        value, _ = self.answer(challenge=[
            'Digest realm="example.com", nonce="x", qop="auth", '
            'algorithm=SHA-256'])
        rejected = self.result([value], auth=auth)
        self.assertIsInstance(rejected, Rejected)
        self.assertEqual(rejected.code, 400)

    def test_proxy(self):
        """
        As a proxy, the challenge is 407 with Proxy-Authenticate.
        """
        result = self.result([], proxy=True)
        self.assertEqual((result.code, result.phrase),
                         (407, "Proxy Authentication Required"))
        self.assertEqual({name for name, _ in result.headers},
                         {"Proxy-Authenticate"})

    def test_wrongRealm(self):
        """
        Credentials for another realm get a fresh challenge for ours.
        """
        value, _ = self.answer()
        other = value.replace('realm="example.com"', 'realm="example.org"')
        result = self.result([other])
        self.assertIsInstance(result, Challenge)
        self.assertEqual(result.code, 401)

    def test_otherScheme(self):
        """
        Credentials of a scheme other than Digest count as absent: the
        request is challenged, not rejected (RFC 4475 section 3.3.7).
        """
        for values in (["Basic YWxpY2U6d29uZGVybGFuZA=="],
                       ["NoOneKnowsThisScheme opaque-data=here"]):
            self.assertIsInstance(self.result(values), Challenge, values)
        good, _ = self.answer()
        self.assertIsInstance(self.result(["Basic YWxpY2U6d29uZGVybGFuZA==",
                                           good]), Authenticated)

    def test_unknownUserSameChallenge(self):
        """
        An unknown user gets exactly the challenge a known user with a
        wrong password gets (only the nonce differs).
        """
        def shape(result):
            self.assertIsInstance(result, Challenge)
            return (result.code, result.stale, [
                (name, {k: v for k, v in parseDigest(value).items()
                        if k != "nonce"})
                for name, value in result.headers])

        known = self.result([self.answer(password="wrong")[0]])
        unknown = self.result([self.answer(user="mallory")[0]])
        self.assertEqual(shape(known), shape(unknown))
        self.assertEqual(shape(known), shape(self.result([])))


class SuccessTests(AuthenticatorTestsMixin, SynchronousTestCase):
    """
    Good credentials authenticate.
    """

    def test_sha256(self):
        """
        A client answering the challenge is authenticated, with SHA-256,
        synchronously with an in-memory source.
        """
        value, session = self.answer()
        result = self.result([value])
        self.assertIsInstance(result, Authenticated)
        self.assertEqual((result.username, result.aor, result.algorithm),
                         ("alice", "sip:alice@example.com", "SHA-256"))
        self.assertEqual(result.cnonce, session.cnonce)

    def test_md5AndSess(self):
        """
        MD5 and the C{-sess} forms work when offered.
        """
        auth = self.makeAuthenticator(
            self.source, algorithms=("SHA-256-sess", "MD5-sess", "MD5"))
        challenge = self.challengeValues()
        for name in ("SHA-256-sess", "MD5-sess", "MD5"):
            offered = [v for v in self.result([], auth=auth).headers
                       if f"algorithm={name}," in v[1]]
            value, _ = self.answer(challenge=[offered[0][1]])
            result = self.result([value], auth=auth)
            self.assertIsInstance(result, Authenticated)
            self.assertEqual(result.algorithm, name)
        self.assertTrue(challenge)

    def test_proxyAuthorization(self):
        """
        A proxy authenticates Proxy-Authorization values the same way.
        """
        value, _ = self.answer(method="INVITE", uri="sip:bob@example.com",
                               challenge=self.challengeValues(proxy=True))
        result = self.result([value], method="INVITE",
                             uri="sip:bob@example.com", proxy=True)
        self.assertIsInstance(result, Authenticated)

    def test_severalValues(self):
        """
        Among several credentials, the one for our realm is used.
        """
        value, _ = self.answer()
        other = value.replace('realm="example.com"', 'realm="example.org"')
        self.assertIsInstance(self.result([other, value]), Authenticated)

    def test_nextCount(self):
        """
        The same nonce may be used again with a higher nonce count.
        """
        value, session = self.answer()
        self.assertIsInstance(self.result([value]), Authenticated)
        again = session.authorize("REGISTER", URI, 2)
        self.assertIsInstance(self.result([again]), Authenticated)

    def test_otherServerOfPool(self):
        """
        A nonce from one server of the pool is accepted by another one.
        """
        challenge = self.challengeValues()
        other = self.makeAuthenticator(self.source)
        value, _ = self.answer(challenge=challenge)
        self.assertIsInstance(self.result([value], auth=other),
                              Authenticated)

    def test_asynchronousSource(self):
        """
        A source answering later makes the result wait for it.
        """
        slow = SlowSource(self.source)
        auth = self.makeAuthenticator(slow)
        value, _ = self.answer()
        d = auth.authenticate("REGISTER", URI, [value], HOST)
        self.assertNoResult(d)
        slow.release()
        self.assertIsInstance(self.successResultOf(d), Authenticated)


class FailureTests(AuthenticatorTestsMixin, SynchronousTestCase):
    """
    Replays, stale nonces, wrong passwords and bad input get a clear answer.
    """

    def test_wrongPassword(self):
        """
        A wrong password gets a fresh 401 challenge, not stale.
        """
        result = self.result([self.answer(password="wrong")[0]])
        self.assertIsInstance(result, Challenge)
        self.assertEqual((result.code, result.stale), (401, False))

    def test_replay(self):
        """
        The same nonce count again is a replay: 401 with C{stale=true} (the
        credentials were right, so the client retries with a fresh nonce).
        """
        value, _ = self.answer()
        self.assertIsInstance(self.result([value]), Authenticated)
        result = self.result([value])
        self.assertIsInstance(result, Challenge)
        self.assertEqual((result.code, result.stale), (401, True))
        self.assertIn("stale=true", result.headers[0][1])

    def test_replayFromOtherHost(self):
        """
        A replay from another address is a replay too.
        """
        value, _ = self.answer()
        self.result([value])
        self.assertIsInstance(self.result([value], host="203.0.113.5"),
                              Challenge)

    def test_lowerCount(self):
        """
        A lower nonce count than one already used is a replay.
        """
        value, session = self.answer(nc=5)
        self.assertIsInstance(self.result([value]), Authenticated)
        lower = session.authorize("REGISTER", URI, 4)
        self.assertTrue(self.result([lower]).stale)

    def test_staleNonce(self):
        """
        Good credentials on an expired nonce get 401 with C{stale=true}.
        """
        value, _ = self.answer()
        self.clock.advance(301)
        result = self.result([value])
        self.assertIsInstance(result, Challenge)
        self.assertEqual((result.code, result.stale), (401, True))

    def test_staleNonceWrongPassword(self):
        """
        A wrong password on an expired nonce is not told C{stale=true}.
        """
        value, _ = self.answer(password="wrong")
        self.clock.advance(301)
        self.assertFalse(self.result([value]).stale)

    def test_forgedNonce(self):
        """
        A nonce we did not mint gets a fresh challenge.
        """
        value, _ = self.answer(challenge=[
            'Digest realm="example.com", nonce="forged", qop="auth", '
            'algorithm=SHA-256'])
        result = self.result([value])
        self.assertIsInstance(result, Challenge)
        self.assertFalse(result.stale)

    def test_wrongURI(self):
        """
        Credentials computed for another URI than the Request-URI (a client
        that rewrote its Request-URI and kept the old credentials) are not
        accepted: they get a fresh challenge, not a dead-end 400, and do
        not count as a failed authentication.
        """
        value, _ = self.answer(uri="sip:other.example.com")
        for _ in range(5):
            result = self.result([value])
            self.assertIsInstance(result, Challenge)
            self.assertEqual(result.code, 401)
            self.assertFalse(result.stale)
        # Answering the fresh challenge for the Request-URI succeeds.
        value, _ = self.answer(challenge=[v for _, v in result.headers])
        self.assertIsInstance(self.result([value]), Authenticated)

    def test_wrongURIEvenIfValidThere(self):
        """
        Credentials valid for another Request-URI are never accepted for
        this one, even with a fresh nonce count.
        """
        value, _ = self.answer(uri="sip:127.0.0.1:5070")
        self.assertIsInstance(
            self.result([value], uri="sip:127.0.0.1:5070"), Authenticated)
        value, _ = self.answer(uri="sip:127.0.0.1:5070")
        self.assertIsInstance(self.result([value]), Challenge)

    def test_wrongMethod(self):
        """
        Credentials computed for another method fail like a wrong password.
        """
        value, _ = self.answer(method="INVITE")
        self.assertIsInstance(self.result([value]), Challenge)

    def test_malformed(self):
        """
        Each malformed or unusable Authorization value gets 400 with a
        reason phrase saying what is wrong.
        """
        value, _ = self.answer()
        params = parseDigest(value)

        def without(name):
            return ", ".join(f'{k}="{v}"' for k, v in params.items()
                             if k != name)

        def replaced(name, new):
            return "Digest " + ", ".join(
                f"{k}={new}" if k == name else f'{k}="{v}"'
                for k, v in params.items())

        cases = [
            ("Digest " + without("username"),
             "Missing digest parameter username"),
            ("Digest " + without("nonce"), "Missing digest parameter nonce"),
            ("Digest " + without("uri"), "Missing digest parameter uri"),
            ("Digest " + without("response"),
             "Missing digest parameter response"),
            ("Digest " + without("cnonce"),
             "Missing digest parameter cnonce"),
            ("Digest " + without("qop"), "Digest qop=auth required"),
            ("Digest " + without("nc"), "Malformed digest nonce count"),
            (replaced("nc", "1"), "Malformed digest nonce count"),
            (replaced("nc", "0000000g"), "Malformed digest nonce count"),
            (replaced("nc", "00000000"), "Malformed digest nonce count"),
            (replaced("qop", "auth-int"), "Unsupported digest qop"),
            (replaced("algorithm", "SHA-512-256"),
             "Unsupported digest algorithm"),
            (replaced("algorithm", "MD5-sess"),
             "Digest algorithm not offered"),
            (value + ", userhash=true", "Digest userhash not supported"),
            (value + ", nc=00000002", "Repeated digest parameter nc"),
            (value[:value.index("response=") + 15],
             "Malformed Authorization header"),
            ("Digest", "Malformed Authorization header"),
            ("Digest " + ", ".join(f"x{i}=y" for i in range(40)),
             "Too many digest parameters"),
        ]
        for bad, phrase in cases:
            result = self.result([bad])
            self.assertIsInstance(result, Rejected, bad)
            self.assertEqual((result.code, result.phrase), (400, phrase), bad)
        result = self.result([value] * 9)
        self.assertEqual((result.code, result.phrase),
                         (400, "Too many Authorization headers"))

    @settings(max_examples=200, deadline=None)
    @given(st.lists(st.text(max_size=300), min_size=1, max_size=3))
    def test_fuzz(self, values):
        """
        Whatever the header values, the answer is a L{Challenge} or a
        L{Rejected} with a 4xx code, never an exception.
        """
        for prefix in ("", "Digest ", 'Digest realm="example.com", '):
            result = self.result([prefix + v for v in values])
            self.assertIsInstance(result, (Challenge, Rejected))
            self.assertIn(result.code, (400, 401, 403))

    def test_sourceDown(self):
        """
        A credential source that fails gives 503 with Retry-After.
        """
        auth = self.makeAuthenticator(BrokenSource())
        value, _ = self.answer()
        result = self.result([value], auth=auth)
        self.assertIsInstance(result, Rejected)
        self.assertEqual((result.code, result.headers),
                         (503, [("Retry-After", "5")]))
        self.flushLoggedErrors(ConnectionRefusedError)


class LimiterTests(AuthenticatorTestsMixin, SynchronousTestCase):
    """
    Past the failure threshold a user waits before trying again from that
    address (403 with Retry-After); nobody else waits.
    """

    def test_user(self):
        """
        After three failures for alice from one address, even her right
        password from there gets 403 with Retry-After until the wait is
        over; from another address she is served, and so is bob from the
        same address.
        """
        for _ in range(3):
            self.result([self.answer(password="wrong")[0]])
        result = self.result([self.answer()[0]])
        self.assertIsInstance(result, Rejected)
        self.assertEqual(
            (result.code, result.phrase, result.headers),
            (403, "Too many failed authentications",
             [("Retry-After", "1")]))
        self.assertIsInstance(
            self.result([self.answer()[0]], host="10.0.0.99"), Authenticated)
        self.assertIsInstance(
            self.result([self.answer("bob", "builder")[0]]), Authenticated)
        self.clock.advance(1)
        self.assertIsInstance(self.result([self.answer()[0]]),
                              Authenticated)

    def test_unknownUserCounted(self):
        """
        An unknown user is counted and slowed like a known one, so the
        403 reveals nothing either.
        """
        for _ in range(3):
            self.result([self.answer(user="mallory")[0]])
        result = self.result([self.answer(user="mallory")[0]])
        self.assertEqual(result.code, 403)

    def test_hostNeverBlocked(self):
        """
        Failures for many users from one address never make that address
        wait: requests without credentials are challenged and users with
        the right password served.
        """
        for i in range(5):
            for user in ("alice", "bob", "carol"):
                self.result([self.answer(user, "wrong")[0]], host=f"h{i}")
            self.clock.advance(5)
        for user in ("dave", "erin", "frank", "grace"):
            self.result([self.answer(user, "wrong")[0]])
        self.assertIsInstance(self.result([]), Challenge)
        self.assertIsInstance(self.result([self.answer()[0]]), Authenticated)

    def test_staleAndReplayNotCounted(self):
        """
        Stale nonces and replays are not failures.
        """
        value, _ = self.answer()
        for _ in range(5):
            self.result([value])
        self.assertIsInstance(self.result([self.answer()[0]]),
                              Authenticated)


class OutcomeTests(AuthenticatorTestsMixin, SynchronousTestCase):
    """
    L{DigestAuthenticator.outcomes} counts what L{authenticate} answered.
    """

    def test_counted(self):
        """
        A request without credentials is challenged, a wrong password
        fails (and is challenged again), the right one is ok, a user past
        the failure threshold is limited and malformed credentials are
        rejected.
        """
        self.result([self.answer()[0]])
        self.assertEqual(self.auth.outcomes, {
            "challenged": 1, "ok": 1, "failed": 0, "limited": 0,
            "rejected": 0})
        for _ in range(3):
            self.result([self.answer("bob", "wrong")[0]])
        self.result([self.answer("bob", "builder")[0]])
        self.result([f'Digest username="alice", realm="{REALM}"'])
        # answer() asks for a challenge first: four more, and the three
        # failures are challenged again.
        self.assertEqual(self.auth.outcomes, {
            "challenged": 1 + 4 + 3, "ok": 1, "failed": 3,
            "limited": 1, "rejected": 1})
