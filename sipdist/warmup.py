# -*- test-case-name: tests.test_warmup -*-
"""
Warming PyPy's JIT up before a server listens (C{--warmup N}).

PyPy runs a code path interpreted, slower than CPython, until it has run
it often enough to compile it, and compiling the path of a login takes
seconds of CPU.  A PyPy server that starts cold under load (a restart, a
worker brought back) falls behind while it compiles, and its overload
control sheds calls with C{503} for seconds.

L{warmUp} runs logins through a throwaway server of the same role and
settings before the real server opens its ports, in the same process:

  - the throwaway server is built as the real one is (L{buildServer}),
    listens on a UDP port of the loopback interface, and runs on a new
    reactor of the real one's kind, run until the warm-up is over: the
    loops PyPy compiles are the real server's own (the reactor's, the
    port's, the fast paths'), and PyPy keeps compiled code by the code it
    runs, not by the objects it ran on;
  - its store and credentials are its own, of the same kind as the real
    server's where that is a file (a file of its own, in a temporary
    directory), in memory otherwise: the compiled code checks the class
    of the objects it meets;
  - a client in the same process logs 30 users in, each writing its
    REGISTER as SIPp, baresip or linphone writes theirs, one login at a
    time per user, 16 requests sent at a time (about what a port reads in
    a wake-up under load); four users in ten keep their Call-ID from one
    login to the next, as a client refreshing its registration does, the
    others start each with a fresh one, as SIPp does.  It answers
    each C{401} with credentials and checks the final answer: a signed
    C{301} (at a distributor; at a home, for one user in ten, assigned
    to the other server of its store) or the registrar's C{200}.  Its
    password is random, made for the warm-up.
  - the last fifth of the logins run while the throwaway server sheds
    (its overload control told to admit half the rate it answered until
    then, which it raises as it sheds without being loaded): the C{503}
    answered from a datagram's bytes and the admission of the requests
    let through are compiled too, not under the real server's first
    overload.  A C{503} ends a login then.

Both servers of the throwaway store are the throwaway server itself, so
that whatever probes them sends nothing elsewhere.  The warm-up stops at
the first answer it does not expect, after 2 s without an answer or 60 s
in all; the server starts all the same, and says so in one line.  What
the throwaway server leaves behind is collected before the ports open.
Only the reactors that come with Twisted for posix (epoll, poll, select)
are warmed: another kind of reactor (asyncio's shares its event loop)
gets no warm-up.
"""

import functools
import gc
import importlib
import os
import shutil
import socket
import tempfile
import time
from dataclasses import dataclass

from sipdist.auth.client import answerChallenge
from sipdist.sip.message import MessageError, parseMessage
from sipdist.store import ServerRecord
from sipdist.store.memory import MemoryAssignmentStore

# The settings of the real server the throwaway one takes (those that
# change the path a request takes); the others keep their defaults.
_SHARED = ("role", "domain", "digest-algorithms",
           "tagged-digest-algorithms", "t1", "max-message-size",
           "fast-path", "backup-home", "flow-timer", "flow-timer-udp",
           "overload-lag", "overload-transactions", "overload-backlog",
           "overload-retry-after", "overload-retry-spread")

_USER_AGENT = "sipdist-warmup"
# Each has one binding at a home (a client registering its one Contact).
_USERS = tuple(f"warmup-{number}" for number in range(30))
# Requests sent at a time: about as many as a wake-up reads under load.
_BURST = 16
# The share of the logins (the last ones) run while the throwaway server
# sheds, and the share of the rate it admits then.
_SHEDDING = 0.2
_ADMITTED = 0.5


def _foreign(number):
    """
    Whether the user of this number is assigned to the other server (one
    in ten, of every shape).
    """
    return number % 10 == 9


def _refreshing(number):
    """
    Whether the user of this number keeps its Call-ID from one login to
    the next, its CSeq rising, as a client refreshing its registration
    does (four in ten, of every shape); the others start each login with
    a fresh Call-ID, as SIPp does.
    """
    return 5 <= number % 10 < 9


def applies(config, reactor):
    """
    Whether a warm-up has something to warm for the server C{config}
    describes, on C{reactor}: a home or a distributor (the roles that
    answer logins), on a reactor of a kind it can make another of.
    """
    return (config.get("role", "home") in ("home", "distributor")
            and type(reactor) in _reactorKinds())


@functools.lru_cache(maxsize=1)
def _reactorKinds():
    """
    The reactor classes a warm-up may make another of (looked up once).
    """
    kinds = []
    for module, name in (("epollreactor", "EPollReactor"),
                         ("pollreactor", "PollReactor"),
                         ("selectreactor", "SelectReactor")):
        try:
            module = importlib.import_module(f"twisted.internet.{module}")
        except ImportError:
            # Not on this platform (epoll off Linux).
            continue
        kinds.append(getattr(module, name))
    return tuple(kinds)


@dataclass
class WarmUpResult:
    """
    What a warm-up did.

    @ivar logins: logins completed (a final answer of the expected code).
    @ivar seconds: the CPU time it took.
    @ivar error: why it stopped early, or C{None}.
    """

    logins: int
    seconds: float
    error: str = None


def warmUp(config, reactor, logins):
    """
    Run C{logins} logins through a throwaway server like the one
    C{config} describes, before the real one listens (see the module).

    @param config: the real server's options.
    @param reactor: the reactor the real server will run on; the throwaway
        server runs on a new reactor of the same kind.
    @return: a L{WarmUpResult}, or C{None} when there is nothing to warm
        (a role without this path, a reactor of another kind).
    """
    if logins <= 0 or not applies(config, reactor):
        return None
    role = config.get("role", "home")
    started = time.process_time()
    scratch = type(reactor)()
    done = 0
    error = None
    service = None
    work = tempfile.mkdtemp(prefix="sipdist-warmup-")
    # Its users' password, good for this warm-up only.
    password = os.urandom(12).hex()
    try:
        service, address = _throwawayServer(config, scratch, work, password)
        done, error = _drive(service, address, scratch, role, logins,
                             password)
    except Exception as e:
        error = f"{type(e).__name__}: {e}"
    finally:
        if service is not None:
            try:
                service.stopService()
            except Exception:
                pass
        _closeReactor(scratch)
        shutil.rmtree(work, ignore_errors=True)
        del service
        # The throwaway server's tables are garbage now: collected here,
        # before the ports open, not in a pause under the first load.
        gc.collect()
    return WarmUpResult(done, time.process_time() - started, error)


def _throwawayServer(config, scratch, work, password):
    """
    Build and start the throwaway server, its store and credentials of the
    same kinds as the real server's where they are files (kept in
    C{work}), in memory otherwise.

    @return: C{(service, (host, port))}: the service and the address it
        listens on.
    """
    from sipdist.auth.credentials import formatCredentialsLine
    from sipdist.server import buildServer
    from sipdist.store.file import FileAssignmentStore

    name = config.get("name") or "warmup"
    conf = {key: config[key] for key in _SHARED if key in config}
    domain = conf.setdefault("domain", "example.com")
    conf.update({
        "name": name, "listen": ["udp:0:interface=127.0.0.1"],
        "credentials": "memory:" + ",".join(
            f"{user}:{password}" for user in _USERS),
        "secret": os.urandom(16).hex(),
        "redirect-user-agent": [f"^{_USER_AGENT}$"],
        "tls-client-options": lambda hostname: None,
    })
    # The same classes as the real server's where they can be had
    # (PyPy's compiled code checks an object's class).
    if str(config.get("credentials", "")).startswith("file:"):
        path = os.path.join(work, "credentials")
        with open(path, "w") as f:
            for user in _USERS:
                f.write(formatCredentialsLine(user, domain, password) + "\n")
        conf["credentials"] = f"file:{path}"
    if str(config.get("store", "")).startswith("file:"):
        path = os.path.join(work, "assignments.conf")
        open(path, "w").close()
        store = FileAssignmentStore(scratch, path, poll=0)
    else:
        store = MemoryAssignmentStore()
    service = buildServer(conf, scratch, store=store)
    service.startService()
    address = service.transport.localAddress("UDP")
    # Both servers of the store are the throwaway server itself, so that
    # whatever probes them (the monitor, the standby, the failover) finds
    # them up and sends nothing elsewhere.  At a home most users are
    # served (200) and one in ten redirected (301, the full path); at a
    # distributor all are redirected.
    uri = f"sip:{address[0]}:{address[1]}"
    store.addServer(ServerRecord(name, uri))
    store.addServer(ServerRecord(name + "-other", uri))
    for number, user in enumerate(_USERS):
        store.assignUser(f"{user}@{domain}",
                         name + ("-other" if _foreign(number) else ""))
    return service, address


# The shapes of REGISTER the warm-up sends, as the clients people use write
# them (header order and spelling of their captures; see
# tests/test_fastchallenge.py), so that the patterns the fast paths match
# them with are compiled too.  Each takes the user, the client's host and
# port, the login's number, its Call-ID, the CSeq and the Authorization
# line.
def _sipp(domain, user, host, port, call, callId, cseq, auth):
    return (
        f"REGISTER sip:{domain} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {host}:{port};branch=z9hG4bK-{call}-{cseq}\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:{user}@{domain}>;tag={call}SIPpTag00{call}\r\n"
        f"To: <sip:{user}@{domain}>\r\n"
        f"Call-ID: {callId}@{host}\r\n"
        f"CSeq: {cseq} REGISTER\r\n"
        f"Contact: <sip:{user}@{host}:{port};transport=UDP>\r\n"
        "Expires: 300\r\n"
        f"{auth}"
        f"User-Agent: {_USER_AGENT}\r\n"
        "Content-Length: 0\r\n\r\n")


def _baresip(domain, user, host, port, call, callId, cseq, auth):
    return (
        f"REGISTER sip:{domain};transport=udp SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {host}:{port};branch=z9hG4bK{call:x}a{cseq};"
        "rport\r\n"
        f"Contact: <sip:{user}-0x55c7f788d510@{host}:{port}>;expires=600\r\n"
        "Max-Forwards: 70\r\n"
        f"To: <sip:{user}@{domain}>\r\n"
        f"From: <sip:{user}@{domain}>;tag={call:x}bcdfd7\r\n"
        f"Call-ID: {callId}\r\n"
        f"CSeq: {cseq} REGISTER\r\n"
        f"{auth}"
        f"User-Agent: {_USER_AGENT}\r\n"
        "Allow: INVITE,ACK,BYE,CANCEL,OPTIONS,NOTIFY,SUBSCRIBE,INFO,"
        "MESSAGE,REFER\r\n"
        "Content-Length: 0\r\n\r\n")


def _linphone(domain, user, host, port, call, callId, cseq, auth):
    return (
        f"REGISTER sip:{domain} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {host}:{port};branch=z9hG4bK.{call}x{cseq};rport"
        "\r\n"
        f"From: <sip:{user}@{domain}>;tag={call}-E6D9A\r\n"
        f"To: sip:{user}@{domain}\r\n"
        f"CSeq: {cseq} REGISTER\r\n"
        f"Call-ID: {callId}\r\n"
        "Max-Forwards: 70\r\n"
        "Supported: replaces, outbound, gruu\r\n"
        "Accept: application/sdp\r\n"
        "Accept: text/plain\r\n"
        f"Contact: <sip:{user}@{host}:{port};transport=udp>;+sip.instance="
        '"<urn:uuid:c77299ab-d5a7-0047-b9eb-a2f08c0bcb97>"\r\n'
        "Expires: 600\r\n"
        f"{auth}"
        f"User-Agent: {_USER_AGENT}\r\n\r\n")


# Each shape with the Request-URI it writes (the digest's uri).
_SHAPES = ((_sipp, "sip:{}"), (_baresip, "sip:{};transport=udp"),
           (_linphone, "sip:{}"))


class _Client:
    """
    The warm-up's client: a UDP socket the throwaway reactor reads (a
    reader of its own, not a port of the server's kind, so that the port's
    compiled loop is the server's alone).  Each time it reads it answers
    the C{401}s, counts the final answers, and sends the next requests.
    """

    def __init__(self, reactor, role, domain, target, logins, password,
                 overload=None, shedding=_SHEDDING):
        self.reactor = reactor
        self.role = role
        self.domain = domain
        self.target = target
        self.logins = logins
        self.password = password
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.socket.bind(("127.0.0.1", 0))
        self.socket.setblocking(False)
        self.host, self.port = self.socket.getsockname()
        self.sent = 0
        self.done = 0
        # The server's overload control, told to shed from login
        # shedFrom on; logins ended by a 503 then.
        self.overload = overload
        self.shedFrom = logins - int(logins * shedding) \
            if overload is not None else logins
        self.shed = 0
        self.began = reactor.seconds()
        self.answered = 0
        self.error = None
        self.followUps = []
        # Call-ID -> (login number, CSeq of its first request), for the
        # logins under way.
        self.underWay = {}

    def fileno(self):
        return self.socket.fileno()

    def logPrefix(self):
        return "warm-up"

    def connectionLost(self, reason):
        pass

    def user(self, call):
        return _USERS[call % len(_USERS)]

    def shape(self, call):
        # Each user writes its requests one way, as a client does: users 0
        # to 9 as SIPp, 10 to 19 as baresip, 20 to 29 as linphone, so that
        # requests of one shape come in runs (as from a load of one kind
        # of client) and then give way to another; the users of each kind
        # (served, redirected) use every shape.
        return _SHAPES[call % len(_USERS) * len(_SHAPES) // len(_USERS)]

    def callId(self, call):
        """
        The Call-ID of login C{call} (as the server echoes it: without the
        host SIPp's shape adds).
        """
        number = call % len(_USERS)
        if _refreshing(number):
            return f"{number}-warmup"
        return f"{call}-warmup"

    def firstCSeq(self, call):
        """
        The CSeq of the first request of login C{call}: 1 for a fresh
        Call-ID, rising by 2 a login for a user refreshing its own.
        """
        if _refreshing(call % len(_USERS)):
            return 1 + 2 * (call // len(_USERS))
        return 1

    def request(self, call, cseq, authorization=None):
        auth = f"Authorization: {authorization}\r\n" if authorization \
            else ""
        shape = self.shape(call)[0]
        return shape(self.domain, self.user(call), self.host, self.port,
                     call, self.callId(call), cseq, auth).encode("ascii")

    def send(self):
        """
        Send the follow-ups waiting, then new logins (one at a time per
        user: a refresh must not overtake the one before it), up to a
        burst.
        """
        burst = self.followUps[:_BURST]
        del self.followUps[:_BURST]
        busy = {self.user(call) for call, _ in self.underWay.values()}
        while len(burst) < _BURST and self.sent < self.logins:
            call = self.sent
            user = self.user(call)
            if user in busy:
                break
            if call == self.shedFrom:
                self.startShedding()
            busy.add(user)
            cseq = self.firstCSeq(call)
            self.underWay[self.callId(call)] = (call, cseq)
            burst.append(self.request(call, cseq))
            self.sent += 1
        for data in burst:
            self.socket.sendto(data, self.target)

    def doRead(self):
        while True:
            try:
                answer = self.socket.recv(65536)
            except BlockingIOError:
                break
            self.answered += 1
            if not self.answer(answer):
                self.stop()
                return
        if self.done >= self.logins:
            self.stop()
            return
        self.send()

    def startShedding(self):
        """
        Have the server shed, admitting about half the requests it has
        answered per second so far (its control then raises the rate as
        it sheds without being loaded): the paths of an overloaded server
        (the 503 of a datagram not parsed, the admission of those let
        through) are compiled too, not under a real server's first
        overload.
        """
        elapsed = max(self.reactor.seconds() - self.began, 1e-3)
        self.overload.limit(_ADMITTED * self.answered / elapsed)

    def answer(self, data):
        try:
            answer = parseMessage(data)
            # A request has no code.
            code = answer.code
            callId = (answer.header("call-id") or "").partition("@")[0]
            call, first = self.underWay[callId]
            cseq = answer.cseq()[0]
        except (MessageError, AttributeError, KeyError, ValueError):
            self.error = f"an answer to no login: {data[:40]!r}"
            return False
        if code == 100:
            return True
        if code == 503 and self.sent > self.shedFrom:
            # Shed: the login ends there (a client would come back after
            # the Retry-After).
            self.shed += 1
            self.done += 1
            del self.underWay[callId]
            return True
        user = self.user(call)
        if code == 401 and cseq == first:
            uri = self.shape(call)[1].format(self.domain)
            value, _ = answerChallenge(
                answer.values("www-authenticate"), "REGISTER", uri, user,
                self.password, nc=1)
            self.followUps.append(self.request(call, first + 1, value))
            return True
        served = self.role == "home" and not _foreign(call % len(_USERS))
        if cseq == first + 1 and code == (200 if served else 301):
            self.done += 1
            del self.underWay[callId]
            return True
        self.error = f"unexpected answer {data[:40]!r}"
        return False

    def stop(self):
        self.reactor.removeReader(self)
        if self.reactor.running:
            self.reactor.stop()


def _drive(service, address, scratch, role, logins, password,
           timeout=60.0, shedding=_SHEDDING):
    """
    Run the throwaway reactor with the client until the logins are done,
    something unexpected is answered, nothing is answered for 2 s, or
    C{timeout} seconds have passed.

    @param shedding: the share of the logins, the last ones, run while
        the server sheds (each ends at its C{401} and C{200} or C{301},
        or at a C{503}).
    @return: C{(logins completed, error or None)}.
    """
    client = _Client(scratch, role, service.server.domain, address, logins,
                     password, overload=service.transactions.overload,
                     shedding=shedding)
    progress = [-1]

    def watch():
        if client.answered == progress[0]:
            client.error = "no answer for 2 s"
            client.stop()
        else:
            progress[0] = client.answered
            scratch.callLater(2.0, watch)

    def tooLong():
        client.error = f"not done in {timeout:g} s"
        client.stop()

    try:
        scratch.addReader(client)
        scratch.callWhenRunning(client.send)
        scratch.callWhenRunning(watch)
        scratch.callLater(timeout, tooLong)
        scratch.run(installSignalHandlers=False)
    finally:
        client.socket.close()
    return client.done, client.error


def _closeReactor(scratch):
    """
    Close what the throwaway reactor opened (its poller, its waker),
    which stopping it leaves open.
    """
    try:
        scratch.removeAll()
        waker = getattr(scratch, "waker", None)
        if waker is not None:
            scratch._internalReaders.discard(waker)
            waker.connectionLost(None)
        poller = getattr(scratch, "_poller", None)
        if poller is not None and hasattr(poller, "close"):
            poller.close()
    except Exception:
        pass
