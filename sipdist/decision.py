# -*- test-case-name: tests.test_decision -*-
"""
The distribution decision: what a server does with a request from an
authenticated user, given the user's assignment, the server's role and its
redirect policy.

L{decide} is a pure function: no I/O, no time, no store.  The roles gather
the facts (the number of Via values, the user's assignment as read from the
store) and act on the outcome:

  - L{Serve}: the user is assigned here (home role only): register it,
    route its requests;
  - L{Redirect}: a signed C{301} whose Contact is the assigned server;
  - L{Proxy}: forward the request, statefully, to the assigned server;
  - L{Reject}: a final response naming the problem (unknown user, unknown or
    failed home server).

The rule (see DESIGN.md): assigned here and a home -> serve.  Otherwise a
redirect is only for a client that has shown it follows the distribution
redirect (it lists the option tag L{REDIRECT_OPTION_TAG} in C{Supported},
or its C{User-Agent} matches a configured pattern): standard RFC 3261
clients ignore a C{301} to REGISTER or retarget the Request-URI to its
Contact (an INVITE would then call our server).  With the per-server
redirect policy:

  - C{auto}: redirect a client that follows the redirect and talks to us
    directly (exactly one Via value); proxy everything else (a standard
    client, or a request that came through an edge or a proxy);
  - C{proxy}: never redirect;
  - C{redirect}: redirect every REGISTER (even from a standard client,
    even through a proxy, which passes the C{301} back): for deployments
    whose clients all follow it; a request other than REGISTER is still
    redirected only for a client that follows the redirect, and proxied
    for any other, which would retarget it to the server.
"""

from dataclasses import dataclass

AUTO = "auto"
PROXY = "proxy"
REDIRECT = "redirect"
POLICIES = (AUTO, PROXY, REDIRECT)

ACTIVE = "active"
DRAINING = "draining"
DOWN = "down"

HOME = "home"

# The option tag (RFC 3261 section 19.2) a client puts in Supported to say
# it follows the distribution redirect: a signed 301 whose Contact names a
# server is used as its outbound proxy, the Request-URI unchanged.
REDIRECT_OPTION_TAG = "sipdist-redirect"

# Seconds a client is asked to wait when its home server is down (the
# rebalancer moves its users meanwhile).
DOWN_RETRY_AFTER = 30


@dataclass(frozen=True)
class Serve:
    """
    Serve the request here.
    """


@dataclass(frozen=True)
class Redirect:
    """
    Answer C{301 Moved Permanently} with C{Contact: <uri>}.
    """

    uri: str
    serverId: str


@dataclass(frozen=True)
class Proxy:
    """
    Forward the request to C{uri}.
    """

    uri: str
    serverId: str


@dataclass(frozen=True)
class Reject:
    """
    Answer C{code} with C{phrase}; C{retryAfter} seconds when set.
    """

    code: int
    phrase: str
    retryAfter: int = None


@dataclass(frozen=True)
class Assignment:
    """
    What the store says of a user: the server id it is assigned to (or
    C{None}) and that server's record (or C{None} when the id names no
    server).
    """

    serverId: str = None
    uri: str = None
    state: str = None


NOT_ASSIGNED = Reject(404, "Not Found (No Home Server Assigned)")
UNKNOWN_SERVER = Reject(480, "Temporarily Unavailable (Unknown Home Server)")
SERVER_DOWN = Reject(503, "Service Unavailable (Home Server Down)",
                     DOWN_RETRY_AFTER)
_SERVE = Serve()


def decide(viaCount, assignment, role, localName, policy=AUTO,
           followsRedirect=False, register=True):
    """
    Decide what to do with a request from an authenticated user.

    @param viaCount: the number of Via values of the request as received
        (before we add ours).
    @param followsRedirect: whether the client has shown it follows the
        distribution redirect (the option tag, a configured User-Agent).
    @param register: whether the request is a REGISTER (only a REGISTER
        may be redirected for a client that does not follow the redirect,
        and only under the C{redirect} policy).
    @param assignment: the user's L{Assignment}.
    @param role: this server's role (C{"home"}, C{"distributor"},
        C{"internal-edge"}); only a home serves users.
    @param localName: this server's id in the store.
    @param policy: C{"auto"}, C{"proxy"} or C{"redirect"}.
    @return: L{Serve}, L{Redirect}, L{Proxy} or L{Reject}.
    """
    serverId = assignment.serverId
    if serverId is None:
        return NOT_ASSIGNED
    if serverId == localName and role == HOME:
        return _SERVE
    if assignment.uri is None:
        return UNKNOWN_SERVER
    if assignment.state == DOWN:
        return SERVER_DOWN
    if policy == REDIRECT:
        redirect = followsRedirect or register
    elif policy == AUTO:
        redirect = followsRedirect and viaCount == 1
    else:
        redirect = False
    if redirect:
        return Redirect(assignment.uri, serverId)
    return Proxy(assignment.uri, serverId)
