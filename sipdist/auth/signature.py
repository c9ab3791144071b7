# -*- test-case-name: tests.test_auth_client -*-
"""
Signed responses: C{Authentication-Info} with C{rspauth} (RFC 7616 section
3.5) and the C{Sipdist-Signature} header that binds the status code, the
Call-ID, the CSeq and the Contact of a response to the Digest exchange of
the request it answers.

The signature is::

    HMAC-SHA-256(key = session HA1 (ASCII hex),
                 "sipdist-signature-1" 0 nonce 0 cnonce 0 nc 0
                 code 0 Call-ID 0 CSeq 0 Contact)

where the session HA1 is the HA1 that entered the Digest response (for
C{-sess} algorithms C{H(HA1:nonce:cnonce)}), the CSeq has its whitespace
collapsed to one space and the Contact is the header field value with
surrounding whitespace removed (empty when there is none).  Only the user
and a server knowing the user's HA1 can compute it; the client's fresh
cnonce and nc make it unique to one request.  It travels as::

    Sipdist-Signature: v=1, alg=HMAC-SHA-256, sig="<64 hex digits>"

Version 2 also covers the backup home a response names in its
C{Sipdist-Backup} header (the server a client goes to straight away when it
loses its home)::

    HMAC-SHA-256(key = session HA1,
                 "sipdist-signature-2" 0 nonce 0 cnonce 0 nc 0
                 code 0 Call-ID 0 CSeq 0 Contact 0 Sipdist-Backup)

A server signs with version 2 exactly when it names a backup, and with
version 1 otherwise, so that a response without a backup is signed as
before.  A verifier given a backup accepts only a version 2 signature over
it; given none, it accepts version 1, or version 2 over an empty backup.

See C{docs/auth.rst} for why it is a header of its own.
"""

import hmac

from sipdist.auth.digest import (
    DigestParseError, computeRspauth, parseParams, quote)
from sipdist.auth.hmacsha256 import HMACSHA256

SIGNATURE_HEADER = "Sipdist-Signature"
BACKUP_HEADER = "Sipdist-Backup"
AUTHENTICATION_INFO = "Authentication-Info"
_LABELS = {1: "sipdist-signature-1", 2: "sipdist-signature-2"}


def _canonical(code, callId, cseq, contact, backup=None, version=1):
    cseq = " ".join(cseq.split())
    contact = "" if contact is None else contact.strip()
    fields = (str(int(code)), callId.strip(), cseq, contact)
    if version == 2:
        fields += ("" if backup is None else backup.strip(),)
    # One test of the fields joined rather than a loop over them (on PyPy
    # a loop here is a frame made for every signature).
    if "\x00" in "".join(fields):
        raise ValueError("a signed field holds a NUL character")
    return fields


def computeSignature(sessionHA1, nonce, cnonce, nc, code, callId, cseq,
                     contact, backup=None, version=1):
    """
    The signature of a response, in hexadecimal: version 1 over the Contact,
    version 2 over the Contact and the backup too.

    @raise ValueError: if a field holds a NUL character.
    """
    if not nc.isascii():
        nc.encode("ascii")  # raises, as the nonce count must be ASCII
    # The fields joined by NULs, then encoded once: the same bytes as
    # encoding each (the label is ASCII), in one HMAC call.
    message = "\x00".join((_LABELS[version], nonce, cnonce, nc) + _canonical(
        code, callId, cseq, contact, backup, version)).encode("utf-8")
    return _hmacSHA256(sessionHA1.encode("ascii"), message).hex()


# Key -> its HMACSHA256 (the pads hashed); emptied when full.  A user's
# session HA1 signs every response to it: the pads are hashed once rather
# than on every response.
MAX_KEYS_REMEMBERED = 4096
_PADS = {}


def _hmacSHA256(key, message):
    """
    HMAC-SHA-256 (RFC 2104) of C{message} with C{key}.
    """
    mac = _PADS.get(key)
    if mac is None:
        mac = HMACSHA256(key)
        if len(_PADS) >= MAX_KEYS_REMEMBERED:
            _PADS.clear()
        _PADS[key] = mac
    return mac.digest(message)


def responseHeaders(alg, sessionHA1, nonce, cnonce, nc, qop, uri, code,
                    callId, cseq, contact=None, backup=None):
    """
    The C{Authentication-Info} and C{Sipdist-Signature} headers of a
    response, as a L{list} of C{(name, value)}: a version 2 signature
    covering C{backup} (the C{Sipdist-Backup} value the response carries)
    when there is one, else version 1.
    """
    rspauth = computeRspauth(alg, sessionHA1, nonce, nc, cnonce, uri, qop)
    version = 1 if backup is None else 2
    sig = computeSignature(sessionHA1, nonce, cnonce, nc, code, callId, cseq,
                           contact, backup, version)
    # Written directly (this is on every signed response): rspauth and sig
    # are hexadecimal, qop and nc tokens; only the cnonce needs quoting.
    return [(AUTHENTICATION_INFO,
             f'qop={qop}, rspauth="{rspauth}", cnonce={quote(cnonce)}, '
             f'nc={nc}'),
            (SIGNATURE_HEADER,
             f'v={version}, alg=HMAC-SHA-256, sig="{sig}"')]


def _single(headers, name):
    """
    The one value of header C{name} in C{headers}, or L{None} when there is
    none or more than one.
    """
    if hasattr(headers, "items"):
        headers = headers.items()
    lowered = name.lower()
    found = []
    for key, value in headers:
        if key.lower() != lowered:
            continue
        if isinstance(value, (list, tuple)):
            found.extend(value)
        else:
            found.append(value)
    return found[0] if len(found) == 1 else None


def verifyResponseHeaders(alg, sessionHA1, nonce, cnonce, nc, qop, uri, code,
                          callId, cseq, contact, headers, backup=None):
    """
    Whether C{headers} hold exactly one C{Authentication-Info} whose
    C{rspauth}, C{cnonce}, C{nc} and C{qop} match the request, and exactly
    one valid C{Sipdist-Signature} over C{code}, C{callId}, C{cseq} and
    C{contact}, and over C{backup} when it is given (version 2 only).

    @param headers: the response headers as C{(name, value)} pairs or a
        mapping from name to a value or a list of values.
    """
    info = _single(headers, AUTHENTICATION_INFO)
    signature = _single(headers, SIGNATURE_HEADER)
    if info is None or signature is None:
        return False
    try:
        info = parseParams(info)
        signature = parseParams(signature)
        version = {"1": 1, "2": 2}.get(signature.get("v"))
        if version is None or (version == 1 and backup is not None):
            return False
        expectedSig = computeSignature(sessionHA1, nonce, cnonce, nc, code,
                                       callId, cseq, contact, backup, version)
    except (DigestParseError, ValueError):
        return False
    if (info.get("qop") != qop or info.get("cnonce") != cnonce
            or info.get("nc") != nc):
        return False
    rspauth = computeRspauth(alg, sessionHA1, nonce, nc, cnonce, uri, qop)
    if not _same(info.get("rspauth", ""), rspauth):
        return False
    if signature.get("alg") != "HMAC-SHA-256":
        return False
    return _same(signature.get("sig", ""), expectedSig)


def _same(received, expected):
    """
    Constant-time comparison of a received hexadecimal value (any case, any
    characters) with the expected one.
    """
    return hmac.compare_digest(received.lower().encode("utf-8"),
                               expected.encode("ascii"))
