# -*- test-case-name: tests.test_randomness -*-
"""
Tests for L{sipdist.randomness}.
"""

from twisted.trial.unittest import SynchronousTestCase

from sipdist.randomness import BufferedRandom, randomBytes


class BufferedRandomTests(SynchronousTestCase):
    """
    L{BufferedRandom} hands out the bytes of a block read at once.
    """

    def test_eachByteOnce(self):
        """
        Successive calls get successive bytes of the block; past its end, a
        new block is read; a request larger than a block gets a block of
        its own size.
        """
        blocks = []

        def urandom(n):
            block = bytes((len(blocks) * 16 + i) % 256 for i in range(n))
            blocks.append(block)
            return block

        random = BufferedRandom(size=8, urandom=urandom)
        self.assertEqual(random(3), bytes([0, 1, 2]))
        self.assertEqual(random(5), bytes([3, 4, 5, 6, 7]))
        self.assertEqual(len(blocks), 1)
        self.assertEqual(random(2), bytes([16, 17]))
        self.assertEqual(random(10), bytes(range(32, 42)))
        self.assertEqual([len(b) for b in blocks], [8, 8, 10])

    def test_negative(self):
        """
        A negative count is refused, as L{os.urandom} refuses it, rather
        than taken for the rest of the block.
        """
        random = BufferedRandom(size=8)
        random(2)
        self.assertRaises(ValueError, random, -1)
        self.assertEqual(len(random(6)), 6)

    def test_forked(self):
        """
        After a fork, the child reads a new block rather than hand out the
        rest of the one its parent read.
        """
        blocks = []

        def urandom(n):
            blocks.append(bytes([len(blocks)]) * n)
            return blocks[-1]

        random = BufferedRandom(size=8, urandom=urandom)
        self.assertEqual(random(2), b"\x00\x00")
        random.forked()
        self.assertEqual(random(2), b"\x01\x01")
        self.assertEqual(len(blocks), 2)

    def test_randomBytes(self):
        """
        L{randomBytes} gives as many bytes as asked, different each time.
        """
        self.assertEqual(len(randomBytes(8)), 8)
        self.assertNotEqual(randomBytes(16), randomBytes(16))

    def test_randomBytesBuffered(self):
        """
        L{randomBytes} reads the kernel's random bytes a block at a time on
        every interpreter: a server's tags and nonces cost no system call
        each.
        """
        self.assertIsInstance(randomBytes, BufferedRandom)
        calls = []

        def urandom(n):
            calls.append(n)
            return bytes(n)

        self.patch(randomBytes, "_urandom", urandom)
        randomBytes.forked()
        # The block of zeros is dropped after the test (before the patch
        # is undone: cleanups run last first).
        self.addCleanup(randomBytes.forked)
        for _ in range(100):
            randomBytes(12)
        self.assertEqual(calls, [4096])
