# -*- test-case-name: tests.test_store -*-
"""
Tests for L{sipdist.store} values and the memory store.
"""

from hypothesis import given, strategies as st
from twisted.trial.unittest import SynchronousTestCase

from sipdist.store import (
    InvalidValue, ServerRecord, StoreConfigError, aorKey, splitOptions,
    storeFromString,
)
from sipdist.store.memory import MemoryAssignmentStore
from tests.storecontract import AssignmentStoreContractMixin


class MemoryStoreContractTests(AssignmentStoreContractMixin,
                               SynchronousTestCase):
    """
    The memory store keeps the store contract.
    """

    def makeStore(self):
        return MemoryAssignmentStore()

    def otherWriter(self, store):
        # There is no other writer of a process's memory.
        return store

    def pickUpChanges(self, store):
        from twisted.internet.defer import succeed
        return succeed(None)


class MemoryStoreTests(SynchronousTestCase):
    """
    The memory store answers from memory at once.
    """

    def test_lookupFired(self):
        """
        A lookup returns a Deferred that has already fired.
        """
        store = MemoryAssignmentStore()
        store.addServer(ServerRecord("home1", "sip:127.0.0.1:5070"))
        store.assignUser("sip:alice@example.com", "home1")
        self.assertEqual(
            self.successResultOf(store.lookupUser("sip:alice@example.com")),
            "home1")

    def test_watcherFailureIgnored(self):
        """
        A watcher that raises is logged and does not stop the change nor
        the other watchers.
        """
        store = MemoryAssignmentStore()
        seen = []
        store.watch(lambda event: 1 / 0)
        store.watch(seen.append)
        self.successResultOf(store.addServer(
            ServerRecord("home1", "sip:127.0.0.1:5070")))
        self.assertEqual(len(seen), 1)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)


class ValueTests(SynchronousTestCase):
    """
    Server records and AOR keys reject bad values with one clear line.
    """

    def test_aorKey(self):
        """
        AOR keys drop the port, parameters and case of the host, and keep
        plain keys as they are.
        """
        self.assertEqual(aorKey("sip:alice@example.com"),
                         "sip:alice@example.com")
        self.assertEqual(aorKey("<sips:alice@EXAMPLE.com:5061;transport=tls>"),
                         "sip:alice@example.com")
        self.assertEqual(aorKey("bob@Example.com"), "sip:bob@example.com")
        self.assertEqual(aorKey("sip:a%6Cice@example.com"),
                         "sip:alice@example.com")

    @given(st.one_of(
        st.text(alphabet="sipSIP:@%;?<>[]aZ09.-_!~*'()&=+$,/ ", max_size=30),
        st.builds("sip:{}@{}".format,
                  st.text(alphabet="aZ09.-_!~*'()&=+$,/%@:;", max_size=8),
                  st.text(alphabet="aZ09.-:;[]@", max_size=8))))
    def test_aorKeyFastPath(self, text):
        """
        The shortcut for keys already normalised gives what
        L{normaliseAOR} gives, for any text.
        """
        from sipdist.sip.uri import URIError, normaliseAOR
        try:
            expected = normaliseAOR(text)
        except (URIError, ValueError):
            expected = InvalidValue
        try:
            got = aorKey(text)
        except InvalidValue:
            got = InvalidValue
        self.assertEqual(got, expected)

    def test_badAOR(self):
        """
        Text that is not an AOR raises L{InvalidValue}.
        """
        for bad in ["", "example.com", "mailto:a@b", "sip:@x", None]:
            self.assertRaises(InvalidValue, aorKey, bad)

    def test_badRecords(self):
        """
        A server record with a bad id, URI, weight or state cannot be made.
        """
        for args in [("bad id", "sip:h"), ("h1", "http://h"),
                     ("h1", "sip:h", -1), ("h1", "sip:h", "x"),
                     ("h1", "sip:h", 1, "gone"), ("", "sip:h")]:
            self.assertRaises(InvalidValue, ServerRecord, *args)

    def test_splitOptions(self):
        """
        Store option strings split on unescaped colons into positional
        arguments and C{key=value} options.
        """
        self.assertEqual(splitOptions(r"/tmp/a\:b.conf:poll=2"),
                         (["/tmp/a:b.conf"], {"poll": "2"}))

    def test_unknownPrefix(self):
        """
        A store string with an unknown prefix fails with a line naming the
        known ones.
        """
        e = self.assertRaises(StoreConfigError, storeFromString, None,
                              "nosuch:x")
        self.assertIn("unknown store type 'nosuch'", str(e))
        self.assertIn("memory", str(e))
        e = self.assertRaises(StoreConfigError, storeFromString, None, "junk")
        self.assertIn("PREFIX:", str(e))

    def test_memoryString(self):
        """
        C{memory:} builds a memory store.
        """
        self.assertIsInstance(storeFromString(None, "memory:"),
                              MemoryAssignmentStore)
