"""
Property tests for the byte-level fast paths (L{sipdist.roles.fastchallenge},
L{sipdist.roles.fastredirect}, L{sipdist.roles.fastregister}): REGISTERs
as SIPp, baresip and our tests write them, mutated at random (a header's
value replaced by a tricky one, a header dropped, repeated or respelled,
a character inserted anywhere), give the same datagrams and leave the same
state with the fast path on and off, whether the fast path takes them or
not.
"""

from hypothesis import HealthCheck, given, settings, strategies as st
from twisted.trial.unittest import TestCase

from tests.test_fastchallenge import (
    CLIENT, _baresip, _linphone, _register, _twinkle)
from tests.test_fastredirect import BothPathsMixin, request

# Values a header may be given instead of its own, by header name: the
# plain, the odd and the wrong.
_VALUES = {
    "Contact": [
        "<sip:alice@192.0.2.7:5060>", "<sip:alice@192.0.2.7:5060>;expires=0",
        "<sip:alice@192.0.2.7:5060>;expires=30",
        "<sip:alice@192.0.2.7:5060>;expires=abc",
        "<sip:alice@192.0.2.7:5060>;q=0.5", "<sip:alice@192.0.2.7:5060>;q=7",
        '<sip:alice@192.0.2.7;ob>;reg-id=1;+sip.instance="<urn:uuid:1>"',
        '<sip:alice@192.0.2.7>;+sip.instance="<urn:uuid:2>"',
        "<sip:alice@192.0.2.7>;reg-id=0", "*", "sip:alice@192.0.2.7",
        "<sip:alice@192.0.2.7>, <sip:alice@192.0.2.8>",
        '<sip:alice@192.0.2.7>;x="a,b"', "<sip:alice@[2001:db8::1]>",
        "<sips:alice@192.0.2.7>", "<sip:alice@192.0.2.7:99999>"],
    "Expires": ["0", "30", "60", "3600", "4294967296", "9999999999", "-1",
                "abc", ""],
    "Route": ["<sip:127.0.0.1;lr>", "<sip:127.0.0.1:5060;lr>",
              "<sip:127.0.0.1:5062;lr>", "<sip:proxy.example.net;lr>",
              "<sip:127.0.0.1;lr;sds=x>", "<sip:127.0.0.1>", "<sip:127.0.0.1",
              "<sip:127.0.0.1;lr>, <sip:127.0.0.1:5062;lr>"],
    "Allow": ["INVITE,ACK", "INVITE, ACK, BYE", "", ",", "INVITE,,ACK"],
    "CSeq": ["1 REGISTER", "0 REGISTER", "4294967295 REGISTER",
             "4294967296 REGISTER", "1 INVITE", "REGISTER", "1  REGISTER"],
    "Max-Forwards": ["0", "1", "70", "255", "256", "x"],
    "To": ["<sip:alice@example.com>", "<sip:bob@example.com>",
           "sip:alice@example.com", "sip:bob@example.com",
           "sip:alice@example.com;tag=1", "sip:alice@example.com:5060",
           "<sip:alice@EXAMPLE.COM>", "<sip:alice@example.com:5060>",
           "<sip:alice@example.com>;tag=1", "sip:alice@example.com",
           '"A" <sip:alice@example.com>'],
    "From": ["<sip:alice@example.com>;tag=1", "<sip:alice@example.com>",
             "<sip:bob@example.com>;tag=2"],
    "Accept": ["application/sdp", "text/plain, application/sdp",
               "application/sdp;q=1", "x", ""],
    "Supported": ["sipdist-redirect", "path, outbound", "outbound",
                  "replaces, outbound, gruu", "path,sipdist-redirect",
                  "SIPDIST-REDIRECT,path", ""],
    "User-Agent": ["test agent/1.0", "other", "bench", ""],
    "Call-ID": ["a@b", "x" * 200, "a b", ""],
    "Via": ["SIP/2.0/UDP 192.0.2.7:5060;rport;branch=z9hG4bKv1",
            "SIP/2.0/UDP 192.0.2.7;branch=z9hG4bKv2;rport",
            "SIP/2.0/UDP 192.0.2.7:5060;rport;branch=z9hG4bKv3;rport",
            "SIP/2.0/UDP 192.0.2.7:5060;rport=1;branch=z9hG4bKv4",
            "SIP/2.0/UDP 192.0.2.7:5060;branch=z9hG4bKv5;rport;x",
            "SIP/2.0/UDP host.example.com;rport;branch=z9hG4bKv6"],
    "Content-Length": ["0", "1", "00", "x"],
}
_NAMES = sorted(_VALUES)
_INSERTED = [" ", "\t", ",", ";", '"', "<", ">", "\\", "=", "x", ":", "@",
             "%", "\r\n", "\r\n ", "\x00", "\xe9"]


@st.composite
def mutated(draw, base):
    """
    The request C{base} (bytes) with a few random mutations.
    """
    head, _, body = base.partition(b"\r\n\r\n")
    lines = head.decode("utf-8").split("\r\n")
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(
            ["value", "value", "value", "drop", "repeat", "respell",
             "insert"]))
        if kind == "value":
            # A header of _VALUES given another value (added if absent).
            name = draw(st.sampled_from(_NAMES))
            line = f"{name}: {draw(st.sampled_from(_VALUES[name]))}"
            at = [i for i, old in enumerate(lines)
                  if old.partition(": ")[0] == name]
            if at:
                lines[at[0]] = line
            else:
                lines.insert(draw(st.integers(1, len(lines))), line)
            continue
        index = draw(st.integers(1, len(lines) - 1)) if len(lines) > 1 else 0
        name, sep, value = lines[index].partition(": ")
        if kind == "drop" and len(lines) > 2:
            del lines[index]
        elif kind == "repeat":
            lines.insert(index, lines[index])
        elif kind == "respell":
            lines[index] = draw(st.sampled_from([
                f"{name.lower()}: {value}", f"{name.upper()}: {value}",
                f"{name} : {value}", f"{name}:{value}",
                f"{name}:  {value}", f"{name}: {value} "]))
        else:
            line = lines[index]
            at = draw(st.integers(0, len(line)))
            lines[index] = (line[:at] + draw(st.sampled_from(_INSERTED))
                            + line[at:])
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8") + body


# The tests run twice, here and in tests/test_fastscan.py's subclass (the
# scan's other choice of readers): two executors of the same test, on
# purpose.
_SETTINGS = settings(max_examples=200, deadline=None,
                     suppress_health_check=[HealthCheck.too_slow,
                                            HealthCheck.differing_executors])


def _substituted(base, name, value):
    """
    C{base} (bytes) with its C{name} header's value replaced by C{value}
    (the header added before Content-Length if absent).
    """
    head, _, body = base.partition(b"\r\n\r\n")
    lines = head.decode("utf-8").split("\r\n")
    line = f"{name}: {value}"
    at = [i for i, old in enumerate(lines) if old.partition(": ")[0] == name]
    if at:
        lines[at[0]] = line
    else:
        lines.insert(len(lines) - 1, line)
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8") + body


class MutatedRegisterTests(BothPathsMixin, TestCase):
    """
    Mutated REGISTERs: the same answers and state on both paths.
    """

    def test_everyValue(self):
        """
        Each value of the table given to its header, one at a time, in a
        first REGISTER at a distributor and at a home, and in an
        authenticated one at each.
        """
        for name in _NAMES:
            for value in _VALUES[name]:
                with self.subTest(f"{name}: {value}"):
                    for role in ("distributor", "home"):
                        self._both(_substituted(_register(), name, value),
                                   role=role)
                        self._both(_substituted(request(), name, value),
                                   role=role)

    @_SETTINGS
    @given(st.data())
    def test_challenge(self, data):
        """
        First REGISTERs (no credentials), at a distributor and at a home.
        """
        base = data.draw(st.sampled_from([_register(), _baresip(),
                                          _linphone(), _twinkle()]))
        self._both(data.draw(mutated(base)),
                   role=data.draw(st.sampled_from(["distributor", "home"])))

    @_SETTINGS
    @given(st.data())
    def test_redirect(self, data):
        """
        Authenticated REGISTERs at a distributor (a signed 301 when plain).
        """
        self._both(data.draw(mutated(request())), role="distributor")

    @_SETTINGS
    @given(st.data())
    def test_register(self, data):
        """
        Authenticated REGISTERs at a home (a signed 200 when plain), after
        a first registration of the same contact or not.
        """
        first = request(branch="z9hG4bKfirst")
        later = data.draw(mutated(request(branch="z9hG4bKlater")))
        datas = [first, later] if data.draw(st.booleans()) else [later]
        self._both(datas, addr=CLIENT, role="home")
