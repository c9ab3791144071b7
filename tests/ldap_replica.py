# -*- test-case-name: tests.test_store_ldap_replica -*-
"""
Measurements on a pair of replicating slapd providers (see
L{tests.slapd.replicatedPair}), shared by C{tests.test_store_ldap_replica}
and C{bench/bench_ldap_replica.py}: how long a move made through one
provider takes to be read from the other, and what lookups see while the
provider in use is killed.
"""

import time

from twisted.internet import task
from twisted.internet.defer import inlineCallbacks

from sipdist.store.ldap import LDAPAssignmentStore, parseLDAPString
from tests import slapd

# Store options making every lookup of an uncached user go to the directory.
UNCACHED = "&refresh=0&ttl=0&negativeTtl=0&maxStale=0"


def serversLDIF():
    return "".join(f"""
dn: sipdistServerId={h},ou=servers,{slapd.SUFFIX}
objectClass: sipdistServer
sipdistServerId: {h}
sipdistServerURI: sip:127.0.0.1:{port}
""" for h, port in (("home1", 5070), ("home2", 5080)))


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
