"""
One server of bench_failover.py in its own process:

    python bench/failover_server.py CONFIG.json

CONFIG.json is the server's configuration (the keys of the twistd
options, e.g. {"role": "home", "store": "file:PATH", ...}).  With
BENCH_LOG_DIR set, the server logs to NAME.log there.  Prints
C{READY <port>} (its first listening port) once it listens, then runs
until killed.  With BENCH_PROFILE set to a directory, the server profiles
itself (cProfile) until it is terminated, into NAME.prof there.
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main():
    from twisted.internet import reactor

    from sipdist.server import buildServer

    with open(sys.argv[1]) as f:
        config = json.load(f)
    if os.environ.get("BENCH_LOG_DIR"):
        from twisted.logger import globalLogBeginner, textFileLogObserver
        path = os.path.join(os.environ["BENCH_LOG_DIR"],
                            f"{config['name']}.log")
        globalLogBeginner.beginLoggingTo(
            [textFileLogObserver(open(path, "a"))],
            redirectStandardIO=False)
    service = buildServer(config, reactor)

    def ready(_):
        port = service.transportService.ports[0].getHost().port
        print(f"READY {port}", flush=True)

    def failed(failure):
        print(f"FAILED {failure.getErrorMessage()}", flush=True)
        reactor.stop()

    # As twistd does: what exists at start is out of the collector's reach.
    from sipdist.tap import _freezeStartupObjects
    reactor.callWhenRunning(_freezeStartupObjects)
    if os.environ.get("BENCH_PROFILE"):
        import cProfile
        profile = cProfile.Profile()
        profile.enable()
        path = os.path.join(os.environ["BENCH_PROFILE"],
                            f"{config['name']}.prof")
        reactor.addSystemEventTrigger(
            "before", "shutdown",
            lambda: (profile.disable(), profile.dump_stats(path)))
    service.startService()
    service.transportService.ready.addCallbacks(ready, failed)
    reactor.run()


if __name__ == "__main__":
    main()
