# -*- test-case-name: tests.test_chains -*-
"""
Every role's chain of request processors, in one table.

A request that reaches the transaction user (L{sipdist.server.SIPServer})
goes down its role's chain: each link gets the request and its server
transaction and either takes it (answers it, or proxies it) or passes it
on.  Before the chain, in every role and for every request (along a sealed
route set or not), the server checks extensions: option-tags of
C{Proxy-Require} it lacks, and of C{Require} when it is the UAS (a
C{REGISTER}, or a request addressed to the server itself), get a C{420 Bad
Extension} with C{Unsupported} (RFC 3261 sections 8.2.2.3 and 16.3 step 5,
which come before authentication: the answer reveals only which extensions
the server supports, as an C{OPTIONS} would).  Then it answers an
C{OPTIONS} addressed to itself (a health check: no user, nothing
relayed).  Syntax, version, URI scheme and Max-Forwards were checked
earlier, by the transport (L{sipdist.sip.message.validateRequest}).  After it, the last word is a
C{481}, C{405} or C{501}: every request gets an answer.

The order decides what an outsider reaches without credentials: a link
marked L{BEFORE_AUTH} runs on requests nobody has authenticated yet, so
each says why that is safe.  A change to which links run before
authentication is a change to the security of the pool: C{tests/
test_chains.py} pins it.

Each role names its adapter, a function C{assemble(service, config,
reactor, store, checker)} in C{sipdist.roles.*} that builds the role's
parts on a L{sipdist.server.ServerService} and returns them by link name;
L{sipdist.server.buildServer} puts them in the order below and imports no
role itself.
"""

from dataclasses import dataclass

BEFORE_AUTH = "before authentication"
AUTHENTICATES = "authenticates"


@dataclass(frozen=True)
class Link:
    """
    One processor of a chain.

    @ivar name: the name the role's adapter gives the processor.
    @ivar stage: L{BEFORE_AUTH} (it runs on unauthenticated requests) or
        L{AUTHENTICATES} (it challenges before it acts).
    @ivar why: what it takes, and for a link before authentication, why
        that is safe.
    """

    name: str
    stage: str
    why: str


@dataclass(frozen=True)
class Role:
    """
    A role: its adapter, whether it reads the assignment store, and its
    chain.

    @ivar assemble: the dotted name of the adapter's C{assemble}.
    """

    name: str
    assemble: str
    readsStore: bool
    chain: tuple


_ROUTE_SET = Link(
    "route-set", BEFORE_AUTH,
    "requests following a route set the pool sealed (Proxy.checkRouteSet): "
    "our top Route entries carry the pool's HMAC for this dialog (Call-ID, "
    "From/To tag) or, for a Path, the request carries a pool server's "
    "signature, and the hop after us is one the route set was made with; "
    "the dialog or binding was authenticated when it was set up.  Anything "
    "else goes on down the chain as a new request (its Route dropped)")
_DISTRIBUTION = Link(
    "distribution", AUTHENTICATES,
    "REGISTER and out-of-dialog requests from users: challenged (401/407) "
    "unless signed by a pool peer, then served, redirected or proxied as "
    "sipdist.decision.decide says")

ROLES = {
    "home": Role("home", "sipdist.roles.home.assemble", True, (
        Link("subscription-dialogs", BEFORE_AUTH,
             "in-dialog SUBSCRIBE and NOTIFY for subscriptions this home "
             "holds: only a request matching a dialog it created (Call-ID "
             "and both tags) is taken"),
        _ROUTE_SET,
        _DISTRIBUTION,
    )),
    "distributor": Role("distributor", "sipdist.roles.distributor.assemble",
                        True, (_ROUTE_SET, _DISTRIBUTION)),
    "internal-edge": Role("internal-edge",
                          "sipdist.roles.distributor.assemble", True,
                          (_ROUTE_SET, _DISTRIBUTION)),
    "edge": Role("edge", "sipdist.roles.edge.assemble", False, (
        _ROUTE_SET,
        Link("edge", BEFORE_AUTH,
             "requests from outside passed to a next hop inside, which "
             "authenticates them; requests from inside passed out along "
             "the flow their Route names"),
    )),
}


def chainFor(role, links):
    """
    The processors of C{role}'s chain, in order.

    @param links: the parts the role's adapter built, by link name.
    @raise KeyError: the adapter built no part for a link of the table.
    """
    return [links[link.name] for link in ROLES[role].chain]


def beforeAuthentication(role):
    """
    The names of the links of C{role}'s chain that run on unauthenticated
    requests, in order.
    """
    return [link.name for link in ROLES[role].chain
            if link.stage == BEFORE_AUTH]
