# -*- test-case-name: tests.test_store_file -*-
"""
Tests for L{sipdist.store.file}.
"""

import os
import threading

from hypothesis import given, settings, strategies as st
from twisted.internet.defer import succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from sipdist.store import (
    ServerRecord, StoreConfigError, StoreUnavailable, UserChanged,
    storeFromString,
)
from sipdist.store.file import (
    FileAssignmentStore, parseAssignments, renderAssignments, writeAtomically,
)
from tests.helpers_store import tempDir
from tests.storecontract import (
    AssignmentStoreContractMixin, AtOnceReadingsMixin)

SAMPLE = """\
# the servers
server home1 sip:127.0.0.1:5070 weight=10   # first
server home2 sip:127.0.0.1:5080 state=draining

# the users
user alice@example.com home1  # Alice
user sip:bob@example.com home2
"""


class FileStoreContractTests(AssignmentStoreContractMixin,
                             AtOnceReadingsMixin, SynchronousTestCase):
    """
    The file store keeps the store contract.
    """

    def setUp(self):
        self.path = os.path.join(tempDir(self), "assignments.conf")
        self.clock = Clock()

    def makeStore(self):
        store = FileAssignmentStore(self.clock, self.path, poll=1)
        self.addCleanup(store.close)
        return store

    def otherWriter(self, store):
        return self.makeStore()

    def pickUpChanges(self, store):
        # Another writer in the same second may leave mtime and size alike
        # but the inode changes with every rename.
        self.clock.advance(1)
        return succeed(None)


class FileStoreTests(SynchronousTestCase):
    """
    The file store reads a commented text file, writes it atomically and
    keeps serving the last good content when the file goes bad.
    """

    def setUp(self):
        self.dir = tempDir(self)
        self.path = os.path.join(self.dir, "assignments.conf")
        with open(self.path, "w") as f:
            f.write(SAMPLE)
        self.clock = Clock()

    def store(self, **kw):
        store = FileAssignmentStore(self.clock, self.path, **kw)
        self.addCleanup(store.close)
        return store

    def read(self):
        with open(self.path) as f:
            return f.read()

    def test_reads(self):
        """
        Servers with their options and users in either AOR form are read.
        """
        store = self.store()
        self.assertEqual(
            self.successResultOf(store.getServer("home2")),
            ServerRecord("home2", "sip:127.0.0.1:5080", 1, "draining"))
        self.assertEqual(self.successResultOf(store.getServer("home1")).weight,
                         10)
        self.assertEqual(
            self.successResultOf(store.lookupUser("sip:alice@example.com")),
            "home1")
        self.assertEqual(
            self.successResultOf(store.lookupUser("bob@example.com")), "home2")

    def test_transportURIs(self):
        """
        C{tcp-uri=} and C{tls-uri=} options, in any order, give a server its
        TCP and TLS URIs; a write of another field keeps them on the line.
        """
        with open(self.path, "a") as f:
            f.write("server home3 sip:127.0.0.1:5090 "
                    "tls-uri=sips:home3.example.com:5091 "
                    "tcp-uri=sip:127.0.0.1:5092;transport=tcp  # three\n")
        store = self.store()
        record = ServerRecord("home3", "sip:127.0.0.1:5090",
                              tcpUri="sip:127.0.0.1:5092;transport=tcp",
                              tlsUri="sips:home3.example.com:5091")
        self.assertEqual(self.successResultOf(store.getServer("home3")),
                         record)
        self.successResultOf(store.updateServer("home3", weight=7))
        self.assertIn("server home3 sip:127.0.0.1:5090 weight=7 state=active "
                      "tcp-uri=sip:127.0.0.1:5092;transport=tcp "
                      "tls-uri=sips:home3.example.com:5091 # three",
                      self.read().splitlines())

    def test_writeKeepsComments(self):
        """
        A write keeps comments, blank lines and untouched lines as written,
        rewrites changed lines and appends new users.
        """
        store = self.store()
        self.successResultOf(store.moveUser("bob@example.com", "home1"))
        self.successResultOf(store.assignUser("carol@example.com", "home2"))
        self.successResultOf(store.addServer(
            ServerRecord("home3", "sip:127.0.0.1:5090")))
        self.assertEqual(self.read(), """\
# the servers
server home1 sip:127.0.0.1:5070 weight=10   # first
server home2 sip:127.0.0.1:5080 state=draining
server home3 sip:127.0.0.1:5090 weight=1 state=active

# the users
user alice@example.com home1  # Alice
user sip:bob@example.com home1
user sip:carol@example.com home2
""")

    def test_newFile(self):
        """
        A store on a file that does not exist yet is empty and creates the
        file on the first write.
        """
        os.remove(self.path)
        store = self.store()
        self.assertEqual(self.successResultOf(store.listServers()), [])
        self.successResultOf(store.addServer(
            ServerRecord("home2", "sip:127.0.0.1:5080")))
        self.successResultOf(store.assignUser("alice@example.com", "home2"))
        self.assertEqual(parseAssignments(self.read()).users,
                         {"sip:alice@example.com": "home2"})

    def test_missingDirectory(self):
        """
        A file in a directory that does not exist is a configuration error.
        """
        e = self.assertRaises(StoreConfigError, FileAssignmentStore,
                              self.clock, os.path.join(self.dir, "no", "f"))
        self.assertIn("does not exist", str(e))

    def test_badFileAtStart(self):
        """
        A bad line at start is an error naming the file and the line.
        """
        with open(self.path, "a") as f:
            f.write("user carol@example.com home9\n")
        e = self.assertRaises(StoreConfigError, self.store)
        self.assertEqual(str(e), f"{self.path}:8: no server 'home9' in this "
                                 f"file")

    def test_badLines(self):
        """
        Each kind of bad line is reported with its line number.
        """
        cases = {
            "frob x y": "unknown keyword 'frob'",
            "user alice@example.com": "expected: user AOR SERVER-ID",
            "server h sip:h colour=red": "unknown server option",
            "server h http://h": "bad server URI",
            "user nohost home1": "bad address-of-record",
            "server home1 sip:x": "listed twice",
            "server h sip:h tls-uri=sip:h:5061": "bad server TLS URI",
            "server h sip:h tcp-uri=sips:h": "bad server TCP URI",
            "server h sip:h tls-uri=sips:a tls-uri=sips:b": "given twice",
        }
        for line, message in cases.items():
            e = self.assertRaises(StoreConfigError, parseAssignments,
                                  SAMPLE + line + "\n", "f.conf")
            self.assertTrue(str(e).startswith("f.conf:8: "), str(e))
            self.assertIn(message, str(e))

    def test_reloadOnChange(self):
        """
        An edit of the file is picked up at the next poll, and watchers
        learn what changed.
        """
        store = self.store(poll=2)
        events = []
        store.watch(events.append)
        writeAtomically(self.path, SAMPLE.replace(
            "alice@example.com home1", "alice@example.com home2"))
        self.clock.advance(2)
        self.assertEqual(
            self.successResultOf(store.lookupUser("sip:alice@example.com")),
            "home2")
        self.assertEqual(events, [UserChanged("sip:alice@example.com",
                                              "home1", "home2")])

    def test_badEditKeepsOldContent(self):
        """
        A bad line written to the file is logged with file and line, the
        old content keeps serving, and writes are refused rather than
        overwriting the human's edit; once fixed, the file is read again.
        """
        store = self.store(poll=1)
        bad = SAMPLE + "user carol@example.com\n"
        writeAtomically(self.path, bad)
        self.clock.advance(1)
        self.assertEqual(store.lastError,
                         f"{self.path}:8: expected: user AOR SERVER-ID")
        self.assertEqual(
            self.successResultOf(store.lookupUser("sip:alice@example.com")),
            "home1")
        self.failureResultOf(store.assignUser("dave@example.com", "home1"),
                             StoreConfigError)
        self.assertEqual(self.read(), bad)
        self.clock.advance(1)
        writeAtomically(self.path, SAMPLE + "user carol@example.com home2\n")
        self.clock.advance(1)
        self.assertIsNone(store.lastError)
        self.assertEqual(
            self.successResultOf(store.lookupUser("sip:carol@example.com")),
            "home2")

    def test_fileRemovedKeepsContent(self):
        """
        If the file disappears, the last content keeps serving.
        """
        store = self.store(poll=1)
        os.remove(self.path)
        self.clock.advance(1)
        self.assertIn("file is gone", store.lastError)
        self.assertEqual(
            self.successResultOf(store.lookupUser("sip:bob@example.com")),
            "home2")

    def test_lockedByOtherWriter(self):
        """
        A write waits for another writer's lock a bounded time, then fails
        with L{StoreUnavailable}.
        """
        import fcntl
        fd = os.open(self.path + ".lock", os.O_RDWR | os.O_CREAT)
        self.addCleanup(os.close, fd)
        fcntl.flock(fd, fcntl.LOCK_EX)
        store = self.store(lockTimeout=1)
        d = store.assignUser("dave@example.com", "home1")
        self.assertNoResult(d)
        self.clock.advance(0.5)
        fcntl.flock(fd, fcntl.LOCK_UN)
        self.clock.advance(0.05)
        self.assertEqual(self.successResultOf(d), None)
        fcntl.flock(fd, fcntl.LOCK_EX)
        d = store.assignUser("erin@example.com", "home1")
        for _ in range(30):
            self.clock.advance(0.05)
        self.failureResultOf(d, StoreUnavailable)

    def test_storeString(self):
        """
        C{file:PATH:poll=SECONDS} builds a file store; bad options are
        one-line errors.
        """
        store = storeFromString(self.clock, f"file:{self.path}:poll=0")
        self.assertIsInstance(store, FileAssignmentStore)
        self.assertEqual(store.path, self.path)
        for bad, message in [("file:", "expected file:PATH"),
                             (f"file:{self.path}:poll=x", "bad poll"),
                             (f"file:{self.path}:color=red", "unknown file")]:
            e = self.assertRaises(StoreConfigError, storeFromString,
                                  self.clock, bad)
            self.assertIn(message, str(e))

    def test_renderIdempotent(self):
        """
        Rendering unchanged tables gives back the text.
        """
        self.assertEqual(renderAssignments(SAMPLE, parseAssignments(SAMPLE)),
                         SAMPLE)


class DamagedFileTests(SynchronousTestCase):
    """
    A reload of a file changed outside a store that drops every server or
    more than C{maxDrop} of the users is refused: the last good content
    keeps serving and one line says why.
    """

    users = 100

    def setUp(self):
        self.dir = tempDir(self)
        self.path = os.path.join(self.dir, "assignments.conf")
        lines = ["server home1 sip:127.0.0.1:5070",
                 "server home2 sip:127.0.0.1:5080"]
        lines += [f"user u{i}@example.com home{1 + i % 2}"
                  for i in range(self.users)]
        self.text = "\n".join(lines) + "\n"
        with open(self.path, "w") as f:
            f.write(self.text)
        self.clock = Clock()
        self.logged = []
        from twisted.logger import globalLogPublisher
        globalLogPublisher.addObserver(self.logged.append)
        self.addCleanup(globalLogPublisher.removeObserver,
                        self.logged.append)

    def store(self, **kw):
        store = FileAssignmentStore(self.clock, self.path, poll=1, **kw)
        self.addCleanup(store.close)
        return store

    def overwrite(self, text):
        # In place, as a failed copy or a full disk would leave it.
        with open(self.path, "w") as f:
            f.write(text)
        self.clock.advance(1)

    def serves(self, store, aor, server):
        self.assertEqual(self.successResultOf(store.lookupUser(aor)), server)

    def errors(self):
        from twisted.logger import formatEvent
        return [formatEvent(e) for e in self.logged
                if e.get("log_level") is not None
                and e["log_level"].name == "error"]

    def test_emptyFile(self):
        """
        An empty file is refused: every user is still served, and the log
        says the file has no servers.
        """
        store = self.store()
        self.overwrite("")
        self.serves(store, "sip:u7@example.com", "home2")
        self.assertEqual(len(self.successResultOf(store.listServers())), 2)
        self.assertIn("refusing the changed file: it has no servers",
                      store.lastError)
        [line] = self.errors()
        self.assertNotIn("\n", line)
        self.assertIn(self.path, line)

    def test_cutMidLine(self):
        """
        A file cut in the middle of a line, past most of its users, is
        refused; the tail's users are still served.
        """
        store = self.store()
        self.overwrite(self.text[:len(self.text) // 3 + 5])
        self.serves(store, "sip:u99@example.com", "home2")
        self.assertIsNotNone(store.lastError)

    def test_cutAtLineBoundary(self):
        """
        A file cut at a line boundary that drops 80% of the users parses
        but is refused by the drop guard.
        """
        store = self.store()
        lines = self.text.splitlines(True)
        self.overwrite("".join(lines[:2 + self.users // 5]))
        self.serves(store, "sip:u99@example.com", "home2")
        self.assertIn("drops 80 of 100 users (80%), more than maxDrop=0.5",
                      store.lastError)
        self.assertEqual(len(self.errors()), 1)
        # Polling again does not log again.
        self.clock.advance(1)
        self.assertEqual(len(self.errors()), 1)

    def test_bigChangeUnderThreshold(self):
        """
        An edit dropping fewer users than C{maxDrop} is a decision: it is
        taken.
        """
        store = self.store(maxDrop=0.5)
        lines = self.text.splitlines(True)
        self.overwrite("".join(lines[:2 + 60]))
        self.assertIsNone(store.lastError)
        self.failUnlessEqual(self.successResultOf(
            store.lookupUser("sip:u99@example.com")), None)
        self.serves(store, "sip:u59@example.com", "home2")

    def test_storeWritesAreDeliberate(self):
        """
        Another process removing most users through a store (the admin
        command) is not refused by the running store's reload, and a later
        damage to that file still is.
        """
        store = self.store()
        admin = FileAssignmentStore(self.clock, self.path, poll=0)
        self.successResultOf(admin.removeUsers(
            [f"u{i}@example.com" for i in range(90)]))
        self.clock.advance(1)
        self.assertIsNone(store.lastError)
        self.serves(store, "sip:u3@example.com", None)
        self.serves(store, "sip:u95@example.com", "home2")
        self.overwrite("")
        self.assertIn("no servers", store.lastError)
        self.serves(store, "sip:u95@example.com", "home2")

    def test_writeOverDamagedFileRefused(self):
        """
        A store write finding the file damaged outside refuses to write
        rather than take the damage as the new content.
        """
        store = self.store()
        with open(self.path, "w") as f:
            f.write("")
        self.failureResultOf(store.assignUser("new@example.com", "home1"),
                             StoreConfigError)
        self.serves(store, "sip:u1@example.com", "home2")
        self.assertEqual(self.read(), "")

    def read(self):
        with open(self.path) as f:
            return f.read()

    def test_storeString(self):
        """
        C{file:PATH:maxDrop=SHARE} sets the share; a bad one is a one-line
        error.
        """
        store = storeFromString(self.clock, f"file:{self.path}:poll=0:"
                                            f"maxDrop=0.9")
        self.assertEqual(store.maxDrop, 0.9)
        e = self.assertRaises(StoreConfigError, storeFromString, self.clock,
                              f"file:{self.path}:maxDrop=2")
        self.assertIn("bad maxDrop '2' (a share of the users", str(e))


_ids = st.sampled_from(["home1", "home2", "home3"])
_ops = st.lists(st.one_of(
    st.tuples(st.just("assign"), st.integers(0, 20), _ids),
    st.tuples(st.just("remove"), st.integers(0, 20)),
    st.tuples(st.just("state"), _ids,
              st.sampled_from(["active", "draining", "down"])),
), max_size=40)


class RoundTripTests(SynchronousTestCase):
    """
    Whatever is written through the store reads back the same.
    """

    @settings(max_examples=60, deadline=None)
    @given(_ops)
    def test_roundTrip(self, ops):
        """
        After any sequence of assignments, removals and state changes on
        a commented file, rendering and parsing again gives the same
        tables, and every comment line is still there.
        """
        text = ("# head\n"
                "server home1 sip:127.0.0.1:5070  # one\n"
                "server home2 sip:127.0.0.1:5080\n"
                "server home3 sip:127.0.0.1:5090\n"
                "# users\n"
                "user u1@example.com home1  # first user\n")
        tables = parseAssignments(text)
        for op in ops:
            try:
                if op[0] == "assign":
                    events, _ = tables.changeAssign(
                        f"u{op[1]}@example.com", op[2])
                elif op[0] == "remove":
                    events, _ = tables.changeRemove(f"sip:u{op[1]}@example.com")
                else:
                    events, _ = tables.changeUpdateServer(op[1], state=op[2])
            except Exception:
                continue
            tables.apply(events)
            text = renderAssignments(text, tables)
        again = parseAssignments(text)
        self.assertEqual(again.users, tables.users)
        self.assertEqual(again.servers, tables.servers)
        self.assertEqual(again.counts, tables.counts)
        for comment in ("# head", "# users"):
            self.assertIn(comment, text.splitlines())


class ConcurrentWriterTests(SynchronousTestCase):
    """
    A reader never sees a half-written file while a writer replaces it.
    """

    def test_neverHalfWritten(self):
        """
        While a thread rewrites a file of 2000 users again and again, moving
        all of them at once, every reload sees 2000 users on one server.
        """
        path = os.path.join(tempDir(self), "a.conf")
        servers = ("server home1 sip:127.0.0.1:5070\n"
                   "server home2 sip:127.0.0.1:5080\n")
        texts = [servers + "".join(f"user u{i}@example.com {home}\n"
                                   for i in range(2000))
                 for home in ("home1", "home2")]
        writeAtomically(path, texts[0])
        clock = Clock()
        store = FileAssignmentStore(clock, path, poll=0)
        stop = threading.Event()

        def writer():
            n = 0
            while not stop.is_set() and n < 400:
                writeAtomically(path, texts[n % 2])
                n += 1

        thread = threading.Thread(target=writer)
        thread.start()
        seen = set()
        try:
            for _ in range(300):
                store._stamp = None
                self.successResultOf(store.checkFile())
                self.assertIsNone(store.lastError)
                counts = self.successResultOf(store.countUsers())
                self.assertEqual(sorted(counts.values()), [0, 2000])
                seen.add(max(counts, key=counts.get))
        finally:
            stop.set()
            thread.join(30)
        self.assertTrue(seen)
