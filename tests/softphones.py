# -*- test-case-name: tests.test_softphones -*-
"""
Drive real softphones from Debian headless from trial tests: baresip,
linphonec (linphone-cli) and twinkle-console, each in a temporary
directory of its own, with no audio device (signalling only), through
C{reactor.spawnProcess}.

Each softphone is a L{Softphone}: its standard input takes its own console
commands (L{Softphone.dial}, L{Softphone.hangup}, L{Softphone.sendMessage},
L{Softphone.quit}), and each line it prints is parsed into L{Event}s that a
test waits for with L{Softphone.waitFor}, bounded in time:

  - C{registered} (C{code} 200...299), C{registrationFailed} (C{code} when
    the client printed one, else C{None} and the client's reason in
    C{detail});
  - C{incoming} (C{peer} is the caller), C{established}, C{ended}
    (C{detail} says how), C{callFailed};
  - C{message} (C{peer} is the sender, C{detail} the text);
  - C{authorization}: the client answered a Digest challenge, C{detail} is
    the algorithm it used (C{MD5} when the answer names none).

A softphone is killed (C{SIGKILL}) C{lifetime} seconds after it started
whatever happens, L{Softphone.stop} asks it to quit and kills it after a
grace period, and its directory is removed when it has ended.  A missing
binary skips the test (L{tests.interop.requireTool}); under C{CI=true} that
is a failure.

What the installed clients do (Debian 12 packages, checked on the test
machine):

  - baresip 1.0.0 (C{baresip-core}, libre 1.1.0): configured by a
    directory (C{-f DIR}: C{config}, C{accounts}, C{contacts}); no audio
    module is loaded, so calls set up without media.  Commands go to the
    C{stdio} module from a pipe (it says "could not setup terminal" and
    reads anyway), the C{menu} module's long forms C{/dial URI},
    C{/hangup}, C{/quit}; C{/message TEXT} (module C{contact}) goes to the
    current contact, so the peer a baresip may message is given when it
    is made.  It answers Digest only with MD5 and gives the whole
    challenge up ("Register: Function not implemented") as soon as B{any}
    C{WWW-Authenticate}/C{Proxy-Authenticate} field of the response names
    another algorithm, whatever the order: behind a server challenging
    with SHA-256 and MD5 it cannot register.  C{-s} prints every SIP
    message, which is where the C{authorization} events come from.
  - linphonec 5.1.65 (C{linphone-cli}): configured by a linphonerc file
    (C{-c FILE}; it rewrites the file as it runs), C{HOME} in its directory
    (its message database); C{-a} answers calls, commands on standard
    input: C{call URI}, C{terminate}, C{chat URI TEXT}, C{quit}.  With
    C{-d 4} it logs every SIP message and its registration states.  Offered
    SHA-256 and MD5 it answers the first challenge listed: SHA-256 first,
    SHA-256; MD5 first, MD5.  (Once it has registered it writes the
    algorithm into its configuration file and sticks to it.)
  - twinkle-console 1.10.2 (C{twinkle-console}): takes its first argument
    for a profile name, so it runs with none and reads C{~/.twinkle/
    twinkle.cfg} (the account; the outbound proxy as C{HOST:PORT}, with a
    scheme it resolves the domain instead) and C{~/.twinkle/twinkle.sys}
    (ports, devices: ALSA's C{null} device, or it cannot answer); it finds
    no local address on a host without a default route, C{nat_public_ip}
    names loopback.  Commands on standard input: C{call URI}, C{answer},
    C{auto_answer -a on} (sent by L{Twinkle} itself once registered), C{bye},
    C{message URI "TEXT"}, C{quit}.  It answers only the B{last}
    challenge of a response and knows only MD5: SHA-256 then MD5
    registers, MD5 then SHA-256 fails with the 401.
"""

import os
import re
import shutil
import tempfile
from dataclasses import dataclass

from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.protocol import ProcessProtocol

from tests.interop import freePort, freeSIPPort, requireTool

# Events kept per softphone, and characters of its output kept for error
# messages.
MAX_EVENTS = 1000
MAX_OUTPUT = 64 * 1024
MAX_LINE = 16 * 1024

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


@dataclass(frozen=True)
class Event:
    """
    Something a softphone printed.

    @ivar kind: C{registered}, C{registrationFailed}, C{incoming},
        C{established}, C{ended}, C{callFailed}, C{message} or
        C{authorization}.
    @ivar code: the SIP status code it was about, when it printed one.
    @ivar peer: the other party's URI, when it printed one.
    @ivar detail: the rest (reason, message text, digest algorithm).
    """

    kind: str
    code: int = None
    peer: str = None
    detail: str = ""

    def __post_init__(self):
        if self.peer is not None:
            object.__setattr__(self, "peer", peerURI(self.peer))


def peerURI(text):
    """
    The URI a softphone printed for the other party without angle brackets
    and URI parameters (C{<sip:bob@example.com;transport=udp>} becomes
    C{sip:bob@example.com}): clients print the remote target or the From
    and To URIs, which differ only there.
    """
    text = text.strip().strip("<>")
    return text.split(";", 1)[0]


class SoftphoneTimeout(Exception):
    """
    The event waited for did not come in time.
    """


class SoftphoneExited(Exception):
    """
    The softphone ended while a test waited for an event.
    """


def _authorizationEvent(line):
    """
    The C{authorization} event of a logged C{Authorization} or
    C{Proxy-Authorization} field, or L{None}.
    """
    match = re.search(r"^\s*(?:Proxy-)?Authorization:\s*Digest\s+(.*)$", line,
                      re.IGNORECASE)
    if match is None:
        return None
    algorithm = re.search(r"\balgorithm=\"?([A-Za-z0-9-]+)", match.group(1))
    return Event("authorization",
                 detail=algorithm.group(1).upper() if algorithm else "MD5")


class Softphone(ProcessProtocol):
    """
    One softphone process.

    @ivar name: a label for messages (e.g. C{"baresip alice"}).
    @ivar events: the L{Event}s parsed so far, in order (at most
        L{MAX_EVENTS}; the oldest go first).
    @ivar ended: a L{Deferred} firing with the exit code (minus the signal
        number) when the process has ended.
    """

    executable = None
    quitCommand = None

    def __init__(self, reactor, name, lifetime=60):
        self._reactor = reactor
        self.name = name
        self.lifetime = lifetime
        self.events = []
        self.exitCode = None
        self.ended = Deferred()
        self._output = ""
        self._partial = b""
        self._waiters = []
        self._timer = None
        self._running = False
        self.workdir = None

    # Starting and stopping

    def start(self):
        """
        Spawn the process (skipping the test when the client is missing).
        """
        path = requireTool(self.executable)
        self.workdir = tempfile.mkdtemp(prefix="softphone-")
        try:
            argv, env = self.prepare(path)
        except BaseException:
            self._removeWorkdir()
            raise
        stdbuf = shutil.which("stdbuf")
        if stdbuf is not None:
            # Their standard output is a pipe, which C's stdio buffers by
            # blocks: the last lines would wait for the next 4 kB.
            argv = [stdbuf, "-oL", "-eL"] + argv
        self._running = True
        self._reactor.spawnProcess(self, argv[0], argv, env=env,
                                   path=self.workdir)
        self._timer = self._reactor.callLater(self.lifetime, self._expired)

    def prepare(self, path):
        """
        Write the configuration into C{self.workdir}.

        @return: C{(argv, env)}.
        """
        raise NotImplementedError()

    def baseEnvironment(self):
        return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                "LANG": "C", "HOME": self.workdir, "TERM": "dumb"}

    def command(self, text):
        """
        Write one console command to the softphone's standard input.
        """
        if self._running:
            self.transport.write(text.encode("utf-8") + b"\n")

    def quit(self):
        self.command(self.quitCommand)

    def _expired(self):
        self._timer = None
        self.kill()

    def kill(self):
        """
        End the process at once (C{SIGKILL}).
        """
        if self._running:
            try:
                self.transport.signalProcess("KILL")
            except Exception:
                pass

    def stop(self, grace=3.0):
        """
        Ask the softphone to quit; kill it if it has not ended after
        C{grace} seconds.

        @return: L{Deferred} firing when it has ended.
        """
        if not self._running:
            return succeed(self.exitCode)
        self.quit()
        timer = self._reactor.callLater(grace, self.kill)

        def ended(result):
            if timer.active():
                timer.cancel()
            return result

        d = Deferred()
        self.ended.addBoth(lambda result: (d.callback(result), result)[1])
        return d.addBoth(ended)

    def _removeWorkdir(self):
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)

    # Process events

    def outReceived(self, data):
        self._received(data)

    def errReceived(self, data):
        self._received(data)

    def _received(self, data):
        data = self._partial + data.replace(b"\r", b"\n")
        lines = data.split(b"\n")
        self._partial = lines.pop()[-MAX_LINE:]
        for raw in lines:
            line = _ANSI.sub("", raw.decode("utf-8", "replace"))
            self._output = (self._output + line + "\n")[-MAX_OUTPUT:]
            for event in self.parseLine(line):
                self._event(event)

    def parseLine(self, line):
        """
        The L{Event}s one line of output says happened.
        """
        raise NotImplementedError()

    def _event(self, event):
        self.events.append(event)
        del self.events[:-MAX_EVENTS]
        for waiter in list(self._waiters):
            predicate, d, timer = waiter
            if predicate(event):
                self._waiters.remove(waiter)
                timer.cancel()
                d.callback(event)

    def processEnded(self, reason):
        self._running = False
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        value = reason.value
        if isinstance(value, ProcessDone):
            self.exitCode = 0
        elif (isinstance(value, ProcessTerminated)
              and value.exitCode is not None):
            self.exitCode = value.exitCode
        else:
            self.exitCode = -(getattr(value, "signal", None) or 9)
        self._removeWorkdir()
        waiters, self._waiters = self._waiters, []
        for predicate, d, timer in waiters:
            timer.cancel()
            d.errback(SoftphoneExited(
                f"{self.name} ended (exit {self.exitCode}) before the "
                f"event waited for\n{self.outputTail()}"))
        self.ended.callback(self.exitCode)

    # Waiting

    def outputTail(self, size=3000):
        """
        The end of what the softphone printed, for failure messages.
        """
        return self._output[-size:]

    def waitFor(self, kind, timeout=10.0, since=0, **match):
        """
        Wait for an event of C{kind} (or of one of the kinds of a tuple)
        among those from index C{since} on (already seen or to come).

        @param match: attributes of L{Event} that must be equal (C{code},
            C{peer}, C{detail}).
        @return: L{Deferred} firing with the L{Event}, failing with
            L{SoftphoneTimeout} after C{timeout} seconds or with
            L{SoftphoneExited}.
        """
        kinds = (kind,) if isinstance(kind, str) else tuple(kind)

        def predicate(event):
            return event.kind in kinds and all(
                getattr(event, k) == v for k, v in match.items())

        for event in self.events[since:]:
            if predicate(event):
                return succeed(event)
        if not self._running:
            return succeed(None).addCallback(
                lambda _: self._raise(SoftphoneExited(
                    f"{self.name} has ended (exit {self.exitCode})")))
        d = Deferred()

        def expired():
            self._waiters.remove(waiter)
            d.errback(SoftphoneTimeout(
                f"{self.name}: no {kind} {match or ''} within {timeout} s; "
                f"events so far: {self.events[-20:]}\n{self.outputTail()}"))

        timer = self._reactor.callLater(timeout, expired)
        waiter = (predicate, d, timer)
        self._waiters.append(waiter)
        return d

    @staticmethod
    def _raise(exception):
        raise exception

    def kinds(self):
        """
        The kinds of the events so far, in order.
        """
        return [e.kind for e in self.events]

    # The client's commands (see each subclass)

    def dial(self, uri):
        raise NotImplementedError()

    def hangup(self):
        raise NotImplementedError()

    def sendMessage(self, uri, text):
        raise NotImplementedError()


def _userOf(aor):
    return aor.split("@", 1)[0]


def _proxyURI(proxy, transport):
    """
    C{sip:HOST:PORT} plus C{;transport=tcp} when not UDP.
    """
    proxy = proxy.split(";", 1)[0]
    if transport.lower() == "udp":
        return proxy
    return f"{proxy};transport={transport.lower()}"


class AccountPhone(Softphone):
    """
    A softphone for one account, whose outbound proxy is one server.

    @param aor: C{alice@example.com}.
    @param password: its password.
    @param proxy: the outbound proxy, C{sip:127.0.0.1:PORT}: every request
        goes there (the server it registers at).
    @param transport: C{"udp"} or C{"tcp"}.
    @param contact: the URI C{/message} sends to (baresip 1.0 messages its
        current contact only; the others name their target).
    @param answer: answer incoming calls at once.
    @param expires: the registration interval asked for.
    """

    def __init__(self, reactor, aor, password, proxy, transport="udp",
                 contact=None, answer=True, expires=60, lifetime=60):
        Softphone.__init__(self, reactor, f"{self.executable} {aor}",
                           lifetime)
        self.aor = aor
        self.password = password
        self.proxy = proxy
        self.sipTransport = transport
        self.contact = contact
        self.answer = answer
        self.expires = expires


class Baresip(AccountPhone):
    """
    baresip 1.0 for one account (see L{AccountPhone}).
    """

    executable = "baresip"
    quitCommand = "/quit"

    def prepare(self, path):
        config = "\n".join([
            "poll_method\t\tepoll",
            # Port 0: the system picks free ports (UDP and TCP).
            "sip_listen\t\t127.0.0.1:0",
            "call_local_timeout\t20",
            "module_path\t\t/usr/lib/baresip/modules",
            "module\t\t\tstdio.so",
            "module\t\t\tg711.so",
            "module_tmp\t\taccount.so",
            "module_app\t\tmenu.so",
            "module_app\t\tcontact.so",
            ""])
        params = [f"auth_pass={self.password}",
                  f'outbound="{_proxyURI(self.proxy, self.sipTransport)}"',
                  f"regint={self.expires}"]
        if self.answer:
            params.append("answermode=auto")
        transport = self.sipTransport.lower()
        account = f"<sip:{self.aor};transport={transport}>;" + ";".join(params)
        contacts = f'"peer" <{self.contact}>\n' if self.contact else ""
        for name, text in (("config", config), ("accounts", account + "\n"),
                           ("contacts", contacts)):
            with open(os.path.join(self.workdir, name), "w") as f:
                f.write(text)
        argv = [path, "-f", self.workdir, "-s"]
        return argv, self.baseEnvironment()

    _REGISTERED = re.compile(r"^(\S+): \{\d+/\w+/v[46]\} (\d{3}) ")
    _REG_FAILED = re.compile(r"^reg: (\S+): (?:(\d{3}) |Register: )(.*)$")
    _INCOMING = re.compile(
        r"(?:Incoming call from: (?:.*<)?|answering call on line \d+ from )"
        r"(sips?:[^\s>]+)")
    _ESTABLISHED = re.compile(r"^\S+: Call established: (\S+)")
    # Hung up here: "call: terminate call 'ID' with URI" at once (the
    # "Call with URI terminated (duration...)" summary only comes for calls
    # that lasted a second or more); hung up there: "URI: session closed:
    # Connection reset by peer" (the BYE).
    _HUNGUP = re.compile(r"^call: terminate call '[^']*' with (\S+)")
    _CLOSED = re.compile(r"^(sips?:\S+): session closed: (?:(\d{3}) )?(.*)$")
    _MESSAGE = re.compile(r'^(sips?:\S+): "(.*)"$')

    # The call status line, rewritten in place with no line end, so that
    # the next message may follow it on the same line.
    _STATUS = re.compile(r"^(?:\[\d+:\d\d:\d\d\] audio=\S+ \(bit/s\)\s*)+")

    def parseLine(self, line):
        line = self._STATUS.sub("", line.strip())
        # The menu echoes what is typed ("//d/di/dial..."): never an event.
        if not line or line.startswith("/"):
            return []
        match = self._REGISTERED.match(line)
        if match:
            code = int(match.group(2))
            kind = "registered" if 200 <= code < 300 else "registrationFailed"
            return [Event(kind, code, detail=line)]
        match = self._REG_FAILED.match(line)
        if match:
            code = match.group(2)
            return [Event("registrationFailed", int(code) if code else None,
                          detail=match.group(3))]
        match = self._INCOMING.search(line)
        if match:
            return [Event("incoming", peer=match.group(1))]
        match = self._ESTABLISHED.match(line)
        if match:
            return [Event("established", peer=match.group(1))]
        match = self._HUNGUP.match(line)
        if match:
            return [Event("ended", peer=match.group(1), detail="hung up")]
        match = self._CLOSED.match(line)
        if match:
            # Before an established call: the call failed (a final
            # response, or a local error); after, the peer hung up (a BYE
            # reads "Connection reset by peer").
            code = match.group(2)
            return [Event("closed", int(code) if code else None,
                          peer=match.group(1), detail=match.group(3))]
        match = self._MESSAGE.match(line)
        if match:
            return [Event("message", peer=match.group(1),
                          detail=match.group(2))]
        event = _authorizationEvent(line)
        return [event] if event is not None else []

    def _event(self, event):
        if event.kind == "closed":
            established = any(e.kind == "established" for e in self.events)
            event = Event("ended" if established else "callFailed",
                          event.code, event.peer, event.detail)
        Softphone._event(self, event)

    def dial(self, uri):
        self.command(f"/dial {uri}")

    def hangup(self):
        self.command("/hangup")

    def sendMessage(self, uri, text):
        if uri != self.contact:
            raise ValueError(f"baresip 1.0 messages its contact "
                             f"{self.contact!r} only, not {uri!r}")
        self.command(f"/message {text}")


class Linphonec(AccountPhone):
    """
    linphonec (linphone-cli 5.1) for one account (see L{AccountPhone};
    C{contact} is not needed: C{chat} names its target).
    """

    executable = "linphonec"
    quitCommand = "quit"

    def __init__(self, *args, **kw):
        AccountPhone.__init__(self, *args, **kw)
        self._lastCode = None
        self._lastReason = ""

    def prepare(self, path):
        domain = self.aor.split("@", 1)[1]
        proxy = _proxyURI(self.proxy, self.sipTransport)
        tcp = self.sipTransport.lower() == "tcp"
        # 0 disables a transport, -1 picks a free port.
        rc = "\n".join([
            "[sip]",
            f"sip_port={0 if tcp else -1}",
            f"sip_tcp_port={-1 if tcp else 0}",
            "sip_tls_port=0",
            "default_proxy=0",
            "bind_address=127.0.0.1",
            "inc_timeout=20",
            "[proxy_0]",
            f"reg_proxy=<{proxy}>",
            f"reg_route=<{proxy};lr>",
            f"reg_identity=sip:{self.aor}",
            f"reg_expires={self.expires}",
            "reg_sendregister=1",
            "publish=0",
            "[auth_info_0]",
            f"username={_userOf(self.aor)}",
            f"passwd={self.password}",
            f"realm={domain}",
            f"domain={domain}",
            "[rtp]",
            "audio_rtp_port=0",
            ""])
        rcPath = os.path.join(self.workdir, "linphonerc")
        with open(rcPath, "w") as f:
            f.write(rc)
        os.makedirs(os.path.join(self.workdir, ".local", "share", "linphone"))
        argv = [path, "-c", rcPath, "-d", "4"]
        if self.answer:
            argv.append("-a")
        env = self.baseEnvironment()
        env["XDG_DATA_HOME"] = os.path.join(self.workdir, ".local", "share")
        env["XDG_CONFIG_HOME"] = os.path.join(self.workdir, ".config")
        return argv, env

    _REFRESHER = re.compile(
        r"Register refresher \[(\d+)\] reason \[([^\]]*)\]")
    _STATE = re.compile(r"moving from state \[\w+\] to \[LinphoneRegistration"
                        r"(Ok|Failed)\]")
    _INCOMING = re.compile(r"Receiving new incoming call from (\S+), ")
    _ESTABLISHED = re.compile(r"Call \d+ with (\S+) connected\.")
    _ENDED = re.compile(r"Call \d+ with (\S+) ended \((.*)\)\.")
    _ERROR = re.compile(r"Call \d+ with (\S+) error\.")
    _MESSAGE = re.compile(r"Message received from (\S+): (.*)$")

    def parseLine(self, line):
        if line.startswith("linphonec> "):
            line = line[len("linphonec> "):]
        match = self._REFRESHER.search(line)
        if match:
            self._lastCode = int(match.group(1))
            self._lastReason = match.group(2)
            return []
        match = self._STATE.search(line)
        if match:
            if match.group(1) == "Ok":
                return [Event("registered", self._lastCode)]
            return [Event("registrationFailed", self._lastCode,
                          detail=self._lastReason)]
        for pattern, kind in ((self._INCOMING, "incoming"),
                              (self._ESTABLISHED, "established"),
                              (self._ERROR, "callFailed")):
            match = pattern.search(line)
            if match:
                return [Event(kind, peer=match.group(1))]
        match = self._ENDED.search(line)
        if match:
            return [Event("ended", peer=match.group(1),
                          detail=match.group(2))]
        match = self._MESSAGE.search(line)
        if match:
            return [Event("message", peer=match.group(1),
                          detail=match.group(2))]
        event = _authorizationEvent(line)
        return [event] if event is not None else []

    def dial(self, uri):
        self.command(f"call {uri}")

    def hangup(self):
        self.command("terminate")

    def sendMessage(self, uri, text):
        self.command(f"chat {uri} {text}")


class Twinkle(AccountPhone):
    """
    twinkle-console 1.10 for one account (see L{AccountPhone}).

    Its directory is its C{HOME}: the user profile C{.twinkle/twinkle.cfg}
    (the one it loads when given no argument) and the system settings
    C{.twinkle/twinkle.sys} (SIP and RTP ports, chosen free by
    L{freeSIPPort} and L{freePort}; the ALSA C{null} device for ringtone,
    speaker and microphone).  It logs SIP messages to
    C{.twinkle/twinkle.log}, not to its output: L{logAlgorithms} reads them
    there.
    """

    executable = "twinkle-console"
    quitCommand = "quit"

    def __init__(self, *args, **kw):
        AccountPhone.__init__(self, *args, **kw)
        self._pending = None
        self._peer = None
        self._autoAnswer = False

    def prepare(self, path):
        user, domain = self.aor.split("@", 1)
        # "sip:HOST:PORT": the profile wants HOST:PORT (with the scheme it
        # resolves the domain instead).
        proxy = self.proxy.split(";", 1)[0].split(":", 1)[1]
        transport = self.sipTransport.lower()
        profile = "\n".join([
            f"user_name={user}",
            f"user_domain={domain}",
            f"auth_realm={domain}",
            f"auth_name={user}",
            f"auth_pass={self.password}",
            f"outbound_proxy={proxy}",
            "all_requests_to_proxy=yes",
            "register_at_startup=yes",
            f"registration_time={self.expires}",
            f"sip_transport={transport}",
            # It finds no address of its own on a host without a default
            # route ("Local IP: 255.255.255.255"): name loopback.
            "nat_public_ip=127.0.0.1",
            ""])
        settings = "\n".join([
            f"sip_udp_port={freeSIPPort()}",
            f"rtp_port={freePort('udp')}",
            "dev_ringtone=alsa:null",
            "dev_speaker=alsa:null",
            "dev_mic=alsa:null",
            "validate_audio_dev=no",
            "log_show_sip=yes",
            ""])
        home = os.path.join(self.workdir, ".twinkle")
        os.makedirs(home)
        for name, text in (("twinkle.cfg", profile),
                           ("twinkle.sys", settings)):
            with open(os.path.join(home, name), "w") as f:
                f.write(text)
        # It takes its first argument for a profile name: none.
        return [path], self.baseEnvironment()

    _REGISTERED = re.compile(r"^\S+: registration succeeded")
    _REG_FAILED = re.compile(r"^\S+, registration failed: (\d{3}) (.*)$")
    _LINE = re.compile(r"^Line \d+: (.*)$")
    _FROM = re.compile(r"^From:\s+(\S+)")
    _TO = re.compile(r"^To:\s+(\S+)")

    def parseLine(self, line):
        if line.startswith("Twinkle> "):
            line = line[len("Twinkle> "):]
        line = line.strip()
        if not line:
            return []
        pending = self._pending
        if pending is not None:
            # A multi-line report: "Line 1: incoming call" or "Received
            # message", then From:, To:, (the message's text).
            kind, fields = pending
            match = self._FROM.match(line)
            if match:
                fields["peer"] = match.group(1)
                if kind == "incoming":
                    self._pending = None
                    self._peer = fields["peer"]
                    return [Event("incoming", peer=fields["peer"])]
                return []
            if self._TO.match(line):
                return []
            self._pending = None
            if kind == "message":
                return [Event("message", peer=fields.get("peer"),
                              detail=line)]
        if line == "Received message":
            self._pending = ("message", {})
            return []
        if self._REGISTERED.match(line):
            if self.answer and not self._autoAnswer:
                # Its auto answer service picks the line the call came in
                # on ("answer" takes the active line, which may be one
                # still releasing the previous call).
                self._autoAnswer = True
                self.command("auto_answer -a on")
            # It prints no code for a success: a 2xx.
            return [Event("registered", 200, detail=line)]
        match = self._REG_FAILED.match(line)
        if match:
            return [Event("registrationFailed", int(match.group(1)),
                          detail=match.group(2))]
        match = self._LINE.match(line)
        if match:
            what = match.group(1)
            if what == "incoming call":
                self._pending = ("incoming", {})
            elif what in ("call established.", "far end answered call."):
                return [Event("established", peer=self._peer)]
            elif what in ("call ended.", "far end ended call."):
                return [Event("ended", peer=self._peer)]
            elif what.startswith("call failed"):
                return [Event("callFailed", peer=self._peer, detail=what)]
        return []

    def logAlgorithms(self):
        """
        The Digest algorithms of the C{Authorization} and
        C{Proxy-Authorization} fields it has logged sending so far.
        """
        path = os.path.join(self.workdir, ".twinkle", "twinkle.log")
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                text = f.read(MAX_OUTPUT * 16)
        except OSError:
            return []
        return [e.detail for e in map(_authorizationEvent, text.splitlines())
                if e is not None]

    def dial(self, uri):
        self._peer = uri
        self.command(f"call {uri}")

    def hangup(self):
        self.command("bye")

    def sendMessage(self, uri, text):
        quoted = text.replace('"', "'")
        self.command(f'message {uri} "{quoted}"')


SOFTPHONES = {"baresip": Baresip, "linphonec": Linphonec,
              "twinkle": Twinkle}


def startSoftphone(testCase, reactor, kind, *args, **kw):
    """
    Start a softphone of C{kind} (C{"baresip"} or C{"linphonec"}, or a
    L{Softphone} subclass) for the duration of C{testCase}: stopped (and
    its directory removed) at clean-up.

    @return: the started L{Softphone}.
    """
    cls = SOFTPHONES.get(kind, kind)
    phone = cls(reactor, *args, **kw)
    phone.start()
    testCase.addCleanup(phone.stop)
    return phone
