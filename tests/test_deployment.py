"""
The design's figures as they run in production, on separate hosts made of
Linux network namespaces (L{tests.netns}): each figure of
L{tests.deployments} gets its networks (a bridge each), its hosts (a
namespace each), its firewall (nftables in the router between the
networks), its name server (L{twisted.names}, serving NAPTR/SRV/A for the
domain), its servers (C{twistd sipdist} processes) and two clients
(C{sipdist register --answer} for bob, C{sipdist call} for alice) started
with an address-of-record alone: they find the first server through RFC
3263 with the name server of their host's resolv.conf.

Each test prints what it started and what it checked.  Needs root, C{ip}
and C{nft}: skipped otherwise, failed under C{CI=true}.  Each test builds
and removes its own lab, even when it fails.
"""

import hashlib
import json
import os
import subprocess
import sys
import time
import uuid

from twisted.trial.unittest import SynchronousTestCase

from tests import deployments
from tests.deployments import DOMAIN, INSIDE_PORT, PORT
from tests.netns import TAG_PREFIX, Lab, removeStale, requireNetns, requireNft
from tests.test_startup import NO_WARMUP

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SECRET = "pool-secret-for-the-deployment-lab-0123456789"
PASSWORDS = {"alice": "alice-in-the-lab", "bob": "bob-in-the-lab"}
# Bounds of every wait (not timing assertions).
START_WAIT = 30.0
CLIENT_WAIT = 30.0

_TWISTD = ("import sys; sys.path.insert(0, {root!r}); "
           "from twisted.scripts.twistd import run; "
           "sys.argv = ['twistd'] + sys.argv[1:]; run()")
_SIPDIST = ("import sys; sys.path.insert(0, {root!r}); "
            "from sipdist.commands.main import main; main()")


def options(uri, via):
    """
    An OPTIONS request to C{uri} as a probe sends it from C{via} (text).
    """
    return "\r\n".join([
        f"OPTIONS {uri} SIP/2.0",
        f"Via: SIP/2.0/UDP {via}:5999;branch=z9hG4bK{uuid.uuid4().hex[:16]};"
        "rport",
        "Max-Forwards: 70",
        f"From: <sip:probe@{DOMAIN}>;tag={uuid.uuid4().hex[:8]}",
        f"To: <{uri}>",
        f"Call-ID: {uuid.uuid4().hex}",
        "CSeq: 1 OPTIONS",
        "Content-Length: 0", "", ""])


def status(message):
    first = message.split("\r\n", 1)[0].split()
    return int(first[1]) if first and first[0].startswith("SIP/") else None


def headerLines(message):
    """
    C{(name, line)} of each header line of C{message} (name lower case),
    the start line as C{("start", line)}.
    """
    head = message.split("\r\n\r\n", 1)[0].split("\r\n")
    result = [("start", head[0])]
    for line in head[1:]:
        name = line.partition(":")[0].strip().lower()
        result.append((name, line))
    return result


def body(message):
    return message.split("\r\n\r\n", 1)[1] if "\r\n\r\n" in message else ""


class DeploymentLab:
    """
    A figure of L{tests.deployments} built and started.
    """

    def __init__(self, testCase, figure):
        requireNetns()
        requireNft()
        self.figure = figure
        self.lab = lab = Lab(testCase)
        self.say(f"--- Figure {figure.number}: {figure.title}")
        for name, prefix, _ in figure.networks:
            lab.network(name, prefix)
        for name, addresses, _ in figure.hosts:
            lab.host(name, **{n: [a] for n, a in addresses.items()})
        self.say("hosts: " + ", ".join(
            f"{name} ({' '.join(a.values())})"
            for name, a, _ in figure.hosts))
        lab.firewall("hub", figure.firewall)
        self.say("router firewall loaded (nft): policy drop, "
                 f"{figure.firewall.count('accept')} accept rules")
        self.etc = lab.tmp
        self._write("assignments.conf", figure.storeText())
        self._write("credentials", "".join(
            f"{user}:{DOMAIN}:{self._ha1('md5', user)}:"
            f"{self._ha1('sha256', user)}\n" for user in PASSWORDS))
        self._write("secret", SECRET)
        for user, password in PASSWORDS.items():
            self._write(f"{user}.password", password + "\n")
        dns = figure.address("dns")
        lab.nameServer("dns", dns, figure.records)
        for client in ("alice", "bob"):
            lab.resolvConf(client, dns)
        self.say(f"name server on {dns}:53 ({len(figure.records)} records "
                 f"of {DOMAIN}); alice's and bob's resolv.conf point at it")
        self.servers = {}
        for name, host, args in figure.servers:
            args = [a.replace("{etc}", self.etc) for a in args]
            argv = [sys.executable, "-c", _TWISTD.format(root=ROOT), "-n",
                    "--pidfile=", "--logfile=-", "sipdist", NO_WARMUP,
                    "--log-format=json", f"--domain={DOMAIN}",
                    f"--secret-file={os.path.join(self.etc, 'secret')}"]
            self.servers[name] = lab.spawn(host, argv + args, name=name,
                                           cwd=ROOT)
        for name, host, args in figure.servers:
            self.waitForServer(name, host)
        self.say("servers answering OPTIONS: " + ", ".join(
            f"{name} on {host}" for name, host, _ in figure.servers))

    def say(self, line):
        sys.stdout.write(f"[figure {self.figure.number}] {line}\n")
        sys.stdout.flush()

    def _write(self, name, text):
        with open(os.path.join(self.etc, name), "w") as f:
            f.write(text)

    def _ha1(self, algorithm, user):
        text = f"{user}:{DOMAIN}:{PASSWORDS[user]}".encode("utf-8")
        return hashlib.new(algorithm, text).hexdigest()

    def probe(self, source, address, transport="udp", wait=1.0, port=PORT):
        """
        The answers to an OPTIONS sent from host C{source} to
        C{address}:C{port}.
        """
        return self.lab.send(source, transport, (address, port),
                             options(f"sip:{address}:{port}",
                                     self.figure.address(source)),
                             wait=wait)

    def decisions(self, server):
        """
        The distribution decisions server C{server} logged (its JSON log
        events): C{(method, outcome, server chosen)} in order.
        """
        found = []
        for record in self.servers[server].output().split("\x1e"):
            try:
                event = json.loads(record)
            except ValueError:
                continue
            if isinstance(event, dict) and event.get("decision"):
                found.append((event.get("method"), event.get("outcome"),
                              event.get("chosen")))
        return found

    def waitForServer(self, name, host):
        """
        Wait (bounded) until server C{name} answers an OPTIONS sent from
        its own host.
        """
        address = self.figure.address(host)
        deadline = time.monotonic() + START_WAIT
        while time.monotonic() < deadline:
            process = self.servers[name]
            if process.popen.poll() is not None:
                raise RuntimeError(f"{name} exited: {process.output()}")
            if any(status(a) == 200
                   for a in self.probe(host, address, wait=0.5)):
                return
        raise RuntimeError(f"{name} does not answer: "
                           f"{self.servers[name].output()}")

    def client(self, user, command, *args):
        """
        Start C{sipdist COMMAND USER@DOMAIN ARGS} on the host named after
        the user.
        """
        argv = [sys.executable, "-c", _SIPDIST.format(root=ROOT), command,
                f"{user}@{DOMAIN}", *args,
                f"--password-file={os.path.join(self.etc, user + '.password')}",
                "--t1=0.1", "--trace"]
        return self.lab.spawn(user, argv, name=f"{user}-{command}", cwd=ROOT)

    def waitOutput(self, process, text, timeout=CLIENT_WAIT):
        """
        Wait (bounded) until C{process} has printed C{text}.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in process.output():
                return
            if process.popen.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"no {text!r} from {process.popen.args[3:]}:\n"
                             f"{process.output()}")

    def waitExit(self, process, timeout=CLIENT_WAIT):
        process.popen.wait(timeout)
        return process.popen.returncode

    def callBob(self, testCase):
        """
        bob registers (and answers calls); alice calls him.

        @return: C{(bob's output, alice's output)}.
        """
        bob = self.client("bob", "register", "--answer", "--duration=60")
        self.waitOutput(bob, "registered;")
        self.say("bob: sipdist register bob@example.com --answer "
                 "(no --server): registered")
        alice = self.client("alice", "call", "bob@example.com", "--hold=0.2")
        code = self.waitExit(alice)
        aliceOut = alice.output()
        testCase.assertEqual(code, 0, aliceOut)
        testCase.assertIn("call established (200", aliceOut)
        testCase.assertIn("BYE: 200", aliceOut)
        self.say("alice: sipdist call alice@example.com bob@example.com "
                 "(no --server): call established, BYE 200, exit 0")
        self.waitOutput(bob, "incoming call from")
        bob.stop()
        bobOut = bob.output()
        self.say("bob answered the call")
        return bobOut, aliceOut

    def checkDiscovery(self, testCase, outputs, name):
        """
        Both clients found C{name} through DNS.
        """
        for output in outputs:
            testCase.assertIn(f"{name}.{DOMAIN}", output)
        self.say(f"both clients discovered {name}.{DOMAIN} by NAPTR/SRV/A")

    def checkFirewall(self, testCase, outside, inside, reachedFrom,
                      port=PORT, transports=("udp", "tcp")):
        """
        An OPTIONS from host C{outside} straight to C{inside}:C{port} (an
        address of the pool) gets no answer over any of C{transports},
        while the same from C{reachedFrom} gets one (the server is there).
        """
        for transport in transports:
            testCase.assertEqual(
                self.probe(outside, inside, transport, port=port), [])
        answers = self.probe(reachedFrom, inside, transports[-1], port=port)
        codes = [status(a) for a in answers]
        testCase.assertEqual(len(codes), 1, answers)
        self.say(f"firewall: OPTIONS from {outside} to {inside}:{port} "
                 f"({' and '.join(t.upper() for t in transports)}) gets no "
                 f"answer; from {reachedFrom}: {codes[0]}")


# Where an address of the pool may appear in a message the edge sends out
# (docs/deployment.rst): header names, compact forms included.
POOL_ADDRESS_HEADERS = {"via", "v", "record-route"}


class EdgeFigureMixin:
    """
    The checks of a figure with an edge: calls, the client's own
    connection, the firewall, what leaves the edge.
    """

    figure = None
    edgeFirst = None

    def test_callThroughEdge(self):
        """
        bob and alice, started from the domain alone, find the edge by DNS;
        alice's call reaches bob over the TCP connection bob registered
        on; no address of the pool appears in what the edge sends outside
        but in Via, Record-Route and Path; a packet from outside straight
        to a home gets no answer.
        """
        d = DeploymentLab(self, self.figure)
        outside = d.lab.capture("edge", "eth0")
        inside = d.lab.capture("edge", "eth1")
        bobOut, aliceOut = d.callBob(self)
        d.checkDiscovery(self, (bobOut, aliceOut), "edge")
        self.checkOwnConnection(d, outside)
        self.checkLeaks(d, outside)
        self.checkInside(d, inside)
        d.checkFirewall(self, "alice", self.figure.address("home1"), "edge")
        d.checkFirewall(self, "alice", self.figure.address("edge", "pool"),
                        "home1", port=INSIDE_PORT, transports=("tcp",))
        self.checkDecisions(d)

    def checkDecisions(self, d):
        """
        What the servers inside decided (each figure says).
        """
        raise NotImplementedError()

    def checkOwnConnection(self, d, capture):
        """
        Every INVITE the edge sent to bob went over TCP to the address and
        port bob's REGISTERs came from: his own connection.
        """
        bob = self.figure.address("bob")
        registers = [f for f, m in capture.messages(outgoing=False)
                     if m.startswith("REGISTER ") and f.src[0] == bob]
        self.assertTrue(registers)
        self.assertEqual({f.proto for f in registers}, {"tcp"})
        invites = [f for f, m in capture.messages()
                   if m.startswith("INVITE ") and f.dst[0] == bob]
        self.assertTrue(invites, "no INVITE sent to bob")
        self.assertEqual({(f.proto, f.dst) for f in invites},
                         {("tcp", registers[-1].src)})
        d.say(f"capture of the edge's outside: the INVITE reached bob over "
              f"the TCP connection he registered on "
              f"({registers[-1].src[0]}:{registers[-1].src[1]})")

    def checkLeaks(self, d, capture):
        """
        The pool's addresses appear in what the edge sends outside only in
        the header fields of L{POOL_ADDRESS_HEADERS}: not in a start line,
        another header field or a body.
        """
        pool = dict((n, p) for n, p, _ in self.figure.networks)["pool"] + "."
        sent = capture.messages()
        self.assertTrue(sent)
        found = {}
        for frame, message in sent:
            for name, line in headerLines(message):
                if pool in line:
                    found.setdefault(name, set()).add(
                        message.split(" ", 1)[0] if name != "start" else line)
            if pool in body(message):
                found.setdefault("body", set()).add(message.split("\r\n")[0])
        leaks = {n: w for n, w in found.items()
                 if n not in POOL_ADDRESS_HEADERS}
        self.assertEqual(leaks, {}, f"pool addresses outside: {leaks}")
        self.assertTrue(found.keys() & POOL_ADDRESS_HEADERS)
        d.say(f"capture of the edge's outside: {len(sent)} messages sent, "
              f"pool addresses ({pool}0/24) only in "
              f"{', '.join(sorted(found))}")

    def checkInside(self, d, capture):
        """
        The edge sent requests inside only to its next hops.
        """
        hops = {self.figure.address(h) for h in self.edgeFirst}
        sentTo = {f.dst[0] for f, m in capture.messages()
                  if not m.startswith("SIP/2.0")}
        self.assertTrue(sentTo)
        self.assertLessEqual(sentTo, hops)
        d.say(f"capture of the edge's inside: requests went to "
              f"{', '.join(sorted(sentTo))} only")


class Figure8Tests(EdgeFigureMixin, SynchronousTestCase):
    """
    Figure 8: client -> edge -> home, on separate hosts.
    """

    figure = deployments.FIGURE8
    edgeFirst = ("home1", "home2")

    def checkDecisions(self, d):
        """
        Whichever home the edge chose, each user's REGISTER was served by
        the user's home (proxied there by the other home if need be).
        """
        decisions = d.decisions("home1") + d.decisions("home2")
        self.assertIn(("REGISTER", "serve", "home1"), decisions)
        self.assertIn(("REGISTER", "serve", "home2"), decisions)
        self.assertNotIn("redirect", {o for _, o, _ in decisions})
        proxied = sorted({c for _, o, c in decisions if o == "proxy"})
        d.say(f"homes' logs: alice's REGISTER served by home1, bob's by "
              f"home2, no redirect; proxied between homes to: "
              f"{', '.join(proxied) or 'none'}")


class Figure10Tests(EdgeFigureMixin, SynchronousTestCase):
    """
    Figure 10: client -> edge -> internal edge -> home, on separate hosts.
    """

    figure = deployments.FIGURE10
    edgeFirst = ("internal",)

    def checkDecisions(self, d):
        """
        The internal edge proxied every request (two Via values) to the
        user's home: bob's and alice's REGISTERs, alice's INVITE.
        """
        decisions = d.decisions("internal")
        self.assertIn(("REGISTER", "proxy", "home2"), decisions)
        self.assertIn(("REGISTER", "proxy", "home1"), decisions)
        self.assertIn(("INVITE", "proxy", "home1"), decisions)
        self.assertEqual({o for _, o, _ in decisions}, {"proxy"})
        d.say(f"internal edge's log: {len(decisions)} decisions, all "
              f"proxy (REGISTER of bob to home2, of alice and her INVITE "
              f"to home1)")


class Figure1Tests(SynchronousTestCase):
    """
    Figure 1: client -> distributor -> (redirect) home, on separate hosts.
    """

    def test_redirectedToHome(self):
        """
        bob and alice find the distributor by DNS, are redirected each to
        their home, and alice's call reaches bob through the homes.
        """
        figure = deployments.FIGURE1
        d = DeploymentLab(self, figure)
        bobOut, aliceOut = d.callBob(self)
        d.checkDiscovery(self, (bobOut, aliceOut), "sip")
        for user, output in (("bob", bobOut), ("alice", aliceOut)):
            home = figure.address(deployments.USERS[user])
            redirects = [line for line in output.splitlines()
                         if "redirect" in line.lower()
                         and f"{home}:{PORT}" in line]
            self.assertTrue(redirects, output)
            d.say(f"{user} redirected by the distributor to "
                  f"{deployments.USERS[user]} ({home}:{PORT})")
        decisions = d.decisions("distributor")
        self.assertEqual(sorted(d for d in decisions if d[0] == "REGISTER"),
                         [("REGISTER", "redirect", "home1"),
                          ("REGISTER", "redirect", "home2")])
        d.say("distributor's log: REGISTER redirected to home1 (alice) and "
              "home2 (bob), nothing proxied")


class Figure12Tests(SynchronousTestCase):
    """
    Figure 12: client -> forward proxy -> distributor, on separate hosts.
    """

    def test_proxiedByDistributor(self):
        """
        The clients' site lets nothing out but the forward proxy; the
        clients find it by DNS, the distributor proxies their requests
        (two Via values) instead of redirecting them, and alice's call
        reaches bob.
        """
        figure = deployments.FIGURE12
        d = DeploymentLab(self, figure)
        bobOut, aliceOut = d.callBob(self)
        d.checkDiscovery(self, (bobOut, aliceOut), "proxy")
        decisions = d.decisions("distributor")
        self.assertIn(("REGISTER", "proxy", "home2"), decisions)
        self.assertIn(("REGISTER", "proxy", "home1"), decisions)
        self.assertEqual({o for _, o, _ in decisions}, {"proxy"})
        d.say(f"distributor's log: {len(decisions)} decisions, all proxy "
              "(two Via values), none redirect")
        d.checkFirewall(self, "alice", figure.address("distributor"),
                        "proxy")


class StaleTests(SynchronousTestCase):
    """
    A lab removes the namespaces a crashed earlier run left behind.
    """

    def test_removeStale(self):
        """
        A namespace named for a process that is gone is removed; one named
        for a running process is left alone.
        """
        requireNetns()
        gone = subprocess.Popen(["true"])
        gone.wait()
        stale = f"{TAG_PREFIX}{gone.pid}x0-hub"
        live = f"{TAG_PREFIX}{os.getpid()}x999-hub"
        for name in (stale, live):
            subprocess.run(["ip", "netns", "add", name], check=True)
            self.addCleanup(subprocess.run, ["ip", "netns", "del", name],
                            capture_output=True)
        removed = removeStale()
        self.assertIn(stale, removed)
        self.assertNotIn(live, removed)
        listing = subprocess.run(["ip", "netns", "list"], capture_output=True,
                                 text=True).stdout
        self.assertNotIn(stale, listing)
        self.assertIn(live, listing)


    def test_closeRemovesEverything(self):
        """
        Closing a lab removes its namespaces, its C{/etc/netns} files and
        its processes (a capture, a name server), firewall and all.
        """
        requireNetns()
        requireNft()
        lab = Lab()
        self.addCleanup(lab.close)
        lab.network("net", "10.200.9")
        ns = lab.host("host", net=["10.200.9.1"])
        lab.firewall("hub", "table inet t { chain c { type filter hook "
                            "forward priority filter; policy drop; }; }")
        lab.resolvConf("host", "10.200.9.1")
        capture = lab.capture("host", "eth0")
        server = lab.nameServer("host", "10.200.9.1", deployments._zone(
            "sip", "10.200.9.1", "sip"))
        lab.close()
        listing = subprocess.run(["ip", "netns", "list"], capture_output=True,
                                 text=True).stdout
        self.assertNotIn(lab.tag, listing)
        self.assertFalse(os.path.exists(os.path.join("/etc/netns", ns)))
        self.assertIsNotNone(capture.popen.poll())
        self.assertIsNotNone(server.popen.poll())


class DocumentTests(SynchronousTestCase):
    """
    docs/deployment.rst is what the harness builds.
    """

    def test_upToDate(self):
        """
        The file is L{deployments.render}'s output: regenerate it with
        C{python -m tests.deployments > docs/deployment.rst}.
        """
        with open(os.path.join(ROOT, "docs", "deployment.rst")) as f:
            self.assertEqual(f.read(), deployments.render())

    def test_rulesAndRecords(self):
        """
        Every edge figure's firewall publishes the edge's outside address
        only, and the name server names the first server of the figure.
        """
        for figure in (deployments.FIGURE8, deployments.FIGURE10):
            self.assertIn(f"ip daddr {figure.address('edge', 'dmz')} ",
                          figure.firewall)
            self.assertNotIn(figure.address("home1"), figure.firewall)
            [a] = [r for r in figure.records if r[1] == "A"]
            self.assertEqual(a[2], [figure.address("edge", "dmz")])
