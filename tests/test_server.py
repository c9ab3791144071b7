"""
Tests for L{sipdist.server}: the transaction user every role is built on.
"""

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from sipdist.interfaces import ITransactionUser
from sipdist.sip.message import parseMessage
from sipdist.server import SIPServer
from sipdist.sip.transaction import TransactionLayer
from tests.test_message import build


class RecordingFlow:
    """
    A reliable flow that keeps what is sent on it.
    """

    transport = "TCP"
    reliable = True
    remote = ("192.0.2.1", 5060)

    def __init__(self):
        self.sent = []

    def send(self, message):
        self.sent.append(parseMessage(message.toBytes()))
        return True


def request(method, uri="sip:127.0.0.1:5060"):
    data = build(f"{method} {uri} SIP/2.0").replace(
        b"314159 REGISTER", f"1 {method}".encode("ascii"))
    return parseMessage(data)


class ServerTests(SynchronousTestCase):
    """
    What every role answers before its own processors.
    """

    def setUp(self):
        self.clock = Clock()
        self.server = SIPServer(self.clock, "home1", "example.com",
                                frozenset(["127.0.0.1", "example.com"]))
        self.layer = TransactionLayer(self.clock, self.server)
        self.flow = RecordingFlow()

    def send(self, message):
        self.layer.messageReceived(message, self.flow)
        return self.flow.sent[-1]

    def test_interface(self):
        self.assertTrue(verifyObject(ITransactionUser, self.server))

    def test_options(self):
        """
        An OPTIONS addressed to the server is answered 200 with what it
        allows, supports and accepts.
        """
        response = self.send(request("OPTIONS"))
        self.assertEqual(response.code, 200)
        self.assertIn("OPTIONS", response.header("allow"))
        self.assertIn("path", response.header("supported"))
        self.assertIn("application/sdp", response.header("accept"))
        self.assertTrue(response.header("server").startswith("sipdist/"))
        self.assertIn(";tag=", response.header("to"))

    def test_optionsToUser(self):
        """
        An OPTIONS naming a user that no processor routes is answered by
        the server itself (health checks often name a user).
        """
        self.assertEqual(self.send(request("OPTIONS", "sip:ping@127.0.0.1")).code, 200)

    def test_processorsFirst(self):
        """
        Processors see requests in order; the first that handles one ends
        the chain.
        """
        seen = []

        def first(request, transaction):
            seen.append("first")
            return False

        def second(request, transaction):
            seen.append("second")
            transaction.respond(self.server.response(request, 202))
            return True

        self.server.processors = [first, second, first]
        self.assertEqual(self.send(request("MESSAGE", "sip:a@example.com")).code, 202)
        self.assertEqual(seen, ["first", "second"])

    def test_knownMethodNotHandled(self):
        """
        A known method nothing handles is a 405 with Allow.
        """
        response = self.send(request("INVITE", "sip:a@example.com"))
        self.assertEqual((response.code, response.phrase), (405, "Method Not Allowed"))
        self.assertEqual(response.header("allow"), "OPTIONS, ACK, CANCEL")

    def test_unknownMethod(self):
        """
        An unknown method is a 501.
        """
        response = self.send(request("FROBNICATE", "sip:a@example.com"))
        self.assertEqual((response.code, response.phrase), (501, "Not Implemented"))

    def test_unmatchedCancel(self):
        """
        A CANCEL matching no transaction is a 481.
        """
        response = self.send(request("CANCEL", "sip:a@example.com"))
        self.assertEqual(response.code, 481)

    def test_unknownDialog(self):
        """
        An in-dialog request (To tag) that nothing routes is a 481.
        """
        message = request("BYE", "sip:a@192.0.2.1")
        message.setHeader("To", "<sip:a@example.com>;tag=abc")
        response = self.send(message)
        self.assertEqual((response.code, response.phrase),
                         (481, "Call/Transaction Does Not Exist"))
