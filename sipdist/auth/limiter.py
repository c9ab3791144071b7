# -*- test-case-name: tests.test_auth_limiter -*-
"""
Slowing down password guessing without locking anybody out.

Failed authentications are counted per I{pair}: a user name and the address
of the client that tried it (the address the request came from, or, through
an edge of the pool, the client address the edge states in a sealed header:
L{sipdist.auth.clientaddress}).  A pair's first C{threshold - 1} failures
cost nothing; the C{threshold}-th and every later one make the pair wait
before its next attempt: C{baseDelay} seconds, then twice as long after each
further failure, at most C{maxDelay}.  While it waits, an attempt of that
pair gets C{403} with C{Retry-After} (its credentials are not even checked,
so waiting is the only way forward).  A pair's count is forgotten C{window}
seconds after its last failure, and at once when it authenticates.

So one user's typos slow that user down, from that address only: the same
user elsewhere, and every other user behind the same address (an edge, a
NAT, every local client on 127.0.0.1), are not affected.

Per address across users there is a budget too (C{hostThreshold} failures
within C{window} seconds from the first): past it, every user failing from
that address is slowed from its first failure (the pair threshold becomes
1), which slows down an attacker trying one password for many users.  It
never blocks the address: users who do not fail are served at once.

Both tables are bounded (C{maxKeys} keys each, the least recently failed
dropped first); time comes from the injected reactor; every operation is
O(1).
"""

import math
from collections import OrderedDict

# 2 ** this is the largest factor of baseDelay computed.
_MAX_DOUBLINGS = 30


class _Pair:
    """
    The failures of one (user, address) pair.

    @ivar last: time of the last failure.
    @ivar count: failures since the count was last forgotten.
    @ivar until: time before which the pair waits.
    """

    __slots__ = ("last", "count", "until")

    def __init__(self, now):
        self.last = now
        self.count = 0
        self.until = 0.0


class FailureLimiter:
    """
    Failed authentications per (user, client address) and per address.

    @ivar threshold: the failure of a pair from which it waits.
    @ivar window: seconds after a pair's last failure when its count is
        forgotten (and the length of an address's counting window).
    @ivar baseDelay: the first wait (s).
    @ivar maxDelay: the longest wait (s).
    @ivar hostThreshold: failures from one address, all users together,
        past which failing users of that address wait from their first
        failure.
    """

    def __init__(self, reactor, threshold=10, window=300, maxKeys=10000,
                 hostThreshold=100, baseDelay=1.0, maxDelay=60.0):
        """
        @param reactor: an L{IReactorTime}.
        @param maxKeys: size of each of the two tables (pairs, addresses).
        """
        if (threshold < 1 or window <= 0 or maxKeys < 1 or hostThreshold < 1
                or baseDelay <= 0 or maxDelay < baseDelay):
            raise ValueError("threshold, window, maxKeys, hostThreshold and "
                             "baseDelay must be positive, maxDelay at least "
                             "baseDelay")
        self._reactor = reactor
        self.threshold = threshold
        self.window = window
        self.hostThreshold = hostThreshold
        self.baseDelay = baseDelay
        self.maxDelay = maxDelay
        self._maxKeys = maxKeys
        # (username, host) -> _Pair, least recently failed first.
        self._pairs = OrderedDict()
        # host -> [windowStart, count], least recently failed first.
        self._hosts = OrderedDict()
        self.slowed = 0

    def retryAfter(self, username, host):
        """
        @return: whole seconds C{username} must wait before trying again
            from C{host}, or L{None} if it may try now.
        """
        pair = self._pairs.get((username, host))
        if pair is None:
            return None
        left = pair.until - self._reactor.seconds()
        if left <= 0:
            return None
        self.slowed += 1
        return max(1, math.ceil(left))

    def hasFailures(self, username, host):
        """
        Whether failures of C{username} from C{host} are counted (so that
        L{retryAfter} may make it wait and L{succeeded} has them to forget).
        """
        return (username, host) in self._pairs

    def failed(self, username, host):
        """
        Count one failed authentication of C{username} from C{host}.
        """
        now = self._reactor.seconds()
        key = (username, host)
        pairs = self._pairs
        pair = pairs.get(key)
        if pair is None:
            if len(pairs) >= self._maxKeys:
                pairs.popitem(last=False)
            pair = pairs[key] = _Pair(now)
        elif now >= pair.last + self.window:
            pair.count = 0
        else:
            pairs.move_to_end(key)
        pair.last = now
        pair.count += 1
        threshold = self.threshold
        if self._hostFailed(host, now) > self.hostThreshold:
            threshold = 1
        beyond = pair.count - threshold
        if beyond >= 0:
            delay = min(self.baseDelay * 2 ** min(beyond, _MAX_DOUBLINGS),
                        self.maxDelay)
            pair.until = now + delay

    def _hostFailed(self, host, now):
        """
        Count a failure from C{host} in its window.

        @return: the failures counted in the window.
        """
        hosts = self._hosts
        entry = hosts.get(host)
        if entry is None or now >= entry[0] + self.window:
            if entry is None and len(hosts) >= self._maxKeys:
                hosts.popitem(last=False)
            hosts[host] = entry = [now, 0]
        entry[1] += 1
        hosts.move_to_end(host)
        return entry[1]

    def succeeded(self, username, host):
        """
        A successful authentication forgets the pair's failures (the
        address's stay: one good account must not launder an attack on
        others).
        """
        self._pairs.pop((username, host), None)

    def stats(self):
        """
        @return: the table sizes and C{slowed}, the attempts answered
            C{403} to make them wait.
        """
        return {"pairs": len(self._pairs), "addresses": len(self._hosts),
                "slowed": self.slowed}
