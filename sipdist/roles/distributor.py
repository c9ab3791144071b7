# -*- test-case-name: tests.test_chains -*-
"""
The adapter of the C{distributor} and C{internal-edge} roles: a store role
that is never a home.  The two differ only in where they stand (an
internal edge behind the edge sees requests with two Via values or more,
so it proxies), which L{sipdist.decision.decide} takes care of.
"""

from sipdist.roles.base import assembleStoreRole


def assemble(service, config, reactor, store=None, checker=None):
    """
    Build a distributor's (or an internal edge's) parts on C{service}.

    @return: the parts of the chain (L{sipdist.roles.chains.ROLES}) by
        link name.
    """
    return assembleStoreRole(service, config, reactor, store, checker)
