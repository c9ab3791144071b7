# -*- test-case-name: tests.test_auth_hmacsha256 -*-
"""
HMAC-SHA-256 (RFC 2104) with a key used for many messages: the key's
inner and outer pads are hashed once, when the key is given, and each
message costs two SHA-256 finalisations from those states.  The nonces
(L{sipdist.auth.nonce}) and the response signatures
(L{sipdist.auth.signature}) are computed this way on every request.

Two implementations give the same bytes; the module picks one when it is
imported (L{IMPLEMENTATION} names it):

  - C{"hashlib"}: copies of L{hashlib.sha256} objects fed with the pads.
    The fastest on CPython (OpenSSL 3's one-shot HMAC sets up a keyed
    context on every call, which costs twice as much).
  - C{"openssl-cffi"}, on PyPy: the same OpenSSL calls made directly
    through the cffi binding PyPy's own C{_hashlib} is built on
    (C{_pypy_openssl}).  PyPy's C{hashlib} objects are written in Python
    over that binding, and each C{copy()} or C{digest()} there looks the
    digest up by name, allocates a lock and a context with a finaliser:
    about 11 us per HMAC against 0.6 us for the calls themselves.  It is
    used only when that binding is there and gives the RFC 4231 test
    vector's answer; else C{"hashlib"}.
"""

import hashlib
import sys

_IPAD = bytes(b ^ 0x36 for b in range(256))
_OPAD = bytes(b ^ 0x5C for b in range(256))
_BLOCK = 64
_SIZE = 32


def _block(key):
    """
    The key as RFC 2104 pads it: hashed when longer than a block, then
    filled with zeros to a block.
    """
    if len(key) > _BLOCK:
        key = hashlib.sha256(key).digest()
    return key.ljust(_BLOCK, b"\x00")


class HashlibHMAC:
    """
    HMAC-SHA-256 with one key, over L{hashlib}.
    """

    __slots__ = ("_inner", "_outer")

    def __init__(self, key, prefix=b""):
        """
        @param key: the key (L{bytes}).
        @param prefix: bytes that start every message (hashed once here).
        """
        block = _block(key)
        self._inner = hashlib.sha256(block.translate(_IPAD) + prefix)
        self._outer = hashlib.sha256(block.translate(_OPAD))

    def digest(self, message):
        """
        The 32 bytes of HMAC-SHA-256(key, prefix + C{message}).
        """
        inner = self._inner.copy()
        inner.update(message)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()


def _openSSLHMAC():
    """
    The class computing HMAC-SHA-256 through C{_pypy_openssl}, or L{None}
    where that binding, or a function of it, is missing.
    """
    try:
        from _pypy_openssl import ffi, lib
        newContext = lib.Cryptography_EVP_MD_CTX_new
        freeContext = lib.Cryptography_EVP_MD_CTX_free
        init = lib.EVP_DigestInit_ex
        update = lib.EVP_DigestUpdate
        final = lib.EVP_DigestFinal_ex
        copy = lib.EVP_MD_CTX_copy_ex
        sha256 = lib.EVP_get_digestbyname(b"sha256")
    except (ImportError, AttributeError):
        return None
    if sha256 == ffi.NULL:
        return None
    null = ffi.NULL

    def padded(data):
        context = ffi.gc(newContext(), freeContext)
        if context == null or not init(context, sha256, null) or not update(
                context, data, len(data)):
            raise MemoryError("cannot set up a SHA-256 context")
        return context

    class OpenSSLHMAC:
        """
        HMAC-SHA-256 with one key, through PyPy's OpenSSL binding.  The
        two padded states are only read after they are made; each digest
        works in a context of its own (safe from any thread).
        """

        __slots__ = ("_inner", "_outer")

        def __init__(self, key, prefix=b""):
            """
            @param key: the key (L{bytes}).
            @param prefix: bytes that start every message (hashed once
                here).
            """
            block = _block(key)
            self._inner = padded(block.translate(_IPAD) + prefix)
            self._outer = padded(block.translate(_OPAD))

        def digest(self, message):
            """
            The 32 bytes of HMAC-SHA-256(key, prefix + C{message}).
            """
            out = ffi.new("unsigned char[32]")
            context = newContext()
            if context == null:
                raise MemoryError("cannot allocate a SHA-256 context")
            try:
                if not (copy(context, self._inner)
                        and update(context, message, len(message))
                        and final(context, out, null)
                        and copy(context, self._outer)
                        and update(context, out, _SIZE)
                        and final(context, out, null)):
                    raise ValueError("SHA-256 failed")
            finally:
                freeContext(context)
            return ffi.buffer(out, _SIZE)[:]

    return OpenSSLHMAC


def _works(cls):
    """
    Whether C{cls} gives RFC 4231's answers (test cases 2 and 6: a short
    key, and a key longer than a block).
    """
    try:
        return (cls(b"Jefe", b"what do ya want ").digest(
            b"for nothing?").hex() == "5bdcc146bf60754e6a042426089575c75a003f0"
            "89d2739839dec58b964ec3843"
            and cls(b"\xaa" * 131).digest(
                b"Test Using Larger Than Block-Size Key - Hash Key First"
            ).hex() == "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546"
            "040f0ee37f54")
    except Exception:
        return False


OpenSSLHMAC = _openSSLHMAC() if sys.implementation.name == "pypy" else None
if OpenSSLHMAC is not None and _works(OpenSSLHMAC):
    HMACSHA256 = OpenSSLHMAC
    IMPLEMENTATION = "openssl-cffi"
else:
    HMACSHA256 = HashlibHMAC
    IMPLEMENTATION = "hashlib"
