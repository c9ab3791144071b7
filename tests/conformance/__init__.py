"""
Test messages written from the text of RFC 4475 (SIP torture tests) and
RFC 5118 (IPv6 torture tests): each exercises what the RFC's section
describes; none is copied from the RFCs' archives.
"""
