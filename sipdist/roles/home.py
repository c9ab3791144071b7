# -*- test-case-name: tests.test_chains -*-
"""
The C{home} role's adapter: a store role with a registrar, the event server
for subscriptions and the load report in its answers to C{OPTIONS}.
"""

from sipdist.pool.monitor import installLoadReport
from sipdist.roles.base import assembleStoreRole
from sipdist.services.registrar import Registrar
from sipdist.services.subscriptions import installNotifier


def assemble(service, config, reactor, store=None, checker=None):
    """
    Build a home server's parts on C{service}.

    @return: the parts of the chain (L{sipdist.roles.chains.ROLES}) by
        link name.
    """
    registrar = Registrar(
        reactor, minExpires=config.get("min-expires", 60),
        maxExpires=config.get("max-expires", 86400),
        maxBindings=config.get("max-bindings", 10))
    links = assembleStoreRole(service, config, reactor, store, checker,
                              registrar=registrar)
    notifier = installNotifier(service, config, reactor)
    links["subscription-dialogs"] = notifier.inDialog
    installLoadReport(service, config, reactor)
    return links
