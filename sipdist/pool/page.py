# -*- test-case-name: tests.test_page -*-
"""
The operator's page of the pool, C{GET /} on the C{--status-listen}
listener: one HTML document, rendered on the server, readable without
JavaScript (it has none: a C{meta} refresh reloads it every
L{REFRESH} seconds), with

  - the servers of the assignment store: state, weight, users assigned,
    and, where the monitor runs, health, the load each server reported
    and when it last answered;
  - the distribution as a picture: one bar per server (users now, its
    fair share marked, the users after the plan outlined), inline SVG;
  - the plan being applied by the monitor (done of total) and its last
    moves (L{sipdist.pool.monitor.RECENT_MOVES} at most, newest first),
    each with the plan's reason;
  - the plan C{sipdist rebalance --dry-run} would carry out now (the
    monitor's weights and tolerance), computed without side effects.

What the page shows is read by L{PoolView}, at most once every
L{SNAPSHOT_TTL} seconds however often the page is loaded (concurrent loads
share one read), and the plan needs every assignment only for pools of at
most L{PLAN_MAX_USERS} users: a refresh cannot be used to load the store.

Every value that comes from the store or from the network (server ids,
URIs, user names, problems reported by peers) is HTML-escaped
(L{html.escape}), in the SVG too.
"""

import html
import time
from dataclasses import dataclass, field

from twisted.internet import defer
from twisted.logger import Logger
from twisted.web import resource, server

from sipdist.pool.rebalance import DEFAULT_TOLERANCE, computePlan, readState

# Seconds between two reloads of the page by the browser.
REFRESH = 5
# Seconds one reading of the store serves every page load.
SNAPSHOT_TTL = 5.0
# Users above which the page does not read every assignment for the plan.
PLAN_MAX_USERS = 20000
# Moves of the plan listed on the page at most.
PLAN_MOVES_SHOWN = 20
# Recent moves listed at most.
RECENT_SHOWN = 20
# Page loads waiting for one reading of the store at most.
MAX_WAITING = 100

_STATE_COLOURS = {"active": "#2e8b57", "draining": "#e69500",
                  "down": "#c0392b"}
_HEALTH_CLASSES = {"up": "ok", "busy": "warn", "failing": "bad"}


@dataclass
class ServerRow:
    """
    One server as the page shows it.

    @ivar health: the monitor's view (C{up}, C{busy}, C{failing},
        C{unknown}), or L{None} without a monitor here.
    @ivar lastSeen: reactor seconds of its last answer to the monitor, or
        L{None}; C{lastCheck}: of the monitor's last check of it.
    """

    id: str
    uri: str
    state: str
    weight: float
    users: int
    health: object = None
    problem: object = None
    load: dict = field(default_factory=dict)
    lastSeen: object = None
    lastCheck: object = None
    held: bool = False


@dataclass
class Snapshot:
    """
    Everything the page shows, read at C{taken} (reactor seconds).

    @ivar servers: L{ServerRow}s, or L{None} for a server without a store.
    @ivar plan: the dry-run L{Plan}, or L{None} (see C{planNote}).
    @ivar planNote: why there is no plan, or L{None}.
    @ivar progress: C{(done, total)} of the plan the monitor is applying,
        or L{None}; C{applying}: that plan's reasons.
    @ivar recent: the monitor's last moves (L{dict}s), oldest first.
    @ivar error: one line if the store could not be read, else L{None}.
    """

    name: str
    role: str
    taken: float
    ownLoad: dict = field(default_factory=dict)
    servers: object = None
    plan: object = None
    planNote: object = None
    tolerance: float = DEFAULT_TOLERANCE
    monitor: bool = False
    progress: object = None
    applying: list = field(default_factory=list)
    recent: list = field(default_factory=list)
    error: object = None


class PoolBusy(Exception):
    """
    Too many page loads are waiting for the store already.
    """


class PoolView:
    """
    Reads L{Snapshot}s of a running server, its store and its monitor,
    each serving every request for L{SNAPSHOT_TTL} seconds.  While the
    store is read, at most L{MAX_WAITING} loads wait for it; the next ones
    get the previous snapshot, or L{PoolBusy} if there is none.

    @param service: a L{sipdist.server.ServerService} (its C{store} and
        C{monitor}, when it has them, are read).
    """

    _log = Logger()

    def __init__(self, service, config, reactor, ttl=SNAPSHOT_TTL,
                 maxPlanUsers=PLAN_MAX_USERS):
        self.service = service
        self.config = config
        self._reactor = reactor
        self.ttl = ttl
        self.maxPlanUsers = maxPlanUsers
        self._cached = None
        self._waiting = None
        self.reads = 0

    def seconds(self):
        """
        The time now, in the reactor's seconds (what ages are counted to).
        """
        return self._reactor.seconds()

    def snapshot(self):
        """
        @return: L{Deferred} firing with a L{Snapshot} at most C{ttl}
            seconds old.
        """
        now = self._reactor.seconds()
        if self._cached is not None and now - self._cached.taken < self.ttl:
            return defer.succeed(self._cached)
        if self._waiting is not None:
            if len(self._waiting) >= MAX_WAITING:
                if self._cached is not None:
                    return defer.succeed(self._cached)
                return defer.fail(PoolBusy())
            result = defer.Deferred()
            self._waiting.append(result)
            return result
        result = defer.Deferred()
        self._waiting = [result]
        d = defer.ensureDeferred(self._read(now))
        d.addErrback(self._failed, now)
        d.addCallback(self._done)
        return result

    def _failed(self, failure, now):
        self._log.failure("reading the pool for the status page", failure)
        snapshot = self._base(now)
        snapshot.error = "the pool could not be read (see the log)"
        return snapshot

    def _done(self, snapshot):
        self._cached = snapshot
        waiting, self._waiting = self._waiting, None
        for d in waiting:
            d.callback(snapshot)

    def _base(self, now):
        from sipdist.pool.monitor import loadFigures
        return Snapshot(name=str(self.config.get("name") or ""),
                        role=str(self.config.get("role", "home")),
                        taken=now, ownLoad=loadFigures(self.service))

    async def _read(self, now):
        self.reads += 1
        snapshot = self._base(now)
        monitor = getattr(self.service, "monitor", None)
        weights, tolerance = {}, DEFAULT_TOLERANCE
        if monitor is not None:
            snapshot.monitor = True
            weights, tolerance = monitor.weights, monitor.tolerance
            snapshot.progress = monitor.progress
            if monitor.progress is not None and monitor.lastPlan is not None:
                snapshot.applying = list(monitor.lastPlan.reasons)
            snapshot.recent = list(monitor.recent)
        snapshot.tolerance = tolerance
        store = getattr(self.service, "store", None)
        if store is None:
            return snapshot
        try:
            servers = await store.listServers()
            counts = await store.countUsers()
        except Exception as e:
            self._log.failure("reading the pool for the status page")
            snapshot.error = f"the assignment store could not be read: " \
                             f"{type(e).__name__}"
            return snapshot
        health = monitor.health if monitor is not None else {}
        rows = []
        for record in servers:
            row = ServerRow(record.id, record.uri, record.state,
                            record.weight, counts.get(record.id, 0))
            known = health.get(record.id)
            if monitor is not None:
                row.health = known.status if known else "unknown"
                row.held = record.id in monitor.held
            if known is not None:
                row.problem = known.problem
                row.load = dict(known.load)
                row.lastSeen = known.lastSeen
                row.lastCheck = known.lastCheck
            rows.append(row)
        snapshot.servers = rows
        total = sum(counts.values())
        if total > self.maxPlanUsers:
            snapshot.planNote = (
                f"{total} users: more than {self.maxPlanUsers}, too many to "
                f"plan on each page load; run 'sipdist rebalance --dry-run'")
            return snapshot
        try:
            servers, assignments = await readState(store)
        except Exception as e:
            self._log.failure("reading the assignments for the status page")
            snapshot.planNote = f"the assignments could not be read: " \
                                f"{type(e).__name__}"
            return snapshot
        snapshot.plan = computePlan(servers, assignments, weights,
                                    tolerance=tolerance)
        return snapshot


def _e(value):
    """
    C{value} as text, HTML-escaped (quotes too: safe in attributes).
    """
    return html.escape(str(value), quote=True)


def _ago(now, then):
    if then is None:
        return "never"
    seconds = max(0.0, now - then)
    if seconds < 120:
        return f"{seconds:.0f} s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.0f} h ago"


def _figure(load, name):
    value = load.get(name)
    return "-" if value is None else _e(value)


_STYLE = """
body{font:13px/1.35 system-ui,sans-serif;margin:12px 20px;color:#222}
h1{font-size:19px;margin:0 0 2px}h2{font-size:15px;margin:14px 0 4px}
.meta{color:#666;margin:0}table{border-collapse:collapse}
th,td{padding:1px 8px 1px 0;text-align:left;vertical-align:top}
th{border-bottom:1px solid #999}td.n,th.n{text-align:right}
.ok{color:#2e8b57}.warn{color:#b36b00}.bad{color:#c0392b;font-weight:bold}
.state-down{color:#c0392b;font-weight:bold}.state-draining{color:#b36b00}
.note{color:#666;margin:2px 0}.error{color:#c0392b;font-weight:bold}
ul{margin:0;padding-left:20px}#plan table{margin-top:6px}
h3{font-size:14px;margin:10px 0 4px}
.columns{display:flex;flex-wrap:wrap;gap:4px 32px}
"""


def renderPage(snapshot, now=None, refresh=REFRESH):
    """
    The page of a L{Snapshot}, as UTF-8 bytes.

    @param now: reactor seconds the ages are counted to (default: when
        the snapshot was taken).
    """
    now = snapshot.taken if now is None else now
    stamp = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(now))
    own = ", ".join(f"{_e(k)} {_e(v)}" for k, v in snapshot.ownLoad.items())
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="refresh" content="{int(refresh)}">',
        f"<title>sipdist pool: {_e(snapshot.name)}</title>",
        f"<style>{_STYLE}</style></head><body>",
        f'<h1>sipdist pool <span class="note">seen from '
        f'{_e(snapshot.name)} ({_e(snapshot.role)})</span></h1>',
        f'<p class="meta">{stamp}; this page reloads every {int(refresh)} s'
        f'; this server: {own or "-"}; '
        f'<a href="/status">/status</a> (JSON), '
        f'<a href="/metrics">/metrics</a></p>',
    ]
    if snapshot.error:
        parts.append(f'<p class="error">{_e(snapshot.error)}</p>')
    if snapshot.servers is None:
        if not snapshot.error:
            parts.append('<p class="note">This server has no assignment '
                         'store: the pool is seen from a distributor.</p>')
    else:
        parts.append(_serversSection(snapshot, now))
        parts.append(_distributionSection(snapshot))
    parts.append('<div class="columns">')
    parts.append(_movesSection(snapshot, now))
    if snapshot.servers is not None:
        parts.append(_planSection(snapshot))
    parts.append("</div></body></html>\n")
    return "\n".join(parts).encode("utf-8")


def _serversSection(snapshot, now):
    monitor = snapshot.monitor
    rows = []
    for row in snapshot.servers:
        health = row.health if row.health is not None else "-"
        if row.held:
            health = f"{health} (held)"
        healthClass = _HEALTH_CLASSES.get(row.health, "")
        rows.append(
            f'<tr id="server-{_e(row.id)}"><td>{_e(row.id)}</td>'
            f'<td class="state-{_e(row.state)}">{_e(row.state)}</td>'
            f'<td class="{healthClass}">{_e(health)}</td>'
            f'<td class="n">{_e(row.users)}</td>'
            f'<td class="n">{_figure(row.load, "registered")}</td>'
            f'<td class="n">{_figure(row.load, "subscriptions")}</td>'
            f'<td class="n">{_figure(row.load, "tps")}</td>'
            f'<td class="n">{_figure(row.load, "transactions")}</td>'
            f'<td class="n">{_e(f"{row.weight:g}")}</td>'
            f'<td>{_e(_ago(now, row.lastCheck)) if monitor else "-"}</td>'
            f'<td>{_e(_ago(now, row.lastSeen)) if monitor else "-"}</td>'
            f'<td>{_e(row.uri)}</td>'
            f'<td>{_e(row.problem) if row.problem else ""}</td></tr>')
    total = sum(r.users for r in snapshot.servers)
    note = "" if snapshot.monitor else (
        '<p class="note">No monitor runs here: health and load are '
        'shown by the distributor running with --monitor.</p>')
    return (
        '<section id="servers"><h2>Servers</h2>'
        '<table><thead><tr><th>server</th><th>state</th><th>health</th>'
        '<th class="n">users</th><th class="n">registered</th>'
        '<th class="n">subscriptions</th><th class="n">tps</th>'
        '<th class="n">transactions</th><th class="n">weight</th>'
        '<th>checked</th><th>answered</th><th>uri</th><th>problem</th>'
        '</tr></thead>'
        f'<tbody>{"".join(rows)}</tbody></table>'
        f'<p>{total} user(s) on {len(snapshot.servers)} server(s).</p>'
        f'{note}</section>')


def _distributionSection(snapshot):
    """
    One bar per server: users now (filled, coloured by state), its fair
    share (a black mark) and the users after the plan (outlined).
    """
    servers = snapshot.servers
    if not servers:
        return ('<section id="distribution"><h2>Distribution</h2>'
                '<p class="note">No servers in the store.</p></section>')
    plan = snapshot.plan
    share = plan.share if plan is not None else {}
    after = plan.usersAfter if plan is not None and plan else {}
    top = max([r.users for r in servers] + list(share.values())
              + list(after.values()) + [1])
    left, width, height = 90, 480, 22
    rows = []
    for i, row in enumerate(servers):
        y = 8 + i * height
        colour = _STATE_COLOURS.get(row.state, "#888")
        length = width * row.users / top
        rows.append(
            f'<text x="0" y="{y + 15}">{_e(row.id)}</text>'
            f'<rect x="{left}" y="{y + 3}" width="{length:.1f}" height="14"'
            f' fill="{colour}"><title>{_e(row.id)}: {_e(row.users)} '
            f'user(s), {_e(row.state)}</title></rect>')
        if row.id in after:
            rows.append(
                f'<rect x="{left}" y="{y + 1}" '
                f'width="{width * after[row.id] / top:.1f}" height="18" '
                f'fill="none" stroke="#555" stroke-dasharray="4 2">'
                f'<title>after the plan: {_e(after[row.id])}</title></rect>')
        if row.id in share:
            x = left + width * share[row.id] / top
            rows.append(
                f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{y}" y2="{y + 20}" '
                f'stroke="#000" stroke-width="2"><title>fair share '
                f'{share[row.id]:.1f}</title></line>')
        rows.append(f'<text x="{left + width + 8}" y="{y + 15}">'
                    f'{_e(row.users)}</text>')
    total = 16 + len(servers) * height
    return (
        '<section id="distribution"><h2>Distribution</h2>'
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{left + width + 60}"'
        f' height="{total}" role="img" aria-label="users per server" '
        f'font-size="13" font-family="sans-serif">{"".join(rows)}</svg>'
        '<p class="note">Filled: users assigned now (green active, orange '
        'draining, red down); black mark: fair share; dashed outline: '
        'users after the plan below.</p></section>')


def _movesSection(snapshot, now):
    parts = ['<section id="moves"><h2>Moves</h2>']
    if not snapshot.monitor:
        parts.append('<p class="note">No monitor runs here.</p></section>')
        return "".join(parts)
    if snapshot.progress is not None:
        done, total = snapshot.progress
        reasons = "".join(f"<li>{_e(r)}</li>" for r in snapshot.applying)
        parts.append(f'<p id="in-progress">In progress: {_e(done)} of '
                     f'{_e(total)} user(s) moved.</p><ul>{reasons}</ul>')
    else:
        parts.append('<p id="in-progress">No plan being applied.</p>')
    recent = list(reversed(snapshot.recent))[:RECENT_SHOWN]
    if recent:
        rows = "".join(
            f'<tr><td>{_e(_ago(now, m["time"]))}</td><td>{_e(m["aor"])}</td>'
            f'<td>{_e(m["old"])}</td><td>{_e(m["new"])}</td>'
            f'<td>{_e(m["reason"])}</td></tr>' for m in recent)
        parts.append(
            f'<h3>Last moves ({len(recent)} of the last '
            f'{len(snapshot.recent)} remembered, newest first)</h3>'
            '<table id="recent"><thead><tr><th>when</th><th>user</th>'
            '<th>from</th><th>to</th><th>reason</th></tr></thead>'
            f'<tbody>{rows}</tbody></table>')
    else:
        parts.append('<p class="note">No user moved by this monitor yet.'
                     '</p>')
    parts.append("</section>")
    return "".join(parts)


def _planSection(snapshot):
    parts = ['<section id="plan"><h2>Plan of <code>sipdist rebalance '
             '--dry-run</code></h2>']
    plan = snapshot.plan
    if plan is None:
        parts.append(f'<p class="note">{_e(snapshot.planNote or "-")}</p>'
                     "</section>")
        return "".join(parts)
    parts.append(f'<p class="note">Computed now, nothing applied; tolerance '
                 f'{snapshot.tolerance:.0%}.</p>')
    if not plan:
        parts.append('<p id="plan-verdict">The distribution is acceptable: '
                     'nobody would move.</p></section>')
        return "".join(parts)
    reasons = "".join(f"<li>{_e(r)}</li>" for r in plan.reasons)
    parts.append(f'<p id="plan-verdict">{len(plan.moves)} user(s) would '
                 f'move:</p><ul>{reasons}</ul>')
    ids = sorted(set(plan.users) | set(plan.usersAfter))
    rows = "".join(
        f'<tr><td>{_e(sid)}</td><td class="n">{_e(plan.users.get(sid, 0))}'
        f'</td><td class="n">{_e(plan.usersAfter.get(sid, 0))}</td>'
        f'<td class="n">{_e(_share(plan, sid))}</td></tr>' for sid in ids)
    parts.append(
        '<table><thead><tr><th>server</th><th class="n">users</th>'
        '<th class="n">after</th><th class="n">share</th></tr></thead>'
        f'<tbody>{rows}</tbody></table>')
    moves = "".join(
        f'<tr><td>{_e(m.aor)}</td><td>{_e(m.old)}</td><td>{_e(m.new)}</td>'
        f'</tr>' for m in plan.moves[:PLAN_MOVES_SHOWN])
    more = len(plan.moves) - PLAN_MOVES_SHOWN
    parts.append(
        '<table id="plan-moves"><thead><tr><th>user</th><th>from</th>'
        f'<th>to</th></tr></thead><tbody>{moves}</tbody></table>'
        + (f'<p class="note">... and {more} more.</p>' if more > 0 else "")
        + "</section>")
    return "".join(parts)


def _share(plan, sid):
    share = plan.share.get(sid)
    return "-" if share is None else f"{share:.1f}"


class PoolPage(resource.Resource):
    """
    C{GET /}: the page of L{renderPage} over the snapshots of a
    L{PoolView}.
    """

    isLeaf = True
    _log = Logger()

    def __init__(self, view):
        resource.Resource.__init__(self)
        self.view = view

    def render_GET(self, request):
        gone = []
        request.notifyFinish().addErrback(lambda f: gone.append(True))

        def rendered(snapshot):
            if gone:
                return
            body = renderPage(snapshot, now=self.view.seconds())
            request.setHeader(b"content-type", b"text/html; charset=utf-8")
            request.write(body)
            request.finish()

        def failed(failure):
            code = 503 if failure.check(PoolBusy) else 500
            if code == 500:
                self._log.failure("rendering the status page", failure)
            if not gone:
                request.setResponseCode(code)
                request.setHeader(b"content-type", b"text/plain")
                request.write(b"the page could not be rendered\n")
                request.finish()

        request.setHeader(b"cache-control", b"no-store")
        request.setHeader(b"content-security-policy",
                          b"default-src 'none'; style-src 'unsafe-inline'; "
                          b"frame-ancestors 'none'; base-uri 'none'; "
                          b"form-action 'none'")
        request.setHeader(b"x-content-type-options", b"nosniff")
        request.setHeader(b"referrer-policy", b"no-referrer")
        self.view.snapshot().addCallback(rendered).addErrback(failed)
        return server.NOT_DONE_YET
