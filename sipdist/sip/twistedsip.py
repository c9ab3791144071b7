# -*- test-case-name: tests.test_imports -*-
"""
L{twisted.protocols.sip}, imported without installing a reactor.

Twisted's SIP module does C{from twisted.internet import reactor} at its
top (only its C{RegisterProxy}, which sipdist does not use, calls it), so
importing it installs the default reactor: a program that imports
L{sipdist.sip.uri} or L{sipdist.sip.message} before choosing its reactor
(twistd's C{--reactor}, a test runner) would get the wrong one.  Here the
module is imported with a stand-in for C{twisted.internet.reactor} that
looks up the real reactor only when an attribute of it is used.
"""

import sys
import types

_REACTOR = "twisted.internet.reactor"


class _ReactorWhenUsed(types.ModuleType):
    """
    Stands for C{twisted.internet.reactor} in L{twisted.protocols.sip}'s
    namespace; the real reactor is imported (installing the default one if
    none is) when an attribute is first used.
    """

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        from twisted.internet import reactor
        return getattr(reactor, name)


def _importSIP():
    if "twisted.protocols.sip" in sys.modules or _REACTOR in sys.modules:
        from twisted.protocols import sip
        return sip
    standIn = _ReactorWhenUsed(_REACTOR)
    sys.modules[_REACTOR] = standIn
    try:
        from twisted.protocols import sip
    finally:
        if sys.modules.get(_REACTOR) is standIn:
            del sys.modules[_REACTOR]
    return sip


sip = _importSIP()
