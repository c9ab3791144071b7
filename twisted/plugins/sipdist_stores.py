"""
The assignment store providers sipdist ships: C{memory:}, C{file:} and
C{ldap://}.
"""

from sipdist.store.parsers import (
    FileStoreParser, LDAPStoreParser, MemoryStoreParser,
)

memoryStore = MemoryStoreParser()
fileStore = FileStoreParser()
ldapStore = LDAPStoreParser()
