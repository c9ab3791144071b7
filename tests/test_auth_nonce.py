# -*- test-case-name: tests.test_auth_nonce -*-
"""
Tests for L{sipdist.auth.nonce}: stateless nonces and the nonce count table.
"""

import base64
import hmac
import struct

try:
    import tracemalloc
    tracemalloc.is_tracing()
except ImportError:
    # PyPy has no tracemalloc (its allocator is its garbage collector's).
    tracemalloc = None

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from sipdist.auth.nonce import (
    INVALID, STALE, VALID, NonceCounts, NonceFactory)

SECRET = b"0123456789abcdef-pool-secret"


def clockAt(t=1_700_000_000):
    clock = Clock()
    clock.advance(t)
    return clock


class NonceFactoryTests(SynchronousTestCase):
    """
    Nonces are checked by any server holding the secret, without state.
    """

    def test_validAcrossServers(self):
        """
        A nonce minted by one server is valid at another server of the pool
        (same secret and realm), and two nonces minted at the same time
        differ.
        """
        clock = clockAt()
        one = NonceFactory(SECRET, "example.com", clock)
        two = NonceFactory(SECRET, "example.com", clock)
        nonce = one.mint()
        self.assertEqual(two.check(nonce), VALID)
        self.assertNotEqual(nonce, one.mint())
        self.assertEqual(two.issued(nonce), 1_700_000_000)

    def test_format(self):
        """
        A nonce is base64url(T || S || M) without padding, M the first 16
        bytes of HMAC-SHA-256(secret, "sipdist-nonce-1" 0 realm 0 T S), for
        a secret of any length (longer than a SHA-256 block too).
        """
        for secret in (SECRET, b"k" * 64, b"a much longer secret " * 5):
            factory = NonceFactory(secret, "example.com", clockAt(),
                                   random=lambda n: b"\x07" * n)
            raw = base64.urlsafe_b64decode(factory.mint() + "=")
            head = struct.pack(">Q", 1_700_000_000) + b"\x07" * 8
            mac = hmac.digest(secret, b"sipdist-nonce-1\x00example.com\x00"
                              + head, "sha256")[:16]
            self.assertEqual(raw, head + mac)

    def test_stale(self):
        """
        Past its lifetime a genuine nonce is stale, not invalid.
        """
        clock = clockAt()
        factory = NonceFactory(SECRET, "example.com", clock, lifetime=60)
        nonce = factory.mint()
        clock.advance(60)
        self.assertEqual(factory.check(nonce), VALID)
        clock.advance(1)
        self.assertEqual(factory.check(nonce), STALE)

    def test_otherRealmOrSecret(self):
        """
        A nonce minted for another realm or with another secret is invalid.
        """
        clock = clockAt()
        nonce = NonceFactory(SECRET, "example.com", clock).mint()
        self.assertEqual(
            NonceFactory(SECRET, "example.org", clock).check(nonce), INVALID)
        self.assertEqual(
            NonceFactory(b"another secret of 16+ bytes", "example.com",
                         clock).check(nonce), INVALID)

    def test_tampered(self):
        """
        Changing any character, the length, or sending garbage gives
        invalid, never an exception.
        """
        factory = NonceFactory(SECRET, "example.com", clockAt())
        nonce = factory.mint()
        for i in range(len(nonce)):
            c = "A" if nonce[i] != "A" else "B"
            self.assertEqual(factory.check(nonce[:i] + c + nonce[i + 1:]),
                             INVALID)
        # The last character's low bits are ignored by a base64 decoder:
        # another spelling of the same bytes is not ours either.
        last = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
        position = last.index(nonce[-1])
        for other in last[position & ~15:(position & ~15) + 16]:
            if other != nonce[-1]:
                self.assertEqual(factory.check(nonce[:-1] + other), INVALID)
        # Characters a base64 decoder reads or skips: not ours either.
        for garbage in ("", "x", nonce + "A", "!" * len(nonce),
                        "é" * len(nonce), nonce[:5] + "+" + nonce[6:],
                        nonce[:5] + "/" + nonce[6:], nonce[:-1] + "\n",
                        nonce[:-1] + "=", nonce[:-2] + "\nA",
                        nonce[:-1] + "é", nonce[1:] + "\n"):
            self.assertEqual(factory.check(garbage), INVALID)

    def test_future(self):
        """
        A nonce issued more than a few seconds in the future (clock skew
        between servers) is stale.
        """
        clock = clockAt()
        ahead = NonceFactory(SECRET, "example.com", clockAt(1_700_000_100))
        self.assertEqual(
            NonceFactory(SECRET, "example.com", clock).check(ahead.mint()),
            STALE)

    def test_shortSecret(self):
        """
        A secret shorter than 16 bytes is refused.
        """
        self.assertRaises(ValueError, NonceFactory, b"short", "r", Clock())


class NonceCountsTests(SynchronousTestCase):
    """
    The count table rejects repeated counts and stays bounded.
    """

    def setUp(self):
        self.clock = clockAt()
        self.factory = NonceFactory(SECRET, "example.com", self.clock)

    def _nonce(self):
        nonce = self.factory.mint()
        return nonce, self.factory.issued(nonce)

    def _pick(self, rng, minted):
        """
        A nonce of C{minted} chosen by C{rng}, after a fresh one is added
        there three times in ten (the clock moved on, sometimes, first).
        """
        if not minted or rng.random() < 0.3:
            minted.append(self._nonce())
            if rng.random() < 0.3:
                self.clock.advance(rng.choice((0.001, 0.5, 2)))
        return rng.choice(minted)

    def test_increasing(self):
        """
        Increasing counts are accepted; the same or a lower count is a
        replay.
        """
        counts = NonceCounts()
        nonce, issued = self._nonce()
        self.assertTrue(counts.use(nonce, issued, 1))
        self.assertFalse(counts.use(nonce, issued, 1))
        self.assertTrue(counts.use(nonce, issued, 3))
        self.assertFalse(counts.use(nonce, issued, 2))

    def test_repeated(self):
        """
        L{NonceCounts.repeated} recognises the request that used a count by
        the fingerprint given with it (a fresh count and an eviction keep
        it alike), and nothing else: another fingerprint, another count, no
        fingerprint, a nonce not in the table.  It changes nothing.
        """
        counts = NonceCounts(maxSize=1)
        nonce, issued = self._nonce()
        self.assertFalse(counts.repeated(nonce, issued, 1, 7))
        self.assertTrue(counts.use(nonce, issued, 1, -(1 << 63)))
        self.assertTrue(counts.repeated(nonce, issued, 1, -(1 << 63)))
        self.assertFalse(counts.repeated(nonce, issued, 1, 7))
        self.assertFalse(counts.repeated(nonce, issued, 1, 0))
        self.assertFalse(counts.repeated(nonce, issued, 2, -(1 << 63)))
        self.assertFalse(counts.use(nonce, issued, 1, -(1 << 63)))
        self.assertTrue(counts.use(nonce, issued, 2, (1 << 63) - 1))
        self.assertFalse(counts.repeated(nonce, issued, 1, -(1 << 63)))
        self.assertTrue(counts.repeated(nonce, issued, 2, (1 << 63) - 1))
        # A count used without a fingerprint is repeated by nobody.
        self.assertTrue(counts.use(nonce, issued, 3))
        self.assertFalse(counts.repeated(nonce, issued, 3, 0))
        self.assertTrue(counts.accepts(nonce, issued, 4))
        # Evicted by a later nonce (the table holds one): not repeated.
        self.clock.advance(1)
        other, otherIssued = self._nonce()
        self.assertTrue(counts.use(other, otherIssued, 1, 5))
        self.assertTrue(counts.repeated(other, otherIssued, 1, 5))
        self.assertFalse(counts.repeated(nonce, issued, 3, 0))
        self.assertFalse(counts.repeated("x" * 10, issued, 1, 5))
        self.assertEqual(len(counts), 1)

    def test_accepts(self):
        """
        L{NonceCounts.accepts} says whether L{NonceCounts.use} would accept
        a count, without recording it; with the table full, a nonce issued
        later than the one it holds is accepted (L{use} evicts that one),
        and, the table unchanged, the old nonce is still counted.
        """
        counts = NonceCounts(maxSize=1)
        nonce, issued = self._nonce()
        self.assertTrue(counts.accepts(nonce, issued, 1))
        self.assertTrue(counts.accepts(nonce, issued, 1))
        self.assertTrue(counts.use(nonce, issued, 1))
        self.assertFalse(counts.accepts(nonce, issued, 1))
        self.assertTrue(counts.accepts(nonce, issued, 2))
        self.clock.advance(1)
        other, otherIssued = self._nonce()
        self.assertTrue(counts.accepts(other, otherIssued, 1))
        self.assertEqual(len(counts), 1)
        self.assertFalse(counts.accepts(nonce, issued, 1))
        self.assertTrue(counts.use(other, otherIssued, 1))
        # The first was evicted: never accepted again.
        self.assertFalse(counts.accepts(nonce, issued, 2))
        self.assertFalse(counts.use(nonce, issued, 2))

    def test_acceptsAsUse(self):
        """
        Over random uses of a small table (fresh nonces, higher counts,
        replays, nonces evicted, nonces issued out of order), L{accepts}
        always answers what L{use} then does.
        """
        import random
        rng = random.Random(7)
        counts = NonceCounts(maxSize=16)
        minted = []
        for step in range(3000):
            nonce, issued = self._pick(rng, minted)
            nc = rng.choice((1, 1, 2, 3, 5))
            expected = counts.accepts(nonce, issued, nc)
            self.assertEqual(counts.use(nonce, issued, nc), expected,
                             (step, nonce, issued, nc))
            self.assertLessEqual(len(counts), 16)

    def test_usePlaceFromAccepts(self):
        """
        L{use} takes the place L{accepts} found for the same nonce and
        count (the table unchanged since), and locates anew otherwise:
        over random checks and uses, of the same nonce or not, the table
        and every answer are those of a table that always locates anew.
        """
        import random

        class Fresh(NonceCounts):
            def accepts(self, nonce, issued, nc):
                result = NonceCounts.accepts(self, nonce, issued, nc)
                self._located = None
                return result

        rng = random.Random(11)
        counts, fresh = NonceCounts(maxSize=16), Fresh(maxSize=16)
        minted = []
        for step in range(3000):
            nonce, issued = self._pick(rng, minted)
            nc = rng.choice((1, 2, 3))
            if rng.random() < 0.5:
                answers = [t.accepts(nonce, issued, nc)
                           for t in (counts, fresh)]
                self.assertEqual(answers[0], answers[1], step)
                if rng.random() < 0.5:
                    # Another nonce, or another count, used in between.
                    nonce, issued = rng.choice(minted)
                    nc = rng.choice((1, 2, 3))
            answers = [t.use(nonce, issued, nc) for t in (counts, fresh)]
            self.assertEqual(answers[0], answers[1], step)
            self.assertEqual(bytes(counts._table), bytes(fresh._table), step)
            self.assertEqual(list(counts._floors), list(fresh._floors))

    def test_bounded(self):
        """
        The table never holds more than its size; a nonce evicted from it
        cannot be used again (its issue time is not after the latest
        evicted one), while nonces issued later still can.
        """
        counts = NonceCounts(maxSize=3)
        old = [self._nonce() for _ in range(3)]
        for nonce, issued in old:
            self.assertTrue(counts.use(nonce, issued, 1))
        self.clock.advance(1)
        newer = [self._nonce() for _ in range(3)]
        for nonce, issued in newer:
            self.assertTrue(counts.use(nonce, issued, 1))
            self.assertLessEqual(len(counts), 3)
        nonce, issued = old[0]
        self.assertFalse(counts.use(nonce, issued, 2))
        self.clock.advance(1)
        self.assertTrue(counts.use(*self._nonce(), 1))

    def test_oneSet(self):
        """
        A table no larger than one set: a new nonce takes the place of the
        one issued first, whichever was used last; that one is then
        refused, the others keep their counts.
        """
        counts = NonceCounts(maxSize=NonceCounts.WAYS)
        first = self._nonce()
        self.clock.advance(1)
        others = [self._nonce() for _ in range(NonceCounts.WAYS - 1)]
        for nonce, issued in [first] + others:
            self.assertTrue(counts.use(nonce, issued, 1))
        # Used last, issued first.
        self.assertTrue(counts.use(first[0], first[1], 2))
        self.assertEqual(len(counts), NonceCounts.WAYS)
        self.clock.advance(1)
        self.assertTrue(counts.use(*self._nonce(), 1))
        self.assertEqual(len(counts), NonceCounts.WAYS)
        self.assertFalse(counts.use(first[0], first[1], 3))
        for nonce, issued in others:
            self.assertFalse(counts.use(nonce, issued, 1))
            self.assertTrue(counts.use(nonce, issued, 2))

    def test_staleGoesFirst(self):
        """
        A nonce past its lifetime is evicted before the fresh ones of its
        set, and the fresh ones are not refused for it.
        """
        counts = NonceCounts(maxSize=NonceCounts.WAYS)
        stale = self._nonce()
        self.assertTrue(counts.use(*stale, 1))
        self.clock.advance(self.factory.lifetime + 1)
        fresh = [self._nonce() for _ in range(NonceCounts.WAYS - 1)]
        for nonce, issued in fresh:
            self.assertTrue(counts.use(nonce, issued, 1))
        newer = [self._nonce() for _ in range(3)]
        self.assertTrue(counts.use(*newer[0], 1))
        self.assertFalse(counts.use(stale[0], stale[1], 2))
        for nonce, issued in fresh + newer[:1]:
            self.assertTrue(counts.use(nonce, issued, 2))

    def test_replayAfterEviction(self):
        """
        Past the table's size, every nonce evicted is refused with any
        count, while those issued later than every evicted one are taken;
        the table stays at its size.
        """
        counts = NonceCounts(maxSize=64)
        used = []
        for second in range(40):
            for _ in range(8):
                nonce, issued = self._nonce()
                if counts.use(nonce, issued, 1):
                    used.append((nonce, issued))
            self.clock.advance(1)
            self.assertLessEqual(len(counts), 64)
        kept = evicted = 0
        for nonce, issued in used:
            if counts.use(nonce, issued, 5):
                kept += 1
            else:
                evicted += 1
                self.assertFalse(counts.use(nonce, issued, 1 << 31))
        self.assertEqual(kept, len(counts))
        self.assertGreater(evicted, 200)
        self.assertTrue(counts.use(*self._nonce(), 1))

    def test_notOurs(self):
        """
        A string that is not one of our nonces, and a count out of range,
        are refused (the caller checks nonces first: this is a safeguard).
        """
        counts = NonceCounts()
        nonce, issued = self._nonce()
        self.assertFalse(counts.use("x" * 10, issued, 1))
        self.assertFalse(counts.use(nonce, issued, 0))
        self.assertFalse(counts.use(nonce, issued, 1 << 32))
        self.assertEqual(len(counts), 0)
        self.assertTrue(counts.use(nonce, issued, 1))

    def test_noObjectPerNonce(self):
        """
        The table is allocated when it is made: using nonces allocates no
        memory that stays (measured by tracemalloc where there is one; on
        PyPy, the table is still the one buffer it was, of the same size).
        """
        counts = NonceCounts(maxSize=65536)
        table, size = counts._table, len(counts._table)
        nonces = [self._nonce() for _ in range(2000)]
        if tracemalloc is not None:
            tracemalloc.start()
            self.addCleanup(tracemalloc.stop)
            before = tracemalloc.get_traced_memory()[0]
        for nonce, issued in nonces:
            self.assertTrue(counts.use(nonce, issued, 1))
        if tracemalloc is not None:
            self.assertLess(tracemalloc.get_traced_memory()[0] - before,
                            4096)
        self.assertIs(counts._table, table)
        self.assertEqual(len(counts._table), size)
        self.assertEqual(len(counts), 2000)
