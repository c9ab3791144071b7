# -*- test-case-name: tests.test_auth_client -*-
"""
Tests for L{sipdist.auth.client} and L{sipdist.auth.signature}: a client
acts on a 200 or 301 only when its signature checks.
"""

import hmac

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from sipdist.auth.client import (
    ChallengeError, answerChallenge, chooseChallenge, verifySignature)
from sipdist.auth.credentials import (
    DigestHashChecker, InMemoryDigestHashSource)
from sipdist.auth.digest import parseDigest
from sipdist.auth import signature as _signature
from sipdist.auth.server import Authenticated, DigestAuthenticator

URI = "sip:example.com"
CALL_ID = "a84b4c76e66710@pc33.example.com"
CSEQ = "314159 REGISTER"
CONTACT = "<sip:home2.example.com:5061;transport=tls>"
BACKUP = "<sip:home3.example.com:5061;transport=tls>"


class SignatureFormulaTests(SynchronousTestCase):
    """
    The signature is the HMAC-SHA-256 the module documents.
    """

    def test_formula(self):
        """
        Versions 1 and 2, keyed by the session HA1 (MD5 or SHA-256 length,
        or longer than a SHA-256 block), over the fields joined by NULs.
        """
        for key in ("a" * 32, "b" * 64, "c" * 65):
            for version, backup in ((1, None), (2, BACKUP)):
                message = "\x00".join(
                    [f"sipdist-signature-{version}", "n", "cn", "00000001",
                     "301", CALL_ID, CSEQ, CONTACT]
                    + ([backup] if version == 2 else []))
                expected = hmac.digest(key.encode(), message.encode(),
                                       "sha256").hex()
                for _ in range(2):
                    self.assertEqual(_signature.computeSignature(
                        key, "n", "cn", "00000001", 301, CALL_ID, CSEQ,
                        CONTACT, backup, version), expected)

    def test_bounded(self):
        """
        The table of remembered keys is emptied when full.
        """
        self.patch(_signature, "MAX_KEYS_REMEMBERED", 2)
        self.patch(_signature, "_PADS", {})
        for key in ("a" * 32, "b" * 32, "c" * 32):
            _signature.computeSignature(key, "n", "cn", "00000001", 200,
                                        CALL_ID, CSEQ, None)
        self.assertEqual(list(_signature._PADS), [b"c" * 32])


class ChooseTests(SynchronousTestCase):
    """
    The client answers the strongest challenge it supports.
    """

    def test_preferSHA256(self):
        """
        SHA-256 is chosen over MD5 whatever the order.
        """
        md5 = 'Digest realm="r", nonce="n1", algorithm=MD5, qop="auth"'
        sha = 'Digest realm="r", nonce="n2", algorithm=SHA-256, qop="auth"'
        self.assertEqual(chooseChallenge([md5, sha])["nonce"], "n2")
        value, session = answerChallenge([md5, sha], "REGISTER", URI,
                                         "alice", "pw", cnonce="c")
        self.assertEqual(session.algorithm.name, "SHA-256")
        params = parseDigest(value)
        self.assertEqual(
            (params["algorithm"], params["nc"], params["qop"],
             params["cnonce"], params["uri"]),
            ("SHA-256", "00000001", "auth", "c", URI))

    def test_unusable(self):
        """
        Without a Digest challenge with a known algorithm and C{qop=auth},
        L{ChallengeError} is raised.
        """
        for values in ([], ['Basic realm="r"'],
                       ['Digest realm="r", nonce="n", algorithm=SHA-512'
                        ', qop="auth"'],
                       ['Digest realm="r", nonce="n", qop="auth-int"'],
                       ['Digest realm="r", nonce="n"']):
            self.assertRaises(ChallengeError, answerChallenge, values,
                              "REGISTER", URI, "alice", "pw")

    def test_opaqueEchoed(self):
        """
        An C{opaque} in the challenge is sent back.
        """
        value, _ = answerChallenge(
            ['Digest realm="r", nonce="n", opaque="o\\"x", qop="auth"'],
            "REGISTER", URI, "alice", "pw")
        self.assertEqual(parseDigest(value)["opaque"], 'o"x')


class SessionCopyTests(SynchronousTestCase):
    """
    L{ClientSession.copy}: a session to authorise one request with.
    """

    def test_copyIndependent(self):
        """
        A copy answers like its original, and authorising with it (its
        nonce count, its Request-URI) leaves the original as it was.
        """
        _, session = answerChallenge(
            ['Digest realm="r", nonce="n", opaque="o", qop="auth"'],
            "REGISTER", URI, "alice", "pw")
        before = (session.nc, session.uri)
        other = session.copy()
        self.assertEqual(other.authorize("REGISTER", "sip:other", 7),
                         session.copy().authorize("REGISTER", "sip:other",
                                                  7))
        self.assertEqual((other.nc, other.uri), ("00000007", "sip:other"))
        self.assertEqual((session.nc, session.uri), before)
        self.assertEqual((other.opaque, other.cnonce, other.realm),
                         (session.opaque, session.cnonce, session.realm))


class SignatureTests(SynchronousTestCase):
    """
    The headers from L{DigestAuthenticator.sign} verify with
    L{verifySignature}, and any change makes them fail.
    """

    def setUp(self):
        clock = Clock()
        clock.advance(1_700_000_000)
        self.auth = DigestAuthenticator(
            "example.com", b"pool secret of enough length", DigestHashChecker(
                InMemoryDigestHashSource({"alice": "wonderland"})), clock,
            algorithms=("SHA-256", "MD5", "MD5-sess"))
        self.challenge = [v for _, v in self.successResultOf(
            self.auth.authenticate("REGISTER", URI, [], "h")).headers]

    def login(self, challenge=None, password="wonderland"):
        value, session = answerChallenge(
            self.challenge if challenge is None else challenge,
            "REGISTER", URI, "alice", password)
        result = self.successResultOf(
            self.auth.authenticate("REGISTER", URI, [value], "h"))
        self.assertIsInstance(result, Authenticated)
        return result, session

    def test_redirect(self):
        """
        A signed 301 verifies; the Authentication-Info carries rspauth, qop,
        cnonce and nc.
        """
        result, session = self.login()
        headers = self.auth.sign(result, 301, CALL_ID, CSEQ, CONTACT)
        self.assertEqual([n for n, _ in headers],
                         ["Authentication-Info", "Sipdist-Signature"])
        info = parseDigest("Digest " + headers[0][1])
        self.assertEqual((info["qop"], info["nc"], info["cnonce"]),
                         ("auth", "00000001", session.cnonce))
        self.assertTrue(verifySignature(session, 301, CALL_ID, CSEQ,
                                        CONTACT, headers))

    def test_ok(self):
        """
        A signed 200 without Contact verifies; header names are matched
        case-insensitively and a mapping works too.
        """
        result, session = self.login()
        headers = self.auth.sign(result, 200, CALL_ID, CSEQ)
        self.assertTrue(verifySignature(session, 200, CALL_ID, CSEQ, None,
                                        headers))
        lowered = {n.lower(): v for n, v in headers}
        self.assertTrue(verifySignature(session, 200, CALL_ID, CSEQ, None,
                                        lowered))

    def test_md5sess(self):
        """
        Signing works with an MD5-sess exchange.
        """
        result, session = self.login(
            [v for v in self.challenge if "MD5-sess" in v])
        self.assertEqual(result.algorithm, "MD5-sess")
        headers = self.auth.sign(result, 301, CALL_ID, CSEQ, CONTACT)
        self.assertTrue(verifySignature(session, 301, CALL_ID, CSEQ,
                                        CONTACT, headers))

    def test_tamperedContact(self):
        """
        A 301 whose Contact was changed is rejected.
        """
        result, session = self.login()
        headers = self.auth.sign(result, 301, CALL_ID, CSEQ, CONTACT)
        for contact in ("<sip:evil.example.net:5061;transport=tls>",
                        "<sip:home2.example.com:5061>", None):
            self.assertFalse(verifySignature(session, 301, CALL_ID, CSEQ,
                                             contact, headers))

    def test_tamperedFields(self):
        """
        Another status code, Call-ID or CSeq is rejected.
        """
        result, session = self.login()
        headers = self.auth.sign(result, 301, CALL_ID, CSEQ, CONTACT)
        self.assertFalse(verifySignature(session, 302, CALL_ID, CSEQ,
                                         CONTACT, headers))
        self.assertFalse(verifySignature(session, 301, "other", CSEQ,
                                         CONTACT, headers))
        self.assertFalse(verifySignature(session, 301, CALL_ID,
                                         "314160 REGISTER", CONTACT, headers))

    def test_backupCovered(self):
        """
        A 301 naming a backup is signed with version 2 over the backup: it
        verifies with the backup as sent, and not without it.  A 301
        without a backup keeps version 1.
        """
        result, session = self.login()
        headers = self.auth.sign(result, 301, CALL_ID, CSEQ, CONTACT,
                                 BACKUP)
        self.assertIn("v=2", dict(headers)["Sipdist-Signature"])
        self.assertTrue(verifySignature(session, 301, CALL_ID, CSEQ,
                                        CONTACT, headers, BACKUP))
        self.assertFalse(verifySignature(session, 301, CALL_ID, CSEQ,
                                         CONTACT, headers))
        plain = self.auth.sign(result, 301, CALL_ID, CSEQ, CONTACT)
        self.assertIn("v=1", dict(plain)["Sipdist-Signature"])

    def test_tamperedBackup(self):
        """
        A 301 whose backup was changed, or a version 1 signature offered
        with a backup added to the response, is rejected.
        """
        result, session = self.login()
        headers = self.auth.sign(result, 301, CALL_ID, CSEQ, CONTACT,
                                 BACKUP)
        for backup in ("<sip:evil.example.net:5060>",
                       "<sip:home4.example.com:5061;transport=tls>", ""):
            self.assertFalse(verifySignature(session, 301, CALL_ID, CSEQ,
                                             CONTACT, headers, backup))
        plain = self.auth.sign(result, 301, CALL_ID, CSEQ, CONTACT)
        self.assertFalse(verifySignature(session, 301, CALL_ID, CSEQ,
                                         CONTACT, plain, BACKUP))

    def test_missingOrForged(self):
        """
        A missing, repeated or forged rspauth or signature is rejected.
        """
        result, session = self.login()
        info, signature = self.auth.sign(result, 301, CALL_ID, CSEQ, CONTACT)

        def check(headers):
            return verifySignature(session, 301, CALL_ID, CSEQ, CONTACT,
                                   headers)

        self.assertFalse(check([info]))
        self.assertFalse(check([signature]))
        self.assertFalse(check([info, info, signature]))
        forgedInfo = (info[0], info[1].replace('rspauth="', 'rspauth="0'))
        self.assertFalse(check([forgedInfo, signature]))
        noRspauth = (info[0], "qop=auth, cnonce=\"%s\", nc=00000001"
                     % session.cnonce)
        self.assertFalse(check([noRspauth, signature]))
        forgedSig = (signature[0], signature[1][:-3] + 'é0"')
        self.assertFalse(check([info, forgedSig]))
        self.assertFalse(check([info, (signature[0], "garbage")]))
        self.assertTrue(check([info, signature]))

    def test_otherSession(self):
        """
        Headers signed for one exchange do not verify for another (another
        cnonce, or the same user logging in again).
        """
        result, _ = self.login()
        headers = self.auth.sign(result, 301, CALL_ID, CSEQ, CONTACT)
        fresh = [v for _, v in self.successResultOf(
            self.auth.authenticate("REGISTER", URI, [], "h")).headers]
        _, other = self.login(fresh)
        self.assertFalse(verifySignature(other, 301, CALL_ID, CSEQ, CONTACT,
                                         headers))

    def test_forgedByImpostor(self):
        """
        A server that does not know the password cannot produce a signature
        the client accepts: an impostor computing it from a wrong HA1 fails.
        """
        clock = Clock()
        clock.advance(1_700_000_000)
        impostor = DigestAuthenticator(
            "example.com", b"pool secret of enough length", DigestHashChecker(
                InMemoryDigestHashSource({"alice": "guess"})), clock)
        value, session = answerChallenge(self.challenge, "REGISTER", URI,
                                         "alice", "wonderland")
        # The impostor cannot even authenticate the request; build what it
        # would send from the credentials it sees and its guessed HA1.
        from sipdist.auth.credentials import SIPDigestCredentials
        from sipdist.auth.digest import algorithm
        p = parseDigest(value)
        creds = SIPDigestCredentials(
            "alice", "example.com", algorithm(p["algorithm"]), p["nonce"],
            p["nc"], p["cnonce"], "auth", p["uri"], "REGISTER", p["response"])
        creds.sessionHA1 = algorithm("SHA-256").H(
            "alice:example.com:guess")
        fake = Authenticated("alice", "sip:alice@example.com",
                             "example.com", creds)
        headers = impostor.sign(fake, 301, CALL_ID, CSEQ, CONTACT)
        self.assertFalse(verifySignature(session, 301, CALL_ID, CSEQ,
                                         CONTACT, headers))

    def test_unusedSession(self):
        """
        A session that authorised nothing verifies nothing.
        """
        from sipdist.auth.client import ClientSession
        from sipdist.auth.digest import algorithm
        session = ClientSession("alice", "example.com", algorithm("MD5"),
                                "0" * 32, "n", "c")
        self.assertFalse(verifySignature(session, 200, CALL_ID, CSEQ, None,
                                         []))
