"""
Assignment store benchmark: lookups per second and memory per user.

    /tmp/venv/bin/python bench/bench_store.py [--users 100000,1000000]
        [--ldap-users 100000] [--ldap-lookups 20000] [--no-ldap]

Memory and file stores: the store is filled with N users over 4 servers,
memory is measured with tracemalloc (bytes held by the store after loading,
divided by N), then lookups of random users are timed: with keys already in
normalised form (the hot path) and with keys that need parsing
(C{<sip:user@EXAMPLE.com;transport=tcp>}).

LDAP: a real slapd on loopback loaded with N users by slapadd; cold lookups
(each a search; 50 in flight) and cached lookups of the same users.
"""

import argparse
import gc
import os
import random
import sys
import tempfile
import time
import tracemalloc

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from sipdist.store import ServerRecord  # noqa: E402
from sipdist.store.file import FileAssignmentStore  # noqa: E402
from sipdist.store.memory import MemoryAssignmentStore  # noqa: E402

SERVERS = [ServerRecord(f"home{i}", f"sip:10.0.0.{i}:5060") for i in range(4)]


def users(n):
    return [(f"sip:user{i}@example.com", f"home{i % 4}") for i in range(n)]


def timeLookups(store, keys):
    start = time.perf_counter()
    lookup = store.lookupUser
    for key in keys:
        lookup(key)
    return len(keys) / (time.perf_counter() - start)


def measure(name, build, n, lookups=200000):
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    started = time.perf_counter()
    store = build(n)
    loaded = time.perf_counter() - started
    gc.collect()
    held = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    rng = random.Random(1)
    plain = [f"sip:user{rng.randrange(n)}@example.com" for _ in range(lookups)]
    fancy = [f"<sip:user{rng.randrange(n)}@EXAMPLE.com;transport=tcp>"
             for _ in range(lookups // 10)]
    assert store.lookupUser(plain[0]).result is not None
    print(f"{name:6} {n:>9} users: load {loaded:6.2f} s (traced), "
          f"{held / n:6.1f} bytes/user, "
          f"{timeLookups(store, plain):>10,.0f} lookups/s normalised, "
          f"{timeLookups(store, fancy):>9,.0f} lookups/s parsed")
    store.close()
    return store


def memoryStore(n):
    store = MemoryAssignmentStore()
    for record in SERVERS:
        store.addServer(record)
    store.assignUsers(users(n))
    return store


def fileStore(directory):
    def build(n):
        path = os.path.join(directory, f"a{n}.conf")
        if not os.path.exists(path):
            with open(path, "w") as f:
                for r in SERVERS:
                    f.write(f"server {r.id} {r.uri}\n")
                for aor, sid in users(n):
                    f.write(f"user {aor} {sid}\n")
        return FileAssignmentStore(None, path, poll=0)
    return build


def ldapBench(n, lookups):
    from twisted.internet.defer import DeferredSemaphore, gatherResults
    from twisted.internet.task import react

    from sipdist.store.ldap import LDAPAssignmentStore, parseLDAPString
    from tests import slapd

    reason = slapd.missing()
    if reason:
        print(f"ldap: skipped, {reason}")
        return
    server = slapd.Slapd()
    try:
        started = time.perf_counter()
        entries = [slapd.BASE_LDIF]
        for r in SERVERS:
            entries.append(
                f"\ndn: sipdistServerId={r.id},ou=servers,{slapd.SUFFIX}\n"
                f"objectClass: sipdistServer\nsipdistServerId: {r.id}\n"
                f"sipdistServerURI: {r.uri}\n")
        for aor, sid in users(n):
            entries.append(
                f"\ndn: sipdistAOR={aor},ou=users,{slapd.SUFFIX}\n"
                f"objectClass: sipdistUser\nsipdistAOR: {aor}\n"
                f"sipdistHomeServer: {sid}\n")
        server.load("".join(entries))
        server.start()
        print(f"ldap   {n:>9} users: slapadd and start "
              f"{time.perf_counter() - started:.1f} s")
        conf = os.path.join(server.directory, "store.conf")
        with open(conf, "w") as f:
            f.write(f"bindDN = {slapd.ROOT_DN}\npassword = {slapd.ROOT_PW}\n")

        async def main(reactor):
            store = LDAPAssignmentStore(reactor, parseLDAPString(
                f"{server.url}/{slapd.SUFFIX}?config={conf}&refresh=0"
                f"&ttl=3600&timeout=30"))
            rng = random.Random(2)
            keys = [f"sip:user{i}@example.com"
                    for i in rng.sample(range(n), min(lookups, n))]
            semaphore = DeferredSemaphore(50)
            t = time.perf_counter()
            results = await gatherResults(
                [semaphore.run(store.lookupUser, k) for k in keys])
            cold = len(keys) / (time.perf_counter() - t)
            assert all(results), "a cold lookup found nothing"
            t = time.perf_counter()
            for _ in range(10):
                for k in keys:
                    store.lookupUser(k)
            cached = 10 * len(keys) / (time.perf_counter() - t)
            print(f"ldap   {n:>9} users: {cold:>10,.0f} lookups/s cold "
                  f"({len(keys)} distinct, 50 in flight), "
                  f"{cached:>10,.0f} lookups/s cached")
            await store.close()

        react(lambda r: __import__("twisted.internet.defer", fromlist=["x"])
              .ensureDeferred(main(r)))
    finally:
        server.cleanup()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--users", default="100000,1000000")
    parser.add_argument("--ldap-users", type=int, default=100000)
    parser.add_argument("--ldap-lookups", type=int, default=20000)
    parser.add_argument("--no-ldap", action="store_true")
    args = parser.parse_args()
    counts = [int(x) for x in args.users.split(",") if x]
    print(f"Python {sys.version.split()[0]} "
          f"({sys.implementation.name}) on {sys.platform}")
    with tempfile.TemporaryDirectory() as directory:
        for n in counts:
            measure("memory", memoryStore, n)
            measure("file", fileStore(directory), n)
    if not args.no_ldap:
        try:
            ldapBench(args.ldap_users, args.ldap_lookups)
        except SystemExit:
            pass


if __name__ == "__main__":
    main()
