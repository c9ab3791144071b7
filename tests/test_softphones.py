"""
Real softphones (baresip, linphonec; see L{tests.softphones}) against the
shipped deployment on loopback: the users, home assignments and credentials
of C{etc/} (C{etc/assignments.conf}, C{etc/credentials}: alice, carol and
dave on home1, bob, erin and frank on home2, passwords C{USER-secret}), the
servers built as twistd builds them but on ephemeral UDP ports.

Covered: REGISTER at a home, through the edge and at the distributor;
calls (INVITE, 200, ACK, BYE) and MESSAGEs between users of different
homes, directly through their homes and through the edge; which Digest
algorithm each client answers when offered SHA-256 and MD5.

baresip 1.0 cannot answer a challenge that lists anything but MD5 (see
L{tests.softphones}): the deployments its tests use challenge with MD5
only.
"""

import os

from twisted.internet import defer, reactor
from twisted.python.filepath import FilePath
from twisted.trial.unittest import (
    FailTest, SkipTest, SynchronousTestCase, TestCase,
)

from sipdist.server import buildServer
from sipdist.store import ServerRecord
from sipdist.store.file import parseAssignments
from sipdist.store.memory import MemoryAssignmentStore
from tests import interop
from tests.softphones import (
    Baresip, Event, Linphonec, Softphone, SoftphoneExited, SoftphoneTimeout,
    Twinkle, startSoftphone,
)

ETC = FilePath(__file__).parent().parent().child("etc")
CREDENTIALS = "file:" + ETC.child("credentials").path
SECRET = "softphone-pool-nonce-secret-0123456789"
LOOPBACK = "udp:0:interface=127.0.0.1"
# Each wait for one event of a softphone.
WAIT = 10.0


def password(user):
    """
    The password of a demo user of C{etc/credentials}.
    """
    return f"{user}-secret"


def _port(service, index=0):
    return service.transportService.ports[index].getHost().port


class Deployment:
    """
    The servers of C{etc/} started for one test on ephemeral loopback UDP
    ports, sharing a memory store loaded from C{etc/assignments.conf} (with
    each home's URI replaced by where it listens now) and the credentials
    file C{etc/credentials}.

    @ivar services: the L{sipdist.server.ServerService}s by name.
    @ivar uris: C{sip:127.0.0.1:PORT} of each (of the edge: its outside).
    """

    def __init__(self, testCase, algorithms=None):
        self.testCase = testCase
        self.algorithms = algorithms
        self.store = MemoryAssignmentStore()
        self.services = {}
        self.uris = {}

    @defer.inlineCallbacks
    def start(self, name, role, **extra):
        config = {"role": role, "name": name, "domain": "example.com",
                  "listen": [LOOPBACK], "credentials": CREDENTIALS,
                  "secret": SECRET, "t1": 0.1}
        if self.algorithms is not None:
            # Otherwise the shipped default.
            config["digest-algorithms"] = list(self.algorithms)
        config.update(extra)
        service = buildServer(config, reactor, store=self.store)
        service.startService()
        self.testCase.addCleanup(service.stopService)
        yield service.transportService.ready
        self.services[name] = service
        self.uris[name] = f"sip:127.0.0.1:{_port(service)}"
        return service

    @defer.inlineCallbacks
    def homes(self):
        """
        home1 and home2, and the assignments of C{etc/assignments.conf}.
        """
        tables = parseAssignments(
            ETC.child("assignments.conf").getContent().decode("utf-8"))
        for serverId in sorted(tables.servers):
            yield self.start(serverId, "home")
            yield self.store.addServer(
                ServerRecord(serverId, self.uris[serverId]))
        for aor, serverId in sorted(tables.users.items()):
            yield self.store.assignUser(aor, serverId)

    @defer.inlineCallbacks
    def edge(self, outside="udp"):
        """
        An edge whose next hops are home1 and home2 (as C{etc/edge.toml}),
        listening for clients on C{outside} (C{"udp"} or C{"tcp"}).
        """
        service = yield self.start(
            "edge", "edge", **{"listen": [f"{outside}:0:interface=127.0.0.1"],
                               "inside-listen": [LOOPBACK],
                               "next-hop": [self.uris["home1"],
                                            self.uris["home2"]]})
        if outside != "udp":
            self.uris["edge"] += f";transport={outside}"
        return service

    def bindings(self, home, user):
        return self.services[home].registrar.lookup(f"sip:{user}@example.com")

    def phone(self, kind, user, server, **kw):
        """
        A softphone of C{kind} for C{user}@example.com whose outbound proxy
        is the server named C{server}.
        """
        return startSoftphone(self.testCase, reactor, kind,
                              f"{user}@example.com", password(user),
                              self.uris[server], **kw)


def assertFast(testCase, service, *kinds):
    """
    Assert that C{service}'s fast path answered at least one request of
    each kind (C{challenges}, C{authenticated}), unless its overload
    control shed at some time (a loaded test machine's event loop lag):
    then the fast path rightly stepped aside.
    """
    overload = service.transactions.overload
    if overload is not None and overload.episodes:
        return
    fast = service.transport.fastPath.stats()
    for kind in kinds:
        testCase.assertGreaterEqual(fast[kind], 1, fast)


class _Registering:
    """
    Each client registers at each role.
    """

    timeout = 30

    @defer.inlineCallbacks
    def registered(self, kind, user, via, home, **deployment):
        d = Deployment(self, **deployment)
        yield d.homes()
        if via == "edge":
            yield d.edge()
        elif via == "distributor":
            # The shipped defaults: the distributor proxies standard
            # clients and challenges them with MD5.
            yield d.start("distributor", "distributor")
        phone = d.phone(kind, user, via)
        event = yield phone.waitFor("registered", WAIT)
        self.assertEqual(event.code, 200)
        [binding] = d.bindings(home, user)
        other = "home2" if home == "home1" else "home1"
        self.assertEqual(d.bindings(other, user), [])
        return d, binding

    @defer.inlineCallbacks
    def test_registerAtHome(self):
        """
        The client registers directly at its home server: 200, and the
        binding is there.
        """
        d, binding = yield self.registered(self.kind, self.user, self.home,
                                           self.home)
        self.assertEqual(binding.path, [])
        # The REGISTERs as the client writes them take the home's fast
        # paths: the 401 and the signed 200 (sipdist.roles.fastregister).
        assertFast(self, d.services[self.home], "challenges",
                   "authenticated")

    @defer.inlineCallbacks
    def test_registerThroughEdge(self):
        """
        The client registers through the edge (which sends it to either
        home; the other proxies it): 200, and the binding is on its home
        with a Path through the edge.
        """
        d, binding = yield self.registered(self.kind, self.user, "edge",
                                           self.home)
        self.assertIn(";sd=edge", binding.path[-1])

    @defer.inlineCallbacks
    def test_registerAtDistributor(self):
        """
        The client registers at the distributor, which proxies it to its
        home: 200, and the binding is on its home with a Path through the
        distributor.
        """
        d, binding = yield self.registered(
            self.kind, self.user, "distributor", self.home)
        self.assertIn(";sd=distributor", binding.path[-1])
        # At least the REGISTER that made the binding (a client may
        # register again meanwhile).
        self.assertGreaterEqual(
            d.services["distributor"].processor.proxied, 1)
        # Its first REGISTER takes the fast 401 (the second is proxied).
        assertFast(self, d.services["distributor"], "challenges")


class BaresipRegisterTests(_Registering, TestCase):
    """
    baresip (alice, home1) registers.
    """

    kind = "baresip"
    user = "alice"
    home = "home1"


class LinphonecRegisterTests(_Registering, TestCase):
    """
    linphonec (bob, home2) registers.
    """

    kind = "linphonec"
    user = "bob"
    home = "home2"


class CallTests(TestCase):
    """
    Calls and messages between alice (baresip, home1) and bob (linphonec,
    home2).
    """

    timeout = 40

    @defer.inlineCallbacks
    def pair(self, via1="home1", via2="home2"):
        """
        alice's baresip registered through C{via1}, bob's linphonec through
        C{via2}.
        """
        d = Deployment(self)
        yield d.homes()
        if "edge" in (via1, via2):
            yield d.edge()
        if "distributor" in (via1, via2):
            yield d.start("distributor", "distributor")
        alice = d.phone("baresip", "alice", via1,
                        contact="sip:bob@example.com")
        bob = d.phone("linphonec", "bob", via2)
        yield defer.gatherResults([alice.waitFor("registered", WAIT),
                                   bob.waitFor("registered", WAIT)])
        return d, alice, bob

    @defer.inlineCallbacks
    def call(self, caller, callerURI, callee, calleeURI):
        """
        C{caller} calls C{callee} (which answers by itself), both ends see
        the call established, then C{caller} hangs up and both see it
        end.
        """
        first, second = len(caller.events), len(callee.events)
        caller.dial(calleeURI)
        try:
            incoming = yield callee.waitFor("incoming", WAIT, since=second)
        except SoftphoneTimeout as e:
            # What the caller did with the call, to tell a call it never
            # sent from one lost on the way.
            raise SoftphoneTimeout(
                f"{e}\n{caller.name} (the caller), events since it "
                f"dialled: {caller.events[first:]}\n"
                f"{caller.outputTail()}") from e
        self.assertEqual(incoming.peer, callerURI)
        yield caller.waitFor("established", WAIT, since=first,
                             peer=calleeURI)
        yield callee.waitFor("established", WAIT, since=second,
                             peer=callerURI)
        caller.hangup()
        yield caller.waitFor("ended", WAIT, since=first, peer=calleeURI)
        yield callee.waitFor("ended", WAIT, since=second, peer=callerURI)
        for phone in (caller, callee):
            self.assertNotIn("callFailed", phone.kinds())

    @defer.inlineCallbacks
    def test_baresipCallsLinphonecThroughHomes(self):
        """
        alice (baresip, registered at home1) calls bob (linphonec, at
        home2): home1 proxies the INVITE to home2, the call is established
        at both ends, and alice's BYE ends it at bob's.
        """
        d, alice, bob = yield self.pair()
        yield self.call(alice, "sip:alice@example.com", bob,
                        "sip:bob@example.com")
        self.assertEqual(d.services["home1"].router.toPeer, 1)
        self.assertEqual(d.services["home2"].router.fromPeer, 1)

    @defer.inlineCallbacks
    def test_linphonecCallsBaresipThroughHomes(self):
        """
        bob (linphonec, home2) calls alice (baresip, home1): baresip sees
        the call established only once the ACK has arrived; bob's BYE ends
        it at alice's.
        """
        d, alice, bob = yield self.pair()
        yield self.call(bob, "sip:bob@example.com", alice,
                        "sip:alice@example.com")
        self.assertEqual(d.services["home2"].router.toPeer, 1)
        self.assertEqual(d.services["home1"].router.fromPeer, 1)

    @defer.inlineCallbacks
    def test_callsThroughEdge(self):
        """
        Both registered through the edge: alice calls bob and bob calls
        alice, each call established and ended at both ends.
        """
        d, alice, bob = yield self.pair("edge", "edge")
        yield self.call(alice, "sip:alice@example.com", bob,
                        "sip:bob@example.com")
        yield self.call(bob, "sip:bob@example.com", alice,
                        "sip:alice@example.com")
        self.assertEqual(alice.kinds().count("established"), 2)
        self.assertEqual(bob.kinds().count("established"), 2)

    @defer.inlineCallbacks
    def test_callThroughDistributor(self):
        """
        Both registered at the distributor (which proxies them to their
        homes): alice's call to bob is established.
        """
        d, alice, bob = yield self.pair("distributor", "distributor")
        alice.dial("sip:bob@example.com")
        event = yield alice.waitFor(("established", "callFailed"), WAIT)
        self.assertEqual(event.kind, "established", event)
        yield bob.waitFor("established", WAIT)


    @defer.inlineCallbacks
    def messages(self, via1, via2):
        d, alice, bob = yield self.pair(via1, via2)
        alice.sendMessage("sip:bob@example.com", "hello bob")
        event = yield bob.waitFor("message", WAIT)
        self.assertEqual((event.peer, event.detail),
                         ("sip:alice@example.com", "hello bob"))
        bob.sendMessage("sip:alice@example.com", "hello alice")
        event = yield alice.waitFor("message", WAIT)
        self.assertEqual((event.peer, event.detail),
                         ("sip:bob@example.com", "hello alice"))

    def test_messagesThroughHomes(self):
        """
        alice (baresip, home1) and bob (linphonec, home2) send each other a
        MESSAGE; each arrives with its sender and text.
        """
        return self.messages("home1", "home2")

    def test_messagesThroughDistributor(self):
        """
        Both registered at the distributor with the shipped defaults (it
        proxies them): MESSAGEs both ways arrive with sender and text.
        """
        return self.messages("distributor", "distributor")

    def test_messagesThroughEdge(self):
        """
        The same with both registered through the edge.
        """
        return self.messages("edge", "edge")


class DigestAlgorithmTests(TestCase):
    """
    Which Digest algorithm each client answers when a server challenges
    with SHA-256 and MD5, in either order: linphonec answers the first one
    listed; twinkle takes the last one listed and knows only MD5; baresip
    answers nothing (it gives up as soon as a challenge lists an algorithm
    other than MD5).
    """

    timeout = 30

    HOMES = {"alice": "home1", "carol": "home1", "bob": "home2"}

    @defer.inlineCallbacks
    def register(self, kind, user, algorithms):
        d = Deployment(self, algorithms)
        yield d.homes()
        return d.phone(kind, user, self.HOMES[user])

    @defer.inlineCallbacks
    def linphonecAnswers(self, algorithms, expected):
        phone = yield self.register("linphonec", "bob", algorithms)
        yield phone.waitFor("registered", WAIT, code=200)
        # Its log of the REGISTER it sent may come after the new state.
        yield phone.waitFor("authorization", WAIT)
        answers = {e.detail for e in phone.events
                   if e.kind == "authorization"}
        self.assertEqual(answers, {expected})

    def test_linphonecSHA256First(self):
        """
        Challenged with SHA-256 then MD5, linphonec answers SHA-256 (the
        first) and registers.
        """
        return self.linphonecAnswers(("SHA-256", "MD5"), "SHA-256")

    def test_linphonecMD5First(self):
        """
        Challenged with MD5 then SHA-256, linphonec answers MD5 (the
        first) and registers.
        """
        return self.linphonecAnswers(("MD5", "SHA-256"), "MD5")

    @defer.inlineCallbacks
    def baresipGivesUp(self, algorithms):
        phone = yield self.register("baresip", "alice", algorithms)
        event = yield phone.waitFor("registrationFailed", WAIT)
        self.assertEqual(event.detail, "Function not implemented")
        self.assertNotIn("authorization", phone.kinds())

    def test_baresipSHA256First(self):
        """
        Challenged with SHA-256 then MD5, baresip sends no credentials and
        reports its registration failed.
        """
        return self.baresipGivesUp(("SHA-256", "MD5"))

    def test_baresipMD5First(self):
        """
        Challenged with MD5 then SHA-256, baresip gives up all the same.
        """
        return self.baresipGivesUp(("MD5", "SHA-256"))

    @defer.inlineCallbacks
    def twinkleAnswers(self, algorithms):
        phone = yield self.register("twinkle", "carol", algorithms)
        event = yield phone.waitFor(("registered", "registrationFailed"),
                                    WAIT)
        return phone, event

    @defer.inlineCallbacks
    def test_twinkleSHA256First(self):
        """
        Challenged with SHA-256 then MD5, twinkle answers MD5 (the last)
        and registers.
        """
        phone, event = yield self.twinkleAnswers(("SHA-256", "MD5"))
        self.assertEqual((event.kind, event.code), ("registered", 200))
        self.assertEqual(set(phone.logAlgorithms()), {"MD5"})

    @defer.inlineCallbacks
    def test_twinkleMD5First(self):
        """
        Challenged with MD5 then SHA-256, twinkle takes the last challenge,
        whose algorithm it does not know, sends no credentials and reports
        its registration failed with the 401.
        """
        phone, event = yield self.twinkleAnswers(("MD5", "SHA-256"))
        self.assertEqual((event.kind, event.code),
                         ("registrationFailed", 401))
        self.assertEqual(phone.logAlgorithms(), [])

    @defer.inlineCallbacks
    def test_baresipMD5Only(self):
        """
        Challenged with MD5 alone, baresip answers it and registers.
        """
        phone = yield self.register("baresip", "alice", ("MD5",))
        yield phone.waitFor("registered", WAIT, code=200)
        self.assertIn("authorization", phone.kinds())


class TCPEdgeTests(TestCase):
    """
    Clients that reach the edge over TCP: calls to them come back over
    the connection they opened.
    """

    timeout = 40

    @defer.inlineCallbacks
    def callOverTCP(self, kind, user, home):
        d = Deployment(self)
        yield d.homes()
        yield d.edge("tcp")
        phone = d.phone(kind, user, "edge", transport="tcp")
        bob = d.phone("linphonec", "bob", "home2")
        event = yield phone.waitFor("registered", WAIT)
        self.assertEqual(event.code, 200)
        yield bob.waitFor("registered", WAIT)
        # One connection, the client's; the edge's Path entry (facing the
        # inside) carries its flow token.
        self.assertEqual(
            d.services["edge"].transport.connectionCount, 1)
        [binding] = d.bindings(home, user)
        self.assertIn(";ob", binding.path[-1])
        self.assertIn(";sd=edge", binding.path[-1])
        yield CallTests.call(self, bob, "sip:bob@example.com", phone,
                             f"sip:{user}@example.com")
        self.assertEqual(
            d.services["edge"].transport.connectionCount, 1)

    def test_baresip(self):
        """
        baresip (alice) registers through the edge over TCP and takes a
        call from bob (linphonec at home2) over that connection.
        """
        return self.callOverTCP("baresip", "alice", "home1")

    def test_linphonec(self):
        """
        linphonec (erin) does the same.
        """
        return self.callOverTCP("linphonec", "erin", "home2")

    def test_twinkle(self):
        """
        twinkle (carol) does the same.
        """
        return self.callOverTCP("twinkle", "carol", "home1")


class TwinkleRegisterTests(_Registering, TestCase):
    """
    twinkle (carol, home1) registers.
    """

    kind = "twinkle"
    user = "carol"
    home = "home1"
    # twinkle answers the last challenge listed, and knows only MD5.


class TwinkleCallTests(TestCase):
    """
    Calls and messages between carol (twinkle, home1) and bob (linphonec,
    home2).
    """

    timeout = 40

    @defer.inlineCallbacks
    def pair(self, via1="home1", via2="home2"):
        d = Deployment(self)
        yield d.homes()
        if "edge" in (via1, via2):
            yield d.edge()
        carol = d.phone("twinkle", "carol", via1)
        bob = d.phone("linphonec", "bob", via2)
        yield defer.gatherResults([carol.waitFor("registered", WAIT),
                                   bob.waitFor("registered", WAIT)])
        return d, carol, bob

    @defer.inlineCallbacks
    def test_callsThroughHomes(self):
        """
        carol (twinkle, home1) calls bob (linphonec, home2) and bob calls
        carol: each call is established at both ends and the caller's BYE
        ends it at the callee's.
        """
        d, carol, bob = yield self.pair()
        yield CallTests.call(self, carol, "sip:carol@example.com", bob,
                             "sip:bob@example.com")
        yield CallTests.call(self, bob, "sip:bob@example.com", carol,
                             "sip:carol@example.com")
        self.assertEqual(d.services["home1"].router.toPeer, 1)
        self.assertEqual(d.services["home2"].router.toPeer, 1)

    @defer.inlineCallbacks
    def test_callsThroughEdge(self):
        """
        The same with both registered through the edge.
        """
        d, carol, bob = yield self.pair("edge", "edge")
        yield CallTests.call(self, carol, "sip:carol@example.com", bob,
                             "sip:bob@example.com")
        yield CallTests.call(self, bob, "sip:bob@example.com", carol,
                             "sip:carol@example.com")

    def test_messagesThroughHomes(self):
        """
        carol and bob send each other a MESSAGE; each arrives with its
        sender and text.
        """
        return self.messages("home1", "home2")

    def test_messagesThroughEdge(self):
        """
        The same with both registered through the edge.
        """
        return self.messages("edge", "edge")

    @defer.inlineCallbacks
    def messages(self, via1, via2):
        d, carol, bob = yield self.pair(via1, via2)
        carol.sendMessage("sip:bob@example.com", "hello bob")
        event = yield bob.waitFor("message", WAIT)
        self.assertEqual((event.peer, event.detail),
                         ("sip:carol@example.com", "hello bob"))
        bob.sendMessage("sip:carol@example.com", "hello carol")
        event = yield carol.waitFor("message", WAIT)
        self.assertEqual((event.peer, event.detail),
                         ("sip:bob@example.com", "hello carol"))


class _Echo(Softphone):
    """
    C{cat} as a softphone: each command comes back as a line of output,
    and a line C{KIND PEER} is an event.
    """

    executable = "cat"
    quitCommand = ""

    def prepare(self, path):
        return [path], self.baseEnvironment()

    def parseLine(self, line):
        kind, _, peer = line.partition(" ")
        return [Event(kind, peer=peer or None)]


class HarnessTests(TestCase):
    """
    The process side of L{tests.softphones}, with C{cat} standing in for
    a softphone.
    """

    timeout = 20

    @defer.inlineCallbacks
    def test_commandsAndEvents(self):
        """
        A command written to the softphone's input comes back as output,
        parsed into an event that L{Softphone.waitFor} returns; events seen
        before the wait count, those before C{since} do not.
        """
        phone = _Echo(reactor, "echo")
        phone.start()
        self.addCleanup(phone.stop, 0.5)
        phone.command("incoming sip:bob@example.com;transport=udp")
        event = yield phone.waitFor("incoming", 5)
        self.assertEqual(event.peer, "sip:bob@example.com")
        phone.command("ended")
        event = yield phone.waitFor(("ended", "callFailed"), 5,
                                    since=len(phone.events) - 1)
        self.assertEqual(event.kind, "ended")
        self.assertEqual(phone.kinds(), ["incoming", "ended"])

    @defer.inlineCallbacks
    def test_timeout(self):
        """
        An event that does not come fails the wait with
        L{SoftphoneTimeout} naming it; a softphone that ignores its quit
        command is killed after the grace period and its directory removed.
        """
        phone = _Echo(reactor, "echo")
        phone.start()
        workdir = phone.workdir
        self.addCleanup(phone.stop, 0.5)
        error = yield self.assertFailure(phone.waitFor("registered", 0.2),
                                         SoftphoneTimeout)
        self.assertIn("no registered", str(error))
        code = yield phone.stop(grace=0.2)
        self.assertEqual(code, -9)
        self.assertFalse(os.path.exists(workdir))
        yield self.assertFailure(phone.waitFor("registered", 1),
                                 SoftphoneExited)

    def test_missingSkips(self):
        """
        A softphone that is not installed skips the test, naming the
        package; under C{CI=true} it fails it.
        """
        class Missing(_Echo):
            executable = "no-such-softphone-for-sipdist"

        phone = Missing(reactor, "missing")
        self.patch(interop, "inCI", lambda: False)
        error = self.assertRaises(SkipTest, phone.start)
        self.assertIn("no-such-softphone-for-sipdist not installed",
                      str(error))
        self.assertIsNone(phone.workdir)
        self.patch(interop, "inCI", lambda: True)
        self.assertRaises(FailTest, phone.start)


class ParserTests(SynchronousTestCase):
    """
    The lines each client prints, as the installed versions print them,
    and the events they make.
    """

    def parsed(self, phone, lines):
        for line in lines:
            for event in phone.parseLine(line):
                phone._event(event)
        return [(e.kind, e.code, e.peer) for e in phone.events]

    def test_baresip(self):
        phone = Baresip(None, "alice@example.com", "pw", "sip:127.0.0.1:9")
        self.assertEqual(self.parsed(phone, [
            "alice@example.com: {0/UDP/v4} 200 OK (sipdist/0.1.0) "
            "[1 binding]",
            "//d/di/dial",
            "call: answering call on line 1 from sip:bob@example.com "
            "with 200",
            "[0:00:00] audio=0/0 (bit/s)    alice@example.com: Call "
            "established: sip:bob@example.com;transport=udp",
            "sip:bob@example.com: session closed: Connection reset by peer",
            "sip:bob@example.com: session closed: 407 Proxy "
            "Authentication Required",
            'sip:bob@example.com: "hi alice"',
            "Authorization: Digest username=\"alice\", realm=\"x\"",
            "reg: sip:alice@example.com: Register: Function not "
            "implemented",
        ]), [("registered", 200, None),
             ("incoming", None, "sip:bob@example.com"),
             ("established", None, "sip:bob@example.com"),
             ("ended", None, "sip:bob@example.com"),
             ("ended", 407, "sip:bob@example.com"),
             ("message", None, "sip:bob@example.com"),
             ("authorization", None, None),
             ("registrationFailed", None, None)])
        self.assertEqual(phone.events[-2].detail, "MD5")

    def test_baresipFailedCall(self):
        """
        A session closed before it was established is a failed call.
        """
        phone = Baresip(None, "alice@example.com", "pw", "sip:127.0.0.1:9")
        self.assertEqual(self.parsed(phone, [
            "sip:bob@example.com: session closed: 480 Temporarily "
            "Unavailable"]), [("callFailed", 480, "sip:bob@example.com")])

    def test_linphonec(self):
        phone = Linphonec(None, "bob@example.com", "pw", "sip:127.0.0.1:9")
        self.assertEqual(self.parsed(phone, [
            "2026-12-01 23:23:22:291 liblinphone-message-Register "
            "refresher [401] reason [Unauthorized] for proxy [sip:x]",
            "2026-12-01 23:23:22:291 liblinphone-message-Account [0x1] for "
            "identity [sip:bob@example.com] moving from state "
            "[LinphoneRegistrationProgress] to [LinphoneRegistrationFailed]"
            " on core [0x2]",
            "linphonec> Receiving new incoming call from "
            "sip:alice@example.com, assigned id 1",
            "Call 1 with sip:alice@example.com connected.",
            "Call 1 with sip:alice@example.com ended (No error).",
            "Message received from sip:alice@example.com: hello bob",
            "Authorization:  Digest realm=\"example.com\", nonce=\"n\", "
            "algorithm=SHA-256, username=\"bob\"",
        ]), [("registrationFailed", 401, None),
             ("incoming", None, "sip:alice@example.com"),
             ("established", None, "sip:alice@example.com"),
             ("ended", None, "sip:alice@example.com"),
             ("message", None, "sip:alice@example.com"),
             ("authorization", None, None)])
        self.assertEqual(phone.events[-1].detail, "SHA-256")
        self.assertEqual(phone.events[-2].detail, "hello bob")

    def test_twinkle(self):
        phone = Twinkle(None, "carol@example.com", "pw", "sip:127.0.0.1:9",
                        answer=False)
        self.assertEqual(self.parsed(phone, [
            "twinkle: registration succeeded (expires = 60 seconds)",
            "Line 1: incoming call",
            "From:\t\tsip:bob@example.com",
            "To:\t\tsip:carol@example.com",
            "Twinkle> ",
            "Line 1: call established.",
            "Line 1: far end ended call.",
            "Received message",
            "From:\t\tsip:bob@example.com",
            "To:\t\tsip:carol@example.com",
            "hello carol",
            "twinkle, registration failed: 401 Unauthorized",
        ]), [("registered", 200, None),
             ("incoming", None, "sip:bob@example.com"),
             ("established", None, "sip:bob@example.com"),
             ("ended", None, "sip:bob@example.com"),
             ("message", None, "sip:bob@example.com"),
             ("registrationFailed", 401, None)])
        self.assertEqual(phone.events[-2].detail, "hello carol")
