# -*- test-case-name: tests.test_transaction -*-
"""
Tests for L{sipdist.sip.transaction}: RFC 3261 section 17 client and server
transactions and their timers, driven by a L{task.Clock}.
"""

import gc

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from sipdist.interfaces import ITransactionUser
from sipdist.sip.message import newBranch, parseMessage, responseTo
from sipdist.sip.transaction import (
    ACCEPTED, CALLING, COMPLETED, CONFIRMED, PROCEEDING, TERMINATED, TRYING,
    ClientTransaction, ServerTransaction, TransactionLayer,
    TransactionLayerFull, TransactionLayerStopped, TransactionTimeout,
    TransportError)

T1 = 0.5
T2 = 4.0
T4 = 5.0


def makeRequest(method="OPTIONS", branch=None, cseq=1, host="client.test",
                port=5060, toTag=None, routes=(), callID="call-1",
                uri="sip:bob@example.com", fromTag="ft1"):
    """
    A request as the transport hands it over, parsed from text.
    """
    if branch is None:
        branch = newBranch()
    cseqMethod = "INVITE" if method == "ACK" and toTag == "ack" else method
    lines = [
        f"{method} {uri} SIP/2.0",
        f"Via: SIP/2.0/UDP {host}:{port};branch={branch}",
        "Via: SIP/2.0/UDP earlier.test;branch=z9hG4bKearlier",
        "Max-Forwards: 70",
    ]
    lines += [f"Route: {route}" for route in routes]
    lines += [
        f"From: <sip:alice@example.com>;tag={fromTag}",
        "To: <sip:bob@example.com>" + (f";tag={toTag}" if toTag else ""),
        f"Call-ID: {callID}",
        f"CSeq: {cseq} {cseqMethod}",
        "Content-Length: 0",
        "", "",
    ]
    return parseMessage("\r\n".join(lines).encode("utf-8"))


def makeAck(invite, response):
    """
    The ACK a client sends for a non-2xx final response to C{invite}.
    """
    text = invite.toBytes().decode("utf-8")
    text = text.replace("INVITE sip:", "ACK sip:", 1)
    text = text.replace(f"CSeq: {invite.cseq()[0]} INVITE",
                        f"CSeq: {invite.cseq()[0]} ACK")
    text = text.replace(invite.header("to"), response.header("to"))
    return parseMessage(text.encode("utf-8"))


class FakeFlow:
    """
    A flow that records what is sent on it, with the time.
    """

    def __init__(self, clock, reliable=False, remote=("192.0.2.1", 5060)):
        self.clock = clock
        self.reliable = reliable
        self.transport = "TCP" if reliable else "UDP"
        self.remote = remote
        self.sent = []
        self.broken = False

    def send(self, message):
        if self.broken:
            return False
        self.sent.append((self.clock.seconds(), message))
        return True

    def times(self):
        return [when for when, _ in self.sent]

    def messages(self):
        return [message for _, message in self.sent]


class RaisingFlow(FakeFlow):
    """
    A flow whose connection is gone: C{send} raises.
    """

    def send(self, message):
        raise ConnectionError("connection lost")


@implementer(ITransactionUser)
class RecordingUser:
    """
    A transaction user that records every call and, if told to, answers
    each new request with a fixed code.
    """

    def __init__(self, answer=None):
        self.answer = answer
        self.requests = []
        self.cancels = []
        self.acks = []
        self.responses = []
        self.failures = []

    def requestReceived(self, request, transaction):
        self.requests.append((request, transaction))
        if self.answer is not None:
            transaction.respond(responseTo(request, self.answer))

    def cancelReceived(self, request, transaction, cancelled):
        self.cancels.append((request, transaction, cancelled))

    def ackReceived(self, request, flow):
        self.acks.append((request, flow))

    def responseReceived(self, response, flow):
        self.responses.append((response, flow))

    def transactionFailed(self, transaction, reason):
        self.failures.append((transaction, reason))


class BrokenUser(RecordingUser):
    """
    A transaction user with a bug: it raises on every new request.
    """

    def requestReceived(self, request, transaction):
        raise RuntimeError("bug")


class LayerTestMixin:
    """
    A layer on a clock with a recording user and a UDP and a TCP flow.
    """

    def setUp(self):
        self.clock = Clock()
        self.user = RecordingUser()
        self.layer = TransactionLayer(self.clock, self.user, T1=T1, T2=T2,
                                      T4=T4, maxTransactions=100)
        self.udp = FakeFlow(self.clock)
        self.tcp = FakeFlow(self.clock, reliable=True)

    def advanceTo(self, when, step=0.25):
        """
        Advance the clock in small steps up to C{when}.
        """
        while self.clock.seconds() + step <= when + 1e-9:
            self.clock.advance(step)

    def assertDrained(self):
        """
        Every transaction has left the table and no timer is pending.
        """
        self.assertEqual(self.layer.active, 0)
        self.assertEqual(self.layer._servers, {})
        self.assertEqual(self.layer._clients, {})
        self.assertEqual(self.clock.getDelayedCalls(), [])


class InterfaceTests(SynchronousTestCase):
    def test_recordingUserProvidesInterface(self):
        """
        The test fake is a complete L{ITransactionUser}.
        """
        self.assertTrue(verifyObject(ITransactionUser, RecordingUser()))


class NonInviteClientTests(LayerTestMixin, SynchronousTestCase):
    def test_retransmitsUntilTimerF(self):
        """
        Over UDP, with no response, the non-INVITE client transaction
        retransmits at T1, 2*T1, 4*T1 ... the interval capped at T2, and
        fails with TransactionTimeout at 64*T1 (timer F), leaving nothing
        behind.
        """
        tx = self.layer.sendRequest(makeRequest("OPTIONS"), self.udp)
        self.assertIsInstance(tx, ClientTransaction)
        self.assertEqual(tx.state, TRYING)
        self.advanceTo(64 * T1 - 0.25)
        self.assertNoResult(tx.deferred)
        self.assertEqual(
            self.udp.times(),
            [0, 0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5])
        self.clock.advance(0.25)
        self.failureResultOf(tx.deferred, TransactionTimeout)
        self.assertEqual(tx.state, TERMINATED)
        self.assertEqual(self.layer.timeouts, 1)
        self.assertDrained()

    def test_provisionalSwitchesToT2(self):
        """
        After a provisional response the request is retransmitted every T2,
        and the onProvisional hook sees the response.
        """
        request = makeRequest("OPTIONS")
        tx = self.layer.sendRequest(request, self.udp)
        seen = []
        tx.onProvisional = seen.append
        trying = responseTo(request, 100)
        self.layer.messageReceived(trying, self.udp)
        self.assertEqual(tx.state, PROCEEDING)
        self.assertEqual(seen, [trying])
        self.advanceTo(12)
        # E, scheduled at T1 in Trying, then every T2.
        self.assertEqual(self.udp.times(), [0, 0.5, 4.5, 8.5])

    def test_finalResponseThenTimerK(self):
        """
        A final response fires the Deferred; a retransmission of it is
        absorbed (the user does not see it); timer K (T4) ends the
        transaction.
        """
        request = makeRequest("OPTIONS")
        tx = self.layer.sendRequest(request, self.udp)
        ok = responseTo(request, 200)
        self.layer.messageReceived(ok, self.udp)
        self.assertIs(self.successResultOf(tx.deferred), ok)
        self.assertEqual(tx.state, COMPLETED)
        self.layer.messageReceived(responseTo(request, 200), self.udp)
        self.assertEqual(self.user.responses, [])
        self.clock.advance(T4 - 0.01)
        self.assertEqual(tx.state, COMPLETED)
        self.clock.advance(0.01)
        self.assertEqual(tx.state, TERMINATED)
        self.assertEqual(len(self.udp.sent), 1)
        self.assertDrained()

    def test_reliableNoRetransmission(self):
        """
        Over a reliable flow the request is sent once, timer F still runs,
        and the transaction ends as soon as a final response comes (K = 0).
        """
        request = makeRequest("REGISTER")
        tx = self.layer.sendRequest(request, self.tcp)
        self.clock.advance(10)
        self.assertEqual(len(self.tcp.sent), 1)
        self.layer.messageReceived(responseTo(request, 401), self.tcp)
        self.assertEqual(self.successResultOf(tx.deferred).code, 401)
        self.assertEqual(tx.state, TERMINATED)
        self.assertDrained()

    def test_reliableTimerF(self):
        """
        Over a reliable flow with no response, timer F still fails the
        transaction at 64*T1.
        """
        tx = self.layer.sendRequest(makeRequest("REGISTER"), self.tcp)
        self.clock.advance(64 * T1)
        self.failureResultOf(tx.deferred, TransactionTimeout)
        self.assertDrained()

    def test_timerFLastLook(self):
        """
        A final response that arrives in the reactor turn where timer F
        fires (the reactor runs timers before it reads, so a busy process
        reads it just after) completes the transaction: it does not time
        out.
        """
        request = makeRequest("REGISTER")
        tx = self.layer.sendRequest(request, self.tcp)
        ok = responseTo(request, 200)
        self.clock.callLater(64 * T1, self.layer.messageReceived, ok,
                             self.tcp)
        self.clock.advance(64 * T1)
        self.assertIs(self.successResultOf(tx.deferred), ok)
        self.assertEqual(self.layer.timeouts, 0)
        self.assertDrained()

    def test_transportErrorOnSend(self):
        """
        If the flow cannot send the request, the transaction fails with
        TransportError at once.
        """
        self.udp.broken = True
        tx = self.layer.sendRequest(makeRequest("OPTIONS"), self.udp)
        self.failureResultOf(tx.deferred, TransportError)
        self.assertEqual(self.layer.transportErrors, 1)
        self.assertDrained()

    def test_transportErrorOnRetransmission(self):
        """
        If the flow breaks between retransmissions (send raises), the
        transaction fails with TransportError at the next one.
        """
        flow = RaisingFlow(self.clock)
        tx = self.layer.sendRequest(makeRequest("OPTIONS"), flow)
        self.failureResultOf(tx.deferred, TransportError)
        self.flushLoggedErrors(ConnectionError)
        self.assertDrained()

    def test_ackRefused(self):
        """
        An ACK is never a client transaction; a request without a branch
        neither; a branch can only be used once.
        """
        self.assertRaises(ValueError, self.layer.sendRequest,
                          makeRequest("ACK"), self.udp)
        request = makeRequest("OPTIONS")
        self.layer.sendRequest(request, self.udp)
        self.assertRaises(ValueError, self.layer.sendRequest, request,
                          self.udp)


class InviteClientTests(LayerTestMixin, SynchronousTestCase):
    def test_timerAUntilTimerB(self):
        """
        Over UDP, with no response, the INVITE is retransmitted at T1, 2*T1,
        4*T1 ... (no cap) and the transaction fails with TransactionTimeout
        at 64*T1 (timer B).
        """
        tx = self.layer.sendRequest(makeRequest("INVITE"), self.udp)
        self.assertEqual(tx.state, CALLING)
        self.advanceTo(64 * T1 - 0.25)
        self.assertEqual(self.udp.times(),
                         [0, 0.5, 1.5, 3.5, 7.5, 15.5, 31.5])
        self.assertNoResult(tx.deferred)
        self.clock.advance(0.25)
        self.failureResultOf(tx.deferred, TransactionTimeout)
        self.assertDrained()

    def test_provisionalStopsRetransmission(self):
        """
        A provisional response moves the INVITE client transaction to
        Proceeding: no more retransmissions, no timer B.
        """
        request = makeRequest("INVITE")
        tx = self.layer.sendRequest(request, self.udp)
        seen = []
        tx.onProvisional = seen.append
        self.layer.messageReceived(responseTo(request, 180), self.udp)
        self.assertEqual(tx.state, PROCEEDING)
        self.assertEqual(len(seen), 1)
        self.clock.advance(100)
        self.assertEqual(len(self.udp.sent), 1)
        self.assertNoResult(tx.deferred)

    def test_non2xxIsAcknowledged(self):
        """
        A non-2xx final response is ACKed by the transaction itself (same
        branch, the response's To tag, Route copied, CSeq method ACK, one
        Via); a retransmission of it is ACKed again and absorbed; timer D
        (32 s) ends the transaction.
        """
        request = makeRequest("INVITE", cseq=7,
                              routes=["<sip:p1.test;lr>", "<sip:p2.test;lr>"])
        tx = self.layer.sendRequest(request, self.udp)
        busy = responseTo(request, 486, toTag="callee")
        self.layer.messageReceived(busy, self.udp)
        self.assertIs(self.successResultOf(tx.deferred), busy)
        self.assertEqual(tx.state, COMPLETED)
        ack = self.udp.messages()[-1]
        self.assertEqual(ack.method, "ACK")
        self.assertEqual(ack.uriText, request.uriText)
        self.assertEqual(ack.values("via"), request.values("via")[:1])
        self.assertEqual(ack.topVia().branch, request.topVia().branch)
        self.assertEqual(ack.header("to"), "<sip:bob@example.com>;tag=callee")
        self.assertEqual(ack.header("from"), request.header("from"))
        self.assertEqual(ack.header("call-id"), request.header("call-id"))
        self.assertEqual(ack.cseq(), (7, "ACK"))
        self.assertEqual(ack.headers["route"], request.headers["route"])
        self.layer.messageReceived(responseTo(request, 486, toTag="callee"),
                                   self.udp)
        self.assertEqual(len(self.udp.sent), 3)
        self.assertEqual(self.udp.messages()[-1].method, "ACK")
        self.assertEqual(self.user.responses, [])
        self.clock.advance(32 - 0.01)
        self.assertEqual(tx.state, COMPLETED)
        self.clock.advance(0.01)
        self.assertDrained()

    def test_reliableNon2xxEndsAtOnce(self):
        """
        Over a reliable flow, timer D is zero: the transaction ends when it
        has sent the ACK.
        """
        request = makeRequest("INVITE")
        tx = self.layer.sendRequest(request, self.tcp)
        self.layer.messageReceived(responseTo(request, 603), self.tcp)
        self.assertEqual(self.successResultOf(tx.deferred).code, 603)
        self.assertEqual([m.method for m in self.tcp.messages()],
                         ["INVITE", "ACK"])
        self.assertDrained()

    def test_2xxAcceptedUntilTimerM(self):
        """
        A 2xx fires the Deferred and moves the transaction to Accepted (RFC
        6026), where further 2xx (retransmitted or forked) go to the user's
        responseReceived; the transaction sends no ACK and timer M (64*T1)
        ends it.
        """
        request = makeRequest("INVITE")
        tx = self.layer.sendRequest(request, self.udp)
        ok = responseTo(request, 200, toTag="a")
        self.layer.messageReceived(ok, self.udp)
        self.assertIs(self.successResultOf(tx.deferred), ok)
        self.assertEqual(tx.state, ACCEPTED)
        forked = responseTo(request, 200, toTag="b")
        self.layer.messageReceived(forked, self.udp)
        self.assertEqual(self.user.responses, [(forked, self.udp)])
        self.clock.advance(64 * T1)
        self.assertEqual(len(self.udp.sent), 1)
        self.assertDrained()

    def test_cancelWaitsForProvisional(self):
        """
        cancel() before any provisional response sends nothing; the CANCEL
        (same branch, same CSeq number) goes out when the first provisional
        response arrives; the 487 is delivered and ACKed, and everything
        ends.
        """
        request = makeRequest("INVITE", cseq=3)
        tx = self.layer.sendRequest(request, self.udp)
        tx.cancel()
        self.assertEqual(len(self.udp.sent), 1)
        self.layer.messageReceived(responseTo(request, 180), self.udp)
        cancel = self.udp.messages()[-1]
        self.assertEqual(cancel.method, "CANCEL")
        self.assertEqual(cancel.topVia().branch, request.topVia().branch)
        self.assertEqual(cancel.cseq(), (3, "CANCEL"))
        self.assertEqual(cancel.header("to"), request.header("to"))
        self.layer.messageReceived(responseTo(cancel, 200), self.udp)
        self.layer.messageReceived(responseTo(request, 487), self.udp)
        self.assertEqual(self.successResultOf(tx.deferred).code, 487)
        self.assertEqual(self.udp.messages()[-1].method, "ACK")
        self.clock.advance(32)
        self.assertDrained()

    def test_cancelAfterFinalDoesNothing(self):
        """
        cancel() after the final response sends no CANCEL.
        """
        request = makeRequest("INVITE")
        tx = self.layer.sendRequest(request, self.tcp)
        self.layer.messageReceived(responseTo(request, 200), self.tcp)
        tx.cancel()
        self.assertEqual([m.method for m in self.tcp.messages()], ["INVITE"])

    def test_timerCCancels(self):
        """
        If no final response follows the last provisional one for timer C
        (180 s), the transaction sends a CANCEL; if still no final response
        comes within 64*T1, it fails with TransactionTimeout.
        """
        request = makeRequest("INVITE")
        tx = self.layer.sendRequest(request, self.tcp)
        self.layer.messageReceived(responseTo(request, 180), self.tcp)
        self.clock.advance(100)
        self.layer.messageReceived(responseTo(request, 183), self.tcp)
        self.clock.advance(179)
        self.assertEqual(len(self.tcp.sent), 1)
        self.clock.advance(1)
        self.assertEqual(self.tcp.messages()[-1].method, "CANCEL")
        self.clock.advance(64 * T1)
        self.failureResultOf(tx.deferred, TransactionTimeout)
        self.assertDrained()


class NonInviteServerTests(LayerTestMixin, SynchronousTestCase):
    def test_retransmissionAbsorbed(self):
        """
        A retransmitted request does not reach the user again: before the
        final response it is absorbed, after it the final response is sent
        again; timer J (64*T1) ends the transaction.
        """
        request = makeRequest("REGISTER")
        self.layer.messageReceived(request, self.udp)
        [(seen, tx)] = self.user.requests
        self.assertIs(seen, request)
        self.assertIsInstance(tx, ServerTransaction)
        self.assertIs(tx.request, request)
        self.assertIs(tx.flow, self.udp)
        self.assertEqual(tx.state, TRYING)
        self.layer.messageReceived(makeRequest(
            "REGISTER", branch=request.topVia().branch), self.udp)
        self.assertEqual(self.udp.sent, [])
        ok = responseTo(request, 200)
        tx.respond(ok)
        self.assertEqual(tx.state, COMPLETED)
        self.layer.messageReceived(makeRequest(
            "REGISTER", branch=request.topVia().branch), self.udp)
        # The same bytes again (the completed transaction keeps only them).
        self.assertEqual([m.toBytes() for m in self.udp.messages()],
                         [ok.toBytes(), ok.toBytes()])
        self.assertEqual(len(self.user.requests), 1)
        self.assertEqual(self.layer.absorbed, 2)
        self.clock.advance(64 * T1 - 0.01)
        self.assertEqual(tx.state, COMPLETED)
        self.clock.advance(0.01)
        self.assertEqual(tx.state, TERMINATED)
        self.assertDrained()

    def test_statelessChallenge(self):
        """
        A challenge sent statelessly (RFC 3261 section 8.2.7) ends a
        non-INVITE transaction over UDP once it is sent, keeping no
        record: a retransmission of the request reaches the user as a new
        request.
        """
        for code in (401, 407):
            request = makeRequest("REGISTER")
            self.layer.messageReceived(request, self.udp)
            [(_, tx)] = self.user.requests[-1:]
            challenge = responseTo(request, code, toTag="t")
            tx.respond(challenge, stateless=True)
            self.assertEqual(tx.state, TERMINATED)
            self.assertEqual(self.udp.messages()[-1:], [challenge])
            self.assertDrained()
            self.layer.messageReceived(request, self.udp)
            [(_, again)] = self.user.requests[-1:]
            self.assertIsNot(again, tx)
            again.respond(responseTo(request, code, toTag="u"),
                          stateless=True)
            self.assertEqual(self.layer.absorbed, 0)
            self.assertDrained()

    def test_statelessOnlyChallenges(self):
        """
        Only a 401 or 407 is sent statelessly: any other final response
        given with C{stateless} is kept until timer J as usual, and so is
        a challenge to an INVITE (whose ACK the transaction absorbs).
        """
        request = makeRequest("REGISTER")
        self.layer.messageReceived(request, self.udp)
        [(_, tx)] = self.user.requests
        tx.respond(responseTo(request, 403), stateless=True)
        self.assertEqual(tx.state, COMPLETED)
        self.assertEqual(self.layer.active, 1)
        invite = makeRequest("INVITE")
        self.layer.messageReceived(invite, self.udp)
        [(_, inviteTx)] = self.user.requests[-1:]
        inviteTx.respond(responseTo(invite, 401, toTag="t"), stateless=True)
        self.assertEqual(inviteTx.state, COMPLETED)
        self.clock.advance(64 * T1)
        self.assertDrained()

    def test_statelessChallengeUnsent(self):
        """
        A stateless challenge that cannot be sent fails the transaction, as
        any final response that cannot be sent does.
        """
        request = makeRequest("REGISTER")
        self.layer.messageReceived(request, self.udp)
        [(_, tx)] = self.user.requests
        self.udp.send = lambda message: False
        tx.respond(responseTo(request, 401, toTag="t"), stateless=True)
        [(failed, reason)] = self.user.failures
        self.assertIs(failed, tx)
        self.assertIsInstance(reason, TransportError)
        self.assertEqual(self.layer.transportErrors, 1)
        self.assertDrained()

    def test_provisionalResentInProceeding(self):
        """
        In Proceeding, a retransmitted request gets the last provisional
        response again.
        """
        request = makeRequest("OPTIONS")
        self.layer.messageReceived(request, self.udp)
        [(_, tx)] = self.user.requests
        trying = responseTo(request, 100)
        tx.respond(trying)
        self.assertEqual(tx.state, PROCEEDING)
        self.layer.messageReceived(request, self.udp)
        self.assertEqual(self.udp.messages(), [trying, trying])

    def test_reliableEndsAtOnce(self):
        """
        Over a reliable flow timer J is zero: the transaction ends with its
        final response.
        """
        self.user.answer = 200
        self.layer.messageReceived(makeRequest("OPTIONS"), self.tcp)
        self.assertEqual(self.tcp.messages()[0].code, 200)
        self.assertDrained()

    def test_secondFinalIgnored(self):
        """
        A second final response from the user is not sent.
        """
        request = makeRequest("OPTIONS")
        self.layer.messageReceived(request, self.udp)
        [(_, tx)] = self.user.requests
        tx.respond(responseTo(request, 200))
        tx.respond(responseTo(request, 500))
        tx.respond(responseTo(request, 180))
        self.assertEqual([m.code for m in self.udp.messages()], [200])

    def test_userNeverAnswers(self):
        """
        If the user never answers, the transaction ends after 64*T1 + T4
        and the user is told through transactionFailed.
        """
        self.layer.messageReceived(makeRequest("OPTIONS"), self.udp)
        [(_, tx)] = self.user.requests
        self.clock.advance(64 * T1 + T4)
        [(failed, reason)] = self.user.failures
        self.assertIs(failed, tx)
        self.assertIsInstance(reason, TransactionTimeout)
        self.assertEqual(self.udp.sent, [])
        self.assertDrained()

    def test_userRaises(self):
        """
        If the user raises on a new request, the request gets a 500 and the
        error is logged, not propagated.
        """
        self.layer.user = BrokenUser()
        self.layer.messageReceived(makeRequest("OPTIONS"), self.tcp)
        self.assertEqual([m.code for m in self.tcp.messages()], [500])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertDrained()

    def test_transportErrorOnResponse(self):
        """
        If the response cannot be sent (section 17.2.4), the transaction
        ends and the user is told.
        """
        request = makeRequest("OPTIONS")
        self.layer.messageReceived(request, self.udp)
        [(_, tx)] = self.user.requests
        self.udp.broken = True
        tx.respond(responseTo(request, 200))
        self.assertEqual(tx.state, TERMINATED)
        [(failed, reason)] = self.user.failures
        self.assertIsInstance(reason, TransportError)
        self.assertDrained()

    def test_sentByDistinguishes(self):
        """
        Two requests with the same branch but a different sent-by are two
        transactions (section 17.2.3).
        """
        branch = newBranch()
        self.layer.messageReceived(
            makeRequest("OPTIONS", branch=branch, host="a.test"), self.udp)
        self.layer.messageReceived(
            makeRequest("OPTIONS", branch=branch, host="b.test"), self.udp)
        self.assertEqual(len(self.user.requests), 2)

    def test_rfc2543Matching(self):
        """
        Without the magic cookie, a retransmission is matched on the
        request's identity (Request-URI, From tag, Call-ID, CSeq, Via).
        """
        self.layer.messageReceived(
            makeRequest("OPTIONS", branch="old1"), self.udp)
        self.layer.messageReceived(
            makeRequest("OPTIONS", branch="old1"), self.udp)
        self.assertEqual(len(self.user.requests), 1)
        self.layer.messageReceived(
            makeRequest("OPTIONS", branch="old1", cseq=2), self.udp)
        self.assertEqual(len(self.user.requests), 2)


    def test_rfc2543Ack(self):
        """
        Without the magic cookie, the ACK for a non-2xx final response is
        matched to its INVITE server transaction and absorbed.
        """
        invite = makeRequest("INVITE", branch="old2")
        self.layer.messageReceived(invite, self.tcp)
        [(_, tx)] = self.user.requests
        busy = responseTo(invite, 486, toTag="t")
        tx.respond(busy)
        self.layer.messageReceived(makeAck(invite, busy), self.tcp)
        self.assertEqual(self.user.acks, [])
        self.assertDrained()


class InviteServerTests(LayerTestMixin, SynchronousTestCase):
    def receiveInvite(self, flow=None, **kw):
        request = makeRequest("INVITE", **kw)
        self.layer.messageReceived(request, flow or self.udp)
        [(_, tx)] = self.user.requests[-1:]
        return request, tx

    def test_tryingAfter200ms(self):
        """
        If the user has not answered an INVITE within 200 ms, the
        transaction sends 100 Trying (without a To tag).
        """
        request, tx = self.receiveInvite()
        self.assertEqual(tx.state, PROCEEDING)
        self.clock.advance(0.199)
        self.assertEqual(self.udp.sent, [])
        self.clock.advance(0.001)
        [trying] = self.udp.messages()
        self.assertEqual(trying.code, 100)
        self.assertEqual(trying.header("to"), request.header("to"))

    def test_noTryingIfAnswered(self):
        """
        If the user answers within 200 ms, no 100 Trying is sent.
        """
        request, tx = self.receiveInvite()
        self.clock.advance(0.1)
        tx.respond(responseTo(request, 180, toTag="t"))
        self.clock.advance(1)
        self.assertEqual([m.code for m in self.udp.messages()], [180])

    def test_retransmissionBefore200ms(self):
        """
        A retransmitted INVITE before any response gets 100 Trying at once,
        and no second one follows at 200 ms.
        """
        request, tx = self.receiveInvite()
        self.clock.advance(0.1)
        self.layer.messageReceived(request, self.udp)
        self.clock.advance(1)
        self.assertEqual([m.code for m in self.udp.messages()], [100])
        self.assertEqual(len(self.user.requests), 1)

    def test_retransmissionGetsLastProvisional(self):
        """
        In Proceeding a retransmitted INVITE gets the last provisional
        response again.
        """
        request, tx = self.receiveInvite()
        ringing = responseTo(request, 180, toTag="t")
        tx.respond(ringing)
        self.layer.messageReceived(request, self.udp)
        self.assertEqual(self.udp.messages(), [ringing, ringing])

    def test_timerGUntilTimerH(self):
        """
        Over UDP a non-2xx final response is retransmitted at T1, 2*T1 ...
        capped at T2 (timer G) until timer H (64*T1) ends the transaction
        without an ACK and tells the user.
        """
        request, tx = self.receiveInvite()
        tx.respond(responseTo(request, 486, toTag="t"))
        self.assertEqual(tx.state, COMPLETED)
        self.advanceTo(64 * T1 - 0.25)
        self.assertEqual(
            self.udp.times(),
            [0, 0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5])
        self.assertEqual(self.user.failures, [])
        self.clock.advance(0.25)
        [(failed, reason)] = self.user.failures
        self.assertIs(failed, tx)
        self.assertIsInstance(reason, TransactionTimeout)
        self.assertDrained()

    def test_challengeNotRetransmitted(self):
        """
        Over UDP a 407 (or 401) sent before any provisional response is not
        retransmitted by timer G: each retransmission of the INVITE gets it
        once; timer H still ends the transaction.
        """
        for code in (401, 407):
            self.udp.sent.clear()
            request, tx = self.receiveInvite()
            tx.respond(responseTo(request, code, toTag="t"))
            self.clock.advance(10)
            self.assertEqual(len(self.udp.sent), 1)
            self.layer.messageReceived(request, self.udp)
            self.assertEqual(len(self.udp.sent), 2)
            self.clock.advance(64 * T1)
            self.assertEqual(len(self.udp.sent), 2)
            self.assertEqual(tx.state, TERMINATED)

    def test_challengeAfterProvisionalRetransmitted(self):
        """
        After a provisional response the client has stopped retransmitting
        its INVITE: a 407 then is retransmitted by timer G as any other
        final response.
        """
        request, tx = self.receiveInvite()
        tx.respond(responseTo(request, 100))
        tx.respond(responseTo(request, 407, toTag="t"))
        self.advanceTo(1.75)
        self.assertEqual(self.udp.times(), [0, 0, 0.5, 1.5])

    def test_ackConfirmsThenTimerI(self):
        """
        The ACK for a non-2xx final response stops timer G and is absorbed
        (Confirmed), as are further ACKs and INVITEs; timer I (T4) ends the
        transaction.
        """
        request, tx = self.receiveInvite()
        busy = responseTo(request, 486, toTag="t")
        tx.respond(busy)
        self.clock.advance(0.6)
        self.assertEqual(len(self.udp.sent), 2)
        ack = makeAck(request, busy)
        self.layer.messageReceived(ack, self.udp)
        self.assertEqual(tx.state, CONFIRMED)
        self.layer.messageReceived(makeAck(request, busy), self.udp)
        self.layer.messageReceived(request, self.udp)
        self.clock.advance(T4 - 0.01)
        self.assertEqual(tx.state, CONFIRMED)
        self.assertEqual(len(self.udp.sent), 2)
        self.assertEqual(self.user.acks, [])
        self.assertEqual(len(self.user.requests), 1)
        self.clock.advance(0.01)
        self.assertEqual(tx.state, TERMINATED)
        self.assertDrained()

    def test_retransmittedInviteInCompleted(self):
        """
        In Completed a retransmitted INVITE gets the final response again.
        """
        request, tx = self.receiveInvite(flow=self.tcp)
        busy = responseTo(request, 486, toTag="t")
        tx.respond(busy)
        self.layer.messageReceived(request, self.tcp)
        self.assertEqual([m.toBytes() for m in self.tcp.messages()],
                         [busy.toBytes()] * 2)

    def test_reliableNoTimerG(self):
        """
        Over a reliable flow the non-2xx final response is not
        retransmitted, and the ACK ends the transaction at once (I = 0).
        """
        request, tx = self.receiveInvite(flow=self.tcp)
        busy = responseTo(request, 486, toTag="t")
        tx.respond(busy)
        self.clock.advance(10)
        self.assertEqual(len(self.tcp.sent), 1)
        self.layer.messageReceived(makeAck(request, busy), self.tcp)
        self.assertEqual(tx.state, TERMINATED)
        self.assertDrained()

    def test_2xxAcceptedUntilTimerL(self):
        """
        After a 2xx the transaction is Accepted (RFC 6026): a retransmitted
        INVITE is absorbed, an ACK matching it goes to the user, further 2xx
        from the user are sent, and timer L (64*T1) ends it.
        """
        request, tx = self.receiveInvite()
        ok = responseTo(request, 200, toTag="t")
        tx.respond(ok)
        self.assertEqual(tx.state, ACCEPTED)
        self.layer.messageReceived(request, self.udp)
        self.assertEqual(self.udp.messages(), [ok])
        ack = makeAck(request, ok)
        self.layer.messageReceived(ack, self.udp)
        self.assertEqual(self.user.acks, [(ack, self.udp)])
        tx.respond(ok)
        tx.respond(responseTo(request, 500))
        self.assertEqual(self.udp.messages(), [ok, ok])
        self.clock.advance(64 * T1)
        self.assertDrained()

    def test_userNeverAnswersInvite(self):
        """
        If the user sends no final response to an INVITE within
        inviteTimeout of its last provisional one, the transaction answers
        408 itself, tells the user, and runs to its end.
        """
        self.layer.inviteTimeout = 100.0
        request, tx = self.receiveInvite(flow=self.tcp)
        self.clock.advance(50)
        tx.respond(responseTo(request, 180, toTag="t"))
        self.clock.advance(99)
        self.assertEqual([m.code for m in self.tcp.messages()], [100, 180])
        self.clock.advance(1)
        self.assertEqual([m.code for m in self.tcp.messages()],
                         [100, 180, 408])
        self.assertEqual(self.tcp.messages()[-1].header("to"),
                         "<sip:bob@example.com>;tag=t")
        [(failed, reason)] = self.user.failures
        self.assertIsInstance(reason, TransactionTimeout)
        self.clock.advance(64 * T1)
        self.assertDrained()


class CompletedInviteMemoryTests(LayerTestMixin, SynchronousTestCase):
    """
    An INVITE answered with a non-2xx final response that waits for its ACK
    (a half-open INVITE) keeps only what it needs.
    """

    def test_onlyResponseBytesKept(self):
        """
        Once the user lets go of it, what the table holds for such an
        INVITE references neither the request nor the response object, and
        the timers of many such INVITEs are a few shared timers, not one
        or two each.  (A 486, which timer G retransmits: a challenge sent
        before any provisional response is not retransmitted.)
        """
        for i in range(50):
            request = makeRequest("INVITE", branch=f"z9hG4bKmem{i}")
            self.layer.messageReceived(request, self.udp)
            [(_, tx)] = self.user.requests
            del self.user.requests[:]
            tx.respond(responseTo(request, 486, toTag="t"))
            key = tx.key
            del tx
        record = self.layer._servers[key]
        self.assertIsNone(record.request)
        self.assertEqual(record.code, 486)
        self.assertFalse(any(isinstance(getattr(record, name, None),
                                        type(request))
                             for name in record.__slots__))
        self.assertEqual(self.layer.active, 50)
        self.assertLessEqual(len(self.clock.getDelayedCalls()), 4)
        self.clock.advance(T1)
        self.assertEqual(len(self.udp.sent), 100)
        self.advanceTo(64 * T1 + 1)
        self.assertDrained()
        self.assertEqual(len(self.user.failures), 50)

    def test_cancelAfterFinalNobodyHolds(self):
        """
        A CANCEL for such an INVITE, once only its record is left, is
        answered 200 by the layer (section 9.2: it has no effect).
        """
        request = makeRequest("INVITE")
        self.layer.messageReceived(request, self.udp)
        [(_, tx)] = self.user.requests
        tx.respond(responseTo(request, 486, toTag="t"))
        del self.user.requests[:], tx
        # Without reference counting (PyPy) garbage goes at a collection.
        gc.collect()
        self.layer.messageReceived(
            makeRequest("CANCEL", branch=request.topVia().branch), self.udp)
        self.assertEqual(self.user.cancels, [])
        self.assertEqual([m.code for m in self.udp.messages()], [486, 200])


class ExpiryQueueTests(SynchronousTestCase):
    """
    The shared timer queues of records.
    """

    def test_recordAddedBackDuringSweep(self):
        """
        A record added while the queue is being swept does not delay the
        records already waiting: each is handled at its own time.
        """
        from sipdist.sip.transaction import _ExpiryQueue
        clock = Clock()
        handled = []

        class Record:
            state = COMPLETED

            def __init__(self, name, again):
                self.name, self.again = name, again

            def act(self):
                handled.append((self.name, clock.seconds()))
                if self.again:
                    queue.add(Record(self.name + "2", False))

        queue = _ExpiryQueue(clock, 4.0, "act")
        queue.add(Record("a", True))
        clock.advance(0.5)
        queue.add(Record("b", False))
        clock.advance(3.5)
        clock.advance(0.5)
        clock.advance(3.5)
        self.assertEqual(handled, [("a", 4.0), ("b", 4.5), ("a2", 8.0)])
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_pruneDuringSweep(self):
        """
        A record whose action prunes the queue (an INVITE record's
        termination prunes every INVITE queue) while it is swept drops the
        terminated records after it and leaves the later ones to their own
        time.
        """
        from sipdist.sip.transaction import _ExpiryQueue
        clock = Clock()
        handled = []

        class Record:
            state = COMPLETED

            def __init__(self, name, ends=None):
                self.name, self.ends = name, ends

            def act(self):
                handled.append((self.name, clock.seconds()))
                self.state = TERMINATED
                if self.ends is not None:
                    self.ends.state = TERMINATED
                queue.prune()

        queue = _ExpiryQueue(clock, 4.0, "act")
        b = Record("b")
        queue.add(Record("a", ends=b))
        queue.add(b)
        clock.advance(1.0)
        queue.add(Record("c"))
        clock.advance(3.0)
        self.assertEqual(handled, [("a", 4.0)])
        clock.advance(1.0)
        self.assertEqual(handled, [("a", 4.0), ("c", 5.0)])
        self.assertEqual(len(queue._queue), 0)
        self.assertEqual(len(queue._groups), 0)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_noObjectPerRecord(self):
        """
        The queue holds the records themselves, and one time and count per
        group of records due within its granularity: a record costs it no
        object of its own.  A group is handled when its last record is
        due, never earlier.
        """
        from sipdist.sip.transaction import _ExpiryQueue
        clock = Clock()
        handled = []

        class Record:
            state = COMPLETED

            def __init__(self, n):
                self.n = n

            def act(self):
                handled.append((self.n, clock.seconds()))

        queue = _ExpiryQueue(clock, 32.0, "act")
        records = []
        for n in range(1000):
            records.append(Record(n))
            queue.add(records[-1])
            clock.advance(0.00005)
        self.assertTrue(all(queued is record for queued, record
                            in zip(queue._queue, records)),
                        "the queue holds more than the records")
        self.assertEqual(len(queue._groups), 1)
        clock.advance(32.0 - 0.05)
        self.assertEqual(handled, [])
        clock.advance(0.1)
        self.assertEqual([n for n, _ in handled], list(range(1000)))
        self.assertTrue(all(when >= 32.0 + n * 0.00005
                            for n, when in handled))
        self.assertEqual(clock.getDelayedCalls(), [])


class CancelTests(LayerTestMixin, SynchronousTestCase):
    def test_cancelMatchesInvite(self):
        """
        A CANCEL is its own non-INVITE server transaction; the user gets it
        with the INVITE server transaction it cancels, which is marked
        cancelled.  Both transactions then run to their end.
        """
        invite = makeRequest("INVITE")
        self.layer.messageReceived(invite, self.udp)
        [(_, inviteTx)] = self.user.requests
        cancel = makeRequest("CANCEL", branch=invite.topVia().branch)
        self.assertIs(self.layer.findServerTransaction(cancel), inviteTx)
        self.layer.messageReceived(cancel, self.udp)
        [(seen, cancelTx, cancelled)] = self.user.cancels
        self.assertIs(seen, cancel)
        self.assertIsNot(cancelTx, inviteTx)
        self.assertIs(cancelled, inviteTx)
        self.assertTrue(inviteTx.cancelled)
        self.assertEqual(len(self.user.requests), 1)
        cancelTx.respond(responseTo(cancel, 200))
        terminated = responseTo(invite, 487)
        inviteTx.respond(terminated)
        self.layer.messageReceived(makeAck(invite, terminated), self.udp)
        self.clock.advance(64 * T1)
        self.assertDrained()

    def test_cancelAfterFinal(self):
        """
        A CANCEL for an INVITE already answered finally is still given the
        INVITE transaction (so the user answers the CANCEL 200) but does
        not mark it cancelled.
        """
        invite = makeRequest("INVITE")
        self.layer.messageReceived(invite, self.tcp)
        [(_, inviteTx)] = self.user.requests
        inviteTx.respond(responseTo(invite, 200))
        cancel = makeRequest("CANCEL", branch=invite.topVia().branch)
        self.layer.messageReceived(cancel, self.tcp)
        [(_, _, cancelled)] = self.user.cancels
        self.assertIs(cancelled, inviteTx)
        self.assertFalse(inviteTx.cancelled)

    def test_cancelUnmatched(self):
        """
        A CANCEL matching no INVITE server transaction reaches the user with
        None, so that it can answer 481 (or forward it statelessly).
        """
        cancel = makeRequest("CANCEL")
        self.assertIsNone(self.layer.findServerTransaction(cancel))
        self.layer.messageReceived(cancel, self.tcp)
        [(_, cancelTx, cancelled)] = self.user.cancels
        self.assertIsNone(cancelled)
        cancelTx.respond(responseTo(cancel, 481))
        self.assertDrained()


class LayerTests(LayerTestMixin, SynchronousTestCase):
    def test_strayAck(self):
        """
        An ACK matching no transaction (the ACK for a 2xx) goes to the
        user's ackReceived with its flow.
        """
        ack = makeRequest("ACK", toTag="ack")
        self.layer.messageReceived(ack, self.udp)
        self.assertEqual(self.user.acks, [(ack, self.udp)])
        self.assertDrained()

    def test_strayResponse(self):
        """
        A response matching no client transaction goes to the user's
        responseReceived.
        """
        response = responseTo(makeRequest("INVITE"), 200)
        self.layer.messageReceived(response, self.udp)
        self.assertEqual(self.user.responses, [(response, self.udp)])

    def test_tableFullAnswers503(self):
        """
        When the table is full, a new request is answered 503 with
        Retry-After statelessly, without reaching the user; a client
        transaction fails with TransactionLayerFull.  Retransmissions of
        existing transactions are still matched.
        """
        self.layer.maxTransactions = 2
        first = makeRequest("OPTIONS")
        self.layer.messageReceived(first, self.udp)
        self.layer.messageReceived(makeRequest("OPTIONS"), self.udp)
        self.layer.messageReceived(makeRequest("OPTIONS"), self.udp)
        self.assertEqual(len(self.user.requests), 2)
        [rejected] = self.udp.messages()
        self.assertEqual((rejected.code, rejected.phrase),
                         (503, "Service Unavailable (Transaction Table Full)"))
        self.assertEqual(rejected.header("retry-after"), "10")
        tx = self.layer.sendRequest(makeRequest("OPTIONS"), self.udp)
        self.failureResultOf(tx.deferred, TransactionLayerFull)
        self.assertEqual(self.layer.rejected, 2)
        self.assertEqual(self.layer.active, 2)
        self.layer.messageReceived(first, self.udp)
        self.assertEqual(self.layer.absorbed, 1)

    def test_tableFullLogBounded(self):
        """
        A flood past the table's bound is logged once per 10 seconds, with
        one line counting the requests not logged, not once a request.
        """
        from twisted.logger import globalLogPublisher
        lines = []

        def observer(event):
            if event.get("log_namespace", "").endswith("TransactionLayer"):
                lines.append(event)

        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)
        self.layer.maxTransactions = 0
        for i in range(100):
            self.layer.messageReceived(makeRequest("OPTIONS"), self.udp)
        self.clock.advance(10)
        self.layer.messageReceived(makeRequest("OPTIONS"), self.udp)
        self.assertEqual(self.layer.rejected, 101)
        self.assertEqual([e.get("count") for e in lines], [None, 99, None])
        self.assertEqual(lines[1]["what"], "503s to new requests")
        self.assertEqual(lines[2]["why"], "transaction table full (0)")

    def test_badInputDropped(self):
        """
        A request without Via or with a malformed CSeq, and a response
        without Via, are dropped and logged, without a traceback.
        """
        request = makeRequest("OPTIONS")
        request.removeHeader("via")
        self.layer.messageReceived(request, self.udp)
        request = makeRequest("OPTIONS", branch="old")
        request.setHeader("cseq", "x")
        self.layer.messageReceived(request, self.udp)
        response = responseTo(makeRequest("OPTIONS"), 200)
        response.removeHeader("via")
        self.layer.messageReceived(response, self.udp)
        self.assertEqual(self.user.requests, [])
        self.assertEqual(self.user.responses, [])
        self.assertDrained()

    def test_stats(self):
        """
        The layer counts transactions created, and how many per second.
        """
        self.user.answer = 200
        self.clock.advance(10)
        for _ in range(3):
            self.layer.messageReceived(makeRequest("OPTIONS"), self.tcp)
        self.layer.sendRequest(makeRequest("OPTIONS"), self.tcp)
        self.clock.advance(1)
        stats = self.layer.stats()
        self.assertEqual(stats["server_created"], 3)
        self.assertEqual(stats["client_created"], 1)
        self.assertEqual(stats["created_per_second"], 4)
        self.assertEqual(stats["active"], 1)
        self.clock.advance(5)
        self.assertEqual(self.layer.createdPerSecond(), 0)

    def test_stop(self):
        """
        stop() ends every transaction and cancels every timer; pending
        client transactions fail with TransactionLayerStopped.
        """
        self.layer.messageReceived(makeRequest("INVITE"), self.udp)
        tx = self.layer.sendRequest(makeRequest("INVITE"), self.udp)
        self.layer.stop()
        self.failureResultOf(tx.deferred, TransactionLayerStopped)
        self.assertDrained()


class AnsweredTests(LayerTestMixin, SynchronousTestCase):
    """
    L{TransactionLayer.answered} counts final responses by method and code.
    """

    def test_counted(self):
        """
        Each final response counts once under its request's method and its
        code; provisional responses and retransmissions do not count, and
        a method outside the known ones is counted as C{other}, so the
        table stays bounded.
        """
        for method, code in [("OPTIONS", 200), ("OPTIONS", 200),
                             ("REGISTER", 401), ("FROBNICATE", 405),
                             ("JUGGLE", 405)]:
            request = makeRequest(method)
            self.layer.messageReceived(request, self.udp)
            [(_, tx)] = self.user.requests[-1:]
            tx.respond(responseTo(request, 100))
            tx.respond(responseTo(request, code))
            self.layer.messageReceived(request, self.udp)
        self.assertEqual(self.layer.answered, {
            ("OPTIONS", 200): 2, ("REGISTER", 401): 1, ("other", 405): 2})
