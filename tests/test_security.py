"""
The attacks of the issue "Close the open relay and the ways in", over real
sockets between Linux network namespaces (L{tests.netns}): the servers run
as C{twistd sipdist} processes inside the lab, the attacker sends from a
host outside, and a sink host counts every byte that reaches it.

The lab::

    outside 10.200.1.10 ---+                +--- pool: home1 10.200.2.3
    sink    10.200.1.20 ---+-- out   in ----+          home2 10.200.2.4
    edge    10.200.1.2  ---+   (hub routes) +--- edge  10.200.2.2
                                            +--- sink  10.200.2.20

Both homes are started with C{--trusted-peer=10.200.2.0/24} (the pool's
network), the edge with both homes as next hops; all share the pool secret.

  1. B{Open relay}: a request without credentials whose Route names the
     edge (or a home) and then a foreign host, with a To tag or not, over
     UDP and TCP, must not reach the sink (on the outside network or the
     inside one); it is challenged (C{407}) or refused.
  2. B{Forged identity through a trusted peer}: a MESSAGE "from alice" sent
     by an outsider to home1 with C{Route: <home1>, <home2>} must not reach
     bob (C{407}); alice's own authenticated MESSAGE does.
  3. B{A real dialog's route set}: mallory (a user) calls bob through both
     homes; the BYE along the sealed route set reaches bob, the same with
     the sink added after it, or the sink as Request-URI, reaches nobody.

Needs root and C{ip} (iproute2): skipped otherwise, failed under
C{CI=true}.  Each test builds and removes its own lab.
"""

import os
import sys
import time
import uuid

from twisted.trial.unittest import SynchronousTestCase

from sipdist.auth.client import answerChallenge
from tests.netns import Lab, requireNetns
from tests.test_startup import NO_WARMUP

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PASSWORD = "wonderland"
SECRET = "pool-secret-for-the-security-lab-0123456789"
PORT = 5160
EDGE_OUT = "10.200.1.2"
EDGE_IN = "10.200.2.2"
HOME1 = "10.200.2.3"
HOME2 = "10.200.2.4"
OUTSIDE = "10.200.1.10"
SINK_OUT = "10.200.1.20"
SINK_IN = "10.200.2.20"
SINK_PORT = 5999
BOB_PORT = 6000
# How long a relayed request would need to reach the sink, at most: the
# test waits this long after the answer before counting (a bound, not a
# timing assertion).
GRACE = 1.0

_TWISTD = ("import sys; sys.path.insert(0, {root!r}); "
           "from twisted.scripts.twistd import run; "
           "sys.argv = ['twistd'] + sys.argv[1:]; run()")


def sipMessage(method, uri, routes=(), fromUser="mallory", toUser="bob",
               toTag=None, via=(OUTSIDE, 5062), transport="UDP", extra=(),
               body="", callId=None, contact=None, cseq=1, fromTag=None,
               requestURI=None):
    """
    A SIP request as an attacker (or a client) writes it.
    """
    branch = "z9hG4bK" + uuid.uuid4().hex[:16]
    lines = [f"{method} {uri} SIP/2.0",
             f"Via: SIP/2.0/{transport} {via[0]}:{via[1]};branch={branch};rport",
             "Max-Forwards: 70"]
    lines += [f"Route: {r}" for r in routes]
    fromTag = fromTag or uuid.uuid4().hex[:8]
    lines += [f"From: <sip:{fromUser}@example.com>;tag={fromTag}",
              f"To: <sip:{toUser}@example.com>"
              + (f";tag={toTag}" if toTag else ""),
              f"Call-ID: {callId or uuid.uuid4().hex}",
              f"CSeq: {cseq} {method}"]
    if contact:
        lines.append(f"Contact: {contact}")
    lines += list(extra)
    if body:
        lines.append("Content-Type: text/plain")
    lines += [f"Content-Length: {len(body.encode('utf-8'))}", "", body]
    return "\r\n".join(lines)


def statusOf(message):
    first = message.split("\r\n", 1)[0].split()
    return int(first[1]) if first[0].startswith("SIP/") else None


def finals(responses):
    return [statusOf(r) for r in responses if (statusOf(r) or 0) >= 200]


def header(message, name):
    """
    The values of header C{name} in a message (text).
    """
    values = []
    for line in message.split("\r\n\r\n", 1)[0].split("\r\n")[1:]:
        key, _, value = line.partition(":")
        if key.strip().lower() == name.lower():
            values.append(value.strip())
    return values


class SecurityLab:
    """
    The lab of the module docstring, its servers started.
    """

    def __init__(self, testCase):
        requireNetns()
        self.lab = lab = Lab(testCase)
        lab.network("out", "10.200.1")
        lab.network("in", "10.200.2")
        lab.host("outside", out=[OUTSIDE])
        lab.host("edge", out=[EDGE_OUT], **{"in": [EDGE_IN]})
        lab.host("pool", **{"in": [HOME1, HOME2]})
        lab.host("sink", out=[SINK_OUT], **{"in": [SINK_IN]})
        self.sinks = [lab.sink("sink", SINK_OUT, SINK_PORT),
                      lab.sink("sink", SINK_IN, SINK_PORT)]
        self.bob = lab.sink("outside", OUTSIDE, BOB_PORT, answer=True)
        etc = lab.tmp
        self.store = os.path.join(etc, "assignments.conf")
        with open(self.store, "w") as f:
            f.write(f"server home1 sip:{HOME1}:{PORT};transport=tcp\n"
                    f"server home2 sip:{HOME2}:{PORT};transport=tcp\n"
                    "user alice@example.com home1\n"
                    "user mallory@example.com home1\n"
                    "user bob@example.com home2\n")
        self.secret = os.path.join(etc, "secret")
        with open(self.secret, "w") as f:
            f.write(SECRET)
        self.servers = {}
        common = ["--domain=example.com", "--t1=0.1",
                  f"--secret-file={self.secret}"]
        for name, address in (("home1", HOME1), ("home2", HOME2)):
            self.start(name, "pool", common + [
                "--role=home", f"--name={name}",
                f"--listen=udp:{PORT}:interface={address}",
                f"--listen=tcp:{PORT}:interface={address}",
                f"--store=file:{self.store}",
                f"--credentials=memory:alice:{PASSWORD},bob:{PASSWORD},"
                f"mallory:{PASSWORD}",
                "--trusted-peer=10.200.2.0/24"])
        self.start("edge", "edge", common + [
            "--role=edge", "--name=edge",
            f"--listen=udp:{PORT}:interface={EDGE_OUT}",
            f"--listen=tcp:{PORT}:interface={EDGE_OUT}",
            f"--inside-listen=udp:{PORT}:interface={EDGE_IN}",
            f"--inside-listen=tcp:{PORT}:interface={EDGE_IN}",
            f"--next-hop=sip:{HOME1}:{PORT};transport=tcp",
            f"--next-hop=sip:{HOME2}:{PORT};transport=tcp",
            "--next-hop-check=0"])
        for name, address in (("home1", HOME1), ("home2", HOME2),
                              ("edge", EDGE_OUT)):
            self.waitFor(name, address)

    def start(self, name, host, args):
        argv = [sys.executable, "-c", _TWISTD.format(root=ROOT), "-n",
                "--pidfile=", "--logfile=-", "sipdist", NO_WARMUP] + args
        self.servers[name] = self.lab.spawn(host, argv, name=name, cwd=ROOT)

    def waitFor(self, name, address, timeout=20.0):
        """
        Wait (bounded) until a server answers an OPTIONS from outside.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            process = self.servers[name]
            if process.popen.poll() is not None:
                raise RuntimeError(f"{name} exited: {process.output()}")
            answers = self.lab.send(
                "outside", "udp", (address, PORT),
                sipMessage("OPTIONS", f"sip:{address}:{PORT}"), wait=0.5)
            if finals(answers):
                return
        raise RuntimeError(f"{name} does not answer: "
                           f"{self.servers[name].output()}")

    def sinkBytes(self):
        return sum(sink.received() for sink in self.sinks)

    def send(self, address, message, transport="udp", wait=3.0):
        return self.lab.send("outside", transport, (address, PORT), message,
                             wait=wait)

    def authenticated(self, address, build, user, password=PASSWORD,
                      transport="udp"):
        """
        Send C{build()} (a request text, built with the given extra
        headers), answer the challenge, send it again.

        @param build: C{build(extra)} returns the request text.
        @return: the final statuses of the second attempt and its
            responses.
        """
        first = self.send(address, build(()), transport)
        [challenge] = [r for r in first if statusOf(r) in (401, 407)]
        if statusOf(challenge) == 401:
            name, answer = "WWW-Authenticate", "Authorization"
        else:
            name, answer = "Proxy-Authenticate", "Proxy-Authorization"
        method, uri = build(()).split(" ", 2)[:2]
        value, _ = answerChallenge(header(challenge, name), method, uri,
                                   user, password)
        second = self.send(address, build([f"{answer}: {value}"]), transport)
        return finals(second), second


class OpenRelayTests(SynchronousTestCase):
    """
    Attack 1: no credentials, a Route through the pool to a foreign host.
    """

    def setUp(self):
        self.pool = SecurityLab(self)

    def assertNotRelayed(self, address, routes, transport="udp",
                         method="INVITE", toTag="t1", uri=None):
        uri = uri or f"sip:victim@{SINK_OUT}:{SINK_PORT}"
        message = sipMessage(method, uri, routes=routes, toTag=toTag,
                             transport=transport.upper())
        answers = self.pool.send(address, message, transport)
        codes = finals(answers)
        self.assertEqual(self.pool.sinkBytes(), 0,
                         f"relayed to the sink: {codes}")
        self.assertTrue(codes, f"no final answer to {routes}")
        for code in codes:
            self.assertIn(code, (403, 404, 407, 481), codes)
        return codes

    def assertSinkUntouched(self):
        """
        After the answers, whatever a server might still relay has GRACE
        seconds to arrive: nothing must have.  Then the sinks are shown to
        be listening (a ping from the pool's network and the edge's is
        counted), so that the zero meant nothing arrived.
        """
        time.sleep(GRACE)
        self.assertEqual(self.pool.sinkBytes(), 0, "relayed to the sink")
        self.pool.lab.send("pool", "udp", (SINK_IN, SINK_PORT), "ping",
                           wait=0.2, expect=0)
        self.pool.lab.send("edge", "tcp", (SINK_OUT, SINK_PORT), "ping",
                           wait=0.2, expect=0)
        deadline = time.monotonic() + 5
        while self.pool.sinkBytes() < 8 and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertEqual(self.pool.sinkBytes(), 8)

    def test_throughTheEdge(self):
        """
        C{Route: <edge>, <home1>, <sip:ANY;lr>} from outside, UDP and TCP,
        in a dialog (To tag) or not, to the outside sink or the inside one;
        and a Route whose host is the sink but which carries C{sd=edge}:
        nothing reaches the sink, every request gets a final answer.
        """
        for sink in (SINK_OUT, SINK_IN):
            for transport in ("udp", "tcp"):
                for toTag in ("t1", None):
                    self.assertNotRelayed(EDGE_OUT, [
                        f"<sip:{EDGE_OUT}:{PORT};lr>",
                        f"<sip:{HOME1}:{PORT};lr>",
                        f"<sip:{sink}:{SINK_PORT};lr>"],
                        transport, toTag=toTag,
                        uri=f"sip:victim@{sink}:{SINK_PORT}")
        self.assertNotRelayed(EDGE_OUT, [
            f"<sip:{SINK_OUT}:{SINK_PORT};lr;sd=edge>"])
        self.assertSinkUntouched()

    def test_straightToTheHomes(self):
        """
        The same sent straight to a home: challenged (407), not relayed;
        so is a Route naming the sink with C{sd=home1}, and one through
        home1 then home2 (the homes relaying for each other).
        """
        for transport in ("udp", "tcp"):
            codes = self.assertNotRelayed(HOME1, [
                f"<sip:{HOME1}:{PORT};lr>",
                f"<sip:{SINK_OUT}:{SINK_PORT};lr>"], transport, toTag=None)
            self.assertEqual(codes, [407])
            self.assertNotRelayed(HOME1, [f"<sip:{HOME1}:{PORT};lr>"],
                                  transport, method="MESSAGE")
        self.assertNotRelayed(HOME1, [
            f"<sip:{SINK_OUT}:{SINK_PORT};lr;sd=home1>"])
        self.assertNotRelayed(HOME1, [
            f"<sip:{HOME1}:{PORT};lr>", f"<sip:{HOME2}:{PORT};lr>",
            f"<sip:{SINK_IN}:{SINK_PORT};lr>"], "tcp")
        self.assertSinkUntouched()


class BobMixin:
    """
    The lab, with bob registered at home2 (his user agent: the answering
    sink at 10.200.1.10:6000).
    """

    def setUp(self):
        self.pool = SecurityLab(self)
        self.registerBob()

    def registerBob(self):
        """
        Bob registers at home2 from his own UDP port (the sink standing for
        his user agent), answering the 401.
        """
        bob = self.pool.bob
        callId = uuid.uuid4().hex

        def register(extra, cseq):
            return sipMessage(
                "REGISTER", "sip:example.com", fromUser="bob", toUser="bob",
                contact=f"<sip:bob@{OUTSIDE}:{BOB_PORT}>", callId=callId,
                via=(OUTSIDE, BOB_PORT), cseq=cseq,
                extra=list(extra) + ["Expires: 600"])

        bob.sendUDP((HOME2, PORT), register((), 1))
        challenge = self.waitForResponse(bob, 401)
        value, _ = answerChallenge(header(challenge, "WWW-Authenticate"),
                                   "REGISTER", "sip:example.com", "bob",
                                   PASSWORD)
        bob.sendUDP((HOME2, PORT), register(
            [f"Authorization: {value}"], 2))
        self.waitForResponse(bob, 200)

    def waitForResponse(self, sink, code, timeout=5.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            data = sink.data().decode("utf-8", "replace")
            for message in data.split("SIP/2.0 ")[1:]:
                if message.startswith(f"{code} "):
                    return "SIP/2.0 " + message
            time.sleep(0.05)
        self.fail(f"no {code} for bob: {sink.data()!r}")

    def messagesToBob(self, method="MESSAGE"):
        data = self.pool.bob.data().decode("utf-8", "replace")
        return [m for m in data.split(f"{method} sip:")[1:]]


class ForgedIdentityTests(BobMixin, SynchronousTestCase):
    """
    Attack 2: an outsider's MESSAGE "from alice" through home1 to home2.
    """

    def test_forgedRefusedAuthenticatedDelivered(self):
        """
        The forged MESSAGE is challenged, and bob gets nothing; the same
        request straight to home2 is challenged too.  Alice's own MESSAGE,
        authenticated at home1, then reaches bob from alice (the same flow,
        legitimately), without the pool's peer signature.
        """
        for address, routes in (
                (HOME1, [f"<sip:{HOME1}:{PORT};lr>",
                         f"<sip:{HOME2}:{PORT};lr>"]),
                (HOME2, [])):
            answers = self.pool.send(address, sipMessage(
                "MESSAGE", "sip:bob@example.com", routes=routes,
                fromUser="alice", body="forged"))
            self.assertIn(finals(answers), ([407], [403]))
        time.sleep(GRACE)
        self.assertEqual(self.messagesToBob(), [])

        callId = uuid.uuid4().hex
        codes, _ = self.pool.authenticated(
            HOME1, lambda extra: sipMessage(
                "MESSAGE", "sip:bob@example.com", fromUser="alice",
                callId=callId, extra=list(extra), body="hello bob"),
            "alice")
        self.assertEqual(codes, [200])
        [message] = self.messagesToBob()
        self.assertIn("sip:alice@example.com", "".join(
            header("MESSAGE sip:" + message, "from")))
        self.assertIn("hello bob", message)
        self.assertNotIn("forged", message)
        self.assertNotIn("sipdist-peer", message.lower())


def tagOf(value):
    for param in value.split(";")[1:]:
        key, _, tag = param.strip().partition("=")
        if key == "tag":
            return tag
    return None


class InDialogTests(BobMixin, SynchronousTestCase):
    """
    A real dialog through home1 and home2 (mallory, a user of the pool,
    calls bob): its in-dialog requests follow the sealed route set over
    real sockets; the same route set with a foreign hop added, or a
    foreign Request-URI, reaches nobody.
    """

    def setUp(self):
        BobMixin.setUp(self)
        self.callId = uuid.uuid4().hex
        tags = []

        def invite(extra):
            tags.append(uuid.uuid4().hex[:8])
            return sipMessage("INVITE", "sip:bob@example.com",
                              fromUser="mallory", callId=self.callId,
                              fromTag=tags[-1], extra=list(extra),
                              contact=f"<sip:mallory@{OUTSIDE}:5062>")

        codes, responses = self.pool.authenticated(HOME1, invite, "mallory")
        self.assertEqual(codes, [200])
        [ok] = [r for r in responses if statusOf(r) == 200]
        self.fromTag = tags[-1]
        self.toTag = tagOf(header(ok, "to")[0])
        recordRoute = []
        for value in header(ok, "record-route"):
            recordRoute += [v.strip() for v in value.split(",")]
        self.routeSet = list(reversed(recordRoute))
        # home1 and home2, each twice (UDP towards mallory and bob, TCP
        # between them: RFC 5658 double record-routing).
        self.assertEqual(len(self.routeSet), 4, recordRoute)
        self.assertIn(f"{HOME1}:{PORT}", self.routeSet[0])
        [contact] = header(ok, "contact")
        self.remoteTarget = contact.strip("<>")

    def bye(self, routes, uri=None, cseq=2):
        message = sipMessage(
            "BYE", uri or self.remoteTarget, routes=routes,
            fromUser="mallory", callId=self.callId, fromTag=self.fromTag,
            toTag=self.toTag, cseq=cseq)
        return finals(self.pool.send(HOME1, message))

    def test_sealedRouteSetOnly(self):
        """
        The dialog's own sealed route set with the sink added after it
        (after both homes, or after home1), or with the Request-URI changed
        to the sink: nothing reaches the sink (nor bob), the request is
        turned away (481: not a dialog of the server that stops it).  The
        BYE with the dialog's route set as it is then reaches bob, through
        both homes, unauthenticated, and his 200 comes back.
        """
        sink = f"<sip:{SINK_OUT}:{SINK_PORT};lr>"
        cseq = 2
        for routes, uri in ((self.routeSet + [sink], None),
                            (self.routeSet[:1] + [sink], None),
                            (self.routeSet[:2] + [sink], None),
                            (self.routeSet,
                             f"sip:victim@{SINK_IN}:{SINK_PORT}")):
            codes = self.bye(routes, uri, cseq)
            cseq += 1
            self.assertTrue(codes)
            self.assertNotIn(200, codes)
        time.sleep(GRACE)
        self.assertEqual(self.pool.sinkBytes(), 0)
        self.assertEqual(self.messagesToBob("BYE"), [])

        self.assertEqual(self.bye(self.routeSet, cseq=cseq), [200])
        self.assertEqual(len(self.messagesToBob("BYE")), 1)
