"""
C{sipdist register}, C{call} and C{message}: options, password reading, the
ladder, and the commands run against the real roles on loopback (in process,
and as the console script).
"""

import io
import os
import sys

from twisted.internet import defer, reactor
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase, TestCase

from sipdist.commands.main import CommandError, Options, _run
from sipdist.commands.client import (
    CallOptions, MessageOptions, RegisterOptions, readPassword)
from sipdist.client.ladder import Ladder
from sipdist.sip.message import Request, Response
from tests.interop import runProcess
from tests.test_client_roles import PASSWORD, startDeployment


class _TTY(io.StringIO):
    def isatty(self):
        return False


class _Flow:
    transport = "UDP"

    def __init__(self, port):
        self.remote = ("127.0.0.1", port)


class LadderTests(SynchronousTestCase):
    """
    The ladder draws client and servers as columns.
    """

    def test_columns(self):
        """
        Each new server adds a column (and prints the header again); a
        request points right from the client, a response left to it.
        """
        lines = []
        ladder = Ladder(lines.append)
        ladder("out", Request("REGISTER", "sip:example.com"), _Flow(5060))
        ladder("in", Response(301), _Flow(5060))
        ladder("out", Request("REGISTER", "sip:example.com"), _Flow(5070))
        self.assertEqual(lines[0].split(), ["client", "127.0.0.1:5060"])
        self.assertTrue(lines[1].startswith("  |-"))
        self.assertTrue(lines[1].endswith(">|"))
        self.assertIn("REGISTER", lines[1])
        self.assertTrue(lines[2].startswith("  |<"))
        self.assertIn("301 Moved Permanently", lines[2])
        self.assertEqual(lines[3].split(),
                         ["client", "127.0.0.1:5060", "127.0.0.1:5070"])
        # The arrow ends at the bar under the new server's name.
        self.assertEqual(lines[4].rindex("|"),
                         lines[3].index("127.0.0.1:5070") + 2)


class OptionsTests(SynchronousTestCase):
    """
    Parsing the command lines.
    """

    def test_registered(self):
        """
        The commands are on the sipdist command line.
        """
        options = Options()
        names = [c[0] for c in options.subCommands]
        for name in ("register", "call", "message"):
            self.assertIn(name, names)

    def test_optionsAfterAOR(self):
        """
        Options may follow the AOR.
        """
        options = RegisterOptions()
        options.parseOptions(["alice@example.com", "--server",
                              "sip:127.0.0.1:5060", "-e", "60", "--trace"])
        self.assertEqual(options["aor"], "sip:alice@example.com")
        self.assertEqual(options["server"], "sip:127.0.0.1:5060")
        self.assertEqual(options["expires"], 60)
        self.assertTrue(options["trace"])

    def test_badAOR(self):
        """
        An AOR without a user is a usage error.
        """
        self.assertRaises(usage.UsageError, RegisterOptions().parseOptions,
                          ["example.com"])

    def test_badExpires(self):
        self.assertRaises(usage.UsageError, RegisterOptions().parseOptions,
                          ["alice@example.com", "--expires", "-1"])

    def test_missingCA(self):
        """
        A --ca that cannot be read is refused at once, naming the file.
        """
        error = self.assertRaises(
            usage.UsageError, RegisterOptions().parseOptions,
            ["alice@example.com", "--ca", "/nonexistent/ca.pem"])
        self.assertIn("/nonexistent/ca.pem", str(error))

    def test_callAndMessageArguments(self):
        """
        call needs a target, message a target and a text.
        """
        self.assertRaises(usage.UsageError, CallOptions().parseOptions,
                          ["alice@example.com"])
        self.assertRaises(usage.UsageError, MessageOptions().parseOptions,
                          ["alice@example.com", "bob@example.com"])
        options = MessageOptions()
        options.parseOptions(["alice@example.com", "bob@example.com", "hi",
                              "there"])
        self.assertEqual(options["text"], "hi there")

    def test_passwordFile(self):
        """
        The first line of the password file is the password.
        """
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("s3cret\nignored\n")
        self.assertEqual(readPassword(path), "s3cret")

    def test_passwordStdin(self):
        """
        Without a file, the first line of standard input.
        """
        self.assertEqual(readPassword(None, _TTY("pw\n")), "pw")
        self.assertRaises(usage.UsageError, readPassword, None, _TTY(""))


class CommandTests(TestCase):
    """
    The commands against the real roles on loopback.
    """

    timeout = 60

    @defer.inlineCallbacks
    def setUp(self):
        self.store, self.uris = yield startDeployment(self)
        self.passwordFile = self.mktemp()
        with open(self.passwordFile, "w") as f:
            f.write(PASSWORD + "\n")

    def command(self, optionsClass, argv):
        options = optionsClass()
        options.parseOptions(argv + ["--password-file", self.passwordFile,
                                     "--listen", "udp:0:interface=127.0.0.1",
                                     "--t1", "0.05"])
        options._stdout = io.StringIO()
        return options

    @defer.inlineCallbacks
    def test_register(self):
        """
        register prints each step: the server tried, the challenge, the
        redirect and where to, the home that registered the user; then it
        unregisters and exits 0.
        """
        options = self.command(RegisterOptions, [
            "alice@example.com", "--server", self.uris["distributor"],
            "--duration", "0.1", "--trace"])
        code = yield options.run(reactor)
        self.assertEqual(code, 0)
        out = options._stdout.getvalue()
        home = self.uris["home1"][len("sip:"):]
        distributor = self.uris["distributor"][len("sip:"):]
        self.assertIn(f"REGISTER sip:alice@example.com at {distributor}",
                      out)
        self.assertIn("challenged by", out)
        self.assertIn(f"redirected by {distributor} (UDP) to "
                      f"sip:{home} (signature verified)", out)
        self.assertIn(f"registered at {home} (UDP)", out)
        self.assertIn(f"unregistered at {home}", out)
        self.assertIn("301 Moved Permanently", out)  # the ladder

    @defer.inlineCallbacks
    def test_registerFails(self):
        """
        A failed login is one line on standard error and exit status 1.
        """
        options = self.command(RegisterOptions, [
            "mallory@example.com", "--server", self.uris["distributor"]])
        stderr = io.StringIO()
        code = yield _run(reactor, _Parent(options), io.StringIO(), stderr)
        self.assertEqual(code, 1)
        lines = stderr.getvalue().splitlines()
        self.assertEqual(len(lines), 1)
        self.assertTrue(lines[0].startswith("sipdist register: "
                                            "authentication failed"))

    @defer.inlineCallbacks
    def test_message(self):
        """
        message logs in, sends the MESSAGE and logs out; a refusal is a
        one-line failure.
        """
        options = self.command(MessageOptions, [
            "alice@example.com", "bob@example.com", "hello",
            "--server", self.uris["distributor"]])
        try:
            yield options.run(reactor)
        except CommandError as e:
            # The roles do not relay MESSAGE yet: a one-line refusal.
            self.assertIn("MESSAGE refused", str(e))
        out = options._stdout.getvalue()
        self.assertIn("MESSAGE to sip:bob@example.com", out)
        self.assertIn("unregistered", out)

    @defer.inlineCallbacks
    def test_consoleScript(self):
        """
        The sipdist console script registers through the distributor and
        reaches the assigned home, printing the steps.
        """
        script = os.path.join(os.path.dirname(sys.executable), "sipdist")
        argv = [script, "register", "alice@example.com",
                "--server", self.uris["distributor"],
                "--password-file", self.passwordFile, "--duration", "0.2",
                "--listen", "udp:0:interface=127.0.0.1"]
        if not os.path.exists(script):
            argv = [sys.executable, "-c",
                    "from sipdist.commands.main import main; main()"] + argv[1:]
        env = dict(os.environ)
        code, out, err = yield runProcess(reactor, argv, 30, env=env)
        self.assertEqual(code, 0, err)
        self.assertIn(f"registered at {self.uris['home1'][4:]}", out)


class _Parent:
    """
    What L{sipdist.commands.main._run} reads of the top-level options.
    """

    subCommand = "register"

    def __init__(self, options):
        self.subOptions = options


class LadderTransportTests(SynchronousTestCase):
    """
    The ladder names the transport of stream peers in their column.
    """

    def test_tlsColumn(self):
        """
        A server reached over TLS is named host:port/TLS.
        """
        lines = []
        flow = _Flow(5061)
        flow.transport = "TLS"
        Ladder(lines.append)("out", Request("REGISTER", "sip:example.com"),
                             flow)
        self.assertEqual(lines[0].split(), ["client", "127.0.0.1:5061/TLS"])
