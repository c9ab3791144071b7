# -*- test-case-name: tests.test_interop -*-
"""
Drive servers with real SIP tools (SIPp, sipsak) from trial tests.

Every tool runs through C{reactor.spawnProcess}, bounded in time: the tool's
own timeout is set where it has one, and the process is killed (C{SIGKILL})
when C{timeout} seconds pass, failing the L{Deferred} with L{ToolTimeout}.

What the installed tools support (Debian packages, checked on the test
machine):

  - SIPp 3.6.1 (C{sip-tester}, "SIPp v3.6.1-SCTP-PCAP-RTPSTREAM"): UDP
    (C{-t u1}) and TCP (C{-t t1}); B{no TLS} (C{-t l1} exits with "To use a
    TLS transport you must compile SIPp with OpenSSL").  L{sippSupportsTLS}
    tells; L{requireSippTLS} skips (fails under C{CI=true}).
  - sipsak 0.9.8.1: C{-E udp}, C{-E tcp} and C{-E tls} (GnuTLS).  It does
    not accept C{sips:} URIs, does not refuse a server certificate from an
    unknown CA, and cannot read a response over TLS 1.3 (OpenSSL's session
    tickets confuse it): a server tested with it over TLS must cap TLS at
    1.2 (L{sipdist.sip.tls.serverContextFactory}'s C{maximumVersion}).  It cuts
    the last digit of a five-digit port in the Request-URI and To
    (C{sip:127.0.0.1:15099} becomes C{sip:127.0.0.1:1509}; the packets still
    go to 15099): give the address with C{proxy="127.0.0.1:15099"} and a
    URI without port.  Exit status 0 is a 200, 1 another final response,
    2 a local error, 3 a remote error or no answer.
"""

import functools
import os
import re
import shutil
import signal
import socket
import tempfile

from twisted.internet.defer import Deferred
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.protocol import ProcessProtocol
from twisted.python.filepath import FilePath
from twisted.trial import unittest

HERE = FilePath(__file__).parent()
SIPP_SCENARIOS = HERE.child("sipp")
OPTIONS_SCENARIO = SIPP_SCENARIOS.child("options.xml").path
OPTIONS_USERS_SCENARIO = SIPP_SCENARIOS.child("options_users.xml").path

# Debian package holding each tool, for the skip message.
PACKAGES = {
    "sipp": "sip-tester",
    "sipsak": "sipsak",
    "slapd": "slapd",
    "kamailio": "kamailio",
    "openssl": "openssl",
    "baresip": "baresip-core",
    "linphonec": "linphone-cli",
    "twinkle-console": "twinkle-console",
    "systemd-analyze": "systemd",
    "nft": "nftables",
    "chromium": "chromium",
    "valgrind": "valgrind",
}

SIPP_TRANSPORTS = {"u1": "udp", "un": "udp", "t1": "tcp", "tn": "tcp",
                   "l1": "tcp", "ln": "tcp"}
SIPSAK_TRANSPORTS = ("udp", "tcp", "tls")


def inCI():
    """
    Whether missing real parts must fail instead of skip (C{CI=true}).
    """
    return os.environ.get("CI", "").lower() == "true"


def skipOrFail(reason):
    """
    Skip the running test for C{reason}; under C{CI=true} fail it instead.

    @raise unittest.SkipTest: outside CI.
    @raise unittest.FailTest: under C{CI=true}.
    """
    if inCI():
        raise unittest.FailTest(f"{reason} (CI=true: real parts are required)")
    raise unittest.SkipTest(reason)


def requireTool(name):
    """
    The path of the executable C{name}, or skip the test ("sipp not
    installed: apt-get install sip-tester"); under C{CI=true}, fail it.
    """
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    if path is None:
        package = PACKAGES.get(name, name)
        skipOrFail(f"{name} not installed: apt-get install {package}")
    return path


def freePort(kind="udp", host="127.0.0.1"):
    """
    A port number free on C{host} for C{kind} (C{"udp"} or C{"tcp"}) now.

    The socket is bound to port 0 and closed, so another process may take
    the port before the caller binds it (a race no test can close); where
    the code under test can listen on port 0 and report its port, prefer
    that.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    kinds = {"udp": socket.SOCK_DGRAM, "tcp": socket.SOCK_STREAM}
    if kind not in kinds:
        raise ValueError(f"kind must be 'udp' or 'tcp', not {kind!r}")
    with socket.socket(family, kinds[kind]) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def freeSIPPort(host="127.0.0.1", attempts=20):
    """
    A port free on C{host} for both TCP and UDP now (a SIP port: twinkle
    listens on both), with the race of L{freePort}.
    """
    for _ in range(attempts):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind((host, 0))
            port = tcp.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind((host, port))
                except OSError:
                    continue
                return port
    raise OSError(f"no port free for both TCP and UDP on {host} "
                  f"after {attempts} attempts")


class ToolTimeout(Exception):
    """
    A tool ran longer than allowed and was killed.

    @ivar argv: the command line.
    @ivar timeout: the time allowed, in seconds.
    @ivar stdout: what it wrote to standard output (text).
    @ivar stderr: what it wrote to standard error (text).
    """

    def __init__(self, argv, timeout, stdout, stderr):
        Exception.__init__(
            self, f"{argv[0]} killed after {timeout}s: {' '.join(argv)}\n"
                  f"stdout: {stdout[-2000:]}\nstderr: {stderr[-2000:]}")
        self.argv = argv
        self.timeout = timeout
        self.stdout = stdout
        self.stderr = stderr


class _Collector(ProcessProtocol):
    def __init__(self, argv, timeout):
        self.argv = argv
        self.timeout = timeout
        self.stdout = []
        self.stderr = []
        self.timedOut = False
        self.done = Deferred()
        self.timer = None

    def connectionMade(self):
        self.transport.closeStdin()

    def outReceived(self, data):
        self.stdout.append(data)

    def errReceived(self, data):
        self.stderr.append(data)

    def kill(self):
        self.timer = None
        self.timedOut = True
        try:
            self.transport.signalProcess("KILL")
        except Exception:
            pass

    def processEnded(self, reason):
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        stdout = b"".join(self.stdout).decode("utf-8", "replace")
        stderr = b"".join(self.stderr).decode("utf-8", "replace")
        if self.timedOut:
            self.done.errback(
                ToolTimeout(self.argv, self.timeout, stdout, stderr))
            return
        value = reason.value
        if isinstance(value, ProcessDone):
            code = 0
        elif isinstance(value, ProcessTerminated) and value.exitCode is not None:
            code = value.exitCode
        else:
            code = -(value.signal or signal.SIGKILL)
        self.done.callback((code, stdout, stderr))


def runProcess(reactor, argv, timeout, path=None, env=None):
    """
    Run C{argv} with standard input closed, killing it after C{timeout}
    seconds.

    @return: a L{Deferred} firing with C{(exitCode, stdout, stderr)}
        (C{exitCode} is minus the signal number if a signal ended it; the
        output is text) or failing with L{ToolTimeout}.
    """
    argv = [str(a) for a in argv]
    collector = _Collector(argv, timeout)
    if env is None:
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"),
               "LANG": "C", "HOME": os.environ.get("HOME", "/tmp"),
               "TERM": "dumb"}
    reactor.spawnProcess(collector, argv[0], argv, env=env, path=path)
    collector.timer = reactor.callLater(timeout, collector.kill)
    return collector.done


@functools.lru_cache(maxsize=None)
def sippVersion():
    """
    The first line of C{sipp -v} (e.g. C{"SIPp v3.6.1-SCTP-PCAP-RTPSTREAM."}),
    read synchronously, once per test run (a local command that returns at
    once; bounded to 10 seconds).
    """
    import subprocess
    path = requireTool("sipp")
    result = subprocess.run([path, "-v"], capture_output=True, timeout=10,
                            stdin=subprocess.DEVNULL)
    for line in result.stdout.decode("utf-8", "replace").splitlines():
        if "SIPp" in line:
            return line.strip()
    return ""


def sippSupportsTLS():
    """
    Whether the installed SIPp was built with TLS (C{-t l1}); its version
    string lists the optional features built in, e.g. C{-TLS-SCTP-PCAP}.
    """
    return re.search(r"\bTLS\b", sippVersion().replace("-", " ")) is not None


def requireSippTLS():
    """
    Skip (fail under C{CI=true}) unless the installed SIPp supports TLS.
    """
    if not sippSupportsTLS():
        skipOrFail(f"sipp has no TLS ({sippVersion()}): build sipp with "
                   f"OpenSSL, or test TLS with sipsak -E tls")


def _target(target):
    if isinstance(target, tuple):
        host, port = target
        if ":" in host:
            host = f"[{host}]"
        return f"{host}:{port}"
    return target


def runSipp(reactor, scenario, target, transport="u1", calls=1, rate=None,
            extra=(), timeout=30, localPort=None, localIP="127.0.0.1",
            username=None, password=None, injectionFile=None, service=None,
            workdir=None):
    """
    Run SIPp as a client against C{target}.

    @param scenario: a built-in scenario name for C{-sn} (C{"uac"},
        C{"uas"}, ...) or the path of a scenario file for C{-sf} (e.g.
        L{OPTIONS_SCENARIO}).
    @param target: C{"127.0.0.1:5060"} or C{(host, port)}.
    @param transport: C{"u1"} (UDP), C{"t1"} (TCP), C{"l1"} (TLS, only if
        L{sippSupportsTLS}; skips otherwise), or another C{-t} mode.
    @param calls: C{-m}: SIPp exits after this many calls.
    @param rate: C{-r}: calls per second (SIPp's default is 10).
    @param extra: more arguments, e.g. C{["-trace_msg"]}.
    @param timeout: SIPp's own C{-timeout} (with C{-timeout_error}, so it
        exits non-zero when reached); the process is killed 5 seconds later.
    @param localPort: C{-p}; by default a L{freePort} of the transport's kind.
    @param localIP: C{-i} and, with C{-bind_local}, the source address.
    @param username: C{-au}, for C{[authentication]} in the scenario.
    @param password: C{-ap}.
    @param injectionFile: C{-inf CSV}: values for C{[field0]}, C{[field1]}...
        (first line C{SEQUENTIAL}, C{RANDOM} or C{USER}; fields separated
        by C{;}), e.g. users and passwords for
        C{[authentication username=[field0] password=[field1]]} as in
        L{OPTIONS_USERS_SCENARIO}.
    @param service: C{-s}: the user part of the Request-URI.
    @param workdir: where SIPp runs and writes its logs; a temporary
        directory, removed afterwards, by default.

    @return: a L{Deferred} firing with C{(exitCode, stdout, stderr)}: 0 when
        all calls succeeded, 1 when some failed, 255 or other on errors
        (including the timeout), or failing with L{ToolTimeout}.
    """
    path = requireTool("sipp")
    if transport.startswith("l"):
        requireSippTLS()
    if localPort is None:
        localPort = freePort(SIPP_TRANSPORTS.get(transport, "udp"), localIP)
    argv = [path, _target(target)]
    if os.sep in scenario or scenario.endswith(".xml"):
        argv += ["-sf", scenario]
    else:
        argv += ["-sn", scenario]
    argv += ["-t", transport, "-m", calls,
             "-i", localIP, "-bind_local", "-p", localPort,
             "-timeout", f"{timeout}s", "-timeout_error", "-nostdin"]
    if rate is not None:
        argv += ["-r", rate]
    if service is not None:
        argv += ["-s", service]
    if username is not None:
        argv += ["-au", username]
    if password is not None:
        argv += ["-ap", password]
    if injectionFile is not None:
        argv += ["-inf", injectionFile]
    argv += list(extra)

    cleanup = workdir is None
    if cleanup:
        workdir = tempfile.mkdtemp(prefix="sipp-")
    d = runProcess(reactor, argv, timeout + 5, path=workdir)

    def removeWorkdir(result):
        shutil.rmtree(workdir, ignore_errors=True)
        return result

    if cleanup:
        d.addBoth(removeWorkdir)
    return d


def runSipsak(reactor, uri, transport="udp", extra=(), timeout=10,
              proxy=None, caCertificate=None, clientCertificate=None,
              localIP="127.0.0.1", t1=None):
    """
    Run sipsak: by default it sends one OPTIONS to C{uri} (C{-s}).

    @param uri: a C{sip:} URI (sipsak refuses C{sips:}).  See the module
        docstring about five-digit ports: pass the address as C{proxy}.
    @param transport: C{"udp"}, C{"tcp"} or C{"tls"} (C{-E}).
    @param extra: more arguments, e.g. C{["-U", "-a", "secret"]} to
        register, C{["-vv"]} to print the messages.
    @param timeout: the process is killed after this many seconds.
    @param proxy: C{"127.0.0.1:PORT"}: where to send the request (C{-p}).
    @param caCertificate: C{--tls-ca-cert} (sipsak does not refuse an
        unknown CA anyway).
    @param clientCertificate: C{--tls-client-cert}.
    @param localIP: C{--local-ip}.
    @param t1: C{--timer-t1} in milliseconds; a lower value makes sipsak
        give up sooner (64*T1) when nothing answers over UDP.

    @return: a L{Deferred} firing with C{(exitCode, stdout, stderr)}: 0 on
        200, 1 on another final response, 2 on a local error, 3 on a remote
        error or no answer; or failing with L{ToolTimeout}.
    """
    path = requireTool("sipsak")
    if transport not in SIPSAK_TRANSPORTS:
        raise ValueError(f"transport must be one of {SIPSAK_TRANSPORTS}")
    argv = [path, "-s", uri, "-E", transport, "--local-ip", localIP]
    if proxy is not None:
        argv += ["-p", _target(proxy)]
    if caCertificate is not None:
        argv += ["--tls-ca-cert", caCertificate]
    if clientCertificate is not None:
        argv += ["--tls-client-cert", clientCertificate]
    if t1 is not None:
        argv += ["--timer-t1", t1]
    argv += list(extra)
    return runProcess(reactor, argv, timeout)


async def runSippUsers(reactor, scenario, target, users, **kw):
    """
    Run SIPp once per C{(user, password)} in C{users}, one after the other,
    each with C{-s USER -au USER -ap PASSWORD} (SIPp 3.6.1 cannot take
    per-call credentials from an injection file, see L{OPTIONS_USERS_SCENARIO}).

    @param kw: passed to L{runSipp}.

    @return: a L{list} of C{(user, (exitCode, stdout, stderr))}, in order.
    """
    results = []
    for user, password in users:
        result = await runSipp(reactor, scenario, target, service=user,
                               username=user, password=password, **kw)
        results.append((user, result))
    return results
