"""
A pool on loopback for the distribution tests: a distributor and home
servers sharing one memory store, built with L{buildServer} as twistd
builds them (router, notifier, monitor extensions included).
"""

import sys

from twisted.internet import defer

from sipdist.server import buildServer
from sipdist.store import ServerRecord
from sipdist.store.memory import MemoryAssignmentStore

PASSWORD = "wonderland"
SECRET = "pool-nonce-secret-0123456789abcdef"
# Short timers keep the tests short; PyPy runs the code cold (before its
# JIT has compiled it) slower than CPython, which 200 clients in one
# process make long enough for timer F (64*T1) to fire at 0.05.
T1 = 0.2 if sys.implementation.name == "pypy" else 0.05
# Seconds a test of a whole pool may take (trial's timeout), longer for
# the same reason.
TEST_TIMEOUT = 180 if sys.implementation.name == "pypy" else 60
# Seconds a whole pool may take to settle after a change (every client
# logged in again, every subscription made again).
SETTLE_TIMEOUT = 120 if sys.implementation.name == "pypy" else 30
DOMAIN = "example.com"


def credentials(users):
    return "memory:" + ",".join(f"{u}:{PASSWORD}" for u in users)


class Pool:
    """
    Servers started by L{startPool}.

    @ivar store: the shared L{MemoryAssignmentStore}.
    @ivar services: name to L{sipdist.server.ServerService}.
    @ivar uris: name to C{sip:127.0.0.1:PORT}.
    """

    def __init__(self, testCase, store, users, extra):
        self.testCase = testCase
        self.store = store
        self.users = users
        self.extra = extra
        self.services = {}
        self.uris = {}

    @defer.inlineCallbacks
    def start(self, name, role="home", register=True, store=None, **extra):
        """
        Start server C{name} reading C{store} (default: the pool's).
        """
        store = self.store if store is None else store
        config = {"role": role, "name": name, "domain": DOMAIN,
                  "listen": ["udp:0:interface=127.0.0.1"],
                  "credentials": credentials(self.users),
                  "secret": SECRET, "t1": T1, "min-expires": 1,
                  # One process holds the whole pool and its clients, on a
                  # shared machine: its event-loop lag (PyPy's JIT
                  # compiling, for one) is no server's overload.
                  "overload-lag": 30.0}
        config.update(self.extra)
        config.update(extra)
        service = buildServer(config, _reactor(), store=store)
        service.startService()
        self.testCase.addCleanup(self.stop, name)
        yield service.transportService.ready
        port = service.transportService.ports[0].getHost().port
        self.services[name] = service
        self.uris[name] = f"sip:127.0.0.1:{port}"
        if role == "home" and register:
            yield store.addServer(ServerRecord(name, self.uris[name]))
        return service

    def stop(self, name):
        service = self.services.get(name)
        if service is None or not service.running:
            return None
        return service.stopService()


def _reactor():
    from twisted.internet import reactor
    return reactor


@defer.inlineCallbacks
def startPool(testCase, homes=("home1", "home2"), users=(), distributor=True,
              **extra):
    """
    Start a distributor (named C{distributor}) and C{homes} on loopback UDP
    sharing one memory store.

    @return: a L{Pool}.
    """
    store = MemoryAssignmentStore()
    pool = Pool(testCase, store, users, extra)
    if distributor:
        yield pool.start("distributor", "distributor")
    for name in homes:
        yield pool.start(name)
    return pool


def waitFor(condition, timeout=10.0, step=0.02):
    """
    Poll C{condition} on the reactor until it is true (bounded).

    @return: L{Deferred} firing when it is, failing with
        L{AssertionError} after C{timeout} seconds.
    """
    from twisted.internet import task
    reactor = _reactor()
    deadline = reactor.seconds() + timeout

    @defer.inlineCallbacks
    def loop():
        while not condition():
            if reactor.seconds() > deadline:
                raise AssertionError(f"not met within {timeout} s: "
                                     f"{condition.__doc__ or condition}")
            yield task.deferLater(reactor, step, lambda: None)
    return loop()


@defer.inlineCallbacks
def inBatches(calls, size=50):
    """
    Run C{calls} (functions returning Deferreds) C{size} at a time.

    @return: L{Deferred} firing with their results, in order.
    """
    results = []
    for start in range(0, len(calls), size):
        batch = yield defer.gatherResults(
            [call() for call in calls[start:start + size]],
            consumeErrors=True)
        results.extend(batch)
    return results


@defer.inlineCallbacks
def startClients(testCase, pool, users, expires=3600, server=None):
    """
    Start a user agent per user (its own UDP port on loopback, T1 0.05)
    and log each in through C{server} (default: the distributor).

    @return: L{dict} of user name to agent; each has C{registration}.
    """
    from sipdist.client.core import UserAgent
    from sipdist.client.discovery import ServerLocator
    from sipdist.client.login import Registration
    from twisted.internet import task
    reactor = _reactor()
    agents = {}

    @defer.inlineCallbacks
    def stopAll():
        # Unregister everybody, let the NOTIFYs this causes arrive, then
        # close the agents.
        yield defer.DeferredList([ua.registration.stop()
                                  for ua in agents.values()])
        yield task.deferLater(reactor, 0.3, lambda: None)
        yield defer.DeferredList([ua.stop() for ua in agents.values()])

    testCase.addCleanup(stopAll)
    for user in users:
        events = []
        ua = UserAgent(reactor, f"{user}@{DOMAIN}", PASSWORD,
                       listen="udp:0:interface=127.0.0.1", T1=0.05,
                       observer=events.append)
        ua.events = events
        ua.registration = Registration(
            ua, ServerLocator(None), server=server or pool.uris["distributor"],
            expires=expires)
        agents[user] = ua
        yield ua.start()
    yield inBatches([ua.registration.start for ua in agents.values()])
    return agents


def homeOf(pool, ua):
    """
    The name of the home server an agent is registered at (its outbound
    proxy), or L{None}.
    """
    proxy = ua.outboundProxy
    if proxy is None:
        return None
    for name, uri in pool.uris.items():
        if uri == f"sip:127.0.0.1:{proxy.port}":
            return name
    return None
