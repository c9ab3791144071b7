# -*- test-case-name: tests.test_client_cli -*-
"""
C{sipdist register}, C{sipdist call} and C{sipdist message}: the client
library on the command line.

Each command logs in the way the library does (discovery or C{--server},
TLS checked against C{--ca}, Digest, redirects), printing every step as it
happens: which servers were found, which one is tried, the challenge, each
redirect and where to, and the server that registered the user.  C{--trace}
adds the messages as a ladder (L{sipdist.client.ladder}).  A failure is one
line (C{sipdist register: why}) and exit status 1.

  - C{register AOR} stays registered (refreshing, logging in again when
    the home changes or stops answering) until interrupted (SIGINT,
    SIGTERM) or C{--duration} seconds have passed; then it unregisters and
    exits 0.  Incoming MESSAGEs are printed; with C{--answer} incoming calls
    are answered.
  - C{call AOR TARGET} logs in, calls C{TARGET} (INVITE with a static SDP,
    ACK), hangs up (BYE) after C{--hold} seconds, unregisters.
  - C{message AOR TARGET TEXT} logs in, sends a MESSAGE, unregisters.

The password is read from C{--password-file} (its first line) or standard
input (asked without echo on a terminal, the first line otherwise).
"""

import getpass
import signal
import sys

from twisted.internet import defer, task
from twisted.python import usage

from sipdist.commands.main import CommandError, OptionsAnywhere
from sipdist.client.core import UserAgent, asInstance
from sipdist.client.events import ClientError
from sipdist.client.discovery import DiscoveryError, ServerLocator, asURI
from sipdist.client.dialog import STATIC_SDP, CallFailed
from sipdist.client.ladder import Ladder
from sipdist.client.login import LoginFailed, Registration
from sipdist.sip.tls import TLSConfigError, loadCertificates
from sipdist.sip.uri import URIError, normaliseAOR

MAX_DURATION = 10 * 365 * 86400


def readPassword(path, stdin=None):
    """
    The password: the first line of C{path}, or of standard input.

    @raise usage.UsageError: if it cannot be read or is empty.
    """
    if path is not None:
        try:
            with open(path, encoding="utf-8") as f:
                line = f.readline()
        except OSError as e:
            raise usage.UsageError(
                f"--password-file: {path}: {e.strerror}") from None
    else:
        stdin = sys.stdin if stdin is None else stdin
        if stdin.isatty():
            line = getpass.getpass("password: ")
        else:
            line = stdin.readline()
    password = line.rstrip("\r\n")
    if not password:
        raise usage.UsageError("empty password")
    return password


class _LazyResolver:
    """
    Builds the resolver on the first lookup: a command given C{--server}
    with an address never reads /etc/resolv.conf nor starts its timer.
    """

    def __init__(self, build):
        self._build = build
        self._resolver = None

    def __getattr__(self, name):
        if not name.startswith("lookup"):
            raise AttributeError(name)
        if self._resolver is None:
            self._resolver = self._build()
        return getattr(self._resolver, name)


def makeResolver(reactor, dns=None):
    """
    The DNS resolver: the name server C{dns} (C{HOST:PORT}) alone, or the
    hosts file then the servers of /etc/resolv.conf; built when first used.
    """
    return _LazyResolver(lambda: _buildResolver(reactor, dns))


def _buildResolver(reactor, dns):
    from twisted.names import client, hosts, resolve
    if dns is not None:
        host, _, port = dns.rpartition(":")
        if not host or not port.isdigit():
            host, port = dns, "53"
        return client.Resolver(servers=[(host.strip("[]"), int(port))],
                               reactor=reactor)
    return resolve.ResolverChain([
        hosts.Resolver(b"/etc/hosts"),
        client.Resolver(resolv="/etc/resolv.conf", reactor=reactor)])


class _ClientOptions(OptionsAnywhere):
    optParameters = [
        ["password-file", "p", None,
         "File whose first line is the password (default: standard input)."],
        ["server", "s", None,
         "Server to start from (outbound proxy), as a SIP URI: "
         "sip:127.0.0.1:5060, sips:proxy.example.com, "
         "sip:10.0.0.1:5060;transport=tcp.  Default: discovery (RFC 3263) "
         "from the domain of AOR."],
        ["ca", None, None,
         "PEM file of the CA that issues the servers' TLS certificates "
         "(default: the system's CAs)."],
        ["expires", "e", 3600, "Registration lifetime to ask for, in seconds.",
         int],
        ["dns", None, None,
         "Name server to use for discovery, HOST:PORT (default: "
         "/etc/resolv.conf)."],
        ["listen", None, "udp:0", "Where the client's UDP port listens."],
        ["user", "u", None, "Digest user name (default: the user of AOR)."],
        ["t1", None, 0.5, "SIP timer T1 in seconds (timeouts are 64*T1).",
         float],
        ["instance", None, None,
         "RFC 5626 instance id of this device, a UUID (default: derived "
         "from AOR and this host's name; two clients of one account on one "
         "host need distinct ones)."],
    ]
    optFlags = [
        ["trace", "t", "Print the message flow as a ladder."],
    ]

    _stdin = None
    _stdout = None

    def parseArgs(self, aor, *rest):
        try:
            self["aor"] = normaliseAOR(aor)
        except URIError as e:
            raise usage.UsageError(f"AOR: {e}") from None
        self.parseRest(*rest)

    def parseRest(self):
        pass

    def postOptions(self):
        if not 0 <= self["expires"] <= 86400 * 7:
            raise usage.UsageError("--expires must be between 0 and 604800")
        if not 0.01 <= self["t1"] <= 10:
            raise usage.UsageError("--t1 must be between 0.01 and 10")
        if self["server"] is not None:
            try:
                asURI(self["server"])
            except DiscoveryError as e:
                raise usage.UsageError(f"--server: {e}") from None
        if self["instance"] is not None:
            try:
                asInstance(self["instance"])
            except ValueError:
                raise usage.UsageError(
                    f"--instance: {self['instance']!r} is not a UUID") \
                    from None
        if self["ca"] is not None:
            try:
                loadCertificates(self["ca"], "CA certificate")
            except TLSConfigError as e:
                raise usage.UsageError(f"--ca: {e}") from None

    def print(self, line):
        out = self._stdout or sys.stdout
        out.write(f"{line}\n")
        out.flush()

    def _agent(self, reactor):
        password = readPassword(self["password-file"], self._stdin)
        tracer = Ladder(self.print) if self["trace"] else None
        ua = UserAgent(
            reactor, self["aor"], password, username=self["user"],
            caCertificates=[self["ca"]] if self["ca"] else None,
            listen=self["listen"], T1=self["t1"], tracer=tracer,
            observer=lambda event: self.print(str(event)),
            instance=self["instance"])
        locator = ServerLocator(makeResolver(reactor, self["dns"]))
        registration = Registration(ua, locator, server=self["server"],
                                    expires=self["expires"],
                                    watchRegistration=bool(self.get("watch")))
        return ua, registration

    @defer.inlineCallbacks
    def _login(self, reactor):
        ua, registration = self._agent(reactor)
        try:
            yield ua.start()
        except Exception as e:
            raise CommandError(f"cannot listen on {self['listen']}: {e}")
        try:
            yield registration.start()
        except (LoginFailed, ClientError) as e:
            yield ua.stop()
            raise CommandError(str(e)) from None
        return ua, registration

    @defer.inlineCallbacks
    def _logout(self, ua, registration):
        yield registration.stop()
        yield ua.stop()


class RegisterOptions(_ClientOptions):
    synopsis = "Usage: sipdist register [options] AOR"

    longdesc = ("Register AOR (user@domain) and stay registered until "
                "interrupted, printing each step.  The password comes from "
                "--password-file or standard input.")

    optParameters = [
        ["duration", None, None,
         "Unregister and exit after this many seconds (default: run until "
         "interrupted).", float],
    ]
    optFlags = [
        ["answer", None, "Answer incoming calls (no media)."],
        ["watch", "w", "Watch the registration (reg event, RFC 3680): when "
         "the home server says we were moved, log in again at once."],
    ]

    @defer.inlineCallbacks
    def run(self, reactor):
        ua, registration = yield self._login(reactor)
        done = defer.Deferred()
        ua.onMessage = lambda request: self.print(
            f"MESSAGE from {request.header('from')}: "
            f"{request.body.decode('utf-8', 'replace')}")
        if self["answer"]:
            def answer(call):
                self.print(f"incoming call from {call.caller}: answering")
                call.answer()
            ua.onInvite = answer

        def finish(reason):
            if not done.called:
                done.callback(reason)

        registration.failed.addErrback(
            lambda f: finish(f.value))
        previous = {}
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous[signum] = signal.signal(
                signum, lambda *a: reactor.callFromThread(
                    finish, "interrupted"))
        timer = None
        if self["duration"] is not None:
            duration = min(max(self["duration"], 0), MAX_DURATION)
            timer = reactor.callLater(duration, finish, "time is up")
        self.print("registered; interrupt (Ctrl-C) to unregister and exit")
        try:
            reason = yield done
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            if timer is not None and timer.active():
                timer.cancel()
        if isinstance(reason, Exception):
            yield ua.stop()
            raise CommandError(f"registration lost: {reason}")
        self.print(f"{reason}: unregistering")
        yield self._logout(ua, registration)
        return 0


class CallOptions(_ClientOptions):
    synopsis = "Usage: sipdist call [options] AOR TARGET"

    longdesc = ("Log in as AOR, call TARGET (INVITE with a static SDP, no "
                "media), hang up after --hold seconds.")

    optParameters = [
        ["hold", None, 1.0, "Seconds to stay in the call.", float],
    ]
    optFlags = [
        ["no-sdp", None, "Send the INVITE without a body."],
    ]

    def parseRest(self, target=None):
        if target is None:
            raise usage.UsageError("a TARGET to call is needed")
        try:
            self["target"] = normaliseAOR(target)
        except URIError as e:
            raise usage.UsageError(f"TARGET: {e}") from None

    @defer.inlineCallbacks
    def run(self, reactor):
        ua, registration = yield self._login(reactor)
        try:
            self.print(f"calling {self['target']}")
            call = ua.call(self["target"],
                           None if self["no-sdp"] else STATIC_SDP)
            try:
                yield call.deferred
            except CallFailed as e:
                raise CommandError(str(e)) from None
            self.print(f"call established ({call.response.code} "
                       f"{call.response.phrase}); hanging up in "
                       f"{self['hold']} s")
            yield task.deferLater(reactor, min(max(self["hold"], 0), 3600),
                                  lambda: None)
            response = yield call.hangup()
            if response is not None:
                self.print(f"BYE: {response.code} {response.phrase}")
        finally:
            yield self._logout(ua, registration)
        return 0


class MessageOptions(_ClientOptions):
    synopsis = "Usage: sipdist message [options] AOR TARGET TEXT"

    longdesc = "Log in as AOR and send TEXT to TARGET in a SIP MESSAGE."

    def parseRest(self, target=None, *text):
        if target is None or not text:
            raise usage.UsageError("a TARGET and a TEXT are needed")
        try:
            self["target"] = normaliseAOR(target)
        except URIError as e:
            raise usage.UsageError(f"TARGET: {e}") from None
        self["text"] = " ".join(text)

    @defer.inlineCallbacks
    def run(self, reactor):
        ua, registration = yield self._login(reactor)
        try:
            try:
                response = yield ua.message(self["target"], self["text"])
            except ClientError as e:
                raise CommandError(str(e)) from None
            self.print(f"MESSAGE to {self['target']}: {response.code} "
                       f"{response.phrase}")
            if not 200 <= response.code < 300:
                raise CommandError(f"MESSAGE refused: {response.code} "
                                   f"{response.phrase}")
        finally:
            yield self._logout(ua, registration)
        return 0


commands = [
    ("register", RegisterOptions,
     "Register a user and stay registered, printing each step."),
    ("call", CallOptions, "Log in and place a call (no media)."),
    ("message", MessageOptions, "Log in and send a SIP MESSAGE."),
]
