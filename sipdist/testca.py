# -*- test-case-name: tests.test_tls -*-
"""
A private certificate authority for tests and local deployments.

L{makeCA} writes, into one directory:

  - C{ca.pem}, C{ca.key}: the CA certificate and its key;
  - C{<name>.pem}, C{<name>.key} for each name: a leaf certificate followed by
    the CA certificate (a chain), valid for every host given (DNS names and IP
    addresses as subjectAltName entries), usable for both server and client
    authentication;
  - C{other-ca.pem}, C{other-ca.key}: an independent CA trusting none of the
    above (for "an unknown CA is refused" tests);
  - C{other.pem}, C{other.key}: a leaf issued by the other CA for the same
    hosts;
  - C{wronghost.pem}, C{wronghost.key}: a leaf issued by the right CA, but
    only for C{wrong.example}.

Keys are EC P-256 (fast to generate) in unencrypted PKCS#8 PEM; key files
are written with mode 0600.
"""

import datetime
import ipaddress
import os

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

DEFAULT_HOSTS = ("localhost", "127.0.0.1", "::1")
DEFAULT_NAMES = ("server",)
WRONG_HOST = "wrong.example"

# Names makeCA reserves for its own files.
RESERVED_NAMES = frozenset(("ca", "other-ca", "other", "wronghost"))


class _Issuer:
    """
    A CA: its key, certificate and name.
    """

    def __init__(self, key, certificate):
        self.key = key
        self.certificate = certificate


def _newKey():
    return ec.generate_private_key(ec.SECP256R1())


def _validity(now):
    return now - datetime.timedelta(days=1), now + datetime.timedelta(days=825)


def _serial():
    return x509.random_serial_number()


def _subjectAltNames(hosts):
    entries = []
    for host in hosts:
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            entries.append(x509.DNSName(host))
    return x509.SubjectAlternativeName(entries)


def _makeIssuer(commonName, now):
    key = _newKey()
    name = x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "sipdist test"),
        x509.NameAttribute(NameOID.COMMON_NAME, commonName),
    ])
    notBefore, notAfter = _validity(now)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(_serial())
        .not_valid_before(notBefore)
        .not_valid_after(notAfter)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0),
                       critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False,
                key_encipherment=False, data_encipherment=False,
                key_agreement=False, key_cert_sign=True, crl_sign=True,
                encipher_only=False, decipher_only=False),
            critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(
            key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return _Issuer(key, certificate)


def _makeLeaf(issuer, commonName, hosts, now):
    key = _newKey()
    notBefore, notAfter = _validity(now)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "sipdist test"),
            x509.NameAttribute(NameOID.COMMON_NAME, commonName),
        ]))
        .issuer_name(issuer.certificate.subject)
        .public_key(key.public_key())
        .serial_number(_serial())
        .not_valid_before(notBefore)
        .not_valid_after(notAfter)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None),
                       critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False,
                key_encipherment=False, data_encipherment=False,
                key_agreement=True, key_cert_sign=False, crl_sign=False,
                encipher_only=False, decipher_only=False),
            critical=True)
        .add_extension(x509.ExtendedKeyUsage([
            ExtendedKeyUsageOID.SERVER_AUTH,
            ExtendedKeyUsageOID.CLIENT_AUTH,
        ]), critical=False)
        .add_extension(_subjectAltNames(hosts), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(
            key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(
                issuer.key.public_key()),
            critical=False)
        .sign(issuer.key, hashes.SHA256())
    )
    return _Issuer(key, certificate)


def _certificatePEM(certificate):
    return certificate.public_bytes(serialization.Encoding.PEM)


def _keyPEM(key):
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _write(path, data, private=False):
    mode = 0o600 if private else 0o644
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(path, mode)


def _writeLeaf(directory, name, leaf, issuer):
    _write(os.path.join(directory, name + ".pem"),
           _certificatePEM(leaf.certificate)
           + _certificatePEM(issuer.certificate))
    _write(os.path.join(directory, name + ".key"), _keyPEM(leaf.key),
           private=True)


def makeCA(directory, hosts=DEFAULT_HOSTS, names=DEFAULT_NAMES, now=None):
    """
    Write a test CA, leaf certificates and the negative-test material into
    C{directory} (created if missing).

    @param directory: where to write (a path).
    @param hosts: DNS names and IP addresses (text) every leaf in C{names}
        is valid for.
    @param names: base names of the leaf certificates to issue, e.g.
        C{("server", "client")} writes C{server.pem}/C{server.key} and
        C{client.pem}/C{client.key}.
    @param now: the aware L{datetime.datetime} validity starts around;
        defaults to the current time.

    @return: a L{dict} mapping each written file's base name (C{"ca.pem"},
        C{"server.key"}, ...) to its full path.

    @raise ValueError: if C{hosts} or C{names} is empty or a name is reserved
        or not a plain file name.
    """
    hosts = tuple(hosts)
    names = tuple(names)
    if not hosts:
        raise ValueError("at least one host is needed")
    if not names:
        raise ValueError("at least one certificate name is needed")
    for name in names:
        if name in RESERVED_NAMES:
            raise ValueError(f"certificate name {name!r} is reserved")
        if not name or os.sep in name or name.startswith("."):
            raise ValueError(f"certificate name {name!r} is not a file name")
    if now is None:
        now = datetime.datetime.now(datetime.timezone.utc)
    os.makedirs(directory, exist_ok=True)

    ca = _makeIssuer("sipdist test CA", now)
    _write(os.path.join(directory, "ca.pem"), _certificatePEM(ca.certificate))
    _write(os.path.join(directory, "ca.key"), _keyPEM(ca.key), private=True)
    for name in names:
        _writeLeaf(directory, name, _makeLeaf(ca, name, hosts, now), ca)
    _writeLeaf(directory, "wronghost",
               _makeLeaf(ca, WRONG_HOST, (WRONG_HOST,), now), ca)

    other = _makeIssuer("sipdist other test CA", now)
    _write(os.path.join(directory, "other-ca.pem"),
           _certificatePEM(other.certificate))
    _write(os.path.join(directory, "other-ca.key"), _keyPEM(other.key),
           private=True)
    _writeLeaf(directory, "other", _makeLeaf(other, "other", hosts, now),
               other)

    written = {}
    for base in ("ca", "other-ca", "other", "wronghost") + names:
        for ext in (".pem", ".key"):
            written[base + ext] = os.path.join(directory, base + ext)
    return written
