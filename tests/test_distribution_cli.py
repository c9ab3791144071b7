# -*- test-case-name: tests.test_distribution_cli -*-
"""
Tests for C{sipdist drain}, C{rebalance} and C{status}
(L{sipdist.commands.distribution}).
"""

from io import StringIO

from twisted.internet import defer, task
from twisted.trial.unittest import SynchronousTestCase, TestCase

from sipdist.commands import distribution as distribution_cli
from sipdist.commands.main import CommandError
from sipdist.pool.monitor import ProbeFailed
from sipdist.store import ServerRecord
from sipdist.store.memory import MemoryAssignmentStore
from tests.distribution_helpers import startPool
from tests.test_admin import runSipdist


class FixedProber:
    def __init__(self, answers):
        self.answers = answers

    def probe(self, uri):
        if uri in self.answers:
            return defer.succeed(self.answers[uri])
        return defer.fail(ProbeFailed("no answer"))


class CommandTests(SynchronousTestCase):
    """
    The commands against one memory store, in this process.
    """

    def setUp(self):
        self.store = MemoryAssignmentStore()
        self.clock = task.Clock()
        for name, port in (("home1", 5070), ("home2", 5080)):
            self.successResultOf(self.store.addServer(
                ServerRecord(name, f"sip:127.0.0.1:{port}")))
        self.successResultOf(self.store.assignUsers(
            [(f"sip:u{i}@example.com", "home1") for i in range(6)]
            + [(f"sip:v{i}@example.com", "home2") for i in range(6)]))

    def command(self, name, *args):
        options = dict((n, c) for n, c, _ in distribution_cli.commands)[name]()
        options.storeFactory = lambda reactor, description: self.store
        options.closeStore = False
        options.clock = self.clock
        options.out = StringIO()
        options.parseOptions(list(args))
        return options

    def run_(self, name, *args, prober=None):
        options = self.command(name, *args)
        if prober is not None:
            options.prober = prober
        d = options.run(None)
        return d, options.out

    def counts(self):
        return self.successResultOf(self.store.countUsers())

    def test_drain(self):
        """
        C{sipdist drain home1 --rate 4} marks home1 draining and moves its
        six users to home2, four in the first second, the rest in the next.
        """
        d, out = self.run_("drain", "--rate", "4", "home1")
        self.assertEqual(self.counts(), {"home1": 2, "home2": 10})
        self.assertNoResult(d)
        self.clock.advance(1)
        self.successResultOf(d)
        self.assertEqual(self.counts(), {"home1": 0, "home2": 12})
        text = out.getvalue()
        self.assertIn("home1 marked draining", text)
        self.assertIn("6 user(s) to move", text)
        self.assertIn("moved 4 of 6", text)
        self.assertIn("moved 6 user(s)", text)
        record = self.successResultOf(self.store.getServer("home1"))
        self.assertEqual(record.state, "draining")

    def test_drainDryRun(self):
        """
        With --dry-run, drain prints the plan and changes nothing.
        """
        d, out = self.run_("drain", "--dry-run", "home1")
        self.successResultOf(d)
        self.assertEqual(self.counts(), {"home1": 6, "home2": 6})
        self.assertEqual(
            self.successResultOf(self.store.getServer("home1")).state,
            "active")
        self.assertIn("move sip:u0@example.com home1 -> home2",
                      out.getvalue())

    def test_drainUnknown(self):
        """
        Draining a server that does not exist is one error line.
        """
        d, out = self.run_("drain", "home9")
        self.failureResultOf(d, CommandError)

    def test_drainLastServer(self):
        """
        Draining the only active server fails saying there is nowhere to
        move the users.
        """
        self.successResultOf(self.store.updateServer("home2", state="down"))
        d, out = self.run_("drain", "home1")
        failure = self.failureResultOf(d, CommandError)
        self.assertIn("no active server", str(failure.value))

    def test_rebalanceDryRun(self):
        """
        C{sipdist rebalance --dry-run} after a server was added prints who
        would move where and the load before and after, and moves nobody.
        """
        self.successResultOf(self.store.addServer(
            ServerRecord("home3", "sip:127.0.0.1:5090")))
        d, out = self.run_("rebalance", "--dry-run")
        self.successResultOf(d)
        text = out.getvalue()
        self.assertIn("4 user(s) to move", text)
        self.assertIn("-> home3", text)
        self.assertIn("dry run: nothing changed", text)
        self.assertEqual(self.counts()["home3"], 0)
        lines = [line.split() for line in text.splitlines()
                 if line.startswith("home3 ")]
        self.assertEqual(lines[0][:5], ["home3", "0", "0", "4", "4"])

    def test_rebalance(self):
        """
        C{sipdist rebalance} applies the plan.
        """
        self.successResultOf(self.store.addServer(
            ServerRecord("home3", "sip:127.0.0.1:5090")))
        d, out = self.run_("rebalance", "--quiet")
        self.successResultOf(d)
        self.assertEqual(self.counts(), {"home1": 4, "home2": 4, "home3": 4})
        self.assertNotIn("move sip:", out.getvalue())

    def test_rebalanceBadOptions(self):
        """
        Bad numbers are usage errors.
        """
        from twisted.python.usage import UsageError
        self.assertRaises(UsageError, self.command, "rebalance",
                          "--tolerance", "-1")
        self.assertRaises(UsageError, self.command, "rebalance",
                          "--rate", "-3")
        self.assertIsNone(self.command("rebalance", "--rate", "0")["rate"])
        self.assertEqual(self.command("drain", "home1")["rate"], 50.0)

    def test_status(self):
        """
        C{sipdist status} lists each server with its state, health, users
        and the load figures it reported.
        """
        self.successResultOf(self.store.updateServer("home2", state="down"))
        prober = FixedProber({"sip:127.0.0.1:5070": {
            "registered": 5, "subscriptions": 7, "tps": 3}})
        d, out = self.run_("status", prober=prober)
        self.successResultOf(d)
        lines = out.getvalue().splitlines()
        home1 = next(line.split() for line in lines
                     if line.startswith("home1"))
        self.assertEqual(home1[:7], ["home1", "active", "up", "6", "5", "7",
                                     "3"])
        home2 = next(line.split() for line in lines
                     if line.startswith("home2"))
        self.assertEqual(home2[:4], ["home2", "down", "no-answer", "6"])
        self.assertIn("total 12 user(s) on 2 server(s); 6 on down or "
                      "draining servers", lines[-1])


class ConsoleTests(SynchronousTestCase):
    """
    The commands through the console script.
    """

    def test_statusFileStore(self):
        """
        C{sipdist status --no-probe} on a file store prints its servers.
        """
        from tests.helpers_store import tempDir
        path = tempDir(self) + "/assignments.conf"
        with open(path, "w") as f:
            f.write("server home1 sip:127.0.0.1:5070\n"
                    "user alice@example.com home1\n")
        code, out, err = runSipdist(["status", "--no-probe", "--store",
                                     f"file:{path}"])
        self.assertEqual(code, 0, err)
        self.assertIn("home1", out)
        self.assertIn("total 1 user(s)", out)


class LiveStatusTests(TestCase):
    """
    C{sipdist status} probing real servers on loopback.
    """

    timeout = 20

    @defer.inlineCallbacks
    def test_probes(self):
        """
        A running home answers the probe with its figures; a stopped one is
        shown as not answering.
        """
        from twisted.internet import reactor
        pool = yield startPool(self, homes=("home1", "home2"),
                               distributor=False)
        yield pool.stop("home2")
        options = dict((n, c) for n, c, _ in distribution_cli.commands)[
            "status"]()
        options.storeFactory = lambda reactor, description: pool.store
        options.closeStore = False
        options.out = StringIO()
        options.parseOptions(["--timeout", "0.3"])
        yield options.run(reactor)
        lines = options.out.getvalue().splitlines()
        self.assertEqual(next(line.split() for line in lines
                              if line.startswith("home1"))[:5],
                         ["home1", "active", "up", "0", "0"])
        self.assertEqual(next(line.split() for line in lines
                              if line.startswith("home2"))[2], "no-answer")


class MonitorStatusTests(TestCase):
    """
    C{sipdist status --status-url}: the monitor's view, read from its
    status listener, which requires a token.
    """

    timeout = 20

    @defer.inlineCallbacks
    def setUp(self):
        from tests.distribution_helpers import waitFor
        from tests.test_status import TOKEN, _portOf, _writeToken
        self.pool = pool = yield startPool(self, homes=("home1",),
                                           distributor=False)
        from tests.interop import freePort
        yield pool.store.addServer(ServerRecord(
            "home2", f"sip:127.0.0.1:{freePort()}", state="down"))
        self.tokenFile = _writeToken(self)
        service = yield pool.start("distributor", "distributor", **{
            "monitor": True, "monitor-interval": 0.1,
            "monitor-timeout": 0.1, "status-listen": "tcp:0",
            "status-token": self.tokenFile})
        monitor = service.monitor
        yield waitFor(lambda: "home1" in monitor.health
                      and monitor.health["home1"].status == "up"
                      and "home2" in monitor.health)
        self.url = f"http://127.0.0.1:{_portOf(service).port}/status"
        self.token = TOKEN

    def run_(self, *argv):
        from twisted.internet import reactor
        options = dict((n, c) for n, c, _ in distribution_cli.commands)[
            "status"]()
        options.storeFactory = lambda reactor, description: self.pool.store
        options.closeStore = False
        options.out = StringIO()
        options.parseOptions(list(argv))
        d = options.run(reactor)
        d.addCallback(lambda _: options.out.getvalue().splitlines())
        return d

    @defer.inlineCallbacks
    def test_withToken(self):
        """
        With the listener's token, the servers are listed with the health
        the monitor sees.
        """
        lines = yield self.run_("--status-url", self.url,
                                "--status-token", self.tokenFile)
        self.assertEqual(next(line.split() for line in lines
                              if line.startswith("home1"))[:3],
                         ["home1", "active", "up"])
        self.assertEqual(next(line.split() for line in lines
                              if line.startswith("home2"))[:3],
                         ["home2", "down", "failing"])

    @defer.inlineCallbacks
    def test_withoutToken(self):
        """
        Without the token the command fails with one line.
        """
        failure = yield self.assertFailure(
            self.run_("--status-url", self.url), CommandError)
        self.assertIn("401 Unauthorized (give the listener's "
                      "--status-token)", str(failure))


class StatusOptionsTests(SynchronousTestCase):
    """
    The options of C{sipdist status} about the status listener.
    """

    def test_mistakes(self):
        """
        Listener options without C{--status-url}, another scheme, TLS
        options for http: one line each.
        """
        from twisted.python.usage import UsageError
        status = dict((n, c) for n, c, _ in distribution_cli.commands)[
            "status"]
        for argv, message in (
                (["--status-token", "/x"], "--status-token goes with "
                                           "--status-url"),
                (["--status-url", "ftp://x/status"], "is not an http://"),
                (["--status-url", "http://x/status", "--status-ca", "/x"],
                 "only for an https://"),
                (["--status-url", "http://x/status", "--status-token",
                  "/nonexistent"], "/nonexistent: No such file"),
                (["--status-url", "https://x/status", "--status-cert",
                  "/nonexistent"], "must be given together")):
            e = self.assertRaises(UsageError, status().parseOptions, argv)
            self.assertIn(message, str(e))


class LDAPCommandTests(TestCase):
    """
    The distribution commands write to an LDAP store (real slapd on
    loopback; skipped without slapd, failed under CI).
    """

    def test_drainAndRebalance(self):
        """
        Against slapd, C{sipdist drain home1} moves its users to home2,
        C{status} shows it, and after home1 is active again C{rebalance}
        gives it back half.
        """
        from tests import slapd
        from tests.test_store_ldap import writeConfig
        server = slapd.startedSlapd(self)
        config = writeConfig(self)
        env = {"SIPDIST_STORE": f"{server.url}/{slapd.SUFFIX}?config={config}"}
        steps = [["server-add", "home1", "sip:127.0.0.1:5070"],
                 ["server-add", "home2", "sip:127.0.0.1:5080"]]
        steps += [["assign", f"u{i}@example.com", "home1"] for i in range(4)]
        for args in steps:
            code, out, err = runSipdist(args, env)
            self.assertEqual((code, err), (0, ""))
        code, out, err = runSipdist(["drain", "home1"], env)
        self.assertEqual((code, err), (0, ""))
        self.assertIn("moved 4 user(s)", out)
        code, out, err = runSipdist(["status", "--no-probe"], env)
        self.assertIn("home1          draining", out)
        self.assertIn("total 4 user(s) on 2 server(s)", out)
        code, out, err = runSipdist(["server-set", "--state", "active", "home1"],
                                     env)
        self.assertEqual((code, err), (0, ""))
        code, out, err = runSipdist(["rebalance", "--dry-run"], env)
        self.assertEqual((code, err), (0, ""))
        self.assertIn("2 user(s) to move", out)
        code, out, err = runSipdist(["rebalance"], env)
        code, out, err = runSipdist(["counts"], env)
        self.assertEqual(out, "home1 2\nhome2 2\ntotal 4\n")


class ListenTests(SynchronousTestCase):
    """
    Where C{sipdist status} sends its checks from.
    """

    def test_loopback(self):
        """
        Servers all on loopback are checked from loopback; any other from
        every interface.
        """
        from sipdist.commands.distribution import _listenFor
        local = [ServerRecord("a", "sip:127.0.0.1:5070"),
                 ServerRecord("b", "sip:localhost:5080")]
        self.assertEqual(_listenFor(local), "udp:0:interface=127.0.0.1")
        self.assertEqual(
            _listenFor(local + [ServerRecord("c", "sip:192.0.2.1")]),
            "udp:0")
