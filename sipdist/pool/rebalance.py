# -*- test-case-name: tests.test_rebalance -*-
"""
The distribution policy: whether the assignment of users to home servers is
acceptable, the plan that makes it so, and applying a plan to a store.

L{computePlan} is pure: it takes the server records, the current
assignments and the users' weights and returns a L{Plan} (who moves where,
the load before and after).  The rules:

  - I{eligible} servers are the C{active} ones with a weight above 0; the
    fair share of each is the total user weight times its weight over the
    sum of the eligible weights;
  - a user whose server is not eligible (C{down}, C{draining}, removed, or
    weight 0) I{must} move: it goes to the first server, in its
    capacity-weighted rendezvous order (highest random weight, RFC 2991
    style, with C{-weight / ln(hash)} scores), that is below its fair share
    (or the least loaded one if all are full);
  - with C{balance}, a server loaded above C{(1 + tolerance)} times its
    fair share sheds users until it is at its share, each to the first
    server in the user's rendezvous order that is below its share: the
    users shed first are those that prefer an under-loaded server most.
    Nothing else moves: for a server added to a balanced pool about its fair
    share moves, all to it;
  - a user's weight (default 1) counts in every load: heavy users count
    more;
  - a user appears at most once in a plan: one event never moves a user
    twice;
  - servers in C{hold} (the monitor holds a server it saw come back from
    C{down}) take no part in balancing: they neither shed nor receive
    users to even out the load, and the others' shares are counted
    without them.  Users that must move may still go to them.  So a
    recovered server gets its old users back only by a deliberate
    C{sipdist rebalance}, never by the monitor's automatic balancing.

L{capPlan} keeps the first moves of a plan, the users that must move
first: the most one decision of the monitor may move.

L{applyPlan} writes the moves with C{assignUsers} in batches of at most
C{rate} users per second on the injected clock (a drain at a bounded rate),
re-checking each user's assignment first so that a user moved meanwhile by
someone else is left alone.
"""

import hashlib
import math
from dataclasses import dataclass, field

from twisted.internet import defer, task
from twisted.logger import Logger

from sipdist.store import ACTIVE

DEFAULT_TOLERANCE = 0.1
_log = Logger(namespace="sipdist.pool.rebalance")


def score(aor, serverId, weight):
    """
    The capacity-weighted rendezvous score of a user on a server: higher is
    preferred.  A server of twice the weight is the top choice of twice as
    many users; removing a server changes nobody's order among the others.
    """
    digest = hashlib.blake2b(f"{aor}\0{serverId}".encode("utf-8"),
                             digest_size=8).digest()
    # A uniform value in (0, 1).
    h = (int.from_bytes(digest, "big") + 1) / (2 ** 64 + 2)
    return -weight / math.log(h)


def preference(aor, servers):
    """
    The ids of C{servers} (L{ServerRecord}s) in C{aor}'s rendezvous order.
    """
    return [s.id for s in sorted(
        servers, key=lambda s: (-score(aor, s.id, s.weight), s.id))]


@dataclass(frozen=True)
class Move:
    """
    One user to move.
    """

    aor: str
    old: object
    new: str
    weight: float = 1


@dataclass
class Plan:
    """
    What L{computePlan} decided.

    @ivar moves: the L{Move}s, each user at most once.
    @ivar before: server id to load (sum of user weights) now.
    @ivar after: server id to load once the moves are done.
    @ivar users: server id to number of users now.
    @ivar usersAfter: server id to number of users after.
    @ivar share: eligible server id to its fair share of the load.
    @ivar reasons: one line per server that made moves needed.
    @ivar why: server id to its line of C{reasons}: why its users move.
    """

    moves: list = field(default_factory=list)
    before: dict = field(default_factory=dict)
    after: dict = field(default_factory=dict)
    users: dict = field(default_factory=dict)
    usersAfter: dict = field(default_factory=dict)
    share: dict = field(default_factory=dict)
    reasons: list = field(default_factory=list)
    why: dict = field(default_factory=dict)

    def __bool__(self):
        return bool(self.moves)

    def describe(self, verbose=True, limit=None):
        """
        The plan for a person: reasons, the load before and after per
        server, and (with C{verbose}) one line per move.

        @return: a L{list} of lines.
        """
        lines = list(self.reasons) or ["the distribution is acceptable"]
        lines.append(f"{len(self.moves)} user(s) to move")
        ids = sorted(set(self.before) | set(self.after))
        lines.append(f"{'server':<16} {'users':>8} {'load':>10} "
                     f"{'-> users':>9} {'load':>10} {'share':>10}")
        for sid in ids:
            share = self.share.get(sid)
            shareText = f"{share:.1f}" if share is not None else "-"
            lines.append(
                f"{sid:<16} {self.users.get(sid, 0):>8} "
                f"{self.before.get(sid, 0):>10g} "
                f"{self.usersAfter.get(sid, 0):>9} "
                f"{self.after.get(sid, 0):>10g} {shareText:>10}")
        if verbose:
            moves = self.moves if limit is None else self.moves[:limit]
            for move in moves:
                lines.append(f"move {move.aor} {move.old} -> {move.new}")
            if limit is not None and len(self.moves) > limit:
                lines.append(f"... and {len(self.moves) - limit} more")
        return lines


def computePlan(servers, assignments, weights=None, balance=True,
                tolerance=DEFAULT_TOLERANCE, hold=()):
    """
    Decide who moves where (see the module docstring).

    @param servers: every L{ServerRecord}.
    @param assignments: mapping of normalised AOR to server id.
    @param weights: mapping of AOR to its weight (default 1 each).
    @param balance: also even out the load of the eligible servers (else
        only the users of ineligible servers move).
    @param tolerance: how far above its fair share a server may be before
        it sheds users.
    @param hold: ids of servers left out of balancing.
    @rtype: L{Plan}
    """
    weights = weights or {}
    records = {s.id: s for s in servers}
    eligible = [s for s in servers if s.state == ACTIVE and s.weight > 0]
    plan = Plan()
    load = {s.id: 0 for s in servers}
    users = {s.id: 0 for s in servers}
    members = {}
    for aor, sid in assignments.items():
        w = weights.get(aor, 1)
        load[sid] = load.get(sid, 0) + w
        users[sid] = users.get(sid, 0) + 1
        members.setdefault(sid, []).append(aor)
    plan.before = dict(load)
    plan.users = dict(users)
    total = sum(load.values())
    capacity = sum(s.weight for s in eligible)
    if not eligible:
        if any(load.values()):
            plan.reasons.append("no active server with a weight above 0: "
                                "nothing can move")
        plan.after = dict(load)
        plan.usersAfter = dict(users)
        return plan
    share = {s.id: total * s.weight / capacity for s in eligible}
    plan.share = share
    eligibleIds = set(share)
    moved = {}

    def place(aor, w, order, slack=1.0):
        for sid in order:
            if load[sid] + w <= share[sid] * slack + 1e-9 or load[sid] == 0 \
                    and w > share[sid]:
                return sid
        return min(order, key=lambda sid: (load[sid] / share[sid]
                                           if share[sid] else math.inf,
                                           order.index(sid)))

    # Users of ineligible servers must move.
    for sid in sorted(members):
        if sid in eligibleIds:
            continue
        record = records.get(sid)
        state = record.state if record else "unknown"
        if record is not None and record.state == ACTIVE:
            state = "weight 0"
        plan.reasons.append(f"{sid} is {state}: its {len(members[sid])} "
                            f"user(s) move")
        plan.why[sid] = plan.reasons[-1]
        for aor in sorted(members[sid]):
            w = weights.get(aor, 1)
            # Within the tolerance the user goes to its first choice: the
            # backup home its client was named, which may serve it already
            # (sipdist.pool.standby); it is not moved a second time.
            new = place(aor, w, preference(aor, eligible), 1 + tolerance)
            load[sid] -= w
            load[new] += w
            moved[aor] = Move(aor, sid, new, w)

    balanced = [s for s in eligible if s.id not in hold]
    if balance and balanced:
        if len(balanced) < len(eligible):
            # The held servers' load and capacity are left out.
            poolLoad = sum(load[s.id] for s in balanced)
            poolCapacity = sum(s.weight for s in balanced)
            share = {s.id: poolLoad * s.weight / poolCapacity
                     for s in balanced}
            eligible = balanced
        limit = {sid: share[sid] * (1 + tolerance) for sid in share}
        over = [sid for sid in sorted(share) if load[sid] > limit[sid] + 1e-9]
        shedding = set(over)
        for sid in over:
            plan.reasons.append(
                f"{sid} carries {load[sid]:g}, above its share "
                f"{share[sid]:.1f} by more than {tolerance:.0%}")
            plan.why[sid] = plan.reasons[-1]
            under = {o.id for o in eligible if load[o.id] < share[o.id]}
            if not under:
                continue
            candidates = []
            for aor in members.get(sid, ()):
                if aor in moved:
                    continue
                order = preference(aor, eligible)
                # Users preferring an under-loaded server to this one first.
                rank = next((i for i, o in enumerate(order) if o in under),
                            len(order))
                mine = order.index(sid)
                candidates.append((rank - mine, rank, aor, order))
            candidates.sort()
            for _, _, aor, order in candidates:
                if load[sid] <= share[sid] + 1e-9:
                    break
                w = weights.get(aor, 1)
                # A server that sheds users never receives any.
                targets = [o for o in order if o not in shedding
                           and load[o] + w <= share[o] + 1e-9]
                if not targets or load[sid] - w < share[sid] - w / 2 - 1e-9:
                    continue
                new = targets[0]
                load[sid] -= w
                load[new] += w
                moved[aor] = Move(aor, sid, new, w)
    plan.moves = sorted(moved.values(), key=lambda m: (m.old, m.aor))
    plan.after = load
    after = dict(users)
    for move in plan.moves:
        after[move.old] -= 1
        after[move.new] = after.get(move.new, 0) + 1
    plan.usersAfter = after
    return plan


def capPlan(plan, limit):
    """
    At most C{limit} of C{plan}'s moves, those off servers that are not
    eligible first (they must move); the load after is counted again.

    @return: a L{Plan} (C{plan} itself when it is within the limit).
    """
    if limit is None or len(plan.moves) <= limit:
        return plan
    must = [m for m in plan.moves if m.old not in plan.share]
    rest = [m for m in plan.moves if m.old in plan.share]
    moves = sorted((must + rest)[:limit], key=lambda m: (m.old, m.aor))
    after = dict(plan.before)
    usersAfter = dict(plan.users)
    for move in moves:
        after[move.old] -= move.weight
        after[move.new] = after.get(move.new, 0) + move.weight
        usersAfter[move.old] -= 1
        usersAfter[move.new] = usersAfter.get(move.new, 0) + 1
    reasons = list(plan.reasons) + [
        f"capped: {len(moves)} of {len(plan.moves)} moves now, the rest in "
        f"later rounds if still needed"]
    return Plan(moves, dict(plan.before), after, dict(plan.users),
                usersAfter, dict(plan.share), reasons, dict(plan.why))


async def readState(store):
    """
    The servers and assignments of a store, for L{computePlan}.

    @return: C{(servers, {aor: serverId})}.
    """
    servers = await store.listServers()
    assignments = {}
    for record in servers:
        for aor in await store.usersOf(record.id):
            assignments[aor] = record.id
    return servers, assignments


async def planFor(store, weights=None, balance=True,
                  tolerance=DEFAULT_TOLERANCE):
    """
    Read a store and compute its plan.
    """
    servers, assignments = await readState(store)
    return computePlan(servers, assignments, weights, balance, tolerance)


def applyPlan(store, plan, reactor, rate=None, batch=None, progress=None,
              moved=None):
    """
    Write a plan's moves to a store.

    @param rate: at most this many users per second (L{None}: all at once).
    @param batch: users per write (default: C{rate}, or all).
    @param progress: called with C{(done, total)} after each write.
    @param moved: called with the L{Move}s of each write once it is done
        (not those left alone because someone else moved the user).
    @return: L{Deferred} firing with the number of users moved.
    """
    return defer.ensureDeferred(_apply(store, plan, reactor, rate, batch,
                                       progress, moved))


async def _apply(store, plan, reactor, rate, batch, progress, moved):
    moves = list(plan.moves)
    total = len(moves)
    if batch is None:
        batch = max(1, int(rate)) if rate else max(1, total)
    done = 0
    for start in range(0, total, batch):
        chunk = moves[start:start + batch]
        written = []
        for move in chunk:
            # Someone else may have moved the user since the plan was made:
            # then it is theirs, and it is not moved a second time.
            current = await store.lookupUser(move.aor)
            if current == move.old:
                written.append(move)
        pairs = [(move.aor, move.new) for move in written]
        if pairs:
            await store.assignUsers(pairs)
            if moved is not None:
                moved(written)
        done += len(pairs)
        if progress is not None:
            progress(done, total)
        _log.info("moved {done} of {total} users", done=done, total=total)
        if rate and start + batch < total:
            await task.deferLater(reactor, len(chunk) / rate, lambda: None)
    return done
