"""
A third-party assignment store provider, as a user would ship it in their
own package: C{example:SERVER-ID:URI} is a memory store holding one server.
"""

from zope.interface import implementer
from twisted.plugin import IPlugin

from sipdist.interfaces import IAssignmentStoreParser


@implementer(IPlugin, IAssignmentStoreParser)
class ExampleStoreParser:
    prefix = "example"
    description = "example:SERVER-ID:URI a memory store with one server"

    def parseStore(self, reactor, description):
        from sipdist.store import ServerRecord, splitOptions
        from sipdist.store.memory import MemoryAssignmentStore
        (serverId, uri), _ = splitOptions(description[len("example:"):])
        store = MemoryAssignmentStore(reactor)
        store.addServer(ServerRecord(serverId, uri))
        return store
