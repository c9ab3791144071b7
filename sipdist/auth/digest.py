# -*- test-case-name: tests.test_auth_digest -*-
"""
The Digest scheme on header field values: parsing C{Authorization} /
C{Proxy-Authorization} values, formatting challenges and
C{Authentication-Info}, and the hash computations of RFC 7616 section 3.4
(C{response}) and 3.5 (C{rspauth}) for the algorithms RFC 8760 brings to
SIP: C{SHA-256}, C{MD5} and their C{-sess} forms, with C{qop=auth}.

Everything here is a pure function of strings; the same computations serve
the server (L{sipdist.auth.server}) and the client (L{sipdist.auth.client}).
"""

import hashlib
import re

__all__ = [
    "ALGORITHMS", "DEFAULT_ALGORITHMS", "COMPATIBLE_ALGORITHMS",
    "withSHA256", "DigestParseError", "Algorithm",
    "algorithm", "parseDigest", "parseParams", "formatParams", "challenge",
    "computeHA1", "sessionHA1", "computeResponse", "computeRspauth",
]

# Limits on what a peer may send us; past them the value is malformed.
MAX_VALUE_LENGTH = 4096
MAX_PARAMS = 32


class DigestParseError(ValueError):
    """
    A Digest header value is malformed or unusable.

    @ivar code: the SIP status code to answer with (400).
    @ivar phrase: the reason phrase saying what is wrong.
    """

    def __init__(self, phrase, code=400):
        ValueError.__init__(self, phrase)
        self.code = code
        self.phrase = phrase


class Algorithm:
    """
    A Digest algorithm.

    @ivar name: the canonical name (C{"SHA-256"}, C{"MD5-sess"}, ...).
    @ivar base: the name without C{-sess}: the algorithm of the stored HA1.
    @ivar session: whether HA1 is bound to the nonce and cnonce (C{-sess}).
    @ivar hexLength: length of a digest in hexadecimal.
    """

    __slots__ = ("name", "base", "session", "hexLength", "_new")

    def __init__(self, name, new, session):
        self.name = name
        self.base = name[:-5] if session else name
        self.session = session
        self._new = new
        self.hexLength = new().digest_size * 2

    def H(self, text):
        """
        The hexadecimal digest of C{text} (UTF-8).
        """
        return self._new(text.encode("utf-8")).hexdigest()

    def new(self, data=b""):
        """
        A fresh hash object of this algorithm (for L{hmac}).
        """
        return self._new(data)

    def __repr__(self):
        return f"<Algorithm {self.name}>"


# MD5 from the interpreter's own module where it has one, rather than
# OpenSSL's through hashlib.  PyPy's hashlib reaches OpenSSL through cffi,
# whose cost per call is most of a small digest's: its own (RPython) MD5 is
# about 7 times faster there.  On CPython 3.11 _md5 takes 0.32 us for a
# Digest response's 120 characters, hashlib.md5 0.49 (OpenSSL 3 sets up a
# context through its provider for each); and the code a request runs is
# smaller, which counts when a server wakes up with cold caches
# (bench_instructions.py --cold 24: 2,455 instructions and 5 L2 misses
# fewer a request over a distributor's logins).
try:
    from _md5 import md5 as _md5
except ImportError:
    _md5 = hashlib.md5

ALGORITHMS = {}
for _name, _new in (("MD5", _md5), ("SHA-256", hashlib.sha256)):
    ALGORITHMS[_name] = Algorithm(_name, _new, False)
    ALGORITHMS[_name + "-sess"] = Algorithm(_name + "-sess", _new, True)
del _name, _new

# Lookup by upper-cased token: peers are not consistent about case.
_BY_UPPER = {name.upper(): alg for name, alg in ALGORITHMS.items()}

# What a server offers by default, most preferred first (RFC 8760 section
# 2.4: the challenges are listed in order of preference).
DEFAULT_ALGORITHMS = ("SHA-256", "MD5")

# What a server challenges standard SIP clients with by default: SIPp and
# sipsak know only MD5 and look at the first challenge; baresip 1.0
# (libre) fails the whole authentication ("Function not implemented") when
# any challenge of the response names another algorithm than MD5.
COMPATIBLE_ALGORITHMS = ("MD5",)


def withSHA256(algorithms):
    """
    C{algorithms} with C{SHA-256} in front (once): what a client that
    weighs every challenge and prefers SHA-256 is challenged with.
    """
    names = [algorithm(a).name for a in algorithms]
    return ("SHA-256",) + tuple(n for n in names if n != "SHA-256")


def algorithm(name):
    """
    The L{Algorithm} called C{name} (case-insensitive); an absent algorithm
    (C{None}) means C{MD5} (RFC 7616 section 3.3).

    @raise DigestParseError: for an algorithm we do not implement.
    """
    if name is None:
        return ALGORITHMS["MD5"]
    alg = _BY_UPPER.get(name.upper())
    if alg is None:
        raise DigestParseError("Unsupported digest algorithm")
    return alg


# RFC 3261 section 25.1: token and quoted-string, comma separated with LWS.
_TOKEN = r"[A-Za-z0-9\-.!%*_+`'~]+"
_SCHEME = re.compile(r"[ \t]*(" + _TOKEN + r")[ \t]+")
_UNESCAPE = re.compile(r"\\(.)")
_QUOTED = r'"([^"\\\r\n]*(?:\\[^\r\n][^"\\\r\n]*)*)"'
_ITEM_BODY = (r"[ \t]*(" + _TOKEN + r")[ \t]*=[ \t]*(?:" + _QUOTED + r"|("
              + _TOKEN + r"))[ \t]*")
# An item, as findall returns it: (name, quoted, token); a token is never
# empty, so an empty token group means a quoted string (maybe empty).
_ITEM = re.compile(_ITEM_BODY + r"(?:,|\Z)")


def parseDigest(value):
    """
    Parse a Digest credentials or challenge value, for example
    C{Digest username="alice", realm="example.com", nc=00000001}.

    @param value: one header field value (L{str}).
    @return: a L{dict} from lower-cased parameter names to values, quoted
        strings unescaped.
    @raise DigestParseError: (code 400) when the value is not a well-formed
        Digest value: another scheme, a syntax error, a repeated parameter,
        too long or too many parameters.
    """
    if len(value) > MAX_VALUE_LENGTH:
        raise DigestParseError("Authorization header too long")
    m = _SCHEME.match(value)
    if m is None:
        raise DigestParseError("Malformed Authorization header")
    if m.group(1).lower() != "digest":
        raise DigestParseError("Unsupported authorization scheme")
    return parseParams(value, m.end())


def parseParams(value, pos=0):
    """
    Parse comma-separated C{name=value} parameters without a scheme, as in
    C{Authentication-Info}; see L{parseDigest}.
    """
    if len(value) > MAX_VALUE_LENGTH:
        raise DigestParseError("Authentication header too long")
    # One anchored match per item, each ending at a comma or at the end:
    # cheaper than checking the whole list with one expression and then
    # extracting it with another (by a quarter on CPython, by half on
    # PyPy, whose regular expression engine costs more per character).
    items = []
    end = len(value)
    match = _ITEM.match
    while True:
        m = match(value, pos)
        if m is None:
            raise DigestParseError("Malformed Authorization header")
        items.append(m.groups(""))
        pos = m.end()
        if pos == end:
            if value[end - 1] == ",":
                # A trailing comma.
                raise DigestParseError("Malformed Authorization header")
            break
    if len(items) > MAX_PARAMS:
        raise DigestParseError("Too many digest parameters")
    params = {}
    for name, quoted, token in items:
        name = name.lower()
        if name in params:
            raise DigestParseError(f"Repeated digest parameter {name}")
        if token:
            params[name] = token
        elif "\\" in quoted:
            params[name] = _UNESCAPE.sub(r"\1", quoted)
        else:
            params[name] = quoted
    return params


def quote(text):
    """
    C{text} as a quoted-string.
    """
    if "\\" in text or '"' in text:
        text = text.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + text + '"'


def formatParams(params, scheme="Digest"):
    """
    Format parameters as a header field value.

    @param params: a sequence of C{(name, value, quoted)}.
    @param scheme: the leading scheme, or L{None} for none (as in
        C{Authentication-Info}).
    """
    body = ", ".join(
        name + "=" + (quote(value) if quoted else value)
        for name, value, quoted in params)
    return body if scheme is None else scheme + " " + body


def challenge(realm, nonce, algorithms=DEFAULT_ALGORITHMS, stale=False,
              opaque=None):
    """
    The values of C{WWW-Authenticate} (or C{Proxy-Authenticate}), one per
    algorithm, in the order given (most preferred first), all with
    C{qop="auth"} and the same nonce.
    """
    if opaque is None and isinstance(algorithms, tuple) and (
            "\\" not in nonce and '"' not in nonce and "\x00" not in realm):
        # The common challenge: the same text every time but for the
        # nonce, formatted once per realm, algorithms and stale flag.
        key = (realm, algorithms, stale)
        parts = _CHALLENGES.get(key)
        if parts is None:
            parts = [v.split("\x00") for v in challenge(
                realm, "\x00", list(algorithms), stale)]
            if len(_CHALLENGES) >= MAX_CHALLENGES_REMEMBERED:
                _CHALLENGES.clear()
            _CHALLENGES[key] = parts
        return [before + nonce + after for before, after in parts]
    values = []
    for name in algorithms:
        params = [("realm", realm, True), ("nonce", nonce, True)]
        if opaque is not None:
            params.append(("opaque", opaque, True))
        if stale:
            params.append(("stale", "true", False))
        params.append(("algorithm", ALGORITHMS[name].name, False))
        params.append(("qop", "auth", True))
        values.append(formatParams(params))
    return values


# (realm, algorithms, stale) -> for each value, its text before and after
# the nonce; emptied when full.
MAX_CHALLENGES_REMEMBERED = 64
_CHALLENGES = {}


def challengeLines(header, realm, nonce, algorithms):
    """
    The header lines of a fresh challenge, C{header} (C{WWW-Authenticate}
    or C{Proxy-Authenticate}) with each value of L{challenge} (not stale),
    joined by CRLF into one text: what the fast path's C{401} writes.

    The text is formatted once per header, realm and algorithms, and
    joined around each nonce, with no loop over the values (on PyPy a loop
    on every challenge's path is a frame made for each).
    """
    if "\\" in nonce or '"' in nonce or "\x00" in realm + header:
        # Not a nonce this server mints (quoting would change it).
        return "\r\n".join(
            f"{header}: {value}"
            for value in challenge(realm, nonce, list(algorithms)))
    key = (header, realm, algorithms)
    pieces = _CHALLENGE_LINES.get(key)
    if pieces is None:
        pieces = "\r\n".join(
            f"{header}: {value}"
            for value in challenge(realm, "\x00", list(algorithms))
        ).split("\x00")
        if len(_CHALLENGE_LINES) >= MAX_CHALLENGES_REMEMBERED:
            _CHALLENGE_LINES.clear()
        _CHALLENGE_LINES[key] = pieces
    return nonce.join(pieces)


# (header, realm, algorithms) -> challengeLines' text split where the nonce
# goes; emptied when full.
_CHALLENGE_LINES = {}


def computeHA1(alg, username, realm, password):
    """
    HA1 = H(username ":" realm ":" password), what a credential source
    stores.  For a C{-sess} algorithm this is the HA1 of its base algorithm.
    """
    return alg.H(f"{username}:{realm}:{password}")


def sessionHA1(alg, ha1, nonce, cnonce):
    """
    The HA1 that enters the response: for C{-sess} algorithms
    H(HA1 ":" nonce ":" cnonce), else C{ha1} itself.
    """
    if alg.session:
        return alg.H(f"{ha1}:{nonce}:{cnonce}")
    return ha1


def computeResponse(alg, ha1, nonce, nc, cnonce, method, uri, qop="auth"):
    """
    The C{response} parameter (RFC 7616 section 3.4.1) for C{qop=auth}.

    @param alg: an L{Algorithm}.
    @param ha1: the I{session} HA1 (see L{sessionHA1}).
    @param nc: the nonce count as sent (8 hexadecimal digits).
    """
    key = (alg.name, method, uri)
    ha2 = _HA2.get(key)
    if ha2 is None:
        # Clients register again and again with the same method and
        # Request-URI: H(A2) is remembered (a bounded table).
        ha2 = alg.H(f"{method}:{uri}")
        if len(_HA2) >= MAX_HA2_REMEMBERED:
            _HA2.clear()
        _HA2[key] = ha2
    return alg.H(f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")


# (algorithm, method, uri) -> H(A2), for computeResponse; emptied when full.
MAX_HA2_REMEMBERED = 1024
_HA2 = {}


def computeRspauth(alg, ha1, nonce, nc, cnonce, uri, qop="auth"):
    """
    The C{rspauth} parameter of C{Authentication-Info} (RFC 7616 section
    3.5): the response with an empty method, proving the server knows HA1.
    """
    return computeResponse(alg, ha1, nonce, nc, cnonce, "", uri, qop)
