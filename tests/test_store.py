# -*- test-case-name: tests.test_store -*-
"""
Tests for L{sipdist.store} values and the memory store.
"""

from hypothesis import given, strategies as st
from twisted.trial.unittest import SynchronousTestCase

from sipdist.store import (
    InvalidValue, ServerRecord, StoreConfigError, aorKey, serverURIFor,
    splitOptions, storeFromString,
)
from sipdist.store.memory import MemoryAssignmentStore
from tests.storecontract import (
    AssignmentStoreContractMixin, AtOnceReadingsMixin)


class MemoryStoreContractTests(AssignmentStoreContractMixin,
                               AtOnceReadingsMixin, SynchronousTestCase):
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

    def test_badTransportURIs(self):
        """
        A TLS URI must be secure (C{sips:} or C{transport=tls}); a TCP URI
        must be a C{sip:} URI for TCP; either must be a SIP URI.
        """
        for kwargs in [{"tlsUri": "sip:h:5061"},
                       {"tlsUri": "sip:h;transport=tcp"},
                       {"tlsUri": "http://h"},
                       {"tcpUri": "sips:h"},
                       {"tcpUri": "sip:h;transport=udp"},
                       {"tcpUri": "sip:h;transport=tls"},
                       {"tcpUri": "h:5060"}]:
            self.assertRaises(InvalidValue, ServerRecord, "h1", "sip:h",
                              **kwargs)

    def test_serverURIFor(self):
        """
        The URI chosen for a transport is the record's URI for it, else one
        for a stronger transport, never one for a weaker: a plain C{sip:}
        URI serves UDP and (with C{transport=tcp}) TCP, never TLS.
        """
        plain = ServerRecord("h", "sip:10.0.0.2:5070")
        both = ServerRecord("h", "sip:10.0.0.2:5070",
                            tlsUri="sips:home.example.com:5071")
        tcp = ServerRecord("h", "sip:10.0.0.2;transport=udp",
                           tcpUri="sip:10.0.0.3:5072",
                           tlsUri="sip:10.0.0.3:5073;transport=tls")
        secure = ServerRecord("h", "sips:home.example.com")
        udpOnly = ServerRecord("h", "sip:10.0.0.2;transport=udp")
        table = [
            (plain, ["sip:10.0.0.2:5070", "sip:10.0.0.2:5070;transport=tcp",
                     None]),
            (both, ["sip:10.0.0.2:5070", "sip:10.0.0.2:5070;transport=tcp",
                    "sips:home.example.com:5071"]),
            (tcp, ["sip:10.0.0.2;transport=udp",
                   "sip:10.0.0.3:5072;transport=tcp",
                   "sip:10.0.0.3:5073;transport=tls"]),
            (secure, ["sips:home.example.com"] * 3),
            (udpOnly, ["sip:10.0.0.2;transport=udp", None, None]),
        ]
        for record, expected in table:
            self.assertEqual(
                [serverURIFor(record, t) for t in ("UDP", "tcp", "TLS")],
                expected, record)

    def test_updatedTransportURIs(self):
        """
        L{ServerRecord.updated} sets a TCP or TLS URI, and C{""} removes it.
        """
        record = ServerRecord("h", "sip:h", tlsUri="sips:h")
        self.assertEqual(record.updated(tcpUri="sip:t").tcpUri, "sip:t")
        self.assertEqual(record.updated(tcpUri="sip:t").tlsUri, "sips:h")
        removed = record.updated(tlsUri="")
        self.assertIsNone(removed.tlsUri)
        self.assertEqual(removed, ServerRecord("h", "sip:h"))
        self.assertIsNone(serverURIFor(removed, "TLS"))

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
