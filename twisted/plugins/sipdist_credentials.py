"""
The credential sources sipdist ships: C{memory:}, C{file:}, C{ldap://}
and C{ldaps://}.
"""

from sipdist.auth.sources import (
    FileCredentialsParser, LDAPCredentialsParser, LDAPSCredentialsParser,
    MemoryCredentialsParser,
)

memoryCredentials = MemoryCredentialsParser()
fileCredentials = FileCredentialsParser()
ldapCredentials = LDAPCredentialsParser()
ldapsCredentials = LDAPSCredentialsParser()
