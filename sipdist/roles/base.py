# -*- test-case-name: tests.test_chains -*-
"""
What every role that reads the assignment store is built from: the store,
the digest authenticator, the stateful proxy, the
L{sipdist.roles.distribution.DistributionProcessor} and its router, and the
monitor when asked for.  L{sipdist.roles.home} and
L{sipdist.roles.distributor} add to it.
"""

import os

from twisted.logger import Logger

from sipdist.auth.clientaddress import ClientAddressSeal
from sipdist.auth.digest import COMPATIBLE_ALGORITHMS, withSHA256
from sipdist.auth.limiter import FailureLimiter
from sipdist.auth.server import DigestAuthenticator
from sipdist.auth.sources import CredentialsConfigError, makeChecker
from sipdist.config import ConfigurationError
from sipdist.pool.failover import installFailover
from sipdist.pool.monitor import installMonitor
from sipdist.pool.standby import installStandby
from sipdist.roles.distribution import (
    DEFAULT_FLOW_TIMER_UDP, DistributionProcessor, compileUserAgents)
from sipdist.roles.fastchallenge import install as installFastChallenge
from sipdist.services.proxy import Proxy, routeKey
from sipdist.services.routing import ROUTER_METHODS, installRouting
from sipdist.store import StoreError, storeFromString

_log = Logger()


def assembleStoreRole(service, config, reactor, store=None, checker=None,
                      registrar=None):
    """
    Give C{service} the parts of a role that reads the store.

    @param registrar: the home's registrar; C{None} for roles that are
        never a home.
    @return: the chain's parts by link name: C{route-set} and
        C{distribution}.
    @raise ConfigurationError: a store or credential string that its
        provider rejects.
    """
    role = config.get("role", "home")
    server = service.server
    if store is None:
        try:
            store = storeFromString(reactor, config.get("store", "memory:"))
        except StoreError as e:
            raise ConfigurationError(f"--store: {e}")
    if checker is None:
        try:
            checker = makeChecker(reactor,
                                  config.get("credentials", "memory:"))
        except CredentialsConfigError as e:
            raise ConfigurationError(f"--credentials: {e}")
    secret = config.get("secret")
    if not secret:
        secret = os.urandom(32).hex()
        _log.warn("no nonce secret configured (--secret-file): using a "
                  "random one; the servers of a pool must share one")
    algorithms = _algorithmList(config.get("digest-algorithms"),
                                COMPATIBLE_ALGORITHMS)
    tagged = _algorithmList(config.get("tagged-digest-algorithms"),
                            withSHA256(algorithms))
    try:
        userAgents = compileUserAgents(config.get("redirect-user-agent") or ())
    except ValueError as e:
        raise ConfigurationError(f"--redirect-user-agent: {e}")
    authenticator = DigestAuthenticator(
        config["domain"], secret, checker, reactor, algorithms=algorithms,
        extraAlgorithms=tagged,
        limiter=FailureLimiter(
            reactor, threshold=config.get("auth-failures", 10),
            window=config.get("auth-window", 300.0),
            hostThreshold=config.get("auth-address-failures", 100),
            maxDelay=config.get("auth-max-delay", 60.0)))
    proxy = Proxy(reactor, service.transactions, service.transport,
                  service.transport.localAddress, routeId=server.name,
                  routeKey=routeKey(secret))
    server.proxy = proxy
    processor = DistributionProcessor(
        server, role, store, authenticator, registrar=registrar, proxy=proxy,
        policy=config.get("redirect-policy", "auto"), userAgents=userAgents,
        taggedAlgorithms=tagged, clientSeal=ClientAddressSeal(secret))
    processor.flowTimer = int(config.get("flow-timer", 60))
    processor.flowTimerUDP = int(config.get("flow-timer-udp",
                                            DEFAULT_FLOW_TIMER_UDP))
    processor.offerBackup = config.get("backup-home", True)
    processor.logDecisions = config.get("log-format") == "json"
    server.addMethods(("REGISTER",) + ROUTER_METHODS)
    service.store = store
    service.registrar = registrar
    service.processor = processor
    service.authenticator = authenticator
    service.checker = checker
    service.proxy = proxy
    installFastChallenge(service, config)
    installRouting(service, config, reactor)
    installMonitor(service, config, reactor)
    if role == "home":
        installStandby(service, config, reactor)
    installFailover(service, config, reactor)
    return {"route-set": proxy.routeInDialog, "distribution": processor}


def _algorithmList(value, default):
    """
    Digest algorithm names from a configuration value: a list, a
    comma-separated string, or C{None} for C{default}.
    """
    if not value:
        return tuple(default)
    if isinstance(value, str):
        value = value.split(",")
    return tuple(a.strip() for a in value if a.strip())
