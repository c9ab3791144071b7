# -*- test-case-name: tests.test_deferreds -*-
"""
Taking the result of a L{Deferred} that has fired already, so that the
request path does not pay for callback chains when the assignment store and
the credential source answer from memory (their Deferreds have fired by the
time they are returned).

Only a success is taken: a failure stays in its Deferred and goes down the
errback chain as before, so errors are handled (and logged if unhandled)
exactly as they were.
"""

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

#: What L{firedResult} returns for a Deferred whose result is not at hand.
NOT_FIRED = object()

# Type -> whether it is a Deferred (a subclass): Deferred is an abstract
# base class (typing's Awaitable), whose isinstance() goes through
# ABCMeta's caches, 0.5 us for a value that is not one on CPython and
# 0.16 us on PyPy, against a dict lookup.  Bounded: emptied when full.
_DEFERRED_TYPES = {}
_MAX_TYPES = 256


def _isDeferred(value):
    """
    Whether C{value} is a L{Deferred}.
    """
    cls = type(value)
    known = _DEFERRED_TYPES.get(cls)
    if known is None:
        known = isinstance(value, Deferred)
        if len(_DEFERRED_TYPES) >= _MAX_TYPES:
            _DEFERRED_TYPES.clear()
        _DEFERRED_TYPES[cls] = known
    return known


def firedResult(d):
    """
    The result C{d} has fired with, when it fired with a success and no
    callback is waiting to run; else L{NOT_FIRED} (then use C{d} as usual).

    @type d: L{Deferred} or any other value (returned as it is: a
        synchronous answer).
    """
    if not _isDeferred(d):
        return d
    # Called and not paused: every callback added has run (a paused
    # Deferred waits on another, its result is that Deferred).
    if d.called and not d.paused:
        result = d.result
        if not isinstance(result, Failure) and not _isDeferred(result):
            return result
    return NOT_FIRED


def whenFired(d, callback, errback, args=(), errbackArgs=None):
    """
    C{callback(result, *args)} at once when C{d} has fired with a success
    (L{firedResult}), else C{d.addCallbacks(callback, errback, args, None,
    errbackArgs)}.  The callback's return value is dropped either way.
    """
    result = firedResult(d)
    if result is NOT_FIRED:
        d.addCallbacks(callback, errback, args, None,
                       args if errbackArgs is None else errbackArgs)
    else:
        callback(result, *args)
