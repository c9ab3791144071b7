# -*- test-case-name: tests.test_randomness -*-
"""
Random bytes for the values a server makes on every request (tags,
branches, nonces): C{os.urandom}, read from the kernel a block at a time
on PyPy, where one C{os.urandom} call costs about 4 us (a tenth of that on
CPython).
"""

import os
import sys


class BufferedRandom:
    """
    C{os.urandom(n)} for small C{n}, read from the kernel C{size} bytes at a
    time.  Each byte is handed out once, in one process: a child made by
    C{fork} (twistd's daemonising) drops the block it inherited, so parent
    and child never hand out the same bytes.
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


#: C{randomBytes(n)}: C{n} random bytes, the fastest way here.
randomBytes = BufferedRandom() if sys.implementation.name == "pypy" \
    else os.urandom
