"""
Tests for L{sipdist.sip.uri}.
"""

from hypothesis import given, settings, strategies as st
from twisted.trial.unittest import SynchronousTestCase

from sipdist.sip.uri import URI, URIError, normaliseAOR, parseURI


class ParseTests(SynchronousTestCase):
    """
    SIP and SIPS URIs.
    """

    def test_full(self):
        """
        Every part is parsed; parameters keep their order and serialise
        back unchanged.
        """
        text = "sips:alice:pw@Example.COM:5061;transport=tcp;lr;x=Y?subject=hi"
        uri = parseURI(text)
        self.assertEqual(
            (uri.scheme, uri.username, uri.password, uri.host, uri.port),
            ("sips", "alice", "pw", "Example.COM", 5061))
        self.assertEqual(uri.params, {"transport": "tcp", "lr": None, "x": "Y"})
        self.assertEqual(uri.headers, {"subject": "hi"})
        self.assertEqual(uri.transport, "tcp")
        self.assertTrue(uri.secure)
        self.assertEqual(uri.toString(), text)

    def test_ipv6(self):
        """
        An IPv6 reference keeps its brackets; its port is found after them.
        """
        uri = parseURI("sip:[2001:db8::1]:5070;lr")
        self.assertEqual((uri.host, uri.port), ("[2001:db8::1]", 5070))
        self.assertEqual(parseURI("sip:[::1]").port, None)

    def test_twistedAttributes(self):
        """
        The attributes of Twisted's sip.URL are views on the parameters.
        """
        uri = parseURI("sip:a@h;maddr=10.0.0.1;user=phone;foo")
        self.assertEqual((uri.maddr, uri.usertype), ("10.0.0.1", "phone"))
        self.assertEqual(uri.other, ["foo"])
        uri.transport = "udp"
        self.assertEqual(uri.toString(), "sip:a@h;maddr=10.0.0.1;user=phone;foo;transport=udp")
        uri.transport = None
        self.assertNotIn("transport", uri.params)

    def test_errors(self):
        """
        What is not a SIP URI raises L{URIError}; a well-formed URI of
        another scheme says so (it is answered 416).
        """
        for text in ("", "nothing", "sip:", "sip:@h", "sip:h:0", "sip:h:99999",
                     "sip:h:x", "sip:[::1", "sip:a b@h", "sip:<h>"):
            self.assertRaises(URIError, parseURI, text)
        for text in ("tel:+15551234", "http://example.com/", "mailto:a@b"):
            error = self.assertRaises(URIError, parseURI, text)
            self.assertTrue(error.unsupportedScheme, text)
        self.assertFalse(self.assertRaises(URIError, parseURI, "sip:").unsupportedScheme)

    def test_equality(self):
        """
        Comparison follows RFC 3261 19.1.4 in the main: the host and
        parameters case-insensitively, the user part after unescaping.
        """
        self.assertEqual(parseURI("sip:al%69ce@EXAMPLE.com;Transport=TCP"),
                         parseURI("sip:alice@example.com;transport=tcp"))
        self.assertNotEqual(parseURI("sip:alice@example.com"),
                            parseURI("sip:Alice@example.com"))
        self.assertNotEqual(parseURI("sip:a@h"), parseURI("sips:a@h"))
        self.assertNotEqual(parseURI("sip:a@h"), parseURI("sip:a@h:5060"))
        self.assertEqual(len({parseURI("sip:a@H"), parseURI("sip:a@h")}), 1)

    def test_copy(self):
        """
        A copy can be changed without changing the original.
        """
        uri = parseURI("sip:a@h;lr")
        other = uri.copy()
        other.params["x"] = "1"
        self.assertEqual(uri.params, {"lr": None})

    @settings(max_examples=300, deadline=None)
    @given(st.text(max_size=60))
    def test_junk(self, text):
        """
        Any text parses or raises L{URIError}, nothing else.
        """
        try:
            parseURI(text)
        except URIError:
            pass

    @settings(max_examples=200, deadline=None)
    @given(st.from_regex(r"[a-z][a-z0-9]{0,8}", fullmatch=True),
           st.from_regex(r"[a-z][a-z0-9.-]{0,15}[a-z0-9]", fullmatch=True),
           st.one_of(st.none(), st.integers(1, 65535)))
    def test_roundTrip(self, user, host, port):
        """
        Parsing what a URI serialises to gives the same URI.
        """
        uri = URI(host, user, port=port)
        self.assertEqual(parseURI(uri.toString()), uri)


class NormaliseAORTests(SynchronousTestCase):
    """
    The form addresses-of-record are stored and compared in.
    """

    def test_forms(self):
        """
        The scheme is folded to sip, the host lower-cased, the user part
        unescaped; port, parameters and brackets are dropped; a bare
        user@host is accepted.
        """
        for text in ("sip:alice@example.com", "sips:alice@EXAMPLE.com",
                     "<sip:al%69ce@example.com;transport=tls>",
                     "sip:alice@example.com:5061", "alice@Example.com",
                     " alice@example.com "):
            self.assertEqual(normaliseAOR(text), "sip:alice@example.com", text)
        self.assertEqual(normaliseAOR(parseURI("sip:bob@h")), "sip:bob@h")

    def test_needsUser(self):
        """
        An address-of-record has a user part.
        """
        self.assertRaises(URIError, normaliseAOR, "sip:example.com")
        self.assertRaises(URIError, normaliseAOR, "nonsense")
