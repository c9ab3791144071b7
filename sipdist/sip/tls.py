# -*- test-case-name: tests.test_tls -*-
"""
TLS configuration: server and client connection creators built from PEM
files, for the SIP server's TLS listeners, for connections between servers
and for the client.

All files are read when the factory is built, so a configuration mistake is
reported at start-up as one line naming the file (L{TLSConfigError}), never
as a handshake failure later.  TLS 1.2 is the minimum version everywhere.

    serverTLS = serverContextFactory("server.pem", "server.key",
                                     caCertificates=["ca.pem"],
                                     requireClientCertificate=True)
    endpoint = tlsServerEndpoint(reactor, 5061, "127.0.0.1", serverTLS)

    clientTLS = clientContextFactory("home1.example", ["ca.pem"])
    SSL4ClientEndpoint(reactor, "home1.example", 5061, clientTLS)
"""

import os

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from OpenSSL import SSL, crypto
from twisted.internet.endpoints import SSL4ServerEndpoint
from twisted.internet.interfaces import IOpenSSLServerConnectionCreator
from twisted.internet.ssl import (
    Certificate,
    CertificateOptions,
    TLSVersion,
    optionsForClientTLS,
    platformTrust,
    trustRootFromCertificates,
)
from zope.interface import implementer

MINIMUM_TLS_VERSION = TLSVersion.TLSv1_2


class TLSConfigError(ValueError):
    """
    A TLS file is missing, unreadable, malformed or does not fit with the
    others.  C{str(error)} is one line: C{"PATH: what is wrong"}.

    @ivar path: the file at fault.
    """

    def __init__(self, path, problem):
        ValueError.__init__(self, f"{path}: {problem}")
        self.path = path
        self.problem = problem


def _readFile(path, what):
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        raise TLSConfigError(path, f"{what} file does not exist") from None
    except IsADirectoryError:
        raise TLSConfigError(path, f"{what} file is a directory") from None
    except PermissionError:
        raise TLSConfigError(
            path, f"{what} file is not readable (permission denied)") from None
    except OSError as e:
        raise TLSConfigError(
            path, f"{what} file cannot be read ({e.strerror})") from None


def loadCertificates(path, what="certificate"):
    """
    Read every PEM certificate in a file, in order.

    @param path: a PEM file holding one or more certificates.
    @param what: how the file is named in errors.

    @return: a non-empty L{list} of L{cryptography.x509.Certificate}.

    @raise TLSConfigError: if the file cannot be read or holds no valid
        certificate.
    """
    data = _readFile(path, what)
    if b"-----BEGIN CERTIFICATE-----" not in data:
        raise TLSConfigError(path, f"{what} file holds no PEM certificate")
    try:
        return x509.load_pem_x509_certificates(data)
    except ValueError:
        raise TLSConfigError(
            path, f"{what} file holds an invalid PEM certificate") from None


def loadPrivateKey(path):
    """
    Read a PEM private key (PKCS#8, traditional RSA or EC; unencrypted).

    @return: a L{cryptography} private key.

    @raise TLSConfigError: if the file cannot be read, holds no key, or the
        key is encrypted.
    """
    data = _readFile(path, "private key")
    if b"PRIVATE KEY-----" not in data:
        raise TLSConfigError(path, "private key file holds no PEM private key")
    try:
        return serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise TLSConfigError(
            path, "private key is encrypted; an unencrypted key is needed"
        ) from None
    except (ValueError, serialization.UnsupportedAlgorithm):
        raise TLSConfigError(
            path, "private key file holds an invalid or unsupported key"
        ) from None


def _publicBytes(publicKey):
    return publicKey.public_bytes(
        serialization.Encoding.DER,
        serialization.PublicFormat.SubjectPublicKeyInfo,
    )


def _loadKeyPair(certificatePath, keyPath):
    """
    Load a certificate chain and its key, checking that they belong together.

    @return: C{(leaf, chain, key)}: the leaf, the rest of the chain as a
        L{list} and the key, all as L{cryptography} objects (pyOpenSSL takes
        them directly, and deprecates its own C{X509}/C{PKey} there).
    """
    certificates = loadCertificates(certificatePath)
    key = loadPrivateKey(keyPath)
    leaf = certificates[0]
    if _publicBytes(leaf.public_key()) != _publicBytes(key.public_key()):
        raise TLSConfigError(
            keyPath,
            f"private key does not match the certificate in {certificatePath}",
        )
    chain = certificates[1:]
    if _OLD_PYOPENSSL:
        leaf = crypto.X509.from_cryptography(leaf)
        chain = [crypto.X509.from_cryptography(c) for c in chain]
        key = crypto.PKey.from_cryptography_key(key)
    return leaf, chain, key


def _pyOpenSSLVersion():
    from OpenSSL import __version__
    try:
        return tuple(int(part) for part in __version__.split(".")[:2])
    except ValueError:
        return (0, 0)


# pyOpenSSL before 24.3 (the one PyPy 3.9 installs: see setup.cfg) takes
# only its own X509 and PKey objects, not cryptography's.
_OLD_PYOPENSSL = _pyOpenSSLVersion() < (24, 3)


def _loadAuthorities(caCertificates):
    """
    Load CA certificates from one path or a sequence of paths.

    @return: a L{list} of pyOpenSSL C{X509}.
    """
    if isinstance(caCertificates, (str, bytes)):
        caCertificates = [caCertificates]
    authorities = []
    for path in caCertificates:
        for certificate in loadCertificates(path, "CA certificate"):
            authorities.append(crypto.X509.from_cryptography(certificate))
    return authorities


def serverContextFactory(certificate, privateKey, caCertificates=(),
                         requireClientCertificate=False, maximumVersion=None):
    """
    Build the TLS options of a server.

    @param certificate: path of a PEM file holding the server certificate,
        optionally followed by intermediate certificates (sent to peers).
    @param privateKey: path of the PEM file holding its unencrypted key.
    @param caCertificates: path, or sequence of paths, of PEM files with the
        CA certificates client certificates are verified against.  When
        given and C{requireClientCertificate} is false, a client certificate
        is optional but verified if presented.
    @param requireClientCertificate: refuse clients without a certificate
        issued by one of C{caCertificates} (mutual TLS).
    @param maximumVersion: a L{TLSVersion} to cap the protocol version at,
        or L{None} for the best available.  C{TLSVersion.TLSv1_2} is needed
        for sipsak 0.9.8.1, which cannot read responses after the TLS 1.3
        session tickets OpenSSL sends.

    @return: an L{IOpenSSLServerConnectionCreator} (a L{CertificateOptions})
        for L{SSL4ServerEndpoint}, L{wrapServerTLS}, C{listenSSL} or
        L{TLSMemoryBIOFactory}.

    @raise TLSConfigError: for a missing, unreadable or malformed file, a key
        not matching the certificate, or a required client certificate
        without any CA to verify it.
    """
    leaf, chain, key = _loadKeyPair(certificate, privateKey)
    authorities = _loadAuthorities(caCertificates)
    if requireClientCertificate and not authorities:
        raise TLSConfigError(
            certificate,
            "requiring client certificates needs CA certificates to verify "
            "them",
        )
    return CertificateOptions(
        privateKey=key,
        certificate=leaf,
        extraCertChain=chain,
        verify=bool(authorities),
        caCerts=authorities or None,
        requireCertificate=requireClientCertificate,
        raiseMinimumTo=MINIMUM_TLS_VERSION,
        lowerMaximumSecurityTo=_twistedMaximum(maximumVersion),
    )


@implementer(IOpenSSLServerConnectionCreator)
class ReloadableServerTLS:
    """
    The TLS options of a server's listeners, built by
    L{serverContextFactory} from files that L{reload} reads again (on
    C{SIGHUP}): connections accepted after a reload present the new
    certificate and verify clients against the new CAs; connections open
    already keep theirs.

    @ivar options: the L{CertificateOptions} new connections use.
    """

    def __init__(self, certificate, privateKey, caCertificates=(),
                 requireClientCertificate=False, maximumVersion=None):
        if isinstance(caCertificates, (str, bytes)):
            caCertificates = [caCertificates]
        self._arguments = (certificate, privateKey, tuple(caCertificates),
                           requireClientCertificate, maximumVersion)
        self._stamp = self._files()
        self.options = serverContextFactory(*self._arguments)

    def _files(self):
        """
        What says that a file changed: size, modification time and inode
        of each (C{None} for one that cannot be read).
        """
        certificate, privateKey, authorities = self._arguments[:3]
        stamps = []
        for path in (certificate, privateKey) + authorities:
            try:
                info = os.stat(path)
            except OSError:
                stamps.append(None)
            else:
                stamps.append((info.st_size, info.st_mtime_ns, info.st_ino))
        return stamps

    def reload(self):
        """
        Read the files again if one of them changed.

        @return: whether new options were taken.
        @raise TLSConfigError: the files changed but do not make valid
            options (a key not matching the certificate, say): the options
            in use stay.  The same files are not tried again until one of
            them changes again.
        """
        stamp = self._files()
        if stamp == self._stamp:
            return False
        self._stamp = stamp
        self.options = serverContextFactory(*self._arguments)
        return True

    def serverConnectionForTLS(self, protocol):
        """
        A new TLS connection, with the options in use now.
        """
        options = self.options
        create = getattr(options, "serverConnectionForTLS", None)
        if create is not None:
            return create(protocol)
        # Twisted 25.5 (the one PyPy 3.9 installs): CertificateOptions is
        # only a context factory there.
        connection = SSL.Connection(options.getContext(), None)
        connection.set_app_data(protocol)
        return connection

    def getContext(self):
        """
        The OpenSSL context of the options in use now (for APIs that take
        an old-style context factory).
        """
        return self.options.getContext()


def _twistedMaximum(version):
    """
    What to pass Twisted as C{lowerMaximumSecurityTo} for C{version} to be
    the best version allowed: Twisted before 26.4 (the one PyPy 3.9
    installs, see setup.cfg) allows only the versions below the one it is
    given, so it gets the next one (or none above TLS 1.3).
    """
    if version is None:
        return None
    from twisted.internet import _sslverify
    excluded = getattr(_sslverify, "_getExcludedTLSProtocols", None)
    if excluded is None or version not in excluded(version, version):
        return version
    versions = list(TLSVersion.iterconstants())
    following = versions.index(version) + 1
    return versions[following] if following < len(versions) else None


def clientContextFactory(hostname, caCertificates, clientCertificate=None,
                         clientKey=None):
    """
    Build the TLS options of an outgoing connection, verifying that the
    server's certificate is issued by a trusted CA and names C{hostname}
    (a DNS name, or an IP address matched against IP subjectAltName entries,
    with service-identity).

    @param hostname: the name or IP address (text) the server must prove.
    @param caCertificates: path, or sequence of paths, of PEM CA
        certificates to trust; an empty sequence or L{None} trusts the
        platform's CAs.
    @param clientCertificate: path of a PEM client certificate (optionally
        with its chain) to present, or L{None}.
    @param clientKey: path of its key; required with C{clientCertificate}.

    @return: an L{IOpenSSLClientConnectionCreator} for
        L{SSL4ClientEndpoint}, L{wrapClientTLS}, C{connectSSL} or
        L{TLSMemoryBIOFactory}.

    @raise TLSConfigError: for a missing, unreadable or malformed file, or a
        key not matching the client certificate.
    """
    if isinstance(hostname, bytes):
        hostname = hostname.decode("ascii")
    if (clientCertificate is None) != (clientKey is None):
        given = clientCertificate if clientKey is None else clientKey
        raise TLSConfigError(
            given, "a client certificate and its key must be given together")
    authorities = _loadAuthorities(caCertificates or ())
    if authorities:
        trustRoot = trustRootFromCertificates(
            [Certificate(a) for a in authorities])
    else:
        trustRoot = platformTrust()
    extra = {"raiseMinimumTo": MINIMUM_TLS_VERSION}
    if clientCertificate is not None:
        # What optionsForClientTLS does with a PrivateCertificate, but with
        # cryptography objects and the intermediate certificates too.
        leaf, chain, key = _loadKeyPair(clientCertificate, clientKey)
        extra.update(privateKey=key, certificate=leaf, extraCertChain=chain)
    return optionsForClientTLS(
        hostname,
        trustRoot=trustRoot,
        extraCertificateOptions=extra,
    )


def tlsServerEndpoint(reactor, port, interface, contextFactory, backlog=50):
    """
    A TLS-over-TCP server endpoint, for C{--tls-cert}/C{--tls-key}/
    C{--tls-ca} style options (Twisted's own C{ssl:}/C{tls:} endpoint strings
    cover the rest).

    @param reactor: an L{IReactorSSL} (or TCP reactor; TLS is layered).
    @param port: the TCP port number (0 for any free one).
    @param interface: the local address to listen on (C{""} for all IPv4,
        C{"::"} for all IPv6 addresses).
    @param contextFactory: from L{serverContextFactory}.

    @return: an L{IStreamServerEndpoint}.
    """
    return SSL4ServerEndpoint(
        reactor, port, contextFactory, backlog=backlog, interface=interface)
