"""
The assignment store providers sipdist ships: C{memory:}, C{file:} and
C{ldap://} (and C{ldaps://}).
"""

from sipdist.store.parsers import (
    FileStoreParser, LDAPSStoreParser, LDAPStoreParser, MemoryStoreParser,
)

memoryStore = MemoryStoreParser()
fileStore = FileStoreParser()
ldapStore = LDAPStoreParser()
ldapsStore = LDAPSStoreParser()
