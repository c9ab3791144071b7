# -*- test-case-name: tests.test_rebalance -*-
"""
Tests for L{sipdist.pool.rebalance}: the plan is minimal and spreads by capacity
weight; applying it writes each user once, at a bounded rate.
"""

from collections import Counter

from hypothesis import given, settings, strategies as st
from twisted.internet import task
from twisted.trial.unittest import SynchronousTestCase

from sipdist.pool.rebalance import (
    applyPlan, capPlan, computePlan, planFor, preference)
from sipdist.store import ACTIVE, DOWN, DRAINING, ServerRecord
from sipdist.store.memory import MemoryAssignmentStore


def servers(*specs):
    return [ServerRecord(sid, f"sip:127.0.0.1:{5060 + i}", weight, state)
            for i, (sid, weight, state) in enumerate(specs)]


def users(n, sid, prefix="u"):
    return {f"sip:{prefix}{i}@example.com": sid for i in range(n)}


class PlanTests(SynchronousTestCase):
    """
    L{computePlan} for the events of the issue.
    """

    def test_downSpreadByWeight(self):
        """
        The users of a down server are spread over the active servers in
        proportion to their capacity weights, within the tolerance (10%);
        each goes to its first choice in its rendezvous order (the backup
        home its client knows) while that stays within it; nobody else
        moves.
        """
        pool = servers(("a", 1, DOWN), ("b", 1, ACTIVE), ("c", 3, ACTIVE))
        assignments = users(400, "a")
        plan = computePlan(pool, assignments)
        self.assertEqual(len(plan.moves), 400)
        landed = Counter(m.new for m in plan.moves)
        self.assertTrue(90 <= landed["b"] <= 110, landed)
        self.assertTrue(270 <= landed["c"] <= 330, landed)
        self.assertEqual(plan.after["a"], 0)
        eligible = [r for r in pool if r.id != "a"]
        firstChoice = {a: preference(a, eligible)[0] for a in assignments}
        wanted = Counter(firstChoice.values())
        elsewhere = sum(1 for m in plan.moves if m.new != firstChoice[m.aor])
        # Only the users beyond a server's share and tolerance go
        # elsewhere.
        self.assertEqual(elsewhere, max(0, wanted["b"] - 110)
                         + max(0, wanted["c"] - 330))

    def test_drainingMovesOnlyItsUsers(self):
        """
        A draining server's users all move; the others stay even if the
        result is a little uneven.
        """
        pool = servers(("a", 1, DRAINING), ("b", 1, ACTIVE), ("c", 1, ACTIVE))
        assignments = {**users(50, "a"), **users(30, "b", "v"),
                       **users(20, "c", "w")}
        plan = computePlan(pool, assignments, balance=False)
        self.assertEqual({m.old for m in plan.moves}, {"a"})
        self.assertEqual(len(plan.moves), 50)

    def test_newServerFairShare(self):
        """
        A third server added to two balanced ones receives about a third of
        the users, and only it receives any.
        """
        pool = servers(("a", 1, ACTIVE), ("b", 1, ACTIVE), ("c", 1, ACTIVE))
        assignments = {**users(300, "a"), **users(300, "b", "v")}
        plan = computePlan(pool, assignments)
        self.assertEqual({m.new for m in plan.moves}, {"c"})
        self.assertEqual(len(plan.moves), 200)
        self.assertEqual(plan.after, {"a": 200, "b": 200, "c": 200})

    def test_balancedNoMoves(self):
        """
        A distribution within the tolerance is acceptable: no moves.
        """
        pool = servers(("a", 1, ACTIVE), ("b", 1, ACTIVE))
        plan = computePlan(pool, {**users(52, "a"), **users(48, "b", "v")})
        self.assertFalse(plan)
        self.assertIn("acceptable", plan.describe()[0])

    def test_heavyUsers(self):
        """
        Heavy users count more: a server with a few heavy users sheds load
        to one with many light ones until the loads are even.
        """
        pool = servers(("a", 1, ACTIVE), ("b", 1, ACTIVE))
        assignments = {**users(10, "a"), **users(40, "b", "v")}
        weights = {aor: 10 for aor in users(10, "a")}
        plan = computePlan(pool, assignments, weights)
        self.assertEqual(plan.before, {"a": 100, "b": 40})
        self.assertEqual(plan.after, {"a": 70, "b": 70})
        self.assertEqual(len(plan.moves), 3)

    def test_heldServerNotBalanced(self):
        """
        A held server neither receives users to even out the load nor
        counts in the others' shares: a recovered, empty server gets
        nobody back, while the others still balance among themselves.
        """
        pool = servers(("a", 1, ACTIVE), ("b", 1, ACTIVE), ("c", 1, ACTIVE))
        assignments = {**users(100, "b"), **users(60, "c", "v")}
        plan = computePlan(pool, assignments, hold={"a"})
        self.assertNotIn("a", {m.new for m in plan.moves})
        self.assertEqual(plan.usersAfter, {"a": 0, "b": 80, "c": 80})
        even = {**users(50, "b"), **users(50, "c", "v")}
        self.assertFalse(computePlan(pool, even, hold={"a"}))
        self.assertTrue(computePlan(pool, even))

    def test_heldServerTakesUsersThatMustMove(self):
        """
        Users of a down server may go to a held server: they must move.
        """
        pool = servers(("a", 1, ACTIVE), ("b", 1, DOWN))
        plan = computePlan(pool, users(10, "b"), hold={"a"})
        self.assertEqual(plan.usersAfter, {"a": 10, "b": 0})

    def test_capPlan(self):
        """
        L{capPlan} keeps at most the limit, the users of ineligible servers
        first, and counts the load after again.
        """
        pool = servers(("a", 1, DOWN), ("b", 1, ACTIVE), ("c", 1, ACTIVE))
        assignments = {**users(10, "a"), **users(30, "b", "v")}
        plan = computePlan(pool, assignments)
        capped = capPlan(plan, 12)
        self.assertEqual(len(capped.moves), 12)
        self.assertEqual(sum(1 for m in capped.moves if m.old == "a"), 10)
        self.assertEqual(sum(capped.usersAfter.values()), 40)
        self.assertEqual(capped.usersAfter["a"], 0)
        self.assertIn("capped: 12 of", capped.reasons[-1])
        self.assertIs(capPlan(plan, 1000), plan)

    def test_describe(self):
        """
        The description names the reason, each server's load before and
        after, and each move.
        """
        pool = servers(("a", 1, DOWN), ("b", 1, ACTIVE))
        text = "\n".join(computePlan(pool, users(2, "a")).describe())
        self.assertIn("a is down: its 2 user(s) move", text)
        self.assertIn("move sip:u0@example.com a -> b", text)

    def test_noEligible(self):
        """
        With no active server nothing moves, and the plan says why.
        """
        pool = servers(("a", 1, DOWN))
        plan = computePlan(pool, users(3, "a"))
        self.assertFalse(plan)
        self.assertIn("nothing can move", plan.reasons[0])

    def test_preferenceStable(self):
        """
        Removing a server from the pool leaves the order of the others
        unchanged for every user (rendezvous hashing).
        """
        pool = servers(("a", 1, ACTIVE), ("b", 2, ACTIVE), ("c", 1, ACTIVE))
        for aor in users(50, "a"):
            full = preference(aor, pool)
            self.assertEqual(preference(aor, pool[1:]),
                             [s for s in full if s != "a"])


_states = st.sampled_from([ACTIVE, ACTIVE, DRAINING, DOWN])


@st.composite
def pools(draw):
    count = draw(st.integers(2, 5))
    specs = [(f"s{i}", draw(st.integers(1, 5)), ACTIVE) for i in range(count)]
    pool = servers(*specs)
    ids = [s.id for s in pool]
    n = draw(st.integers(0, 120))
    owners = draw(st.lists(st.sampled_from(ids), min_size=n, max_size=n))
    assignments = {f"sip:u{i}@example.com": sid
                   for i, sid in enumerate(owners)}
    weights = {aor: draw(st.integers(1, 4)) for aor in assignments
               if draw(st.booleans())}
    return pool, assignments, weights


class MinimalityTests(SynchronousTestCase):
    """
    A single server change moves only the users it must.
    """

    @settings(max_examples=150, deadline=None)
    @given(pools(), st.data())
    def test_serverLeaves(self, pool_, data):
        """
        When one server goes down or drains, exactly its users move, each
        once, to active servers.
        """
        pool, assignments, weights = pool_
        gone = data.draw(st.sampled_from(pool))
        state = data.draw(st.sampled_from([DOWN, DRAINING]))
        changed = [s if s.id != gone.id else s.updated(state=state)
                   for s in pool]
        plan = computePlan(changed, assignments, weights, balance=False)
        moved = [m.aor for m in plan.moves]
        self.assertEqual(len(moved), len(set(moved)))
        self.assertEqual(set(moved), {a for a, sid in assignments.items()
                                      if sid == gone.id})
        self.assertNotIn(gone.id, {m.new for m in plan.moves})

    @settings(max_examples=150, deadline=None)
    @given(pools(), st.integers(1, 5))
    def test_serverAdded(self, pool_, weight):
        """
        When a server is added to a pool that was balanced, users move only
        to it, and no more than its fair share (plus one user's weight).
        """
        pool, assignments, weights = pool_
        # Start from the balanced plan of the pool without the new server.
        first = computePlan(pool, assignments, weights, tolerance=0)
        balanced = dict(assignments)
        for move in first.moves:
            balanced[move.aor] = move.new
        new = ServerRecord("new", "sip:127.0.0.1:6000", weight)
        plan = computePlan(pool + [new], balanced, weights)
        total = sum(weights.get(a, 1) for a in balanced)
        capacity = sum(s.weight for s in pool) + weight
        share = total * weight / capacity
        # Heavy users can leave the "balanced" pool a little uneven: a
        # server below its new share may receive users too, nobody else.
        room = {"new"} | {s.id for s in pool
                          if first.after[s.id] < total * s.weight / capacity}
        self.assertTrue({m.new for m in plan.moves} <= room)
        self.assertTrue({m.old for m in plan.moves}.isdisjoint(room))
        movedLoad = sum(m.weight for m in plan.moves if m.new == "new")
        self.assertLessEqual(movedLoad, share + 1e-9)
        self.assertEqual(len({m.aor for m in plan.moves}), len(plan.moves))


class ApplyTests(SynchronousTestCase):
    """
    L{applyPlan} writes the moves to the store.
    """

    def setUp(self):
        self.store = MemoryAssignmentStore()
        for record in servers(("a", 1, DRAINING), ("b", 1, ACTIVE)):
            self.successResultOf(self.store.addServer(record))
        self.successResultOf(self.store.assignUsers(users(10, "a").items()))

    def test_boundedRate(self):
        """
        At 4 users per second, 10 users take three writes spread over the
        clock; each user changes once.
        """
        clock = task.Clock()
        events = []
        self.store.watch(events.append)
        plan = self.successResultOf(defer_(planFor(self.store)))
        d = applyPlan(self.store, plan, clock, rate=4)
        self.assertEqual(len(events), 4)
        self.assertNoResult(d)
        clock.advance(1)
        self.assertEqual(len(events), 8)
        clock.advance(1)
        self.assertEqual(self.successResultOf(d), 10)
        self.assertEqual(len({e.aor for e in events}), 10)
        counts = self.successResultOf(self.store.countUsers())
        self.assertEqual(counts, {"a": 0, "b": 10})

    def test_movedMeanwhile(self):
        """
        A user moved by someone else after the plan was made is left alone.
        """
        plan = self.successResultOf(defer_(planFor(self.store)))
        self.successResultOf(self.store.addServer(
            ServerRecord("c", "sip:127.0.0.1:6000")))
        self.successResultOf(self.store.moveUser("sip:u0@example.com", "c"))
        done = self.successResultOf(applyPlan(self.store, plan, task.Clock()))
        self.assertEqual(done, 9)
        self.assertEqual(self.successResultOf(
            self.store.lookupUser("sip:u0@example.com")), "c")


def defer_(coroutine):
    from twisted.internet.defer import ensureDeferred
    return ensureDeferred(coroutine)
