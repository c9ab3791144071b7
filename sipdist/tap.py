# -*- test-case-name: tests.test_tap -*-
"""
C{twistd sipdist}: options and service construction.

Every option can also be given in a TOML file (C{--config FILE}) under the
same name (dashes or underscores); an option on the command line overrides
the file.  Options are validated here, so a mistake is one line from twistd
and a non-zero exit, before anything listens.
"""

import os
import re
import sys

from twisted.application.service import MultiService
from twisted.logger import Logger
from twisted.python import usage

from sipdist.jitparams import DEFAULT as JIT_DEFAULT
from sipdist.jitparams import applyJITParameters, parseJITParameters

try:
    import tomllib
except ImportError:  # Python < 3.11
    import tomli as tomllib

ROLES = ("home", "distributor", "edge", "internal-edge")

# name -> (default, converter, description).  Converters raise ValueError
# with a message saying what is wrong.
def _positiveInt(text):
    value = int(text)
    if value <= 0:
        raise ValueError("must be a positive integer")
    return value


def _positiveFloat(text):
    value = float(text)
    if value <= 0:
        raise ValueError("must be a positive number")
    return value


def _nonNegativeFloat(text):
    value = float(text)
    if value < 0:
        raise ValueError("must be a number, 0 or more")
    return value


def _nonNegativeInt(text):
    value = int(text)
    if value < 0:
        raise ValueError("must be an integer, 0 or more")
    return value


def _captureId(text):
    value = int(text)
    if not 0 <= value <= 0xFFFFFFFF:
        raise ValueError("must be an integer from 0 to 4294967295")
    return value


_WARMUP_PYPY = 10000


def _warmupOption(text):
    return "auto" if text == "auto" else _nonNegativeInt(text)


def _autoWarmup():
    """
    The logins of C{--warmup=auto}: PyPy's default, none on CPython.
    """
    return _WARMUP_PYPY if sys.implementation.name == "pypy" else 0


def _flag(value):
    if isinstance(value, bool):
        return value
    text = str(value).lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError("must be true or false")


PARAMETERS = [
    # name, short, default, converter, help
    ("role", "r", "home", str,
     "What this server is: " + ", ".join(ROLES) + "."),
    ("name", "n", None, str,
     "This server's id in the assignment store (required for the home role; "
     "defaults to the role's name otherwise)."),
    ("store", "s", "memory:", str,
     "Assignment store: memory:, file:PATH, ldap://HOST:PORT/BASE?..., "
     "ldaps://HOST:PORT/BASE?caFile=PEM&..., or a provider's prefix."),
    ("domain", "d", "localhost",
     str, "The SIP domain (and digest realm) this server serves."),
    ("tls-cert", None, None, str,
     "PEM certificate (with chain) for sips: listening endpoints and for "
     "connections to other servers."),
    ("tls-key", None, None, str, "PEM private key of --tls-cert."),
    ("tls-ca", None, None, str,
     "PEM CA certificates that peers' certificates are verified against."),
    ("tls-require-client-cert", None, False, _flag,
     "Require TLS clients to present a certificate from --tls-ca (mutual "
     "TLS)."),
    ("max-message-size", None, 65535, _positiveInt,
     "Largest message accepted, in bytes; larger ones are answered 513."),
    ("idle-timeout", None, 900.0, _positiveFloat,
     "Seconds without a complete message or keep-alive after which a "
     "TCP/TLS connection is closed."),
    ("header-timeout", None, 10.0, _positiveFloat,
     "Seconds a TCP/TLS message may take from its first byte to the end of "
     "its header section; a slower connection is closed."),
    ("message-timeout", None, 30.0, _positiveFloat,
     "Seconds a TCP/TLS message may take from its first byte to its last; "
     "a slower connection is closed."),
    ("max-buffered", None, 64 * 1024 * 1024, _positiveInt,
     "Bytes of unfinished TCP/TLS messages held for all connections "
     "together; past it the connections whose message started first are "
     "closed."),
    ("max-connections", None, 10000, _positiveInt,
     "TCP/TLS connections open at once (lowered at start to what the "
     "file-descriptor limit allows)."),
    ("max-connections-per-host", None, 64, _positiveInt,
     "TCP/TLS connections open at once from one address."),
    ("t1", None, 0.5, _positiveFloat, "RFC 3261 timer T1 (seconds)."),
    ("max-transactions", None, 100000, _positiveInt,
     "Transactions in progress at once, with the records of completed "
     "ones waiting for retransmissions (the oldest records are ended early "
     "when it is full); past it requests are answered 503."),
    ("udp-receive-buffer", None, 4194304, _positiveInt,
     "Receive buffer (SO_RCVBUF, bytes) of each UDP port: bursts wait there "
     "instead of being dropped by the kernel (capped at "
     "net.core.rmem_max)."),
    ("overload-lag", None, 0.2, _positiveFloat,
     "Event-loop lag (seconds) which, measured 3 times in a row (every "
     "50 ms), means the server is overloaded: new "
     "requests outside a dialog (not OPTIONS, ACK, CANCEL) get a stateless "
     "503 with Retry-After until it has been below for 1 s."),
    ("overload-backlog", None, 262144, _positiveInt,
     "Bytes of datagrams waiting in the UDP receive buffers (Linux; about "
     "1.3 KB a datagram) above which, 3 times in a row, the server is "
     "overloaded, as with --overload-lag (a backlog that drains does not "
     "count, nor on PyPy one measured while its JIT compiled 16 KB or "
     "more; one of half the buffers counts at once)."),
    ("overload-transactions", None, 10000, _positiveInt,
     "Transactions in progress (still waiting for their final response) "
     "above which the server is overloaded, as with --overload-lag."),
    ("overload-retry-after", None, 2, _positiveInt,
     "The Retry-After (seconds) of the 503 of an overloaded server."),
    ("overload-retry-spread", None, 30, _nonNegativeInt,
     "At most this many seconds added to --overload-retry-after to spread "
     "the requests shed over the seconds the admitted rate needs to take "
     "them back (0: every 503 says --overload-retry-after)."),
    ("credentials", None, "memory:", str,
     "Where users' digest credentials come from: file:PATH (see 'sipdist "
     "passwd'), ldap://..., ldaps://..., memory:USER:PASSWORD,... "
     "(tests)."),
    ("secret-file", None, None, str,
     "File holding the nonce secret shared by every server of the pool (a "
     "random one per process when absent: only for a single server)."),
    ("redirect-policy", None, "auto", str,
     "auto (redirect a client that follows the distribution redirect -- "
     "option tag sipdist-redirect in Supported, or --redirect-user-agent -- "
     "and talks to us directly; proxy every other request), proxy (never "
     "redirect) or redirect (redirect every REGISTER, even from standard "
     "clients: only for deployments whose clients all follow it; other "
     "requests are still proxied for clients without the option tag)."),
    ("min-expires", None, 60, _positiveInt,
     "Shortest registration accepted (shorter ones get 423)."),
    ("max-expires", None, 86400, _positiveInt,
     "Longest registration granted."),
    ("flow-timer", None, 60.0, _nonNegativeFloat,
     "Seconds within which a client that registers with RFC 5626 outbound "
     "(Supported: outbound or a reg-id) is asked to send keep-alives (the "
     "Flow-Timer header of the 200; 0: none).  Keep it well below "
     "--idle-timeout."),
    ("flow-timer-udp", None, 15.0, _nonNegativeFloat,
     "The Flow-Timer of the 200 to a REGISTER over UDP (see --flow-timer): "
     "a UDP client learns that its home failed only from its STUN "
     "keep-alives, at most this many seconds plus 10 s of unanswered "
     "retransmissions after the failure."),
    ("standby", None, True, _flag,
     "Home: serve a user of another home temporarily (the store unchanged, "
     "a registration of at most --standby-expires seconds) when this server "
     "is the user's backup home and its home is marked down or does not "
     "answer this server's own probe either (docs/operations.rst, A failed "
     "home)."),
    ("standby-timeout", None, 1.0, _positiveFloat,
     "Seconds the probe of a user's home (OPTIONS) may take before the home "
     "counts as unreachable (see --standby)."),
    ("standby-ttl", None, 2.0, _positiveFloat,
     "Seconds the result of a probe of a home is used for (see --standby): "
     "one probe per home and period, whatever the number of its clients."),
    ("standby-expires", None, 120, _positiveInt,
     "The longest registration granted by a backup home serving a user "
     "temporarily (see --standby): the client comes back to be decided "
     "again within half of it."),
    ("failover", None, True, _flag,
     "Store roles: a request proxied to a user's home goes to the user's "
     "backup home (signed as coming from the pool) when the home is marked "
     "down, refuses or drops the connection, or is silent for "
     "--failover-after seconds and does not answer a probe either "
     "(docs/operations.rst, A failed home behind an edge); the backup "
     "serves it temporarily as for --standby."),
    ("failover-after", None, 1.0, _positiveFloat,
     "Seconds a user's home may stay silent (no response, not even a 100) "
     "to a request proxied to it before it is probed (see --failover)."),
    ("fast-path", None, True, _flag,
     "Answer the first REGISTER of a login over UDP (no credentials, "
     "written the common way) with its 401 challenge from its bytes, "
     "without parsing it into a message, and the second one, with valid "
     "credentials, with the distributor's signed 301 when that is the "
     "answer: the same answer and the same transaction and counters as the "
     "full path, at a fraction of the CPU. "
     "false: every request takes the full path."),
    ("pypy-jit", None, JIT_DEFAULT, parseJITParameters,
     "On PyPy: the JIT parameters set when the server starts, as "
     "name=N pairs separated by commas (PyPy's --jit help lists them), "
     "or default for PyPy's own.  The default of sipdist "
     f"({JIT_DEFAULT}) compiles a request's path within the first "
     "thousands of logins instead of the first ten thousand "
     "(docs/performance.rst).  Nothing on CPython."),
    ("warmup", None, "auto", _warmupOption,
     "Logins run through a throwaway server of the same role before the "
     "server listens, so that PyPy's JIT has compiled the path of a "
     "login when the first clients come (a cold PyPy server under load "
     "sheds calls for seconds while it compiles): a number, or auto "
     f"({_WARMUP_PYPY:,d} on PyPy, none on CPython, which has no JIT).  "
     "Roles home and distributor."),
    ("backup-home", None, True, _flag,
     "Name a backup home (Sipdist-Backup, covered by the signature) in the "
     "signed 301 and 200 given to clients that follow the redirect: the "
     "next server in the user's rendezvous order, where such a client goes "
     "straight away when it loses its home."),
    ("max-bindings", None, 10, _positiveInt,
     "Contacts one address-of-record may register."),
    ("bindings-file", None, None, str,
     "Home: a file the registrations are written behind to and read back "
     "from on start, so that a restart keeps them (default: memory only; "
     "see docs/operations.rst, Restarting a home)."),
    ("bindings-flush-interval", None, 1.0, _positiveFloat,
     "Seconds between two writes to --bindings-file: a killed (SIGKILL) "
     "home loses the registrations of that last interval at most."),
    ("auth-failures", None, 10, _positiveInt,
     "Failed authentications of one user from one client address after "
     "which that user waits before trying again from there (403 with "
     "Retry-After, 1 s doubling per further failure); nobody else waits."),
    ("auth-window", None, 300.0, _positiveFloat,
     "Seconds after a user's last failure from an address when its count "
     "is forgotten (and the window of --auth-address-failures)."),
    ("auth-max-delay", None, 60.0, _positiveFloat,
     "Longest wait imposed after failed authentications (seconds)."),
    ("auth-address-failures", None, 100, _positiveInt,
     "Failed authentications from one client address, all users together, "
     "within --auth-window past which every user failing from there waits "
     "from its first failure (the address itself is never blocked)."),
    ("digest-algorithms", None, "MD5", str,
     "Digest algorithms standard clients are challenged with, in this "
     "order (SHA-256, SHA-256-sess, MD5, MD5-sess).  MD5 alone by default: "
     "SIPp, sipsak and baresip answer only the first challenge, know only "
     "MD5, or fail when any challenge names SHA-256 (see docs/auth.rst)."),
    ("tagged-digest-algorithms", None, None, str,
     "Digest algorithms a client listing the option tag sipdist-redirect "
     "(ours) is challenged with, in this order; it weighs every challenge "
     "and prefers SHA-256.  Default: SHA-256, then --digest-algorithms.  "
     "Credentials of either list are accepted."),
    ("monitor", None, False, _flag,
     "Run the pool monitor in this distributor (one per pool): OPTIONS "
     "health checks of every server, down/active marking, rebalancing "
     "(see docs/operations.rst)."),
    ("monitor-interval", None, 5.0, _positiveFloat,
     "Seconds between two health check rounds of the monitor."),
    ("monitor-threshold", None, 3, _positiveInt,
     "Silent checks in a row (no response at all, or no connection) after "
     "which a server is marked down, if they span --monitor-down-after "
     "seconds; any response, a 503 too, means busy, not down."),
    ("monitor-recovery", None, 2, _positiveInt,
     "Good checks in a row after which a server the monitor marked down "
     "is marked active again."),
    ("monitor-timeout", None, 2.0, _positiveFloat,
     "Seconds a health check waits for its answer."),
    ("auto-rebalance", None, True, _flag,
     "Let the monitor even out the load (new server, overloaded server), "
     "not only move the users of down and draining servers."),
    ("move-rate", None, None, _positiveFloat,
     "Users the monitor moves per second at most (default: no limit)."),
    ("drain-rate", None, 50.0, _positiveFloat,
     "Users per second the monitor moves off a draining server at most."),
    ("monitor-down-after", None, 10.0, _positiveFloat,
     "Seconds a server must stay silent (with --monitor-threshold failed "
     "checks) before the monitor marks it down."),
    ("max-moves", None, 500, _positiveInt,
     "Users one plan of the monitor moves at most (the users of a down "
     "server first); later rounds move more if still needed."),
    ("user-weights", None, None, str,
     "File of 'AOR WEIGHT' lines: users heavier than 1 count more in the "
     "load the monitor balances."),
    ("status-listen", None, None, str,
     "Serve the pool's page (GET /), GET /status (JSON: load figures, "
     "counters, the monitor's view) and GET /metrics on this endpoint: "
     "tcp:PORT (127.0.0.1 unless :interface=ADDR), tcp6:PORT (::1) or "
     "ssl:PORT (--tls-cert/--tls-key, or certKey=/privateKey=).  An "
     "address other than loopback needs --status-token or "
     "--status-client-ca."),
    ("status-token", None, None, str,
     "File holding the bearer token (16 characters or more) the status "
     "listener requires: Authorization: Bearer TOKEN, or ?token=TOKEN "
     "once in a browser (then a cookie)."),
    ("status-client-ca", None, None, str,
     "PEM CA certificates: an ssl: --status-listen requires every client "
     "to present a certificate they issued."),
    ("instance", None, None, str,
     "A label (letters, digits, '.', '_', '-') this server adds to the "
     "Server header of its responses, e.g. a run id: lets a script check "
     "that it talks to the servers it started (etc/run-local)."),
    ("log-format", None, "text", str,
     "text (the default) or json: the log file (--logfile) holds one JSON "
     "event a line (twisted.logger's format, read back with "
     "eventsFromJSONLogFile), with one event per distribution decision "
     "(method, Call-ID, user, outcome, server chosen, time taken)."),
    ("log-keep", None, 10, _positiveInt,
     "Rotated log files kept when twistd logs to a file (--logfile; it "
     "rotates at 1 MB): older ones are deleted."),
    ("hep", None, None, str,
     "Send every SIP message this server receives and sends to a Homer "
     "collector (heplify-server, captagent) as HEPv3 over UDP: "
     "udp:HOST:PORT (udp:[IPV6]:PORT), resolved once at start (see "
     "docs/operations.rst, SIP capture)."),
    ("hep-id", None, 2001, _captureId,
     "The capture agent id of --hep's packets (0 to 4294967295), telling "
     "this server's captures apart in Homer."),
    ("hep-password", None, None, str,
     "The authentication key sent in --hep's packets (heplify-server's "
     "HEPv3 password), or none."),
    ("workers", None, 1, _positiveInt,
     "Processes serving this server's ports (distributor, edge, "
     "internal-edge): the process started supervises them, restarting one "
     "that dies; they share every --listen port (SO_REUSEPORT, Linux), "
     "which must be udp:, tcp: or sips: with a port number; worker K serves "
     "--status-listen's port + K - 1 (see docs/operations.rst)."),
    ("worker-id", None, None, _positiveInt,
     "Set by --workers on the processes it starts: this process is worker "
     "K (it shares its ports, names itself in its Server header)."),
    ("next-hop-check", None, 10.0, _nonNegativeFloat,
     "Seconds between the edge's OPTIONS health checks of each --next-hop "
     "(a hop failing two in a row is chosen last until it answers); 0: no "
     "checks."),
]

POLICIES = ("auto", "proxy", "redirect")

DEFAULT_LISTEN = ["udp:5060:interface=127.0.0.1",
                  "tcp:5060:interface=127.0.0.1"]

# Options that may be given several times (lists in the TOML file).
LIST_OPTIONS = ("listen", "inside-listen", "next-hop", "trusted-peer",
                "redirect-user-agent")

_KNOWN = {p[0] for p in PARAMETERS} | set(LIST_OPTIONS) | {"secret"}

_INSTANCE = re.compile(r"[A-Za-z0-9._-]{1,64}")

# "--monitor" alone -> "--monitor=true", for every true-or-false option.
_FLAG_ALONE = {f"--{p[0]}": f"--{p[0]}=true" for p in PARAMETERS
               if p[3] is _flag}


class Options(usage.Options):
    synopsis = "[options]"
    longdesc = (
        "Run a sipdist SIP server: a home server, a distributor, an edge or "
        "an internal edge.  Options may also be given in a TOML file with "
        "--config (same names); the command line overrides the file.  A "
        "true-or-false option given alone (--monitor) means true.")

    optParameters = [
        [name.replace("_", "-"), short, None, description]
        for name, short, default, converter, description in PARAMETERS
    ] + [["config", "c", None, "A TOML file with options (same names)."]]

    def __init__(self):
        usage.Options.__init__(self)
        for name in LIST_OPTIONS:
            self[name] = []

    def parseOptions(self, options=None):
        """
        Parse C{options}; a true-or-false option given alone
        (C{--monitor}) means true.

        Under twistd (which makes these options a sub-command, so they
        have a C{parent}), a mistake ends the process with one line and
        exit status 1 instead of twistd's usage text; twistd then logs to
        a file rotated with at most C{--log-keep} old files, as JSON lines
        with C{--log-format=json}.
        """
        if options is not None:
            options = [_FLAG_ALONE.get(arg, arg) for arg in options]
        # What --workers gives each worker it starts.
        self.argv = list(options if options is not None else sys.argv[1:])
        if self.parent is None:
            return usage.Options.parseOptions(self, options)
        try:
            usage.Options.parseOptions(self, options)
        except usage.UsageError as e:
            raise SystemExit(f"twistd sipdist: {e} (twistd sipdist --help "
                             f"lists the options)")
        from sipdist.logs import useRotatingLogFile
        useRotatingLogFile(self.parent, keep=self["log-keep"],
                           json=self["log-format"] == "json")

    def opt_listen(self, description):
        """
        Where to listen (repeatable): udp:PORT[:interface=ADDR],
        tcp:PORT[:interface=ADDR], sips:PORT[:interface=ADDR] (TLS with
        --tls-cert/--tls-key), or Twisted's ssl:/tls: server endpoint
        strings.  Default: UDP and TCP on 127.0.0.1:5060.
        """
        self["listen"].append(description)

    opt_l = opt_listen

    def opt_inside_listen(self, description):
        """
        Where an edge listens for the servers inside the firewall
        (repeatable; same forms as --listen, other port numbers).  What
        the edge sends inwards names these addresses; --listen faces the
        clients.
        """
        self["inside-listen"].append(description)

    def opt_next_hop(self, uri):
        """
        Where an edge sends requests from outside (repeatable): a SIP URI of
        a home server or an internal edge, e.g.
        sips:home1.example.net or sip:10.0.0.2:5060;transport=tcp;weight=3.
        One is chosen at random per request, in proportion to weight.
        """
        self["next-hop"].append(uri)

    def opt_trusted_peer(self, address):
        """
        An address or network (10.1.0.0/16) allowed to present the pool's
        peer signature (repeatable): with it, a signature from any other
        address does not count.  An address alone never makes a request a
        peer's: servers recognise each other by the signature their shared
        secret makes.
        """
        self["trusted-peer"].append(address)

    def opt_redirect_user_agent(self, pattern):
        """
        A regular expression (repeatable) searched in the User-Agent of
        requests: a client it matches is taken to follow the distribution
        redirect as if it sent the option tag sipdist-redirect.
        """
        self["redirect-user-agent"].append(pattern)

    def postOptions(self):
        fromFile = {}
        if self["config"]:
            fromFile = loadConfig(self["config"])
        for name, short, default, converter, description in PARAMETERS:
            value = self[name]
            if value is None:
                value = fromFile.get(name, default)
            if value is not None and converter is not str:
                try:
                    value = converter(value)
                except (TypeError, ValueError) as e:
                    raise usage.UsageError(f"--{name}: {value!r}: {e}")
            elif value is not None and not isinstance(value, str):
                raise usage.UsageError(f"--{name}: {value!r} is not text")
            self[name] = value
        if not self["listen"]:
            self["listen"] = list(fromFile.get("listen", DEFAULT_LISTEN))
        for name in LIST_OPTIONS[1:]:
            if not self[name]:
                self[name] = list(fromFile.get(name, ()))
        self["secret"] = fromFile.get("secret")
        if self["secret"] is not None and not isinstance(self["secret"], str):
            raise usage.UsageError("--config: secret must be text")
        self._check()

    def _check(self):
        from sipdist.sip.transport import parseListen

        if self["role"] not in ROLES:
            raise usage.UsageError(
                f"--role: {self['role']!r} is not one of {', '.join(ROLES)}")
        if self["name"] is None:
            if self["role"] == "home":
                raise usage.UsageError(
                    "--name: a home server needs its id in the assignment store")
            self["name"] = self["role"]
        if not self["name"] or any(c.isspace() for c in self["name"]):
            raise usage.UsageError(f"--name: {self['name']!r} is not an id")
        for description in self["listen"]:
            if not isinstance(description, str):
                raise usage.UsageError(f"--listen: {description!r} is not text")
            try:
                kind, args, kwargs = parseListen(description)
            except ValueError as e:
                raise usage.UsageError(f"--listen: {e}")
            if kind == "sips" and not (self["tls-cert"] and self["tls-key"]):
                raise usage.UsageError(
                    f"--listen: {description!r} needs --tls-cert and --tls-key")
        self._checkEdge(parseListen)
        if bool(self["tls-cert"]) != bool(self["tls-key"]):
            raise usage.UsageError("--tls-cert and --tls-key go together")
        if self["tls-cert"]:
            from sipdist.sip.tls import ReloadableServerTLS, TLSConfigError
            try:
                self["tls-server-options"] = ReloadableServerTLS(
                    self["tls-cert"], self["tls-key"],
                    self["tls-ca"] or (),
                    self["tls-require-client-cert"])
            except TLSConfigError as e:
                raise usage.UsageError(str(e))
        else:
            self["tls-server-options"] = None
        if self["log-format"] not in ("text", "json"):
            raise usage.UsageError(
                f"--log-format: {self['log-format']!r} is not one of text, "
                f"json")
        if self["redirect-policy"] not in POLICIES:
            raise usage.UsageError(
                f"--redirect-policy: {self['redirect-policy']!r} is not one "
                f"of {', '.join(POLICIES)}")
        from sipdist.roles.distribution import compileUserAgents
        try:
            compileUserAgents(self["redirect-user-agent"])
        except ValueError as e:
            raise usage.UsageError(f"--redirect-user-agent: {e}")
        for name in ("digest-algorithms", "tagged-digest-algorithms"):
            self._checkAlgorithms(name)
        if self["monitor"] and self["role"] != "distributor":
            raise usage.UsageError("--monitor: only a distributor runs the "
                                   "monitor")
        if self["user-weights"]:
            from sipdist.pool.monitor import readWeights
            try:
                readWeights(self["user-weights"])
            except ValueError as e:
                raise usage.UsageError(f"--user-weights: {e}")
        from sipdist.config import ConfigurationError
        from sipdist.pool.status import checkStatusListen
        try:
            checkStatusListen(self)
        except ConfigurationError as e:
            raise usage.UsageError(str(e))
        if self["auth-max-delay"] < 1:
            raise usage.UsageError(
                "--auth-max-delay: the first wait is 1 s; give at least 1")
        if self["min-expires"] > self["max-expires"]:
            raise usage.UsageError("--min-expires is above --max-expires")
        if self["secret-file"]:
            try:
                with open(self["secret-file"], "rb") as f:
                    secret = f.read().strip()
            except OSError as e:
                raise usage.UsageError(
                    f"--secret-file: {self['secret-file']}: {e.strerror}")
            if len(secret) < 16:
                raise usage.UsageError(
                    f"--secret-file: {self['secret-file']}: the secret "
                    f"needs at least 16 characters")
            self["secret"] = secret.decode("utf-8", "replace")
        self._checkStore()
        self._checkCredentials()
        self._checkWorkers()
        instance = self["instance"]
        if instance is not None and not _INSTANCE.fullmatch(instance):
            raise usage.UsageError(
                f"--instance: {instance!r}: use 1 to 64 letters, digits, "
                f"'.', '_' or '-'")

    def _checkWorkers(self):
        from sipdist.workers import WORKER_ROLES, checkShareable, shiftPort

        workerId = self["worker-id"]
        if self["workers"] == 1 and workerId is None:
            return
        if self["role"] not in WORKER_ROLES:
            raise usage.UsageError(
                f"--workers: a {self['role']} keeps its users' registrations "
                f"in its process, so it runs as one; several homes per "
                f"machine are several pool members (see docs/operations.rst)")
        if self["secret"] is None:
            raise usage.UsageError(
                "--workers: give --secret-file: the workers must share the "
                "nonce secret (a challenge made by one is answered to "
                "another)")
        if workerId is None:
            problem = checkShareable(list(self["listen"])
                                     + list(self["inside-listen"]))
            if problem:
                raise usage.UsageError(f"--workers: {problem}")
        if self["status-listen"]:
            try:
                shifted = shiftPort(self["status-listen"],
                                    self["workers"] - 1)
                if workerId is not None:
                    shifted = shiftPort(self["status-listen"], workerId - 1)
            except ValueError as e:
                raise usage.UsageError(f"--status-listen: {e}")
            if workerId is not None:
                self["status-listen"] = shifted

    def _checkAlgorithms(self, name):
        from sipdist.auth.digest import ALGORITHMS

        if self[name] is None:
            return
        known = {a.upper() for a in ALGORITHMS}
        algorithms = [a.strip() for a in self[name].split(",") if a.strip()]
        bad = [a for a in algorithms if a.upper() not in known]
        if not algorithms or bad:
            raise usage.UsageError(
                f"--{name}: {self[name]!r}: choose from "
                f"{', '.join(sorted(ALGORITHMS))}")
        self[name] = algorithms

    def _checkEdge(self, parseListen):
        import ipaddress

        from sipdist.roles.edge import NextHopConfigError, parseNextHop

        for description in self["inside-listen"]:
            if not isinstance(description, str):
                raise usage.UsageError(
                    f"--inside-listen: {description!r} is not text")
            try:
                kind = parseListen(description)[0]
            except ValueError as e:
                raise usage.UsageError(f"--inside-listen: {e}")
            if kind == "sips" and not (self["tls-cert"] and self["tls-key"]):
                raise usage.UsageError(
                    f"--inside-listen: {description!r} needs --tls-cert and "
                    f"--tls-key")
        for uri in self["next-hop"]:
            if not isinstance(uri, str):
                raise usage.UsageError(f"--next-hop: {uri!r} is not text")
            try:
                parseNextHop(uri)
            except NextHopConfigError as e:
                raise usage.UsageError(f"--next-hop: {e}")
        if self["next-hop"] and self["role"] != "edge":
            raise usage.UsageError(
                "--next-hop: only an edge has next hops (the others find "
                "the home servers in the assignment store)")
        for address in self["trusted-peer"]:
            try:
                ipaddress.ip_network(str(address).strip("[]"), strict=False)
            except ValueError:
                raise usage.UsageError(
                    f"--trusted-peer: {address!r} is not an IP address or "
                    f"network")

    def _checkCredentials(self):
        from sipdist.auth.sources import credentialsParsers

        prefix = self["credentials"].split(":", 1)[0].lower()
        known = credentialsParsers()
        if prefix not in known:
            raise usage.UsageError(
                f"--credentials: no credential source for {prefix + ':'!r} "
                f"(known: {', '.join(sorted(p + ':' for p in known))})")

    def _checkStore(self):
        from sipdist.store import storeParsers

        prefix = self["store"].split(":", 1)[0].lower()
        known = storeParsers()
        if prefix not in known:
            raise usage.UsageError(
                f"--store: no store provider for {prefix + ':'!r} "
                f"(known: {', '.join(sorted(p + ':' for p in known))})")


def loadConfig(path):
    """
    Read a TOML options file into a dict keyed by option names.

    @raise usage.UsageError: with one line naming the file and the problem.
    """
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as e:
        raise usage.UsageError(f"--config: {path}: {e.strerror}")
    except tomllib.TOMLDecodeError as e:
        raise usage.UsageError(f"--config: {path}: {e}")
    options = {}
    base = os.path.dirname(os.path.abspath(path))
    for key, value in data.items():
        name = key.replace("_", "-")
        if name not in _KNOWN:
            raise usage.UsageError(f"--config: {path}: unknown option {key!r}")
        if name in LIST_OPTIONS:
            if isinstance(value, str):
                value = [value]
            if not isinstance(value, list):
                raise usage.UsageError(
                    f"--config: {path}: {name} must be a list of strings")
        if name in ("tls-cert", "tls-key", "tls-ca", "secret-file",
                    "bindings-file", "status-token", "status-client-ca") \
                and isinstance(value, str):
            # Paths in the file are relative to the file.
            value = os.path.join(base, value)
        if name in ("store", "credentials") and isinstance(value, str) \
                and value.startswith("file:"):
            value = "file:" + os.path.join(base, value[5:])
        options[name] = value
    return options


def makeService(config, reactor=None, rlimit=None, jit=None):
    """
    Build the server described by C{config}.  The process's soft limit of
    open files is raised to its hard limit first, and C{--max-connections}
    lowered to what it allows (see
    L{sipdist.sip.transport.fitConnectionsToFileLimit}).

    @param reactor: the reactor to run on; the global one when L{None}
        (twistd's).
    @param rlimit: the L{resource} module (the default) or a fake of it.
    @param jit: the C{pypyjit} module (PyPy's, the default) or a fake of
        it: a server process sets the JIT parameters of C{--pypy-jit}
        (L{sipdist.jitparams}).
    @return: a L{MultiService}.
    """
    if reactor is None:
        from twisted.internet import reactor
    if rlimit is None:
        import resource as rlimit
    from sipdist.config import ConfigurationError
    from sipdist.server import buildServer
    from sipdist.sip.transport import fitConnectionsToFileLimit

    config["max-connections"] = fitConnectionsToFileLimit(
        config["max-connections"], rlimit)

    if config.get("workers", 1) > 1 and config.get("worker-id") is None:
        return _supervisor(config, reactor)
    applyJITParameters(config.get("pypy-jit", "default"), jit)
    service = _SipdistService()
    try:
        buildServer(config, reactor).setServiceParent(service)
    except ConfigurationError as e:
        # twistd prints a SystemExit message as one line and exits 1.
        raise SystemExit(f"twistd sipdist: {e}")
    service.warmUp = lambda: _warmUp(config, reactor)
    _prepareOperation(service, config, reactor)
    reactor.callWhenRunning(_freezeStartupObjects)
    return service


def _warmUp(config, reactor):
    """
    C{--warmup}: warm the JIT up (L{sipdist.warmup}) before the ports
    open, and say in one line what it did.  Called when the service
    starts, not when it is built: under twistd the logging is set up by
    then, and setting it up changes what the JIT compiled (global
    objects the compiled code reads), which would undo much of the
    warm-up.
    """
    logins = config.get("warmup", "auto")
    if logins == "auto":
        # A server run by twistd (whose options have a parent); not one
        # built in a process of other work (a test, a tool).
        if getattr(config, "parent", None) is None:
            return
        logins = _autoWarmup()
    from sipdist.warmup import applies, warmUp
    if not logins or not applies(config, reactor):
        return
    _log.info("warm-up: {logins} logins through a throwaway server on "
              "127.0.0.1 before listening (its lines follow)", logins=logins)
    result = warmUp(config, reactor, logins)
    if result is None:
        return
    if result.error is None:
        _log.info("warm-up: {logins} logins in {seconds:.1f} s of CPU",
                  logins=result.logins, seconds=result.seconds)
    else:
        _log.warn("warm-up stopped after {logins} logins "
                  "({seconds:.1f} s of CPU): {error}", logins=result.logins,
                  seconds=result.seconds, error=result.error)


def _supervisor(config, reactor):
    """
    The service of a server run by C{--workers N} processes: it starts and
    watches them (L{sipdist.workers.WorkerPool}).
    """
    from sipdist.workers import WorkerPool, workerCommand

    service = MultiService()
    pool = WorkerPool(reactor, config["workers"],
                      lambda index: workerCommand(config, index),
                      path=os.getcwd())
    pool.setServiceParent(service)
    service.workerPool = pool
    if getattr(config, "parent", None) is not None:
        # Under twistd: SIGHUP (reload) goes on to every worker.  The
        # handler is in place before any socket opens, so that a SIGHUP
        # sent once the server answers never meets the default action
        # (which ends the process).
        _forwardReloadSignal(pool, reactor)
    return service


def _forwardReloadSignal(pool, reactor):
    import signal

    def hangup(signum, frame):
        reactor.callFromThread(pool.signalAll, "HUP")

    signal.signal(signal.SIGHUP, hangup)


# Start-up checks and reloading (SIGHUP).

class _SipdistService(MultiService):
    """
    The service twistd runs: starting it fails (exit status 1, one line
    naming the endpoint) when a listening port cannot be opened, rather
    than leaving a server running without its socket.

    @ivar startupError: what is raised then: L{SystemExit} (one line, exit
        status 1) or, for a daemon, L{StartupError}, which twistd passes
        to the waiting parent process (it exits 1 with the message).
    """

    startupError = SystemExit
    # Called first when the service starts, before the ports open: the
    # warm-up of --warmup (see makeService).
    warmUp = None

    def startService(self):
        if self.warmUp is not None:
            self.warmUp()
        MultiService.startService(self)
        for server in self:
            ready = getattr(getattr(server, "transportService", None),
                            "ready", None)
            failures = []
            if ready is not None:
                # Handled here: the failure ends the start-up.
                ready.addErrback(failures.append)
            if failures:
                failure = failures[0].value
                while hasattr(failure, "subFailure"):
                    failure = failure.subFailure.value
                message = f"twistd sipdist: cannot listen: {failure}"
                if sys.stderr is not sys.__stderr__:
                    # twistd sends stderr to the log: tell the terminal too.
                    print(message, file=sys.__stderr__)
                raise self.startupError(message)


class StartupError(Exception):
    """
    The server cannot start (a daemon's way of saying it to twistd).
    """


_log = Logger()


def _prepareOperation(service, config, reactor):
    """
    What a built server needs to be operated: the C{--instance} label in
    its Server header, the start-up warnings, and (under twistd only,
    whose options have a C{parent}) C{SIGHUP} reloading.
    """
    for server in service:
        if config.get("instance"):
            sip = server.server
            sip.serverHeader = f"{sip.serverHeader} ({config['instance']})"
        if config.get("worker-id"):
            sip = server.server
            sip.serverHeader = (f"{sip.serverHeader} "
                                f"(worker {config['worker-id']})")
        _warnAtStart(server, config, reactor)
    parent = getattr(config, "parent", None)
    if parent is not None:
        # In place now, before twistd opens the sockets: a SIGHUP sent as
        # soon as the server answers must reload, not end it (the default
        # action), however long the reactor takes to start running.
        _installReloadSignal(service, reactor)
        if not parent.get("nodaemon"):
            service.startupError = StartupError


def _warnAtStart(server, config, reactor):
    """
    Log one line for each setting that makes the server useless while it
    looks fine: no credentials for a role that authenticates, a home
    whose C{--name} is not a server of the store.
    """
    role = config.get("role", "home")
    if role != "edge" and config.get("credentials", "memory:") == "memory:":
        _log.warn("no --credentials: no user can log in (every login is "
                  "refused as a wrong password); give --credentials "
                  "file:PATH (see 'sipdist passwd') or ldap://...")
    store = getattr(server, "store", None)
    if role == "home" and store is not None:
        name = config["name"]

        def check():
            d = store.getServer(name)

            def found(record):
                if record is None:
                    _log.warn("--name {name}: no such server in the "
                              "assignment store ({store}): no user is "
                              "served here", name=name,
                              store=config.get("store"))

            d.addCallbacks(found, lambda f: None)

        reactor.callWhenRunning(check)


def reload(service):
    """
    Read again what can be read again without a restart: the credentials
    file (C{--credentials file:PATH}), the assignment file
    (C{--store file:PATH}), the TLS certificate, key and CAs
    (C{--tls-cert}, C{--tls-key}, C{--tls-ca}: connections accepted and
    opened from then on use them, open ones keep theirs) and the monitor's
    C{--user-weights}, each only if it changed.  A bad file keeps the last
    good content and is logged.

    @param service: what L{makeService} returned.
    @return: L{list} of what was read again, e.g. C{["credentials"]}.
    """
    from sipdist.pool.monitor import reloadWeights
    from sipdist.sip.tls import TLSConfigError
    reloaded = []
    for server in service:
        tls = getattr(getattr(server, "transportService", None),
                      "tlsServerOptions", None)
        if getattr(tls, "reload", None) is not None:
            try:
                changed = tls.reload()
            except TLSConfigError as e:
                changed = False
                _log.warn("reload: {error}; the TLS certificate in use "
                          "stays", error=str(e))
            if changed:
                if "tls" not in reloaded:
                    reloaded.append("tls")
                forget = getattr(getattr(server.transport,
                                         "_tlsClientOptions", None),
                                 "forget", None)
                if forget is not None:
                    forget()
        monitor = getattr(server, "monitor", None)
        if monitor is not None:
            try:
                if reloadWeights(monitor):
                    reloaded.append("user-weights")
            except ValueError as e:
                _log.warn("reload: --user-weights: {error}; the weights in "
                          "use stay", error=str(e))
        source = getattr(getattr(server, "checker", None), "source", None)
        check = getattr(source, "check", None)
        if check is not None and check():
            reloaded.append("credentials")
        checkFile = getattr(getattr(server, "store", None), "checkFile", None)
        if checkFile is not None:
            before = getattr(server.store, "_stamp", None)
            checkFile()
            if getattr(server.store, "_stamp", None) != before:
                reloaded.append("store")
    _log.info("reload: {what}", what=", ".join(reloaded) or "nothing changed")
    return reloaded


def _installReloadSignal(service, reactor):
    """
    Make C{SIGHUP} call L{reload} (twistd's path only: tests call
    L{reload}).
    """
    import signal

    def hangup(signum, frame):
        reactor.callFromThread(reload, service)

    signal.signal(signal.SIGHUP, hangup)


def _freezeStartupObjects():
    """
    Move what exists once the server has started (modules, configuration,
    tables built at start) out of the garbage collector's reach: a full
    collection then scans only what traffic created.
    """
    import gc
    gc.collect()
    if hasattr(gc, "freeze"):
        # PyPy has none: its collector is generational already.
        gc.freeze()
