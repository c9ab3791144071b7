"""
The STUN binding exchange used as the UDP keep-alive (RFC 5626 section
4.4.2), and the transport answering it.
"""

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from sipdist.sip import stun
from sipdist.sip.transport import DatagramFlow, TransportLayer

TID = bytes(range(12))


class StunTests(SynchronousTestCase):
    """
    Binding requests and responses, byte for byte.
    """

    def test_request(self):
        """
        A Binding request is 20 bytes: type 0x0001, length 0, the magic
        cookie and the transaction id.
        """
        data = stun.bindingRequest(TID)
        self.assertEqual(data, b"\x00\x01\x00\x00\x21\x12\xa4\x42" + TID)
        self.assertTrue(stun.isStun(data))
        self.assertEqual(stun.parse(data), (stun.BINDING_REQUEST, TID))

    def test_successIPv4(self):
        """
        The XOR-MAPPED-ADDRESS of an IPv4 answer is the port XOR the top of
        the cookie and the address XOR the cookie (RFC 5389 section 15.2).
        """
        data = stun.bindingSuccess(TID, "192.0.2.1", 32853)
        self.assertEqual(data[20:], bytes.fromhex(
            "00200008" "0001" "a147" "e112a643"))
        self.assertEqual(stun.mappedAddress(data), ("192.0.2.1", 32853))

    def test_successIPv6(self):
        """
        An IPv6 address is XORed with the cookie and the transaction id.
        """
        data = stun.bindingSuccess(TID, "2001:db8::1", 5060)
        self.assertEqual(stun.mappedAddress(data), ("2001:db8::1", 5060))

    def test_notStun(self):
        """
        SIP, CRLFs and short or mis-sized data are not STUN.
        """
        for data in (b"OPTIONS sip:a SIP/2.0\r\n\r\n", b"\r\n\r\n",
                     b"\x00\x01\x00\x00\x21\x12\xa4\x42",
                     stun.bindingRequest(TID) + b"x"):
            self.assertFalse(stun.isStun(data), data)
            self.assertIsNone(stun.parse(data))
        self.assertRaises(ValueError, stun.bindingRequest, b"short")


class _Protocol:
    """
    A UDP port that records what is sent.
    """

    index = 0
    local = ("127.0.0.1", 5060)

    def __init__(self, layer):
        self._layer = layer
        self.sent = []

    def sendBytes(self, data, addr, capture=True):
        self.sent.append((data, addr))
        return True


class _Handler:
    def __init__(self):
        self.messages = []

    def messageReceived(self, message, flow):
        self.messages.append(message)


class TransportStunTests(SynchronousTestCase):
    """
    The transport answers STUN Binding requests on its UDP ports and
    notes the answers to its own.
    """

    def setUp(self):
        self.clock = Clock()
        self.handler = _Handler()
        self.layer = TransportLayer(self.clock, self.handler)
        self.protocol = _Protocol(self.layer)

    def test_answersBinding(self):
        """
        A Binding request is answered with the source address, and is not
        handed up as a SIP message.
        """
        self.layer.datagramReceived(self.protocol, stun.bindingRequest(TID),
                                    ("192.0.2.7", 40000))
        [(data, addr)] = self.protocol.sent
        self.assertEqual(addr, ("192.0.2.7", 40000))
        self.assertEqual(stun.parse(data), (stun.BINDING_SUCCESS, TID))
        self.assertEqual(stun.mappedAddress(data), ("192.0.2.7", 40000))
        self.assertEqual(self.handler.messages, [])

    def test_keepAliveAnswered(self):
        """
        A flow's keep-alive is a Binding request to its peer; the peer's
        answer sets the flow's C{lastReceived}.
        """
        flow = DatagramFlow(self.protocol, ("192.0.2.8", 5060))
        self.assertIsNone(flow.lastReceived)
        self.assertTrue(flow.sendKeepAlive())
        [(data, addr)] = self.protocol.sent
        kind, tid = stun.parse(data)
        self.assertEqual((kind, addr), (stun.BINDING_REQUEST,
                                        ("192.0.2.8", 5060)))
        self.clock.advance(3)
        self.layer.datagramReceived(
            self.protocol, stun.bindingSuccess(tid, "192.0.2.9", 1),
            ("192.0.2.8", 5060))
        self.assertEqual(flow.lastReceived, 3)
        other = DatagramFlow(self.protocol, ("192.0.2.10", 5060))
        self.assertIsNone(other.lastReceived)
