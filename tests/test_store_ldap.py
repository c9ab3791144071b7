# -*- test-case-name: tests.test_store_ldap -*-
"""
Tests for L{sipdist.store.ldap}, against a real OpenLDAP C{slapd} on
loopback (see L{tests.slapd}); skipped if slapd is not installed, failed
instead when C{CI=true}.
"""

import os
import signal

from twisted.internet import reactor, task
from twisted.internet.defer import inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.trial.unittest import SynchronousTestCase, TestCase

from sipdist import ldapconn
from sipdist.store import StoreConfigError, StoreUnavailable, storeFromString
from sipdist.store.ldap import LDAPAssignmentStore, parseLDAPString
from tests import slapd
from tests.helpers_store import tempDir
from tests.storecontract import AssignmentStoreContractMixin
from tests.test_admin import assignAliceAndLookHerUp, runSipdist

SERVERS_LDIF = f"""
dn: sipdistServerId=home1,ou=servers,{slapd.SUFFIX}
objectClass: sipdistServer
sipdistServerId: home1
sipdistServerURI: sip:127.0.0.1:5070

dn: sipdistServerId=home2,ou=servers,{slapd.SUFFIX}
objectClass: sipdistServer
sipdistServerId: home2
sipdistServerURI: sip:127.0.0.1:5080
sipdistWeight: 5
sipdistState: active
"""


def userLDIF(name, home):
    return f"""
dn: sipdistAOR=sip:{name}@example.com,ou=users,{slapd.SUFFIX}
objectClass: sipdistUser
sipdistAOR: sip:{name}@example.com
sipdistHomeServer: {home}
"""


class ShiftedClockReactor:
    """
    The real reactor, but whose C{seconds()} can be moved forward so that
    cache entries expire without waiting.
    """

    def __init__(self, real):
        self._real = real
        self.offset = 0.0

    def seconds(self):
        return self._real.seconds() + self.offset

    def advance(self, seconds):
        self.offset += seconds

    def __getattr__(self, name):
        return getattr(self._real, name)


def writeConfig(case, extra=""):
    """
    An LDAP store config file binding as the test root DN, with the password
    in a separate password file.
    """
    directory = tempDir(case)
    secret = os.path.join(directory, "secret")
    with open(secret, "w") as f:
        f.write(slapd.ROOT_PW + "\n")
    path = os.path.join(directory, "ldap.conf")
    with open(path, "w") as f:
        f.write(f"# test\nbindDN = {slapd.ROOT_DN}\n"
                f"passwordFile = {secret}\n{extra}")
    return path


class LDAPStoreContractTests(AssignmentStoreContractMixin, TestCase):
    """
    The LDAP store keeps the store contract against slapd.
    """

    def setUp(self):
        self.server = slapd.startedSlapd(self)
        self.config = writeConfig(self)

    def storeString(self):
        return (f"{self.server.url}/{slapd.SUFFIX}?config={self.config}"
                f"&refresh=0")

    def makeStore(self):
        store = storeFromString(reactor, self.storeString())
        self.addCleanup(store.close)
        return store

    def otherWriter(self, store):
        return self.makeStore()

    def pickUpChanges(self, store):
        return store.refresh()


class LDAPStoreTests(TestCase):
    """
    Caching, outages and failover against real slapd processes.
    """

    def setUp(self):
        slapd.skipOrFail(self)
        self.config = writeConfig(self)

    def slapd(self, ldif):
        server = slapd.Slapd()
        self.addCleanup(server.cleanup)
        server.load(slapd.BASE_LDIF + ldif)
        server.start()
        return server

    def store(self, hosts, clock=None, options="&refresh=0"):
        store = LDAPAssignmentStore(clock or reactor, parseLDAPString(
            f"ldap://{hosts}/{slapd.SUFFIX}?config={self.config}{options}"))
        self.addCleanup(store.close)
        return store

    @inlineCallbacks
    def test_cachedLookupFired(self):
        """
        Once a user is looked up, the next lookup is answered from the cache
        with a Deferred that has already fired; a user without an entry is
        cached as L{None} too.
        """
        server = self.slapd(SERVERS_LDIF + userLDIF("alice", "home1"))
        store = self.store(f"127.0.0.1:{server.port}")
        self.assertEqual((yield store.lookupUser("alice@example.com")),
                         "home1")
        self.assertEqual(
            self.successResultOf(store.lookupUser("sip:alice@example.com")),
            "home1")
        self.assertIsNone((yield store.lookupUser("nobody@example.com")))
        self.assertIsNone(
            self.successResultOf(store.lookupUser("nobody@example.com")))

    @inlineCallbacks
    def test_answersAtOnce(self):
        """
        C{answersAtOnce} says whether a user's lookup and the server
        records are in the caches, fresh: not before they were read, nor
        once the user's entry expired.
        """
        server = self.slapd(SERVERS_LDIF + userLDIF("alice", "home1"))
        clock = ShiftedClockReactor(reactor)
        store = self.store(f"127.0.0.1:{server.port}", clock,
                           "&refresh=0&ttl=60")
        self.assertFalse(store.answersAtOnce("sip:alice@example.com"))
        yield store.lookupUser("alice@example.com")
        self.assertFalse(store.answersAtOnce("sip:alice@example.com"))
        yield store.listServers()
        self.assertTrue(store.answersAtOnce("sip:alice@example.com"))
        self.assertFalse(store.answersAtOnce("sip:bob@example.com"))
        clock.advance(61)
        self.assertFalse(store.answersAtOnce("sip:alice@example.com"))

    @inlineCallbacks
    def test_outageServedFromCache(self):
        """
        While slapd is stopped, lookups of cached users are served from the
        cache even after their entries expired, uncached users fail with
        L{StoreUnavailable}; once slapd is back the store reconnects by
        itself and answers with fresh data.
        """
        server = self.slapd(SERVERS_LDIF + userLDIF("alice", "home1"))
        clock = ShiftedClockReactor(reactor)
        store = self.store(f"127.0.0.1:{server.port}", clock)
        other = self.store(f"127.0.0.1:{server.port}")
        self.assertEqual((yield store.lookupUser("alice@example.com")),
                         "home1")
        yield other.moveUser("alice@example.com", "home2")

        server.stop()
        self.assertEqual((yield store.lookupUser("alice@example.com")),
                         "home1")
        clock.advance(600)
        self.assertEqual((yield store.lookupUser("alice@example.com")),
                         "home1")
        with self.assertRaises(StoreUnavailable):
            yield store.lookupUser("bob@example.com")

        server.start()
        clock.advance(60)
        self.assertEqual((yield store.lookupUser("alice@example.com")),
                         "home2")

    def answered(self, d, bound=5.0):
        """
        C{d}, failing with L{AssertionError} if it has not fired within
        C{bound} seconds: a hang is a failure, not a test timeout.
        """
        def hung(result, timeout):
            raise AssertionError(f"no answer within {timeout} s")
        return d.addTimeout(bound, reactor, onTimeoutCancel=hung)

    @inlineCallbacks
    def test_hungDirectory(self):
        """
        With slapd stopped by SIGSTOP (its socket open, nothing answering),
        a user whose cache entry expired is answered at once from the cache
        while a refresh runs in the background; one whose entry is older
        than C{maxStale} gets the cached answer at the deadline; a new user
        fails with L{StoreUnavailable} at the deadline, never hangs.  Once
        slapd runs again, new users are served within a few seconds.
        """
        users = ["alice", "bob", "carol", "dave", "erin"]
        server = self.slapd(SERVERS_LDIF + "".join(
            userLDIF(name, "home2") for name in users))
        clock = ShiftedClockReactor(reactor)
        store = self.store(f"127.0.0.1:{server.port}", clock,
                           "&refresh=0&timeout=0.5&ttl=60&maxStale=300")
        self.assertEqual((yield store.lookupUser("erin@example.com")),
                         "home2")
        clock.advance(340)
        for name in ("alice", "bob"):
            self.assertEqual((yield store.lookupUser(f"{name}@example.com")),
                             "home2")
        pid = server.process.pid
        self.addCleanup(os.kill, pid, signal.SIGCONT)
        os.kill(pid, signal.SIGSTOP)
        clock.advance(61)
        for _ in range(6):
            # Past any retry delay: every round tries the directory again,
            # and the delay grows as far as it may.
            clock.advance(31)
            for name in ("alice", "bob"):
                self.assertEqual(self.successResultOf(
                    store.lookupUser(f"{name}@example.com")), "home2")
            error = yield self.assertFailure(
                self.answered(store.lookupUser("carol@example.com")),
                StoreUnavailable)
            self.assertTrue(any(words in str(error) for words in (
                "did not answer in 0.5 s", "no answer in 0.5 s",
                "unreachable")), str(error))
            self.assertEqual((yield self.answered(
                store.lookupUser("erin@example.com"))), "home2")

        fresh = self.store(f"127.0.0.1:{server.port}", clock,
                           "&refresh=0&timeout=0.5")
        # Server records never read yet: bounded too.
        yield self.assertFailure(self.answered(fresh.getServer("home1")),
                                 StoreUnavailable)

        os.kill(pid, signal.SIGCONT)
        served = None
        for _ in range(20):
            try:
                served = yield self.answered(
                    store.lookupUser("dave@example.com"))
                break
            except StoreUnavailable:
                yield task.deferLater(reactor, 0.2, lambda: None)
        self.assertEqual(served, "home2")

    @inlineCallbacks
    def test_failover(self):
        """
        With two URLs, the store uses the first that answers: a dead first
        URL is skipped, and when the server in use stops, the next lookup
        goes to the other.
        """
        data = SERVERS_LDIF + userLDIF("alice", "home1") + userLDIF(
            "bob", "home2")
        first, second = self.slapd(data), self.slapd(data)
        dead = slapd.freePort()
        store = self.store(f"127.0.0.1:{dead},127.0.0.1:{first.port},"
                           f"127.0.0.1:{second.port}")
        self.assertEqual((yield store.lookupUser("alice@example.com")),
                         "home1")
        first.stop()
        self.assertEqual((yield store.lookupUser("bob@example.com")),
                         "home2")

    @inlineCallbacks
    def test_refreshWatches(self):
        """
        The periodic refresh reports a reassignment made directly in the
        directory to watchers, with the server the store had cached.
        """
        server = self.slapd(SERVERS_LDIF + userLDIF("alice", "home1"))
        store = self.store(f"127.0.0.1:{server.port}")
        other = self.store(f"127.0.0.1:{server.port}")
        events = []
        store.watch(events.append)
        yield store.lookupUser("alice@example.com")
        yield other.assignUser("alice@example.com", "home2")
        yield other.assignUser("carol@example.com", "home1")
        yield store.refresh()
        aors = {(e.aor, e.old, e.new) for e in events}
        self.assertIn(("sip:alice@example.com", "home1", "home2"), aors)
        self.assertIn(("sip:carol@example.com", None, "home1"), aors)
        yield store.refresh()
        self.assertEqual(len(events), 2)

    @inlineCallbacks
    def test_microsoftStyle(self):
        """
        With the attribute names of a Microsoft directory, users whose
        C{msRTCSIP-PrimaryHomeServer} is the DN of a pool entry are
        assigned to that pool, and assigning writes the pool's DN.
        """
        pools = f"ou=pools,{slapd.SUFFIX}"
        ldif = f"""
dn: cn=pool1,{pools}
objectClass: msRTCSIP-Pool
cn: pool1
msRTCSIP-PoolFQDN: pool1.example.com

dn: cn=pool2,{pools}
objectClass: msRTCSIP-Pool
cn: pool2
msRTCSIP-PoolFQDN: pool2.example.com
msRTCSIP-PoolState: draining

dn: uid=alice,ou=people,{slapd.SUFFIX}
objectClass: account
objectClass: msRTCSIP-User
uid: alice
msRTCSIP-PrimaryUserAddress: sip:alice@example.com
msRTCSIP-PrimaryHomeServer: cn=pool2,{pools}

dn: uid=bob,ou=people,{slapd.SUFFIX}
objectClass: account
objectClass: msRTCSIP-User
uid: bob
msRTCSIP-PrimaryUserAddress: sip:bob@example.com
"""
        server = self.slapd(ldif)
        self.config = writeConfig(self, f"""
usersBase = ou=people,{slapd.SUFFIX}
userFilter = (objectClass=msRTCSIP-User)
aorAttr = msRTCSIP-PrimaryUserAddress
homeAttr = msRTCSIP-PrimaryHomeServer
homeIsDN = yes
createUsers = no
serversBase = {pools}
serverFilter = (objectClass=msRTCSIP-Pool)
serverIdAttr = cn
serverURIAttr = msRTCSIP-PoolFQDN
stateAttr = msRTCSIP-PoolState
weightAttr =
""")
        store = self.store(f"127.0.0.1:{server.port}")
        self.assertEqual((yield store.lookupUser("alice@example.com")),
                         "pool2")
        pool2 = yield store.getServer("pool2")
        self.assertEqual((pool2.uri, pool2.state, pool2.weight),
                         ("sip:pool2.example.com", "draining", 1))
        self.assertIsNone((yield store.lookupUser("bob@example.com")))
        yield store.assignUser("bob@example.com", "pool1")
        fresh = self.store(f"127.0.0.1:{server.port}")
        self.assertEqual((yield fresh.lookupUser("bob@example.com")),
                         "pool1")
        self.assertEqual((yield fresh.countUsers()),
                         {"pool1": 1, "pool2": 1})
        from sipdist.store import UnknownUser
        with self.assertRaises(UnknownUser):
            yield store.assignUser("zed@example.com", "pool1")

    @inlineCallbacks
    def test_transportAttributesMissing(self):
        """
        A directory whose schema lacks the TCP/TLS URI attributes the store
        is configured with still reads its servers (they get no TCP or TLS
        URI of their own); a server whose TLS URI is in the directory gets
        it.
        """
        server = self.slapd(SERVERS_LDIF + f"""
dn: sipdistServerId=home3,ou=servers,{slapd.SUFFIX}
objectClass: sipdistServer
sipdistServerId: home3
sipdistServerURI: sip:127.0.0.1:5090
sipdistServerTLSURI: sips:home3.example.com:5091
""")
        store = self.store(f"127.0.0.1:{server.port}")
        home3 = yield store.getServer("home3")
        self.assertEqual(home3.tlsUri, "sips:home3.example.com:5091")
        self.config = writeConfig(self, "tcpURIAttr = sipdistNoSuchTCP\n"
                                        "tlsURIAttr = sipdistNoSuchTLS\n")
        store = self.store(f"127.0.0.1:{server.port}")
        servers = yield store.listServers()
        self.assertEqual([s.id for s in servers], ["home1", "home2", "home3"])
        self.assertEqual({(s.tcpUri, s.tlsUri) for s in servers},
                         {(None, None)})

    @inlineCallbacks
    def test_badPassword(self):
        """
        A refused bind is a one-line L{StoreUnavailable}.
        """
        server = self.slapd("")
        bad = os.path.join(tempDir(self), "bad.conf")
        with open(bad, "w") as f:
            f.write(f"bindDN = {slapd.ROOT_DN}\npassword = wrong\n")
        store = LDAPAssignmentStore(reactor, parseLDAPString(
            f"ldap://127.0.0.1:{server.port}/{slapd.SUFFIX}?config={bad}"
            f"&refresh=0"))
        self.addCleanup(store.close)
        with self.assertRaises(StoreUnavailable) as e:
            yield store.lookupUser("alice@example.com")
        self.assertIn("nvalid", str(e.exception))
        self.assertEqual(len(str(e.exception).splitlines()), 1)


class SelfConnectionTests(TestCase):
    """
    A connection to a directory that the kernel connected to itself (what a
    connection to a free port of the ephemeral range on loopback can
    become, now and then).
    """

    @inlineCallbacks
    def test_refused(self):
        """
        It fails at once as refused (not as a directory that answers
        nonsense, or after the timeout), and is closed.
        """
        port = slapd.freePort()
        # The connection's own address forced to the one it goes to.
        self.patch(ldapconn, "_endpoint",
                   lambda reactor, host, port, timeout: TCP4ClientEndpoint(
                       reactor, host, port, timeout=timeout,
                       bindAddress=(host, port)))
        connection = ldapconn.LDAPConnection(
            reactor, [("127.0.0.1", port)], 5.0, unavailable=StoreUnavailable)
        start = reactor.seconds()
        failure = yield self.assertFailure(connection.client(),
                                           StoreUnavailable)
        self.assertIn(f"127.0.0.1:{port}: connected to itself", str(failure))
        self.assertLess(reactor.seconds() - start, 2.0)
        yield task.deferLater(reactor, 0.05, lambda: None)


class LDAPConsoleTests(TestCase):
    """
    The C{sipdist} admin commands work against the LDAP store.
    """

    def test_assignAndLookup(self):
        """
        C{sipdist} adds servers, assigns alice@example.com to home2 in slapd
        and looks her up.
        """
        server = slapd.startedSlapd(self)
        config = writeConfig(self)
        env = {"SIPDIST_STORE": f"{server.url}/{slapd.SUFFIX}?config={config}"}
        assignAliceAndLookHerUp(self, env)
        code, out, err = runSipdist(["counts"], env)
        self.assertEqual(out, "home1 0\nhome2 1\ntotal 1\n")


class RealPartPolicyTests(SynchronousTestCase):
    """
    A missing slapd skips the LDAP tests, except under C{CI=true}.
    """

    def test_skipOrFail(self):
        """
        Without slapd a test is skipped with the reason, or failed when
        C{CI=true}.
        """
        from twisted.trial.unittest import SkipTest
        self.patch(slapd, "missing", lambda: "no slapd here")
        self.patch(os, "environ", {"CI": "false"})
        e = self.assertRaises(SkipTest, slapd.skipOrFail, self)
        self.assertIn("no slapd here", str(e))
        self.patch(os, "environ", {"CI": "true"})
        e = self.assertRaises(self.failureException, slapd.skipOrFail, self)
        self.assertIn("CI=true", str(e))

    def test_syncprovMissing(self):
        """
        The replication tests are skipped without the syncprov overlay, or
        failed when C{CI=true}.
        """
        from twisted.trial.unittest import SkipTest
        self.patch(slapd, "missing", lambda: None)
        self.patch(slapd, "MODULE_DIR", "/nonexistent")
        self.patch(os, "environ", {"CI": "false"})
        slapd.skipOrFail(self)
        e = self.assertRaises(SkipTest, slapd.skipOrFail, self,
                              needSyncprov=True)
        self.assertIn("no syncprov overlay", str(e))
        self.patch(os, "environ", {"CI": "true"})
        self.assertRaises(self.failureException, slapd.skipOrFail, self,
                          needSyncprov=True)


class LDAPStringTests(SynchronousTestCase):
    """
    LDAP store strings and configuration files are checked with one-line
    errors.
    """

    def test_hostsAndOptions(self):
        """
        Several hosts, a base and options are read from the string; the
        default bases follow the base.
        """
        config = parseLDAPString(
            "ldap://a.example:3890,[::1]:389,b/dc=example,dc=com"
            "?ttl=5&negativeTtl=1&homeIsDN=yes&bindDN=cn=x")
        self.assertEqual(config.servers,
                         [("a.example", 3890), ("::1", 389), ("b", 389)])
        self.assertEqual(config.base, "dc=example,dc=com")
        self.assertEqual(config.usersBase, "ou=users,dc=example,dc=com")
        self.assertEqual((config.ttl, config.negativeTtl, config.homeIsDN,
                          config.bindDN), (5.0, 1.0, True, "cn=x"))

    def test_passwordNotOnCommandLine(self):
        """
        A password in the store string is refused.
        """
        e = self.assertRaises(StoreConfigError, parseLDAPString,
                              "ldap://h/dc=x?password=secret")
        self.assertIn("not taken from the command line", str(e))

    def test_errors(self):
        """
        Bad strings and files are one-line errors.
        """
        missing = os.path.join(tempDir(self), "nope.conf")
        bad = os.path.join(tempDir(self), "bad.conf")
        with open(bad, "w") as f:
            f.write("ttl = 5\ncolour = red\n")
        for text, message in [
                ("ldap://", "expected ldap://HOST:PORT/BASE"),
                ("ldap://h:99999/dc=x", "bad port"),
                ("ldap://h/dc=x?ttl=soon", "bad LDAP store option ttl"),
                ("ldap://h/dc=x?colour=red", "unknown LDAP store option"),
                ("ldap://h/dc=x?userFilter=(broken", "bad LDAP filter"),
                (f"ldap://h/dc=x?config={missing}", "cannot read LDAP config"),
                (f"ldap://h/dc=x?config={bad}", f"{bad}:2:"),
                (f"ldap://h/dc=x?passwordFile={missing}",
                 "cannot read password file")]:
            e = self.assertRaises(StoreConfigError, parseLDAPString, text)
            self.assertIn(message, str(e))
            self.assertEqual(len(str(e).splitlines()), 1)
