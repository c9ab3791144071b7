"""
Tests for the hand-written readers of L{sipdist.roles.fastchallenge}'s scan
(the request line, Via, From, Call-ID and Authorization read without
regular expressions, as the scan does on PyPy): each takes exactly what
the pattern it stands for takes, and gives the same groups; and the fast
paths' corpus and property tests run with the other choice than this
interpreter's.
"""

import platform
import random

from hypothesis import given, settings, strategies as st
from twisted.trial.unittest import TestCase

from sipdist.roles import fastchallenge, fastredirect
from sipdist.roles.fastchallenge import (
    _CALL_ID, _FROM, _REQUEST_LINE, _VIA, _DigestValue, _readCallID,
    _readDigest, _readFrom, _readRequestLine, _readVia)

# The modules, not their test cases: a test case in this module's namespace
# would be run here a second time.
from tests import (
    test_fastchallenge, test_fastpath_properties, test_fastredirect,
    test_fastregister)


def _groups(found, count):
    """
    The groups 0 to C{count - 1} of C{found} (a match or a reader's
    result), or L{None}.
    """
    if found is None:
        return None
    return tuple(found.group(i) for i in range(count))


# Each reader: (its pattern's match, the reader, how the two are compared:
# a number of groups, "pairs" for the Digest parameters, or None for
# whether they match), and values the clients write, from which the random
# ones are made.
_READERS = {
    "request line": (_REQUEST_LINE.match, _readRequestLine, 3, [
        b"REGISTER sip:example.com SIP/2.0",
        b"REGISTER sip:127.0.0.1;transport=udp SIP/2.0",
        b"REGISTER sip:a-b.c SIP/2.0"]),
    "Via": (_VIA.match, _readVia, 8, [
        b"SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-4242-1-0",
        b"SIP/2.0/UDP 192.0.2.7;rport;branch=z9hG4bKPj.x_y",
        b"SIP/2.0/UDP host.example.net:5060;branch=z9hG4bK1;rport"]),
    "From": (_FROM.match, _readFrom, None, [
        b"<sip:alice@example.com>;tag=4242SIPpTag001",
        b'"Alice 1" <sip:a.b+c-d_e@h1.example-x.com:5060>;tag=a.!%*_+`\'~-',
        b'"" <sip:u@h>;tag=x']),
    "Call-ID": (_CALL_ID.match, _readCallID, None, [
        b"1-4242@127.0.0.1", b"a:b@c", b"x"]),
    "Authorization": (_DigestValue.match, _readDigest, "pairs", [
        b'Digest username="alice",realm="example.com",cnonce="6b8b4567",'
        b'nc=00000001,qop=auth,uri="sip:example.com",nonce="AAAAAGsRpDoXb'
        b'AWdWnYV3sA-J9hTcufX9deIAJ4iR4k",response="6b51b9fcdd33c9b9cc2b1b'
        b'0bc8cc2bf1",algorithm=MD5',
        b'Digest realm="example.com", nonce="x y=z", algorithm=MD5, '
        b'nc=00000001, qop=auth',
        b'  Digest a="", b=c']),
}
# Bytes the random values are made with: the grammar's separators, the
# characters each class takes and some it does not.
_BYTES = (b' "<>;:@=,.-_+!%*`\'~\\/\t\r\n\x00\x7f\x80\xe9'
          b"Aa0z9tagsipUDPudprtbrnchz9hG4bK")
_PIECES = [b"sip:", b";branch=z9hG4bK", b";rport", b";tag=", b"Digest ",
           b', a="b"', b",c=d", b"SIP/2.0", b";transport=UDP", b":5060",
           b"@", b'"', b"<", b">", b"", b"REGISTER ", b"65535", b"123456",
           b";transport=udp", b";transport=Udp", b";Transport=udp",
           b"z9hG4bk", b"rport;"]
# Values at the edges of each class, compared one by one.
_EDGES = {
    "request line": [
        b"REGISTER sip:h;transport=UDP SIP/2.0",
        b"REGISTER sip:h;transport=uDp SIP/2.0",
        b"REGISTER sip:h;Transport=udp SIP/2.0",
        b"REGISTER sip:h;transport=tcp SIP/2.0",
        b"REGISTER sip:h;transport=udp;lr SIP/2.0",
        b"REGISTER sip:h:5060 SIP/2.0", b"REGISTER sip:-h SIP/2.0",
        b"REGISTER sip: SIP/2.0", b"REGISTER sips:h SIP/2.0",
        b"REGISTER sip:h SIP/2.0 ", b"REGISTER  sip:h SIP/2.0",
        b"REGISTER SIP/2.0", b"REGISTER sip:h SIP/2.1"],
    "Via": [
        b"SIP/2.0/UDP h:1;branch=z9hG4bKx", b"SIP/2.0/UDP h:65535;branch=z9h"
        b"G4bKx", b"SIP/2.0/UDP h:123456;branch=z9hG4bKx",
        b"SIP/2.0/UDP h:;branch=z9hG4bKx", b"SIP/2.0/UDP h;branch=z9hG4bK",
        b"SIP/2.0/UDP h;branch=z9hG4bk1", b"SIP/2.0/UDP h;rport;branch=z9hG"
        b"4bK1;rport", b"SIP/2.0/UDP h;branch=z9hG4bK1;rport;rport",
        b"SIP/2.0/UDP h;branch=z9hG4bK1;rport=5", b"SIP/2.0/UDP h;rport",
        b"SIP/2.0/UDP h;branch=z9hG4bK1;", b"SIP/2.0/TCP h;branch=z9hG4bK1",
        b"SIP/2.0/UDP .h;branch=z9hG4bK1", b"SIP/2.0/UDP h:5x;branch=z9hG4bK"
        b"1", b"SIP/2.0/UDP [::1];branch=z9hG4bK1"],
    "From": [
        b"<sip:a@h:1>;tag=x", b"<sip:a@h:123456>;tag=x", b"<sip:a@h:>;tag=x",
        b"<sip:@h>;tag=x", b"<sip:a@>;tag=x", b"<sip:a@h>;tag=",
        b"<sip:a@h>;tag=x;y=z", b'"a" <sip:a@h>;tag=x', b'"a"<sip:a@h>;tag=x',
        b'"a\\"b" <sip:a@h>;tag=x', b"sip:a@h;tag=x", b"<sip:a@b@h>;tag=x",
        b"<sip:a@h>>;tag=x", b"<sip:a@h> ;tag=x"],
    "Call-ID": [b"", b"x" * 128, b"x" * 129, b"a b", b"a\x00"],
    "Authorization": [
        b"Digest a=b", b"Digest a=b,c=d", b"Digest a=b, c=d",
        b"Digest a=b ,c=d", b"Digest  a=b", b"Digest a=b,", b"Digest ",
        b"Digest a=", b'Digest a=""', b'Digest a="', b'Digest a="b"c"',
        b"Digest A=b", b"digest a=b", b"Digest a=b,\tc=d",
        b'Digest a="b\\c"', b"Digest a=b=c"],
}


def _mutated(rng, value):
    """
    C{value} with one to three random changes: a byte replaced, inserted or
    deleted, a piece of the grammar inserted, or a part repeated.
    """
    value = bytearray(value)
    for _ in range(rng.randint(1, 3)):
        at = rng.randint(0, len(value))
        kind = rng.random()
        if kind < 0.3 and at < len(value):
            value[at] = rng.choice(_BYTES)
        elif kind < 0.55:
            value.insert(at, rng.choice(_BYTES))
        elif kind < 0.7:
            del value[at:at + rng.randint(1, 3)]
        elif kind < 0.85:
            value[at:at] = rng.choice(_PIECES)
        else:
            end = rng.randint(at, len(value))
            value[at:at] = value[at:end]
    return bytes(value)


class RequiredTests(TestCase):
    """
    L{fastchallenge._hasRequired}, which looks each required name up.
    """

    def test_everySubset(self):
        """
        For every choice of the required names, with other lines or not,
        it says what C{issubset} says: the names it looks up are
        C{_REQUIRED}'s.
        """
        required = fastchallenge._REQUIRED
        for mask in range(1 << len(required)):
            for other in ({}, {b"Contact": b"x", b"Expires": b"y"}):
                values = dict(other)
                for i, name in enumerate(required):
                    if mask & (1 << i):
                        values[name] = b"v"
                self.assertEqual(fastchallenge._hasRequired(values),
                                 set(required).issubset(values),
                                 sorted(values))


class KnownParametersTests(TestCase):
    """
    L{fastredirect._onlyKnown}, which counts the known Digest parameters.
    """

    def test_everySubset(self):
        """
        For every choice of the known parameters, with an unknown one or
        not, it says what C{issuperset} says: the names it counts are
        C{_KNOWN_PARAMETERS}.
        """
        known = sorted(fastredirect._KNOWN_PARAMETERS)
        for mask in range(1 << len(known)):
            for other in ({}, {"opaque": "x"}, {"userhash": "true"}):
                params = dict(other)
                for i, name in enumerate(known):
                    if mask & (1 << i):
                        params[name] = "v"
                self.assertEqual(
                    fastredirect._onlyKnown(params),
                    fastredirect._KNOWN_PARAMETERS.issuperset(params),
                    sorted(params))


class ReaderTests(TestCase):
    """
    Each reader against its pattern.
    """

    def assertSame(self, name, value):
        """
        The reader C{name} and its pattern give the same for C{value}.

        @return: whether the pattern took it.
        """
        pattern, reader, compare, _ = _READERS[name]
        expected, found = pattern(value), reader(value)
        if compare == "pairs":
            self.assertEqual(found, expected, value)
        elif compare is None:
            self.assertEqual(found is None, expected is None, value)
        else:
            self.assertEqual(_groups(found, compare),
                             _groups(expected, compare), value)
        return expected is not None

    def test_clients(self):
        """
        The values the clients write are taken by both.
        """
        for name, (_, _, _, values) in _READERS.items():
            for value in values:
                self.assertTrue(self.assertSame(name, value), value)

    def test_edges(self):
        """
        On values at the edges of each class (ports of five and six digits,
        the transport's case, empty parts, doubled separators ...) the
        reader and its pattern agree.
        """
        for name, values in _EDGES.items():
            for value in values:
                self.assertSame(name, value)

    def test_mutated(self):
        """
        On values made by changing the clients' values at random, the
        reader takes what its pattern takes, with the same groups, and
        enough of them are taken for that to mean something.
        """
        rng = random.Random(16)
        for name, (_, _, _, values) in _READERS.items():
            taken = 0
            for i in range(6000):
                value = rng.choice(values)
                while True:
                    value = _mutated(rng, value)
                    if rng.random() < 0.7:
                        break
                taken += self.assertSame(name, value)
            self.assertGreater(taken, 200, name)

    @settings(max_examples=500, deadline=None)
    @given(st.sampled_from(sorted(_READERS)),
           st.lists(st.one_of(st.sampled_from(_PIECES),
                              st.binary(max_size=3),
                              st.sampled_from([bytes([b]) for b in _BYTES])),
                    max_size=24))
    def test_pieces(self, name, pieces):
        """
        On values made of pieces of the grammar and random bytes, after the
        start of a client's value or alone, the reader and its pattern
        agree.
        """
        value = b"".join(pieces)
        self.assertSame(name, value)
        for start in _READERS[name][3]:
            self.assertSame(name, start[:len(start) // 2] + value)
            self.assertSame(name, start + value)

    def test_digestLimits(self):
        """
        The Digest reader leaves, as the pattern does, a value of more than
        C{MAX_DIGEST_PARAMETERS} parameters or of more than
        C{MAX_VALUE_LENGTH} characters.
        """
        limit = fastchallenge.MAX_DIGEST_PARAMETERS
        value = b"Digest " + b", ".join(b"a=b" for _ in range(limit))
        self.assertEqual(len(_readDigest(value)), limit)
        self.assertIsNone(_readDigest(value + b", a=b"))
        long = b'Digest a="' + b"x" * (fastchallenge.MAX_VALUE_LENGTH - 11)
        self.assertIsNotNone(_readDigest(long + b'"'))
        self.assertIsNone(_readDigest(long + b'x"'))
        self.assertSame("Authorization", long + b'x"')

    def test_choice(self):
        """
        The scan uses the readers on PyPy, and the patterns on CPython.
        """
        pypy = platform.python_implementation() == "PyPy"
        self.assertEqual(fastchallenge.HAND_READERS, pypy)
        values, requestLine = fastchallenge.scanPatterns(pypy)
        self.assertEqual(fastchallenge._requestLine, requestLine)
        self.assertEqual(
            {name: type(value) for name, value in
             fastchallenge._VALUES.items()},
            {name: type(value) for name, value in values.items()})
        self.assertEqual(fastchallenge._requestLine is _readRequestLine,
                         pypy)
        self.assertEqual(
            fastchallenge._VALUES[b"Via"].match is _readVia, pypy)


class _OtherScan:
    """
    A test case of the fast paths run with the scan this interpreter does
    not use: the readers on CPython, the patterns on PyPy.
    """

    def setUp(self):
        values, requestLine = fastchallenge.scanPatterns(
            not fastchallenge.HAND_READERS)
        self.patch(fastchallenge, "_VALUES", values)
        self.patch(fastchallenge, "_requestLine", requestLine)
        return super().setUp()


class FastChallengeOtherScanTests(_OtherScan,
                                  test_fastchallenge.FastChallengeTests):
    """
    L{test_fastchallenge.FastChallengeTests} with the other scan.
    """


class FastRedirectOtherScanTests(_OtherScan,
                                 test_fastredirect.FastRedirectTests):
    """
    L{FastRedirectTests} with the other scan.
    """


class StatelessRedirectOtherScanTests(
        _OtherScan, test_fastredirect.StatelessRedirectTests):
    """
    L{StatelessRedirectTests} with the other scan.
    """


class FastRegisterOtherScanTests(_OtherScan,
                                 test_fastregister.FastRegisterTests):
    """
    L{FastRegisterTests} with the other scan.
    """


class DigestValueOtherScanTests(_OtherScan,
                                test_fastchallenge.DigestValueTests):
    """
    L{test_fastchallenge.DigestValueTests} with the other scan.
    """


class MutatedRegisterOtherScanTests(_OtherScan,
        test_fastpath_properties.MutatedRegisterTests):
    """
    L{MutatedRegisterTests} with the other scan.
    """
