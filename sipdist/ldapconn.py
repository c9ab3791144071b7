# -*- test-case-name: tests.test_store_ldap,tests.test_store_ldap_tls,tests.test_store_ldap_replica -*-
"""
One LDAP connection to a directory with several servers, shared by the
LDAP assignment store (L{sipdist.store.ldap}) and the LDAP credential
source (L{sipdist.auth.ldap}).

The connection is made on demand to the first server that answers, the
one that answered last tried first, except after it failed (went silent
or dropped the connection): then the next one is tried first.  After a
failure to connect to any, the next attempt waits a growing delay (0.5 s
doubling to 2 s, so that a directory back from an outage is used again
within seconds), and until then callers fail at once rather than queue.
Callers waiting while a connection is made share it.

TLS (L{LDAPTLS}): C{ldaps} (TLS from the first byte) or C{starttls} (RFC
4511 section 4.14 StartTLS on a plain connection, before binding).  Either
way the server's certificate must be issued by the configured CAs (the
operator's CA file, else the platform's) and name the host of the URL (a
DNS name or an IP address, checked with service-identity); the handshake
is complete before anything, the bind included, is sent.  A refused
certificate fails the attempt with one line saying why, and the next
server is tried.  There is no way to turn verification off.
"""

from ldaptor.protocols import pureldap
from ldaptor.protocols.ldap import ldaperrors
from ldaptor.protocols.ldap.ldapclient import LDAPClient
from OpenSSL import SSL
from service_identity import VerificationError
from twisted.internet.defer import (
    CancelledError, Deferred, TimeoutError, fail, inlineCallbacks, succeed)
from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.internet.endpoints import (
    HostnameEndpoint, TCP4ClientEndpoint, TCP6ClientEndpoint,
    connectProtocol, wrapClientTLS)
from twisted.internet.interfaces import IHandshakeListener
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from zope.interface import implementer

from sipdist.sip.tls import clientContextFactory, loadCertificates
from sipdist.sip.transport import selfConnected

# A directory back from an outage is used again within this many seconds.
MAX_DELAY = 2.0
FIRST_DELAY = 0.5


def describeLDAPError(error):
    """
    One line saying what went wrong with the directory.

    @param error: an exception, or a L{Failure} of one.
    """
    error = getattr(error, "value", error)
    if isinstance(error, ldaperrors.LDAPException):
        text = getattr(error, "message", None) or str(error)
        if isinstance(text, bytes):
            text = text.decode("utf-8", "replace")
        return text if text else type(error).__name__
    if isinstance(error, CancelledError):
        return "timed out"
    if isinstance(error, VerificationError):
        # Twisted 25.5 (the one PyPy 3.9 installs) checks the name after
        # reporting the handshake done: the mismatch comes as the reason
        # the connection was lost, not as the handshake's failure.
        return _mismatch(error)
    text = str(error)
    return text.splitlines()[0] if text else type(error).__name__


def _mismatch(error, host=None):
    """
    One line for a certificate that does not name the host: C{host}, or
    the name (or address) service-identity looked for.
    """
    if host is None:
        for mismatch in getattr(error, "errors", ()):
            wanted = getattr(mismatch, "mismatched_id", None)
            name = getattr(wanted, "ip", None) or getattr(
                wanted, "hostname", None)
            if name is not None:
                host = str(name)
                break
    named = "the host" if host is None else repr(host)
    return (f"TLS: the server certificate does not name {named} "
            f"(hostname verification failed)")


def parseHostPort(text, defaultPort):
    """
    C{HOST}, C{HOST:PORT}, C{[V6]} or C{[V6]:PORT}.

    @return: C{(host, port)}.
    @raise ValueError: naming what is wrong.
    """
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    else:
        host, _, port = text.partition(":")
    if not host:
        raise ValueError("empty host")
    if not port:
        return host, defaultPort
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"bad port {port!r}")
    return host, int(port)


class LDAPTLS:
    """
    How connections to the directory are secured.

    @param mode: C{"ldaps"} (TLS from the first byte) or C{"starttls"}
        (StartTLS on a plain connection).
    @param caFile: a PEM file of the CA certificates that may issue the
        servers' certificates; empty: the platform's CAs.
    @raise ValueError: for another mode, or a CA file that cannot be read
        or holds no certificate (one line naming the file).
    """

    def __init__(self, mode, caFile=""):
        if mode not in ("ldaps", "starttls"):
            raise ValueError(f"unknown LDAP TLS mode {mode!r}")
        self.mode = mode
        self.caFile = caFile
        if caFile:
            loadCertificates(caFile, "LDAP CA")
        self._creators = {}

    def creatorFor(self, host):
        """
        The TLS options of a connection to C{host}, verifying that the
        server's certificate names it.
        """
        creator = self._creators.get(host)
        if creator is None:
            creator = clientContextFactory(
                host, [self.caFile] if self.caFile else ())
            if len(self._creators) < 64:
                self._creators[host] = creator
        return creator

    def describeFailure(self, error, host):
        """
        One line for a failed handshake with C{host}.
        """
        error = getattr(error, "value", error)
        if isinstance(error, VerificationError):
            return _mismatch(error, host)
        if isinstance(error, SSL.Error):
            detail = str(error)
            if "certificate verify failed" in detail:
                trusted = self.caFile or "the platform's CAs"
                return (f"TLS: the server certificate is not issued by a "
                        f"trusted CA ({trusted})")
            return f"TLS handshake failed: {detail}"
        if isinstance(error, (CancelledError, TimeoutError)):
            return "TLS handshake timed out"
        return f"TLS handshake failed: {describeLDAPError(error)}"


class _TLSFailed(Exception):
    """
    A TLS handshake with a directory server failed.
    """


@implementer(IHandshakeListener)
class _Client(LDAPClient):
    """
    An L{LDAPClient} that can wait for its TLS handshake: C{handshake}, set
    before TLS starts, fires when it completes and fails with the reason
    the connection was lost otherwise.
    """

    handshake = None

    def handshakeCompleted(self):
        if self.handshake is not None and not self.handshake.called:
            self.handshake.callback(None)

    def connectionLost(self, reason=connectionDone):
        if self.handshake is not None and not self.handshake.called:
            self.handshake.errback(reason)
        LDAPClient.connectionLost(self, reason)


def _endpoint(reactor, host, port, timeout):
    """
    The endpoint of one server.  An address is connected to directly: a
    L{HostnameEndpoint} reports a refused connection only when its next
    attempt would start (0.3 s later), which would delay failing over from
    a dead server.
    """
    if isIPAddress(host):
        return TCP4ClientEndpoint(reactor, host, port, timeout=timeout)
    if isIPv6Address(host):
        return TCP6ClientEndpoint(reactor, host, port, timeout=timeout)
    return HostnameEndpoint(reactor, host, port, timeout=timeout)


class LDAPConnection:
    """
    The bound connection of a service account to a directory.

    @param servers: C{(host, port)} pairs, tried in turn.
    @param timeout: seconds for connecting, and for binding.
    @param bindDN: the service account (anonymous when empty).
    @param unavailable: the exception class failures are reported with.
    @param tls: an L{LDAPTLS}, or L{None} for plain LDAP.
    @ivar lastError: why the last attempt failed, or C{None}.
    """

    _log = Logger()

    def __init__(self, reactor, servers, timeout, bindDN="", password="",
                 unavailable=Exception, tls=None):
        self._reactor = reactor
        self._tls = tls
        self._servers = list(servers)
        self._timeout = timeout
        self._bindDN = bindDN
        self._password = password
        self._unavailable = unavailable
        self._client = None
        self._connecting = None
        self._retryAt = 0.0
        self._delay = 0.0
        self._preferred = 0
        self._using = None
        self._closed = False
        self.lastError = None

    def client(self):
        """
        @return: L{Deferred} firing with a bound L{LDAPClient}, or failing
            with the C{unavailable} exception.
        """
        if self._client is not None and self._client.connected:
            return succeed(self._client)
        self._client = None
        if self._connecting is not None:
            d = Deferred()
            self._connecting.append(d)
            return d
        if self._closed:
            return fail(self._unavailable("LDAP connection closed"))
        now = self._reactor.seconds()
        if now < self._retryAt:
            return fail(self._unavailable(
                f"LDAP directory unreachable ({self.lastError}); next attempt "
                f"in {self._retryAt - now:.1f}s"))
        self._connecting = []
        d = self._connect(self._bindDN, self._password)
        d.addBoth(self._connected)
        return d

    def _connected(self, result):
        waiting, self._connecting = self._connecting, None
        if isinstance(result, LDAPClient) and self._closed:
            result.transport.abortConnection()
            result = fail(self._unavailable("LDAP connection closed"))
        if isinstance(result, LDAPClient):
            self._delay = 0.0
            self.lastError = None
            self._client = result
            for d in waiting:
                d.callback(result)
            return result
        self._delay = min(MAX_DELAY, max(FIRST_DELAY, self._delay * 2))
        self._retryAt = self._reactor.seconds() + self._delay
        self.lastError = describeLDAPError(result)
        self._log.warn("LDAP directory unreachable: {error}; next attempt in "
                       "{delay}s", error=self.lastError, delay=self._delay)
        message = f"LDAP directory unreachable: {self.lastError}"
        for d in waiting:
            d.errback(self._unavailable(message))
        return fail(self._unavailable(message))

    def bindAs(self, dn, password):
        """
        A new connection, to the server in use, bound as C{dn}: to check a
        user's password.  The caller closes it.

        @return: L{Deferred} firing with the L{LDAPClient}; a refused bind
            fails with ldaptor's L{ldaperrors.LDAPInvalidCredentials}, a
            directory that cannot be reached with the C{unavailable}
            exception.
        """
        return self._connect(dn, password)

    @inlineCallbacks
    def _connect(self, dn, password):
        servers = self._servers
        errors = []
        for i in range(len(servers)):
            index = (self._preferred + i) % len(servers)
            host, port = servers[index]
            try:
                client = yield self._connectOne(host, port, dn, password)
            except ldaperrors.LDAPInvalidCredentials:
                raise
            except _TLSFailed as e:
                errors.append(f"{host}:{port}: {e}")
                continue
            except Exception as e:
                errors.append(f"{host}:{port}: {describeLDAPError(e)}")
                continue
            if self._using is not None and index != self._using:
                self._log.info("LDAP now using {host}:{port}",
                               host=host, port=port)
            self._preferred = self._using = index
            return client
        raise self._unavailable("; ".join(errors))

    @inlineCallbacks
    def _connectOne(self, host, port, dn, password):
        tls = self._tls
        endpoint = _endpoint(self._reactor, host, port, self._timeout)
        client = _Client()
        if tls is not None and tls.mode == "ldaps":
            client.handshake = Deferred()
            endpoint = wrapClientTLS(tls.creatorFor(host), endpoint)
        d = connectProtocol(endpoint, client)
        d.addTimeout(self._timeout, self._reactor)
        try:
            yield d
            if selfConnected(client.transport):
                client.transport.abortConnection()
                raise ConnectionRefusedError(
                    f"{host}:{port}: connected to itself, nothing listens")
        except Exception:
            if client.handshake is not None:
                # Not waited for: its failure is this one.
                client.handshake.addErrback(lambda _: None)
            raise
        try:
            if tls is not None:
                yield self._secure(client, host)
            if dn:
                d = client.bind(dn, password)
                d.addTimeout(self._timeout, self._reactor)
                yield d
        except Exception:
            client.transport.abortConnection()
            raise
        return client

    @inlineCallbacks
    def _secure(self, client, host):
        """
        Make C{client}'s connection secure: StartTLS if so configured, then
        wait for the handshake (and the certificate check) to complete.

        @raise _TLSFailed: saying why.
        """
        tls = self._tls
        if tls.mode == "starttls":
            d = client.send(pureldap.LDAPStartTLSRequest())
            d.addTimeout(self._timeout, self._reactor)
            response = yield d
            if response.resultCode != 0:
                error = ldaperrors.get(response.resultCode,
                                       response.errorMessage)
                raise _TLSFailed(f"StartTLS refused: "
                                 f"{describeLDAPError(error)}")
            client.handshake = Deferred()
            client.transport.startTLS(tls.creatorFor(host))
        d = client.handshake
        d.addTimeout(self._timeout, self._reactor)
        try:
            yield d
        except Exception as e:
            raise _TLSFailed(tls.describeFailure(e, host)) from None

    def drop(self):
        """
        Abort the connection (after an operation on it failed: the server
        went silent or dropped it); the next L{client} makes a new one, to
        the next server first: a server that accepts connections but does
        not answer is left at once.
        """
        client, self._client = self._client, None
        if client is not None:
            self._preferred = (self._preferred + 1) % len(self._servers)
            if client.connected:
                client.transport.abortConnection()

    def close(self):
        """
        Close for good: unbind, and fail what is asked from now on.
        """
        self._closed = True
        client, self._client = self._client, None
        if client is not None and client.connected:
            try:
                client.unbind()
            except Exception:
                client.transport.abortConnection()
