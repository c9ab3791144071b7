# -*- test-case-name: tests.test_store_ldap_tls -*-
"""
The LDAP store and the LDAP credential source over TLS (C{ldaps://} and
StartTLS), against a real slapd on loopback holding a certificate from the
test CA (L{sipdist.testca}); skipped if slapd is not installed, failed
instead when C{CI=true}.
"""

import os

from twisted.cred.credentials import UsernamePassword
from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.task import deferLater
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase, TestCase

from sipdist.auth.ldap import (
    LDAPBindChecker, LDAPUnavailable, parseLDAPCredentials)
from sipdist.auth.sources import CredentialsConfigError
from sipdist.store import StoreConfigError, StoreUnavailable, storeFromString
from sipdist.store.ldap import parseLDAPString
from sipdist.testca import makeCA
from tests import slapd
from tests.helpers_store import tempDir
from tests.test_auth_ldap import PEOPLE_LDIF, SCHEMA
from tests.test_store_ldap import SERVERS_LDIF, userLDIF, writeConfig


class TLSStoreTests(TestCase):
    """
    The store reaches slapd with ldaps:// or StartTLS, verifying its
    certificate, and refuses a server it cannot verify with a logged
    reason and a quick L{StoreUnavailable} (a C{503} to SIP clients).
    """

    def setUp(self):
        slapd.skipOrFail(self)
        self.ca = makeCA(os.path.join(tempDir(self), "ca"))
        self.config = writeConfig(self)
        self.logged = []
        globalLogPublisher.addObserver(self.logged.append)
        self.addCleanup(globalLogPublisher.removeObserver,
                        self.logged.append)

    def slapd(self, leaf="server", extraLDIF="", globalLines=(),
              authSchema=False):
        """
        A running slapd offering StartTLS on C{port} and LDAPS on
        C{ldapsPort}, with the certificate C{leaf} of the test CA files.
        """
        server = slapd.Slapd(tls=(self.ca[leaf + ".pem"],
                                  self.ca[leaf + ".key"], self.ca["ca.pem"]),
                             globalLines=globalLines)
        self.addCleanup(server.cleanup)
        if authSchema:
            with open(server.conf) as f:
                text = f.read()
            with open(server.conf, "w") as f:
                f.write(f"include {SCHEMA}\n" + text)
        server.load(slapd.BASE_LDIF + SERVERS_LDIF + userLDIF("alice", "home2")
                    + extraLDIF)
        server.start()
        return server

    def store(self, url, options=""):
        store = storeFromString(
            reactor, f"{url}/{slapd.SUFFIX}?config={self.config}&refresh=0"
                     f"&caFile={self.ca['ca.pem']}{options}")
        self.addCleanup(store.close)
        return store

    def answered(self, d, bound=5.0):
        """
        C{d}, failing with L{AssertionError} if it has not fired within
        C{bound} seconds: a hang is a failure, not a test timeout.
        """
        def hung(result, timeout):
            raise AssertionError(f"no answer within {timeout} s")
        return d.addTimeout(bound, reactor, onTimeoutCancel=hung)

    def warnings(self):
        return [e["error"] for e in self.logged if "error" in e and
                "LDAP directory unreachable" in e.get("log_format", "")]

    @inlineCallbacks
    def test_ldapsAndStartTLS(self):
        """
        With ldaps:// on the LDAPS port, and with startTLS=yes on the plain
        port of a slapd that refuses operations without TLS
        (C{security tls=1}), the store binds and reads alice's home; a
        store without TLS is refused by that slapd.
        """
        server = self.slapd(globalLines=["security tls=1"])
        ldaps = self.store(f"ldaps://127.0.0.1:{server.ldapsPort}")
        self.assertEqual((yield self.answered(
            ldaps.lookupUser("alice@example.com"))), "home2")
        startTLS = self.store(f"ldap://127.0.0.1:{server.port}",
                              "&startTLS=yes")
        self.assertEqual((yield self.answered(
            startTLS.lookupUser("alice@example.com"))), "home2")
        plain = storeFromString(
            reactor, f"ldap://127.0.0.1:{server.port}/{slapd.SUFFIX}"
                     f"?config={self.config}&refresh=0")
        self.addCleanup(plain.close)
        error = yield self.assertFailure(self.answered(
            plain.lookupUser("alice@example.com")), StoreUnavailable)
        self.assertIn("onfidentiality", str(error))

    @inlineCallbacks
    def assertRefused(self, leaf, reason):
        """
        A slapd with the certificate C{leaf} is refused over ldaps:// and
        StartTLS: lookups fail at once with L{StoreUnavailable} saying
        C{reason}, which is logged too.
        """
        server = self.slapd(leaf)
        for url, options in (
                (f"ldaps://127.0.0.1:{server.ldapsPort}", ""),
                (f"ldap://127.0.0.1:{server.port}", "&startTLS=yes")):
            store = self.store(url, options)
            error = yield self.assertFailure(self.answered(
                store.lookupUser("alice@example.com")), StoreUnavailable)
            self.assertIn(reason, str(error))
            self.assertEqual(len(str(error).splitlines()), 1)
            self.assertTrue(any(reason in w for w in self.warnings()),
                            self.warnings())
            del self.logged[:]

    def test_otherCA(self):
        """
        A server certificate issued by another CA is refused.
        """
        return self.assertRefused(
            "other", "the server certificate is not issued by a trusted CA "
                     f"({self.ca['ca.pem']})")

    def test_wrongHost(self):
        """
        A certificate of the right CA that does not name the host of the
        URL (127.0.0.1) is refused.
        """
        return self.assertRefused(
            "wronghost", "the server certificate does not name '127.0.0.1'")

    @inlineCallbacks
    def test_sip503(self):
        """
        A distributor whose LDAP store refuses the directory's certificate
        answers an authenticated REGISTER with C{503} naming the store,
        within a second or so (the store fails at once; no hang).
        """
        from tests.test_roles import Harness
        server = self.slapd("wronghost")
        store = self.store(f"ldaps://127.0.0.1:{server.ldapsPort}")
        harness = Harness(role="distributor", name="dist1", store=store)
        harness.register("alice")
        for _ in range(100):
            final = harness.flow.sent[-1]
            if final.code != 401:
                break
            yield deferLater(reactor, 0.02, lambda: None)
        self.assertEqual((final.code, final.phrase),
                         (503, "Service Unavailable (Assignment Store Down)"))

    @inlineCallbacks
    def test_failoverPastRefusedServer(self):
        """
        With two URLs, a first server whose certificate is refused is
        skipped and the second serves.
        """
        bad, good = self.slapd("wronghost"), self.slapd()
        store = self.store(f"ldaps://127.0.0.1:{bad.ldapsPort},"
                           f"127.0.0.1:{good.ldapsPort}")
        self.assertEqual((yield self.answered(
            store.lookupUser("alice@example.com"))), "home2")

    @inlineCallbacks
    def test_credentialSource(self):
        """
        The LDAP credential source (bind mode) checks a password over
        ldaps:// and over StartTLS, and is refused by a server whose
        certificate does not name the host.
        """
        server = self.slapd(extraLDIF="\n" + PEOPLE_LDIF, authSchema=True)
        wrong = self.slapd("wronghost")
        ca = self.ca["ca.pem"]
        base = "ou=people,dc=example,dc=com"
        for url in (f"ldaps://127.0.0.1:{server.ldapsPort}/{base}?caFile={ca}",
                    f"ldap://127.0.0.1:{server.port}/{base}?caFile={ca}"
                    f"&startTLS=yes"):
            checker = LDAPBindChecker(reactor, parseLDAPCredentials(
                url + "&mode=bind"))
            self.addCleanup(checker.close)
            self.assertEqual((yield self.answered(checker.requestAvatarId(
                UsernamePassword("alice", "wonderland")))), "alice")
        checker = LDAPBindChecker(reactor, parseLDAPCredentials(
            f"ldaps://127.0.0.1:{wrong.ldapsPort}/{base}?caFile={ca}"
            f"&mode=bind"))
        self.addCleanup(checker.close)
        error = yield self.assertFailure(self.answered(
            checker.requestAvatarId(UsernamePassword("alice", "wonderland"))),
            LDAPUnavailable)
        self.assertIn("does not name '127.0.0.1'", str(error))


class TLSStringTests(SynchronousTestCase):
    """
    The TLS options of the store and credential strings.
    """

    def test_store(self):
        """
        ldaps:// defaults to port 636 and TLS from the first byte;
        startTLS=yes asks for StartTLS; contradictions and unreadable CA
        files are one-line errors.
        """
        ca = makeCA(tempDir(self))["ca.pem"]
        config = parseLDAPString(f"ldaps://a,b:1636/dc=x?caFile={ca}")
        self.assertEqual(config.servers, [("a", 636), ("b", 1636)])
        self.assertEqual((config.tls.mode, config.tls.caFile), ("ldaps", ca))
        config = parseLDAPString("ldap://a/dc=x?startTLS=yes")
        self.assertEqual((config.servers, config.tls.mode, config.tls.caFile),
                         ([("a", 389)], "starttls", ""))
        self.assertIsNone(parseLDAPString("ldap://a/dc=x").tls)
        missing = os.path.join(tempDir(self), "nope.pem")
        for text, message in [
                ("ldaps://a/dc=x?startTLS=yes", "ldaps:// is TLS already"),
                (f"ldap://a/dc=x?caFile={ca}", "caFile is for TLS"),
                (f"ldaps://a/dc=x?caFile={missing}", "does not exist"),
                ("ldap://a/dc=x?startTLS=maybe", "bad LDAP store option")]:
            e = self.assertRaises(StoreConfigError, parseLDAPString, text)
            self.assertIn(message, str(e))
            self.assertEqual(len(str(e).splitlines()), 1)

    def test_storePlugin(self):
        """
        C{ldaps://} strings select the LDAP store.
        """
        store = storeFromString(reactor, "ldaps://127.0.0.1:1/dc=x?refresh=0")
        self.addCleanup(store.close)
        self.assertEqual(type(store).__name__, "LDAPAssignmentStore")

    def test_credentials(self):
        """
        The credential source takes ldaps://, several servers, startTLS
        and caFile, with the same checks.
        """
        ca = makeCA(tempDir(self))["ca.pem"]
        config = parseLDAPCredentials(f"ldaps://a,[::1]:1636/dc=x?caFile={ca}")
        self.assertEqual(config.servers, [("a", 636), ("::1", 1636)])
        self.assertEqual(config.tls.mode, "ldaps")
        config = parseLDAPCredentials("ldap://a/dc=x?startTLS=yes")
        self.assertEqual(config.tls.mode, "starttls")
        for text, message in [
                ("ldaps://a/dc=x?startTLS=yes", "ldaps:// is TLS already"),
                (f"ldap://a/dc=x?caFile={ca}", "caFile is for TLS"),
                ("ldap://a:x/dc=x", "bad port"),
                ("ldap://a/dc=x?startTLS=maybe", "yes or no")]:
            e = self.assertRaises(CredentialsConfigError,
                                  parseLDAPCredentials, text)
            self.assertIn(message, str(e))
