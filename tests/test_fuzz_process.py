"""
The conformance corpus and a few thousand mutated requests sent to a real
server process (twistd sipdist, home role, on loopback) over UDP and TCP:
afterwards the server still answers, its status counts every drop under a
reason, and its log holds no traceback.
"""

import random
import socket
import time

from twisted.trial.unittest import SynchronousTestCase

from tests.conformance.messages import CORPUS
from tests.test_message_properties import JUNK_PIECES, REQUEST
from tests.test_resources import ServerProcess

MUTANTS = 2000          # over UDP
TCP_MUTANTS = 200       # one connection each
SEED = 4475
SEND_SECONDS = 60       # bound on the sending loop


def mutate(rng, data):
    """
    C{data} with one to three random edits: junk inserted or replacing a
    byte, bytes deleted, a line repeated, or the end cut off.
    """
    pieces = JUNK_PIECES
    for _ in range(rng.randint(1, 3)):
        kind = rng.choice(("insert", "delete", "replace", "dup", "truncate"))
        at = rng.randint(0, len(data))
        if kind == "insert":
            data = data[:at] + rng.choice(pieces) + data[at:]
        elif kind == "delete":
            data = data[:at] + data[at + rng.randint(1, 8):]
        elif kind == "replace":
            data = data[:at] + rng.choice(pieces) + data[at + 1:]
        elif kind == "dup":
            lines = data.split(b"\r\n")
            i = rng.randrange(len(lines))
            lines.insert(i, lines[i])
            data = b"\r\n".join(lines)
        else:
            data = data[:at]
    return data


class FuzzProcessTests(SynchronousTestCase):
    """
    A real server process under the corpus and mutated requests.
    """

    def test_noTracebacks(self):
        server = ServerProcess(self)
        rng = random.Random(SEED)
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(sock.close)
        sock.bind(("127.0.0.1", 0))
        sock.setblocking(False)
        corpus = [case.data for case in CORPUS]
        mutants = [mutate(rng, REQUEST) for _ in range(MUTANTS)]
        deadline = time.monotonic() + SEND_SECONDS
        answers = 0
        for i, data in enumerate(corpus + mutants):
            if time.monotonic() > deadline:
                break
            data = data.replace(b"z9hG4bK", b"z9hG4bKf%d" % i)
            sock.sendto(data, ("127.0.0.1", server.udp))
            if i % 50 == 0:
                # Pace the sender so the port's buffer is not what drops.
                time.sleep(0.02)
            try:
                while sock.recv(65535):
                    answers += 1
            except BlockingIOError:
                pass
        for i in range(TCP_MUTANTS):
            if time.monotonic() > deadline:
                break
            data = corpus[i % len(corpus)] if i < len(corpus) else mutate(
                rng, REQUEST)
            with socket.create_connection(("127.0.0.1", server.tcp),
                                          timeout=5) as s:
                s.sendall(data)
                s.settimeout(0.2)
                try:
                    s.recv(65535)
                except (socket.timeout, ConnectionError):
                    pass
        self.assertTrue(server.optionsOverUDP(), server.logText()[-3000:])
        self.assertTrue(server.optionsOverTCP(), server.logText()[-3000:])
        self.assertGreater(answers, 0)
        transport = server.statusDocument()["transport"]
        self.assertEqual(sum(transport["drop_reasons"].values()),
                         transport["dropped"])
        self.assertNotIn("Internal Error", transport["drop_reasons"])
        server.stop()
        log = server.logText()
        self.assertTrue(log.strip())
        for marker in ("Traceback", "Unhandled", "CRITICAL", "OverflowError"):
            self.assertNotIn(marker, log, log[-5000:])
