# -*- test-case-name: tests.test_store_ldap_replica_logins -*-
"""
SIP logins through a pool (a distributor and two homes, in-process on
loopback UDP) whose servers each read the LDAP store from two OpenLDAP
providers in multi-provider replication (real slapd processes, see
L{tests.slapd.replicatedPair}), while one provider is killed; skipped if
slapd is not installed, failed instead when C{CI=true}.

The figures are logged, not asserted; C{bench/bench_ldap_replica.py
--logins} prints them.
"""

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.logger import Logger
from twisted.trial.unittest import TestCase

from tests.ldap_replica import loginFailover
from tests.test_store_ldap import writeConfig


class ReplicatedLoginTests(TestCase):
    """
    Steady SIP logins keep working while the provider the servers read is
    killed, and a move written through one provider reaches the servers
    reading the other.
    """

    _log = Logger()

    @inlineCallbacks
    def test_providerKilledDuringLogins(self):
        """
        20 users log in again and again (each login a new Call-ID: digest
        at the distributor, a store lookup there, the signed 301, digest
        and a store lookup at the home) for 4 s through servers whose
        uncached stores read provider 1, then provider 2; provider 1 is
        killed with SIGKILL 2 s in.  No login fails even counting only
        the one retry the client makes itself, none is answered from a
        store's expired cache (every lookup reached a directory), logins
        go on during the outage, and a user moved to home2 through
        provider 2 one second in is registered at home2 by a login
        through the servers reading provider 1.
        """
        figures, delay, first = yield loginFailover(
            reactor, self, writeConfig(self))
        self._log.info("logins through a provider's death: {figures}; the "
                       "move reached the servers in {delay}",
                       figures=figures, delay=delay)
        self.assertTrue(figures["killed"])
        self.assertIsNone(first.process)
        self.assertEqual(figures["failed"], 0, figures["errors"])
        self.assertEqual(figures["stale"], 0, "lookups answered from the "
                         "expired cache: the directory failed them")
        self.assertGreater(figures["duringOutage"], 0)
        self.assertIsNotNone(figures["failover"])
        self.assertIsNotNone(delay, "no login through the servers reading "
                                    "provider 1 reached home2 after the "
                                    "move written through provider 2")
