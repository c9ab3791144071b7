"""
The LDAP store on two OpenLDAP providers in multi-provider replication
(syncrepl, syncprov), real slapd processes on loopback:

    .venv/bin/python bench/bench_ldap_replica.py [MOVES]
    .venv/bin/python bench/bench_ldap_replica.py --logins

Prints how long a move written through one provider takes to be read
from the other (MOVES moves each way, default 20: median and maximum),
with databases that sync each write to disk (as in production) and
without (C{dbnosync}, as the tests run them); then what a store given
both providers sees while the one in use is killed with SIGKILL: 200
lookups of distinct users (each a directory search), one every 10 ms, the
provider killed after 50; then again with 8 lookups at a time, killed
while a batch is in flight; then with the provider stopped by SIGSTOP
instead (a hung server: connections accepted, nothing answered;
C{timeout=0.5}).  For each: lookups during the outage, failed lookups,
failover time (from the kill to the first lookup answered after it) and
the slowest lookup.

With C{--logins}, only the directory failover test at the level of SIP
logins (L{tests.ldap_replica.loginFailover}, as
C{tests.test_store_ldap_replica_logins} runs it): a distributor and two
homes in-process on loopback UDP, each with an uncached store reading
provider 1 then provider 2; 20 users of the client library logging in
again and again (a full login each, new Call-ID, digest and a store
lookup at the distributor and at the home, 0.2 s between) for 4 s,
provider 1 killed with SIGKILL 2 s in, and a user moved to another home
through provider 2 1 s in.  Prints the logins, those during the outage,
those that needed the client's one retry and those that failed even
then, lookups answered from the expired cache (the directory failed
them), the failover time (from the kill to the first login started after
it and registered) and the time for the move to reach the servers
reading provider 1 (from the write's answer to the answer of the first
login registered at the new home, that login included).
"""

import os
import signal
import statistics
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from twisted.internet import task  # noqa: E402
from twisted.internet.defer import (  # noqa: E402
    inlineCallbacks, maybeDeferred)

from tests import slapd  # noqa: E402
from tests.ldap_replica import (  # noqa: E402
    UNCACHED, loginFailover, lookupsThroughOutage, replicationDelay,
    serversLDIF, storeFor, usersLDIF, waitFor)

NAMES = [f"u{i:03d}" for i in range(400)]


class Cleanups:
    """
    What L{slapd.replicatedPair} needs of a test case.
    """

    def __init__(self):
        self.calls = []

    def addCleanup(self, f, *args):
        self.calls.append((f, args))

    def fail(self, message):
        raise SystemExit(message)

    def run(self):
        while self.calls:
            f, args = self.calls.pop()
            f(*args)

    @inlineCallbacks
    def runWaiting(self):
        """
        Run the cleanups, each after the Deferred of the one before fired.
        """
        while self.calls:
            f, args = self.calls.pop()
            try:
                yield maybeDeferred(f, *args)
            except Exception as e:
                print(f"cleanup {f!r} failed: {e}")


def configFile(directory):
    path = os.path.join(directory, "ldap.conf")
    with open(path, "w") as f:
        f.write(f"bindDN = {slapd.ROOT_DN}\npassword = {slapd.ROOT_PW}\n")
    return path


@inlineCallbacks
def pair(reactor, cleanups, config, names=NAMES, sync=False):
    first, second = slapd.replicatedPair(
        cleanups, slapd.BASE_LDIF + serversLDIF() + usersLDIF(names, "home1"),
        sync)
    reader = storeFor(reactor, [second], config)
    took = yield waitFor(reactor, reader, f"sip:{names[-1]}@example.com",
                         "home1")
    reader.close()
    if took is None:
        raise SystemExit("the second provider never replicated")
    return first, second


def report(name, figures):
    failover = figures["failover"]
    print(f"{name}: {figures['lookups']} lookups, "
          f"{figures['duringOutage']} during the outage, "
          f"{figures['failed']} failed; failover "
          f"{'never' if failover is None else f'{failover * 1000:.1f} ms'}, "
          f"slowest lookup {figures['slowest'] * 1000:.1f} ms")
    for error in figures["errors"]:
        print(f"  {error}")


@inlineCallbacks
def main(reactor, moves=20):
    directory = tempfile.mkdtemp(prefix="sipdist-bench-")
    config = configFile(directory)
    cleanups = Cleanups()
    try:
        for sync in (False, True):
            yield moveDelays(reactor, cleanups, config, moves, sync)

        for parallel, offset in ((1, 0), (8, 200)):
            cleanups = Cleanups()
            first, second = yield pair(reactor, cleanups, config)
            store = storeFor(reactor, [first, second], config)
            figures = yield lookupsThroughOutage(
                reactor, store, [f"sip:{n}@example.com"
                                 for n in NAMES[offset:offset + 200]],
                "home1", first.kill, killAfter=50, parallel=parallel)
            store.close()
            cleanups.run()
            report(f"provider 1 killed, {parallel} lookup(s) at a time",
                   figures)

        cleanups = Cleanups()
        first, second = yield pair(reactor, cleanups, config)
        store = storeFor(reactor, [first, second], config,
                         UNCACHED + "&timeout=0.5")
        pid = first.process.pid
        cleanups.addCleanup(os.kill, pid, signal.SIGCONT)
        figures = yield lookupsThroughOutage(
            reactor, store, [f"sip:{n}@example.com" for n in NAMES[:200]],
            "home1", lambda: os.kill(pid, signal.SIGSTOP), killAfter=50)
        store.close()
        cleanups.run()
        report("provider 1 hung (SIGSTOP), timeout=0.5", figures)
    finally:
        cleanups.run()


@inlineCallbacks
def logins(reactor):
    """
    Print the figures of the directory failover test at the level of SIP
    logins.
    """
    directory = tempfile.mkdtemp(prefix="sipdist-bench-")
    cleanups = Cleanups()
    try:
        figures, delay, _ = yield loginFailover(reactor, cleanups,
                                                configFile(directory))
    finally:
        yield cleanups.runWaiting()
    failover = figures["failover"]
    print(f"SIP logins, provider 1 killed: {figures['logins']} logins by "
          f"20 users in 4 s, {figures['duringOutage']} during the outage, "
          f"{figures['retried']} retried once by the client, "
          f"{figures['failed']} failed even then, {figures['stale']} "
          f"lookups answered from the expired cache; failover "
          f"{'never' if failover is None else f'{failover * 1000:.1f} ms'}"
          f", slowest login {figures['slowest'] * 1000:.1f} ms")
    print(f"move written through provider 2, seen by a login through the "
          f"servers reading provider 1: "
          f"{'never' if delay is None else f'{delay * 1000:.1f} ms'}")
    for error in figures["errors"]:
        print(f"  {error}")


@inlineCallbacks
def moveDelays(reactor, cleanups, config, moves, sync):
    """
    Print the replication delays of C{moves} moves each way.
    """
    first, second = yield pair(reactor, cleanups, config, NAMES[:moves],
                               sync)
    try:
        one, two = storeFor(reactor, [first], config), storeFor(
            reactor, [second], config)
        for writer, reader, name in ((one, two, "provider 1 -> 2"),
                                     (two, one, "provider 2 -> 1")):
            delays = []
            for i in range(moves):
                home = "home2" if (i % 2 == 0) == (writer is one) else "home1"
                delay = yield replicationDelay(
                    reactor, writer, reader, f"sip:{NAMES[i]}@example.com",
                    home)
                delays.append(float("inf") if delay is None else delay)
            print(f"replication {name} ({'fsync' if sync else 'dbnosync'}):"
                  f" {moves} moves, median "
                  f"{statistics.median(delays) * 1000:.1f} ms, max "
                  f"{max(delays) * 1000:.1f} ms (write answered -> read on "
                  f"the other, polled every 5 ms)")
        one.close()
        two.close()
    finally:
        cleanups.run()


if __name__ == "__main__":
    if sys.argv[1:] == ["--logins"]:
        task.react(logins)
    moves = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    task.react(main, [moves])
