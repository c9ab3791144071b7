"""
The SIP stack: messages and URIs (on L{twisted.protocols.sip}'s model),
transports (UDP, TCP, TLS), transactions (RFC 3261 section 17) and TLS
contexts.  It knows nothing of distribution: the services and roles above
it do.
"""
