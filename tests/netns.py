# -*- test-case-name: tests.test_security -*-
"""
Network namespaces for tests that need real, separate hosts.

A L{Lab} builds a small network out of Linux network namespaces (root and
C{ip} from iproute2 are needed: L{requireNetns} skips without them, and
fails under C{CI=true}).  A hidden I{hub} namespace holds one bridge per
network and routes between them (it is the router, address C{.254} of
every network); every host is a namespace with one veth leg on each of its
networks and a default route through the hub on its first one::

    lab = Lab(testCase)                       # torn down by addCleanup
    lab.network("out", "10.200.1")            # 10.200.1.0/24
    lab.network("in", "10.200.2")
    lab.host("outside", out=["10.200.1.10"])
    lab.host("pool", out=["10.200.1.2"], **{"in": ["10.200.2.3"]})
    sink = lab.sink("sink", "10.200.1.20", 5999)   # counts bytes
    responses = lab.send("outside", "udp", ("10.200.1.2", 5070), message)
    sink.received()                           # bytes that reached the sink

Addresses are C{10.200.x.y} and exist only inside the lab's namespaces;
names carry the process id, so parallel runs do not collide.  Everything
the lab made is removed in cleanup, even when the test fails (trial runs
cleanups before C{tearDown}: read the sinks in the test itself), and at
the latest when the Python process exits.

Processes started with L{Lab.spawn} run C{ip netns exec NS argv...}, are
killed in cleanup, and their output goes to a file (L{Process.output}).
The sink and the sender are this module run as a script inside the
namespace (C{python tests/netns.py sink|send ...}), so they need nothing but
the standard library.
"""

import argparse
import atexit
import itertools
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
_counter = itertools.count()

# Every wait in this module is bounded.
SPAWN_WAIT = 20.0
COMMAND_TIMEOUT = 15.0


def requireNetns():
    """
    Skip the running test (fail under C{CI=true}) unless network namespaces
    can be made: C{ip} installed and run as root.
    """
    from tests.interop import skipOrFail
    if shutil.which("ip") is None and not os.path.exists("/usr/sbin/ip"):
        skipOrFail("ip (iproute2) not installed: apt-get install iproute2")
    if os.geteuid() != 0:
        skipOrFail("network namespaces need root (ip netns add)")


def _ip():
    return shutil.which("ip") or "/usr/sbin/ip"


def _run(argv, check=True):
    """
    Run C{argv}, bounded by L{COMMAND_TIMEOUT}; raise with its stderr if it
    fails and C{check} is set.
    """
    result = subprocess.run(argv, capture_output=True, text=True,
                            timeout=COMMAND_TIMEOUT)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: exit {result.returncode}: "
                           f"{result.stderr.strip()}")
    return result


class Process:
    """
    A process running inside a namespace.

    @ivar popen: its L{subprocess.Popen}.
    @ivar logPath: the file holding its standard output and error.
    """

    def __init__(self, popen, logPath):
        self.popen = popen
        self.logPath = logPath

    def output(self):
        """
        What the process has written so far (text).
        """
        with open(self.logPath, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def stop(self):
        """
        Kill the process (its own process group) and wait for it.
        """
        if self.popen.poll() is None:
            try:
                os.killpg(self.popen.pid, signal.SIGTERM)
                self.popen.wait(5)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                try:
                    os.killpg(self.popen.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.popen.wait(5)


class Sink(Process):
    """
    A listener that records every byte it receives over UDP and TCP.

    @ivar address: C{(host, port)} it listens on.
    @ivar dataPath: the file the received bytes are appended to.
    """

    def __init__(self, popen, logPath, address, dataPath):
        Process.__init__(self, popen, logPath)
        self.address = address
        self.dataPath = dataPath

    def data(self):
        """
        Everything received so far (bytes).
        """
        try:
            with open(self.dataPath, "rb") as f:
                return f.read()
        except FileNotFoundError:
            return b""

    def received(self):
        """
        How many bytes have arrived so far.
        """
        return len(self.data())

    def sendUDP(self, address, message):
        """
        Send C{message} over UDP from the sink's own socket (so that the
        peer answers, and later sends, to the sink's port: a user agent
        registering from it).  What comes back is recorded like everything
        else (L{data}).
        """
        if isinstance(message, str):
            message = message.encode("utf-8")
        outbox = self.dataPath + ".outbox"
        name = os.path.join(outbox, f"{time.monotonic_ns()}")
        with open(name + ".tmp", "wb") as f:
            f.write(f"{address[0]} {address[1]}\n".encode("ascii") + message)
        os.rename(name + ".tmp", name + ".msg")


class Lab:
    """
    A set of network namespaces joined by bridges in a hub namespace that
    routes between them.  Create it in a test; it registers its own
    teardown with C{testCase.addCleanup}.
    """

    def __init__(self, testCase=None):
        if testCase is not None:
            requireNetns()
        self.tag = f"sd{os.getpid() % 100000}x{next(_counter)}"
        self.tmp = tempfile.mkdtemp(prefix=f"{self.tag}-")
        self.hub = f"{self.tag}-hub"
        self._namespaces = []
        self._processes = []
        self._networks = {}
        self._hosts = {}
        if testCase is not None:
            testCase.addCleanup(self.close)
        _open.add(self)
        self._addNamespace(self.hub)
        _run([_ip(), "netns", "exec", self.hub, "sysctl", "-q", "-w",
              "net.ipv4.ip_forward=1"])

    def _addNamespace(self, name):
        _run([_ip(), "netns", "add", name])
        self._namespaces.append(name)
        _run([_ip(), "-n", name, "link", "set", "lo", "up"])

    def namespace(self, host):
        """
        The namespace name of C{host} (for C{ip netns exec}).
        """
        return self._hosts[host]

    def network(self, name, prefix):
        """
        Add a /24 network C{prefix}.0/24 (C{prefix} like C{"10.200.1"}):
        a bridge in the hub, which has address C{prefix.254}.
        """
        if not prefix.startswith("10.200."):
            raise ValueError("lab networks live in 10.200.0.0/16")
        bridge = f"br{len(self._networks)}"
        _run([_ip(), "-n", self.hub, "link", "add", bridge, "type", "bridge"])
        _run([_ip(), "-n", self.hub, "addr", "add", f"{prefix}.254/24",
              "dev", bridge])
        _run([_ip(), "-n", self.hub, "link", "set", bridge, "up"])
        self._networks[name] = (bridge, prefix)

    def host(self, name, **addresses):
        """
        Add a host: a namespace with a leg on each network named in
        C{addresses} (network name → list of addresses on it), default
        route through the hub on the first one given.

        @return: the namespace name.
        """
        ns = f"{self.tag}-{name}"
        self._addNamespace(ns)
        self._hosts[name] = ns
        index = len(self._hosts)
        first = True
        for legNumber, (network, addrs) in enumerate(addresses.items()):
            bridge, prefix = self._networks[network]
            hubSide = f"h{index}n{legNumber}"
            hostSide = f"eth{legNumber}"
            _run([_ip(), "-n", self.hub, "link", "add", hubSide, "type",
                  "veth", "peer", "name", hostSide, "netns", ns])
            _run([_ip(), "-n", self.hub, "link", "set", hubSide, "master",
                  bridge])
            _run([_ip(), "-n", self.hub, "link", "set", hubSide, "up"])
            for address in addrs:
                _run([_ip(), "-n", ns, "addr", "add", f"{address}/24", "dev",
                      hostSide])
            _run([_ip(), "-n", ns, "link", "set", hostSide, "up"])
            if first:
                _run([_ip(), "-n", ns, "route", "add", "default", "via",
                      f"{prefix}.254"])
                first = False
        return ns

    def spawn(self, host, argv, name=None, env=None, cwd=None):
        """
        Start C{argv} inside C{host}'s namespace; it is killed in cleanup.

        @return: a L{Process}.
        """
        logPath = os.path.join(self.tmp, f"{name or host}-{len(self._processes)}.log")
        log = open(logPath, "wb")
        try:
            popen = subprocess.Popen(
                [_ip(), "netns", "exec", self.namespace(host)] + list(argv),
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True, env=env, cwd=cwd)
        finally:
            log.close()
        process = Process(popen, logPath)
        self._processes.append(process)
        return process

    def sink(self, host, address, port, answer=False):
        """
        Start a listener on C{address}:C{port} (UDP and TCP) in C{host}
        that records every byte received; with C{answer}, it answers each
        SIP request but ACK with C{200 OK}, copying its Record-Route, with
        Contact C{<sip:sink@address:port>} (so a sink can stand for a user
        agent).

        @return: a L{Sink}, ready (listening) when returned.
        """
        dataPath = os.path.join(self.tmp, f"sink-{host}-{address}-{port}.bin")
        readyPath = dataPath + ".ready"
        argv = [sys.executable, os.path.join(HERE, "netns.py"), "sink",
                address, str(port), dataPath, readyPath]
        if answer:
            argv.append("--answer")
        process = self.spawn(host, argv, name=f"sink-{address}-{port}")
        sink = Sink(process.popen, process.logPath, (address, port), dataPath)
        self._processes[-1] = sink
        deadline = time.monotonic() + SPAWN_WAIT
        while not os.path.exists(readyPath):
            if sink.popen.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"sink did not start: {sink.output()}")
            time.sleep(0.05)
        return sink

    def send(self, host, transport, address, message, wait=2.0, bind=None,
             expect=1):
        """
        Send C{message} (bytes or text) from C{host} over C{transport}
        (C{"udp"} or C{"tcp"}) to C{address} and collect what comes back
        for up to C{wait} seconds (less once C{expect} final responses,
        status >= 200, have arrived).

        @param bind: the C{(host, port)} to send from, default any.
        @return: the list of SIP messages received (text).
        """
        if isinstance(message, str):
            message = message.encode("utf-8")
        argv = [_ip(), "netns", "exec", self.namespace(host), sys.executable,
                os.path.join(HERE, "netns.py"), "send", transport,
                address[0], str(address[1]), str(wait), str(expect)]
        if bind is not None:
            argv += ["--bind", bind[0], str(bind[1])]
        result = subprocess.run(argv, input=message, capture_output=True,
                                timeout=wait + COMMAND_TIMEOUT)
        if result.returncode != 0:
            raise RuntimeError(f"send failed: {result.stderr.decode()}")
        out = result.stdout.decode("utf-8", "replace")
        return [m for m in out.split(_SEPARATOR) if m.strip()]

    def close(self):
        """
        Kill every process and remove every namespace and file the lab made.
        """
        for process in reversed(self._processes):
            try:
                process.stop()
            except Exception:
                pass
        for ns in reversed(self._namespaces):
            _run([_ip(), "netns", "del", ns], check=False)
        self._namespaces = []
        shutil.rmtree(self.tmp, ignore_errors=True)
        _open.discard(self)


# Labs not closed yet: closed when the process exits (a test run
# interrupted between a lab's creation and its cleanup).
_open = set()


@atexit.register
def _closeAll():
    for lab in list(_open):
        lab.close()


# ---------------------------------------------------------------------------
# The scripts run inside namespaces (standard library only).

_SEPARATOR = "\n--netns-message--\n"


def _split(buffer):
    """
    Cut complete SIP messages off the front of a stream C{buffer}.

    @return: C{(messages, rest)}.
    """
    messages = []
    while True:
        end = buffer.find(b"\r\n\r\n")
        if end < 0:
            return messages, buffer
        head = buffer[:end].decode("utf-8", "replace")
        length = 0
        for line in head.split("\r\n")[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() in ("content-length", "l"):
                try:
                    length = int(value.strip())
                except ValueError:
                    length = 0
        total = end + 4 + length
        if len(buffer) < total:
            return messages, buffer
        messages.append(buffer[:total])
        buffer = buffer[total:]


def _status(message):
    first = message.split(b"\r\n", 1)[0].split()
    if len(first) >= 2 and first[0].startswith(b"SIP/"):
        try:
            return int(first[1])
        except ValueError:
            return None
    return None


def _okFor(request, contact=b""):
    """
    A C{200 OK} answering C{request} (bytes), as a user agent server
    writes it (Record-Route copied, our C{contact}), or None for a
    response or an ACK.
    """
    if _status(request) is not None or request.startswith(b"ACK "):
        return None
    head = request.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
    keep = []
    for line in head[1:]:
        name = line.split(b":", 1)[0].strip().lower()
        if name in (b"via", b"v", b"from", b"f", b"to", b"t", b"call-id",
                    b"i", b"cseq", b"record-route"):
            if name in (b"to", b"t") and b"tag=" not in line:
                line += b";tag=sink"
            keep.append(line)
    if contact:
        keep.append(b"Contact: " + contact)
    return b"\r\n".join([b"SIP/2.0 200 OK"] + keep +
                        [b"Content-Length: 0", b"", b""])


def _sinkMain(address, port, dataPath, readyPath, answer):
    import selectors
    selector = selectors.DefaultSelector()
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind((address, port))
    tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    tcp.bind((address, port))
    tcp.listen(16)
    selector.register(udp, selectors.EVENT_READ, "udp")
    selector.register(tcp, selectors.EVENT_READ, "accept")
    buffers = {}
    contact = f"<sip:sink@{address}:{port}>".encode("ascii")
    outbox = dataPath + ".outbox"
    os.makedirs(outbox, exist_ok=True)
    with open(readyPath, "w"):
        pass

    def record(data):
        with open(dataPath, "ab") as f:
            f.write(data)

    while True:
        for name in sorted(os.listdir(outbox)):
            if name.endswith(".msg"):
                path = os.path.join(outbox, name)
                with open(path, "rb") as f:
                    head, _, message = f.read().partition(b"\n")
                os.remove(path)
                host, port = head.decode("ascii").split()
                udp.sendto(message, (host, int(port)))
        for key, _ in selector.select(0.05):
            sock = key.fileobj
            if key.data == "udp":
                data, peer = sock.recvfrom(65535)
                record(data)
                reply = _okFor(data, contact) if answer else None
                if reply:
                    sock.sendto(reply, peer)
            elif key.data == "accept":
                conn, _ = sock.accept()
                if len(buffers) >= 64:
                    conn.close()
                    continue
                buffers[conn] = b""
                selector.register(conn, selectors.EVENT_READ, "tcp")
            else:
                data = sock.recv(65535)
                if not data:
                    selector.unregister(sock)
                    buffers.pop(sock, None)
                    sock.close()
                    continue
                record(data)
                messages, buffers[sock] = _split(buffers[sock] + data)
                buffers[sock] = buffers[sock][-65536:]
                for message in messages:
                    reply = _okFor(message, contact) if answer else None
                    if reply:
                        sock.sendall(reply)


def _sendMain(transport, host, port, wait, expect, bind):
    message = sys.stdin.buffer.read()
    deadline = time.monotonic() + wait
    received = []
    finals = 0
    if transport == "udp":
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        if bind:
            sock.bind(bind)
        sock.sendto(message, (host, port))
        while finals < expect:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            sock.settimeout(left)
            try:
                data, _ = sock.recvfrom(65535)
            except socket.timeout:
                break
            received.append(data)
            if (_status(data) or 0) >= 200:
                finals += 1
    else:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if bind:
            sock.bind(bind)
        sock.settimeout(wait)
        try:
            sock.connect((host, port))
        except OSError as e:
            sys.stderr.write(f"connect: {e}\n")
            return
        sock.sendall(message)
        buffer = b""
        while finals < expect:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            sock.settimeout(left)
            try:
                data = sock.recv(65535)
            except socket.timeout:
                break
            if not data:
                break
            messages, buffer = _split(buffer + data)
            for m in messages:
                received.append(m)
                if (_status(m) or 0) >= 200:
                    finals += 1
    sock.close()
    sys.stdout.write(_SEPARATOR.join(
        m.decode("utf-8", "replace") for m in received))


def main(argv=None):
    parser = argparse.ArgumentParser(prog="netns.py")
    sub = parser.add_subparsers(dest="command", required=True)
    sink = sub.add_parser("sink")
    sink.add_argument("address")
    sink.add_argument("port", type=int)
    sink.add_argument("data")
    sink.add_argument("ready")
    sink.add_argument("--answer", action="store_true")
    send = sub.add_parser("send")
    send.add_argument("transport", choices=("udp", "tcp"))
    send.add_argument("host")
    send.add_argument("port", type=int)
    send.add_argument("wait", type=float)
    send.add_argument("expect", type=int)
    send.add_argument("--bind", nargs=2)
    args = parser.parse_args(argv)
    if args.command == "sink":
        _sinkMain(args.address, args.port, args.data, args.ready, args.answer)
    else:
        bind = (args.bind[0], int(args.bind[1])) if args.bind else None
        _sendMain(args.transport, args.host, args.port, min(args.wait, 30.0),
                  args.expect, bind)


if __name__ == "__main__":
    main()
