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
from dataclasses import dataclass, replace

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


@dataclass(frozen=True)
class ServerRecord:
    """
    A home server as the store knows it.

    @ivar id: short name, e.g. C{home1}.
    @ivar uri: the SIP URI a redirect names (C{sip:10.0.0.2:5060}).
    @ivar weight: capacity weight, 0 to 1000000 (0: take no new users).
    @ivar state: C{active}, C{draining} (keeps its users, gets no new ones)
        or C{down}.
    """

    id: str
    uri: str
    weight: int = 1
    state: str = ACTIVE

    def __post_init__(self):
        checkServerId(self.id)
        checkServerURI(self.uri)
        object.__setattr__(self, "weight", checkWeight(self.weight))
        checkState(self.state)

    def updated(self, uri=None, weight=None, state=None):
        """
        @return: a copy with the given fields changed.
        """
        changes = {}
        if uri is not None:
            changes["uri"] = uri
        if weight is not None:
            changes["weight"] = weight
        if state is not None:
            changes["state"] = state
        return replace(self, **changes)


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
