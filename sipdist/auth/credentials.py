# -*- test-case-name: tests.test_auth_credentials -*-
"""
SIP Digest on twisted.cred: the credentials object a server builds from an
C{Authorization} value, the checker that compares it with a stored HA1, the
realm giving the authenticated identity, and the credential sources that
hold their data in memory (a dictionary, the credentials file).

The credentials file holds one user per line,
C{username:realm:MD5-HA1:SHA-256-HA1}, the two HA1 in lower-case
hexadecimal; empty lines and lines starting with C{#} are ignored.  It never
holds a password.  See C{docs/auth.rst}.
"""

import hmac
import os
import tempfile

from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.error import UnauthorizedLogin
from twisted.cred.portal import IRealm
from twisted.internet.defer import Deferred, fail, succeed
from twisted.logger import Logger
from zope.interface import implementer

from sipdist.auth.digest import (
    ALGORITHMS, computeHA1, computeResponse, sessionHA1)
from sipdist.auth.interfaces import (
    IDigestHashSource, ISIPDigestCredentials, ISIPIdentity)
from sipdist.deferreds import NOT_FIRED, firedResult

FILE_ALGORITHMS = ("MD5", "SHA-256")
FILE_HEADER = (
    "# sipdist credentials: username:realm:MD5-HA1:SHA-256-HA1\n"
    "# HA1 = H(username:realm:password); change with 'sipdist passwd'.\n")


@implementer(ISIPDigestCredentials)
class SIPDigestCredentials:
    """
    The Digest answer of one request, ready to check against an HA1.

    @ivar sessionHA1: after a successful L{checkHash}, the HA1 that entered
        the response (the session HA1 for C{-sess} algorithms); the server
        needs it for C{rspauth} and the signature.
    """

    __slots__ = ("username", "realm", "algorithm", "nonce", "nc", "cnonce",
                 "qop", "uri", "method", "response", "sessionHA1")

    def __init__(self, username, realm, algorithm, nonce, nc, cnonce, qop,
                 uri, method, response):
        self.username = username
        self.realm = realm
        self.algorithm = algorithm
        self.nonce = nonce
        self.nc = nc
        self.cnonce = cnonce
        self.qop = qop
        self.uri = uri
        self.method = method
        self.response = response
        self.sessionHA1 = None

    def checkHash(self, digestHash):
        """
        @param digestHash: the stored HA1 of the base algorithm.
        @return: whether the response was computed from it.
        """
        alg = self.algorithm
        ha1 = sessionHA1(alg, digestHash, self.nonce, self.cnonce)
        expected = computeResponse(alg, ha1, self.nonce, self.nc, self.cnonce,
                                   self.method, self.uri, self.qop)
        if hmac.compare_digest(expected.encode("ascii"),
                               self.response.lower().encode("utf-8")):
            self.sessionHA1 = ha1
            return True
        return False


@implementer(ICredentialsChecker)
class DigestHashChecker:
    """
    Checks L{ISIPDigestCredentials} against the HA1 an L{IDigestHashSource}
    holds, and answers with the user name as avatar id.

    An unknown user fails exactly like a wrong password, after the same
    amount of hashing.
    """

    credentialInterfaces = (ISIPDigestCredentials,)

    def __init__(self, source):
        self.source = source

    def requestAvatarId(self, credentials):
        d = self.source.getHA1(credentials.username, credentials.realm,
                               credentials.algorithm.base)
        ha1 = firedResult(d)
        if ha1 is NOT_FIRED:
            return d.addCallback(self._check, credentials)
        # The source answered from memory: no callback chain.
        try:
            result = self._check(ha1, credentials)
        except Exception:
            return fail()
        return result if isinstance(result, Deferred) else succeed(result)

    @staticmethod
    def _check(ha1, credentials):
        if ha1 is None:
            # Same work as a known user, then the same failure.
            credentials.checkHash("0" * credentials.algorithm.hexLength)
            return fail(UnauthorizedLogin())
        if credentials.checkHash(ha1):
            return credentials.username
        return fail(UnauthorizedLogin())


@implementer(ISIPIdentity)
class SIPIdentity:
    """
    An authenticated user.
    """

    __slots__ = ("username", "aor")

    def __init__(self, username, aor):
        self.username = username
        self.aor = aor

    def __repr__(self):
        return f"<SIPIdentity {self.aor}>"


def _noLogout():
    pass


@implementer(IRealm)
class SIPRealm:
    """
    Gives the identity C{sip:username@domain} to an authenticated user name.
    """

    def __init__(self, domain):
        self.domain = domain

    def requestAvatar(self, avatarId, mind, *interfaces):
        if ISIPIdentity not in interfaces:
            raise NotImplementedError("SIPRealm only gives ISIPIdentity")
        return (ISIPIdentity,
                SIPIdentity(avatarId, f"sip:{avatarId}@{self.domain}"),
                _noLogout)


@implementer(IDigestHashSource)
class InMemoryDigestHashSource:
    """
    Users and plaintext passwords held in memory, for tests and examples
    (C{memory:alice:secret,bob:other}); HA1 values are computed once per
    realm and algorithm and kept.
    """

    def __init__(self, users):
        """
        @param users: a mapping from user name to password.
        """
        self._passwords = dict(users)
        self._cache = {}

    def getHA1(self, username, realm, algorithm):
        return succeed(self.cachedHA1(username, realm, algorithm))

    def cachedHA1(self, username, realm, algorithm):
        """
        The HA1 L{getHA1} would give, when it is at hand without I/O (always
        here), or L{None} (an unknown user).
        """
        key = (username, realm, algorithm)
        ha1 = self._cache.get(key)
        if ha1 is None:
            password = self._passwords.get(username)
            if password is None:
                return None
            ha1 = computeHA1(ALGORITHMS[algorithm], username, realm, password)
            self._cache[key] = ha1
        return ha1


class CredentialsFileError(ValueError):
    """
    The credentials file cannot be read or written as asked.
    """


def validName(text):
    """
    Whether C{text} may be a user name or realm in the credentials file:
    not empty, no colon, no whitespace or control characters.
    """
    return bool(text) and ":" not in text and all(
        c.isprintable() and not c.isspace() for c in text)


def parseCredentialsFile(text, path="<credentials>"):
    """
    Parse the text of a credentials file.

    @return: a L{dict} from C{(username, realm)} to a L{dict} from base
        algorithm name to HA1.
    @raise CredentialsFileError: naming the first bad line.
    """
    entries = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split(":")
        if len(fields) != 2 + len(FILE_ALGORITHMS):
            raise CredentialsFileError(
                f"{path}:{number}: expected username:realm:MD5-HA1:SHA-256-HA1")
        username, realm = fields[0], fields[1]
        if not validName(username) or not validName(realm):
            raise CredentialsFileError(f"{path}:{number}: bad user or realm")
        hashes = {}
        for name, value in zip(FILE_ALGORITHMS, fields[2:]):
            value = value.lower()
            if (len(value) != ALGORITHMS[name].hexLength
                    or value.strip("0123456789abcdef")):
                raise CredentialsFileError(
                    f"{path}:{number}: bad {name} HA1")
            hashes[name] = value
        if (username, realm) in entries:
            raise CredentialsFileError(
                f"{path}:{number}: {username} repeated for realm {realm}")
        entries[(username, realm)] = hashes
    return entries


def formatCredentialsLine(username, realm, password):
    """
    The credentials file line of a user.
    """
    hashes = [computeHA1(ALGORITHMS[name], username, realm, password)
              for name in FILE_ALGORITHMS]
    return ":".join([username, realm] + hashes)


def setPassword(path, username, realm, password):
    """
    Add a user to a credentials file or change its password, creating the
    file if needed.  Comments and other users are kept; the file is replaced
    atomically (a new file in the same directory, flushed, renamed over the
    old one) and keeps its permissions (C{0600} when new).

    @return: C{True} if the user was added, C{False} if it was changed.
    @raise CredentialsFileError: on a bad name or an unreadable file.
    """
    if not validName(username):
        raise CredentialsFileError(
            "a user name must not be empty nor hold ':' or spaces")
    if not validName(realm):
        raise CredentialsFileError(
            "a realm must not be empty nor hold ':' or spaces")
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
        mode = os.stat(path).st_mode & 0o7777
    except FileNotFoundError:
        text = FILE_HEADER
        mode = 0o600
    except OSError as e:
        raise CredentialsFileError(f"cannot read {path}: {e.strerror}")
    parseCredentialsFile(text, path)
    newLine = formatCredentialsLine(username, realm, password)
    prefix = f"{username}:{realm}:"
    lines = text.splitlines()
    added = True
    for i, line in enumerate(lines):
        if line.strip().startswith(prefix):
            lines[i] = newLine
            added = False
            break
    else:
        lines.append(newLine)
    _writeAtomically(path, "\n".join(lines) + "\n", mode)
    return added


def _writeAtomically(path, text, mode):
    directory = os.path.dirname(os.path.abspath(path))
    fd, temporary = tempfile.mkstemp(
        prefix=".", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            os.fchmod(f.fileno(), mode)
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except OSError as e:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise CredentialsFileError(f"cannot write {path}: {e.strerror}")


def _fileStamp(path):
    """
    What changes when a file is replaced or rewritten: inode, size and
    modification time; L{None} when it cannot be examined.
    """
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


@implementer(IDigestHashSource)
class FileDigestHashSource:
    """
    The users of a credentials file, held in memory.

    With a C{reactor}, a lookup looks at the file's inode, size and
    modification time (at most once per C{checkInterval} seconds, by that
    reactor's clock) and reads the file again when they changed, so a
    password changed with C{sipdist passwd} is in force at once, without a
    restart.  L{check} does the same on demand (C{SIGHUP}).  A file that
    cannot be read or parsed leaves the last good users in force and is
    logged once per change of the file.

    @ivar lastError: the message of the last failed reload, or L{None}.
    """

    _log = Logger()

    def __init__(self, path, reactor=None, checkInterval=1.0):
        self.path = path
        self._reactor = reactor
        self.checkInterval = checkInterval
        self._entries = {}
        self._stamp = None
        self._badStamp = None
        self._lastCheck = None
        self.lastError = None
        self.reload()
        if reactor is not None:
            self._lastCheck = reactor.seconds()

    def reload(self):
        """
        Read the file again; on error the previous users stay in force.

        @raise CredentialsFileError: if the file cannot be read or parsed.
        """
        stamp = _fileStamp(self.path)
        try:
            with open(self.path, encoding="utf-8") as f:
                text = f.read()
        except OSError as e:
            raise CredentialsFileError(
                f"cannot read {self.path}: {e.strerror}")
        self._entries = parseCredentialsFile(text, self.path)
        self._stamp = stamp
        self._badStamp = None
        self.lastError = None

    def check(self):
        """
        Read the file again if it changed since it was last read; a bad
        file is logged (once until it changes again) and the last good
        users stay in force.

        @return: C{True} if the users were read again.
        """
        stamp = _fileStamp(self.path)
        if stamp == self._stamp or (stamp is not None
                                    and stamp == self._badStamp):
            return False
        try:
            self.reload()
        except CredentialsFileError as e:
            self._badStamp = stamp
            if str(e) != self.lastError:
                self._log.error("credentials {error}; keeping the last "
                                "good users ({count})", error=str(e),
                                count=len(self._entries))
            self.lastError = str(e)
            return False
        self._log.info("reloaded credentials {path}: {count} users",
                       path=self.path, count=len(self._entries))
        return True

    def __len__(self):
        return len(self._entries)

    def getHA1(self, username, realm, algorithm):
        if self._reactor is not None:
            now = self._reactor.seconds()
            if now - self._lastCheck >= self.checkInterval or \
                    now < self._lastCheck:
                self._lastCheck = now
                self.check()
        hashes = self._entries.get((username, realm))
        return succeed(None if hashes is None else hashes.get(algorithm))

    def cachedHA1(self, username, realm, algorithm):
        """
        The HA1 L{getHA1} would give, when it needs no look at the file
        (checked less than C{checkInterval} seconds ago), else L{None} (as
        for an unknown user).
        """
        if self._reactor is not None:
            now = self._reactor.seconds()
            if now - self._lastCheck >= self.checkInterval or \
                    now < self._lastCheck:
                return None
        hashes = self._entries.get((username, realm))
        return None if hashes is None else hashes.get(algorithm)
