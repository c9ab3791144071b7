# -*- test-case-name: tests.test_randomness -*-
"""
Random bytes for the values a server makes on every request (tags,
branches, nonces): C{os.urandom}, read from the kernel a block at a time.
One C{os.urandom} call is a system call (C{getrandom}): about 4 us on PyPy,
0.44 us on CPython 3.11 against 0.23 for a slice of a block read earlier,
and a server made one and a half of them a request (a nonce and a tag per
C{401}, a tag per C{301}).
"""

import os


class BufferedRandom:
    """
    C{os.urandom(n)} for small C{n}, read from the kernel C{size} bytes at a
    time.  Each byte is handed out once, in one process: a child made by
    C{fork} (twistd's daemonising) drops the block it inherited, so parent
    and child never hand out the same bytes.

    It is for one thread: every caller in sipdist runs in the reactor's.
    """

    def __init__(self, size=4096, urandom=os.urandom):
        self._size = size
        self._urandom = urandom
        self._buffer = b""
        self._pos = 0
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=self.forked)

    def forked(self):
        """
        Forget the block read so far (this is a new process).
        """
        self._buffer = b""
        self._pos = 0

    def __call__(self, n):
        pos = self._pos
        if pos + n > len(self._buffer):
            self._buffer = self._urandom(max(self._size, n))
            pos = 0
        self._pos = pos + n
        return self._buffer[pos:pos + n]


#: C{randomBytes(n)}: C{n} random bytes (for the reactor's thread).
randomBytes = BufferedRandom()
