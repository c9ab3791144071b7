# -*- test-case-name: tests.test_auth_credentials -*-
"""
The interfaces of SIP authentication, on the twisted.cred split:
credentials (L{ISIPDigestCredentials}), where checkers find the digests
(L{IDigestHashSource}), the avatar (L{ISIPIdentity}), and the plugins that
build a checker from a string (L{ICredentialsSourceParser}).
"""

from twisted.cred.credentials import IUsernameDigestHash
from zope.interface import Attribute, Interface


class ISIPDigestCredentials(IUsernameDigestHash):
    """
    The Digest answer of a SIP request, checked against a stored HA1
    (C{H(username ":" realm ":" password)}) with L{checkHash}.
    """

    username = Attribute("The user name the client sent (L{str}).")
    realm = Attribute("The realm the credentials are for (L{str}).")
    algorithm = Attribute(
        "The L{sipdist.auth.digest.Algorithm} of the answer; the HA1 to "
        "check against is the one of C{algorithm.base}.")


class IDigestHashSource(Interface):
    """
    Where a checker finds the HA1 of a user.
    """

    def getHA1(username, realm, algorithm):
        """
        @param algorithm: the base algorithm name, C{"MD5"} or C{"SHA-256"}.
        @return: L{Deferred} firing with the HA1 in lower-case hexadecimal
            (L{str}) or L{None} for an unknown user; sources holding their
            data in memory return one that has already fired.
        """


class ISIPIdentity(Interface):
    """
    The avatar of an authenticated SIP user.
    """

    username = Attribute("The authenticated user name (L{str}).")
    aor = Attribute("The user's address-of-record, C{sip:user@domain}.")


class ICredentialsSourceParser(Interface):
    """
    A plugin building a L{twisted.cred.checkers.ICredentialsChecker} for
    L{ISIPDigestCredentials} from a string such as C{file:/etc/sipdist/users},
    chosen by the text before the first colon.  Plugin modules live in a
    C{twisted/plugins} directory and import nothing heavy: the source is
    imported inside L{parseCredentials}.
    """

    prefix = Attribute("The string prefix, without the colon: C{file}.")

    description = Attribute("One line for C{--help}: what the source is.")

    def parseCredentials(reactor, description):
        """
        @param reactor: the reactor the source uses for time and network.
        @param description: the whole string, prefix included.
        @return: an L{ICredentialsChecker}.
        @raise sipdist.auth.sources.CredentialsConfigError: if the string is
            not valid.
        """
