# -*- test-case-name: tests.test_transaction_memory -*-
"""
The memory the transaction layer keeps for the completed non-INVITE server
transactions over UDP (timer J): records in a byte buffer, no Python object
each, all of it given back once they have ended.
"""

import platform
import random
import sys

from twisted.internet.task import Clock
from twisted.trial.unittest import SkipTest, SynchronousTestCase

from sipdist.sip.message import parseMessage, responseTo
from sipdist.sip.transaction import (
    COMPLETED, TERMINATED, ServerTransaction, TransactionLayer,
    _CompletedRecords, _CompletedServerRecord)
from sipdist.sip.transport import DatagramFlow
from tests.test_transaction import RecordingUser, makeRequest

T1 = 0.5


class FakeDatagramProtocol:
    """
    What a L{DatagramFlow} needs of its UDP port: C{sendBytes}, recorded.
    """

    index = 0
    local = ("127.0.0.1", 5060)

    def __init__(self):
        self.sent = []

    def sendBytes(self, data, addr, capture=True):
        self.sent.append((data, tuple(addr)))
        return True


class WaitingDatagramProtocol(FakeDatagramProtocol):
    """
    A UDP port whose answers written with C{sendSoon} wait for
    L{endWakeUp}, as the real port's wait for the end of its wake-up.
    """

    def __init__(self):
        FakeDatagramProtocol.__init__(self)
        self.waiting = []
        self.fail = False

    def sendSoon(self, data, addr, failed, context):
        self.waiting.append((data, tuple(addr), failed, context))
        return True

    def endWakeUp(self):
        waiting, self.waiting = self.waiting, []
        for data, addr, failed, context in waiting:
            if self.fail:
                failed(context, OSError("no route"))
            else:
                self.sent.append((data, addr))


def padded(response, size):
    """
    C{response} with a body making its bytes about C{size} long.
    """
    response.body = b"x" * max(size - len(response.toBytes()), 0)
    response.headers["content-length"] = [str(len(response.body))]
    return response


class CompletedRecordsTests(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.user = RecordingUser()
        self.layer = TransactionLayer(self.clock, self.user, T1=T1,
                                      maxTransactions=10000)
        self.protocol = FakeDatagramProtocol()

    def flow(self, port=40000):
        return DatagramFlow(self.protocol, ("127.0.0.1", port))

    def key(self, branch, port=40000):
        return (branch, "127.0.0.1", port, "REGISTER")

    def answer(self, branch, code=200, size=None, port=40000):
        """
        A REGISTER with C{branch} from C{port}, answered C{code}.

        @return: (the transaction, the response's bytes)
        """
        request = makeRequest("REGISTER", branch=branch, host="127.0.0.1",
                              port=port)
        self.layer.messageReceived(request, self.flow(port))
        request, transaction = self.user.requests.pop()
        response = responseTo(request, code)
        if size is not None:
            padded(response, size)
        transaction.respond(response)
        return transaction, response.toBytes()

    def test_retransmissionThenTimerJ(self):
        """
        A completed non-INVITE transaction over UDP keeps no object in the
        layer's table: a retransmitted request still gets the same bytes
        again, to the same address, until timer J; whoever holds the
        transaction sees it Completed, then Terminated.
        """
        transaction, data = self.answer("z9hG4bKmem1")
        self.assertEqual(self.layer._serverTable, {})
        self.assertEqual(self.layer.active, 1)
        self.layer.messageReceived(
            makeRequest("REGISTER", branch="z9hG4bKmem1", host="127.0.0.1",
                        port=40000), self.flow())
        self.assertEqual(self.protocol.sent,
                         [(data, ("127.0.0.1", 40000))] * 2)
        self.assertEqual(self.layer.absorbed, 1)
        self.assertEqual(self.user.requests, [])
        self.clock.advance(64 * T1 - 0.01)
        self.assertIs(transaction.state, COMPLETED)
        self.clock.advance(0.01)
        self.assertIs(transaction.state, TERMINATED)
        self.assertEqual(self.layer.active, 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_inspection(self):
        """
        Looked at through C{_servers}, a record is a
        L{_CompletedServerRecord} with its key, flow and bytes.
        """
        transaction, data = self.answer("z9hG4bKmem2", port=40002)
        [(key, record)] = self.layer._servers.items()
        self.assertEqual(key, transaction.key)
        self.assertIsInstance(record, _CompletedServerRecord)
        self.assertEqual((record.data, tuple(record.flow.remote),
                          record.state),
                         (data, ("127.0.0.1", 40002), COMPLETED))

    def test_keysDistinguished(self):
        """
        Requests differing only in the port of their Via's sent-by are
        different transactions.
        """
        self.answer("z9hG4bKsame", code=200, port=40001)
        self.answer("z9hG4bKsame", code=403, port=40002)
        self.assertEqual(self.layer.active, 2)
        self.assertEqual(len(self.user.requests), 0)
        del self.protocol.sent[:]
        self.layer.messageReceived(
            makeRequest("REGISTER", branch="z9hG4bKsame", host="127.0.0.1",
                        port=40002), self.flow(40002))
        [(data, addr)] = self.protocol.sent
        self.assertTrue(data.startswith(b"SIP/2.0 403"))
        self.assertEqual(addr, ("127.0.0.1", 40002))

    def test_manyChunks(self):
        """
        Records spread over several chunks are each found, and the chunks
        are freed as their records end: none is left once all have.
        """
        sent = {}
        for i in range(300):
            self.clock.advance(0.01)
            sent[i] = self.answer(f"z9hG4bKmany{i}", size=700)[1]
        records = self.layer._completedJ
        self.assertGreater(len(records._chunks), 2)
        for i in (0, 150, 299):
            del self.protocol.sent[:]
            self.layer.messageReceived(
                makeRequest("REGISTER", branch=f"z9hG4bKmany{i}",
                            host="127.0.0.1", port=40000), self.flow())
            self.assertEqual(self.protocol.sent,
                             [(sent[i], ("127.0.0.1", 40000))])
        chunks = len(records._chunks)
        # The first half has ended.
        self.clock.advance(64 * T1 - 1.5)
        self.assertLess(len(records), 160)
        self.assertLess(len(records._chunks), chunks)
        self.clock.advance(2)
        self.assertEqual(len(records), 0)
        self.assertEqual(list(records._chunks), [])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_discard(self):
        """
        A record discarded before its time (its answer could not be sent
        after all) is found no more, nor counted, nor listed; the others
        are, and end with timer J as before.  Discarding it again, or a
        record that has ended, does nothing.
        """
        layer = self.layer
        records = layer._completedJ
        kept = [layer.keepCompleted(self.key(f"z9hG4bKd{i}"), self.flow(),
                                    b"answer %d" % (i,)) for i in range(3)]
        self.assertEqual(len(records), 3)
        layer.discardCompleted(kept[1])
        layer.discardCompleted(kept[1])
        self.assertEqual(len(records), 2)
        self.assertIsNone(records.find(self.key("z9hG4bKd1")))
        self.assertEqual(sorted(layer._servers),
                         [self.key("z9hG4bKd0"), self.key("z9hG4bKd2")])
        self.assertFalse(layer.serving(self.key("z9hG4bKd1")))
        self.assertEqual(layer._servers[self.key("z9hG4bKd2")].data,
                         b"answer 2")
        # A new transaction may take the key again.
        again = layer.keepCompleted(self.key("z9hG4bKd1"), self.flow(),
                                    b"again")
        self.assertEqual(layer._servers[self.key("z9hG4bKd1")].data,
                         b"again")
        self.clock.advance(64 * T1 + 1)
        self.assertEqual(len(records), 0)
        layer.discardCompleted(kept[0])
        layer.discardCompleted(again)
        self.assertEqual((len(records), layer.active), (0, 0))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_discardLast(self):
        """
        Discarding the last record leaves no timer and no chunk.
        """
        layer = self.layer
        kept = layer.keepCompleted(self.key("z9hG4bKlast"), self.flow(),
                                   b"answer")
        self.assertNotEqual(self.clock.getDelayedCalls(), [])
        layer.discardCompleted(kept)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(list(layer._completedJ._chunks), [])
        self.assertEqual(layer.active, 0)

    def test_discardObjectRecord(self):
        """
        A record the table cannot hold (a key of RFC 2543) is an object in
        the layer's table: discarded, it leaves it; its timer J then does
        nothing to a new transaction of the same key.
        """
        layer = self.layer
        key = ("<RFC 2543 key>",)
        kept = layer.keepCompleted(key, self.flow(), b"answer")
        self.assertIsInstance(kept, _CompletedServerRecord)
        self.assertTrue(layer.serving(key))
        layer.discardCompleted(kept)
        self.assertFalse(layer.serving(key))
        other = layer.keepCompleted(key, self.flow(), b"again")
        self.clock.advance(64 * T1 - 1)
        self.assertIs(layer._servers[key], other)

    def test_answerWaitsForTheWakeUp(self):
        """
        Over a port that sends a wake-up's answers at its end, the final
        response waits; its record is kept meanwhile, so a retransmission
        read in the same wake-up gets it at once; then both go out, and
        the record ends with timer J.
        """
        self.protocol = WaitingDatagramProtocol()
        transaction, data = self.answer("z9hG4bKsoon")
        self.assertEqual((self.protocol.sent, len(self.protocol.waiting)),
                         ([], 1))
        self.assertIs(transaction.state, COMPLETED)
        self.layer.messageReceived(
            makeRequest("REGISTER", branch="z9hG4bKsoon", host="127.0.0.1",
                        port=40000), self.flow())
        self.assertEqual(self.layer.absorbed, 1)
        self.protocol.endWakeUp()
        self.assertEqual(self.protocol.sent,
                         [(data, ("127.0.0.1", 40000))] * 2)
        self.assertEqual(self.user.failures, [])
        self.clock.advance(64 * T1)
        self.assertIs(transaction.state, TERMINATED)
        self.assertEqual(self.layer.active, 0)

    def test_answerFailsAfterTheWakeUp(self):
        """
        A final response that cannot be sent at the end of the wake-up
        fails its transaction as a send that fails at once does: a
        transport error, the user told, no record left (the next
        retransmission is a new transaction); a record the table could
        not hold (an object) too.
        """
        self.protocol = WaitingDatagramProtocol()
        self.protocol.fail = True
        transaction, data = self.answer("z9hG4bKsoonfail")
        big, bigData = self.answer("z9hG4bKsoonbig", size=70000)
        self.assertIn(big.key, self.layer._serverTable)
        self.protocol.endWakeUp()
        self.assertEqual(self.layer.transportErrors, 2)
        self.assertEqual(
            [(t, type(r).__name__) for t, r in self.user.failures],
            [(transaction, "TransportError"), (big, "TransportError")])
        self.assertIs(transaction.state, TERMINATED)
        self.assertIs(big.state, TERMINATED)
        self.assertEqual((self.layer.active, dict(self.layer._servers)),
                         (0, {}))
        self.protocol.fail = False
        self.layer.messageReceived(
            makeRequest("REGISTER", branch="z9hG4bKsoonfail",
                        host="127.0.0.1", port=40000), self.flow())
        self.assertEqual(len(self.user.requests), 1)
        self.assertEqual(self.layer.absorbed, 0)

    def test_indexShrinks(self):
        """
        The index grows with a peak and is rebuilt small once the records
        of the peak have ended (an index keeps the size it had otherwise).
        """
        for i in range(2000):
            self.answer(f"z9hG4bKpeak{i}")
        records = self.layer._completedJ
        # At most half of its slots used.
        self.assertGreaterEqual(len(records._positions), 2 * 2000)
        self.clock.advance(1)
        self.answer("z9hG4bKafter")
        self.clock.advance(64 * T1 - 0.5)
        self.assertEqual(len(records), 1)
        self.assertEqual(len(records._positions), 16)
        self.clock.advance(1)
        self.assertEqual(len(records), 0)

    def test_noObjectPerRecord(self):
        """
        A completed transaction's record takes no block of the
        interpreter's small object allocator (a peak of them would leave
        arenas that outliving objects keep).
        """
        if platform.python_implementation() != "CPython":
            raise SkipTest("CPython's small object allocator")
        for i in range(50):
            self.answer(f"z9hG4bKwarm{i}")
        del self.protocol.sent[:]
        before = sys.getallocatedblocks()
        for i in range(2000):
            self.answer(f"z9hG4bKcount{i}")
            del self.protocol.sent[:]
        self.assertEqual(len(self.layer._completedJ), 2050)
        self.assertLess(sys.getallocatedblocks() - before, 200)

    def test_tableBound(self):
        """
        Records count in the table's bound, but a table full of them makes
        room for a new request: the oldest record is ended before timer J
        (counted in C{evicted}); its request, sent again, is a new one,
        while the others' retransmissions are still answered from their
        records.
        """
        layer = TransactionLayer(self.clock, self.user, T1=T1,
                                 maxTransactions=3)
        self.layer = layer
        for i in range(3):
            self.answer(f"z9hG4bKfull{i}")
            self.clock.advance(0.1)
        self.assertEqual(layer.active, 3)
        del self.protocol.sent[:]
        self.answer("z9hG4bKfull3")
        self.assertEqual((layer.rejected, layer.evicted), (0, 1))
        self.assertEqual(layer.active, 3)
        self.assertEqual(layer.stats()["evicted"], 1)
        self.assertFalse(layer.serving(self.key("z9hG4bKfull0")))
        for i in (1, 2, 3):
            self.assertTrue(layer.serving(self.key(f"z9hG4bKfull{i}")))
        absorbed = layer.absorbed
        layer.messageReceived(
            makeRequest("REGISTER", branch="z9hG4bKfull1", host="127.0.0.1",
                        port=40000), self.flow())
        self.assertEqual(layer.absorbed, absorbed + 1)

    def test_tableFullInProgress(self):
        """
        Transactions in progress are never ended to make room: a table full
        of them answers a new request 503 statelessly, whatever records it
        holds besides.
        """
        layer = TransactionLayer(self.clock, self.user, T1=T1,
                                 maxTransactions=3)
        self.layer = layer
        self.answer("z9hG4bKdone")
        for i in range(2):
            layer.messageReceived(
                makeRequest("REGISTER", branch=f"z9hG4bKopen{i}",
                            host="127.0.0.1", port=40000), self.flow())
        del self.protocol.sent[:]
        self.assertEqual(layer.inProgress(), 2)
        layer.messageReceived(
            makeRequest("REGISTER", branch="z9hG4bKopen2", host="127.0.0.1",
                        port=40000), self.flow())
        # The record made way for a third in progress; a fourth finds
        # nothing to end.
        self.assertEqual((layer.rejected, layer.evicted), (0, 1))
        layer.messageReceived(
            makeRequest("REGISTER", branch="z9hG4bKopen3", host="127.0.0.1",
                        port=40000), self.flow())
        [(data, _)] = self.protocol.sent
        self.assertTrue(data.startswith(b"SIP/2.0 503"))
        self.assertEqual((layer.rejected, layer.evicted), (1, 1))

    def test_largeResponse(self):
        """
        A response too large for a chunk is kept as an object record, and
        works the same.
        """
        transaction, data = self.answer("z9hG4bKlarge", size=70000)
        [record] = self.layer._serverTable.values()
        self.assertIsInstance(record, _CompletedServerRecord)
        self.layer.messageReceived(
            makeRequest("REGISTER", branch="z9hG4bKlarge", host="127.0.0.1",
                        port=40000), self.flow())
        self.assertEqual([d for d, _ in self.protocol.sent], [data, data])
        self.clock.advance(64 * T1)
        self.assertIs(transaction.state, TERMINATED)
        self.assertEqual(self.layer.active, 0)

    def test_rfc2543Key(self):
        """
        A request without RFC 3261's branch has a key the buffer does not
        take: its completed transaction is kept as an object record, and
        a retransmission still gets the response again.
        """
        lines = [
            "REGISTER sip:example.com SIP/2.0",
            "Via: SIP/2.0/UDP 127.0.0.1:40000;branch=old2543",
            "Max-Forwards: 70",
            "From: <sip:alice@example.com>;tag=1",
            "To: <sip:alice@example.com>",
            "Call-ID: rfc2543", "CSeq: 1 REGISTER", "Content-Length: 0",
            "", ""]
        data = "\r\n".join(lines).encode("ascii")
        self.layer.messageReceived(parseMessage(data), self.flow())
        request, transaction = self.user.requests.pop()
        transaction.respond(responseTo(request, 200))
        [record] = self.layer._serverTable.values()
        self.assertIsInstance(record, _CompletedServerRecord)
        self.assertEqual(len(self.layer._completedJ), 0)
        self.layer.messageReceived(parseMessage(data), self.flow())
        self.assertEqual(len(self.protocol.sent), 2)
        self.assertEqual(self.user.requests, [])
        self.clock.advance(64 * T1)
        self.assertIs(transaction.state, TERMINATED)
        self.assertEqual(self.layer.active, 0)

    def test_stop(self):
        """
        Stopping the layer ends every record: held transactions are
        Terminated, the buffer is freed, no timer is left.
        """
        transaction, _ = self.answer("z9hG4bKstop")
        self.assertIsInstance(transaction, ServerTransaction)
        self.layer.stop()
        self.assertIs(transaction.state, TERMINATED)
        self.assertEqual(self.layer.active, 0)
        self.assertEqual(list(self.layer._completedJ._chunks), [])
        self.assertEqual(self.clock.getDelayedCalls(), [])
        # New records after it start afresh.
        self.answer("z9hG4bKagain")
        self.assertEqual(self.layer.active, 1)
        self.assertIs(transaction.state, TERMINATED)

    def test_loadOverOnceRecordsEnd(self):
        """
        The layer says a load is over (the time to give memory back) when
        the records of completed transactions, not only the transactions
        in progress, are down to an eighth of their peak: their chunks
        are freed only as they end.
        """
        for i in range(100):
            self.answer(f"z9hG4bKload{i}")
            self.clock.advance(0.01)
        self.assertEqual(len(self.layer._serverTable), 0)
        self.assertFalse(self.layer.compact())
        self.clock.advance(64 * T1 - 0.5)
        self.assertFalse(self.layer.compact())
        self.clock.advance(0.45)
        self.assertLess(len(self.layer._completedJ), 100 / 8)
        self.assertTrue(self.layer.compact())
        self.assertFalse(self.layer.compact())


class CompletedRecordsModelTests(SynchronousTestCase):
    """
    L{_CompletedRecords} against a dict doing the same: records of random
    sizes (some filling most of a chunk) added and ended at random times.
    """

    def test_againstDict(self):
        """
        After every step, each record not yet ended is found with its
        bytes and address, and none that has ended (or was discarded) is.
        """
        clock = Clock()
        records = _CompletedRecords(clock, 5.0)
        protocols = [FakeDatagramProtocol(), FakeDatagramProtocol()]
        rng = random.Random(13)
        model = {}
        positions = {}
        ended = []
        for step in range(300):
            for n in range(rng.choice((0, 1, 5, 40))):
                key = (f"z9hG4bK{step}-{n}", "127.0.0.1",
                       rng.randrange(1, 65536), rng.choice(("REGISTER",
                                                            "OPTIONS")))
                size = rng.choice((0, 10, 500, 3000, 30000, 60000))
                data = bytes([rng.randrange(256)]) * size
                remote = ("127.0.0.%d" % rng.randrange(1, 9),
                          rng.randrange(65536))
                flow = DatagramFlow(rng.choice(protocols), remote)
                position = records.add(key, flow, data)
                self.assertIsNotNone(position)
                positions[key] = position
                model[key] = (clock.seconds() + 5.0, data, remote,
                              flow._protocol)
            if model and rng.random() < 0.3:
                # An answer that could not be sent after all; now and then
                # one ended already, or discarded twice.
                for key in rng.sample(sorted(model), min(3, len(model))):
                    records.discard(positions[key])
                    del model[key]
                    ended.append(key)
                if ended:
                    records.discard(positions[rng.choice(ended)])
            if rng.random() < 0.2:
                # A full table ends the oldest early.
                count = rng.choice((1, 7, 100))
                live = [k for k in model if records.find(k) is not None]
                records.evict(count)
                for key in live[:count]:
                    del model[key]
                    ended.append(key)
            clock.advance(rng.choice((0.01, 0.05, 0.3, 1.0)))
            now = clock.seconds()
            for key, value in list(model.items()):
                if value[0] <= now - records.granularity:
                    del model[key]
                    ended.append(key)
            for key, (due, data, remote, protocol) in model.items():
                position = records.find(key)
                if position is None:
                    # Due, not yet swept (at most the granularity late).
                    self.assertLessEqual(due, now)
                    continue
                record = records.record(None, position)
                self.assertEqual((record.key, record.data,
                                  tuple(record.flow.remote),
                                  record.flow._protocol),
                                 (key, data, remote, protocol))
            for key in ended[-50:]:
                self.assertIsNone(records.find(key))
            self.assertLessEqual(len(records), len(model) + 40)
        clock.advance(6)
        self.assertEqual(len(records), 0)
        self.assertEqual(list(records._chunks), [])


class MessageTests(SynchronousTestCase):
    def test_padded(self):
        """
        The helper makes a response of about the size asked for.
        """
        request = makeRequest("REGISTER")
        data = padded(responseTo(request, 200), 900).toBytes()
        self.assertTrue(890 <= len(data) <= 910)
        self.assertEqual(parseMessage(data).code, 200)
