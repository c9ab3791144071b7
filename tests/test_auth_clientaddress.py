# -*- test-case-name: tests.test_auth_clientaddress -*-
"""
Tests for L{sipdist.auth.clientaddress}: the client address an edge states
to the servers inside, sealed with the pool's secret, and what a home does
with it.
"""

from twisted.trial.unittest import SynchronousTestCase

from sipdist.auth.clientaddress import HEADER, ClientAddressSeal
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
        secret; IPv6 hosts too; whitespace in CSeq and around Call-ID does
        not matter.
        """
        for host in ("198.51.100.7", "2001:db8::7"):
            value = self.seal.value(host, 40312, "c1", "1 REGISTER")
            self.assertEqual(
                self.seal.address([value], " c1 ", "1  REGISTER"),
                (host, 40312))

    def test_forgedIgnored(self):
        """
        A made-up seal, one made with another secret, a value changed after
        sealing, a value given for another Call-ID or CSeq, or two values,
        state nothing.
        """
        address = self.seal.address
        self.assertIsNone(address(
            ["203.0.113.9:5060;mac=AAAAAAAAAAAAAAAAAAAAAA"], "c1",
            "1 REGISTER"))
        other = ClientAddressSeal("another-secret-0123456789").value(
            "203.0.113.9", 5060, "c1", "1 REGISTER")
        self.assertIsNone(address([other], "c1", "1 REGISTER"))
        value = self.seal.value("198.51.100.7", 40312, "c1", "1 REGISTER")
        changed = value.replace("198.51.100.7", "203.0.113.9")
        self.assertIsNone(address([changed], "c1", "1 REGISTER"))
        self.assertIsNone(address([value], "c2", "1 REGISTER"))
        self.assertIsNone(address([value], "c1", "2 REGISTER"))
        self.assertIsNone(address([value, value], "c1", "1 REGISTER"))
        self.assertIsNone(address([], "c1", "1 REGISTER"))
        self.assertIsNone(address(["no seal"], "c1", "1 REGISTER"))

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
        Through an edge of the pool: the client's address the edge states,
        after the request crossed the wire.
        """
        request = register()
        request.setHeader(HEADER, self.seal.value(
            "198.51.100.7", 40312, "c1", "1 REGISTER"))
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
