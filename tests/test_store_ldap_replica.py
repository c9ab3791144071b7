# -*- test-case-name: tests.test_store_ldap_replica -*-
"""
The LDAP store on two OpenLDAP providers in multi-provider replication
(syncrepl with the syncprov overlay), both real slapd processes on
loopback (see L{tests.slapd.replicatedPair}); skipped if slapd is not
installed, failed instead when C{CI=true}.

The figures (replication delay, failover time) are logged, not asserted;
C{bench/bench_ldap_replica.py} prints them.
"""

import os
import signal

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.logger import Logger
from twisted.trial.unittest import TestCase

from tests import slapd
from tests.ldap_replica import (
    lookupsThroughOutage, replicationDelay, serversLDIF, storeFor, usersLDIF,
    waitFor)
from tests.helpers_store import tempDir
from tests.ldap_replica import UNCACHED
from tests.test_store_ldap import writeConfig

NAMES = [f"u{i:03d}" for i in range(200)]


class ReplicatedStoreTests(TestCase):
    """
    A store reading one provider sees what was written through the other,
    and a store given both keeps answering when the one it uses dies.
    """

    _log = Logger()

    def setUp(self):
        self.first, self.second = slapd.replicatedPair(
            self, slapd.BASE_LDIF + serversLDIF() + usersLDIF(NAMES, "home1"))
        self.config = writeConfig(self)

    def store(self, *servers):
        store = storeFor(reactor, servers, self.config)
        self.addCleanup(store.close)
        return store

    @inlineCallbacks
    def replicated(self):
        """
        Wait until the second provider holds the last loaded user.
        """
        took = yield waitFor(reactor, self.store(self.second),
                             f"sip:{NAMES[-1]}@example.com", "home1")
        self.assertIsNotNone(took, "the second provider never replicated "
                                   "the first's entries")

    @inlineCallbacks
    def test_moveSeenOnOtherProvider(self):
        """
        A user moved through a store writing to provider 1 is read with the
        new home by a store reading provider 2 only, and a move back made
        through provider 2 is read from provider 1.
        """
        yield self.replicated()
        one, two = self.store(self.first), self.store(self.second)
        aor = "sip:u007@example.com"
        self.assertEqual((yield two.lookupUser(aor)), "home1")
        took = yield replicationDelay(reactor, one, two, aor, "home2")
        self.assertIsNotNone(took, "provider 2 never read the move")
        back = yield replicationDelay(reactor, two, one, aor, "home1")
        self.assertIsNotNone(back, "provider 1 never read the move back")
        self._log.info("replication: {to2:.3f} s from provider 1 to 2, "
                       "{to1:.3f} s back", to2=took, to1=back)

    @inlineCallbacks
    def test_providerKilled(self):
        """
        A store given both providers answers every one of 200 lookups of
        distinct users (each a search in the directory) while the provider
        it uses is killed with SIGKILL after the 50th: the search cut by
        the kill is retried once on the other provider by the store
        itself, so no lookup fails.
        """
        yield self.replicated()
        store = self.store(self.first, self.second)
        figures = yield lookupsThroughOutage(
            reactor, store, [f"sip:{n}@example.com" for n in NAMES],
            "home1", self.first.kill, killAfter=50)
        self.assertEqual(figures["failed"], 0, figures["errors"])
        self.assertEqual((figures["lookups"], figures["duringOutage"]),
                         (200, 150))
        self.assertIsNotNone(figures["failover"])
        self.assertIsNone(self.first.process)
        self._log.info("failover: {figures}", figures=figures)

    @inlineCallbacks
    def test_providerKilledInFlight(self):
        """
        With lookups 8 at a time and the provider in use killed while a
        batch of searches is in flight, the store retries the cut searches
        on the other provider: none of 200 lookups fails.
        """
        yield self.replicated()
        store = self.store(self.first, self.second)
        figures = yield lookupsThroughOutage(
            reactor, store, [f"sip:{n}@example.com" for n in NAMES],
            "home1", self.first.kill, killAfter=50, parallel=8)
        self.assertEqual(figures["failed"], 0, figures["errors"])
        self.assertEqual(figures["lookups"], 200)
        self.assertGreater(figures["duringOutage"], 140)
        self.assertIsNotNone(figures["failover"])
        self._log.info("failover, lookups in flight: {figures}",
                       figures=figures)

    @inlineCallbacks
    def test_providerHung(self):
        """
        When the provider in use stops answering (SIGSTOP: connections are
        accepted, nothing is answered), the lookup waiting on it fails at
        the C{timeout} and the store goes to the other provider: at most
        one of 40 lookups fails, even binding anonymously (where no bind
        would reveal the silent server).
        """
        yield self.replicated()
        anonymous = os.path.join(tempDir(self), "anonymous.conf")
        with open(anonymous, "w") as f:
            f.write("# no bindDN: anonymous\n")
        store = storeFor(reactor, [self.first, self.second], anonymous,
                         UNCACHED + "&timeout=0.5")
        self.addCleanup(store.close)
        pid = self.first.process.pid
        self.addCleanup(os.kill, pid, signal.SIGCONT)
        figures = yield lookupsThroughOutage(
            reactor, store, [f"sip:{n}@example.com" for n in NAMES[:40]],
            "home1", lambda: os.kill(pid, signal.SIGSTOP), killAfter=5,
            interval=0.02)
        self.assertLessEqual(figures["failed"], 1, figures["errors"])
        self.assertEqual(figures["lookups"], 40)
        self._log.info("failover from a hung provider: {figures}",
                       figures=figures)
