# -*- test-case-name: tests.test_auth_credentials -*-
"""
Tests for L{sipdist.auth.credentials}: twisted.cred parts and the
credentials file.
"""

import os
import shutil
import stat
import tempfile

from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import IUsernameDigestHash
from twisted.cred.error import UnauthorizedLogin
from twisted.cred.portal import IRealm, Portal
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from sipdist.auth.credentials import (
    CredentialsFileError, DigestHashChecker, FileDigestHashSource,
    InMemoryDigestHashSource, SIPDigestCredentials, SIPIdentity, SIPRealm,
    formatCredentialsLine, parseCredentialsFile, setPassword)
from sipdist.auth.digest import algorithm, computeHA1, computeResponse
from sipdist.auth.interfaces import (
    IDigestHashSource, ISIPDigestCredentials, ISIPIdentity)


class TemporaryPathMixin:
    """
    L{mktemp} under the system's temporary directory, removed after the
    test, whatever the runner's working directory (pytest runs in the
    source tree).
    """

    def mktemp(self):
        directory = tempfile.mkdtemp(prefix="sipdist-auth-")
        self.addCleanup(shutil.rmtree, directory, True)
        return os.path.join(directory, "f")


def credentialsFor(username, password, name="SHA-256", realm="example.com",
                   answerRealm=None):
    alg = algorithm(name)
    nonce, nc, cnonce, uri = "nonce", "00000001", "cnonce", "sip:example.com"
    ha1 = alg.H(f"{username}:{realm}:{password}")
    from sipdist.auth.digest import sessionHA1
    response = computeResponse(alg, sessionHA1(alg, ha1, nonce, cnonce),
                               nonce, nc, cnonce, "REGISTER", uri)
    return SIPDigestCredentials(username, answerRealm or realm, alg, nonce,
                                nc, cnonce, "auth", uri, "REGISTER", response)


class InterfaceTests(TemporaryPathMixin, SynchronousTestCase):
    """
    Each class provides its interface.
    """

    def test_verify(self):
        """
        Credentials, checker, realm, identity and sources verify.
        """
        creds = credentialsFor("alice", "pw")
        self.assertTrue(verifyObject(ISIPDigestCredentials, creds))
        self.assertTrue(IUsernameDigestHash.providedBy(creds))
        source = InMemoryDigestHashSource({})
        self.assertTrue(verifyObject(IDigestHashSource, source))
        self.assertTrue(verifyObject(ICredentialsChecker,
                                     DigestHashChecker(source)))
        self.assertTrue(verifyObject(IRealm, SIPRealm("example.com")))
        self.assertTrue(verifyObject(ISIPIdentity, SIPIdentity("a", "sip:a@b")))
        path = self.mktemp()
        setPassword(path, "a", "r", "p")
        self.assertTrue(verifyObject(IDigestHashSource,
                                     FileDigestHashSource(path)))


class CheckerTests(SynchronousTestCase):
    """
    L{DigestHashChecker} checks a response against the stored HA1.
    """

    def setUp(self):
        self.checker = DigestHashChecker(
            InMemoryDigestHashSource({"alice": "wonderland"}))

    def test_goodAllAlgorithms(self):
        """
        The right password is accepted for every algorithm, synchronously,
        and the session HA1 is kept on the credentials.
        """
        for name in ("MD5", "MD5-sess", "SHA-256", "SHA-256-sess"):
            creds = credentialsFor("alice", "wonderland", name)
            self.assertEqual(
                self.successResultOf(self.checker.requestAvatarId(creds)),
                "alice")
            self.assertIsNotNone(creds.sessionHA1)

    def test_wrongPasswordUnknownUserOtherRealm(self):
        """
        A wrong password, an unknown user and a response hashed for another
        realm all fail with L{UnauthorizedLogin}.
        """
        for creds in (credentialsFor("alice", "wrong"),
                      credentialsFor("mallory", "wonderland"),
                      credentialsFor("alice", "wonderland",
                                     realm="example.org",
                                     answerRealm="example.com")):
            self.failureResultOf(self.checker.requestAvatarId(creds),
                                 UnauthorizedLogin)
            self.assertIsNone(creds.sessionHA1)

    def test_nonASCIIResponse(self):
        """
        A response holding non-ASCII characters simply fails.
        """
        creds = credentialsFor("alice", "wonderland")
        creds.response = "é" * 64
        self.failureResultOf(self.checker.requestAvatarId(creds),
                             UnauthorizedLogin)

    def test_portal(self):
        """
        Through a L{Portal} with L{SIPRealm} the avatar is the user's AOR.
        """
        portal = Portal(SIPRealm("example.com"), [self.checker])
        iface, identity, logout = self.successResultOf(
            portal.login(credentialsFor("alice", "wonderland"), None,
                         ISIPIdentity))
        self.assertIs(iface, ISIPIdentity)
        self.assertEqual((identity.username, identity.aor),
                         ("alice", "sip:alice@example.com"))
        logout()


class CredentialsFileTests(TemporaryPathMixin, SynchronousTestCase):
    """
    The credentials file stores HA1 digests, never passwords.
    """

    def test_setPasswordCreates(self):
        """
        A new file is created with mode 0600, a comment header and one line
        per user holding the MD5 and SHA-256 HA1; the password is not in it.
        """
        path = self.mktemp()
        self.assertTrue(setPassword(path, "alice", "example.com", "s3cret"))
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)
        with open(path) as f:
            text = f.read()
        self.assertNotIn("s3cret", text)
        self.assertTrue(text.startswith("#"))
        line = text.splitlines()[-1]
        self.assertEqual(line.split(":"), [
            "alice", "example.com",
            computeHA1(algorithm("MD5"), "alice", "example.com", "s3cret"),
            computeHA1(algorithm("SHA-256"), "alice", "example.com",
                       "s3cret")])

    def test_setPasswordChanges(self):
        """
        Changing a password replaces the user's line and keeps comments,
        other users, the file's permissions; no temporary file is left.
        """
        path = self.mktemp()
        os.mkdir(path)
        path = os.path.join(path, "users")
        with open(path, "w") as f:
            f.write("# my users\n\n"
                    + formatCredentialsLine("bob", "r", "b") + "\n"
                    + formatCredentialsLine("alice", "r", "old") + "\n")
        os.chmod(path, 0o640)
        self.assertFalse(setPassword(path, "alice", "r", "new"))
        self.assertTrue(setPassword(path, "alice", "other", "x"))
        with open(path) as f:
            text = f.read()
        self.assertEqual(text.splitlines(), [
            "# my users", "",
            formatCredentialsLine("bob", "r", "b"),
            formatCredentialsLine("alice", "r", "new"),
            formatCredentialsLine("alice", "other", "x")])
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o640)
        self.assertEqual(os.listdir(os.path.dirname(path)), ["users"])

    def test_badNames(self):
        """
        A user name or realm with a colon, a space or nothing is refused.
        """
        path = self.mktemp()
        for user, realm in (("a:b", "r"), ("a b", "r"), ("", "r"),
                            ("a", "r:x"), ("a", "")):
            self.assertRaises(CredentialsFileError, setPassword, path, user,
                              realm, "pw")
        self.assertFalse(os.path.exists(path))

    def test_parseErrors(self):
        """
        A bad line is reported with the file name and line number.
        """
        good = formatCredentialsLine("alice", "r", "pw")
        fields = good.split(":")
        cases = [
            "alice:r:abc",
            ":".join(fields[:2] + ["z" * 32] + fields[3:]),
            ":".join(fields[:3] + ["0" * 63]),
            ":".join(["al ice"] + fields[1:]),
            good + "\n" + good,
        ]
        for text in cases:
            e = self.assertRaises(CredentialsFileError, parseCredentialsFile,
                                  "# c\n" + text, "users")
            self.assertTrue(str(e).startswith("users:2") or
                            str(e).startswith("users:3"), str(e))

    def test_source(self):
        """
        The file source answers from memory and re-reads on L{reload}; a
        broken file on reload keeps the previous users.
        """
        path = self.mktemp()
        setPassword(path, "alice", "r", "pw")
        source = FileDigestHashSource(path)
        self.assertEqual(
            self.successResultOf(source.getHA1("alice", "r", "SHA-256")),
            computeHA1(algorithm("SHA-256"), "alice", "r", "pw"))
        self.assertIsNone(
            self.successResultOf(source.getHA1("bob", "r", "MD5")))
        setPassword(path, "bob", "r", "b")
        source.reload()
        self.assertEqual(len(source), 2)
        with open(path, "a") as f:
            f.write("broken\n")
        self.assertRaises(CredentialsFileError, source.reload)
        self.assertEqual(len(source), 2)

    def test_cachedHA1(self):
        """
        The file source's C{cachedHA1} gives the HA1 without looking at the
        file, and L{None} when a look is due (L{getHA1} looks) or the user
        is unknown.
        """
        path = self.mktemp()
        setPassword(path, "alice", "r", "pw")
        clock = Clock()
        source = FileDigestHashSource(path, clock, checkInterval=1.0)
        expected = computeHA1(algorithm("MD5"), "alice", "r", "pw")
        self.assertEqual(source.cachedHA1("alice", "r", "MD5"), expected)
        self.assertIsNone(source.cachedHA1("bob", "r", "MD5"))
        clock.advance(1)
        self.assertIsNone(source.cachedHA1("alice", "r", "MD5"))
        self.successResultOf(source.getHA1("alice", "r", "MD5"))
        self.assertEqual(source.cachedHA1("alice", "r", "MD5"), expected)
        memory = InMemoryDigestHashSource({"alice": "pw"})
        self.assertEqual(memory.cachedHA1("alice", "r", "MD5"), expected)
        self.assertIsNone(memory.cachedHA1("bob", "r", "MD5"))

    def test_missingFile(self):
        """
        A missing file is a L{CredentialsFileError} naming it.
        """
        e = self.assertRaises(CredentialsFileError, FileDigestHashSource,
                              "/nonexistent/users")
        self.assertIn("/nonexistent/users", str(e))
