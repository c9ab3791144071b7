# -*- test-case-name: tests.test_auth_nonce -*-
"""
Nonces that need no state shared between the servers of a pool, and the
bounded table that rejects a repeated nonce count.

A nonce is C{base64url(T || S || M)} without padding, where C{T} is the
issue time (whole seconds, 8 bytes big-endian), C{S} 8 random bytes and
C{M} the first 16 bytes of C{HMAC-SHA-256(secret, "sipdist-nonce-1" || 0 ||
realm || 0 || T || S)}.  Any server holding the same secret can check it
without asking the one that issued it; a nonce older than the lifetime is
I{stale}.
"""

import array
import base64
import binascii
import hmac
import re
import struct

from sipdist.auth.hmacsha256 import HMACSHA256
from sipdist.jitparams import compiledApart
from sipdist.randomness import randomBytes

VALID = "valid"
STALE = "stale"
INVALID = "invalid"

_PREFIX = b"sipdist-nonce-1\x00"
_TIME = struct.Struct(">Q")
_MAC_LENGTH = 16
_RAW_LENGTH = _TIME.size + 8 + _MAC_LENGTH
_NONCE_LENGTH = 43  # base64 of 32 bytes without padding
_URLSAFE = ("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
            "0123456789-_")
# Only the encoding we mint is ours: 43 characters of the base64url
# alphabet (the decoder would skip others), the last one with its two
# bits past the 32 bytes zero (the decoder ignores them; the same nonce
# spelled another way would be another nonce to the nc replay table).
_NONCE = re.compile("[A-Za-z0-9_-]{%d}[%s]\\Z" % (
    _NONCE_LENGTH - 1, re.escape(_URLSAFE[::4])))
# (bytes.translate: str.translate with a mapping costs 3 us on CPython
# and 16 us on PyPy.)
_FROM_URLSAFE = bytes.maketrans(b"-_", b"+/")


class NonceFactory:
    """
    Mint and check stateless nonces for one realm.

    @ivar lifetime: seconds a nonce stays valid; after that it is stale.
    """

    def __init__(self, secret, realm, reactor, lifetime=300, random=None):
        """
        @param secret: the secret shared by the servers of the pool (L{bytes}
            or L{str}); at least 16 bytes.
        @param reactor: an L{IReactorTime} giving the time.
        @param random: a callable C{random(n)} returning C{n} random bytes
            (defaults to L{sipdist.randomness.randomBytes}).
        """
        if isinstance(secret, str):
            secret = secret.encode("utf-8")
        if len(secret) < 16:
            raise ValueError("the nonce secret must have at least 16 bytes")
        self._reactor = reactor
        self.lifetime = lifetime
        self._random = randomBytes if random is None else random
        self._key = secret
        # The last nonce check() found genuine, and its issue time.
        self._lastChecked = (None, None)
        self._macPrefix = _PREFIX + realm.encode("utf-8") + b"\x00"
        # HMAC-SHA-256(secret, prefix realm NUL head), the key's pads and
        # the prefix hashed once.
        self._mac = HMACSHA256(secret, self._macPrefix)

    def _sign(self, head):
        return self._mac.digest(head)[:_MAC_LENGTH]

    def mint(self):
        """
        A fresh nonce for now.
        """
        head = _TIME.pack(int(self._reactor.seconds())) + self._random(8)
        raw = head + self._sign(head)
        return base64.urlsafe_b64encode(raw)[:-1].decode("ascii")

    def issued(self, nonce):
        """
        The issue time of a nonce that L{check} found not invalid.
        """
        last = self._lastChecked
        if last[0] == nonce:
            # The nonce check() just read: its time without decoding again.
            return last[1]
        raw = base64.urlsafe_b64decode(nonce + "=")
        return _TIME.unpack_from(raw)[0]

    def check(self, nonce):
        """
        Check a nonce a client returned.

        @return: L{VALID}, L{STALE} (genuine but older than the lifetime, or
            issued in the future beyond a small clock skew) or L{INVALID}
            (not one of ours).
        """
        if _NONCE.match(nonce) is None:
            return INVALID
        raw = binascii.a2b_base64(
            nonce.encode("ascii").translate(_FROM_URLSAFE) + b"=")
        head = raw[:-_MAC_LENGTH]
        if not hmac.compare_digest(self._sign(head), raw[-_MAC_LENGTH:]):
            return INVALID
        issued = _TIME.unpack_from(head)[0]
        self._lastChecked = (nonce, issued)
        age = self._reactor.seconds() - issued
        # Servers of a pool have clocks a little apart: tolerate 5 seconds.
        if age > self.lifetime or age < -5:
            return STALE
        return VALID


class NonceCounts:
    """
    The highest nonce count seen per nonce, in a table of at most
    C{maxSize} nonces allocated once, when it is made.

    The table holds no Python object per nonce: it is one L{bytearray} of
    fixed-size entries (the nonce's issue time and the characters that
    hold its random bytes, which identify a genuine nonce, and its count),
    so the logins of a load leave no small objects behind among the memory
    of that load's requests (they would keep the allocator's arenas from
    being given back).  A nonce belongs to one set of C{WAYS} entries,
    chosen by a hash of its entry's key; a
    nonce new to a full set takes the place of the one issued first there:
    a nonce past its lifetime (refused as stale anyway) goes before any
    other.

    An evicted nonce is not forgotten unsafely: each set keeps the latest
    issue time among the nonces it evicted, and a nonce not in its set that
    was issued no later than that is reported as a replay (the client gets
    a fresh nonce).  So memory stays bounded and no count can be reused
    after an eviction.

    Beside its count, an entry keeps the I{fingerprint} of the request
    that used it, when its user gave one (a non-zero 64-bit integer: the
    hash of the request's transaction key, Call-ID and CSeq and of the
    address its answer went to).  L{repeated} recognises that request
    again: a retransmission
    of a request answered statelessly (a distributor's signed C{301}, RFC
    3261 section 8.2.7), which must get the same answer rather than be
    refused as a replay.
    """

    #: Entries per set.
    WAYS = 8
    # An entry: the nonce's issue time (8) and the 12 characters that hold
    # its random bytes, its count (4), the fingerprint of the request that
    # used that count (8; zero for none).
    _KEY = _TIME.size + 12
    _ENTRY = _KEY + 4 + 8
    _EMPTY = bytes(_KEY)

    def __init__(self, maxSize=100000):
        self.maxSize = maxSize
        ways = self._ways = max(1, min(self.WAYS, maxSize))
        self._sets = max(1, maxSize // ways)
        self._setBytes = ways * self._ENTRY
        # The issue times of a set's entries, read in one call.
        self._times = struct.Struct(
            ">" + ("Q%dx" % (self._ENTRY - _TIME.size)) * ways)
        self._table = bytearray(self._sets * self._setBytes)
        # Per set: the latest issue time among the nonces it evicted.
        self._floors = array.array("q", [-1]) * self._sets
        self._size = 0
        # What accepts() last located: (nonce, issued, nc, place).
        self._located = None

    def __len__(self):
        return self._size

    @compiledApart
    def accepts(self, nonce, issued, nc):
        """
        Whether L{use} would accept C{nc} for C{nonce} (in a full set, by
        evicting the nonce issued first there).  Changes nothing.
        """
        place = self._locate(nonce, issued, nc)
        # Until the table changes (use), the place holds for use().
        self._located = (nonce, issued, nc, place)
        if place is None:
            return False
        key, index, start, entries, found = place
        if found >= 0:
            at = start + found + self._KEY
            return nc > int.from_bytes(self._table[at:at + 4], "big")
        if issued <= self._floors[index]:
            return False
        if self._free(entries) >= 0:
            return True
        # A full set: L{use} evicts the nonce issued first, unless this one
        # was issued no later than it.
        return issued > min(self._times.unpack(entries))

    @compiledApart
    def repeated(self, nonce, issued, nc, fingerprint):
        """
        Whether C{nc} is the count C{nonce} was last used with, by the
        request of C{fingerprint} (see the class): that request again.
        Changes nothing.
        """
        if not fingerprint:
            return False
        place = self._locate(nonce, issued, nc)
        if place is None or place[4] < 0:
            return False
        at = place[2] + place[4] + self._KEY
        table = self._table
        return (int.from_bytes(table[at:at + 4], "big") == nc
                and int.from_bytes(table[at + 4:at + 12], "big",
                                   signed=True) == fingerprint)

    def _locate(self, nonce, issued, nc):
        """
        Where C{nonce} belongs in the table: C{(key, index, start, entries,
        found)}, its entry's key, its set's index and first byte, a copy of
        the set and the offset of its entry there (C{-1}: not there); or
        C{None} for a nonce or count that is not one of ours.
        """
        if len(nonce) != _NONCE_LENGTH or not 0 < nc < 1 << 32 \
                or not 0 <= issued < 1 << 63:
            return None
        # The issue time and the characters that carry the random bytes
        # (bits 60 to 131 of the nonce): together they name one genuine
        # nonce.
        key = _TIME.pack(issued) + nonce[10:22].encode("ascii", "replace")
        index = hash(key) % self._sets
        start = index * self._setBytes
        # A copy of the set, searched without start and end (find() with
        # them costs more, in CPython 3.11).
        entries = self._table[start:start + self._setBytes]
        entry = self._ENTRY
        found = entries.find(key)
        while found >= 0 and found % entry:
            # Not at the start of an entry: a coincidence across entries.
            found = entries.find(key, found + 1)
        return key, index, start, entries, found

    def _free(self, entries):
        """
        The offset of an empty entry in the set C{entries}, or C{-1}.
        """
        entry = self._ENTRY
        victim = entries.find(self._EMPTY)
        while victim >= 0 and victim % entry:
            victim = entries.find(self._EMPTY, victim + 1)
        return victim

    @compiledApart
    def use(self, nonce, issued, nc, fingerprint=0):
        """
        Record that C{nonce} (issued at time C{issued}) was used with count
        C{nc}, by the request of C{fingerprint} (see the class; 0 for
        none).

        @return: C{True} when C{nc} is higher than any count seen with this
            nonce; C{False} for a replay (same or lower count), or for a
            nonce or count that is not one of ours.
        """
        located = self._located
        self._located = None
        if (located is not None and located[0] == nonce
                and located[1] == issued and located[2] == nc):
            # Where accepts() just found it (the table has not changed
            # since): a fast path checks, then uses.
            place = located[3]
        else:
            place = self._locate(nonce, issued, nc)
        if place is None:
            return False
        key, index, start, entries, found = place
        table = self._table
        entry = self._ENTRY
        if found >= 0:
            at = start + found + self._KEY
            if nc <= int.from_bytes(table[at:at + 4], "big"):
                return False
            table[at:at + 12] = nc.to_bytes(4, "big") + fingerprint.to_bytes(
                8, "big", signed=True)
            return True
        floors = self._floors
        if issued <= floors[index]:
            return False
        victim = self._free(entries)
        if victim >= 0:
            victim += start
            self._size += 1
        else:
            # The entry issued first (the first of them).
            times = self._times.unpack(entries)
            evicted = min(times)
            victim = start + times.index(evicted) * entry
            if issued <= evicted:
                # Every nonce of the set was issued after this one.
                floors[index] = max(floors[index], issued)
                return False
            floors[index] = max(floors[index], evicted)
        table[victim:victim + entry] = (
            key + nc.to_bytes(4, "big")
            + fingerprint.to_bytes(8, "big", signed=True))
        return True
