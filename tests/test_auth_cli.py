# -*- test-case-name: tests.test_auth_cli -*-
"""
Tests for C{sipdist passwd} (L{sipdist.commands.passwd}).
"""

import io
import os

from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from sipdist.commands import main as cli
from sipdist.commands.passwd import PasswdOptions
from sipdist.auth.credentials import FileDigestHashSource
from sipdist.auth.digest import algorithm, computeHA1
from tests.test_auth_credentials import TemporaryPathMixin


class FakeTerminal(io.StringIO):
    """
    Standard input that says it is a terminal.
    """

    def isatty(self):
        return True


class PasswdTests(TemporaryPathMixin, SynchronousTestCase):
    """
    C{sipdist passwd FILE USER [--realm R]}.
    """

    def passwd(self, args, stdin="pw\n", **kw):
        stdin = stdin if not isinstance(stdin, str) else io.StringIO(stdin)
        self.stdout = io.StringIO()
        options = PasswdOptions(stdin=stdin, stdout=self.stdout)
        options.parseOptions(args)
        return options.run(None)

    def ha1(self, path, user, realm):
        return self.successResultOf(
            FileDigestHashSource(path).getHA1(user, realm, "SHA-256"))

    def test_piped(self):
        """
        The password is the first line of a piped standard input;
        C{--realm} may come after the arguments.
        """
        path = self.mktemp()
        self.assertEqual(self.passwd([path, "alice", "--realm", "example.com"],
                                  "pass word\nignored\n"), 0)
        self.assertEqual(self.ha1(path, "alice", "example.com"),
                         computeHA1(algorithm("SHA-256"), "alice",
                                    "example.com", "pass word"))
        self.assertIn("added alice", self.stdout.getvalue())

    def test_realmFromFile(self):
        """
        Without C{--realm} the file's only realm is used.
        """
        path = self.mktemp()
        self.passwd(["--realm", "example.com", path, "alice"])
        self.passwd([path, "bob"], "b\n")
        self.assertIsNotNone(self.ha1(path, "bob", "example.com"))
        self.passwd([path, "bob"], "c\r\n")
        self.assertIn("changed password of bob", self.stdout.getvalue())
        self.assertEqual(self.ha1(path, "bob", "example.com"),
                         computeHA1(algorithm("SHA-256"), "bob",
                                    "example.com", "c"))

    def test_terminal(self):
        """
        On a terminal the password is asked twice without echo.
        """
        asked = []

        def fakeGetpass(prompt, stream=None):
            asked.append(prompt)
            return "secret"

        self.patch(__import__("getpass"), "getpass", fakeGetpass)
        path = self.mktemp()
        self.passwd([path, "alice", "-r", "r"], FakeTerminal())
        self.assertEqual(asked, ["Password: ", "Again: "])

    def test_errors(self):
        """
        Each problem is a one-line L{cli.CommandError}.
        """
        path = self.mktemp()
        for args, stdin, text in [
                ([path, "alice"], "pw\n", "--realm is needed"),
                ([path, "alice", "--realm", "r"], "\n", "empty password"),
                ([path, "a:b", "--realm", "r"], "pw\n", "user name"),
        ]:
            e = self.assertRaises(cli.CommandError, self.passwd, args, stdin)
            self.assertIn(text, str(e))
        self.assertRaises(usage.UsageError, self.passwd, [path])

    def test_registered(self):
        """
        The command is part of the C{sipdist} command line.
        """
        self.assertIn("sipdist.commands.passwd", cli.COMMAND_MODULES)
        names = [c[0] for c in cli.Options().subCommands]
        self.assertIn("passwd", names)


class PasswdReloadTests(TemporaryPathMixin, SynchronousTestCase):
    """
    A server's file credential source follows C{sipdist passwd} without a
    restart.
    """

    def passwd(self, path, user, password):
        options = PasswdOptions(stdin=io.StringIO(password + "\n"),
                                stdout=io.StringIO())
        options.parseOptions([path, user, "--realm", "example.com"])
        self.assertEqual(options.run(None), 0)

    def login(self, checker, user, password):
        from tests.test_auth_credentials import credentialsFor
        d = checker.requestAvatarId(credentialsFor(user, password))
        return d

    def test_passwordChange(self):
        """
        After C{sipdist passwd} changes a password, the old one fails and
        the new one works once the source's check interval has passed (a
        second by the injected clock), with no reload asked for.
        """
        from twisted.cred.error import UnauthorizedLogin
        from twisted.internet.task import Clock
        from sipdist.auth.sources import makeChecker

        path = self.mktemp()
        self.passwd(path, "alice", "old")
        clock = Clock()
        checker = makeChecker(clock, "file:" + path)
        self.assertEqual(
            self.successResultOf(self.login(checker, "alice", "old")),
            "alice")
        self.passwd(path, "alice", "new")
        clock.advance(1)
        self.failureResultOf(self.login(checker, "alice", "old"),
                             UnauthorizedLogin)
        self.assertEqual(
            self.successResultOf(self.login(checker, "alice", "new")),
            "alice")

    def test_badFileKeepsUsers(self):
        """
        A credentials file that turns bad is logged once and the last good
        users stay in force; when it is good again it is read.
        """
        from twisted.internet.task import Clock

        path = self.mktemp()
        self.passwd(path, "alice", "old")
        clock = Clock()
        source = FileDigestHashSource(path, clock)
        errors = []
        from twisted.logger import globalLogPublisher
        observer = lambda e: (e.get("log_level").name == "error"
                              and errors.append(e))
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)
        with open(path, "a") as f:
            f.write("broken\n")
        for _ in range(3):
            clock.advance(1)
            self.assertIsNotNone(self.successResultOf(
                source.getHA1("alice", "example.com", "MD5")))
        self.assertEqual(len(errors), 1)
        self.assertIn("keeping the last good users", errors[0]["log_format"])
        self.passwd(path + ".new", "bob", "b")
        os.replace(path + ".new", path)
        clock.advance(1)
        self.assertIsNone(self.successResultOf(
            source.getHA1("alice", "example.com", "MD5")))
        self.assertIsNotNone(self.successResultOf(
            source.getHA1("bob", "example.com", "MD5")))
        self.assertIsNone(source.lastError)
