# -*- test-case-name: tests.test_auth_clientaddress -*-
"""
The client's address, as an edge of the pool states it to the servers
inside, sealed so that nobody else can state it.

Behind an edge every request reaches the home servers from the edge's own
address, so the home cannot tell its clients apart by where requests come
from (which the failure limiter, L{sipdist.auth.limiter}, needs).  The edge
says it in a header::

    Sipdist-Client: 198.51.100.7:40312;mac=<22 base64url characters>

    mac = HMAC-SHA-256(K, "sipdist-client-1" 0x00 address 0x00 Call-ID
                       0x00 CSeq)[:16]
    K   = HMAC-SHA-256(pool secret, "sipdist-client-address")

C{address} is C{host:port} as written (IPv6 hosts in brackets), C{Call-ID}
stripped, C{CSeq} with its whitespace collapsed.  Binding the Call-ID and
CSeq means a header seen on one request vouches for nothing else.  The key
is derived from the secret the servers of a pool share (C{--secret-file}),
so only a member of the pool can seal.  A server takes the address from the
header only when its seal checks; otherwise the header is ignored and the
address the request came from is used.  An edge removes the header from
every request arriving from outside before it seals its own.
"""

import hmac
from base64 import urlsafe_b64encode
from hashlib import sha256

from sipdist.auth.hmacsha256 import HMACSHA256

HEADER = "sipdist-client"
_LABEL = b"sipdist-client-1"


def _bracket(host):
    if ":" in host and not host.startswith("["):
        return f"[{host}]"
    return host


class ClientAddressSeal:
    """
    Seals and checks the C{Sipdist-Client} header with the pool's secret.
    """

    def __init__(self, secret):
        """
        @param secret: the pool secret (L{str} or L{bytes}).
        """
        if isinstance(secret, str):
            secret = secret.encode("utf-8")
        if not secret:
            raise ValueError("sealing client addresses needs a secret")
        self._key = hmac.new(secret, b"sipdist-client-address",
                             sha256).digest()
        self._hmac = HMACSHA256(self._key, _LABEL + b"\x00")

    def _mac(self, address, callId, cseq):
        cseq = " ".join((cseq or "").split())
        data = b"\x00".join(
            part.encode("utf-8")
            for part in (address, (callId or "").strip(), cseq))
        digest = self._hmac.digest(data)
        return urlsafe_b64encode(digest[:16]).decode("ascii").rstrip("=")

    def value(self, host, port, callId, cseq):
        """
        The value of a C{Sipdist-Client} header stating C{(host, port)} for
        the request with this C{Call-ID} and C{CSeq} (header values).
        """
        address = f"{_bracket(host)}:{port}"
        return f"{address};mac={self._mac(address, callId, cseq)}"

    def address(self, values, callId, cseq):
        """
        The client address stated by the C{Sipdist-Client} header values
        C{values} of the request with this C{Call-ID} and C{CSeq}, if a
        member of the pool sealed it.

        @return: C{(host, port)} (the host without brackets), or L{None}
            when there is no value, more than one, or its seal does not
            check.
        """
        if not values or len(values) != 1:
            return None
        address, sep, mac = values[0].strip().partition(";mac=")
        if not sep or not hmac.compare_digest(
                mac.encode("ascii", "replace"),
                self._mac(address, callId, cseq).encode("ascii")):
            return None
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit():
            return None
        return host.strip("[]"), int(port)
