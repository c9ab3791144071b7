# -*- test-case-name: tests.test_store -*-
"""
The behaviour every L{IAssignmentStore} provider must have, as a mixin run
against each provider (memory, file, LDAP on slapd).

A test case using it defines:
  - C{makeStore()}: a fresh, empty store (a Deferred or a store);
  - C{otherWriter(store)}: a second store object on the same backend, to
    make changes the first one did not make itself;
  - C{pickUpChanges(store)}: a Deferred firing once C{store} has looked for
    changes made elsewhere (file polled, directory refreshed).

Tests are generators run with C{inlineCallbacks}; on a
L{SynchronousTestCase} each must finish without the reactor.
"""

from functools import wraps

from twisted.internet.defer import inlineCallbacks, maybeDeferred
from twisted.trial.unittest import TestCase
from zope.interface.verify import verifyObject

from sipdist.interfaces import IAssignmentStore
from sipdist.store import (
    DOWN, DRAINING, InvalidValue, ServerChanged, ServerExists, ServerInUse,
    ServerRecord, UnknownServer, UnknownUser, UserChanged, serverURIFor,
)

HOME1 = ServerRecord("home1", "sip:127.0.0.1:5070", 10)
HOME2 = ServerRecord("home2", "sip:127.0.0.1:5080", 20, DRAINING)


def contract(f):
    """
    Run a generator test with C{inlineCallbacks}; on a synchronous test case
    its result must be there at once.
    """
    g = inlineCallbacks(f)

    @wraps(f)
    def test(self):
        d = g(self)
        if isinstance(self, TestCase):
            return d
        self.successResultOf(d)

    return test


class AssignmentStoreContractMixin:
    """
    Tests of the L{IAssignmentStore} contract.
    """

    @inlineCallbacks
    def _store(self):
        store = yield maybeDeferred(self.makeStore)
        yield store.addServer(HOME1)
        yield store.addServer(HOME2)
        return store

    @contract
    def test_interface(self):
        """
        The store provides L{IAssignmentStore}.
        """
        store = yield maybeDeferred(self.makeStore)
        self.assertTrue(verifyObject(IAssignmentStore, store))

    @contract
    def test_unknownUser(self):
        """
        A user without an assignment is looked up as L{None}.
        """
        store = yield self._store()
        self.assertIsNone((yield store.lookupUser("sip:nobody@example.com")))

    @contract
    def test_servers(self):
        """
        Added servers are read back by id and listed sorted by id; an
        unknown id reads as L{None}.
        """
        store = yield self._store()
        self.assertEqual((yield store.getServer("home2")), HOME2)
        self.assertIsNone((yield store.getServer("home9")))
        self.assertEqual((yield store.listServers()), [HOME1, HOME2])

    @contract
    def test_addServerTwice(self):
        """
        Adding a server whose id exists fails with L{ServerExists}.
        """
        store = yield self._store()
        with self.assertRaises(ServerExists):
            yield store.addServer(ServerRecord("home1", "sip:10.0.0.1"))

    @contract
    def test_assignNormalised(self):
        """
        Assignments are keyed by the normalised AOR: scheme, parameters,
        port and the case of the host do not matter.
        """
        store = yield self._store()
        old = yield store.assignUser("alice@Example.COM", "home2")
        self.assertIsNone(old)
        for form in ["sip:alice@example.com",
                     "<sips:alice@EXAMPLE.com:5061;transport=tls>",
                     "alice@example.com"]:
            self.assertEqual((yield store.lookupUser(form)), "home2")
        self.assertIsNone((yield store.lookupUser("sip:Alice@example.com")))

    @contract
    def test_assignUnknownServer(self):
        """
        Assigning a user to a server that does not exist fails with
        L{UnknownServer} and changes nothing.
        """
        store = yield self._store()
        with self.assertRaises(UnknownServer):
            yield store.assignUser("sip:alice@example.com", "home9")
        self.assertIsNone((yield store.lookupUser("sip:alice@example.com")))

    @contract
    def test_badAOR(self):
        """
        An address that is not a SIP AOR fails with L{InvalidValue}.
        """
        store = yield self._store()
        with self.assertRaises(InvalidValue):
            yield store.lookupUser("mailto:alice@example.com")
        with self.assertRaises(InvalidValue):
            yield store.assignUser("sip:example.com", "home1")

    @contract
    def test_move(self):
        """
        Moving an assigned user returns its previous server; moving a user
        without an assignment fails with L{UnknownUser}.
        """
        store = yield self._store()
        yield store.assignUser("sip:alice@example.com", "home1")
        old = yield store.moveUser("sip:alice@example.com", "home2")
        self.assertEqual(old, "home1")
        self.assertEqual((yield store.lookupUser("sip:alice@example.com")),
                         "home2")
        with self.assertRaises(UnknownUser):
            yield store.moveUser("sip:bob@example.com", "home2")

    @contract
    def test_remove(self):
        """
        Removing an assignment returns the server it was on; removing it
        again fails with L{UnknownUser}.
        """
        store = yield self._store()
        yield store.assignUser("sip:alice@example.com", "home1")
        self.assertEqual((yield store.removeUser("alice@example.com")),
                         "home1")
        self.assertIsNone((yield store.lookupUser("sip:alice@example.com")))
        with self.assertRaises(UnknownUser):
            yield store.removeUser("sip:alice@example.com")

    @contract
    def test_batchAndCounts(self):
        """
        Batch assignment and removal are reflected in the per-server counts
        and in the lists of users of a server.
        """
        store = yield self._store()
        pairs = [(f"sip:user{i}@example.com", "home1" if i % 3 else "home2")
                 for i in range(30)]
        self.assertEqual((yield store.assignUsers(pairs)), 30)
        self.assertEqual((yield store.countUsers()),
                         {"home1": 20, "home2": 10})
        self.assertEqual(
            sorted((yield store.usersOf("home2"))),
            sorted(f"sip:user{i}@example.com" for i in range(0, 30, 3)))
        self.assertEqual(len((yield store.usersOf("home1", limit=5))), 5)
        removed = yield store.removeUsers(
            [f"sip:user{i}@example.com" for i in range(10)]
            + ["sip:nobody@example.com"])
        self.assertEqual(removed, 10)
        self.assertEqual((yield store.countUsers()),
                         {"home1": 14, "home2": 6})

    @contract
    def test_batchUnknownServer(self):
        """
        A batch naming an unknown server changes nothing.
        """
        store = yield self._store()
        with self.assertRaises(UnknownServer):
            yield store.assignUsers([("sip:a@example.com", "home1"),
                                     ("sip:b@example.com", "home9")])
        self.assertIsNone((yield store.lookupUser("sip:a@example.com")))

    @contract
    def test_updateServer(self):
        """
        Updating a server changes the given fields only; an unknown server
        fails with L{UnknownServer}, a bad state with L{InvalidValue}.
        """
        store = yield self._store()
        record = yield store.updateServer("home1", state=DOWN)
        self.assertEqual(record, ServerRecord("home1", "sip:127.0.0.1:5070",
                                              10, DOWN))
        self.assertEqual((yield store.getServer("home1")), record)
        record = yield store.updateServer("home1", uri="sip:10.0.0.7:5070",
                                          weight=3)
        self.assertEqual(record, ServerRecord("home1", "sip:10.0.0.7:5070",
                                              3, DOWN))
        with self.assertRaises(UnknownServer):
            yield store.updateServer("home9", state=DOWN)
        with self.assertRaises(InvalidValue):
            yield store.updateServer("home1", state="sleepy")

    @contract
    def test_removeServer(self):
        """
        A server with users cannot be removed; once empty it can.
        """
        store = yield self._store()
        yield store.assignUser("sip:alice@example.com", "home1")
        with self.assertRaises(ServerInUse):
            yield store.removeServer("home1")
        yield store.removeUser("sip:alice@example.com")
        self.assertEqual((yield store.removeServer("home1")), HOME1)
        self.assertIsNone((yield store.getServer("home1")))
        self.assertEqual((yield store.countUsers()), {"home2": 0})
        with self.assertRaises(UnknownServer):
            yield store.removeServer("home1")

    @contract
    def test_watchOwnChanges(self):
        """
        A watcher learns of every change made through the store, until it
        unsubscribes.
        """
        store = yield self._store()
        events = []
        stop = store.watch(events.append)
        yield store.assignUser("sip:alice@example.com", "home1")
        yield store.moveUser("sip:alice@example.com", "home2")
        yield store.updateServer("home1", state=DOWN)
        yield store.removeUser("sip:alice@example.com")
        self.assertEqual(events, [
            UserChanged("sip:alice@example.com", None, "home1"),
            UserChanged("sip:alice@example.com", "home1", "home2"),
            ServerChanged("home1", HOME1, HOME1.updated(state=DOWN)),
            UserChanged("sip:alice@example.com", "home2", None),
        ])
        stop()
        yield store.assignUser("sip:alice@example.com", "home1")
        self.assertEqual(len(events), 4)

    @contract
    def test_watchOtherWriter(self):
        """
        A watcher learns of a reassignment made by another writer on the
        same backend, and lookups give the new server.
        """
        store = yield self._store()
        yield store.assignUser("sip:alice@example.com", "home1")
        self.assertEqual((yield store.lookupUser("sip:alice@example.com")),
                         "home1")
        events = []
        store.watch(events.append)
        other = yield maybeDeferred(self.otherWriter, store)
        yield other.moveUser("sip:alice@example.com", "home2")
        yield other.updateServer("home2", state=DOWN)
        yield self.pickUpChanges(store)
        self.assertIn(UserChanged("sip:alice@example.com", "home1", "home2"),
                      events)
        self.assertIn(ServerChanged("home2", HOME2,
                                    HOME2.updated(state=DOWN)), events)
        self.assertEqual((yield store.lookupUser("sip:alice@example.com")),
                         "home2")
        self.assertEqual((yield store.getServer("home2")).state, DOWN)

    @contract
    def test_transportURIs(self):
        """
        A server's TCP and TLS URIs are kept and read back with its record,
        also by another store object on the same backend; the URI chosen
        for each transport follows from them.
        """
        store = yield maybeDeferred(self.makeStore)
        record = ServerRecord("home3", "sip:127.0.0.1:5090", 5,
                              tcpUri="sip:10.0.0.3:5090;transport=tcp",
                              tlsUri="sips:home3.example.com:5091")
        yield store.addServer(record)
        other = yield maybeDeferred(self.otherWriter, store)
        for reader in (store, other):
            read = yield reader.getServer("home3")
            self.assertEqual(read, record)
            self.assertEqual(
                [serverURIFor(read, t) for t in ("UDP", "TCP", "TLS")],
                ["sip:127.0.0.1:5090", "sip:10.0.0.3:5090;transport=tcp",
                 "sips:home3.example.com:5091"])
        self.assertEqual((yield store.listServers()), [record])

    @contract
    def test_updateTransportURIs(self):
        """
        Updating a server sets its TLS or TCP URI, C{""} removes it, and
        L{None} leaves it as it is; a TLS URI that is not secure is refused
        with L{InvalidValue} and changes nothing.
        """
        store = yield self._store()
        record = yield store.updateServer(
            "home1", tlsUri="sips:home1.example.com:5071")
        self.assertEqual(record, HOME1.updated(
            tlsUri="sips:home1.example.com:5071"))
        record = yield store.updateServer(
            "home1", weight=4, tcpUri="sip:10.0.0.1:5070")
        self.assertEqual(record.tlsUri, "sips:home1.example.com:5071")
        self.assertEqual(record.tcpUri, "sip:10.0.0.1:5070")
        self.assertEqual((yield store.getServer("home1")), record)
        with self.assertRaises(InvalidValue):
            yield store.updateServer("home1", tlsUri="sip:10.0.0.1:5071")
        self.assertEqual((yield store.getServer("home1")), record)
        record = yield store.updateServer("home1", tlsUri="", tcpUri="")
        self.assertEqual(record, HOME1.updated(weight=4))
        other = yield maybeDeferred(self.otherWriter, store)
        self.assertEqual((yield other.getServer("home1")), record)
        self.assertIsNone(serverURIFor(record, "TLS"))


class AtOnceReadingsMixin:
    """
    Tests of the readings a store that answers from memory offers besides
    L{IAssignmentStore} (C{userAtOnce}, C{serverAtOnce}, C{serversAtOnce},
    which the fast paths use): the same answers as the interface's, after
    every kind of change, its own or another writer's.  Used with
    L{AssignmentStoreContractMixin}'s C{makeStore}, C{otherWriter} and
    C{pickUpChanges}.
    """

    @inlineCallbacks
    def assertSameAnswers(self, store, aors):
        """
        The readings at once answer as C{lookupUser}, C{getServer} and
        C{listServers} do, for C{aors} and every server listed.
        """
        listed = yield store.listServers()
        self.assertEqual(store.serversAtOnce(), tuple(listed))
        for aor in aors:
            self.assertEqual(store.userAtOnce(aor),
                             (yield store.lookupUser(aor)))
        for record in listed + [ServerRecord("gone", "sip:192.0.2.1")]:
            self.assertEqual(store.serverAtOnce(record.id),
                             (yield store.getServer(record.id)))

    @contract
    def test_atOnceAnswers(self):
        """
        C{userAtOnce}, C{serverAtOnce} and C{serversAtOnce} give what the
        Deferred readings give, through adding, updating and removing
        servers and users; C{serversAtOnce} gives the same tuple until a
        server changes.
        """
        store = yield maybeDeferred(self.makeStore)
        aors = ["alice@example.com", "sip:bob@example.com"]
        yield self.assertSameAnswers(store, aors)
        yield store.addServer(HOME2)
        yield store.addServer(HOME1)
        first = store.serversAtOnce()
        self.assertEqual([r.id for r in first], ["home1", "home2"])
        yield store.assignUser(aors[0], "home1")
        yield store.assignUser(aors[1], "home2")
        self.assertIs(store.serversAtOnce(), first)
        yield self.assertSameAnswers(store, aors)
        yield store.updateServer("home1", state=DOWN)
        self.assertIsNot(store.serversAtOnce(), first)
        yield self.assertSameAnswers(store, aors)
        yield store.moveUser(aors[1], "home1")
        yield store.removeUser(aors[0])
        yield self.assertSameAnswers(store, aors)
        other = yield maybeDeferred(self.otherWriter, store)
        yield other.removeUser(aors[1])
        yield other.removeServer("home2")
        yield self.pickUpChanges(store)
        yield self.assertSameAnswers(store, aors)
        self.assertEqual([r.id for r in store.serversAtOnce()], ["home1"])

    def test_atOnceInvalid(self):
        """
        C{userAtOnce} raises L{InvalidValue} for an address-of-record
        C{lookupUser} fails.
        """
        store = self.successResultOf(maybeDeferred(self.makeStore))
        self.assertRaises(InvalidValue, store.userAtOnce, "sip:")
        self.failureResultOf(store.lookupUser("sip:"), InvalidValue)
