# -*- test-case-name: tests.test_client_login -*-
"""
The sipdist client library: a Twisted SIP user agent that behaves as the
design's client must (see C{DESIGN.md}, "The client").

  - L{sipdist.client.discovery}: RFC 3263 server location with
    L{twisted.names} (NAPTR, SRV, A/AAAA), ordered failover targets;
  - L{sipdist.client.tlscheck}: a TLS server's identity checked with
    service-identity against the configured CA, failures as one line;
  - L{sipdist.client.core}: L{UserAgent}, the transaction user sending
    requests (Digest SHA-256/MD5 answers to 401/407) and receiving them;
  - L{sipdist.client.login}: L{Login} (redirect rules) and L{Registration}
    (refresh, recovery, unregister);
  - L{sipdist.client.dialog}: calls and subscriptions;
  - L{sipdist.client.ladder}: the C{--trace} ladder;
  - L{sipdist.commands.client}: C{sipdist register}, C{call}, C{message}.

Typical use, with the caller's reactor and resolver::

    ua = UserAgent(reactor, "alice@example.com", password,
                   caCertificates=["ca.pem"], observer=print)
    yield ua.start()
    registration = Registration(ua, ServerLocator(resolver))
    yield registration.start()          # LoginFailed on failure
    yield ua.message("bob@example.com", "hello")
    yield registration.stop()           # unregisters
    yield ua.stop()
"""

from sipdist.client.core import UserAgent
from sipdist.client.events import ClientError, Event, NoAnswer
from sipdist.client.discovery import (
    DiscoveryError, ServerLocator, Target)
from sipdist.client.login import Login, LoginFailed, Registration
from sipdist.client.tlscheck import TLSFailure

__all__ = [
    "ClientError", "DiscoveryError", "Event", "Login", "LoginFailed",
    "NoAnswer", "Registration", "ServerLocator", "TLSFailure", "Target",
    "UserAgent",
]
