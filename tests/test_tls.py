# -*- test-case-name: tests.test_tls -*-
"""
Tests for L{sipdist.sip.tls}, L{sipdist.testca} and the C{make-certs} command:
real TLS handshakes with certificates from a generated test CA, in memory and
over loopback sockets.
"""

import io
import ipaddress
import os
import sys

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from OpenSSL import SSL
from service_identity import VerificationError
from zope.interface import implementer
from zope.interface.verify import verifyObject

from twisted.internet.defer import Deferred
from twisted.internet.endpoints import SSL4ClientEndpoint
from twisted.internet.interfaces import (
    IHandshakeListener,
    IOpenSSLClientConnectionCreator,
    IOpenSSLServerConnectionCreator,
    IStreamServerEndpoint,
)
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.ssl import TLSVersion
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactor
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.test.iosim import connectedServerAndClient
from twisted.trial.unittest import SkipTest, SynchronousTestCase, TestCase

from sipdist import testca
from sipdist.commands import certs as certs_cli
from sipdist.commands import main as cli
from sipdist.sip.tls import (
    TLSConfigError,
    clientContextFactory,
    serverContextFactory,
    tlsServerEndpoint,
)


@implementer(IHandshakeListener)
class _Peer(Protocol):
    """
    One end of a test connection: says C{greeting} once the handshake is
    done and records what happens.
    """

    def __init__(self, greeting=b""):
        self.greeting = greeting
        self.handshook = False
        self.peerCertificate = None
        self.received = b""
        self.lostReason = None
        self.lost = Deferred()

    def handshakeCompleted(self):
        self.handshook = True
        self.peerCertificate = self.transport.getPeerCertificate()
        self.version = self.transport.getHandle().get_protocol_version_name()
        if self.greeting:
            self.transport.write(self.greeting)

    def dataReceived(self, data):
        self.received += data

    def connectionLost(self, reason):
        self.lostReason = reason
        self.lost.callback(None)


def _handshakeInMemory(serverOptions, clientOptions):
    """
    Connect a TLS client to a TLS server in memory (no sockets) and pump
    until neither side has anything more to say.

    @return: C{(serverPeer, clientPeer)}, both L{_Peer}; the server greets
        with C{b"server"}, the client with C{b"client"}.
    """
    serverPeer = _Peer(b"server")
    clientPeer = _Peer(b"client")
    clock = Clock()
    serverFactory = TLSMemoryBIOFactory(
        serverOptions, False, Factory.forProtocol(lambda: serverPeer),
        clock=clock)
    clientFactory = TLSMemoryBIOFactory(
        clientOptions, True, Factory.forProtocol(lambda: clientPeer),
        clock=clock)
    _, _, pump = connectedServerAndClient(
        lambda: serverFactory.buildProtocol(None),
        lambda: clientFactory.buildProtocol(None),
        clock=clock,
    )
    for _ in range(20):
        if not pump.flush():
            break
    return serverPeer, clientPeer


def _subjectCommonName(pyOpenSSLCertificate):
    certificate = pyOpenSSLCertificate.to_cryptography()
    return certificate.subject.get_attributes_for_oid(
        NameOID.COMMON_NAME)[0].value


class _CertificatesMixin:
    """
    A fresh test CA in a temporary directory for every test.
    """

    def setUp(self):
        self.directory = self.mktemp()
        self.files = testca.makeCA(
            self.directory, names=("server", "client"))

    def path(self, name):
        return os.path.join(self.directory, name)

    def serverOptions(self, name="server", **kw):
        return serverContextFactory(
            self.path(name + ".pem"), self.path(name + ".key"), **kw)


class MakeCATests(_CertificatesMixin, SynchronousTestCase):
    """
    Tests for L{testca.makeCA}.
    """

    def load(self, name):
        with open(self.path(name), "rb") as f:
            return x509.load_pem_x509_certificates(f.read())

    def test_files(self):
        """
        makeCA writes the CA, one certificate and key per name, the other CA
        with a leaf, and the wrong-host certificate, and returns their paths.
        """
        expected = {
            base + ext
            for base in ("ca", "other-ca", "other", "wronghost", "server",
                         "client")
            for ext in (".pem", ".key")
        }
        self.assertEqual(set(self.files), expected)
        self.assertEqual(sorted(os.listdir(self.directory)), sorted(expected))
        for base, path in self.files.items():
            self.assertEqual(path, self.path(base))

    def test_keysPrivate(self):
        """
        Key files are readable by their owner only.
        """
        for base, path in self.files.items():
            if base.endswith(".key"):
                self.assertEqual(os.stat(path).st_mode & 0o777, 0o600)

    def test_leafChainAndNames(self):
        """
        A leaf file holds the leaf followed by the CA certificate; the leaf
        names every host as DNS or IP subjectAltName and allows server and
        client authentication; the key is EC P-256.
        """
        leaf, issuer = self.load("server.pem")
        (ca,) = self.load("ca.pem")
        self.assertEqual(issuer, ca)
        self.assertEqual(leaf.issuer, ca.subject)
        san = leaf.extensions.get_extension_for_class(
            x509.SubjectAlternativeName).value
        self.assertEqual(san.get_values_for_type(x509.DNSName), ["localhost"])
        self.assertEqual(
            san.get_values_for_type(x509.IPAddress),
            [ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")])
        eku = leaf.extensions.get_extension_for_class(
            x509.ExtendedKeyUsage).value
        self.assertEqual(
            list(eku),
            [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH])
        with open(self.path("server.key"), "rb") as f:
            key = serialization.load_pem_private_key(f.read(), None)
        self.assertEqual(key.curve.name, "secp256r1")

    def test_caIsCA(self):
        """
        The CA certificates are CAs; the leaves are not.
        """
        for name in ("ca.pem", "other-ca.pem"):
            (certificate,) = self.load(name)
            self.assertTrue(certificate.extensions.get_extension_for_class(
                x509.BasicConstraints).value.ca)
        leaf = self.load("server.pem")[0]
        self.assertFalse(leaf.extensions.get_extension_for_class(
            x509.BasicConstraints).value.ca)

    def test_otherCAIndependent(self):
        """
        The other CA is a different CA, and issued C{other.pem}.
        """
        (ca,) = self.load("ca.pem")
        (other,) = self.load("other-ca.pem")
        self.assertNotEqual(ca.subject, other.subject)
        self.assertNotEqual(ca.public_key(), other.public_key())
        self.assertEqual(self.load("other.pem")[0].issuer, other.subject)

    def test_wrongHost(self):
        """
        C{wronghost.pem} is issued by the right CA for C{wrong.example} only.
        """
        leaf = self.load("wronghost.pem")[0]
        (ca,) = self.load("ca.pem")
        self.assertEqual(leaf.issuer, ca.subject)
        san = leaf.extensions.get_extension_for_class(
            x509.SubjectAlternativeName).value
        self.assertEqual(list(san), [x509.DNSName("wrong.example")])

    def test_customHosts(self):
        """
        Hosts given are all in the leaf's subjectAltName.
        """
        directory = self.mktemp()
        testca.makeCA(directory, hosts=("home1.example", "192.0.2.7"),
                      names=("home1",))
        with open(os.path.join(directory, "home1.pem"), "rb") as f:
            leaf = x509.load_pem_x509_certificates(f.read())[0]
        san = leaf.extensions.get_extension_for_class(
            x509.SubjectAlternativeName).value
        self.assertEqual(list(san), [
            x509.DNSName("home1.example"),
            x509.IPAddress(ipaddress.ip_address("192.0.2.7")),
        ])

    def test_badArguments(self):
        """
        A reserved or path-like name, or no hosts, is refused.
        """
        for kw in ({"names": ("ca",)}, {"names": ("a/b",)}, {"names": ()},
                   {"hosts": ()}):
            self.assertRaises(ValueError, testca.makeCA, self.mktemp(), **kw)


class MakeCertsCommandTests(SynchronousTestCase):
    """
    Tests for C{sipdist make-certs}.
    """

    def test_registered(self):
        """
        The command line knows C{make-certs}.
        """
        self.assertIn("sipdist.commands.certs", cli.COMMAND_MODULES)
        names = [c[0] for c in cli.Options().subCommands]
        self.assertIn("make-certs", names)

    def runCommand(self, argv):
        options = cli.Options()
        options.parseOptions(argv)
        stdout, stderr = io.StringIO(), io.StringIO()
        self.patch(sys, "stdout", stdout)
        code = cli._run(None, options, stdout, stderr)
        return code, stdout.getvalue(), stderr.getvalue()

    def test_makeCerts(self):
        """
        C{make-certs DIR --host H --name N} writes the CA and a certificate
        for each name valid for the hosts given, printing the paths.
        """
        directory = self.mktemp()
        code, out, err = self.runCommand(
            ["make-certs", directory, "--host", "sip.example",
             "--name", "home1", "--name=home2"])
        self.assertEqual((code, err), (0, ""))
        self.assertIn(os.path.join(directory, "home2.key"), out.split("\n"))
        with open(os.path.join(directory, "home1.pem"), "rb") as f:
            leaf = x509.load_pem_x509_certificates(f.read())[0]
        san = leaf.extensions.get_extension_for_class(
            x509.SubjectAlternativeName).value
        self.assertEqual(list(san), [x509.DNSName("sip.example")])

    def test_defaults(self):
        """
        Without options, C{server.pem} is written for the loopback names.
        """
        options = certs_cli.MakeCertsOptions()
        options.parseOptions(["dir"])
        self.assertEqual(options["hosts"], testca.DEFAULT_HOSTS)
        self.assertEqual(options["names"], ("server",))

    def test_reservedName(self):
        """
        A reserved name is a one-line error and exit status 1.
        """
        code, out, err = self.runCommand(["make-certs", self.mktemp(),
                                   "--name", "ca"])
        self.assertEqual(code, 1)
        self.assertEqual(
            err, "sipdist make-certs: certificate name 'ca' is reserved\n")


class ConfigErrorTests(_CertificatesMixin, SynchronousTestCase):
    """
    Configuration mistakes are L{TLSConfigError}s naming the file.
    """

    def assertConfigError(self, path, fragment, f, *args, **kw):
        error = self.assertRaises(TLSConfigError, f, *args, **kw)
        self.assertEqual(error.path, path)
        self.assertIn(fragment, str(error))
        self.assertTrue(str(error).startswith(path + ": "))
        self.assertNotIn("\n", str(error))

    def test_interfaces(self):
        """
        The factories provide Twisted's connection creator interfaces and the
        endpoint helper gives a stream server endpoint.
        """
        server = self.serverOptions()
        if not IOpenSSLServerConnectionCreator.implementedBy(type(server)):
            raise SkipTest(
                "this Twisted's CertificateOptions does not provide "
                "IOpenSSLServerConnectionCreator (Twisted 26.4 and later do; "
                "PyPy 3.9 gets Twisted 25.5, see setup.cfg); Twisted wraps "
                "it for listenSSL, as the handshake tests show")
        self.assertTrue(verifyObject(IOpenSSLServerConnectionCreator, server))
        client = clientContextFactory("localhost", self.path("ca.pem"))
        self.assertTrue(verifyObject(IOpenSSLClientConnectionCreator, client))
        endpoint = tlsServerEndpoint(MemoryReactor(), 5061, "127.0.0.1",
                                     server)
        self.assertTrue(verifyObject(IStreamServerEndpoint, endpoint))

    def test_endpointListens(self):
        """
        The endpoint listens with TLS on the port and interface given.
        """
        reactor = MemoryReactor()
        server = self.serverOptions()
        tlsServerEndpoint(reactor, 5061, "::1", server).listen(Factory())
        ((port, factory, contextFactory, backlog, interface),) = (
            reactor.sslServers)
        self.assertEqual((port, interface), (5061, "::1"))
        self.assertIs(contextFactory, server)

    def test_minimumTLS12(self):
        """
        TLS 1.0 and 1.1 are disabled.
        """
        context = self.serverOptions().getContext()
        options = context.set_options(0)
        self.assertTrue(options & SSL.OP_NO_TLSv1)
        self.assertTrue(options & SSL.OP_NO_TLSv1_1)

    def test_missingCertificate(self):
        """
        A missing certificate file is reported.
        """
        path = self.path("nope.pem")
        self.assertConfigError(path, "does not exist", serverContextFactory,
                               path, self.path("server.key"))

    def test_missingKey(self):
        """
        A missing key file is reported.
        """
        path = self.path("nope.key")
        self.assertConfigError(path, "does not exist", serverContextFactory,
                               self.path("server.pem"), path)

    def test_directory(self):
        """
        A directory given as a file is reported.
        """
        self.assertConfigError(self.directory, "is a directory",
                               serverContextFactory, self.directory,
                               self.path("server.key"))

    def test_unreadable(self):
        """
        A file that cannot be read is reported.
        """
        if os.getuid() == 0:
            raise self.skipTest("root reads every file")
        os.chmod(self.path("server.key"), 0)
        self.assertConfigError(self.path("server.key"), "not readable",
                               serverContextFactory, self.path("server.pem"),
                               self.path("server.key"))

    def test_notACertificate(self):
        """
        A key given as certificate is reported.
        """
        self.assertConfigError(
            self.path("server.key"), "holds no PEM certificate",
            serverContextFactory, self.path("server.key"),
            self.path("server.key"))

    def test_corruptCertificate(self):
        """
        A PEM block that does not decode is reported.
        """
        path = self.path("bad.pem")
        with open(path, "w") as f:
            f.write("-----BEGIN CERTIFICATE-----\nabc\n"
                    "-----END CERTIFICATE-----\n")
        self.assertConfigError(path, "invalid PEM certificate",
                               serverContextFactory, path,
                               self.path("server.key"))

    def test_notAKey(self):
        """
        A certificate given as key is reported.
        """
        self.assertConfigError(
            self.path("server.pem"), "holds no PEM private key",
            serverContextFactory, self.path("server.pem"),
            self.path("server.pem"))

    def test_encryptedKey(self):
        """
        An encrypted key is reported.
        """
        with open(self.path("server.key"), "rb") as f:
            key = serialization.load_pem_private_key(f.read(), None)
        path = self.path("encrypted.key")
        with open(path, "wb") as f:
            f.write(key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                serialization.BestAvailableEncryption(b"secret")))
        self.assertConfigError(path, "encrypted", serverContextFactory,
                               self.path("server.pem"), path)

    def test_mismatchedKey(self):
        """
        A key that is not the certificate's is reported on the key file.
        """
        self.assertConfigError(
            self.path("client.key"), "does not match",
            serverContextFactory, self.path("server.pem"),
            self.path("client.key"))

    def test_missingCA(self):
        """
        A missing CA file is reported, on both sides.
        """
        path = self.path("nope-ca.pem")
        self.assertConfigError(path, "CA certificate file does not exist",
                               self.serverOptions, caCertificates=[path])
        self.assertConfigError(path, "CA certificate file does not exist",
                               clientContextFactory, "localhost", path)

    def test_requireWithoutCA(self):
        """
        Requiring client certificates without a CA to check them is refused.
        """
        self.assertConfigError(
            self.path("server.pem"), "needs CA certificates",
            self.serverOptions, requireClientCertificate=True)

    def test_clientCertificateWithoutKey(self):
        """
        A client certificate without its key is refused.
        """
        self.assertConfigError(
            self.path("client.pem"), "together", clientContextFactory,
            "localhost", self.path("ca.pem"),
            clientCertificate=self.path("client.pem"))

    def test_clientMismatchedKey(self):
        """
        A client key that is not the client certificate's is reported.
        """
        self.assertConfigError(
            self.path("server.key"), "does not match", clientContextFactory,
            "localhost", self.path("ca.pem"), self.path("client.pem"),
            self.path("server.key"))


class InMemoryHandshakeTests(_CertificatesMixin, SynchronousTestCase):
    """
    Real TLS handshakes between L{serverContextFactory} and
    L{clientContextFactory} over memory transports.
    """

    def assertConnected(self, server, client):
        self.assertTrue(server.handshook)
        self.assertTrue(client.handshook)
        self.assertEqual(server.received, b"client")
        self.assertEqual(client.received, b"server")

    def assertRefused(self, server, client, *errors):
        """
        The server never got the client's data and the connection is gone
        on both sides, the client's for one of C{errors}.
        """
        self.assertEqual(server.received, b"")
        self.assertIsNotNone(server.lostReason)
        self.assertIsNotNone(client.lostReason)
        self.assertEqual(client.received, b"")
        if errors:
            self.assertTrue(client.lostReason.check(*errors),
                            client.lostReason)

    def test_rightCA(self):
        """
        A client trusting the CA that issued the server certificate connects
        to it by DNS name.
        """
        server, client = _handshakeInMemory(
            self.serverOptions(),
            clientContextFactory("localhost", self.path("ca.pem")))
        self.assertConnected(server, client)
        self.assertEqual(_subjectCommonName(client.peerCertificate), "server")

    def test_ipAddress(self):
        """
        An IP address is checked against the IP subjectAltName entries.
        """
        for address in ("127.0.0.1", "::1"):
            server, client = _handshakeInMemory(
                self.serverOptions(),
                clientContextFactory(address, [self.path("ca.pem")]))
            self.assertConnected(server, client)

    def test_ipAddressNotListed(self):
        """
        An IP address missing from the certificate is refused.
        """
        server, client = _handshakeInMemory(
            self.serverOptions(),
            clientContextFactory("127.0.0.2", [self.path("ca.pem")]))
        self.assertRefused(server, client, VerificationError)

    def test_otherCA(self):
        """
        A client trusting another CA refuses the server.
        """
        server, client = _handshakeInMemory(
            self.serverOptions(),
            clientContextFactory("localhost", self.path("other-ca.pem")))
        self.assertRefused(server, client, SSL.Error)

    def test_wrongHostname(self):
        """
        A certificate from the right CA for another host name is refused.
        """
        server, client = _handshakeInMemory(
            self.serverOptions("wronghost"),
            clientContextFactory("localhost", self.path("ca.pem")))
        self.assertRefused(server, client, VerificationError)

    def test_wrongHostnameRightName(self):
        """
        The same certificate is accepted for the name it carries.
        """
        server, client = _handshakeInMemory(
            self.serverOptions("wronghost"),
            clientContextFactory("wrong.example", self.path("ca.pem")))
        self.assertConnected(server, client)

    def test_mutualTLS(self):
        """
        A server requiring client certificates accepts a client presenting
        one from its CA, and sees who it is.
        """
        server, client = _handshakeInMemory(
            self.serverOptions(caCertificates=[self.path("ca.pem")],
                               requireClientCertificate=True),
            clientContextFactory("localhost", self.path("ca.pem"),
                                 self.path("client.pem"),
                                 self.path("client.key")))
        self.assertConnected(server, client)
        self.assertEqual(_subjectCommonName(server.peerCertificate), "client")

    def test_mutualTLSWithoutClientCertificate(self):
        """
        A server requiring client certificates refuses a client without one.
        """
        server, client = _handshakeInMemory(
            self.serverOptions(caCertificates=self.path("ca.pem"),
                               requireClientCertificate=True),
            clientContextFactory("localhost", self.path("ca.pem")))
        self.assertRefused(server, client)
        self.assertFalse(server.handshook)

    def test_mutualTLSOtherCA(self):
        """
        A server requiring client certificates refuses one from another CA.
        """
        server, client = _handshakeInMemory(
            self.serverOptions(caCertificates=self.path("ca.pem"),
                               requireClientCertificate=True),
            clientContextFactory("localhost", self.path("ca.pem"),
                                 self.path("other.pem"),
                                 self.path("other.key")))
        self.assertRefused(server, client)
        self.assertFalse(server.handshook)

    def test_tls13ByDefault(self):
        """
        Without a maximum, the best version (TLS 1.3) is negotiated.
        """
        server, client = _handshakeInMemory(
            self.serverOptions(),
            clientContextFactory("localhost", self.path("ca.pem")))
        self.assertEqual((server.version, client.version),
                         ("TLSv1.3", "TLSv1.3"))

    def test_maximumVersion(self):
        """
        C{maximumVersion} caps the version the server negotiates.
        """
        server, client = _handshakeInMemory(
            self.serverOptions(maximumVersion=TLSVersion.TLSv1_2),
            clientContextFactory("localhost", self.path("ca.pem")))
        self.assertConnected(server, client)
        self.assertEqual((server.version, client.version),
                         ("TLSv1.2", "TLSv1.2"))

    def test_optionalClientCertificate(self):
        """
        With CAs but no requirement, a client without certificate connects,
        and one with a certificate is identified.
        """
        options = self.serverOptions(caCertificates=self.path("ca.pem"))
        server, client = _handshakeInMemory(
            options, clientContextFactory("localhost", self.path("ca.pem")))
        self.assertConnected(server, client)
        self.assertIsNone(server.peerCertificate)
        server, client = _handshakeInMemory(
            options,
            clientContextFactory("localhost", self.path("ca.pem"),
                                 self.path("client.pem"),
                                 self.path("client.key")))
        self.assertConnected(server, client)
        self.assertEqual(_subjectCommonName(server.peerCertificate), "client")


class LoopbackHandshakeTests(_CertificatesMixin, TestCase):
    """
    A TLS handshake over a real loopback socket with the real reactor.
    """

    timeout = 30

    async def test_loopback(self):
        """
        A client connects to L{tlsServerEndpoint} on 127.0.0.1 with mutual
        TLS, both sides exchange data and see each other's certificate.
        """
        from twisted.internet import reactor

        serverPeer = _Peer(b"server")
        clientPeer = _Peer(b"client")
        serverPeer.done = Deferred()
        endpoint = tlsServerEndpoint(
            reactor, 0, "127.0.0.1",
            self.serverOptions(caCertificates=[self.path("ca.pem")],
                               requireClientCertificate=True))
        port = await endpoint.listen(Factory.forProtocol(lambda: serverPeer))
        self.addCleanup(port.stopListening)

        clientEndpoint = SSL4ClientEndpoint(
            reactor, "127.0.0.1", port.getHost().port,
            clientContextFactory("localhost", self.path("ca.pem"),
                                 self.path("client.pem"),
                                 self.path("client.key")),
            timeout=10)
        original = serverPeer.dataReceived

        def serverReceived(data):
            original(data)
            if serverPeer.received == b"client":
                serverPeer.transport.loseConnection()

        serverPeer.dataReceived = serverReceived
        await clientEndpoint.connect(Factory.forProtocol(lambda: clientPeer))
        await clientPeer.lost
        await serverPeer.lost
        self.assertEqual(serverPeer.received, b"client")
        self.assertEqual(clientPeer.received, b"server")
        self.assertEqual(_subjectCommonName(serverPeer.peerCertificate),
                         "client")
        self.assertEqual(_subjectCommonName(clientPeer.peerCertificate),
                         "server")
