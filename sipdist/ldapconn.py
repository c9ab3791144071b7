# -*- test-case-name: tests.test_store_ldap -*-
"""
One LDAP connection to a directory with several servers, shared by the
LDAP assignment store (L{sipdist.store.ldap}) and the LDAP credential
source (L{sipdist.auth.ldap}).

The connection is made on demand to the first server that answers, the
one that answered last tried first; after a failure the next attempt waits
a growing delay (0.5 s doubling to 2 s, so that a directory back from an
outage is used again within seconds), and until then callers fail at once
rather than queue.  Callers waiting while a connection is made share
it.
"""

from ldaptor.protocols.ldap import ldaperrors
from ldaptor.protocols.ldap.ldapclient import LDAPClient
from twisted.internet.defer import (
    CancelledError, Deferred, fail, inlineCallbacks, succeed)
from twisted.internet.endpoints import HostnameEndpoint, connectProtocol
from twisted.logger import Logger

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
        return text if text else type(error).__name__
    if isinstance(error, CancelledError):
        return "timed out"
    text = str(error)
    return text.splitlines()[0] if text else type(error).__name__


class LDAPConnection:
    """
    The bound connection of a service account to a directory.

    @param servers: C{(host, port)} pairs, tried in turn.
    @param timeout: seconds for connecting, and for binding.
    @param bindDN: the service account (anonymous when empty).
    @param unavailable: the exception class failures are reported with.
    @ivar lastError: why the last attempt failed, or C{None}.
    """

    _log = Logger()

    def __init__(self, reactor, servers, timeout, bindDN="", password="",
                 unavailable=Exception):
        self._reactor = reactor
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
            except Exception as e:
                errors.append(f"{host}:{port}: {describeLDAPError(e)}")
                continue
            if index != self._preferred:
                self._log.info("LDAP now using {host}:{port}",
                               host=host, port=port)
            self._preferred = index
            return client
        raise self._unavailable("; ".join(errors))

    @inlineCallbacks
    def _connectOne(self, host, port, dn, password):
        endpoint = HostnameEndpoint(self._reactor, host, port,
                                    timeout=self._timeout)
        d = connectProtocol(endpoint, LDAPClient())
        d.addTimeout(self._timeout, self._reactor)
        client = yield d
        if dn:
            d = client.bind(dn, password)
            d.addTimeout(self._timeout, self._reactor)
            try:
                yield d
            except Exception:
                client.transport.abortConnection()
                raise
        return client

    def drop(self):
        """
        Abort the connection (after an operation on it failed); the next
        L{client} makes a new one.
        """
        client, self._client = self._client, None
        if client is not None and client.connected:
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
