"""
A pool on loopback for the distribution tests: a distributor and home
servers sharing one memory store, built with L{buildServer} as twistd
builds them (router, notifier, monitor extensions included).
"""

from twisted.internet import defer

from sipdist.server import buildServer
from sipdist.store import ServerRecord
from sipdist.store.memory import MemoryAssignmentStore

PASSWORD = "wonderland"
SECRET = "pool-nonce-secret-0123456789abcdef"
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
    def start(self, name, role="home", register=True, **extra):
        config = {"role": role, "name": name, "domain": DOMAIN,
                  "listen": ["udp:0:interface=127.0.0.1"],
                  "credentials": credentials(self.users),
                  "secret": SECRET, "t1": 0.05, "min-expires": 1}
        config.update(self.extra)
        config.update(extra)
        service = buildServer(config, _reactor(), store=self.store)
        service.startService()
        self.testCase.addCleanup(self.stop, name)
        yield service.transportService.ready
        port = service.transportService.ports[0].getHost().port
        self.services[name] = service
        self.uris[name] = f"sip:127.0.0.1:{port}"
        if role == "home" and register:
            yield self.store.addServer(ServerRecord(name, self.uris[name]))
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
