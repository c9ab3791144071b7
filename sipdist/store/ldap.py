# -*- test-case-name: tests.test_store_ldap -*-
"""
The LDAP assignment store (C{ldap://HOST:PORT[,HOST:PORT...]/BASE?...},
or C{ldaps://...} for LDAP over TLS), through ldaptor.

Users and servers are directory entries; which entries and attributes is
configurable (see L{LDAPConfig} and C{docs/stores.rst}), so the same code
reads the schema in C{etc/ldap/sipdist.schema} and a Microsoft directory
whose users point at pool entries with C{msRTCSIP-PrimaryHomeServer}.

Caching: a user lookup is answered from a bounded cache for C{ttl} seconds
(C{negativeTtl} for users without an assignment).  An entry expired for at
most C{maxStale} seconds is still answered at once while a lookup in the
background refreshes it (stale-while-revalidate): with a healthy directory
an answer is at most C{ttl} plus one lookup old, and a slow directory slows
nobody whose entry is cached.  Older entries wait for the directory, at most
C{timeout} seconds; when it cannot answer, the expired entry is served all
the same (the last known home beats none), and a user without one fails
with L{StoreUnavailable} (a C{503}).  Server records are all read at the
first use and again every C{refresh} seconds.

Deadlines: every caller waits at most C{timeout} seconds (default 2) for a
lookup, well inside a SIP transaction; the directory's own operations are
bounded too (connecting, binding and each request C{timeout}; a search
fails after C{timeout} seconds without a message from the directory, so a
long listing of many entries may take longer, a silent one may not).

Watching: every C{refresh} seconds the store reads the server entries and
the user entries whose C{changeAttr} (C{modifyTimestamp}) is at least the
newest value seen so far, and reports what differs from its cache.  Deleted
user entries are not seen this way; their cache entries expire.

Connections: one connection at a time, to the first of the URLs that
answers, bound with the configured DN and password.  A failed connection
attempt makes the store wait (0.5 s doubling to 2 s) before the next
attempt, which is made by the next operation or the next refresh.

TLS: C{ldaps://} URLs (port 636 by default), or C{startTLS=yes} with
C{ldap://} URLs; C{caFile=PATH} names the PEM file of the CAs that issue
the directory servers' certificates (default: the platform's CAs).  The
certificate must name the host as written in the URL.
"""

import time
from dataclasses import dataclass, field, fields
from urllib.parse import unquote

from ldaptor import delta
from ldaptor.protocols import pureber, pureldap
from ldaptor.protocols.ldap import distinguishedname, ldaperrors
from ldaptor import ldapfilter
from twisted.internet.defer import (
    CancelledError, Deferred, DeferredSemaphore, fail, gatherResults,
    inlineCallbacks, succeed,
)
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from zope.interface import implementer

from sipdist.interfaces import IAssignmentStore
from sipdist.ldapconn import (
    LDAPConnection, LDAPTLS, describeLDAPError, parseHostPort)
from sipdist.store import (
    InvalidValue, ServerChanged, ServerExists, ServerInUse, ServerRecord,
    StoreConfigError, StoreError, StoreUnavailable, UnknownServer,
    UnknownUser, UserChanged, Watchers, aorKey, checkServerId,
)


def _bool(text):
    value = text.strip().lower()
    if value in ("yes", "true", "1", "on"):
        return True
    if value in ("no", "false", "0", "off"):
        return False
    raise ValueError("yes or no")


def _seconds(text):
    value = float(text)
    if not 0 <= value <= 86400:
        raise ValueError("0 to 86400 seconds")
    return value


def _count(text):
    value = int(text)
    if not 1 <= value <= 100000000:
        raise ValueError("1 to 100000000")
    return value


@dataclass
class LDAPConfig:
    """
    Where the directory is and how assignments are kept in it.  Every field
    but C{servers}, C{base} and C{password} can be given in the store string
    or the configuration file under its own name; empty C{weightAttr} or
    C{stateAttr} means the directory has none (weight 1, active).
    """

    servers: list
    base: str
    bindDN: str = ""
    password: str = field(default="", repr=False)
    usersBase: str = ""
    serversBase: str = ""
    userFilter: str = "(objectClass=sipdistUser)"
    serverFilter: str = "(objectClass=sipdistServer)"
    aorAttr: str = "sipdistAOR"
    homeAttr: str = "sipdistHomeServer"
    homeIsDN: bool = False
    userClasses: str = "sipdistUser"
    createUsers: bool = True
    serverIdAttr: str = "sipdistServerId"
    serverURIAttr: str = "sipdistServerURI"
    tcpURIAttr: str = "sipdistServerTCPURI"
    tlsURIAttr: str = "sipdistServerTLSURI"
    weightAttr: str = "sipdistWeight"
    stateAttr: str = "sipdistState"
    serverClasses: str = "sipdistServer"
    changeAttr: str = "modifyTimestamp"
    ttl: float = 60.0
    negativeTtl: float = 10.0
    refresh: float = 30.0
    timeout: float = 2.0
    maxStale: float = 300.0
    maxCache: int = 1000000
    startTLS: bool = False
    caFile: str = ""
    tls: object = None

    _converters = {"homeIsDN": _bool, "createUsers": _bool,
                   "startTLS": _bool, "ttl": _seconds,
                   "negativeTtl": _seconds, "refresh": _seconds,
                   "timeout": _seconds, "maxStale": _seconds,
                   "maxCache": _count}

    def __post_init__(self):
        if not self.usersBase:
            self.usersBase = f"ou=users,{self.base}"
        if not self.serversBase:
            self.serversBase = f"ou=servers,{self.base}"
        for name in ("userFilter", "serverFilter"):
            try:
                ldapfilter.parseFilter(getattr(self, name))
            except Exception:
                raise StoreConfigError(f"bad LDAP filter {name}="
                                       f"{getattr(self, name)!r}") from None


_OPTION_NAMES = {f.name for f in fields(LDAPConfig)} - {
    "servers", "base", "password", "tls"}


def _readConfigFile(path):
    options = {}
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read(1024 * 1024).splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise StoreConfigError(f"cannot read LDAP config {path}: "
                               f"{getattr(e, 'strerror', None) or e}") \
            from None
    for number, line in enumerate(lines, 1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        key, sep, value = text.partition("=")
        key, value = key.strip(), value.strip()
        if " #" in value:
            value = value[:value.index(" #")].rstrip()
        if not sep or key not in _OPTION_NAMES | {"password", "passwordFile"}:
            raise StoreConfigError(f"{path}:{number}: expected 'key = value' "
                                   f"with a known key, got {text!r}")
        options[key] = value
    return options


def _readPassword(path):
    try:
        with open(path, encoding="utf-8") as f:
            return f.read(4096).rstrip("\r\n")
    except (OSError, UnicodeDecodeError) as e:
        raise StoreConfigError(f"cannot read password file {path}: "
                               f"{getattr(e, 'strerror', None) or e}") \
            from None


def _hostPort(text, description, defaultPort=389):
    try:
        return parseHostPort(text, defaultPort)
    except ValueError as e:
        raise StoreConfigError(f"bad LDAP URL {description!r}: {e}") \
            from None


def parseLDAPString(description):
    """
    Parse C{ldap://HOST[:PORT][,HOST[:PORT]...]/BASE[?key=value&...]}, or
    the same with C{ldaps://} (TLS; the default port is then 636).

    Options: C{config=PATH} (a file of C{key = value} lines, read first),
    C{passwordFile=PATH}, and every L{LDAPConfig} field by name.  The
    password comes only from the config file or the password file.

    @rtype: L{LDAPConfig}
    @raise StoreConfigError: with one line saying what is wrong.
    """
    lowered = description.lower()
    if lowered.startswith("ldaps://"):
        prefix, defaultPort = "ldaps://", 636
    elif lowered.startswith("ldap://"):
        prefix, defaultPort = "ldap://", 389
    else:
        raise StoreConfigError(f"bad LDAP URL {description!r}: expected "
                               f"ldap://HOST:PORT/BASE")
    rest = description[len(prefix):]
    rest, _, query = rest.partition("?")
    hosts, _, base = rest.partition("/")
    base = unquote(base)
    if not hosts or not base:
        raise StoreConfigError(f"bad LDAP URL {description!r}: expected "
                               f"ldap://HOST:PORT/BASE")
    servers = [_hostPort(h.strip(), description, defaultPort)
               for h in hosts.split(",")]
    urlOptions = {}
    for item in query.split("&") if query else []:
        key, sep, value = item.partition("=")
        key, value = unquote(key), unquote(value)
        if key == "password":
            raise StoreConfigError("an LDAP password is not taken from the "
                                   "command line: use config=FILE or "
                                   "passwordFile=FILE")
        if not sep or key not in _OPTION_NAMES | {"config", "passwordFile"}:
            raise StoreConfigError(f"unknown LDAP store option {item!r}")
        urlOptions[key] = value
    options = {}
    if "config" in urlOptions:
        options.update(_readConfigFile(urlOptions.pop("config")))
    options.update(urlOptions)
    password = options.pop("password", "")
    if "passwordFile" in options:
        password = _readPassword(options.pop("passwordFile"))
    kwargs = {}
    for key, value in options.items():
        converter = LDAPConfig._converters.get(key, str)
        try:
            kwargs[key] = converter(value)
        except ValueError as e:
            raise StoreConfigError(f"bad LDAP store option {key}={value!r}: "
                                   f"{e}") from None
    config = LDAPConfig(servers=servers, base=base, password=password,
                        **kwargs)
    if prefix == "ldaps://" and config.startTLS:
        raise StoreConfigError("startTLS=yes is for ldap:// URLs; ldaps:// "
                               "is TLS already")
    if config.caFile and prefix == "ldap://" and not config.startTLS:
        raise StoreConfigError("caFile is for TLS: use ldaps:// or "
                               "startTLS=yes")
    if prefix == "ldaps://" or config.startTLS:
        try:
            config.tls = LDAPTLS("ldaps" if prefix == "ldaps://"
                                 else "starttls", config.caFile)
        except ValueError as e:
            raise StoreConfigError(f"bad LDAP caFile: {e}") from None
    return config


def _dnKey(dn):
    try:
        return distinguishedname.DistinguishedName(
            stringValue=dn).getText().lower()
    except Exception:
        return dn.lower()


def _text(value):
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value


def _generalizedTime(seconds):
    return time.strftime("%Y%m%d%H%M%SZ", time.gmtime(seconds))


@implementer(IAssignmentStore)
class LDAPAssignmentStore:
    """
    Assignments in an LDAP directory.

    @param reactor: for time and connections.
    @param config: an L{LDAPConfig}.
    """

    _log = Logger()

    def __init__(self, reactor, config):
        self._reactor = reactor
        self._config = config
        self._conn = LDAPConnection(
            reactor, config.servers, config.timeout, config.bindDN,
            config.password, unavailable=StoreUnavailable, tls=config.tls)
        self._watchers = Watchers()
        self._cache = {}
        self._filters = {}
        self._pending = {}
        self._servers = None
        self._serverDNs = {}
        self._serverDN = {}
        self._serversLoaded = None
        self._reported = {}
        self._watermark = _generalizedTime(reactor.seconds() - 300)
        self._refreshing = None
        self._poller = None
        if config.refresh > 0:
            self._poller = LoopingCall(self._refreshLogged)
            self._poller.clock = reactor
            self._poller.start(config.refresh, now=False)

    # The directory.

    def _run(self, operation):
        """
        Send one request and return its response; connection problems and
        timeouts fail with L{StoreUnavailable}.
        """
        d = self._conn.client()

        def send(client):
            r = client.send(operation)
            r.addTimeout(self._config.timeout, self._reactor)
            return r

        d.addCallback(send)
        d.addErrback(self._unavailable)
        return d

    def _unavailable(self, failure):
        if failure.check(StoreUnavailable):
            # A directory that went silent: a new connection next time.
            self._conn.drop()
            return failure
        if failure.check(StoreError):
            return failure
        if failure.check(ldaperrors.LDAPException) and not failure.check(
                ldaperrors.LDAPClientConnectionLostException):
            raise StoreUnavailable(
                f"LDAP search failed: {describeLDAPError(failure.value)}")
        self._conn.drop()
        raise StoreUnavailable(
            f"LDAP directory unreachable: {describeLDAPError(failure.value)}")

    def _search(self, base, filterText, attributes, onEntry, sizeLimit=0,
                retry=True):
        """
        Search the subtree at C{base}; C{onEntry(dn, attributes)} is called
        for each entry with lower-cased attribute names and text values.

        A search that fails on a connection that was lost before any entry
        arrived is tried once more on a new connection (another URL if
        this one is down).
        """
        d = self._conn.client()
        done = Deferred()
        delivered = [0]
        timeout = self._config.timeout
        idle = []

        def silent():
            # No message from the directory for timeout seconds.
            if not done.called:
                done.errback(StoreUnavailable(
                    f"LDAP directory unreachable: no answer in {timeout:g} s"))

        def handler(msg, controls):
            if idle and idle[0].active():
                idle[0].reset(timeout)
            if isinstance(msg, pureldap.LDAPSearchResultEntry):
                attrs = {}
                for name, values in msg.attributes:
                    attrs[_text(name).lower()] = [_text(v) for v in values]
                delivered[0] += 1
                try:
                    onEntry(_text(msg.objectName), attrs)
                except Exception:
                    self._log.failure("bad entry {dn}", dn=msg.objectName)
                return False
            if isinstance(msg, pureldap.LDAPSearchResultDone):
                code = msg.resultCode
                if done.called:
                    return True
                if code == 0 or (sizeLimit and code == 4):
                    done.callback(None)
                elif code == 32:  # noSuchObject: base missing, no entries
                    done.callback(None)
                else:
                    done.errback(ldaperrors.get(code, msg.errorMessage))
                return True
            return False

        def send(client):
            op = pureldap.LDAPSearchRequest(
                baseObject=base, scope=pureldap.LDAP_SCOPE_wholeSubtree,
                derefAliases=pureldap.LDAP_DEREF_neverDerefAliases,
                sizeLimit=sizeLimit, timeLimit=0, typesOnly=0,
                filter=self._filter(filterText),
                attributes=attributes or ["1.1"])
            sent = client.send_multiResponse_ex(op, None, handler)
            sent.addErrback(lambda f: None if done.called else done.errback(f))
            # A deadline on silence, not on the whole search: a listing of
            # many entries may take long, a directory saying nothing not.
            idle.append(self._reactor.callLater(timeout, silent))

            def stop(result):
                if idle[0].active():
                    idle[0].cancel()
                return result
            done.addBoth(stop)
            return done

        def failed(failure):
            if retry and not delivered[0] and not failure.check(
                    StoreError, CancelledError) and not (
                    failure.check(ldaperrors.LDAPException) and
                    not failure.check(
                        ldaperrors.LDAPClientConnectionLostException)):
                self._conn.drop()
                return self._search(base, filterText, attributes, onEntry,
                                    sizeLimit, retry=False)
            return self._unavailable(failure)

        d.addCallback(send)
        d.addErrback(failed)
        return d

    def _filter(self, filterText):
        """
        The filter object for C{filterText}; filters made of the configured
        ones are parsed once (parsing is slow), others each time.
        """
        if not isinstance(filterText, str):
            return filterText
        parsed = self._filters.get(filterText)
        if parsed is None:
            parsed = ldapfilter.parseFilter(filterText)
            if len(self._filters) < 64:
                self._filters[filterText] = parsed
        return parsed

    def _check(self, response, what):
        code = response.resultCode
        if code == 68:
            raise ldaperrors.LDAPEntryAlreadyExists(response.errorMessage)
        if code != 0:
            error = ldaperrors.get(code, response.errorMessage)
            raise StoreError(f"LDAP {what} refused: {describeLDAPError(error)}")
        return response

    # Servers.

    def _record(self, dn, attrs):
        c = self._config

        def one(attr, default=None):
            if not attr:
                return default
            values = attrs.get(attr.lower())
            return values[0] if values else default

        serverId = one(c.serverIdAttr)
        uri = one(c.serverURIAttr)
        if uri is not None and not uri.lower().startswith(("sip:", "sips:")):
            uri = "sip:" + uri
        return ServerRecord(serverId, uri, one(c.weightAttr, "1"),
                            (one(c.stateAttr, "active") or "active").lower(),
                            one(c.tcpURIAttr), one(c.tlsURIAttr))

    def _loadServers(self):
        c = self._config
        servers, dns, byId = {}, {}, {}

        def entry(dn, attrs):
            try:
                record = self._record(dn, attrs)
            except (InvalidValue, TypeError) as e:
                self._log.warn("ignoring server entry {dn}: {error}", dn=dn,
                               error=e)
                return
            servers[record.id] = record
            dns[_dnKey(dn)] = record.id
            byId[record.id] = dn

        attributes = [a for a in (c.serverIdAttr, c.serverURIAttr,
                                  c.weightAttr, c.stateAttr, c.tcpURIAttr,
                                  c.tlsURIAttr) if a]
        d = self._search(c.serversBase, c.serverFilter, attributes, entry)

        def loaded(_):
            old = self._servers or {}
            self._servers, self._serverDNs, self._serverDN = \
                servers, dns, byId
            events = [ServerChanged(k, old.get(k), v)
                      for k, v in servers.items() if old.get(k) != v]
            events += [ServerChanged(k, v, None)
                       for k, v in old.items() if k not in servers]
            return events

        d.addCallback(loaded)
        return d

    def _ensureServers(self):
        if self._servers is not None:
            return succeed(self._servers)
        if self._serversLoaded is not None:
            d = Deferred()
            self._serversLoaded.append(d)
            return d
        self._serversLoaded = []

        def done(result):
            waiting, self._serversLoaded = self._serversLoaded, None
            for w in waiting:
                if isinstance(result, list):
                    w.callback(self._servers)
                else:
                    w.errback(result)
            if isinstance(result, list):
                return self._servers
            return result

        d = self._loadServers()
        d.addBoth(done)
        return d

    def _serverIdFromHome(self, value):
        if value is None:
            return None
        if self._config.homeIsDN:
            return self._serverDNs.get(_dnKey(value))
        return value

    def _homeValue(self, serverId):
        if self._config.homeIsDN:
            return self._serverDN[serverId]
        return serverId

    # Users.

    def _cachePut(self, key, serverId):
        cache = self._cache
        ttl = self._config.ttl if serverId is not None \
            else self._config.negativeTtl
        if key not in cache and len(cache) >= self._config.maxCache:
            del cache[next(iter(cache))]
        cache[key] = (serverId, self._reactor.seconds() + ttl)

    def _findUser(self, key):
        """
        @return: L{Deferred} firing with C{(dn, serverId)} of the user's
            entry or C{(None, None)}.
        """
        c = self._config
        found = []
        f = pureldap.LDAPFilter_and([
            self._filter(c.userFilter),
            pureldap.LDAPFilter_equalityMatch(
                attributeDesc=pureldap.LDAPAttributeDescription(c.aorAttr),
                assertionValue=pureldap.LDAPAssertionValue(
                    key.encode("utf-8")))])
        d = self._search(c.usersBase, f, [c.homeAttr],
                         lambda dn, attrs: found.append((dn, attrs)),
                         sizeLimit=2)

        def result(_):
            if not found:
                return None, None
            dn, attrs = found[0]
            values = attrs.get(c.homeAttr.lower())
            return dn, self._serverIdFromHome(values[0] if values else None)

        d.addCallback(result)
        return d

    def answersAtOnce(self, aor):
        """
        Whether L{lookupUser} of C{aor}, L{getServer} and L{listServers}
        answer now from the caches, without a search nor a refresh in the
        background: the servers are loaded and the user's entry is fresh.
        """
        if self._servers is None:
            return False
        try:
            key = aorKey(aor)
        except InvalidValue:
            return False
        cached = self._cache.get(key)
        return cached is not None and cached[1] > self._reactor.seconds()

    def lookupUser(self, aor):
        try:
            key = aorKey(aor)
        except InvalidValue:
            return fail()
        now = self._reactor.seconds()
        cached = self._cache.get(key)
        if cached is not None:
            if cached[1] > now:
                return succeed(cached[0])
            if now - cached[1] <= self._config.maxStale:
                # Stale while revalidating: answered at once, refreshed in
                # the background.
                self._startLookup(key)
                return succeed(cached[0])
        result = Deferred()
        pending = self._pending.get(key)
        if pending is not None:
            pending.append(result)
        elif len(self._pending) >= 10000:
            if cached is not None:
                return succeed(cached[0])
            return fail(StoreUnavailable("too many LDAP lookups waiting"))
        else:
            self._pending[key] = [result]
            self._begin(key)
        if not result.called:
            self._deadline(result, key)
        return result

    def _startLookup(self, key):
        """
        Look C{key} up in the background, unless a lookup is under way or
        too many are.
        """
        if key in self._pending or len(self._pending) >= 10000:
            return
        self._pending[key] = []
        self._begin(key)

    def _begin(self, key):
        d = self._ensureServers() if self._config.homeIsDN else succeed(None)
        d.addCallback(lambda _: self._findUser(key))
        d.addBoth(self._looked, key)

    def _deadline(self, result, key):
        """
        Answer C{result} after C{timeout} seconds if the lookup has not:
        with the expired cache entry if there is one, else with
        L{StoreUnavailable}.  The lookup goes on and fills the cache.
        """
        timeout = self._config.timeout

        def expire():
            if result.called:
                return
            waiting = self._pending.get(key)
            if waiting is not None and result in waiting:
                waiting.remove(result)
            cached = self._cache.get(key)
            if cached is not None:
                result.callback(cached[0])
            else:
                result.errback(StoreUnavailable(
                    f"LDAP directory did not answer in {timeout:g} s"))

        timer = self._reactor.callLater(timeout, expire)

        def done(value):
            if timer.active():
                timer.cancel()
            return value

        result.addBoth(done)

    def _looked(self, result, key):
        waiting = self._pending.pop(key, [])
        if isinstance(result, tuple):
            value = result[1]
            self._cachePut(key, value)
            for d in waiting:
                d.callback(value)
            return
        cached = self._cache.get(key)
        if cached is not None:
            if waiting:
                self._log.info("serving {aor} from cache: {error}", aor=key,
                               error=describeLDAPError(result.value))
            for d in waiting:
                d.callback(cached[0])
            return
        for d in waiting:
            d.errback(result)

    # Reading.

    def _bounded(self, d):
        """
        C{d}, or, if it has not fired within C{timeout} seconds, a failure
        with L{StoreUnavailable} then (the work goes on).
        """
        if d.called:
            return d
        timeout = self._config.timeout
        result = Deferred()

        def expire():
            if not result.called:
                result.errback(StoreUnavailable(
                    f"LDAP directory did not answer in {timeout:g} s"))

        timer = self._reactor.callLater(timeout, expire)

        def done(value):
            if timer.active():
                timer.cancel()
            if not result.called:
                result.callback(value)

        d.addBoth(done)
        return result

    def getServer(self, serverId):
        d = self._bounded(self._ensureServers())
        d.addCallback(lambda servers: servers.get(serverId))
        return d

    def listServers(self):
        d = self._bounded(self._ensureServers())
        d.addCallback(lambda servers: [servers[k] for k in sorted(servers)])
        return d

    @inlineCallbacks
    def countUsers(self):
        servers = yield self._ensureServers()
        c = self._config
        counts = {}
        for sid in sorted(servers):
            n = [0]

            def one(dn, attrs, n=n):
                n[0] += 1

            value = pureldap.escape(self._homeValue(sid))
            yield self._search(c.usersBase,
                               f"(&{c.userFilter}({c.homeAttr}={value}))",
                               None, one)
            counts[sid] = n[0]
        return counts

    @inlineCallbacks
    def usersOf(self, serverId, limit=None):
        servers = yield self._ensureServers()
        checkServerId(serverId)
        if serverId not in servers:
            raise UnknownServer(f"no server {serverId!r}")
        if limit is not None and limit <= 0:
            return []
        c = self._config
        result = []

        def one(dn, attrs):
            values = attrs.get(c.aorAttr.lower())
            if values:
                result.append(aorKey(values[0]))

        value = pureldap.escape(self._homeValue(serverId))
        yield self._search(c.usersBase,
                           f"(&{c.userFilter}({c.homeAttr}={value}))",
                           [c.aorAttr], one, sizeLimit=limit or 0)
        return result

    # Writing users.

    def assignUser(self, aor, serverId):
        return self._assign(aor, serverId, False)

    def moveUser(self, aor, serverId):
        return self._assign(aor, serverId, True)

    @inlineCallbacks
    def _assign(self, aor, serverId, mustExist):
        key = aorKey(aor)
        servers = yield self._ensureServers()
        checkServerId(serverId)
        if serverId not in servers:
            servers = yield self._reloadServers()
            if serverId not in servers:
                raise UnknownServer(f"no server {serverId!r}")
        c = self._config
        dn, old = yield self._findUser(key)
        if mustExist and old is None:
            raise UnknownUser(f"{key} has no assignment")
        if old == serverId:
            self._cachePut(key, serverId)
            return old
        value = self._homeValue(serverId)
        if dn is not None:
            op = delta.ModifyOp(dn, [delta.Replace(c.homeAttr, [value])])
            self._check((yield self._run(op.asLDAP())), "modify")
        elif c.createUsers:
            rdn = f"{c.aorAttr}={distinguishedname.escape(key)}"
            attributes = [("objectClass", c.userClasses.split()),
                          (c.aorAttr, [key]), (c.homeAttr, [value])]
            self._check((yield self._run(_addRequest(
                f"{rdn},{c.usersBase}", attributes))), "add")
        else:
            raise UnknownUser(f"no directory entry for {key}")
        self._cachePut(key, serverId)
        self._watchers.notify(UserChanged(key, old, serverId))
        return old

    @inlineCallbacks
    def removeUser(self, aor):
        key = aorKey(aor)
        yield self._ensureServers()
        dn, old = yield self._findUser(key)
        if old is None:
            raise UnknownUser(f"{key} has no assignment")
        op = delta.ModifyOp(dn, [delta.Delete(self._config.homeAttr)])
        self._check((yield self._run(op.asLDAP())), "modify")
        self._cachePut(key, None)
        self._watchers.notify(UserChanged(key, old, None))
        return old

    @inlineCallbacks
    def assignUsers(self, pairs):
        wanted = {}
        servers = yield self._ensureServers()
        for aor, serverId in pairs:
            checkServerId(serverId)
            if serverId not in servers:
                raise UnknownServer(f"no server {serverId!r}")
            wanted[aorKey(aor)] = serverId
        semaphore = DeferredSemaphore(8)
        yield gatherResults(
            [semaphore.run(self._assign, key, sid, False)
             for key, sid in wanted.items()], consumeErrors=True
        ).addErrback(lambda f: f.value.subFailure)
        return len(wanted)

    @inlineCallbacks
    def removeUsers(self, aors):
        keys = list(dict.fromkeys(aorKey(aor) for aor in aors))
        removed = [0]
        semaphore = DeferredSemaphore(8)

        @inlineCallbacks
        def one(key):
            try:
                yield self.removeUser(key)
            except UnknownUser:
                return
            removed[0] += 1

        yield gatherResults([semaphore.run(one, key) for key in keys],
                            consumeErrors=True
                            ).addErrback(lambda f: f.value.subFailure)
        return removed[0]

    # Writing servers.

    def _reloadServers(self):
        d = self._loadServers()
        d.addCallback(self._notifyAll)
        d.addCallback(lambda _: self._servers)
        return d

    def _notifyAll(self, events):
        for event in events:
            self._watchers.notify(event)
        return events

    @inlineCallbacks
    def addServer(self, record):
        if not isinstance(record, ServerRecord):
            raise InvalidValue(f"not a server record: {record!r}")
        servers = yield self._ensureServers()
        if record.id in servers:
            raise ServerExists(f"server {record.id!r} exists already")
        c = self._config
        attributes = [("objectClass", c.serverClasses.split()),
                      (c.serverIdAttr, [record.id]),
                      (c.serverURIAttr, [record.uri])]
        if c.weightAttr:
            attributes.append((c.weightAttr, [str(record.weight)]))
        if c.stateAttr:
            attributes.append((c.stateAttr, [record.state]))
        for attr, name, value in ((c.tcpURIAttr, "TCP URI", record.tcpUri),
                                  (c.tlsURIAttr, "TLS URI", record.tlsUri)):
            if value is not None:
                if not attr:
                    raise InvalidValue(f"this directory keeps no server "
                                       f"{name} (no attribute configured)")
                attributes.append((attr, [value]))
        dn = (f"{c.serverIdAttr}={distinguishedname.escape(record.id)},"
              f"{c.serversBase}")
        try:
            self._check((yield self._run(_addRequest(dn, attributes))), "add")
        except ldaperrors.LDAPEntryAlreadyExists:
            raise ServerExists(f"server {record.id!r} exists already") \
                from None
        yield self._reloadServers()
        return record

    @inlineCallbacks
    def updateServer(self, serverId, uri=None, weight=None, state=None,
                     tcpUri=None, tlsUri=None):
        servers = yield self._ensureServers()
        checkServerId(serverId)
        old = servers.get(serverId)
        if old is None:
            raise UnknownServer(f"no server {serverId!r}")
        new = old.updated(uri, weight, state, tcpUri, tlsUri)
        c = self._config
        changes = []
        for attr, name in ((c.serverURIAttr, "uri"), (c.weightAttr, "weight"),
                           (c.stateAttr, "state"), (c.tcpURIAttr, "tcpUri"),
                           (c.tlsURIAttr, "tlsUri")):
            value = getattr(new, name)
            if value != getattr(old, name):
                if not attr:
                    raise InvalidValue(f"this directory keeps no server "
                                       f"{name} (no attribute configured)")
                # Replacing with no value removes the attribute (RFC 4511
                # section 4.6).
                changes.append(delta.Replace(
                    attr, [] if value is None else [str(value)]))
        if changes:
            op = delta.ModifyOp(self._serverDN[serverId], changes)
            self._check((yield self._run(op.asLDAP())), "modify")
            yield self._reloadServers()
        return new

    @inlineCallbacks
    def removeServer(self, serverId):
        servers = yield self._ensureServers()
        checkServerId(serverId)
        if serverId not in servers:
            raise UnknownServer(f"no server {serverId!r}")
        users = yield self.usersOf(serverId, limit=1)
        if users:
            raise ServerInUse(f"server {serverId!r} still has users; "
                              f"move them first")
        record = servers[serverId]
        self._check((yield self._run(pureldap.LDAPDelRequest(
            entry=self._serverDN[serverId]))), "delete")
        yield self._reloadServers()
        return record

    # Watching.

    def watch(self, callback):
        return self._watchers.add(callback)

    def _refreshLogged(self):
        d = self.refresh()
        d.addErrback(lambda f: self._log.warn(
            "LDAP refresh failed: {error}", error=describeLDAPError(f.value)))

    def refresh(self):
        """
        Read the server entries and the user entries changed since the last
        refresh; report and cache what changed.

        @return: L{Deferred} firing when done.
        """
        if self._refreshing is not None:
            d = Deferred()
            self._refreshing.append(d)
            return d
        self._refreshing = []

        def done(result):
            waiting, self._refreshing = self._refreshing, None
            for d in waiting:
                d.callback(None)
            return result

        d = self._refresh()
        d.addBoth(done)
        return d

    @inlineCallbacks
    def _refresh(self):
        yield self._ensureServers()
        yield self._reloadServers()
        c = self._config
        seen = []

        def one(dn, attrs):
            aors = attrs.get(c.aorAttr.lower())
            stamps = attrs.get(c.changeAttr.lower())
            if not aors:
                return
            homes = attrs.get(c.homeAttr.lower())
            seen.append((aorKey(aors[0]),
                         self._serverIdFromHome(homes[0] if homes else None),
                         stamps[0] if stamps else ""))

        since = self._watermark
        yield self._search(
            c.usersBase, f"(&{c.userFilter}({c.changeAttr}>={since}))",
            [c.aorAttr, c.homeAttr, c.changeAttr], one)
        for key, serverId, stamp in seen:
            if stamp > self._watermark:
                self._watermark = stamp
            cached = self._cache.get(key)
            if cached is not None:
                if cached[0] == serverId:
                    self._cachePut(key, serverId)
                    continue
                old = cached[0]
            else:
                if self._reported.get(key) == stamp:
                    continue
                if len(self._reported) >= 10000:
                    del self._reported[next(iter(self._reported))]
                self._reported[key] = stamp
                old = None
            self._cachePut(key, serverId)
            self._watchers.notify(UserChanged(key, old, serverId))

    def close(self):
        if self._poller is not None and self._poller.running:
            self._poller.stop()
        self._conn.close()
        return succeed(None)


def _addRequest(dn, attributes):
    ldapAttrs = []
    for name, values in attributes:
        ldapAttrs.append((
            pureldap.LDAPAttributeDescription(name),
            pureber.BERSet([pureldap.LDAPAttributeValue(
                v.encode("utf-8") if isinstance(v, str) else v)
                for v in values])))
    return pureldap.LDAPAddRequest(entry=dn, attributes=ldapAttrs)
