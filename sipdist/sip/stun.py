# -*- test-case-name: tests.test_stun -*-
"""
The STUN binding exchange (RFC 5389) that RFC 5626 section 4.4.2 uses as
the keep-alive of a SIP flow over UDP: the client sends a Binding request
to the server's SIP port, the server answers a Binding success response
with the address it saw (C{XOR-MAPPED-ADDRESS}).  Only this much of STUN:
no authentication, no other attributes, no other methods.

Pure functions over bytes; the transport demultiplexes (a STUN message
starts with two zero bits and carries the magic cookie, which no SIP
message does).
"""

import ipaddress
import struct

MAGIC_COOKIE = 0x2112A442
_COOKIE = struct.pack("!I", MAGIC_COOKIE)
BINDING_REQUEST = 0x0001
BINDING_SUCCESS = 0x0101
XOR_MAPPED_ADDRESS = 0x0020
HEADER_SIZE = 20


def isStun(data):
    """
    Whether a datagram is a STUN message (RFC 5389 section 6: the two top
    bits zero, the magic cookie, a length that is a multiple of 4 and
    matches the datagram).
    """
    return (len(data) >= HEADER_SIZE and data[0] & 0xC0 == 0
            and data[4:8] == _COOKIE
            and struct.unpack("!H", data[2:4])[0] == len(data) - HEADER_SIZE
            and len(data) % 4 == 0)


def parse(data):
    """
    @return: C{(message type, transaction id)} of a STUN message, or
        L{None} if C{data} is not one.
    """
    if not isStun(data):
        return None
    return struct.unpack("!H", data[:2])[0], bytes(data[8:20])


def bindingRequest(transactionId):
    """
    A Binding request without attributes.

    @param transactionId: 12 random bytes.
    """
    if len(transactionId) != 12:
        raise ValueError("a STUN transaction id has 12 bytes")
    return struct.pack("!HH", BINDING_REQUEST, 0) + _COOKIE + transactionId


def bindingSuccess(transactionId, host, port):
    """
    The Binding success response to a request from C{(host, port)}: its
    C{XOR-MAPPED-ADDRESS}.
    """
    address = ipaddress.ip_address(host.split("%")[0])
    xport = port ^ (MAGIC_COOKIE >> 16)
    raw = address.packed
    if address.version == 4:
        family = 0x01
        key = _COOKIE
    else:
        family = 0x02
        key = _COOKIE + transactionId
    xored = bytes(a ^ b for a, b in zip(raw, key))
    value = struct.pack("!BBH", 0, family, xport) + xored
    attribute = struct.pack("!HH", XOR_MAPPED_ADDRESS, len(value)) + value
    return (struct.pack("!HH", BINDING_SUCCESS, len(attribute)) + _COOKIE
            + transactionId + attribute)


def mappedAddress(data):
    """
    The C{(host, port)} of the C{XOR-MAPPED-ADDRESS} of a Binding success
    response, or L{None}.
    """
    parsed = parse(data)
    if parsed is None or parsed[0] != BINDING_SUCCESS:
        return None
    transactionId = parsed[1]
    offset = HEADER_SIZE
    while offset + 4 <= len(data):
        kind, length = struct.unpack("!HH", data[offset:offset + 4])
        value = data[offset + 4:offset + 4 + length]
        if kind == XOR_MAPPED_ADDRESS and len(value) in (8, 20):
            family = value[1]
            port = struct.unpack("!H", value[2:4])[0] ^ (MAGIC_COOKIE >> 16)
            key = _COOKIE if family == 0x01 else _COOKIE + transactionId
            raw = bytes(a ^ b for a, b in zip(value[4:], key))
            return str(ipaddress.ip_address(raw)), port
        offset += 4 + length + (-length % 4)
    return None
