# -*- test-case-name: tests.test_chains -*-
"""
The C{home} role's adapter: a store role with a registrar, the event server
for subscriptions and the load report in its answers to C{OPTIONS}.
"""

from twisted.application.service import Service

from sipdist.pool.monitor import installLoadReport
from sipdist.roles.base import assembleStoreRole
from sipdist.services.bindings import BindingsJournal
from sipdist.services.registrar import Registrar
from sipdist.services.subscriptions import installNotifier


def assemble(service, config, reactor, store=None, checker=None):
    """
    Build a home server's parts on C{service}.

    @return: the parts of the chain (L{sipdist.roles.chains.ROLES}) by
        link name.
    """
    journal = None
    if config.get("bindings-file"):
        journal = BindingsJournal(
            reactor, config["bindings-file"],
            flushInterval=config.get("bindings-flush-interval", 1.0))
    registrar = Registrar(
        reactor, minExpires=config.get("min-expires", 60),
        maxExpires=config.get("max-expires", 86400),
        maxBindings=config.get("max-bindings", 10), journal=journal)
    if journal is not None:
        # A child started after the transport's: the UDP ports are open,
        # so restored UDP flows find their port.
        hasUDP = any(d.startswith("udp:") for d in config.get("listen", ()))
        _RestoreBindings(journal, registrar, service.transport,
                         hasUDP).setServiceParent(service)
    links = assembleStoreRole(service, config, reactor, store, checker,
                              registrar=registrar)
    notifier = installNotifier(service, config, reactor)
    links["subscription-dialogs"] = notifier.inDialog
    installLoadReport(service, config, reactor)
    return links


class _RestoreBindings(Service):
    """
    Reads the bindings file back into the registrar when the server
    starts (see L{sipdist.services.bindings}).
    """

    def __init__(self, journal, registrar, transport, hasUDP):
        self.hasUDP = hasUDP
        self.journal = journal
        self.registrar = registrar
        self.transport = transport

    def startService(self):
        Service.startService(self)
        self.registrar.restore(self.journal.load(
            flowByToken=self.transport.flowByToken, hasUDP=self.hasUDP))
