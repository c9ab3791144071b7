# -*- test-case-name: tests.test_store_ldap_replica -*-
"""
Measurements on a pair of replicating slapd providers (see
L{tests.slapd.replicatedPair}), shared by C{tests.test_store_ldap_replica}
and C{bench/bench_ldap_replica.py}: how long a move made through one
provider takes to be read from the other, and what lookups see while the
provider in use is killed.
"""

import socket
import time

from twisted.internet import defer, task
from twisted.internet.defer import inlineCallbacks

from sipdist.store.ldap import LDAPAssignmentStore, parseLDAPString
from tests import slapd

# Store options making every lookup of an uncached user go to the directory.
UNCACHED = "&refresh=0&ttl=0&negativeTtl=0&maxStale=0"


def serversLDIF(ports=None):
    """
    The entries of servers C{home1} and C{home2} on loopback.

    @param ports: server name to UDP port (default: ports nothing listens
        on, for tests that never send to the servers).
    """
    ports = ports or {"home1": 5070, "home2": 5080}
    return "".join(f"""
dn: sipdistServerId={h},ou=servers,{slapd.SUFFIX}
objectClass: sipdistServer
sipdistServerId: {h}
sipdistServerURI: sip:127.0.0.1:{port}
""" for h, port in sorted(ports.items()))


def usersLDIF(names, home):
    return "".join(f"""
dn: sipdistAOR=sip:{n}@example.com,ou=users,{slapd.SUFFIX}
objectClass: sipdistUser
sipdistAOR: sip:{n}@example.com
sipdistHomeServer: {home}
""" for n in names)


def storeFor(reactor, servers, config, options=UNCACHED):
    """
    An LDAP store reading C{servers} (L{slapd.Slapd}s, in order), bound
    with the config file C{config}.
    """
    hosts = ",".join(f"127.0.0.1:{s.port}" for s in servers)
    return LDAPAssignmentStore(reactor, parseLDAPString(
        f"ldap://{hosts}/{slapd.SUFFIX}?config={config}{options}"))


@inlineCallbacks
def waitFor(reactor, store, aor, expected, bound=10.0, step=0.005):
    """
    Look C{aor} up through C{store} until the answer is C{expected}.

    @return: L{Deferred} firing with the seconds it took, or with L{None}
        if it was not seen within C{bound} seconds.
    """
    start = time.monotonic()
    while time.monotonic() - start < bound:
        try:
            found = yield store.lookupUser(aor)
        except Exception:
            found = None
        if found == expected:
            return time.monotonic() - start
        yield task.deferLater(reactor, step, lambda: None)
    return None


@inlineCallbacks
def replicationDelay(reactor, writer, reader, aor, home):
    """
    Move C{aor} to C{home} through C{writer} (a store on one provider) and
    wait until C{reader} (a store on the other) reads it.

    @return: L{Deferred} firing with the seconds from the write's answer
        until the other provider gave the new home, or L{None} if it never
        did within 10 seconds.
    """
    yield writer.moveUser(aor, home)
    return (yield waitFor(reactor, reader, aor, home))


@inlineCallbacks
def lookupsThroughOutage(reactor, store, aors, expected, kill, killAfter,
                         interval=0.01, parallel=1):
    """
    Look each of C{aors} up once (all uncached), C{parallel} at a time, a
    batch every C{interval} seconds, calling C{kill()} once C{killAfter}
    lookups have been started: with C{parallel} 1 between two lookups,
    else right after sending the batch that reaches C{killAfter} (its
    searches are then in flight).

    @return: L{Deferred} firing with a L{dict}: C{lookups}, C{failed} (a
        failure or a wrong answer), C{duringOutage} (lookups not answered
        before the kill), C{failedDuringOutage}, C{failover} (seconds from
        the kill until the first lookup answered after it), C{slowest}
        (the longest lookup, seconds) and C{errors} (the first few).
    """
    result = {"lookups": 0, "failed": 0, "duringOutage": 0,
              "failedDuringOutage": 0, "failover": None, "slowest": 0.0,
              "errors": []}
    killed = []

    @inlineCallbacks
    def one(aor):
        started = time.monotonic()
        result["lookups"] += 1
        try:
            found = yield store.lookupUser(aor)
            error = None if found == expected else \
                f"{aor}: {found!r}, not {expected!r}"
        except Exception as e:
            error = f"{aor}: {e}"
        now = time.monotonic()
        result["slowest"] = max(result["slowest"], now - started)
        if killed:
            result["duringOutage"] += 1
        if error is not None:
            result["failed"] += 1
            if killed:
                result["failedDuringOutage"] += 1
            if len(result["errors"]) < 5:
                result["errors"].append(error)
        elif killed and result["failover"] is None:
            result["failover"] = now - killed[0]

    for first in range(0, len(aors), parallel):
        batch = aors[first:first + parallel]
        if not killed and parallel == 1 and first == killAfter:
            kill()
            killed.append(time.monotonic())
        pending = [one(aor) for aor in batch]
        if not killed and first + len(batch) > killAfter:
            kill()
            killed.append(time.monotonic())
        for d in pending:
            yield d
        yield task.deferLater(reactor, interval, lambda: None)
    return result


# SIP logins through a pool whose servers read the replicated pair.

HOMES = ("home1", "home2")


def freeUDPPort():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def loginPairLDIF(ports, users, home="home1"):
    """
    The directory of a login pool: the base entries, the servers of
    C{ports} (name to UDP port) and C{users} assigned to C{home}.
    """
    return slapd.BASE_LDIF + serversLDIF(ports) + usersLDIF(users, home)


@inlineCallbacks
def startLoginPool(reactor, case, servers, config, ports, users):
    """
    Start a distributor and C{home1}, C{home2} on loopback UDP (the ports
    of C{ports}, which the directory's server entries name), each with its
    own uncached LDAP store reading C{servers} (L{slapd.Slapd}s, in
    order), as twistd builds them.

    @param case: what stops the servers and closes the stores (its
        C{addCleanup}).
    @return: L{Deferred} firing with the L{tests.distribution_helpers.Pool}.
    """
    from tests.distribution_helpers import Pool
    pool = Pool(case, None, users, {})
    for name, role in (("distributor", "distributor"), ("home1", "home"),
                       ("home2", "home")):
        store = storeFor(reactor, servers, config)
        case.addCleanup(store.close)
        yield pool.start(name, role, register=False, store=store,
                         listen=[f"udp:{ports[name]}:interface=127.0.0.1"])
    return pool


@inlineCallbacks
def startAgents(reactor, case, users):
    """
    A user agent of the client library per user (its own UDP port on
    loopback, T1 0.05), stopped when C{case} ends.

    @return: L{Deferred} firing with a L{dict} of user name to agent.
    """
    from sipdist.client.core import UserAgent
    from tests.distribution_helpers import DOMAIN, PASSWORD
    agents = {}
    for user in users:
        ua = UserAgent(reactor, f"{user}@{DOMAIN}", PASSWORD,
                       listen="udp:0:interface=127.0.0.1", T1=0.05)
        case.addCleanup(ua.stop)
        yield ua.start()
        agents[user] = ua
    return agents


@inlineCallbacks
def login(ua, server):
    """
    One full login of C{ua} from C{server} (a new Call-ID: the distributor
    and the home each authenticate it and look the user up); a login that
    fails is tried once more at once, as the client's L{Registration}
    does (after a pause) when a login fails.

    @return: L{Deferred} firing with C{(target, tries, error)}: the
        L{sipdist.client.discovery.Target} that registered the user (or
        L{None}), the number of logins made (1 or 2) and the last
        failure's text (or L{None}).
    """
    from sipdist.client.discovery import ServerLocator
    from sipdist.client.login import Login, LoginFailed
    error = None
    for tries in (1, 2):
        try:
            result = yield Login(ua, ServerLocator(None), server,
                                 expires=300).run()
        except LoginFailed as e:
            error = str(e)
            continue
        return result.target, tries, None
    return None, 2, error


def watchStaleAnswers(bound=1000):
    """
    Record the lookups that LDAP stores answer from their expired cache
    because the directory failed (the store's log event "serving {aor}
    from cache"): such a login did not reach the directory.

    @return: C{(aors, stop)}: the list the AORs are appended to (at most
        C{bound}) and what stops recording.
    """
    from twisted.logger import globalLogPublisher
    seen = []

    def observer(event):
        if (str(event.get("log_format", "")).startswith(
                "serving {aor} from cache") and len(seen) < bound):
            seen.append(event.get("aor"))

    globalLogPublisher.addObserver(observer)
    return seen, lambda: globalLogPublisher.removeObserver(observer)


@inlineCallbacks
def loginsThroughOutage(reactor, pool, agents, kill, duration=4.0,
                        killAt=2.0, pause=0.2, home="home1"):
    """
    Every agent logs in again and again through the pool's distributor
    (a full login, then C{pause} seconds; the agents' first logins spread
    over C{pause}) for C{duration} seconds;
    C{kill()} is called C{killAt} seconds in.  A login counts as failed
    when it does not end registered at C{home} even after the one retry
    of L{login}.

    @return: L{Deferred} firing with a L{dict}: C{logins}, C{retried}
        (logins that needed the retry), C{failed}, C{duringOutage}
        (logins started after the kill), C{failedDuringOutage},
        C{failover} (seconds from the kill until the first login started
        after it was registered), C{slowest} (the longest login, retry
        included, seconds), C{stale} (store lookups answered from the
        expired cache because the directory failed, see
        L{watchStaleAnswers}) and C{errors} (the first few).
    """
    server = pool.uris["distributor"]
    expected = ("127.0.0.1", int(pool.uris[home].rsplit(":", 1)[1]))
    result = {"logins": 0, "retried": 0, "failed": 0, "duringOutage": 0,
              "failedDuringOutage": 0, "failover": None, "slowest": 0.0,
              "errors": []}
    killed = []

    def killNow():
        kill()
        killed.append(time.monotonic())

    stale, stopWatching = watchStaleAnswers()
    timer = reactor.callLater(killAt, killNow)
    start = time.monotonic()

    @inlineCallbacks
    def steady(index, user, ua):
        # Staggered: the logins of the agents spread over the pause.
        yield task.deferLater(reactor, pause * index / len(agents),
                              lambda: None)
        while time.monotonic() - start < duration:
            began = time.monotonic()
            after = bool(killed)
            target, tries, error = yield login(ua, server)
            now = time.monotonic()
            if error is None and target.address != expected:
                error = f"{user}: registered at {target}, not at {home}"
            result["logins"] += 1
            result["retried"] += tries - 1
            result["slowest"] = max(result["slowest"], now - began)
            if after:
                result["duringOutage"] += 1
            if error is not None:
                result["failed"] += 1
                if after:
                    result["failedDuringOutage"] += 1
                if len(result["errors"]) < 5:
                    result["errors"].append(f"{user}: {error}")
            elif after and result["failover"] is None:
                result["failover"] = now - killed[0]
            yield task.deferLater(reactor, pause, lambda: None)

    try:
        yield defer.gatherResults(
            [steady(i, user, ua)
             for i, (user, ua) in enumerate(sorted(agents.items()))],
            consumeErrors=True)
    finally:
        stopWatching()
        if timer.active():
            timer.cancel()
    result["killed"] = bool(killed)
    result["stale"] = len(stale)
    return result


@inlineCallbacks
def moveSeenByLogins(reactor, pool, writer, ua, aor, home, bound=10.0):
    """
    Move C{aor} to C{home} through C{writer} (a store on one provider) and
    log C{ua} in through the pool's distributor until it is registered at
    C{home} (the distributor and the homes read the other provider).

    @return: L{Deferred} firing with the seconds from the write's answer
        until the first login registered at C{home} was answered (the
        time of that login included), or L{None} if none was within
        C{bound} seconds.
    """
    server = pool.uris["distributor"]
    expected = ("127.0.0.1", int(pool.uris[home].rsplit(":", 1)[1]))
    yield writer.moveUser(aor, home)
    start = time.monotonic()
    while time.monotonic() - start < bound:
        target, _, _ = yield login(ua, server)
        if target is not None and target.address == expected:
            return time.monotonic() - start
        yield task.deferLater(reactor, 0.005, lambda: None)
    return None


STEADY = [f"s{i:02d}" for i in range(20)]
MOVER = "mover"


@inlineCallbacks
def loginFailover(reactor, case, config, users=STEADY, duration=4.0,
                  killAt=2.0, moveAt=1.0):
    """
    The directory failover scenario at the level of SIP logins: a
    replicated pair of providers holding C{users} and a mover on
    C{home1}; a distributor and two homes whose uncached stores read
    provider 1, then provider 2; C{users} logging in steadily (see
    L{loginsThroughOutage}) for C{duration} seconds with provider 1
    killed (SIGKILL) C{killAt} seconds in; at C{moveAt} seconds the mover
    moved to C{home2} through a store on provider 2 (see
    L{moveSeenByLogins}).  Everything is stopped by C{case}'s cleanups.

    @param config: the LDAP store config file (bind DN and password).
    @return: L{Deferred} firing with C{(figures, moveDelay, first)}: the
        figures of L{loginsThroughOutage}, the seconds of
        L{moveSeenByLogins} (or L{None}) and provider 1 (L{slapd.Slapd}).
    """
    ports = {name: freeUDPPort() for name in ("distributor",) + HOMES}
    everybody = list(users) + [MOVER]
    first, second = slapd.replicatedPair(case, loginPairLDIF(ports,
                                                             everybody))
    reader = storeFor(reactor, [second], config)
    case.addCleanup(reader.close)
    took = yield waitFor(reactor, reader, f"sip:{MOVER}@example.com",
                         "home1")
    if took is None:
        raise AssertionError("the second provider never replicated the "
                             "first's entries")
    pool = yield startLoginPool(reactor, case, [first, second], config,
                                ports, everybody)
    agents = yield startAgents(reactor, case, everybody)
    mover = agents.pop(MOVER)
    writer = storeFor(reactor, [second], config)
    case.addCleanup(writer.close)
    moved = task.deferLater(reactor, moveAt, moveSeenByLogins, reactor,
                            pool, writer, mover, f"sip:{MOVER}@example.com",
                            "home2")
    figures, delay = yield defer.gatherResults(
        [loginsThroughOutage(reactor, pool, agents, first.kill,
                             duration=duration, killAt=killAt),
         moved], consumeErrors=True)
    return figures, delay, first
