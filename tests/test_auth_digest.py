# -*- test-case-name: tests.test_auth_digest -*-
"""
Tests for L{sipdist.auth.digest}: the Digest computations and header syntax.
"""

import hashlib

from hypothesis import given, settings, strategies as st
from twisted.trial.unittest import SynchronousTestCase

from sipdist.auth import digest
from sipdist.auth.digest import (
    ALGORITHMS, DigestParseError, algorithm, challenge, challengeLines,
    computeHA1,
    computeResponse, computeRspauth, formatParams, parseDigest, parseParams,
    sessionHA1)

# RFC 7616 section 3.9.1.
RFC_USER = "Mufasa"
RFC_REALM = "http-auth@example.org"
RFC_PASSWORD = "Circle of Life"
RFC_NONCE = "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v"
RFC_CNONCE = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ"
RFC_URI = "/dir/index.html"
RFC_OPAQUE = "FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"
RFC_MD5_RESPONSE = "8ca523f5e9506fed4657c9700eebdbec"
RFC_SHA256_RESPONSE = (
    "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1")

RFC_AUTHORIZATION_SHA256 = (
    'Digest username="Mufasa",'
    ' realm="http-auth@example.org", uri="/dir/index.html",'
    ' algorithm=SHA-256, nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",'
    ' nc=00000001, cnonce="f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",'
    ' qop=auth,'
    ' response="753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1",'
    ' opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"')


class RFC7616ExampleTests(SynchronousTestCase):
    """
    The example of RFC 7616 section 3.9.1 is reproduced exactly.
    """

    def _response(self, name):
        alg = algorithm(name)
        ha1 = computeHA1(alg, RFC_USER, RFC_REALM, RFC_PASSWORD)
        return computeResponse(alg, ha1, RFC_NONCE, "00000001", RFC_CNONCE,
                               "GET", RFC_URI)

    def test_sha256(self):
        """
        The SHA-256 response of the example is 753927fa....
        """
        self.assertEqual(self._response("SHA-256"), RFC_SHA256_RESPONSE)

    def test_md5(self):
        """
        The MD5 response of the example is 8ca523f5....
        """
        self.assertEqual(self._response("MD5"), RFC_MD5_RESPONSE)

    def test_md5SameAsHashlib(self):
        """
        MD5 (from the interpreter's own module where it has one) gives
        what L{hashlib.md5} gives, for texts of any length and characters.
        """
        alg = algorithm("MD5")
        for text in ("", "a", "Mufasa:testrealm@host.com:Circle Of Life",
                     "\u00e9t\u00e9:" * 40, "x" * 1000):
            self.assertEqual(
                alg.H(text),
                hashlib.md5(text.encode("utf-8")).hexdigest())

    def test_parseExampleAuthorization(self):
        """
        The example's Authorization value parses into its parameters, and
        recomputing the response from them gives the value it carries.
        """
        params = parseDigest(RFC_AUTHORIZATION_SHA256)
        self.assertEqual(params["username"], RFC_USER)
        self.assertEqual(params["nc"], "00000001")
        self.assertEqual(params["opaque"], RFC_OPAQUE)
        alg = algorithm(params["algorithm"])
        ha1 = computeHA1(alg, RFC_USER, params["realm"], RFC_PASSWORD)
        self.assertEqual(
            computeResponse(alg, ha1, params["nonce"], params["nc"],
                            params["cnonce"], "GET", params["uri"],
                            params["qop"]),
            params["response"])


class AlgorithmTests(SynchronousTestCase):
    """
    Algorithm names and the C{-sess} forms.
    """

    def test_names(self):
        """
        The four algorithms are known, case-insensitively; no algorithm
        means MD5; anything else is a 400.
        """
        self.assertEqual(algorithm("sha-256-SESS").name, "SHA-256-sess")
        self.assertEqual(algorithm(None).name, "MD5")
        self.assertEqual(sorted(ALGORITHMS),
                         ["MD5", "MD5-sess", "SHA-256", "SHA-256-sess"])
        e = self.assertRaises(DigestParseError, algorithm, "SHA-512-256")
        self.assertEqual((e.code, e.phrase),
                         (400, "Unsupported digest algorithm"))

    def test_sessionHA1(self):
        """
        A C{-sess} algorithm enters H(HA1:nonce:cnonce) into the response;
        the others HA1 itself.
        """
        sess = algorithm("SHA-256-sess")
        self.assertEqual(sess.base, "SHA-256")
        self.assertEqual(sessionHA1(sess, "aa", "n", "c"), sess.H("aa:n:c"))
        self.assertEqual(sessionHA1(algorithm("SHA-256"), "aa", "n", "c"),
                         "aa")

    def test_rspauth(self):
        """
        C{rspauth} is the response with an empty method (RFC 7616 3.5).
        """
        alg = algorithm("MD5")
        self.assertEqual(
            computeRspauth(alg, "h", "n", "00000001", "c", "sip:x"),
            alg.H("h:n:00000001:c:auth:" + alg.H(":sip:x")))


class ParseTests(SynchronousTestCase):
    """
    L{parseDigest} reads the RFC 3261 syntax and rejects the rest with a
    400 and a reason phrase.
    """

    def test_quotedAndTokens(self):
        """
        Quoted strings lose their quotes and escapes; tokens stay as they
        are; names are lower-cased; spacing around C{=} and C{,} is allowed.
        """
        self.assertEqual(
            parseDigest('digest Username = "a\\"b\\\\c" ,nc=0000000a,'
                        'QOP=auth, uri="sip:x@y;transport=tcp"'),
            {"username": 'a"b\\c', "nc": "0000000a", "qop": "auth",
             "uri": "sip:x@y;transport=tcp"})

    def test_commaInQuotedString(self):
        """
        A comma inside a quoted string does not split parameters.
        """
        self.assertEqual(parseDigest('Digest qop="auth,auth-int", a=b'),
                         {"qop": "auth,auth-int", "a": "b"})

    def test_malformed(self):
        """
        Each malformed value raises L{DigestParseError} with code 400 and a
        reason phrase saying what is wrong.
        """
        cases = [
            ("", "Malformed Authorization header"),
            ("Digest", "Malformed Authorization header"),
            ("Digest ", "Malformed Authorization header"),
            ('Basic dXNlcjpwdw==', "Unsupported authorization scheme"),
            ('Digest username="alice', "Malformed Authorization header"),
            ('Digest username=', "Malformed Authorization header"),
            ('Digest username="a",', "Malformed Authorization header"),
            ('Digest username="a",,nc=1', "Malformed Authorization header"),
            ('Digest username="a" nc=1', "Malformed Authorization header"),
            ('Digest =x', "Malformed Authorization header"),
            ('Digest a=b, a=c', "Repeated digest parameter a"),
            ('Digest a="x\r\ny"', "Malformed Authorization header"),
            ('Digest a=' + "x" * 5000, "Authorization header too long"),
            ('Digest ' + ", ".join(f"p{i}=1" for i in range(40)),
             "Too many digest parameters"),
        ]
        for value, phrase in cases:
            e = self.assertRaises(DigestParseError, parseDigest, value)
            self.assertEqual((e.code, e.phrase), (400, phrase), value)

    @settings(max_examples=300, deadline=None)
    @given(st.text(max_size=200))
    def test_fuzz(self, text):
        """
        Any text either parses into a dictionary or raises
        L{DigestParseError}; nothing else.
        """
        for value in (text, "Digest " + text):
            try:
                result = parseDigest(value)
            except DigestParseError as e:
                self.assertEqual(e.code, 400)
            else:
                self.assertIsInstance(result, dict)

    @settings(max_examples=200, deadline=None)
    @given(st.dictionaries(
        st.from_regex(r"[a-z][a-z0-9-]{0,8}", fullmatch=True),
        st.text(st.characters(blacklist_categories=("Cs", "Cc")),
                max_size=30),
        min_size=1, max_size=10))
    def test_roundTrip(self, params):
        """
        What L{formatParams} writes, L{parseDigest} reads back.
        """
        value = formatParams([(k, v, True) for k, v in params.items()])
        self.assertEqual(parseDigest(value), params)

    def test_parseParams(self):
        """
        L{parseParams} reads parameters without a scheme, as in
        C{Authentication-Info}.
        """
        self.assertEqual(parseParams('qop=auth, rspauth="ab", nc=00000001'),
                         {"qop": "auth", "rspauth": "ab", "nc": "00000001"})


class ChallengeTests(SynchronousTestCase):
    """
    L{challenge} builds one value per algorithm, in the order given.
    """

    def test_order(self):
        """
        By default SHA-256 comes first, then MD5, with the same nonce and
        C{qop="auth"}; C{stale=true} is added when asked.
        """
        values = challenge("example.com", "N", stale=True)
        self.assertEqual(values, [
            'Digest realm="example.com", nonce="N", stale=true, '
            'algorithm=SHA-256, qop="auth"',
            'Digest realm="example.com", nonce="N", stale=true, '
            'algorithm=MD5, qop="auth"',
        ])
        self.assertEqual(parseDigest(values[0])["realm"], "example.com")

    def test_lines(self):
        """
        L{challengeLines} gives the header lines of L{challenge}'s values,
        joined by CRLF, for each header, realm and algorithms, each nonce
        in its place; a nonce that would need quoting is quoted as
        L{challenge} quotes it.
        """
        for header in ("WWW-Authenticate", "Proxy-Authenticate"):
            for algorithms in (("MD5",), ("SHA-256", "MD5"),
                               ("MD5-sess", "SHA-256", "MD5")):
                for realm in ("example.com", "other realm"):
                    for nonce in ("N1", "abc/def+0==", 'q"uote',
                                  "back\\slash", "N1"):
                        with self.subTest(header=header, nonce=nonce):
                            self.assertEqual(
                                challengeLines(header, realm, nonce,
                                               algorithms),
                                "\r\n".join(
                                    f"{header}: {value}" for value in
                                    challenge(realm, nonce,
                                              list(algorithms))))

    def test_linesBounded(self):
        """
        L{challengeLines} remembers the texts of at most
        C{MAX_CHALLENGES_REMEMBERED} headers, realms and algorithms.
        """
        self.addCleanup(digest._CHALLENGE_LINES.clear)
        for i in range(digest.MAX_CHALLENGES_REMEMBERED * 2 + 3):
            challengeLines("WWW-Authenticate", f"realm{i}", "N", ("MD5",))
            self.assertLessEqual(len(digest._CHALLENGE_LINES),
                                 digest.MAX_CHALLENGES_REMEMBERED)
