# -*- test-case-name: tests.test_store_plugins -*-
"""
The store string parsers sipdist ships, registered as plugins by
C{twisted/plugins/sipdist_stores.py}.  Each imports its provider only when
a store is built, so that plugin discovery stays light.
"""

from zope.interface import implementer
from twisted.plugin import IPlugin

from sipdist.interfaces import IAssignmentStoreParser
from sipdist.store import StoreConfigError, splitOptions


def _number(name, text, low, high, what="a number of seconds"):
    try:
        value = float(text)
    except ValueError:
        value = None
    if value is None or not low <= value <= high:
        raise StoreConfigError(f"bad {name} {text!r} ({what}, "
                               f"{low} to {high})")
    return value


@implementer(IPlugin, IAssignmentStoreParser)
class MemoryStoreParser:
    """
    C{memory:} — assignments in memory, empty at start.
    """

    prefix = "memory"
    description = "memory: assignments in this process only (tests, demos)"

    def parseStore(self, reactor, description):
        rest = description[len(self.prefix) + 1:]
        if rest:
            raise StoreConfigError(f"memory: takes no options, got {rest!r}")
        from sipdist.store.memory import MemoryAssignmentStore
        return MemoryAssignmentStore(reactor)


@implementer(IPlugin, IAssignmentStoreParser)
class FileStoreParser:
    """
    C{file:PATH[:poll=SECONDS][:lockTimeout=SECONDS][:maxDrop=SHARE]} — a
    text file; C{maxDrop} is the share of the users (0 to 1) a reload of a
    file changed outside a store may drop.
    """

    prefix = "file"
    description = ("file:PATH[:poll=SECONDS] an editable text file, "
                   "reloaded when it changes")

    def parseStore(self, reactor, description):
        args, kwargs = splitOptions(description[len(self.prefix) + 1:])
        path = kwargs.pop("path", None)
        if path is None and args:
            path = args.pop(0)
        if not path or args:
            raise StoreConfigError(
                f"bad file store {description!r}: expected "
                f"file:PATH[:poll=SECONDS][:lockTimeout=SECONDS]"
                f"[:maxDrop=SHARE]")
        poll = _number("poll", kwargs.pop("poll", "1"), 0, 86400)
        lockTimeout = _number("lockTimeout", kwargs.pop("lockTimeout", "5"),
                              0, 600)
        maxDrop = _number("maxDrop", kwargs.pop("maxDrop", "0.5"), 0, 1,
                          "a share of the users")
        if kwargs:
            raise StoreConfigError(f"unknown file store option "
                                   f"{sorted(kwargs)[0]!r}")
        from sipdist.store.file import FileAssignmentStore
        return FileAssignmentStore(reactor, path, poll=poll,
                                   lockTimeout=lockTimeout, maxDrop=maxDrop)


@implementer(IPlugin, IAssignmentStoreParser)
class LDAPStoreParser:
    """
    C{ldap://HOST:PORT[,HOST:PORT...]/BASE?option=value&...} — a directory.
    """

    prefix = "ldap"
    description = ("ldap://HOST:PORT[,HOST2:PORT2]/BASE?config=FILE&... "
                   "an LDAP directory (see docs/stores.rst)")

    def parseStore(self, reactor, description):
        from sipdist.store.ldap import LDAPAssignmentStore, parseLDAPString
        return LDAPAssignmentStore(reactor, parseLDAPString(description))


@implementer(IPlugin, IAssignmentStoreParser)
class LDAPSStoreParser(LDAPStoreParser):
    """
    C{ldaps://HOST:PORT[,HOST:PORT...]/BASE?caFile=PEM&...} — a directory
    over TLS.
    """

    prefix = "ldaps"
    description = ("ldaps://HOST:PORT[,HOST2:PORT2]/BASE?caFile=PEM&... an "
                   "LDAP directory over TLS (see docs/stores.rst)")
