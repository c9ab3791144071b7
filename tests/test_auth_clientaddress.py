# -*- test-case-name: tests.test_auth_clientaddress -*-
"""
Tests for L{sipdist.auth.clientaddress}: the client address an edge states
to the servers inside, sealed with the pool's secret, and what a home does
with it.
"""

from twisted.trial.unittest import SynchronousTestCase

from sipdist.auth.clientaddress import HEADER, ClientAddressSeal, strip
from sipdist.roles.distribution import DistributionProcessor
from sipdist.sip.message import parseMessage

SECRET = "pool-secret-0123456789abcdef"


def register(callId="c1", cseq="1 REGISTER", extra=""):
    return parseMessage((
        "REGISTER sip:example.com SIP/2.0\r\n"
        "Via: SIP/2.0/TCP 10.0.0.10:5070;branch=z9hG4bKedge\r\n"
        "Via: SIP/2.0/TCP 192.0.2.1:5060;branch=z9hG4bKc1\r\n"
        "Max-Forwards: 69\r\n"
        "From: <sip:alice@example.com>;tag=a\r\n"
        "To: <sip:alice@example.com>\r\n"
        f"Call-ID: {callId}\r\nCSeq: {cseq}\r\n{extra}"
        "Content-Length: 0\r\n\r\n").encode("ascii"))


def wire(request):
    """
    The request as the next server parses it.
    """
    return parseMessage(request.toBytes())


class SealTests(SynchronousTestCase):
    """
    Only a holder of the pool's secret can state a client's address, and
    only for the request it sealed.
    """

    def setUp(self):
        self.seal = ClientAddressSeal(SECRET)

    def test_roundTrip(self):
        """
        An address sealed by an edge reads back at a server with the same
        secret, after the request crossed the wire; IPv6 hosts too.
        """
        for host in ("198.51.100.7", "2001:db8::7"):
            request = register()
            self.seal.seal(request, host, 40312)
            self.assertEqual(self.seal.clientAddress(wire(request)),
                             (host, 40312))

    def test_sealReplacesHeader(self):
        """
        Sealing replaces any header of that name the request had.
        """
        request = register(extra="Sipdist-Client: 203.0.113.9:5060;mac=x\r\n")
        self.seal.seal(request, "198.51.100.7", 1)
        self.assertEqual(len(request.headers[HEADER]), 1)
        self.assertEqual(self.seal.clientAddress(request),
                         ("198.51.100.7", 1))

    def test_forgedIgnored(self):
        """
        A header with a made-up seal, sealed with another secret, changed
        after sealing, copied onto another request, or repeated, states
        nothing.
        """
        forged = register(
            extra="Sipdist-Client: 203.0.113.9:5060;mac=AAAAAAAAAAAAAAAAAAAAAA\r\n")
        self.assertIsNone(self.seal.clientAddress(forged))
        other = register()
        ClientAddressSeal("another-secret-0123456789").seal(
            other, "203.0.113.9", 5060)
        self.assertIsNone(self.seal.clientAddress(other))
        sealed = register()
        self.seal.seal(sealed, "198.51.100.7", 40312)
        value = sealed.header(HEADER)
        changed = register(extra=f"{HEADER}: "
                           + value.replace("198.51.100.7", "203.0.113.9")
                           + "\r\n")
        self.assertIsNone(self.seal.clientAddress(changed))
        copied = register(callId="c2", extra=f"{HEADER}: {value}\r\n")
        self.assertIsNone(self.seal.clientAddress(copied))
        recounted = register(cseq="2 REGISTER",
                             extra=f"{HEADER}: {value}\r\n")
        self.assertIsNone(self.seal.clientAddress(recounted))
        twice = register(extra=f"{HEADER}: {value}\r\n{HEADER}: {value}\r\n")
        self.assertIsNone(self.seal.clientAddress(twice))
        self.assertIsNone(self.seal.clientAddress(register()))

    def test_strip(self):
        """
        L{strip} removes the header.
        """
        request = register(extra="Sipdist-Client: 203.0.113.9:5060;mac=x\r\n")
        strip(request)
        self.assertNotIn(HEADER, request.headers)
        self.assertNotIn(b"Sipdist-Client", request.toBytes())

    def test_noSecret(self):
        """
        Sealing without a secret is refused.
        """
        self.assertRaises(ValueError, ClientAddressSeal, "")


class FakeFlow:
    remote = ("10.0.0.10", 5070)


class FakeServer:
    domain = "example.com"


class ClientHostTests(SynchronousTestCase):
    """
    The address a store role counts failed authentications against.
    """

    def setUp(self):
        self.seal = ClientAddressSeal(SECRET)
        self.processor = DistributionProcessor(
            FakeServer(), "home", None, None, clientSeal=self.seal)

    def test_sealed(self):
        """
        Through an edge of the pool: the client's address the edge states.
        """
        request = register()
        self.seal.seal(request, "198.51.100.7", 40312)
        self.assertEqual(
            self.processor.clientHost(wire(request), FakeFlow()),
            "198.51.100.7")

    def test_forged(self):
        """
        A header without a valid seal is ignored: the address the request
        came from counts.
        """
        request = register(
            extra="Sipdist-Client: 203.0.113.9:5060;mac=AAAAAAAAAAAAAAAAAAAAAA\r\n")
        self.assertEqual(self.processor.clientHost(request, FakeFlow()),
                         "10.0.0.10")
        self.assertEqual(self.processor.clientHost(register(), FakeFlow()),
                         "10.0.0.10")
