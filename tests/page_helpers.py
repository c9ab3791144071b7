"""
A small pool for the status page's tests and its screenshot: a distributor
running the monitor (automatic balancing off) with the page on loopback,
two running homes and a third one marked down in the store.

The monitor moves the down server's users (recent moves, with their
reason) and leaves home1 above its share, which the dry-run plan
corrects.
"""

from twisted.internet import defer

from sipdist.store import DOWN, ServerRecord
from tests.distribution_helpers import DOMAIN, startPool, waitFor
from tests.interop import freePort

USERS = {"home1": 36, "home2": 12, "home3": 6}


def userName(server, number):
    return f"sip:{server}-{number:02d}@{DOMAIN}"


@defer.inlineCallbacks
def startDemoPool(testCase, **status):
    """
    Start the pool; C{status} are extra options of the distributor (its
    C{status-listen} defaults to a free loopback port).

    @return: L{Deferred} firing with C{(pool, port of the page)} once the
        monitor has moved home3's users.
    """
    pool = yield startPool(testCase, homes=("home1", "home2"),
                           distributor=False)
    yield pool.store.addServer(ServerRecord(
        "home3", f"sip:127.0.0.1:{freePort()}", state=DOWN))
    yield pool.store.assignUsers(
        [(userName(server, i), server)
         for server, count in USERS.items() for i in range(count)])
    options = {"monitor": True, "monitor-interval": 0.2,
               "monitor-timeout": 0.2, "auto-rebalance": False,
               "status-listen": "tcp:0:interface=127.0.0.1"}
    options.update(status)
    distributor = yield pool.start("distributor", "distributor", **options)
    monitor = distributor.monitor

    def settled():
        """home3's users moved, home1 and home2 up"""
        return (monitor.moved == USERS["home3"] and monitor.progress is None
                and all(name in monitor.health
                        and monitor.health[name].status == "up"
                        for name in ("home1", "home2")))

    yield waitFor(settled)
    port = distributor.statusSite._waitingForPort.result.getHost().port
    return pool, port
