"""
Tests for L{sipdist.tap}: C{twistd sipdist} options.
"""

from twisted.application.service import IService
from twisted.internet.testing import MemoryReactorClock
from twisted.python import usage
from twisted.python.filepath import FilePath
from twisted.trial.unittest import SynchronousTestCase

from sipdist.tap import DEFAULT_LISTEN, Options, makeService
from tests.test_transport import FakeRlimit


def parse(*argv):
    options = Options()
    options.parseOptions(list(argv))
    return options


class OptionsTests(SynchronousTestCase):
    """
    Parsing and validating the options.
    """

    def test_defaults(self):
        """
        A home server needs only its name; it listens on loopback UDP and
        TCP port 5060 with an in-memory store.
        """
        options = parse("--name=home1")
        self.assertEqual(options["role"], "home")
        self.assertEqual(options["listen"], DEFAULT_LISTEN)
        self.assertEqual(options["store"], "memory:")
        self.assertEqual(options["max-message-size"], 65535)

    def test_roles(self):
        """
        Every role is accepted; roles other than home default their name.
        """
        for role in ("distributor", "edge", "internal-edge"):
            self.assertEqual(parse(f"--role={role}")["name"], role)
        self.assertEqual(parse("--role=home", "--name=h")["name"], "h")

    def test_overloadRetrySpread(self):
        """
        --overload-retry-spread bounds the spread of the overloaded 503s'
        Retry-After (30 s by default; 0 turns it off).
        """
        self.assertEqual(parse("--name=h")["overload-retry-spread"], 30)
        self.assertEqual(
            parse("--name=h",
                  "--overload-retry-spread=0")["overload-retry-spread"], 0)

    def test_repeatableListen(self):
        """
        --listen may be given several times.
        """
        options = parse("--name=h", "--listen=udp:5070:interface=127.0.0.1",
                        "--listen=tcp:5070")
        self.assertEqual(options["listen"],
                         ["udp:5070:interface=127.0.0.1", "tcp:5070"])

    def assertUsageError(self, fragment, *argv):
        error = self.assertRaises(usage.UsageError, parse, *argv)
        self.assertIn(fragment, str(error))
        self.assertNotIn("\n", str(error))

    def test_errors(self):
        """
        Every bad option is one line naming the option.
        """
        self.assertUsageError("--role: 'proxy' is not one of",
                              "--role=proxy", "--name=x")
        self.assertUsageError("--name: a home server needs", "--role=home")
        self.assertUsageError("--listen: 'http:80'", "--name=h", "--listen=http:80")
        self.assertUsageError("needs one port number", "--name=h", "--listen=udp:x")
        self.assertUsageError("--max-message-size: '0'", "--name=h",
                              "--max-message-size=0")
        self.assertUsageError("--idle-timeout: 'soon'", "--name=h",
                              "--idle-timeout=soon")
        self.assertUsageError("--overload-retry-spread: '-1'", "--name=h",
                              "--overload-retry-spread=-1")
        self.assertUsageError("--store: no store provider for 'nosuch:'",
                              "--name=h", "--store=nosuch:x")
        self.assertUsageError("needs --tls-cert and --tls-key", "--name=h",
                              "--listen=sips:5061")
        self.assertUsageError("--tls-cert and --tls-key go together",
                              "--name=h", "--tls-cert=x.pem")
        self.assertUsageError("--config: /nonexistent.toml", "--name=h",
                              "--config=/nonexistent.toml")

    def test_redirectAndDigestDefaults(self):
        """
        By default the policy is auto with no User-Agent patterns, standard
        clients are challenged with MD5 alone and clients with the option
        tag with SHA-256 then MD5 (when the server is built).
        """
        options = parse("--name=h")
        self.assertEqual(options["redirect-policy"], "auto")
        self.assertEqual(options["redirect-user-agent"], [])
        self.assertEqual(options["digest-algorithms"], ["MD5"])
        self.assertIsNone(options["tagged-digest-algorithms"])

    def test_redirectUserAgent(self):
        """
        --redirect-user-agent is repeatable and must be a regular
        expression.
        """
        options = parse("--name=h", "--redirect-user-agent=^Acme/",
                        "--redirect-user-agent=MyPhone [0-9]")
        self.assertEqual(options["redirect-user-agent"],
                         ["^Acme/", "MyPhone [0-9]"])
        self.assertUsageError("--redirect-user-agent: '(' is not a regular",
                              "--name=h", "--redirect-user-agent=(")

    def test_digestAlgorithms(self):
        """
        Both algorithm lists are parsed and checked.
        """
        options = parse("--name=h", "--digest-algorithms=MD5, SHA-256",
                        "--tagged-digest-algorithms=SHA-256")
        self.assertEqual(options["digest-algorithms"], ["MD5", "SHA-256"])
        self.assertEqual(options["tagged-digest-algorithms"], ["SHA-256"])
        self.assertUsageError("--tagged-digest-algorithms: 'SHA-1'",
                              "--name=h", "--tagged-digest-algorithms=SHA-1")
        self.assertUsageError("--digest-algorithms: ''", "--name=h",
                              "--digest-algorithms=")

    def test_tlsFilesChecked(self):
        """
        A TLS certificate that cannot be read is reported at option time.
        """
        self.assertUsageError("/no/cert.pem", "--name=h",
                              "--tls-cert=/no/cert.pem", "--tls-key=/no/key.pem")


class ConfigFileTests(SynchronousTestCase):
    """
    Options from a TOML file.
    """

    def write(self, text):
        path = FilePath(self.mktemp())
        path.makedirs()
        config = path.child("sipdist.toml")
        config.setContent(text.encode("utf-8"))
        return config.path

    def test_fileValues(self):
        """
        Values in the file are used; relative file-store paths are relative
        to the file.
        """
        path = self.write(
            'role = "distributor"\nname = "dist1"\n'
            'listen = ["udp:5090"]\nstore = "file:assignments.conf"\n'
            'max_message_size = 4096\n')
        options = parse(f"--config={path}")
        self.assertEqual(options["role"], "distributor")
        self.assertEqual(options["listen"], ["udp:5090"])
        self.assertEqual(options["max-message-size"], 4096)
        self.assertEqual(
            options["store"],
            "file:" + FilePath(path).sibling("assignments.conf").path)

    def test_redirectUserAgentsInFile(self):
        """
        redirect_user_agent in the file is a list of patterns (or one).
        """
        path = self.write('name = "h"\n'
                          'redirect_user_agent = ["^Acme/", "^Other"]\n')
        self.assertEqual(parse("--config", path)["redirect-user-agent"],
                         ["^Acme/", "^Other"])
        path = self.write('name = "h"\nredirect_user_agent = "("\n')
        error = self.assertRaises(usage.UsageError, parse, "--config", path)
        self.assertIn("--redirect-user-agent", str(error))

    def test_commandLineOverrides(self):
        """
        The command line overrides the file.
        """
        path = self.write('role = "distributor"\nlisten = ["udp:5090"]\n')
        options = parse(f"--config={path}", "--role=edge", "--listen=tcp:1")
        self.assertEqual((options["role"], options["listen"]), ("edge", ["tcp:1"]))

    def test_badFile(self):
        """
        A file that is not TOML, an unknown key or a bad value is one line.
        """
        error = self.assertRaises(usage.UsageError, parse,
                                  f"--config={self.write('role = ')}")
        self.assertIn("sipdist.toml", str(error))
        error = self.assertRaises(usage.UsageError, parse,
                                  f"--config={self.write('colour = 1')}")
        self.assertIn("unknown option 'colour'", str(error))
        error = self.assertRaises(usage.UsageError, parse,
                                  f"--config={self.write('name = 5')}")
        self.assertIn("--name: 5 is not text", str(error))


class UDPMemoryReactor(MemoryReactorClock):
    """
    L{MemoryReactorClock} plus the UDP ports it was asked to listen on.
    """

    def __init__(self):
        MemoryReactorClock.__init__(self)
        self.udpPorts = {}

    def listenUDP(self, port, protocol, interface="", maxPacketSize=8192):
        self.udpPorts[port] = (protocol, interface)
        reactor = self

        class Port:
            def stopListening(self):
                del reactor.udpPorts[port]

            def getHost(self):
                from twisted.internet.address import IPv4Address
                return IPv4Address("UDP", interface or "0.0.0.0", port)

        return Port()


class ShippedConfigTests(SynchronousTestCase):
    """
    The deployment shipped in etc/ keeps the defaults that standard SIP
    clients work with (the interop tests run with these defaults).
    """

    def test_clientDefaults(self):
        """
        No shipped configuration overrides the redirect policy, the
        User-Agent patterns or the Digest algorithms.
        """
        from sipdist.tap import loadConfig
        etc = FilePath(__file__).parent().parent().child("etc")
        files = etc.globChildren("*.toml")
        self.assertGreaterEqual(len(files), 3)
        for config in files:
            options = loadConfig(config.path)
            for name in ("redirect-policy", "redirect-user-agent",
                         "digest-algorithms", "tagged-digest-algorithms"):
                self.assertNotIn(name, options, config.basename())


class MakeServiceTests(SynchronousTestCase):
    """
    L{makeService} builds a service on the reactor it is given.
    """

    def test_service(self):
        """
        The service listens on the given reactor when started, and stops.
        """
        reactor = UDPMemoryReactor()
        service = makeService(parse("--name=h", "--listen=udp:5070",
                                    "--listen=tcp:5071"), reactor,
                              FakeRlimit(65536, 65536))
        self.assertTrue(IService.providedBy(service))
        service.startService()
        self.assertEqual(list(reactor.udpPorts), [5070])
        self.assertEqual(reactor.tcpServers[0][0], 5071)
        service.stopService()
        self.assertEqual(reactor.udpPorts, {})

    def test_jitParameters(self):
        """
        The server sets PyPy's JIT parameters of C{--pypy-jit} (sipdist's
        default without it) when it is built; C{default} leaves PyPy's.
        """
        from sipdist.jitparams import DEFAULT
        from tests.test_jitparams import FakeJIT
        for argument, expected in (((), [DEFAULT]),
                                   (("--pypy-jit=threshold=900",),
                                    ["threshold=900"]),
                                   (("--pypy-jit=default",), [])):
            jit = FakeJIT()
            makeService(parse("--name=h", "--listen=udp:5070", *argument),
                        UDPMemoryReactor(), FakeRlimit(65536, 65536),
                        jit=jit)
            self.assertEqual(jit.params, expected)

    def test_connectionLimitsWired(self):
        """
        The connection limits given as options reach the transport.
        """
        config = parse("--name=h", "--listen=udp:5070", "--header-timeout=2",
                       "--message-timeout=7", "--max-buffered=1000000",
                       "--idle-timeout=60")
        service = makeService(config, UDPMemoryReactor(),
                              FakeRlimit(65536, 65536))
        [server] = list(service)
        transport = server.transport
        self.assertEqual(
            (transport.headerTimeout, transport.messageTimeout,
             transport.maxBuffered, transport.idleTimeout),
            (2.0, 7.0, 1000000, 60.0))
        defaults = parse("--name=h")
        self.assertEqual(
            (defaults["header-timeout"], defaults["message-timeout"],
             defaults["max-buffered"]), (10.0, 30.0, 64 * 1024 * 1024))
        self.assertRaises(usage.UsageError, parse, "--name=h",
                          "--header-timeout=0")

    def test_connectionsFitFileLimit(self):
        """
        The server's limit of connections is lowered to what the limit of
        open files allows.
        """
        config = parse("--name=h", "--listen=udp:5070",
                       "--max-connections=5000")
        service = makeService(config, UDPMemoryReactor(),
                              FakeRlimit(1024, 1024))
        [server] = list(service)
        self.assertEqual(server.transport.maxConnections, 960)
