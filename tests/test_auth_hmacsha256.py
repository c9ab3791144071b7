# -*- test-case-name: tests.test_auth_hmacsha256 -*-
"""
Tests for L{sipdist.auth.hmacsha256}: every implementation gives the HMAC
of L{hmac}, and the module picks the one meant for the interpreter.
"""

import hmac
import sys
import threading

from twisted.trial.unittest import SynchronousTestCase

from sipdist.auth import hmacsha256

# (key, prefix, message): keys shorter than, as long as and longer than a
# SHA-256 block, empty and long prefixes and messages.
CASES = [
    (b"Jefe", b"", b"what do ya want for nothing?"),
    (b"k" * 64, b"sipdist-nonce-1\x00example.com\x00", b"\x00" * 16),
    (b"\xaa" * 131, b"", b""),
    (b"0123456789abcdef0123456789abcdef", b"", bytes(range(256)) * 5),
    (b"", b"p" * 200, b"m"),
]


class ImplementationMixin:
    """
    The contract of an HMAC-SHA-256 class (C{self.cls}).
    """

    def test_sameAsHMAC(self):
        """
        C{cls(key, prefix).digest(message)} is HMAC-SHA-256(key, prefix +
        message), the same key giving it for many messages.
        """
        for key, prefix, message in CASES:
            mac = self.cls(key, prefix)
            for extra in (b"", b"1", b"22" * 40):
                self.assertEqual(
                    mac.digest(message + extra),
                    hmac.new(key, prefix + message + extra,
                             "sha256").digest(),
                    (key, prefix, message, extra))

    def test_threads(self):
        """
        One object used from several threads at once gives every thread the
        right digests.
        """
        mac = self.cls(b"shared-key", b"prefix")
        wrong = []

        def work(n):
            for i in range(300):
                message = b"%d-%d" % (n, i)
                if mac.digest(message) != hmac.new(
                        b"shared-key", b"prefix" + message,
                        "sha256").digest():
                    wrong.append(message)

        threads = [threading.Thread(target=work, args=(n,))
                   for n in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        self.assertEqual(wrong, [])


class HashlibHMACTests(ImplementationMixin, SynchronousTestCase):
    """
    L{hmacsha256.HashlibHMAC}, on every interpreter.
    """

    cls = hmacsha256.HashlibHMAC


class OpenSSLHMACTests(ImplementationMixin, SynchronousTestCase):
    """
    L{hmacsha256.OpenSSLHMAC}, on PyPy.
    """

    cls = hmacsha256.OpenSSLHMAC
    if cls is None:
        skip = "PyPy's OpenSSL binding only"


class ChoiceTests(SynchronousTestCase):
    """
    The implementation the module picks.
    """

    def test_choice(self):
        """
        On PyPy with its OpenSSL binding the module computes through that
        binding; elsewhere through L{hashlib}.
        """
        if sys.implementation.name == "pypy" and (
                hmacsha256.OpenSSLHMAC is not None):
            self.assertEqual(hmacsha256.IMPLEMENTATION, "openssl-cffi")
            self.assertIs(hmacsha256.HMACSHA256, hmacsha256.OpenSSLHMAC)
        else:
            self.assertEqual(hmacsha256.IMPLEMENTATION, "hashlib")
            self.assertIs(hmacsha256.HMACSHA256, hmacsha256.HashlibHMAC)

    def test_brokenImplementationRefused(self):
        """
        An implementation that does not give RFC 4231's answers is not
        used.
        """
        class Wrong(hmacsha256.HashlibHMAC):
            def digest(self, message):
                return b"\x00" * 32

        self.assertTrue(hmacsha256._works(hmacsha256.HashlibHMAC))
        self.assertFalse(hmacsha256._works(Wrong))
