# -*- test-case-name: tests.test_admin -*-
"""
Tests for the store administration commands of C{sipdist}
(L{sipdist.commands.store}).
"""

import os
import subprocess
import sys
from io import StringIO

from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from sipdist.commands import store as admin
from sipdist.commands.main import CommandError
from sipdist.store import ServerRecord
from sipdist.store.memory import MemoryAssignmentStore
from tests.helpers_store import tempDir


def assignAliceAndLookHerUp(case, env):
    """
    The issue's check, against the store C{env} names: the console script
    adds home1 and home2, assigns alice@example.com to home2 and looks her
    up.
    """
    for args in (["server-add", "home1", "sip:127.0.0.1:5070"],
                 ["server-add", "home2", "sip:127.0.0.1:5080"],
                 ["assign", "alice@example.com", "home2"]):
        code, out, err = runSipdist(args, env)
        case.assertEqual((code, err), (0, ""))
    code, out, err = runSipdist(["lookup", "alice@example.com"], env)
    case.assertEqual((code, out), (0, "sip:alice@example.com home2 "
                                      "sip:127.0.0.1:5080 state=active\n"))


def runSipdist(args, env=None, timeout=60):
    """
    Run the C{sipdist} console script in a child process.

    @return: C{(exit status, stdout, stderr)}.
    """
    environ = dict(os.environ)
    environ.pop("SIPDIST_STORE", None)
    environ.update(env or {})
    done = subprocess.run(
        [sys.executable, "-c", "from sipdist.commands.main import main; main()"] + args,
        capture_output=True, text=True, timeout=timeout, env=environ)
    return done.returncode, done.stdout, done.stderr


class InProcessTests(SynchronousTestCase):
    """
    The commands against one memory store, run in this process.
    """

    def setUp(self):
        self.store = MemoryAssignmentStore()

    def run_(self, command, *args):
        """
        Run a command; return its output, or raise what it raises.
        """
        options = dict(admin.commandsByName())[command]()
        options.storeFactory = lambda reactor, description: self.store
        options.closeStore = False
        options.out = StringIO()
        options.parseOptions(list(args))
        result = self.successResultOf(options.run(None))
        return result, options.out.getvalue()

    def fails(self, command, *args):
        options = dict(admin.commandsByName())[command]()
        options.storeFactory = lambda reactor, description: self.store
        options.closeStore = False
        options.out = StringIO()
        options.parseOptions(list(args))
        return str(self.failureResultOf(options.run(None),
                                        CommandError).value)

    def test_assignAndLookup(self):
        """
        Servers added, Alice assigned to home2, the lookup names home2.
        """
        self.run_("server-add", "home1", "sip:127.0.0.1:5070")
        _, out = self.run_("server-add", "--weight=5", "home2",
                           "sip:127.0.0.1:5080")
        self.assertEqual(out, "added server home2 sip:127.0.0.1:5080 "
                              "weight=5 state=active\n")
        _, out = self.run_("assign", "alice@example.com", "home2")
        self.assertEqual(out, "sip:alice@example.com assigned to home2\n")
        _, out = self.run_("lookup", "alice@example.com")
        self.assertEqual(out, "sip:alice@example.com home2 "
                              "sip:127.0.0.1:5080 state=active\n")
        _, out = self.run_("move", "alice@example.com", "home1")
        self.assertEqual(out, "sip:alice@example.com moved from home2 to "
                              "home1\n")
        _, out = self.run_("counts")
        self.assertEqual(out, "home1 1\nhome2 0\ntotal 1\n")
        _, out = self.run_("server-set", "--state=draining", "home1")
        self.assertEqual(out, "server home1 sip:127.0.0.1:5070 weight=1 "
                              "state=draining\n")
        _, out = self.run_("server-list")
        self.assertEqual(out.splitlines()[0],
                         "home1 sip:127.0.0.1:5070 weight=1 state=draining "
                         "users=1")
        _, out = self.run_("unassign", "sip:alice@example.com")
        self.assertEqual(out, "sip:alice@example.com unassigned (was on "
                              "home1)\n")
        _, out = self.run_("server-remove", "home1")
        self.assertEqual(out, "removed server home1\n")

    def test_transportURIs(self):
        """
        C{server-add} and C{server-set} take a server's TCP and TLS URIs;
        C{--tls-uri=} (empty) removes one; every listing shows them; a TLS
        URI that is not secure is a usage error.
        """
        _, out = self.run_("server-add", "--tls-uri=sips:home1.example.com",
                           "home1", "sip:127.0.0.1:5070")
        self.assertEqual(out, "added server home1 sip:127.0.0.1:5070 "
                              "weight=1 state=active "
                              "tls-uri=sips:home1.example.com\n")
        _, out = self.run_("server-set", "--tcp-uri=sip:10.0.0.1:5072",
                           "home1")
        self.assertEqual(out, "server home1 sip:127.0.0.1:5070 weight=1 "
                              "state=active tcp-uri=sip:10.0.0.1:5072 "
                              "tls-uri=sips:home1.example.com\n")
        self.run_("assign", "alice@example.com", "home1")
        _, out = self.run_("lookup", "alice@example.com")
        self.assertEqual(out, "sip:alice@example.com home1 "
                              "sip:127.0.0.1:5070 state=active "
                              "tcp-uri=sip:10.0.0.1:5072 "
                              "tls-uri=sips:home1.example.com\n")
        _, out = self.run_("server-set", "--tls-uri=", "home1")
        self.assertEqual(out, "server home1 sip:127.0.0.1:5070 weight=1 "
                              "state=active tcp-uri=sip:10.0.0.1:5072\n")
        self.assertIsNone(self.successResultOf(
            self.store.getServer("home1")).tlsUri)
        e = self.assertRaises(
            usage.UsageError, self.run_, "server-add",
            "--tls-uri=sip:127.0.0.1:5071", "home2", "sip:127.0.0.1:5080")
        self.assertIn("bad server TLS URI", str(e))

    def test_errors(self):
        """
        Store errors are one line each.
        """
        self.run_("server-add", "home1", "sip:127.0.0.1:5070")
        self.assertEqual(self.fails("lookup", "alice@example.com"),
                         "sip:alice@example.com has no assignment")
        self.assertEqual(self.fails("assign", "alice@example.com", "home9"),
                         "no server 'home9'")
        self.assertEqual(self.fails("move", "alice@example.com", "home1"),
                         "sip:alice@example.com has no assignment")
        self.assertEqual(
            self.fails("server-add", "home1", "sip:10.0.0.1"),
            "server 'home1' exists already")

    def test_import(self):
        """
        Import adds the servers of a file and assigns its users in one
        batch; a bad file changes nothing.
        """
        path = os.path.join(tempDir(self), "batch.conf")
        with open(path, "w") as f:
            f.write("server home1 sip:127.0.0.1:5070\n"
                    "# users\n"
                    "user alice@example.com home1\n"
                    "user bob@example.com home1\n")
        _, out = self.run_("import", path)
        self.assertEqual(out, f"imported {path}: 1 servers added, 0 updated, "
                              f"2 users assigned\n")
        with open(path, "a") as f:
            f.write("user carol@example.com nowhere\n")
        self.assertEqual(self.fails("import", path),
                         f"{path}:5: no server 'nowhere' in this file")
        self.assertEqual(self.successResultOf(self.store.countUsers()),
                         {"home1": 2})

    def test_importTransportURIs(self):
        """
        Import gives a server the TCP and TLS URIs its line names, and
        removes those a later file no longer names.
        """
        path = os.path.join(tempDir(self), "batch.conf")
        with open(path, "w") as f:
            f.write("server home1 sip:127.0.0.1:5070 "
                    "tls-uri=sips:home1.example.com\n")
        self.run_("import", path)
        self.assertEqual(
            self.successResultOf(self.store.getServer("home1")).tlsUri,
            "sips:home1.example.com")
        with open(path, "w") as f:
            f.write("server home1 sip:127.0.0.1:5070 "
                    "tcp-uri=sip:127.0.0.1:5072\n")
        _, out = self.run_("import", path)
        self.assertIn("1 updated", out)
        record = self.successResultOf(self.store.getServer("home1"))
        self.assertEqual((record.tcpUri, record.tlsUri),
                         ("sip:127.0.0.1:5072", None))

    def test_providerWithoutTransportURIs(self):
        """
        A provider written before servers had TCP and TLS URIs (its
        C{updateServer} takes neither) still has its state, weight and URI
        set by C{server-set} and C{import}.
        """
        store = self.store

        class OldProvider:
            def __getattr__(self, name):
                return getattr(store, name)

            def updateServer(self, serverId, uri=None, weight=None,
                             state=None):
                return store.updateServer(serverId, uri, weight, state)

        self.store = OldProvider()
        self.run_("server-add", "home1", "sip:127.0.0.1:5070")
        _, out = self.run_("server-set", "--state=draining", "home1")
        self.assertIn("state=draining", out)
        path = os.path.join(tempDir(self), "batch.conf")
        with open(path, "w") as f:
            f.write("server home1 sip:127.0.0.1:5090 weight=3\n")
        self.run_("import", path)
        self.assertEqual(self.successResultOf(store.getServer("home1")),
                         ServerRecord("home1", "sip:127.0.0.1:5090", 3))


class ConsoleScriptTests(SynchronousTestCase):
    """
    The console script against a file store, each command in its own
    process.
    """

    def test_fileStore(self):
        """
        C{sipdist} assigns alice@example.com to home2 in a file store and
        looks her up; errors are one line and a non-zero exit.
        """
        path = os.path.join(tempDir(self), "assignments.conf")
        env = {"SIPDIST_STORE": f"file:{path}"}
        assignAliceAndLookHerUp(self, env)
        code, out, err = runSipdist(
            ["lookup", "--store", f"file:{path}", "zed@example.com"])
        self.assertEqual((code, out, err), (
            1, "", "sipdist lookup: sip:zed@example.com has no assignment\n"))
        code, out, err = runSipdist(["counts", "--store=nosuch:x"])
        self.assertEqual(code, 1)
        self.assertEqual(len(err.splitlines()), 1)
        self.assertIn("unknown store type 'nosuch'", err)


class OptionsAfterArgumentsTests(SynchronousTestCase):
    """
    Store commands take their options after their arguments too.
    """

    def test_lookup(self):
        """
        C{sipdist lookup AOR --store S} parses like C{--store S lookup AOR}.
        """
        from sipdist.commands.store import commands
        options = dict((name, cls) for name, cls, _ in commands)["lookup"]()
        options.parseOptions(["alice@example.com", "--store", "memory:"])
        self.assertEqual(options["store"], "memory:")
