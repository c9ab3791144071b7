# -*- test-case-name: tests.test_auth_cli -*-
"""
C{sipdist passwd FILE USER [--realm R]}: add a user to a credentials file
or change its password.  The password is read from standard input: without
echo, asked twice, when that is a terminal; the first line otherwise (so
C{echo secret | sipdist passwd users alice} works).  Only HA1 digests are
written (see L{sipdist.auth.credentials}).
"""

import getpass
import sys

from twisted.python import usage

from sipdist.commands.main import CommandError, OptionsAnywhere


class PasswdOptions(OptionsAnywhere):
    synopsis = "FILE USER [--realm REALM]"

    longdesc = (
        "Add USER to the credentials file FILE (created if missing) or "
        "change its password, read from standard input. The file keeps "
        "H(user:realm:password) for MD5 and SHA-256, never the password. "
        "Without --realm, the realm is the one the file already uses, if "
        "there is only one.")

    optParameters = [
        ("realm", "r", None, "The realm (usually the SIP domain)."),
    ]

    def __init__(self, stdin=None, stdout=None):
        usage.Options.__init__(self)
        self.stdin = sys.stdin if stdin is None else stdin
        self.stdout = sys.stdout if stdout is None else stdout

    def parseArgs(self, path, username):
        self["path"] = path
        self["username"] = username

    def _realm(self):
        from sipdist.auth.credentials import (
            CredentialsFileError, parseCredentialsFile)
        if self["realm"]:
            return self["realm"]
        path = self["path"]
        try:
            with open(path, encoding="utf-8") as f:
                entries = parseCredentialsFile(f.read(), path)
        except FileNotFoundError:
            raise CommandError(f"{path} does not exist yet: --realm is needed")
        except (OSError, CredentialsFileError) as e:
            raise CommandError(str(e))
        realms = {realm for _, realm in entries}
        if len(realms) != 1:
            raise CommandError(
                f"{path} holds {len(realms)} realms: --realm is needed")
        return realms.pop()

    def _password(self):
        stdin = self.stdin
        if stdin.isatty():
            first = getpass.getpass("Password: ", stream=self.stdout)
            second = getpass.getpass("Again: ", stream=self.stdout)
            if first != second:
                raise CommandError("the passwords differ")
            password = first
        else:
            password = stdin.readline()
            if password.endswith("\n"):
                password = password[:-1]
            if password.endswith("\r"):
                password = password[:-1]
        if not password:
            raise CommandError("empty password")
        return password

    def run(self, reactor):
        from sipdist.auth.credentials import CredentialsFileError, setPassword
        realm = self._realm()
        password = self._password()
        try:
            added = setPassword(self["path"], self["username"], realm,
                                password)
        except CredentialsFileError as e:
            raise CommandError(str(e))
        verb = "added" if added else "changed password of"
        self.stdout.write(
            f"{verb} {self['username']} (realm {realm}) in {self['path']}\n")
        return 0


commands = [
    ("passwd", PasswdOptions,
     "Add a user to a credentials file or change its password."),
]
