# -*- test-case-name: tests.test_auth_limiter -*-
"""
Counting failed authentications per user and per source address, in
bounded tables, to answer C{403} once a threshold is passed.

A counter starts with the first failure of its key and covers C{window}
seconds from then; when C{threshold} failures are counted within it, the
key is blocked until the window ends.  Each table holds at most C{maxKeys}
keys; the least recently failed key is dropped first.  Time comes from the
injected reactor.  Every operation is O(1).
"""

import math
from collections import OrderedDict


class _Table:
    """
    One bounded table of C{key -> [windowStart, count]}.
    """

    __slots__ = ("_entries", "_maxKeys")

    def __init__(self, maxKeys):
        self._entries = OrderedDict()
        self._maxKeys = maxKeys

    def __len__(self):
        return len(self._entries)

    def blockedFor(self, key, now, threshold, window):
        entry = self._entries.get(key)
        if entry is None:
            return None
        end = entry[0] + window
        if now >= end:
            del self._entries[key]
            return None
        if entry[1] >= threshold:
            return end - now
        return None

    def fail(self, key, now, window):
        entries = self._entries
        entry = entries.get(key)
        if entry is None or now >= entry[0] + window:
            if entry is None and len(entries) >= self._maxKeys:
                entries.popitem(last=False)
            entries[key] = [now, 1]
        else:
            entry[1] += 1
        entries.move_to_end(key)

    def forget(self, key):
        self._entries.pop(key, None)


class FailureLimiter:
    """
    Failed authentications per user and per source host.

    @ivar threshold: failures within a window after which a key is blocked.
    @ivar window: length of a window in seconds.
    """

    def __init__(self, reactor, threshold=10, window=300, maxKeys=10000,
                 hostThreshold=None):
        """
        @param reactor: an L{IReactorTime}.
        @param threshold: failures per user (and per host, unless
            C{hostThreshold} is given) before C{403}.
        @param hostThreshold: failures per source host before C{403}; a
            host may serve many users (NAT), so it may be set higher.
        @param maxKeys: size of each of the two tables.
        """
        if threshold < 1 or window <= 0 or maxKeys < 1:
            raise ValueError("threshold, window and maxKeys must be positive")
        self._reactor = reactor
        self.threshold = threshold
        self.hostThreshold = threshold if hostThreshold is None else hostThreshold
        self.window = window
        self._users = _Table(maxKeys)
        self._hosts = _Table(maxKeys)

    def hostBlocked(self, host):
        """
        @return: whole seconds until C{host} may try again, or L{None} if it
            is not blocked.
        """
        left = self._hosts.blockedFor(
            host, self._reactor.seconds(), self.hostThreshold, self.window)
        return None if left is None else max(1, math.ceil(left))

    def userBlocked(self, username):
        """
        @return: whole seconds until C{username} may try again, or L{None}.
        """
        left = self._users.blockedFor(
            username, self._reactor.seconds(), self.threshold, self.window)
        return None if left is None else max(1, math.ceil(left))

    def failed(self, username, host):
        """
        Count one failed authentication of C{username} from C{host}.
        """
        now = self._reactor.seconds()
        self._users.fail(username, now, self.window)
        self._hosts.fail(host, now, self.window)

    def succeeded(self, username, host):
        """
        A successful authentication clears the user's count (the host's
        stays: one good account must not launder an attack on others).
        """
        self._users.forget(username)
