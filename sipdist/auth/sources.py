# -*- test-case-name: tests.test_auth_sources -*-
"""
Credential sources chosen by a string, C{PREFIX:REST}, the way stores are:
the prefix picks an L{ICredentialsSourceParser} plugin (found with
L{twisted.plugin.getPlugins} in C{twisted.plugins}; sipdist's own are
registered by C{twisted/plugins/sipdist_credentials.py}), which builds an
L{ICredentialsChecker} for L{ISIPDigestCredentials}.

  - C{memory:alice:secret,bob:other} — users and passwords in the string
    (tests, demos);
  - C{file:PATH} — a credentials file (see L{sipdist.auth.credentials});
  - C{ldap://HOST:PORT/BASE?...} — an LDAP directory (see
    L{sipdist.auth.ldap}).

The parsers import their source only when a checker is built, so that
plugin discovery stays light.
"""

from twisted.plugin import IPlugin
from zope.interface import implementer

from sipdist.auth.errors import CredentialsConfigError
from sipdist.auth.interfaces import ICredentialsSourceParser
from sipdist.plugin import parserFor, parsersFor


@implementer(IPlugin, ICredentialsSourceParser)
class MemoryCredentialsParser:
    """
    C{memory:USER:PASSWORD[,USER:PASSWORD...]}.
    """

    prefix = "memory"
    description = "memory:USER:PASSWORD[,USER:PASSWORD...] users in the string (tests)"

    def parseCredentials(self, reactor, description):
        rest = description[len(self.prefix) + 1:]
        users = {}
        for pair in rest.split(",") if rest else []:
            username, sep, password = pair.partition(":")
            if not sep or not username:
                raise CredentialsConfigError(
                    f"bad memory credentials {pair!r}: expected USER:PASSWORD")
            users[username] = password
        from sipdist.auth.credentials import (
            DigestHashChecker, InMemoryDigestHashSource)
        return DigestHashChecker(InMemoryDigestHashSource(users))


@implementer(IPlugin, ICredentialsSourceParser)
class FileCredentialsParser:
    """
    C{file:PATH}.
    """

    prefix = "file"
    description = ("file:PATH a credentials file of HA1 digests "
                   "(see 'sipdist passwd')")

    def parseCredentials(self, reactor, description):
        path = description[len(self.prefix) + 1:]
        if not path:
            raise CredentialsConfigError("file: needs a path: file:PATH")
        from sipdist.auth.credentials import (
            CredentialsFileError, DigestHashChecker, FileDigestHashSource)
        try:
            source = FileDigestHashSource(path, reactor)
        except CredentialsFileError as e:
            raise CredentialsConfigError(str(e))
        return DigestHashChecker(source)


@implementer(IPlugin, ICredentialsSourceParser)
class LDAPCredentialsParser:
    """
    C{ldap://HOST:PORT/BASE?option=value&...}.
    """

    prefix = "ldap"
    description = ("ldap://HOST:PORT/BASE?hashAttribute=ATTR&... an LDAP "
                   "directory holding HA1 digests (see docs/auth.rst)")

    def parseCredentials(self, reactor, description):
        from sipdist.auth.ldap import checkerFromString
        return checkerFromString(reactor, description)


@implementer(IPlugin, ICredentialsSourceParser)
class LDAPSCredentialsParser(LDAPCredentialsParser):
    """
    C{ldaps://HOST:PORT/BASE?caFile=PEM&...}: the directory over TLS.
    """

    prefix = "ldaps"
    description = ("ldaps://HOST:PORT/BASE?caFile=PEM&... an LDAP directory "
                   "over TLS holding HA1 digests (see docs/auth.rst)")


def credentialsParsers():
    """
    @return: L{dict} from prefix to every L{ICredentialsSourceParser}
        plugin found in C{twisted.plugins}.
    """
    return parsersFor(ICredentialsSourceParser)


def makeChecker(reactor, description, parsers=None):
    """
    Build the checker a string describes, e.g. C{file:/etc/sipdist/users}.

    @param parsers: mapping from prefix to parser; by default
        L{credentialsParsers}.
    @raise CredentialsConfigError: unknown prefix or a string the source
        rejects.
    """
    if parsers is None:
        parsers = credentialsParsers()
    parser = parserFor(description, parsers, "credentials",
                       "file:PATH, memory:USER:PASSWORD or "
                       "ldap://HOST:PORT/BASE", CredentialsConfigError)
    return parser.parseCredentials(reactor, description)
