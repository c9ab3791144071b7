# -*- test-case-name: tests.test_tls -*-
"""
C{sipdist make-certs DIR [--host H ...] [--name N ...]}: write a private
test CA and certificates for a local deployment (see L{sipdist.testca}).
"""

from twisted.python import usage

from sipdist.commands.main import CommandError, OptionsAnywhere


class MakeCertsOptions(OptionsAnywhere):
    synopsis = "DIR [--host H ...] [--name N ...]"

    longdesc = (
        "Write a private CA (ca.pem, ca.key) and, for each --name, a "
        "certificate NAME.pem (with the CA chain) and key NAME.key valid for "
        "every --host (DNS names and IP addresses) for server and client "
        "authentication; plus other-ca.pem/other.pem (an unrelated CA) and "
        "wronghost.pem (for wrong.example) for negative tests. "
        "Default hosts: localhost 127.0.0.1 ::1; default name: server. "
        "For tests and local deployments only."
    )

    def __init__(self):
        usage.Options.__init__(self)
        self["hosts"] = []
        self["names"] = []

    def opt_host(self, host):
        """
        A DNS name or IP address the certificates are valid for (repeatable).
        """
        self["hosts"].append(host)

    def opt_name(self, name):
        """
        Base name of a certificate to issue (repeatable), e.g. --name home1.
        """
        self["names"].append(name)

    def parseArgs(self, directory):
        self["directory"] = directory

    def postOptions(self):
        from sipdist.testca import DEFAULT_HOSTS, DEFAULT_NAMES
        self["hosts"] = tuple(self["hosts"]) or DEFAULT_HOSTS
        self["names"] = tuple(self["names"]) or DEFAULT_NAMES

    def run(self, reactor):
        from sipdist import testca
        try:
            written = testca.makeCA(
                self["directory"], hosts=self["hosts"], names=self["names"])
        except ValueError as e:
            raise CommandError(str(e)) from None
        except OSError as e:
            raise CommandError(
                f"{e.filename or self['directory']}: {e.strerror}") from None
        for base in sorted(written):
            print(written[base])
        return 0


commands = [
    ("make-certs", MakeCertsOptions,
     "Write a private test CA and certificates (tests, local deployment)"),
]
