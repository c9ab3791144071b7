# -*- test-case-name: tests.test_auth_ldap -*-
"""
Tests for L{sipdist.auth.ldap} against a real slapd on loopback (skipped
when slapd is not installed, a failure then when C{CI=true}).
"""

import os

from twisted.cred.credentials import UsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase

from sipdist.auth.client import answerChallenge
from sipdist.auth.digest import ALGORITHMS, computeHA1
from sipdist.auth.ldap import (
    LDAPBindChecker, LDAPUnavailable, escapeFilterValue,
    parseHA1Values, parseLDAPCredentials)
from sipdist.auth.server import Authenticated, Challenge, DigestAuthenticator
from sipdist.auth.sources import CredentialsConfigError, makeChecker
from tests import slapd
from tests.test_auth_credentials import TemporaryPathMixin

REALM = "example.com"
URI = "sip:example.com"
PEOPLE = "ou=people,dc=example,dc=com"
SCHEMA = os.path.join(slapd.ETC_LDAP, "sipdist-auth.schema")


def ha1(name, user, password):
    return computeHA1(ALGORITHMS[name], user, REALM, password)


def person(uid, password, hashes):
    lines = [f"dn: uid={uid},{PEOPLE}", "objectClass: account",
             "objectClass: simpleSecurityObject",
             "objectClass: sipdistDigestUser", f"uid: {uid}",
             f"userPassword: {password}"]
    lines += [f"sipdistDigestHA1: {value}" for value in hashes]
    return "\n".join(lines) + "\n"


PEOPLE_LDIF = "\n".join([
    person("alice", "wonderland",
           ["MD5:" + ha1("MD5", "alice", "wonderland"),
            "SHA-256:" + ha1("SHA-256", "alice", "wonderland")]),
    # Bare MD5 HA1 only, as older provisioning tools write it.
    person("bob", "builder", [ha1("MD5", "bob", "builder")]),
    person("carol", "nohash", []),
])


def startedSlapdWithAuthSchema(case):
    """
    A running slapd with C{etc/ldap/sipdist-auth.schema} and three people.
    """
    slapd.skipOrFail(case)
    server = slapd.Slapd()
    case.addCleanup(server.cleanup)
    with open(server.conf) as f:
        lines = f.read().splitlines()
    last = max(i for i, line in enumerate(lines) if line.startswith("include"))
    lines.insert(last + 1, f"include {SCHEMA}")
    with open(server.conf, "w") as f:
        f.write("\n".join(lines) + "\n")
    server.load(slapd.BASE_LDIF + "\n" + PEOPLE_LDIF)
    server.start()
    return server


class ParseTests(TemporaryPathMixin, SynchronousTestCase):
    """
    The C{ldap://} string and the attribute values.
    """

    def test_defaults(self):
        """
        Host, port, base and default options.
        """
        c = parseLDAPCredentials("ldap://127.0.0.1:3890/" + PEOPLE)
        self.assertEqual((c.host, c.port, c.base, c.mode, c.filter,
                          c.hashAttribute, c.ttl),
                         ("127.0.0.1", 3890, PEOPLE, "hash", "(uid={user})",
                          "sipdistDigestHA1", 60.0))

    def test_options(self):
        """
        Options come URL-encoded in the query; a password may come from a
        file.
        """
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("s3cret\n")
        c = parseLDAPCredentials(
            "ldap://h/dc=x?filter=%28cn%3D%7Buser%7D%29&hashAttribute=ha1"
            "&bindDN=cn%3Dsip%2Cdc%3Dx&passwordFile=" + path + "&ttl=5")
        self.assertEqual((c.port, c.filter, c.hashAttribute, c.bindDN,
                          c.bindPassword, c.ttl),
                         (389, "(cn={user})", "ha1", "cn=sip,dc=x", "s3cret",
                          5.0))

    def test_errors(self):
        """
        Bad strings raise L{CredentialsConfigError}.
        """
        for description in ("ldap://", "ldap://h", "ldap://h:x/dc=x",
                            "ldap://h/dc=x?nosuch=1", "ldap://h/dc=x?mode=y",
                            "ldap://h/dc=x?filter=(uid=x)",
                            "ldap://h/dc=x?ttl=-1",
                            "ldap://h/dc=x?passwordFile=/nonexistent"):
            self.assertRaises(CredentialsConfigError, parseLDAPCredentials,
                              description)

    def test_values(self):
        """
        C{ALGORITHM:HEX} values and bare hex (by length) are understood;
        anything else is ignored.
        """
        md5, sha = "a" * 32, "B" * 64
        self.assertEqual(
            parseHA1Values([b"MD5:" + md5.encode(), "sha-256:" + sha,
                            "SHA-256:zz", "x" * 10, "MD5:" + "a" * 31]),
            {"MD5": md5, "SHA-256": sha.lower()})
        self.assertEqual(parseHA1Values([md5, sha]),
                         {"MD5": md5, "SHA-256": sha.lower()})

    def test_escape(self):
        """
        Filter metacharacters in a user name are escaped (RFC 4515).
        """
        self.assertEqual(escapeFilterValue("a*(b)\\"), "a\\2a\\28b\\29\\5c")

    def test_bindModeNotForDigest(self):
        """
        A bind-mode checker cannot serve a L{DigestAuthenticator}.
        """
        checker = makeChecker(Clock(), "ldap://h/dc=x?mode=bind")
        self.assertIsInstance(checker, LDAPBindChecker)
        self.assertRaises(ValueError, DigestAuthenticator, REALM,
                          b"0123456789abcdef", checker, Clock())


class LDAPSourceTests(TestCase):
    """
    Digest against HA1 values read from a real slapd.
    """

    timeout = 60

    def setUp(self):
        self.slapd = startedSlapdWithAuthSchema(self)

    def authenticator(self, options=""):
        checker = makeChecker(reactor, f"{self.slapd.url}/{PEOPLE}{options}")
        self.addCleanup(checker.source.close)
        return DigestAuthenticator(REALM, b"a pool secret of 16+ bytes",
                                   checker, reactor), checker

    @inlineCallbacks
    def login(self, auth, user, password, algorithm="SHA-256"):
        challenge = yield auth.authenticate("REGISTER", URI, [], "h")
        values = [v for _, v in challenge.headers
                  if f"algorithm={algorithm}," in v]
        value, _ = answerChallenge(values, "REGISTER", URI, user, password)
        result = yield auth.authenticate("REGISTER", URI, [value], "h")
        return result

    @inlineCallbacks
    def test_hashMode(self):
        """
        Users with HA1 values in the directory authenticate with SHA-256
        and MD5; a bare MD5 value serves MD5 only.
        """
        auth, _ = self.authenticator()
        for user, password, algorithm in (
                ("alice", "wonderland", "SHA-256"),
                ("alice", "wonderland", "MD5"),
                ("bob", "builder", "MD5")):
            result = yield self.login(auth, user, password, algorithm)
            self.assertIsInstance(result, Authenticated)
            self.assertEqual(result.aor, f"sip:{user}@example.com")
        result = yield self.login(auth, "bob", "builder", "SHA-256")
        self.assertIsInstance(result, Challenge)

    @inlineCallbacks
    def test_failures(self):
        """
        A wrong password, an unknown user, a user without HA1 and a user
        name with filter metacharacters all get the same 401 challenge.
        """
        auth, _ = self.authenticator()
        for user, password in (("alice", "wrong"), ("mallory", "x"),
                               ("carol", "nohash"), ("*", "wonderland"),
                               ("alice)(uid=*", "wonderland")):
            result = yield self.login(auth, user, password)
            self.assertIsInstance(result, Challenge)
            self.assertEqual((result.code, result.stale), (401, False))

    @inlineCallbacks
    def test_cachedSynchronously(self):
        """
        Once looked up, a user is answered from the cache synchronously,
        even with the directory stopped.
        """
        auth, checker = self.authenticator("?ttl=300")
        self.assertIsNone(
            checker.source.cachedHA1("alice", REALM, "SHA-256"))
        result = yield self.login(auth, "alice", "wonderland")
        self.assertIsInstance(result, Authenticated)
        self.slapd.stop()
        d = checker.source.getHA1("alice", REALM, "SHA-256")
        self.assertEqual(self.successResultOf(d),
                         ha1("SHA-256", "alice", "wonderland"))
        self.assertEqual(checker.source.cachedHA1("alice", REALM, "SHA-256"),
                         ha1("SHA-256", "alice", "wonderland"))

    @inlineCallbacks
    def test_serviceAccount(self):
        """
        The source may bind with a service account; a wrong service
        password makes lookups fail (503 from the authenticator).
        """
        dn = slapd.ROOT_DN.replace(",", "%2C").replace("=", "%3D")
        auth, _ = self.authenticator(
            f"?bindDN={dn}&bindPassword={slapd.ROOT_PW}")
        result = yield self.login(auth, "alice", "wonderland")
        self.assertIsInstance(result, Authenticated)
        auth, _ = self.authenticator(f"?bindDN={dn}&bindPassword=wrong")
        result = yield self.login(auth, "alice", "wonderland")
        self.assertEqual((result.code, result.phrase),
                         (503, "Credentials source unavailable"))
        self.flushLoggedErrors(LDAPUnavailable)

    @inlineCallbacks
    def test_directoryDown(self):
        """
        With the directory down, an uncached user gets 503.
        """
        auth, _ = self.authenticator("?timeout=2")
        self.slapd.stop()
        result = yield self.login(auth, "alice", "wonderland")
        self.assertEqual(result.code, 503)
        self.flushLoggedErrors(LDAPUnavailable)


class LDAPBindTests(TestCase):
    """
    Bind mode checks plaintext passwords by binding as the user.
    """

    timeout = 60

    def setUp(self):
        self.slapd = startedSlapdWithAuthSchema(self)
        self.checker = makeChecker(
            reactor, f"{self.slapd.url}/{PEOPLE}?mode=bind")
        self.addCleanup(self.checker.close)

    @inlineCallbacks
    def test_bind(self):
        """
        The right password gives the user name; a wrong one, an empty one
        (an unauthenticated bind) and an unknown user fail.
        """
        user = yield self.checker.requestAvatarId(
            UsernamePassword(b"alice", b"wonderland"))
        self.assertEqual(user, "alice")
        for name, password in ((b"alice", b"wrong"), (b"alice", b""),
                               (b"mallory", b"x"), (b"*", b"wonderland")):
            with self.assertRaises(UnauthorizedLogin):
                yield self.checker.requestAvatarId(
                    UsernamePassword(name, password))


class ConcurrencyTests(TestCase):
    """
    Concurrent lookups share work and stay bounded.
    """

    timeout = 60

    def setUp(self):
        self.slapd = startedSlapdWithAuthSchema(self)

    @inlineCallbacks
    def test_sharedLookup(self):
        """
        Lookups of one user made at once share one search and all get the
        answer; lookups of other users at the same time use the same
        connection.
        """
        checker = makeChecker(reactor, f"{self.slapd.url}/{PEOPLE}")
        self.addCleanup(checker.source.close)
        source = checker.source
        ds = [source.getHA1("alice", REALM, "MD5") for _ in range(5)]
        ds.append(source.getHA1("bob", REALM, "MD5"))
        self.assertEqual(len(source._pending), 2)
        results = []
        for d in ds:
            results.append((yield d))
        self.assertEqual(results, [ha1("MD5", "alice", "wonderland")] * 5
                         + [ha1("MD5", "bob", "builder")])

    def test_pendingBounded(self):
        """
        Past C{maxPending} distinct users being looked up, a lookup fails
        at once with L{LDAPUnavailable}.
        """
        checker = makeChecker(reactor, f"{self.slapd.url}/{PEOPLE}")
        self.addCleanup(checker.source.close)
        source = checker.source
        source.maxPending = 2
        first = [source.getHA1(u, REALM, "MD5") for u in ("alice", "bob")]
        self.failureResultOf(source.getHA1("carol", REALM, "MD5"),
                             LDAPUnavailable)
        from twisted.internet.defer import gatherResults
        return gatherResults(first)


class HungDirectoryTests(TestCase):
    """
    A directory that holds its socket open and answers nothing (slapd
    stopped with SIGSTOP) delays no lookup past C{timeout}.
    """

    timeout = 60

    def setUp(self):
        self.slapd = startedSlapdWithAuthSchema(self)

    @inlineCallbacks
    def test_staleServedAndNewFails(self):
        """
        An expired entry is answered at once while the search runs in the
        background; a user never looked up fails with L{LDAPUnavailable}
        at the deadline.
        """
        import signal
        from tests.test_store_ldap import ShiftedClockReactor
        clock = ShiftedClockReactor(reactor)
        checker = makeChecker(clock, f"{self.slapd.url}/{PEOPLE}"
                                     f"?timeout=0.5&ttl=60")
        self.addCleanup(checker.source.close)
        source = checker.source
        alice = ha1("MD5", "alice", "wonderland")
        self.assertEqual((yield source.getHA1("alice", REALM, "MD5")), alice)
        pid = self.slapd.process.pid
        self.addCleanup(os.kill, pid, signal.SIGCONT)
        os.kill(pid, signal.SIGSTOP)
        clock.advance(61)
        self.assertEqual(self.successResultOf(
            source.getHA1("alice", REALM, "MD5")), alice)
        d = source.getHA1("bob", REALM, "MD5")
        d.addTimeout(5, reactor, onTimeoutCancel=lambda r, t: (_ for _ in ())
                     .throw(AssertionError(f"no answer within {t} s")))
        error = yield self.assertFailure(d, LDAPUnavailable)
        self.assertIn("LDAP directory 127.0.0.1", str(error))
