"""
The credential sources sipdist ships: C{memory:}, C{file:} and C{ldap://}.
"""

from sipdist.auth.sources import (
    FileCredentialsParser, LDAPCredentialsParser, MemoryCredentialsParser,
)

memoryCredentials = MemoryCredentialsParser()
fileCredentials = FileCredentialsParser()
ldapCredentials = LDAPCredentialsParser()
