"""
A hung directory, as an operator meets it: a real slapd on loopback, a real
C{twistd sipdist --role=distributor} process with the LDAP store (C{ttl=2},
default C{timeout} 2 s), REGISTERs with Digest over UDP from a client that
follows the distribution redirect (so each answer is the distributor's own).

    .venv/bin/python bench/bench_ldap_hang.py

It warms the cache for 10 users, lets their entries expire, stops slapd
with SIGSTOP (its socket stays open, nothing answers) and prints, per
REGISTER, the final response and the seconds it took: users with an
expired entry, new users, and after 10 s more of outage; then SIGCONT, and
the time until a new user is served again.  The homes' URIs are ports
nobody listens on.
"""

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from sipdist.auth.client import answerChallenge  # noqa: E402
from tests import slapd  # noqa: E402

NAMES = [f"u{i}" for i in range(40)]


def ldif():
    text = "".join(f"""
dn: sipdistServerId={h},ou=servers,{slapd.SUFFIX}
objectClass: sipdistServer
sipdistServerId: {h}
sipdistServerURI: sip:127.0.0.1:{slapd.freePort()}
""" for h in ("home1", "home2"))
    return text + "".join(f"""
dn: sipdistAOR=sip:{n}@example.com,ou=users,{slapd.SUFFIX}
objectClass: sipdistUser
sipdistAOR: sip:{n}@example.com
sipdistHomeServer: home2
""" for n in NAMES)


class Client:
    def __init__(self, port):
        self.port = port
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.local = self.sock.getsockname()[1]

    def request(self, user, callId, cseq, auth=None):
        text = (
            f"REGISTER sip:example.com SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{self.local};"
            f"branch=z9hG4bK{uuid.uuid4().hex};rport\r\n"
            f"Max-Forwards: 70\r\nFrom: <sip:{user}@example.com>;tag=t{user}\r\n"
            f"To: <sip:{user}@example.com>\r\nCall-ID: {callId}\r\n"
            f"CSeq: {cseq} REGISTER\r\n"
            f"Contact: <sip:{user}@127.0.0.1:{self.local}>\r\nExpires: 60\r\n"
            f"Supported: sipdist-redirect\r\n")
        if auth:
            text += f"Authorization: {auth}\r\n"
        self.sock.sendto((text + "Content-Length: 0\r\n\r\n").encode(),
                         ("127.0.0.1", self.port))

    def final(self, timeout):
        end = time.monotonic() + timeout
        while True:
            self.sock.settimeout(max(0.01, end - time.monotonic()))
            try:
                data = self.sock.recv(65535)
            except socket.timeout:
                return None, b""
            code = int(data.split(b" ", 2)[1])
            if code >= 200:
                return code, data

    def ready(self, timeout=30):
        """
        Wait until the server answers (it is starting).
        """
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            self.request("u0", uuid.uuid4().hex, 1)
            if self.final(0.5)[0] is not None:
                return
        raise SystemExit("the distributor did not start")

    def register(self, user, timeout=40):
        """
        @return: C{(status line or None, seconds)} of the authenticated
            REGISTER.
        """
        callId = uuid.uuid4().hex
        self.request(user, callId, 1)
        code, data = self.final(10)
        if code != 401:
            return f"no challenge ({code})", None
        text = data.decode()
        challenge = [line.split(":", 1)[1].strip()
                     for line in text.split("\r\n")
                     if line.lower().startswith("www-authenticate:")]
        auth, _ = answerChallenge(challenge, "REGISTER", "sip:example.com",
                                  user, "pw")
        started = time.monotonic()
        self.request(user, callId, 2, auth)
        code, data = self.final(timeout)
        line = data.split(b"\r\n")[0].decode()[8:] if code else "no answer"
        return line, round(time.monotonic() - started, 3)


def main():
    work = tempfile.mkdtemp(prefix="sipdist-bench-")
    server = slapd.Slapd()
    server.load(slapd.BASE_LDIF + ldif())
    server.start()
    with open(f"{work}/secret", "w") as f:
        f.write(slapd.ROOT_PW + "\n")
    with open(f"{work}/nonce", "w") as f:
        f.write(uuid.uuid4().hex + "\n")
    with open(f"{work}/ldap.conf", "w") as f:
        f.write(f"bindDN = {slapd.ROOT_DN}\npasswordFile = {work}/secret\n")
    port = slapd.freePort()
    store = (f"{server.url}/{slapd.SUFFIX}?config={work}/ldap.conf&ttl=2"
             f"&refresh=0")
    process = subprocess.Popen(
        [sys.executable, "-m", "twisted", "sipdist", "--role=distributor",
         f"--store={store}", "--domain=example.com",
         "--credentials=memory:" + ",".join(f"{n}:pw" for n in NAMES),
         f"--listen=udp:{port}:interface=127.0.0.1",
         f"--secret-file={work}/nonce"],
        stdout=open(f"{work}/twistd.log", "w"), stderr=subprocess.STDOUT)
    client = Client(port)
    try:
        client.ready()
        for n in NAMES[:10]:
            print("warm          ", n, *client.register(n))
        time.sleep(2.5)
        os.kill(server.process.pid, signal.SIGSTOP)
        for n in NAMES[:5]:
            print("stopped, expired entry", n, *client.register(n))
        for n in NAMES[20:25]:
            print("stopped, new user     ", n, *client.register(n))
        time.sleep(10)
        for n in NAMES[25:28]:
            print("stopped 10 s more, new", n, *client.register(n))
        os.kill(server.process.pid, signal.SIGCONT)
        resumed = time.monotonic()
        for i in range(300):
            line, seconds = client.register(NAMES[30 + i % 10])
            if not line.startswith("503"):
                print(f"after SIGCONT: {line} in {seconds} s, "
                      f"{time.monotonic() - resumed:.2f} s after SIGCONT")
                break
            time.sleep(0.1)
    finally:
        try:
            os.kill(server.process.pid, signal.SIGCONT)
        except OSError:
            pass
        process.terminate()
        process.wait()
        server.cleanup()


if __name__ == "__main__":
    main()
