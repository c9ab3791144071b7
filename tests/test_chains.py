"""
Tests for L{sipdist.roles.chains}: the table of every role's chain, and
the servers L{sipdist.server.buildServer} makes from it.
"""

from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from sipdist.roles.chains import (
    AUTHENTICATES, BEFORE_AUTH, ROLES, beforeAuthentication, chainFor)
from sipdist.server import buildServer
from sipdist.store.memory import MemoryAssignmentStore

CONFIG = {"name": "s1", "domain": "example.com", "listen": [],
          "credentials": "memory:alice:alice-secret",
          "secret": "test-secret-0123456789"}


def build(role, **extra):
    config = dict(CONFIG, role=role, **extra)
    return buildServer(config, MemoryReactorClock(),
                       store=MemoryAssignmentStore())


class TableTests(SynchronousTestCase):
    """
    The table itself: what runs before authentication is a decision, and
    changing it changes this test.
    """

    def test_roles(self):
        """
        The table has the four roles; only the edge reads no store.
        """
        self.assertEqual(sorted(ROLES),
                         ["distributor", "edge", "home", "internal-edge"])
        self.assertEqual([r for r in sorted(ROLES) if not ROLES[r].readsStore],
                         ["edge"])

    def test_beforeAuthentication(self):
        """
        Per role, exactly these links see requests nobody has authenticated:
        a home's subscription dialogs and sealed route sets, a distributor's
        and an internal edge's route sets, and an edge's route sets and the
        edge processor (the servers inside authenticate).
        """
        self.assertEqual(
            {role: beforeAuthentication(role) for role in ROLES},
            {"home": ["subscription-dialogs", "route-set"],
             "distributor": ["route-set"],
             "internal-edge": ["route-set"],
             "edge": ["route-set", "edge"]})

    def test_everyLinkExplained(self):
        """
        Every link has a stage and says why it is where it is.
        """
        for role in ROLES.values():
            for link in role.chain:
                self.assertIn(link.stage, (BEFORE_AUTH, AUTHENTICATES))
                self.assertGreater(len(link.why), 40, link)

    def test_storeRolesAuthenticateLast(self):
        """
        In a role that reads the store, the link that authenticates comes
        after every link that does not: nothing is served past it.
        """
        for role in ROLES.values():
            if not role.readsStore:
                continue
            stages = [link.stage for link in role.chain]
            self.assertEqual(stages[-1], AUTHENTICATES, role.name)
            self.assertNotIn(AUTHENTICATES, stages[:-1], role.name)

    def test_chainForMissingPart(self):
        """
        An adapter that does not build a part the table names is a
        L{KeyError}, not a shorter chain.
        """
        self.assertRaises(KeyError, chainFor, "distributor",
                          {"distribution": object()})


class BuiltChainTests(SynchronousTestCase):
    """
    L{buildServer} gives each role the chain of the table, in its order.
    """

    def test_home(self):
        """
        A home's chain: the notifier's in-dialog processor, the proxy's
        route-set processor, the distribution processor.
        """
        service = build("home")
        self.assertEqual(service.server.processors, [
            service.notifier.inDialog, service.proxy.routeInDialog,
            service.processor])

    def test_distributorAndInternalEdge(self):
        """
        A distributor and an internal edge: route set, then distribution;
        neither has a registrar.
        """
        for role in ("distributor", "internal-edge"):
            service = build(role)
            self.assertEqual(service.server.processors, [
                service.proxy.routeInDialog, service.processor])
            self.assertIsNone(service.registrar)
            self.assertEqual(service.processor.role, role)

    def test_edge(self):
        """
        An edge: route set, then the edge processor; no store.
        """
        service = build("edge", **{"next-hop": ["sip:127.0.0.1:5070"]})
        self.assertEqual(service.server.processors, [
            service.proxy.routeInDialog, service.processor])
        self.assertIsNone(service.store)

    def test_allow(self):
        """
        What a role allows follows from its parts: a distributor allows
        REGISTER and the routed methods; every role OPTIONS.
        """
        methods = build("distributor").server.methods
        for method in ("OPTIONS", "REGISTER", "INVITE", "MESSAGE",
                       "SUBSCRIBE"):
            self.assertIn(method, methods)
        self.assertIn("OPTIONS", build(
            "edge", **{"next-hop": ["sip:127.0.0.1:5070"]}).server.methods)


class BeforeTheChainTests(SynchronousTestCase):
    """
    What every role's server checks before its chain: the extension check
    comes before any authentication (RFC 3261 sections 8.2.2.3 and 16.3
    step 5 before step 6).
    """

    def test_unsupportedBeforeAuthentication(self):
        """
        In every role, an INVITE whose Proxy-Require names an option-tag
        we lack is answered 420 with Unsupported, not challenged; so is a
        REGISTER whose Require does.  A Require on a request the server
        only relays is left to the UAS.
        """
        from tests.test_roles import Harness, outOfDialog, registerBytes
        for role in ROLES:
            harness = Harness(role=role)
            response = harness.send(outOfDialog(
                "INVITE", extra=("Proxy-Require: nope, path",)))
            self.assertEqual((response.code, response.header("unsupported")),
                             (420, "nope"), role)
            response = harness.send(registerBytes(
                extra=("Require: path, also-nope",), callID="r2"))
            self.assertEqual((response.code, response.header("unsupported")),
                             (420, "also-nope"), role)
            response = harness.send(outOfDialog(
                "MESSAGE", extra=("Require: end-to-end",)))
            self.assertNotEqual(response.code, 420, role)

