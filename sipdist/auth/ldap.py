# -*- test-case-name: tests.test_auth_ldap -*-
"""
The LDAP credential source, through ldaptor:
C{ldap://HOST:PORT[,HOST:PORT...]/BASE?option=value&...}, or C{ldaps://}
for LDAP over TLS (port 636 by default).  With several servers the first
that answers is used (see L{sipdist.ldapconn}).

Options (query string, URL-encoded):

  - C{mode}: C{hash} (default) or C{bind};
  - C{filter}: the filter finding a user's entry, C{{user}} replaced by
    the escaped user name (default C{(uid={user})});
  - C{hashAttribute}: the attribute holding the HA1 values (default
    C{sipdistDigestHA1}, see C{etc/ldap/sipdist-auth.schema}); each value is
    C{ALGORITHM:HEX} (C{MD5:...}, C{SHA-256:...}), or bare hexadecimal,
    taken as MD5 (32 digits) or SHA-256 (64 digits);
  - C{bindDN}, C{bindPassword} or C{passwordFile}: the service account the
    server binds with to search (default: anonymous);
  - C{ttl}: seconds a lookup is cached (default 60; unknown users too);
  - C{maxStale}: seconds past C{ttl} an entry is still answered at once
    while a lookup in the background refreshes it (default 300; 0: never);
  - C{cacheSize}: entries in the cache (default 10000);
  - C{timeout}: seconds for connecting and each operation, and the most a
    lookup waits for the directory before failing with
    L{LDAPUnavailable} (a C{503}) (default 2);
  - C{startTLS}: C{yes} to secure C{ldap://} connections with StartTLS
    before binding (default C{no});
  - C{caFile}: PEM file of the CAs that issue the directory servers'
    certificates, for C{ldaps://} or C{startTLS=yes} (default: the
    platform's CAs); the certificate must name the host of the URL.

Hash mode serves SIP Digest: the server reads the HA1 and checks the
answer.  Bind mode checks a I{plaintext} password by binding as the user's
entry; Digest never gives the server the password, so bind mode gives a
checker for L{IUsernamePassword} only (an administrative API with Basic
authentication over TLS, a provisioning tool), never for SIP requests.

ldaptor's client module imports the global reactor when imported, so it is
imported only when a connection is made (by then the application has
chosen its reactor).
"""

from collections import OrderedDict
from urllib.parse import parse_qsl, unquote, urlsplit

from ldaptor.protocols.ldap import ldaperrors
from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import IUsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.internet.defer import Deferred, fail, succeed
from twisted.logger import Logger
from zope.interface import implementer

from sipdist.auth.credentials import DigestHashChecker
from sipdist.auth.digest import ALGORITHMS
from sipdist.auth.interfaces import IDigestHashSource
from sipdist.auth.errors import CredentialsConfigError
from sipdist.ldapconn import (
    LDAPConnection, LDAPTLS, describeLDAPError, parseHostPort)

_DEFAULTS = {
    "mode": "hash",
    "filter": "(uid={user})",
    "hashAttribute": "sipdistDigestHA1",
    "bindDN": "",
    "bindPassword": "",
    "passwordFile": "",
    "ttl": "60",
    "maxStale": "300",
    "cacheSize": "10000",
    "timeout": "2",
    "startTLS": "no",
    "caFile": "",
}

_BASES = {name: alg for name, alg in ALGORITHMS.items() if not alg.session}


class LDAPUnavailable(Exception):
    """
    The directory cannot be reached or refused the service account.
    """


class LDAPCredentialsConfig:
    """
    The parsed C{ldap://} string.
    """

    def __init__(self, servers, base, options, tls=None):
        self.servers = servers
        self.host, self.port = servers[0]
        self.where = ",".join(f"{h}:{p}" for h, p in servers)
        self.tls = tls
        self.base = base
        self.mode = options["mode"]
        self.filter = options["filter"]
        self.hashAttribute = options["hashAttribute"]
        self.bindDN = options["bindDN"]
        self.bindPassword = options["bindPassword"]
        self.ttl = float(options["ttl"])
        self.maxStale = float(options["maxStale"])
        self.cacheSize = int(options["cacheSize"])
        self.timeout = float(options["timeout"])


def parseLDAPCredentials(description):
    """
    Parse C{ldap://HOST:PORT[,HOST:PORT...]/BASE?option=value&...} or
    C{ldaps://...}.

    @raise CredentialsConfigError: naming what is wrong.
    """
    url = urlsplit(description)
    if url.scheme not in ("ldap", "ldaps") or not url.netloc:
        raise CredentialsConfigError(
            f"bad LDAP credentials {description!r}: expected "
            f"ldap://HOST:PORT/BASE?option=value&...")
    defaultPort = 636 if url.scheme == "ldaps" else 389
    try:
        servers = [parseHostPort(h.strip(), defaultPort)
                   for h in url.netloc.split(",")]
    except ValueError as e:
        raise CredentialsConfigError(
            f"bad LDAP server in {description!r}: {e}") from None
    base = unquote(url.path.lstrip("/"))
    if not base:
        raise CredentialsConfigError(
            f"LDAP credentials {description!r} need a base DN")
    options = dict(_DEFAULTS)
    for key, value in parse_qsl(url.query, keep_blank_values=True):
        if key not in _DEFAULTS:
            raise CredentialsConfigError(f"unknown LDAP option {key!r}")
        options[key] = value
    if options["mode"] not in ("hash", "bind"):
        raise CredentialsConfigError("LDAP mode must be hash or bind")
    if "{user}" not in options["filter"]:
        raise CredentialsConfigError("the LDAP filter must hold {user}")
    if options["passwordFile"]:
        try:
            with open(options["passwordFile"], encoding="utf-8") as f:
                options["bindPassword"] = f.readline().rstrip("\r\n")
        except OSError as e:
            raise CredentialsConfigError(
                f"cannot read {options['passwordFile']}: {e.strerror}")
    for key, low in (("ttl", 0), ("maxStale", 0), ("cacheSize", 1),
                     ("timeout", 0.001)):
        try:
            ok = float(options[key]) >= low
        except ValueError:
            ok = False
        if not ok:
            raise CredentialsConfigError(f"bad LDAP {key} {options[key]!r}")
    options["cacheSize"] = str(int(float(options["cacheSize"])))
    startTLS = options["startTLS"].lower()
    if startTLS not in ("yes", "no"):
        raise CredentialsConfigError("LDAP startTLS must be yes or no")
    tls = None
    if url.scheme == "ldaps" and startTLS == "yes":
        raise CredentialsConfigError(
            "startTLS=yes is for ldap:// URLs; ldaps:// is TLS already")
    if url.scheme == "ldaps" or startTLS == "yes":
        try:
            tls = LDAPTLS("ldaps" if url.scheme == "ldaps" else "starttls",
                          options["caFile"])
        except ValueError as e:
            raise CredentialsConfigError(f"bad LDAP caFile: {e}") from None
    elif options["caFile"]:
        raise CredentialsConfigError(
            "caFile is for TLS: use ldaps:// or startTLS=yes")
    return LDAPCredentialsConfig(servers, base, options, tls)


def escapeFilterValue(text):
    """
    C{text} escaped for an LDAP filter value (RFC 4515 section 3).
    """
    from ldaptor.protocols.pureldap import escape
    return escape(text)


def parseHA1Values(values):
    """
    The HA1 per base algorithm held by the values of the hash attribute;
    values that are not understood are ignored.

    @return: a L{dict} from C{"MD5"}/C{"SHA-256"} to lower-case hex.
    """
    hashes = {}
    for value in values:
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        name, sep, hexa = value.strip().rpartition(":")
        hexa = hexa.lower()
        if hexa.strip("0123456789abcdef"):
            continue
        if sep:
            alg = next((a for n, a in _BASES.items()
                        if n.upper() == name.upper()), None)
        else:
            alg = next((a for a in _BASES.values()
                        if a.hexLength == len(hexa)), None)
        if alg is not None and len(hexa) == alg.hexLength:
            hashes[alg.name] = hexa
    return hashes


def _text(value):
    return value.decode("utf-8", "replace") if isinstance(value, bytes) \
        else str(value)


def _describe(failure):
    """
    One line for a failed directory operation (L{describeLDAPError}: the
    directory's message decoded, a TLS name mismatch said in words).
    """
    return describeLDAPError(failure)


class _Directory:
    """
    Searches of the directory over the service account's connection
    (L{LDAPConnection}, shared in kind with the assignment store).
    """

    def __init__(self, reactor, config):
        self._reactor = reactor
        self._config = config
        self.connection = LDAPConnection(
            reactor, config.servers, config.timeout, config.bindDN,
            config.bindPassword, unavailable=LDAPUnavailable, tls=config.tls)

    def bindAs(self, dn, password):
        """
        A new connection bound as C{dn}; the caller closes it.
        """
        return self.connection.bindAs(dn, password)

    def search(self, filterText, attributes):
        """
        Search the subtree of the base; fails with L{LDAPUnavailable}.
        """
        from ldaptor.protocols.ldap.ldapsyntax import LDAPEntry

        def send(client):
            entry = LDAPEntry(client, self._config.base)
            d = entry.search(filterText=filterText, attributes=attributes,
                             sizeLimit=2, sizeLimitIsNonFatal=True)
            d.addTimeout(self._config.timeout, self._reactor)
            return d

        def failed(failure):
            if failure.check(ldaperrors.LDAPNoSuchObject):
                return []
            if failure.check(LDAPUnavailable):
                return failure
            self.connection.drop()
            from twisted.internet.defer import CancelledError, TimeoutError
            reason = (f"no answer in {self._config.timeout:g} s"
                      if failure.check(TimeoutError, CancelledError)
                      else _describe(failure))
            raise LDAPUnavailable(
                f"LDAP directory {self._config.where}: {reason}")
        return self.connection.client().addCallback(send).addErrback(failed)

    def close(self):
        self.connection.close()


@implementer(IDigestHashSource)
class LDAPDigestHashSource:
    """
    HA1 values read from a directory, cached for C{ttl} seconds in a
    bounded table; a cached answer is given synchronously, and concurrent
    lookups of one user share one search.  An entry expired for at most
    C{maxStale} seconds is answered at once while a search refreshes it
    (stale-while-revalidate); other lookups wait at most C{timeout} seconds.
    """

    _log = Logger()

    # Distinct users looked up at once; past that, lookups fail at once
    # (503) instead of queueing without bound.
    maxPending = 1000

    def __init__(self, reactor, config):
        self._reactor = reactor
        self._config = config
        self._directory = _Directory(reactor, config)
        self._cache = OrderedDict()
        self._pending = {}

    def getHA1(self, username, realm, algorithm):
        now = self._reactor.seconds()
        cached = self._cache.get(username)
        if cached is not None and (
                cached[0] > now or now - cached[0] <= self._config.maxStale):
            if cached[0] <= now and username not in self._pending \
                    and len(self._pending) < self.maxPending:
                # Stale while revalidating.
                self._pending[username] = []
                self._lookup(username)
            hashes = cached[1]
            return succeed(None if hashes is None else hashes.get(algorithm))
        d = Deferred()
        waiting = self._pending.get(username)
        if waiting is None:
            if len(self._pending) >= self.maxPending:
                return fail(LDAPUnavailable(
                    f"more than {self.maxPending} LDAP lookups pending"))
            self._pending[username] = [d]
            self._lookup(username)
        else:
            waiting.append(d)
        if not d.called:
            self._deadline(d, username)
        return d.addCallback(
            lambda hashes: None if hashes is None else hashes.get(algorithm))

    def cachedHA1(self, username, realm, algorithm):
        """
        The HA1 L{getHA1} would give at once without a search nor a refresh
        (a fresh cache entry), else L{None} (as for an unknown user).
        """
        cached = self._cache.get(username)
        if cached is None or cached[0] <= self._reactor.seconds():
            return None
        hashes = cached[1]
        return None if hashes is None else hashes.get(algorithm)

    def _deadline(self, d, username):
        """
        Fail C{d} with L{LDAPUnavailable} if the directory has not answered
        within C{timeout} seconds; the search goes on and fills the cache.
        """
        timeout = self._config.timeout

        def expire():
            if d.called:
                return
            waiting = self._pending.get(username)
            if waiting is not None and d in waiting:
                waiting.remove(d)
            d.errback(LDAPUnavailable(
                f"LDAP directory {self._config.where} did not answer in "
                f"{timeout:g} s"))

        timer = self._reactor.callLater(timeout, expire)

        def done(result):
            if timer.active():
                timer.cancel()
            return result

        d.addBoth(done)

    def _lookup(self, username):
        c = self._config
        filterText = c.filter.replace("{user}", escapeFilterValue(username))
        d = self._directory.search(filterText, [c.hashAttribute])
        d.addCallbacks(self._found, self._failed, callbackArgs=(username,),
                       errbackArgs=(username,))

    def _found(self, entries, username):
        if len(entries) > 1:
            self._log.warn("several LDAP entries for {username}: none used",
                           username=username)
        hashes = None
        if len(entries) == 1:
            attribute = self._config.hashAttribute.lower()
            values = [v for name, vs in entries[0].items()
                      if _text(name).lower() == attribute for v in vs]
            hashes = parseHA1Values(values) or None
        cache = self._cache
        cache[username] = (self._reactor.seconds() + self._config.ttl, hashes)
        cache.move_to_end(username)
        while len(cache) > self._config.cacheSize:
            cache.popitem(last=False)
        for d in self._pending.pop(username, []):
            d.callback(hashes)

    def _failed(self, failure, username):
        waiting = self._pending.pop(username, [])
        if waiting:
            self._log.warn("credential lookup of {username} failed: {error}",
                           username=username, error=_describe(failure))
        for d in waiting:
            d.errback(failure)

    def close(self):
        self._directory.close()


@implementer(ICredentialsChecker)
class LDAPBindChecker:
    """
    Checks a plaintext password (L{IUsernamePassword}) by binding to the
    directory as the user's entry.  Not usable for SIP Digest.
    """

    credentialInterfaces = (IUsernamePassword,)

    def __init__(self, reactor, config):
        self._reactor = reactor
        self._config = config
        self._directory = _Directory(reactor, config)

    def requestAvatarId(self, credentials):
        username = credentials.username
        password = credentials.password
        if isinstance(username, bytes):
            username = username.decode("utf-8")
        if isinstance(password, bytes):
            password = password.decode("utf-8")
        if not password:
            # An empty password is an unauthenticated bind (RFC 4513
            # 5.1.2), which directories accept: never a login.
            return fail(UnauthorizedLogin())
        c = self._config
        filterText = c.filter.replace("{user}", escapeFilterValue(username))

        def found(entries):
            if len(entries) != 1:
                raise UnauthorizedLogin()
            dn = entries[0].dn.getText()
            return self._directory.bindAs(dn, password).addCallbacks(
                bound, refused)

        def bound(client):
            client.transport.loseConnection()
            return username

        def refused(failure):
            if failure.check(ldaperrors.LDAPInvalidCredentials):
                raise UnauthorizedLogin()
            raise LDAPUnavailable(_describe(failure))

        return self._directory.search(filterText, ["1.1"]).addCallback(found)

    def close(self):
        self._directory.close()


def checkerFromString(reactor, description):
    """
    The checker an C{ldap://} string describes: a L{DigestHashChecker} over
    an L{LDAPDigestHashSource} (C{mode=hash}), or an L{LDAPBindChecker}
    (C{mode=bind}).
    """
    config = parseLDAPCredentials(description)
    if config.mode == "bind":
        return LDAPBindChecker(reactor, config)
    return DigestHashChecker(LDAPDigestHashSource(reactor, config))


__all__ = ["LDAPDigestHashSource", "LDAPBindChecker", "LDAPUnavailable",
           "checkerFromString", "parseLDAPCredentials", "parseHA1Values",
           "escapeFilterValue"]
