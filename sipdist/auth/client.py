# -*- test-case-name: tests.test_auth_client -*-
"""
The client side of Digest: answer a C{401}/C{407} challenge, and verify
that a C{200} or C{301} came from a server that knows the user's
credentials and was not altered (C{rspauth} and C{Sipdist-Signature}).
"""

import base64
import os

from sipdist.auth.digest import (
    DigestParseError, algorithm, computeHA1, computeResponse, formatParams,
    parseDigest, sessionHA1)
from sipdist.auth.signature import verifyResponseHeaders

# The client's preference, strongest hash first, whatever order the
# challenges come in.
PREFERENCE = ("SHA-256", "SHA-256-sess", "MD5", "MD5-sess")


class ChallengeError(ValueError):
    """
    None of the challenges can be answered.
    """


class ClientSession:
    """
    What a client keeps of a Digest exchange: enough to answer again with
    the same nonce (L{authorize}) and to verify the response
    (L{verifySignature}).

    @ivar nc: the nonce count of the last answer, as sent (8 hex digits).
    """

    __slots__ = ("username", "realm", "algorithm", "nonce", "cnonce", "nc",
                 "qop", "uri", "opaque", "_ha1", "_sessionHA1")

    def __init__(self, username, realm, algorithm, ha1, nonce, cnonce,
                 opaque=None):
        self.username = username
        self.realm = realm
        self.algorithm = algorithm
        self.nonce = nonce
        self.cnonce = cnonce
        self.opaque = opaque
        self.qop = "auth"
        self.nc = None
        self.uri = None
        self._ha1 = ha1
        self._sessionHA1 = sessionHA1(algorithm, ha1, nonce, cnonce)

    def __repr__(self):
        return f"<ClientSession {self.username}@{self.realm} {self.algorithm.name}>"

    def copy(self):
        """
        A copy of this session (to authorise one request with, and verify
        its response by, while this one goes on).
        """
        other = object.__new__(ClientSession)
        for name in self.__slots__:
            setattr(other, name, getattr(self, name))
        return other

    def authorize(self, method, uri, nc):
        """
        The C{Authorization} value for a request with nonce count C{nc}
        (an L{int}); the session then verifies the response to that request.
        """
        self.nc = f"{nc:08x}"
        self.uri = uri
        alg = self.algorithm
        response = computeResponse(alg, self._sessionHA1, self.nonce,
                                   self.nc, self.cnonce, method, uri,
                                   self.qop)
        params = [("username", self.username, True),
                  ("realm", self.realm, True),
                  ("nonce", self.nonce, True),
                  ("uri", uri, True),
                  ("response", response, True),
                  ("algorithm", alg.name, False),
                  ("cnonce", self.cnonce, True),
                  ("qop", self.qop, False),
                  ("nc", self.nc, False)]
        if self.opaque is not None:
            params.append(("opaque", self.opaque, True))
        return formatParams(params)


def newCnonce():
    """
    A fresh client nonce: 128 random bits.
    """
    return base64.urlsafe_b64encode(os.urandom(16)).rstrip(b"=").decode()


def chooseChallenge(challengeValues):
    """
    The parsed challenge to answer: among the well-formed Digest challenges
    offering C{qop=auth}, the one of the most preferred algorithm.

    @raise ChallengeError: if there is none.
    """
    best = None
    bestRank = len(PREFERENCE)
    for value in challengeValues:
        try:
            params = parseDigest(value)
        except DigestParseError:
            continue
        try:
            rank = PREFERENCE.index(algorithm(params.get("algorithm")).name)
        except DigestParseError:
            continue
        qops = [q.strip().lower() for q in params.get("qop", "").split(",")]
        if ("auth" not in qops or not params.get("realm")
                or not params.get("nonce")):
            continue
        if rank < bestRank:
            best, bestRank = params, rank
    if best is None:
        raise ChallengeError("no Digest challenge with a supported "
                             "algorithm and qop=auth")
    return best


def answerChallenge(challengeValues, method, uri, username, password,
                    cnonce=None, nc=1):
    """
    Answer a challenge.

    @param challengeValues: the values of the C{WWW-Authenticate} (or
        C{Proxy-Authenticate}) header fields of the 401 (407).
    @param method: the method of the request to send again.
    @param uri: its Request-URI, as it will be written.
    @param cnonce: the client nonce (default: a fresh random one).
    @param nc: the nonce count (L{int}).
    @return: C{(headerValue, session)}: the value of C{Authorization} (or
        C{Proxy-Authorization}) and the L{ClientSession} to verify the
        response with.
    @raise ChallengeError: if no challenge can be answered.
    """
    params = chooseChallenge(challengeValues)
    alg = algorithm(params.get("algorithm"))
    realm = params["realm"]
    ha1 = computeHA1(alg, username, realm, password)
    session = ClientSession(username, realm, alg, ha1, params["nonce"],
                            newCnonce() if cnonce is None else cnonce,
                            params.get("opaque"))
    return session.authorize(method, uri, nc), session


def verifySignature(session, code, callId, cseq, contact, headers,
                    backup=None):
    """
    Whether a response to the request last authorised with C{session} is
    genuine: its C{Authentication-Info} carries the right C{rspauth} for
    our cnonce and nonce count, and its C{Sipdist-Signature} covers this
    status code, Call-ID, CSeq and Contact.  A client acts on a C{301} only
    when this is true.

    @param contact: the Contact header value of the response as received
        (L{None} when it has none).
    @param headers: the response headers, as C{(name, value)} pairs or a
        mapping from name to value(s).
    @param backup: the C{Sipdist-Backup} header value as received, to be
        covered by the signature too (version 2); L{None}: the response's
        backup, if any, is not checked and must not be used.
    """
    if session.nc is None:
        return False
    return verifyResponseHeaders(
        session.algorithm, session._sessionHA1, session.nonce,
        session.cnonce, session.nc, session.qop, session.uri, code, callId,
        cseq, contact, headers, backup)
