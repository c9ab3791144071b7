# -*- test-case-name: tests.test_roles -*-
"""
Which of a home server's URIs a request from a user is redirected or
proxied to: the one for the transport the request arrived on (see
L{sipdist.store.ServerRecord} and L{sipdist.store.serverURIFor}).  A
request that came over TLS goes on over TLS or not at all: a server
record without a TLS URI gets it a C{503} naming the problem, never a
redirect or a proxied leg over TCP or UDP.

Used by the store roles (L{sipdist.roles.distribution}) for the redirect
and proxy branches and by the router (L{sipdist.services.routing}) for the
leg to a callee's home.
"""

from sipdist.decision import Reject
from sipdist.sip.uri import URIError
from sipdist.store import serverURIFor

__all__ = ["arrivalTransport", "noAddress", "serverURIFor"]


def arrivalTransport(request, flow):
    """
    The transport whose security a request's next hop must keep: the
    transport of the flow it arrived on, C{"TLS"} when its Request-URI is a
    C{sips:} URI (RFC 3261 section 26.2.2: such a request is secured on
    every hop).

    @param flow: the flow it arrived on (C{flow.transport} is C{"UDP"},
        C{"TCP"} or C{"TLS"}).
    @return: C{"UDP"}, C{"TCP"} or C{"TLS"}.
    """
    transport = flow.transport.upper()
    if transport != "TLS":
        try:
            if request.uri.scheme == "sips":
                return "TLS"
        except URIError:
            pass
    return transport


def noAddress(transport):
    """
    The answer to a request that would go to a home server that has no
    URI for its transport (nor a stronger one).

    @return: a L{Reject}: C{503}, reason phrase naming the transport.
    """
    return Reject(503, f"Service Unavailable (No {transport} Address For "
                       f"Home Server)")
