# -*- test-case-name: tests.test_page -*-
"""
Tests for L{sipdist.pool.page}: the operator's page of the pool, rendered
on its own and loaded by a real headless Chromium from a running pool.
"""

import re

from twisted.internet import defer, reactor, task
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.client import Agent, readBody

from sipdist.pool.page import (
    MAX_WAITING, PLAN_MOVES_SHOWN, RECENT_SHOWN, PoolBusy, PoolView,
    ServerRow, Snapshot, renderPage)
from sipdist.pool.rebalance import Move, Plan, computePlan, readState
from sipdist.store import DOWN, ServerRecord
from sipdist.store.memory import MemoryAssignmentStore
from tests.chromium import dumpDOM
from tests.page_helpers import USERS, startDemoPool

HOSTILE = '<script>alert("x")</script>'


def _text(dom):
    """
    The text of an HTML document: tags removed, white space squeezed.
    """
    return " ".join(re.sub(r"<[^>]+>", " ", dom).split())


class RenderTests(SynchronousTestCase):
    """
    L{renderPage} of hand-made snapshots.
    """

    def snapshot(self, **kw):
        values = dict(name="distributor", role="distributor", taken=1000.0,
                      monitor=True, servers=[])
        values.update(kw)
        return Snapshot(**values)

    def test_escaped(self):
        """
        Server ids, URIs, user names, reasons and problems that come from
        the store or the network are escaped wherever they appear, the
        SVG included: no tag of theirs reaches the page.
        """
        row = ServerRow(HOSTILE, f"sip:{HOSTILE}", "active", 1, 3,
                        health="busy", problem=HOSTILE, lastSeen=990.0)
        recent = [{"time": 995.0, "aor": HOSTILE, "old": HOSTILE,
                   "new": "home2", "reason": HOSTILE}]
        # Server ids are checked by the store; the page does not rely on it.
        plan = Plan(moves=[Move(f"sip:{HOSTILE}@x", "a<b", "home2")],
                    users={"a<b": 1, "home2": 0},
                    usersAfter={"a<b": 0, "home2": 1}, share={"home2": 1},
                    reasons=["a<b is down"])
        page = renderPage(self.snapshot(
            name=HOSTILE, servers=[row], recent=recent, plan=plan,
            progress=(1, 2), applying=[HOSTILE])).decode("utf-8")
        self.assertNotIn("<script", page)
        self.assertNotIn("a<b", page)
        self.assertIn("&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;",
                      page)
        self.assertIn("a&lt;b is down", page)
        self.assertIn("In progress: 1 of 2 user(s) moved.", page)

    def test_bounded(self):
        """
        At most L{RECENT_SHOWN} recent moves and L{PLAN_MOVES_SHOWN} moves
        of the plan are listed, newest moves first, with the count of the
        others.
        """
        recent = [{"time": float(i), "aor": f"sip:u{i}@x", "old": "a",
                   "new": "b", "reason": "r"} for i in range(50)]
        servers = [ServerRecord("a", "sip:127.0.0.1:1", state=DOWN),
                   ServerRecord("b", "sip:127.0.0.1:2")]
        plan = computePlan(servers, {f"sip:v{i}@x": "a" for i in range(30)})
        page = renderPage(self.snapshot(recent=recent, plan=plan,
                                        taken=100.0)).decode("utf-8")
        listed = re.findall(r"<td>sip:u(\d+)@x</td>", page)
        self.assertEqual(len(listed), RECENT_SHOWN)
        self.assertEqual(listed[0], "49")
        self.assertEqual(
            len(re.findall(r"<td>sip:v\d+@x</td>", page)), PLAN_MOVES_SHOWN)
        self.assertIn(f"and {30 - PLAN_MOVES_SHOWN} more", page)

    def test_noScript(self):
        """
        The page reloads itself with a meta refresh and carries no script.
        """
        page = renderPage(self.snapshot(), refresh=7).decode("utf-8")
        self.assertIn('<meta http-equiv="refresh" content="7">', page)
        self.assertNotIn("<script", page)

    def test_withoutStore(self):
        """
        A server without a store (an edge) shows its own figures and says
        where the pool is seen.
        """
        page = renderPage(self.snapshot(servers=None, monitor=False,
                                        ownLoad={"tps": 3})).decode("utf-8")
        self.assertIn("tps 3", page)
        self.assertIn("no assignment store", page)


class _Service:
    """
    The parts of a server L{PoolView} reads.
    """

    def __init__(self, store):
        self.store = store
        self.registrar = None

        class Transactions:
            def stats(self):
                return {"created_per_second": 0, "active": 0}
        self.transactions = Transactions()


class _CountingStore:
    """
    A store counting the reads of every assignment (C{usersOf}), which
    can be made to wait.
    """

    def __init__(self, store):
        self._store = store
        self.usersOfCalls = 0
        self.gate = None

    def listServers(self):
        if self.gate is not None:
            return self.gate
        return self._store.listServers()

    def countUsers(self):
        return self._store.countUsers()

    def usersOf(self, sid):
        self.usersOfCalls += 1
        return self._store.usersOf(sid)


class ViewTests(SynchronousTestCase):
    """
    L{PoolView} over a memory store, on a clock.
    """

    def setUp(self):
        self.clock = task.Clock()
        self.clock.advance(1000)
        memory = MemoryAssignmentStore()
        self.successResultOf(memory.addServer(
            ServerRecord("home1", "sip:127.0.0.1:1")))
        self.successResultOf(memory.addServer(
            ServerRecord("home2", "sip:127.0.0.1:2", state=DOWN)))
        self.successResultOf(memory.assignUsers(
            [(f"sip:u{i}@x", "home1") for i in range(5)]
            + [(f"sip:v{i}@x", "home2") for i in range(3)]))
        self.memory = memory
        self.store = _CountingStore(memory)
        self.view = PoolView(_Service(self.store), {"name": "d"}, self.clock,
                             ttl=5.0)

    def test_planIsDryRun(self):
        """
        The page's plan is what C{sipdist rebalance --dry-run} computes,
        and computing it changes nothing in the store.
        """
        snapshot = self.successResultOf(self.view.snapshot())
        servers, assignments = self.successResultOf(
            defer.ensureDeferred(readState(self.memory)))
        expected = computePlan(servers, assignments)
        self.assertEqual(snapshot.plan.moves, expected.moves)
        self.assertEqual(len(snapshot.plan.moves), 3)
        self.assertEqual(self.successResultOf(self.memory.countUsers()),
                         {"home1": 5, "home2": 3})
        self.assertEqual([(r.id, r.state, r.users) for r in snapshot.servers],
                         [("home1", "active", 5), ("home2", "down", 3)])

    def test_cached(self):
        """
        Loads within the time to live share one reading of the store;
        the next load after it reads again.
        """
        for _ in range(10):
            self.successResultOf(self.view.snapshot())
            self.clock.advance(0.4)
        self.assertEqual(self.view.reads, 1)
        self.assertEqual(self.store.usersOfCalls, 2)
        self.clock.advance(1.5)
        self.successResultOf(self.view.snapshot())
        self.assertEqual(self.view.reads, 2)

    def test_concurrentShareOneRead(self):
        """
        Loads arriving while the store is being read wait for that one
        reading.
        """
        self.store.gate = gate = defer.Deferred()
        pending = [self.view.snapshot() for _ in range(5)]
        for d in pending:
            self.assertNoResult(d)
        self.store.gate = None
        gate.callback(self.successResultOf(self.memory.listServers()))
        results = [self.successResultOf(d) for d in pending]
        self.assertEqual(self.view.reads, 1)
        self.assertTrue(all(r is results[0] for r in results))

    def test_waitingBounded(self):
        """
        At most L{MAX_WAITING} loads wait for one reading of the store;
        the next ones get the previous snapshot, or fail with L{PoolBusy}
        when there is none.
        """
        self.store.gate = gate = defer.Deferred()
        pending = [self.view.snapshot() for _ in range(MAX_WAITING)]
        self.failureResultOf(self.view.snapshot(), PoolBusy)
        self.store.gate = None
        gate.callback(self.successResultOf(self.memory.listServers()))
        first = self.successResultOf(pending[0])
        self.clock.advance(10)
        self.store.gate = gate = defer.Deferred()
        pending = [self.view.snapshot() for _ in range(MAX_WAITING)]
        self.assertIs(self.successResultOf(self.view.snapshot()), first)
        self.store.gate = None
        gate.callback(self.successResultOf(self.memory.listServers()))
        self.assertIsNot(self.successResultOf(pending[0]), first)

    def test_tooManyUsers(self):
        """
        Above C{maxPlanUsers} the assignments are not read for the plan;
        the page says to run the dry run instead.
        """
        self.view.maxPlanUsers = 7
        snapshot = self.successResultOf(self.view.snapshot())
        self.assertIsNone(snapshot.plan)
        self.assertIn("sipdist rebalance --dry-run", snapshot.planNote)
        self.assertEqual(self.store.usersOfCalls, 0)

    def test_storeFails(self):
        """
        A store that cannot be read gives a page saying so, not an error.
        """
        self.store.gate = defer.fail(RuntimeError("directory down"))
        snapshot = self.successResultOf(self.view.snapshot())
        self.assertIn("could not be read", snapshot.error)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertIn(b"could not be read", renderPage(snapshot))


class ChromiumTests(TestCase):
    """
    The page of a running distributor with its monitor, loaded by
    headless Chromium.
    """

    timeout = 120

    @defer.inlineCallbacks
    def test_page(self):
        """
        The DOM Chromium builds shows every server with its state, health
        and users, the moves the monitor made with their reason, and the
        dry-run plan.
        """
        pool, port = yield startDemoPool(self)
        dom = yield dumpDOM(reactor, f"http://127.0.0.1:{port}/")
        text = _text(dom)
        moved = USERS["home3"]
        self.assertIn(f"home1 active up {USERS['home1']} ", text)
        self.assertIn(f"home2 active up {USERS['home2'] + moved} ", text)
        self.assertIn("home3 down failing 0 ", text)
        # Figures not reported, weight 1, checked lately, never answered.
        self.assertRegex(text, r"home3 down failing 0 - - - - 1 \d+ s ago "
                               r"never sip:127\.0\.0\.1:\d+ no answer in "
                               r"0\.2 s")
        self.assertIn(pool.uris["home1"], text)
        self.assertIn(f"sip:home3-00@example.com home3 home2 home3 is "
                      f"down: its {moved} user(s) move", text)
        self.assertIn(f"Last moves ({moved} of the last {moved}", text)
        self.assertIn("home1 carries 36, above its share 27.0 by more than "
                      "10%", text)
        self.assertIn("9 user(s) would move", text)
        self.assertRegex(text, r"sip:home1-\d\d@example.com home1 home2")
        self.assertIn("<svg", dom)
        self.assertEqual(len(re.findall(r"<rect ", dom)), 6)

    @defer.inlineCallbacks
    def test_pageWithToken(self):
        """
        A listener with a token: Chromium without it sees only the 401;
        given once in the address, the token is exchanged for a cookie
        and the page shown after the redirect.
        """
        from tests.test_status import TOKEN, _writeToken
        pool, port = yield startDemoPool(
            self, **{"status-token": _writeToken(self)})
        dom = yield dumpDOM(reactor, f"http://127.0.0.1:{port}/")
        self.assertIn("401 Unauthorized", dom)
        self.assertNotIn("home1", dom)
        dom = yield dumpDOM(
            reactor, f"http://127.0.0.1:{port}/pool?token={TOKEN.decode()}")
        self.assertIn("home3 down failing 0 ", _text(dom))

    @defer.inlineCallbacks
    def test_headers(self):
        """
        The page is HTML served with a policy allowing no script, frame
        or form, and is never cached.
        """
        pool, port = yield startDemoPool(self)
        response = yield Agent(reactor).request(
            b"GET", f"http://127.0.0.1:{port}/pool".encode())
        body = yield readBody(response)
        headers = response.headers
        self.assertEqual(response.code, 200)
        self.assertEqual(headers.getRawHeaders(b"content-type"),
                         [b"text/html; charset=utf-8"])
        self.assertEqual(headers.getRawHeaders(b"cache-control"),
                         [b"no-store"])
        policy = headers.getRawHeaders(b"content-security-policy")[0]
        self.assertIn(b"default-src 'none'", policy)
        self.assertIn(b"<h1>sipdist pool", body)
