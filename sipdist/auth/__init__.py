# -*- test-case-name: tests.test_auth_digest -*-
"""
SIP Digest authentication (RFC 3261 section 22, RFC 7616 algorithms as
RFC 8760 brings them to SIP) and the signed responses of sipdist.

The modules work on header field I{values} (strings), never on message
objects, so they do not depend on the message layer:

  - L{sipdist.auth.digest}: parsing and formatting of Digest parameters,
    the response and C{rspauth} computations, the challenges;
  - L{sipdist.auth.nonce}: stateless nonces and the bounded C{nc} table;
  - L{sipdist.auth.limiter}: the bounded failure counters, slowing one
    user at one client address down;
  - L{sipdist.auth.clientaddress}: the client address an edge states to
    the servers inside, sealed with the pool's secret;
  - L{sipdist.auth.credentials}: twisted.cred credentials, checker, realm
    and the in-memory and file credential sources;
  - L{sipdist.auth.sources}: credential sources chosen by a string;
  - L{sipdist.auth.ldap}: the LDAP credential source (ldaptor);
  - L{sipdist.auth.signature}: the response signature;
  - L{sipdist.auth.server}: L{DigestAuthenticator}, the one object a server
    calls on every request;
  - L{sipdist.auth.client}: answering a challenge and verifying a signed
    response.

See C{docs/auth.rst}.
"""
