# -*- test-case-name: tests.test_monitor -*-
"""
Monitoring the pool and acting on it: health checks with C{OPTIONS}, load
figures from every home, and the policy of L{sipdist.pool.rebalance} applied
when the distribution is not acceptable.

Home servers report their load in every answer to an C{OPTIONS} addressed
to the server itself, in a C{Sipdist-Load} header field (L{loadFigures},
installed by L{installLoadReport})::

    Sipdist-Load: registered=1200;subscriptions=340;tps=57;transactions=12

(addresses-of-record with bindings, active subscriptions, transactions
created in the last second, transactions in progress).

The L{Monitor} runs in one distributor (C{twistd sipdist --role=distributor
--monitor}; enable it on one distributor of the pool only).  Every
C{interval} seconds it sends C{OPTIONS} to each server of the store.  It
tells overload from death:

  - I{any} response is a sign of life.  A C{2xx} makes the server C{up};
    any other response (a full transaction table answers C{503}, a flood
    gets C{503}s and C{429}s) makes it C{busy}: alive, left alone.  An
    answer that arrives after C{timeout} (the transaction goes on
    retransmitting until its own timer ends) counts as well: a slow server
    is busy, not dead;
  - a check I{fails} only on silence (no response within C{timeout}) or a
    connection failure.  A server is marked C{down} in the store after
    C{threshold} failed checks in a row spanning at least C{downAfter}
    seconds with no response at all meanwhile, late ones included;
  - a server the monitor marked down that answers C{recovery} checks in a
    row is marked C{active} again, and I{held}: the automatic balancing
    moves no user to it (nor from it), so its old users are not moved
    back; it gets users that must move anyway and the operator's new
    ones, and its old ones only through a deliberate C{sipdist rebalance}.
    The hold ends when it carries its share again;
  - then, if users are assigned to servers that are not active (C{down},
    C{draining}) or (with C{rebalance}) an active server carries more than
    its share, a plan is computed and applied (at most C{maxMoves} users
    per plan, the users that must move first; at most C{moveRate} users
    per second; at most C{drainRate} when users leave a draining server,
    which still serves them and whose clients all come back elsewhere).
    One plan is applied at a time, each user at most once; the next round
    looks again.  A plan moving users off a server that answers again is
    stopped.

Whether to read every assignment and compute a plan is decided from the
store's user counts (cheap on every provider): users on servers that are
not active, or an active server above its share counting users.  Heavy
users (C{weights}) are weighed in every plan, but an imbalance that only
the weights show is corrected by C{sipdist rebalance --weights}, not found
by the monitor.

Every running server learns of the moves through the store's watching; see
L{sipdist.services.subscriptions} for what a home does when its users leave.
"""

import os
from collections import deque
from dataclasses import dataclass, field

from twisted.application.internet import TimerService
from twisted.internet import defer
from twisted.internet.error import ConnectError, ConnectionLost
from twisted.logger import Logger

from sipdist.sip.message import Request, Via, formatNameAddr, newBranch, newTag
from sipdist.pool.rebalance import DEFAULT_TOLERANCE, applyPlan, capPlan, \
    computePlan, readState
from sipdist.store import ACTIVE, DOWN, DRAINING

LOAD_HEADER = "sipdist-load"
# Users per second moved off a draining server by default.
DRAIN_RATE = 50
# Users one plan of the monitor moves at most by default.
MAX_MOVES = 500
# Seconds a server must stay silent before it is marked down by default.
DOWN_AFTER = 10.0
# Moves the monitor remembers (for the status page), the last ones.
RECENT_MOVES = 50
UP = "up"
BUSY = "busy"
FAILING = "failing"
UNKNOWN = "unknown"


def loadFigures(service):
    """
    The load figures of a server, as a L{dict} of numbers.
    """
    figures = {}
    registrar = service.registrar
    if registrar is not None:
        figures["registered"] = registrar.count
    notifier = getattr(service, "notifier", None)
    if notifier is not None:
        figures["subscriptions"] = notifier.count
    stats = service.transactions.stats()
    figures["tps"] = stats.get("created_per_second", 0)
    figures["transactions"] = stats.get("active", 0)
    return figures


def formatLoad(figures):
    return ";".join(f"{k}={v}" for k, v in figures.items())


def parseLoad(value):
    """
    The figures of a C{Sipdist-Load} value; unreadable items are skipped.
    """
    figures = {}
    for item in (value or "").split(";"):
        name, _, number = item.partition("=")
        name = name.strip()
        try:
            figures[name] = float(number) if "." in number else int(number)
        except ValueError:
            continue
    return figures


def installLoadReport(service, config, reactor):
    """
    Make a home server (L{sipdist.roles.home}) report its load in its
    answers to C{OPTIONS} (see the module docstring).
    """
    server = service.server
    plain = server.optionsResponse

    def optionsResponse(request):
        response = plain(request)
        response.headers[LOAD_HEADER] = [formatLoad(loadFigures(service))]
        return response

    server.optionsResponse = optionsResponse


class ProbeFailed(Exception):
    """
    A server did not answer an C{OPTIONS} at all (silence, connection
    failure); the message says how.

    @ivar unreachable: whether it failed for want of the server (silence,
        a connection refused or not made) rather than for another reason
        (a bad URI, a TLS failure).
    """

    def __init__(self, message, unreachable=True):
        Exception.__init__(self, message)
        self.unreachable = unreachable


@dataclass
class Answer:
    """
    A response to a health check: the server is alive.

    @ivar load: the load figures it reported (maybe none).
    @ivar busy: L{None} for a C{2xx}, else the status line (C{"503
        Service Unavailable"}): alive but not well.
    """

    load: dict = field(default_factory=dict)
    busy: object = None


class Prober:
    """
    Sends C{OPTIONS} to servers through a transaction layer.

    @param fromURI: who the checks come from (C{sip:monitor@DOMAIN}).
    @param timeout: seconds to wait for a response before the check fails;
        the transaction goes on, and a later response is reported to the
        C{late} callback of L{probe}.
    """

    def __init__(self, reactor, transactions, transport, fromURI,
                 timeout=2.0):
        self._reactor = reactor
        self.transactions = transactions
        self.transport = transport
        self.fromURI = fromURI
        self.timeout = timeout
        self._callId = f"{newTag()}@sipdist-monitor"
        self._cseq = 0

    def probe(self, uri, late=None):
        """
        @param late: called with the L{Answer} of a response that arrives
            after the timeout.
        @return: L{Deferred} firing with an L{Answer} for any response,
            failing with L{ProbeFailed} on silence or a connection failure.
        """
        from sipdist.services.proxy import NextHopError, nextHopFor
        from sipdist.sip.uri import URIError, parseURI
        try:
            parsed = parseURI(uri)
            hop = nextHopFor(parsed)
        except (URIError, NextHopError, ValueError) as e:
            return defer.fail(ProbeFailed(f"bad URI {uri}: {e}",
                                          unreachable=False))
        self._cseq += 1
        request = Request("OPTIONS", parsed)
        headers = request.headers
        headers["max-forwards"] = ["70"]
        headers["from"] = [formatNameAddr(self.fromURI, {"tag": newTag()})]
        headers["to"] = [formatNameAddr(parsed)]
        headers["call-id"] = [self._callId]
        headers["cseq"] = [f"{self._cseq} OPTIONS"]
        headers["accept"] = ["application/sdp"]
        result = defer.Deferred()
        timeout = self.timeout

        def expired():
            if not result.called:
                result.errback(ProbeFailed(f"no answer in {timeout:g} s"))

        timer = self._reactor.callLater(timeout, expired)

        def answered(response):
            answer = Answer(parseLoad(response.header(LOAD_HEADER)))
            if not 200 <= response.code < 300:
                answer.busy = f"{response.code} {response.phrase}"
            if not result.called:
                timer.cancel()
                result.callback(answer)
            elif late is not None:
                late(answer)

        def failed(failure):
            if result.called:
                return
            timer.cancel()
            if failure.check(ProbeFailed):
                result.errback(failure)
            else:
                result.errback(ProbeFailed(
                    failure.getErrorMessage() or failure.type.__name__,
                    unreachable=bool(failure.check(ConnectError,
                                                   ConnectionLost))))

        d = self.transport.connect(*hop)
        d.addCallback(self._send, request)
        d.addCallbacks(answered, failed)
        d.addErrback(lambda f: None)
        return result

    def _send(self, flow, request):
        address = self.transport.localAddress(flow.transport) or ("0.0.0.0",
                                                                  0)
        host = address[0] if ":" not in address[0] else f"[{address[0]}]"
        via = Via(host, address[1], flow.transport)
        via.branch = newBranch()
        via.rportRequested = True
        request.headers["via"] = [via.toString()]
        return self.transactions.sendRequest(request, flow).deferred


class Health:
    """
    What the monitor knows of one server.

    @ivar status: C{unknown}, C{up}, C{busy} (answers, but not C{2xx}) or
        C{failing} (silent).
    @ivar failures: failed checks in a row.
    @ivar failingSince: when the first of them was sent, or L{None}.
    @ivar successes: answered checks in a row.
    @ivar load: the last load figures reported.
    @ivar problem: the last failure or busy answer, one line.
    @ivar lastSeen: when it last answered (reactor seconds), or L{None}.
    @ivar lastCheck: when the last check judged was sent, or L{None}.
    """

    def __init__(self):
        self.status = UNKNOWN
        self.failures = 0
        self.failingSince = None
        self.successes = 0
        self.load = {}
        self.problem = None
        self.lastSeen = None
        self.lastCheck = None


class Monitor(TimerService):
    """
    Health checks and rebalancing (see the module docstring).

    @param threshold: silent checks in a row before a server is marked
        down...
    @param downAfter: ...if they span at least this many seconds.
    @param recovery: answered checks in a row before a server this monitor
        marked down is marked active again.
    @param maxMoves: users one plan moves at most (L{None}: no limit).
    @param moveRate: users per second at most (L{None}: no limit);
        C{drainRate}: the same off a draining server.

    @ivar health: server id to L{Health}.
    @ivar markedDown: the servers this monitor marked down (only those
        are marked active again by it).
    @ivar held: the servers left out of automatic balancing since they
        came back from C{down}.
    @ivar plans: how many plans were applied; C{moved}: users moved.
    @ivar recent: the last L{RECENT_MOVES} users moved, oldest first, as
        L{dict}s: C{time} (reactor seconds), C{aor}, C{old}, C{new},
        C{reason} (the plan's line about C{old}).
    @ivar progress: C{(done, total)} of the plan being applied, or
        L{None} when none is.
    @ivar weightsPath: the C{--user-weights} file the C{weights} come from
        (read again by L{reloadWeights}), or C{None}.
    """

    _log = Logger()
    weightsPath = None
    _weightsStamp = None

    def __init__(self, reactor, store, prober, interval=5.0, threshold=3,
                 recovery=2, rebalance=True, moveRate=None,
                 tolerance=DEFAULT_TOLERANCE, weights=None,
                 drainRate=DRAIN_RATE, downAfter=DOWN_AFTER,
                 maxMoves=MAX_MOVES):
        self._reactor = reactor
        self.downAfter = downAfter
        self.maxMoves = maxMoves
        self.held = set()
        self._states = {}
        self.store = store
        self.prober = prober
        self.interval = interval
        self.threshold = threshold
        self.recovery = recovery
        self.rebalance = rebalance
        self.moveRate = moveRate
        self.drainRate = drainRate
        self.tolerance = tolerance
        self.weights = weights or {}
        self.health = {}
        self.markedDown = set()
        self.plans = 0
        self.moved = 0
        self.lastPlan = None
        self.recent = deque(maxlen=RECENT_MOVES)
        self.progress = None
        # TimerService runs _round every interval, on our reactor.
        TimerService.__init__(self, interval, self._round)
        self.clock = reactor
        self._checking = None
        self._applying = None

    def _round(self):
        # A round still running (slow store, long timeout) is not doubled.
        if self._checking is None:
            self._checking = d = defer.ensureDeferred(self.check())
            d.addErrback(lambda f: self._log.failure("monitor round", f))
            d.addBoth(self._roundDone)

    def _roundDone(self, _):
        self._checking = None

    async def check(self):
        """
        One round: probe every server, mark the failed ones down and the
        recovered ones active, and start a plan if one is needed.
        """
        servers = await self.store.listServers()
        known = {s.id for s in servers}
        for sid in list(self.health):
            if sid not in known:
                del self.health[sid]
                self.markedDown.discard(sid)
                self.held.discard(sid)
                self._states.pop(sid, None)
        for record in servers:
            # A server seen down and now active (marked so by us or by an
            # operator) is held out of automatic balancing.
            if (self._states.get(record.id) == DOWN
                    and record.state == ACTIVE):
                self._hold(record.id)
            self._states[record.id] = record.state
        sent = self._reactor.seconds()
        results = await defer.DeferredList(
            [self.prober.probe(s.uri, late=self._lateAnswer(s.id))
             for s in servers], consumeErrors=True)
        for record, (ok, result) in zip(servers, results):
            await self._judge(record, ok, result, sent)
        if self._applying is None:
            await self._maybePlan()

    def _hold(self, sid):
        if sid not in self.held:
            self.held.add(sid)
            self._log.info("{server} is back: it gets new users, its old "
                           "ones only by a deliberate rebalance",
                           server=sid)

    def _lateAnswer(self, sid):
        def late(answer):
            health = self.health.get(sid)
            if health is None:
                return
            # A response after the timeout: slow, not dead.
            self._log.info("{server} answered after the timeout: busy",
                           server=sid)
            health.lastSeen = self._reactor.seconds()
            health.failures = 0
            health.failingSince = None
            health.status = BUSY
            health.problem = answer.busy or "answers slowly"
        return late

    async def _judge(self, record, ok, result, sent):
        health = self.health.setdefault(record.id, Health())
        health.lastCheck = sent
        if ok:
            if not isinstance(result, Answer):
                result = Answer(result or {})
            if result.busy is not None:
                if health.status != BUSY:
                    self._log.info("{server} is busy ({answer}): alive, "
                                   "left alone", server=record.id,
                                   answer=result.busy)
                health.status = BUSY
                health.problem = result.busy
            else:
                if health.status == BUSY:
                    self._log.info("{server} answers 2xx again: up",
                                   server=record.id)
                health.status = UP
                health.problem = None
            if result.load:
                health.load = result.load
            health.failures = 0
            health.failingSince = None
            health.successes += 1
            health.lastSeen = self._reactor.seconds()
            if (record.state == DOWN and record.id in self.markedDown
                    and health.successes >= self.recovery):
                self._log.info("{server} answers again: marked active",
                               server=record.id)
                self.markedDown.discard(record.id)
                self._stopPlanFor(record.id)
                await self.store.updateServer(record.id, state=ACTIVE)
                self._states[record.id] = ACTIVE
                self._hold(record.id)
            return
        health.status = FAILING
        health.successes = 0
        health.failures += 1
        if health.failingSince is None:
            health.failingSince = sent
        health.problem = result.getErrorMessage()
        silent = self._reactor.seconds() - health.failingSince
        if (health.failures >= self.threshold and silent >= self.downAfter
                and record.state in (ACTIVE, DRAINING)):
            self._log.warn("{server} silent for {seconds:.0f} s, {count} "
                           "checks ({problem}): marked down",
                           server=record.id, seconds=silent,
                           count=health.failures, problem=health.problem)
            self.markedDown.add(record.id)
            await self.store.updateServer(record.id, state=DOWN)
            self._states[record.id] = DOWN
            self.held.discard(record.id)

    def _stopPlanFor(self, sid):
        """
        Stop a plan moving users off C{sid}, which answers again.
        """
        plan, applying = self.lastPlan, self._applying
        if applying is not None and plan is not None and any(
                m.old == sid for m in plan.moves):
            self._log.info("{server} answers again: the plan moving its "
                           "users is stopped", server=sid)
            applying.cancel()

    async def _maybePlan(self):
        servers = await self.store.listServers()
        counts = await self.store.countUsers()
        self._release(servers, counts)
        stranded = any(counts.get(s.id) for s in servers
                       if s.state != ACTIVE or s.weight == 0)
        balanced = [s for s in servers if s.id not in self.held]
        if not stranded and not (self.rebalance and _uneven(
                balanced, counts, self.tolerance)):
            return
        servers, assignments = await readState(self.store)
        plan = computePlan(servers, assignments, self.weights,
                           balance=self.rebalance, tolerance=self.tolerance,
                           hold=self.held)
        if not plan:
            return
        plan = capPlan(plan, self.maxMoves)
        for line in plan.describe(verbose=False):
            self._log.info("plan: {line}", line=line)
        self.lastPlan = plan
        self.plans += 1
        rate = self.moveRate
        draining = {s.id for s in servers if s.state == DRAINING}
        if self.drainRate and any(m.old in draining for m in plan.moves):
            # Users leaving a running server: their clients all come back
            # at the new homes, so at a bounded rate.
            rate = min(rate or self.drainRate, self.drainRate)
        self.progress = (0, len(plan.moves))
        self._applying = d = applyPlan(
            self.store, plan, self._reactor, rate=rate,
            progress=self._progressed, moved=self._recordMoves(plan))
        d.addCallback(self._applied)
        d.addErrback(self._planFailed)
        d.addBoth(self._doneApplying)

    def _release(self, servers, counts):
        """
        End the hold of servers that carry their share again (counting
        users) or are no longer active.
        """
        if not self.held:
            return
        eligible = [s for s in servers if s.state == ACTIVE and s.weight > 0]
        capacity = sum(s.weight for s in eligible)
        total = sum(counts.get(s.id, 0) for s in servers)
        for s in servers:
            if s.id not in self.held:
                continue
            share = total * s.weight / capacity if capacity else 0
            if s.state != ACTIVE or counts.get(s.id, 0) >= (
                    1 - self.tolerance) * share:
                self.held.discard(s.id)
                self._log.info("{server} carries its share again: balanced "
                               "as the others", server=s.id)

    def _progressed(self, done, total):
        self.progress = (done, total)

    def _recordMoves(self, plan):
        def moved(moves):
            now = self._reactor.seconds()
            for move in moves:
                self.recent.append({
                    "time": now, "aor": move.aor, "old": move.old,
                    "new": move.new, "reason": plan.why.get(move.old, "")})
        return moved

    def _applied(self, count):
        self.moved += count
        self._log.info("moved {count} users", count=count)

    def _planFailed(self, failure):
        if failure.check(defer.CancelledError):
            return
        self._log.failure("applying a plan", failure)

    def _doneApplying(self, _):
        self._applying = None
        self.progress = None

    def status(self):
        """
        @return: server id to a L{dict} of its health and load.
        """
        return {sid: {"status": h.status, "failures": h.failures,
                      "problem": h.problem, "load": dict(h.load),
                      "held": sid in self.held}
                for sid, h in self.health.items()}


def _uneven(servers, counts, tolerance):
    """
    Whether, counting users (not weights), an active server carries more
    than its share by more than C{tolerance}: a cheap check before
    reading every assignment.
    """
    eligible = [s for s in servers if s.state == ACTIVE and s.weight > 0]
    capacity = sum(s.weight for s in eligible)
    total = sum(counts.get(s.id, 0) for s in servers)
    if not capacity or not total:
        return False
    return any(counts.get(s.id, 0) > (1 + tolerance) * total * s.weight
               / capacity + 1 for s in eligible)


def installMonitor(service, config, reactor):
    """
    Start a L{Monitor} in a store role (L{sipdist.roles.base}) run with
    C{--monitor}; it sends its checks through the server's transport.
    """
    if not config.get("monitor") or service.store is None:
        return
    from sipdist.sip.uri import parseURI
    prober = Prober(
        reactor, service.transactions, service.transport,
        parseURI(f"sip:monitor@{config['domain']}"),
        timeout=config.get("monitor-timeout", 2.0))
    weights = {}
    weightsPath = config.get("user-weights")
    if weightsPath:
        stamp = _fileStamp(weightsPath)
        weights = readWeights(weightsPath)
    monitor = Monitor(
        reactor, service.store, prober,
        interval=config.get("monitor-interval", 5.0),
        threshold=config.get("monitor-threshold", 3),
        recovery=config.get("monitor-recovery", 2),
        rebalance=config.get("auto-rebalance", True),
        moveRate=config.get("move-rate"), weights=weights,
        drainRate=config.get("drain-rate", DRAIN_RATE),
        downAfter=config.get("monitor-down-after", DOWN_AFTER),
        maxMoves=config.get("max-moves", MAX_MOVES))
    if weightsPath:
        monitor.weightsPath = weightsPath
        monitor._weightsStamp = stamp
    monitor.setServiceParent(service)
    service.monitor = monitor


def _fileStamp(path):
    try:
        info = os.stat(os.path.expanduser(path))
    except OSError:
        return None
    return (info.st_size, info.st_mtime_ns, info.st_ino)


def reloadWeights(monitor):
    """
    Read the monitor's C{--user-weights} file again if it changed (on
    C{SIGHUP}); the next plans weigh users by it.

    @return: whether new weights were taken.
    @raise ValueError: the file changed but cannot be read or has a bad
        line (one line saying what): the weights in use stay, and the
        file is not read again until it changes again.
    """
    path = monitor.weightsPath
    if not path:
        return False
    stamp = _fileStamp(path)
    if stamp == monitor._weightsStamp:
        return False
    monitor._weightsStamp = stamp
    monitor.weights = readWeights(path)
    return True


def readWeights(path):
    """
    Per-user weights from a file of C{AOR WEIGHT} lines (C{#} comments).

    @raise ValueError: one line saying what is wrong.
    """
    from sipdist.store import InvalidValue, aorKey
    weights = {}
    try:
        with open(os.path.expanduser(path), encoding="utf-8") as f:
            lines = f.read().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"cannot read {path}: "
                         f"{getattr(e, 'strerror', None) or e}") from None
    for number, line in enumerate(lines, 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        try:
            if len(parts) != 2:
                raise ValueError("expected AOR WEIGHT")
            weight = float(parts[1])
            if not 0 < weight <= 1e6:
                raise ValueError("weight must be above 0, at most 1000000")
            weights[aorKey(parts[0])] = weight
        except (ValueError, InvalidValue) as e:
            raise ValueError(f"{path}:{number}: {e}") from None
    return weights
