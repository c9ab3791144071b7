# -*- test-case-name: tests.test_auth_sources -*-
"""
Tests for L{sipdist.auth.sources}: credential sources chosen by a string.
"""

from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.error import UnauthorizedLogin
from twisted.internet.task import Clock
from twisted.plugin import IPlugin
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from sipdist.auth.credentials import setPassword
from sipdist.auth.interfaces import ICredentialsSourceParser
from sipdist.auth.sources import (
    CredentialsConfigError, credentialsParsers, makeChecker)
from tests.test_auth_credentials import TemporaryPathMixin, credentialsFor


class RegistryTests(TemporaryPathMixin, SynchronousTestCase):
    """
    The plugins are found and pick a source by prefix.
    """

    def test_plugins(self):
        """
        The memory, file and ldap parsers are found as plugins and provide
        L{ICredentialsSourceParser}.
        """
        parsers = credentialsParsers()
        for prefix in ("memory", "file", "ldap"):
            self.assertTrue(verifyObject(ICredentialsSourceParser,
                                         parsers[prefix]))
            self.assertTrue(IPlugin.providedBy(parsers[prefix]))

    def test_memory(self):
        """
        C{memory:USER:PASSWORD,...} gives a checker for those users.
        """
        checker = makeChecker(Clock(), "memory:alice:wonder:land,bob:b")
        self.assertTrue(verifyObject(ICredentialsChecker, checker))
        self.assertEqual(self.successResultOf(checker.requestAvatarId(
            credentialsFor("alice", "wonder:land"))), "alice")
        self.failureResultOf(checker.requestAvatarId(
            credentialsFor("bob", "x")), UnauthorizedLogin)

    def test_file(self):
        """
        C{file:PATH} gives a checker for the users of the file.
        """
        path = self.mktemp()
        setPassword(path, "alice", "example.com", "pw")
        checker = makeChecker(Clock(), "file:" + path)
        self.assertEqual(self.successResultOf(checker.requestAvatarId(
            credentialsFor("alice", "pw"))), "alice")

    def test_errors(self):
        """
        Bad strings raise L{CredentialsConfigError} with a one-line message.
        """
        for description, text in [
                ("nothing", "expected PREFIX:"),
                ("nosuch:x", "unknown credentials type 'nosuch'"),
                ("memory:alice", "expected USER:PASSWORD"),
                ("file:", "needs a path"),
                ("file:/nonexistent/users", "cannot read"),
        ]:
            e = self.assertRaises(CredentialsConfigError, makeChecker,
                                  Clock(), description)
            self.assertIn(text, str(e))
