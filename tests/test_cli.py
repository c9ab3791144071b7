"""
Tests for L{sipdist.commands.main}, the C{sipdist} command line.
"""

import io

from twisted.internet.defer import fail, succeed
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

import sipdist
from sipdist.commands import main as cli
from sipdist.commands.main import CommandError, Options, _run, main


class _Command(usage.Options):
    """
    A command whose run returns what the test gives it.
    """

    result = None

    def run(self, reactor):
        if isinstance(self.result, Exception):
            raise self.result
        return self.result


def parsedWith(result):
    options = Options()
    options.subCommand = "test"
    options.subOptions = _Command()
    options.subOptions.result = result
    return options


class RunTests(SynchronousTestCase):
    """
    What a command's result becomes.
    """

    def run_(self, result):
        out, err = io.StringIO(), io.StringIO()
        code = _run(None, parsedWith(result), out, err)
        if hasattr(code, "addCallback"):
            code = self.successResultOf(code)
        return code, err.getvalue()

    def test_exitCodes(self):
        """
        None is success; a number is the exit status; a Deferred's result
        likewise.
        """
        self.assertEqual(self.run_(None), (0, ""))
        self.assertEqual(self.run_(3), (3, ""))
        self.assertEqual(self.run_(succeed(None)), (0, ""))
        self.assertEqual(self.run_(succeed(4)), (4, ""))

    def test_errorsAreOneLine(self):
        """
        A command error, raised or in a Deferred, is one line and status 1;
        so is an unexpected error, with its type.
        """
        self.assertEqual(self.run_(CommandError("no such user")),
                         (1, "sipdist test: no such user\n"))
        self.assertEqual(self.run_(fail(CommandError("store down"))),
                         (1, "sipdist test: store down\n"))
        code, err = self.run_(ZeroDivisionError("boom"))
        self.assertEqual(code, 1)
        self.assertEqual(err, "sipdist test: ZeroDivisionError: boom\n")


class MainTests(SynchronousTestCase):
    """
    The console script's option handling.
    """

    def test_version(self):
        """
        --version prints the version and exits 0.
        """
        out = io.StringIO()
        self.patch(cli.sys, "stdout", out)
        error = self.assertRaises(SystemExit, main, ["--version"])
        self.assertEqual(error.code, 0)
        self.assertEqual(out.getvalue(), f"sipdist {sipdist.__version__}\n")

    def test_noCommand(self):
        """
        Without a command: one line and status 2.
        """
        err = io.StringIO()
        error = self.assertRaises(SystemExit, main, [], io.StringIO(), err)
        self.assertEqual(error.code, 2)
        self.assertEqual(err.getvalue().count("\n"), 1)
        self.assertIn("a command is needed", err.getvalue())

    def test_unknownOption(self):
        """
        An unknown option: one line and status 2.
        """
        err = io.StringIO()
        error = self.assertRaises(SystemExit, main, ["--frobnicate"],
                                  io.StringIO(), err)
        self.assertEqual(error.code, 2)
        self.assertEqual(err.getvalue().count("\n"), 1)

    def test_commandsListed(self):
        """
        Every command module's commands are in the help.
        """
        help = str(Options())
        for command in ("assign", "lookup", "passwd", "make-certs",
                        "register", "server-add"):
            self.assertIn(command, help)
