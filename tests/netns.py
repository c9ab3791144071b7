# -*- test-case-name: tests.test_security,tests.test_deployment -*-
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

More of a production network (L{tests.test_deployment})::

    lab.firewall("hub", ruleset)        # nft -f in the router: between
                                        # networks only (no br_netfilter)
    lab.nameServer("dns", "10.200.1.53", records)  # twisted.names, port 53
    lab.resolvConf("outside", "10.200.1.53")  # /etc/netns/NS/resolv.conf
    capture = lab.capture("edge", "eth0")     # AF_PACKET, both directions
    capture.messages()                        # SIP messages the leg sent

Addresses are C{10.200.x.y} and exist only inside the lab's namespaces;
names carry the full process id, so parallel runs do not collide, and a
new lab first removes what labs of processes no longer running left
behind (L{removeStale}: a run killed before its cleanup).  Everything
the lab made is removed in cleanup, even when the test fails (trial runs
cleanups before C{tearDown}: read the sinks in the test itself), and at
the latest when the Python process exits.

Processes started with L{Lab.spawn} run C{ip netns exec NS argv...}, are
killed in cleanup, and their output goes to a file (L{Process.output}).
The sink, the sender and the capture are this module run as a script
inside the namespace (C{python tests/netns.py sink|send|capture ...}), so
they need nothing but the standard library; the name server
(C{netns.py dns}) needs Twisted, from the interpreter running the tests.
"""

import argparse
import atexit
import itertools
import os
import re
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

# Namespace names are TAG_PREFIX, the id of the process that made them,
# "x", a counter, "-", the host: a namespace whose process is gone is a
# leftover of a crashed run (L{removeStale}).
TAG_PREFIX = "sdn"
_STALE = re.compile(r"^" + TAG_PREFIX + r"(\d+)x\d+-")
# Where C{ip netns exec NS} finds the files it bind-mounts over /etc.
NETNS_ETC = "/etc/netns"
# Bounds of a capture: frames kept, bytes kept of each.
CAPTURE_FRAMES = 20000
CAPTURE_SNAP = 65535


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


def requireNft():
    """
    The path of C{nft}, or skip the test (fail under C{CI=true}).
    """
    from tests.interop import requireTool
    return requireTool("nft")


def _ip():
    return shutil.which("ip") or "/usr/sbin/ip"


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def removeStale():
    """
    Remove the namespaces (and their C{/etc/netns} directories) that a lab
    of a process no longer running left behind: a run killed before its
    cleanup.  Namespaces of running processes are left alone.

    @return: the names removed.
    """
    if os.geteuid() != 0:
        return []
    listing = _run([_ip(), "netns", "list"], check=False).stdout
    removed = []
    for line in listing.splitlines():
        name = line.split()[0] if line.split() else ""
        match = _STALE.match(name)
        if match and not _alive(int(match.group(1))):
            _run([_ip(), "netns", "del", name], check=False)
            removed.append(name)
    if os.path.isdir(NETNS_ETC):
        for name in os.listdir(NETNS_ETC):
            match = _STALE.match(name)
            if match and not _alive(int(match.group(1))):
                shutil.rmtree(os.path.join(NETNS_ETC, name),
                              ignore_errors=True)
    return removed


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


def _waitReady(process, readyPath):
    """
    Wait (bounded) until C{process} has made C{readyPath}.
    """
    deadline = time.monotonic() + SPAWN_WAIT
    while not os.path.exists(readyPath):
        if process.popen.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{process.popen.args} did not start: "
                               f"{process.output()}")
        time.sleep(0.05)


class Frame:
    """
    An IPv4 TCP or UDP packet seen by a L{Capture}.

    @ivar outgoing: whether the interface sent it (else received it).
    @ivar proto: C{"tcp"} or C{"udp"}.
    @ivar src: C{(address, port)} it came from.
    @ivar dst: C{(address, port)} it went to.
    @ivar payload: its TCP or UDP payload (bytes).
    """

    def __init__(self, outgoing, proto, src, dst, payload):
        self.outgoing = outgoing
        self.proto = proto
        self.src = src
        self.dst = dst
        self.payload = payload

    def __repr__(self):
        arrow = "->" if self.outgoing else "<-"
        return (f"<Frame {arrow} {self.proto} {self.src[0]}:{self.src[1]} > "
                f"{self.dst[0]}:{self.dst[1]} {len(self.payload)} bytes>")


def parseFrame(outgoing, frame):
    """
    The L{Frame} of an Ethernet C{frame} holding IPv4 TCP or UDP, else
    None.
    """
    if len(frame) < 34 or frame[12:14] != b"\x08\x00":
        return None
    ip = frame[14:]
    headerLength = (ip[0] & 0x0F) * 4
    totalLength = int.from_bytes(ip[2:4], "big")
    proto = ip[9]
    src = socket.inet_ntoa(ip[12:16])
    dst = socket.inet_ntoa(ip[16:20])
    segment = ip[headerLength:totalLength]
    if proto == 17 and len(segment) >= 8:
        ports = (int.from_bytes(segment[0:2], "big"),
                 int.from_bytes(segment[2:4], "big"))
        return Frame(outgoing, "udp", (src, ports[0]), (dst, ports[1]),
                     segment[8:])
    if proto == 6 and len(segment) >= 20:
        ports = (int.from_bytes(segment[0:2], "big"),
                 int.from_bytes(segment[2:4], "big"))
        offset = (segment[12] >> 4) * 4
        return Frame(outgoing, "tcp", (src, ports[0]), (dst, ports[1]),
                     segment[offset:])
    return None


class Capture(Process):
    """
    The frames an interface sent and received (L{Lab.capture}).
    """

    def __init__(self, popen, logPath, dataPath):
        Process.__init__(self, popen, logPath)
        self.dataPath = dataPath

    def frames(self):
        """
        The IPv4 TCP and UDP packets recorded so far, as L{Frame}s, in the
        order seen.
        """
        try:
            with open(self.dataPath, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return []
        frames = []
        offset = 0
        while offset + 5 <= len(data):
            outgoing = data[offset] == 1
            length = int.from_bytes(data[offset + 1:offset + 5], "big")
            raw = data[offset + 5:offset + 5 + length]
            offset += 5 + length
            frame = parseFrame(outgoing, raw)
            if frame is not None:
                frames.append(frame)
        return frames

    def messages(self, outgoing=True):
        """
        The SIP messages in the frames sent (or received), as
        C{(frame, message)} pairs (message: text): UDP payloads as they are,
        TCP payloads joined per connection and direction, then cut into
        messages.
        """
        result = []
        streams = {}
        for frame in self.frames():
            if frame.outgoing != outgoing or not frame.payload:
                continue
            if frame.proto == "udp":
                chunks = [frame.payload]
            else:
                key = (frame.src, frame.dst)
                chunks, streams[key] = _split(streams.get(key, b"")
                                              + frame.payload)
            for chunk in chunks:
                result.append((frame, chunk.decode("utf-8", "replace")))
        return result


class Lab:
    """
    A set of network namespaces joined by bridges in a hub namespace that
    routes between them.  Create it in a test; it registers its own
    teardown with C{testCase.addCleanup}.
    """

    def __init__(self, testCase=None):
        if testCase is not None:
            requireNetns()
        removeStale()
        self.tag = f"{TAG_PREFIX}{os.getpid()}x{next(_counter)}"
        self.tmp = tempfile.mkdtemp(prefix=f"{self.tag}-")
        self.hub = f"{self.tag}-hub"
        self._namespaces = []
        self._etc = []
        self._processes = []
        self._networks = {}
        self._hosts = {}
        if testCase is not None:
            testCase.addCleanup(self.close)
        _open.add(self)
        self._addNamespace(self.hub)
        _run([_ip(), "netns", "exec", self.hub, "sysctl", "-q", "-w",
              "net.ipv4.ip_forward=1"])
        # Packets between hosts of one network stay on its bridge: with
        # br_netfilter loaded they would also meet the router's firewall
        # (L{firewall}), which filters between networks only.
        for table in ("iptables", "ip6tables", "arptables"):
            _run([_ip(), "netns", "exec", self.hub, "sysctl", "-q", "-w",
                  f"net.bridge.bridge-nf-call-{table}=0"], check=False)

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

    def resolvConf(self, host, nameserver):
        """
        Make C{host}'s processes resolve names with C{nameserver} (an
        address): C{ip netns exec} bind-mounts
        C{/etc/netns/NS/resolv.conf} over C{/etc/resolv.conf}, and
        C{/etc/netns/NS/hosts} (empty: no name of the machine running the
        lab) over C{/etc/hosts}.  Removed in cleanup.
        """
        directory = os.path.join(NETNS_ETC, self.namespace(host))
        os.makedirs(directory, exist_ok=True)
        self._etc.append(directory)
        with open(os.path.join(directory, "resolv.conf"), "w") as f:
            f.write(f"nameserver {nameserver}\noptions timeout:1 attempts:2\n")
        with open(os.path.join(directory, "hosts"), "w") as f:
            f.write("127.0.0.1 localhost\n")

    def firewall(self, host, ruleset):
        """
        Load the nftables C{ruleset} (text, as C{nft -f} reads it) in
        C{host}'s namespace (C{"hub"}: the router between the networks).
        """
        nft = requireNft()
        ns = self.hub if host == "hub" else self.namespace(host)
        result = subprocess.run([_ip(), "netns", "exec", ns, nft, "-f", "-"],
                                input=ruleset, capture_output=True, text=True,
                                timeout=COMMAND_TIMEOUT)
        if result.returncode != 0:
            raise RuntimeError(f"nft -f in {ns}: {result.stderr.strip()}")

    def capture(self, host, interface):
        """
        Record every frame C{interface} of C{host} sends or receives (a raw
        C{AF_PACKET} socket, this module run as C{netns.py capture}).

        @return: a L{Capture}, recording when returned.
        """
        dataPath = os.path.join(self.tmp, f"capture-{host}-{interface}.bin")
        readyPath = dataPath + ".ready"
        argv = [sys.executable, os.path.join(HERE, "netns.py"), "capture",
                interface, dataPath, readyPath]
        process = self.spawn(host, argv, name=f"capture-{host}-{interface}")
        capture = Capture(process.popen, process.logPath, dataPath)
        self._processes[-1] = capture
        _waitReady(capture, readyPath)
        return capture

    def nameServer(self, host, address, records):
        """
        Start a name server (L{twisted.names}, this module run as
        C{netns.py dns}) on C{address} port 53, UDP and TCP, in C{host},
        authoritative for the C{records}: a list of C{(name, type,
        fields)} (see L{_zoneRecords}).

        @return: its L{Process}, answering when returned.
        """
        import json
        zonePath = os.path.join(self.tmp, f"zone-{host}.json")
        with open(zonePath, "w") as f:
            json.dump([list(r) for r in records], f)
        readyPath = zonePath + ".ready"
        argv = [sys.executable, os.path.join(HERE, "netns.py"), "dns",
                address, zonePath, readyPath]
        process = self.spawn(host, argv, name=f"dns-{host}")
        _waitReady(process, readyPath)
        return process

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
        _waitReady(sink, readyPath)
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
        for path in self._etc:
            shutil.rmtree(path, ignore_errors=True)
        self._etc = []
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


def _captureMain(interface, dataPath, readyPath):
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW,
                         socket.htons(0x0003))
    sock.bind((interface, 0))
    with open(readyPath, "w"):
        pass
    with open(dataPath, "ab", buffering=0) as out:
        for _ in range(CAPTURE_FRAMES):
            frame, address = sock.recvfrom(CAPTURE_SNAP)
            outgoing = address[2] == socket.PACKET_OUTGOING
            out.write(bytes([1 if outgoing else 0])
                      + len(frame).to_bytes(4, "big") + frame)


def _zoneRecords(records):
    """
    Twisted records by owner name from C{(name, type, fields)} triples:
    C{SOA} (mname, rname), C{NAPTR} (order, preference, flags, service,
    regexp, replacement), C{SRV} (priority, weight, port, target), C{A}
    (address).
    """
    from twisted.names import dns
    byName = {}
    soa = None
    for name, kind, fields in records:
        if kind == "SOA":
            record = dns.Record_SOA(mname=fields[0], rname=fields[1],
                                    serial=1, refresh=60, retry=60,
                                    expire=60, minimum=60, ttl=60)
            soa = (name.encode("ascii"), record)
        elif kind == "NAPTR":
            order, preference, flags, service, regexp, replacement = fields
            record = dns.Record_NAPTR(order, preference, flags.encode(),
                                      service.encode(), regexp.encode(),
                                      replacement, ttl=60)
        elif kind == "SRV":
            record = dns.Record_SRV(*fields, ttl=60)
        elif kind == "A":
            record = dns.Record_A(fields[0], ttl=60)
        else:
            raise ValueError(f"record type {kind} not supported")
        byName.setdefault(name.lower().encode("ascii"), []).append(record)
    return soa, byName


def _dnsMain(address, zonePath, readyPath):
    import json

    from twisted.internet import reactor
    from twisted.names import authority, dns, server

    with open(zonePath) as f:
        records = json.load(f)

    class Zone(authority.FileAuthority):
        def loadFile(self, filename):
            self.soa, self.records = _zoneRecords(records)

    factory = server.DNSServerFactory(authorities=[Zone(zonePath)])
    reactor.listenUDP(53, dns.DNSDatagramProtocol(factory),
                      interface=address)
    reactor.listenTCP(53, factory, interface=address)
    with open(readyPath, "w"):
        pass
    reactor.run()


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
    capture = sub.add_parser("capture")
    capture.add_argument("interface")
    capture.add_argument("data")
    capture.add_argument("ready")
    names = sub.add_parser("dns")
    names.add_argument("address")
    names.add_argument("zone")
    names.add_argument("ready")
    args = parser.parse_args(argv)
    if args.command == "capture":
        _captureMain(args.interface, args.data, args.ready)
    elif args.command == "dns":
        _dnsMain(args.address, args.zone, args.ready)
    elif args.command == "sink":
        _sinkMain(args.address, args.port, args.data, args.ready, args.answer)
    else:
        bind = (args.bind[0], int(args.bind[1])) if args.bind else None
        _sendMain(args.transport, args.host, args.port, min(args.wait, 30.0),
                  args.expect, bind)


if __name__ == "__main__":
    main()
