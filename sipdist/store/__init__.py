# -*- test-case-name: tests.test_store -*-
"""
The assignment store: values, errors and provider selection.

A store is chosen by a string, C{PREFIX:REST}.  The prefix picks an
L{IAssignmentStoreParser} plugin (found with L{twisted.plugin.getPlugins}
in any C{twisted/plugins} directory on the path); sipdist ships C{memory},
C{file} and C{ldap} (see C{docs/stores.rst}).

This module imports nothing that installs a reactor: L{aorKey} imports
L{sipdist.sip.uri} (and with it L{twisted.protocols.sip}) only for AORs that are
not already in normalised form.
"""

import re
from dataclasses import dataclass, field, replace

from twisted.logger import Logger

from sipdist.interfaces import IAssignmentStoreParser

ACTIVE = "active"
DRAINING = "draining"
DOWN = "down"
STATES = (ACTIVE, DRAINING, DOWN)

_SERVER_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")


class StoreError(Exception):
    """
    Base of the errors a store reports; the message is one line for a user.
    """


class StoreConfigError(StoreError):
    """
    A store string, configuration file or assignment file is not valid.
    """


class StoreUnavailable(StoreError):
    """
    The backend cannot be reached and the answer is not cached.
    """


class UnknownServer(StoreError):
    """
    No server has this id.
    """


class UnknownUser(StoreError):
    """
    The user has no assignment (or no entry in a directory).
    """


class ServerExists(StoreError):
    """
    A server with this id exists already.
    """


class ServerInUse(StoreError):
    """
    A server still has users assigned and cannot be removed.
    """


class InvalidValue(StoreError, ValueError):
    """
    An AOR, server id, URI, weight or state is not valid.
    """


def checkServerId(serverId):
    """
    @return: C{serverId} if it is 1 to 64 letters, digits, C{.}, C{_} or
        C{-}, starting with a letter or digit.
    @raise InvalidValue: otherwise.
    """
    if not isinstance(serverId, str) or not _SERVER_ID.match(serverId):
        raise InvalidValue(f"bad server id {serverId!r} (letters, digits, "
                           f"'.', '_', '-'; at most 64)")
    return serverId


def checkServerURI(uri):
    """
    @return: C{uri} if it is a C{sip:} or C{sips:} URI without a user part
        restriction (any SIP URI a redirect can name).
    @raise InvalidValue: otherwise.
    """
    from sipdist.sip.uri import URIError, parseURI
    if not isinstance(uri, str):
        raise InvalidValue(f"bad server URI {uri!r}")
    try:
        parseURI(uri)
    except URIError as e:
        raise InvalidValue(f"bad server URI {uri!r}: {e}") from None
    return uri


def checkWeight(weight):
    """
    @return: C{weight} as an L{int} between 0 and 1000000.
    @raise InvalidValue: otherwise.
    """
    try:
        value = int(weight)
    except (TypeError, ValueError):
        raise InvalidValue(f"bad weight {weight!r} (an integer)") from None
    if isinstance(weight, bool) or not 0 <= value <= 1000000:
        raise InvalidValue(f"bad weight {weight!r} (0 to 1000000)")
    return value


def checkState(state):
    """
    @return: C{state} if it is C{active}, C{draining} or C{down}.
    @raise InvalidValue: otherwise.
    """
    if state not in STATES:
        raise InvalidValue(f"bad state {state!r} (one of {', '.join(STATES)})")
    return state


TRANSPORTS = ("UDP", "TCP", "TLS")

# What a client or peer may be sent to when its request came over a
# transport: that transport first, then only stronger ones.  Never weaker:
# TLS is never continued over TCP or UDP.
_UPGRADES = {"UDP": ("UDP", "TCP", "TLS"), "TCP": ("TCP", "TLS"),
             "TLS": ("TLS",)}


def _parsedServerURI(uri, what):
    from sipdist.sip.uri import URIError, parseURI
    if not isinstance(uri, str):
        raise InvalidValue(f"bad server {what} {uri!r}")
    try:
        return parseURI(uri)
    except URIError as e:
        raise InvalidValue(f"bad server {what} {uri!r}: {e}") from None


def _transportOf(parsed):
    """
    The transport a server URI names: C{"TLS"} for C{sips:} or
    C{transport=tls}, C{"TCP"} for C{transport=tcp}, C{"UDP"} for
    C{transport=udp}, C{None} for a C{sip:} URI without a transport
    parameter (UDP and TCP alike, RFC 3261 section 18), C{"?"} for any
    other transport.
    """
    transport = (parsed.transport or "").lower()
    if parsed.scheme == "sips" or transport == "tls":
        return "TLS"
    if not transport:
        return None
    return {"tcp": "TCP", "udp": "UDP"}.get(transport, "?")


def _withTransport(parsed, transport):
    copy = parsed.copy()
    copy.transport = transport
    return copy.toString()


def _addresses(uri, tcpUri, tlsUri):
    """
    The URI of a server for each transport a request can arrive on, from
    its three URIs (see L{ServerRecord}).
    """
    byTransport = {}
    parsed = _parsedServerURI(uri, "URI")
    kind = _transportOf(parsed)
    if kind is None:
        byTransport["UDP"] = uri
        byTransport["TCP"] = _withTransport(parsed, "tcp")
    elif kind in TRANSPORTS:
        byTransport[kind] = uri
    if tcpUri is not None:
        parsed = _parsedServerURI(tcpUri, "TCP URI")
        if _transportOf(parsed) not in (None, "TCP"):
            raise InvalidValue(f"bad server TCP URI {tcpUri!r}: a sip: URI "
                               f"for TCP (no transport or transport=tcp)")
        byTransport["TCP"] = _withTransport(parsed, "tcp")
    if tlsUri is not None:
        parsed = _parsedServerURI(tlsUri, "TLS URI")
        if _transportOf(parsed) != "TLS":
            raise InvalidValue(f"bad server TLS URI {tlsUri!r}: a sips: URI "
                               f"or one with transport=tls")
        byTransport["TLS"] = tlsUri
    return {arrived: next((byTransport[t] for t in _UPGRADES[arrived]
                           if t in byTransport), None)
            for arrived in TRANSPORTS}


@dataclass(frozen=True)
class ServerRecord:
    """
    A home server as the store knows it.

    Which URI a request is redirected or proxied to depends on the
    transport it arrived on (L{serverURIFor}):

      - C{uri} serves UDP; a C{sip:} URI without a C{transport} parameter
        serves TCP too (every SIP server implements both, RFC 3261 section
        18): it is named with C{;transport=tcp} to a TCP client.  A C{uri}
        that is C{sips:} or has C{transport=tls} serves TLS (only);
      - C{tcpUri}, when set, serves TCP instead;
      - C{tlsUri}, when set, serves TLS.

    Nothing is inferred from port numbers: a record without a TLS URI has
    no TLS address, and a request that came over TLS gets no URI at all
    rather than one over TCP or UDP.  A request may be sent to a stronger
    transport than it came on (UDP to TCP or TLS, TCP to TLS) when the
    record has no URI for its own.

    @ivar id: short name, e.g. C{home1}.
    @ivar uri: the server's main SIP URI (C{sip:10.0.0.2:5060}).
    @ivar weight: capacity weight, 0 to 1000000 (0: take no new users).
    @ivar state: C{active}, C{draining} (keeps its users, gets no new ones)
        or C{down}.
    @ivar tcpUri: its URI for TCP (C{sip:10.0.0.2:5060;transport=tcp}), or
        L{None}.
    @ivar tlsUri: its URI for TLS (C{sips:home1.example.com:5061}), or
        L{None}.
    """

    id: str
    uri: str
    weight: int = 1
    state: str = ACTIVE
    tcpUri: str = None
    tlsUri: str = None
    _byTransport: dict = field(init=False, repr=False, compare=False,
                               default=None)

    def __post_init__(self):
        checkServerId(self.id)
        for name in ("tcpUri", "tlsUri"):
            if getattr(self, name) == "":
                object.__setattr__(self, name, None)
        object.__setattr__(self, "_byTransport", _addresses(
            self.uri, self.tcpUri, self.tlsUri))
        object.__setattr__(self, "weight", checkWeight(self.weight))
        checkState(self.state)

    def updated(self, uri=None, weight=None, state=None, tcpUri=None,
                tlsUri=None):
        """
        @return: a copy with the given fields changed (L{None}: unchanged;
            C{""} for C{tcpUri} or C{tlsUri}: removed).
        """
        changes = {}
        for name, value in (("uri", uri), ("weight", weight),
                            ("state", state), ("tcpUri", tcpUri),
                            ("tlsUri", tlsUri)):
            if value is not None:
                changes[name] = value
        return replace(self, **changes)


def serverURIFor(record, transport):
    """
    The URI of a server that a request which arrived over C{transport} is
    redirected or proxied to (see L{ServerRecord}): the record's URI for
    that transport, else for a stronger one; never a weaker one.

    @param record: a L{ServerRecord}.
    @param transport: C{"UDP"}, C{"TCP"} or C{"TLS"} (any case).
    @return: the URI text, or L{None} if the record has no URI for
        C{transport} nor a stronger one.
    """
    return record._byTransport.get(transport.upper())


@dataclass(frozen=True)
class UserChanged:
    """
    A user's assignment changed.

    @ivar aor: normalised AOR.
    @ivar old: previous server id, L{None} if it had none or it is unknown.
    @ivar new: new server id, L{None} if the assignment was removed.
    """

    aor: str
    old: object
    new: object


@dataclass(frozen=True)
class ServerChanged:
    """
    A server record was added (C{old} is L{None}), changed, or removed
    (C{new} is L{None}).
    """

    serverId: str
    old: object
    new: object


_PLAIN_USER = re.compile(r"sip:[A-Za-z0-9\-_.!~*'()&=+$,/]+@[a-z0-9.\-]+\Z")


def aorKey(aor):
    """
    The normalised form of an address-of-record, the key of every store.

    Text already in normalised form (C{sip:user@host}, lower-case host, no
    escapes, port or parameters) is returned as it is without parsing;
    anything else goes through L{sipdist.sip.uri.normaliseAOR}.

    @raise InvalidValue: if C{aor} is not a SIP address-of-record.
    """
    if isinstance(aor, str) and _PLAIN_USER.match(aor):
        return aor
    from sipdist.sip.uri import URIError, normaliseAOR
    try:
        return normaliseAOR(aor)
    except (URIError, TypeError, AttributeError) as e:
        raise InvalidValue(f"bad address-of-record {aor!r}: {e}") from None


class Watchers:
    """
    The subscribers of one store; a failing callback is logged and skipped.
    """

    _log = Logger()

    def __init__(self):
        self._callbacks = {}
        self._next = 0

    def __bool__(self):
        return bool(self._callbacks)

    def add(self, callback):
        """
        @return: a callable removing C{callback} again (idempotent).
        """
        token = self._next
        self._next += 1
        self._callbacks[token] = callback
        return lambda: self._callbacks.pop(token, None) and None

    def notify(self, event):
        for callback in list(self._callbacks.values()):
            try:
                callback(event)
            except Exception:
                self._log.failure("store watcher {callback!r} failed on "
                                  "{event!r}", callback=callback, event=event)


def splitOptions(text):
    """
    Split the C{REST} of a C{PREFIX:REST} store string the way endpoint
    strings are split: on C{:}, with C{\\:} standing for a colon and
    C{\\\\} for a backslash; C{key=value} items are options, the others are
    positional.

    @return: C{(positional list, options dict)}.
    """
    parts, current, i = [], [], 0
    while i < len(text):
        c = text[i]
        if c == "\\" and i + 1 < len(text):
            current.append(text[i + 1])
            i += 2
            continue
        if c == ":":
            parts.append("".join(current))
            current = []
        else:
            current.append(c)
        i += 1
    parts.append("".join(current))
    args, kwargs = [], {}
    for part in parts:
        key, sep, value = part.partition("=")
        if sep and re.match(r"[A-Za-z_][A-Za-z0-9_]*\Z", key):
            kwargs[key] = value
        else:
            args.append(part)
    return args, kwargs


def storeParsers():
    """
    @return: L{dict} from prefix to every L{IAssignmentStoreParser} plugin
        found on the path (C{twisted.plugins}).
    """
    from sipdist.plugin import parsersFor
    return parsersFor(IAssignmentStoreParser)


def storeFromString(reactor, description, parsers=None):
    """
    Build the store a string describes, e.g. C{memory:},
    C{file:etc/assignments.conf} or C{ldap://127.0.0.1:389/dc=example,dc=com}.

    @param parsers: mapping from prefix to parser; by default
        L{storeParsers}.
    @raise StoreConfigError: unknown prefix or a string the provider rejects.
    """
    from sipdist.plugin import parserFor
    if parsers is None:
        parsers = storeParsers()
    parser = parserFor(description, parsers, "store",
                       "memory:, file:PATH or ldap://HOST:PORT/BASE",
                       StoreConfigError)
    return parser.parseStore(reactor, description)
