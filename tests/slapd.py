"""
A real OpenLDAP C{slapd} for tests: a temporary C{slapd.conf} built from the
schemas in C{etc/ldap/}, an C{mdb} database in a temporary directory, a free
loopback port; started, stopped and restarted with bounded waits.

If C{slapd} is not installed the tests using it are skipped, except when
C{CI=true}: then that is a failure.
"""

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ETC_LDAP = os.path.join(ROOT, "etc", "ldap")
SYSTEM_SCHEMA = "/etc/ldap/schema"
MODULE_DIR = "/usr/lib/ldap"
SUFFIX = "dc=example,dc=com"
ROOT_DN = "cn=admin,dc=example,dc=com"
ROOT_PW = "secret-for-tests"

BASE_LDIF = f"""\
dn: {SUFFIX}
objectClass: dcObject
objectClass: organization
dc: example
o: Example

dn: ou=servers,{SUFFIX}
objectClass: organizationalUnit
ou: servers

dn: ou=users,{SUFFIX}
objectClass: organizationalUnit
ou: users

dn: ou=pools,{SUFFIX}
objectClass: organizationalUnit
ou: pools

dn: ou=people,{SUFFIX}
objectClass: organizationalUnit
ou: people
"""


def _find(name):
    for directory in os.environ.get("PATH", "").split(os.pathsep) + [
            "/usr/sbin", "/usr/local/sbin", "/sbin"]:
        path = os.path.join(directory, name)
        if os.access(path, os.X_OK):
            return path
    return None


def missing():
    """
    @return: why a real slapd cannot run here, or L{None} if it can.
    """
    if _find("slapd") is None or _find("slapadd") is None:
        return "slapd/slapadd not installed (Debian packages slapd, ldap-utils)"
    if not os.path.exists(os.path.join(SYSTEM_SCHEMA, "core.schema")):
        return f"no {SYSTEM_SCHEMA}/core.schema (Debian package slapd)"
    return None


def skipOrFail(case, needSyncprov=False):
    """
    Skip C{case} if slapd cannot run (or, with C{needSyncprov}, has no
    syncprov overlay for replication), or fail it when C{CI=true}.
    """
    reason = missing()
    if reason is None and needSyncprov and not any(
            os.path.exists(os.path.join(MODULE_DIR, name))
            for name in ("syncprov.la", "syncprov.so")):
        reason = (f"no syncprov overlay in {MODULE_DIR} (Debian package "
                  f"slapd)")
    if reason is None:
        return
    if os.environ.get("CI") == "true":
        case.fail(f"CI=true and a real slapd is needed: {reason}")
    from twisted.trial.unittest import SkipTest
    raise SkipTest(reason)


def freePort():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Slapd:
    """
    One slapd process on C{127.0.0.1:port}.

    @param tls: C{(certificate, key, ca)} PEM paths: the server offers
        StartTLS on C{port} and listens for LDAPS on C{ldapsPort}.
    @param globalLines: more lines for the global section of slapd.conf
        (C{serverID}, C{moduleload}).
    @param databaseLines: more lines for the database section (C{syncrepl},
        C{overlay}).
    @ivar url: C{ldap://127.0.0.1:PORT}
    @ivar ldapsPort: the LDAPS port, or L{None} without C{tls}.
    """

    def __init__(self, directory=None, port=None, tls=None, globalLines=(),
                 databaseLines=()):
        self.directory = directory or tempfile.mkdtemp(prefix="sipdist-slapd-")
        self.port = port or freePort()
        self.url = f"ldap://127.0.0.1:{self.port}"
        self.ldapsPort = freePort() if tls else None
        self.process = None
        self.conf = os.path.join(self.directory, "slapd.conf")
        db = os.path.join(self.directory, "db")
        os.makedirs(db, exist_ok=True)
        schemas = [os.path.join(SYSTEM_SCHEMA, "core.schema"),
                   os.path.join(SYSTEM_SCHEMA, "cosine.schema"),
                   os.path.join(ETC_LDAP, "sipdist.schema"),
                   os.path.join(ETC_LDAP, "msrtc-example.schema")]
        moduleDir = MODULE_DIR
        lines = [f"include {s}" for s in schemas]
        lines += [
            f"pidfile {self.directory}/slapd.pid",
            f"argsfile {self.directory}/slapd.args",
        ]
        if os.path.exists(os.path.join(moduleDir, "back_mdb.so")):
            lines += [f"modulepath {moduleDir}", "moduleload back_mdb"]
        if tls:
            certificate, key, ca = tls
            lines += [f"TLSCACertificateFile {ca}",
                      f"TLSCertificateFile {certificate}",
                      f"TLSCertificateKeyFile {key}"]
        lines += list(globalLines)
        lines += [
            "sizelimit unlimited",
            "database mdb",
            "maxsize 2147483648",
            f'suffix "{SUFFIX}"',
            f'rootdn "{ROOT_DN}"',
            f"rootpw {ROOT_PW}",
            f"directory {db}",
            "index objectClass eq",
            "index sipdistAOR eq",
            "index sipdistHomeServer eq",
            "index sipdistServerId eq",
            "index msRTCSIP-PrimaryUserAddress eq",
            "index msRTCSIP-PrimaryHomeServer eq",
        ]
        lines += list(databaseLines)
        with open(self.conf, "w") as f:
            f.write("\n".join(lines) + "\n")

    def load(self, ldif):
        """
        Add entries with C{slapadd} (slapd must be stopped).
        """
        assert self.process is None, "slapadd needs slapd stopped"
        path = os.path.join(self.directory, "load.ldif")
        with open(path, "w") as f:
            f.write(ldif)
        done = subprocess.run(
            [_find("slapadd"), "-q", "-f", self.conf, "-l", path],
            capture_output=True, text=True, timeout=600)
        if done.returncode != 0:
            raise RuntimeError(f"slapadd failed: {done.stderr.strip()}")

    def start(self, timeout=15):
        """
        Start slapd and wait until it accepts connections.
        """
        log = open(os.path.join(self.directory, "slapd.log"), "ab")
        urls = f"ldap://127.0.0.1:{self.port}/"
        if self.ldapsPort:
            urls += f" ldaps://127.0.0.1:{self.ldapsPort}/"
        self.process = subprocess.Popen(
            [_find("slapd"), "-d", "0", "-f", self.conf, "-h", urls],
            stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        self.stop()
        with open(os.path.join(self.directory, "slapd.log")) as f:
            tail = f.read()[-2000:]
        raise RuntimeError(f"slapd did not start on port {self.port}: {tail}")

    def stop(self, timeout=10):
        """
        Stop slapd (SIGTERM, then SIGKILL after C{timeout} seconds).
        """
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout)

    def kill(self):
        """
        Kill slapd with SIGKILL, as a crash would.
        """
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.kill()
            process.wait(10)

    def cleanup(self):
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)


def startedSlapd(case, ldif=BASE_LDIF):
    """
    A running slapd loaded with C{ldif}, stopped and removed when C{case}
    ends; skips or fails C{case} if slapd cannot run.
    """
    skipOrFail(case)
    server = Slapd()
    case.addCleanup(server.cleanup)
    server.load(ldif)
    server.start()
    return server


def replicationLines(serverId, otherURL, sync=False):
    """
    The slapd.conf lines making a server one of two providers in
    multi-provider replication with the one at C{otherURL}: its server id,
    the syncprov overlay, and a syncrepl consumer of the other provider.

    @param sync: whether the database syncs each write to disk, as a
        production one does (slower).
    @return: C{(globalLines, databaseLines)}.
    """
    globalLines = [f"serverID {serverId}", "moduleload syncprov"]
    databaseLines = [] if sync else [
        # Test data: no fsync per write (the initial refresh writes every
        # entry the other provider holds, 10 ms each with fsync).
        "dbnosync"]
    databaseLines += [
        "index entryCSN eq",
        "index entryUUID eq",
        f"syncrepl rid={serverId:03d} provider={otherURL}"
        f' bindmethod=simple binddn="{ROOT_DN}" credentials={ROOT_PW}'
        f' searchbase="{SUFFIX}" type=refreshAndPersist'
        ' retry="1 +" timeout=1 network-timeout=1',
        "multiprovider on",
        "overlay syncprov",
    ]
    return globalLines, databaseLines


def replicatedPair(case, ldif=BASE_LDIF, sync=False):
    """
    Two slapd providers replicating each other (multi-provider syncrepl),
    both running; the entries of C{ldif} are loaded into the first and
    replicated to the second.  Both are killed and removed when C{case}
    ends; skips or fails C{case} if slapd cannot run.

    @param sync: see L{replicationLines}.
    @return: the two L{Slapd}s.
    """
    skipOrFail(case, needSyncprov=True)
    ports = [freePort(), freePort()]
    servers = []
    for i in (0, 1):
        globalLines, databaseLines = replicationLines(
            i + 1, f"ldap://127.0.0.1:{ports[1 - i]}", sync)
        server = Slapd(port=ports[i], globalLines=globalLines,
                       databaseLines=databaseLines)
        case.addCleanup(server.cleanup)
        servers.append(server)
    first, second = servers
    first.load(ldif)
    first.start()
    second.start()
    return first, second
