"""
Micro-benchmark of SIP Digest authentication on one core: how many
requests per second L{DigestAuthenticator} handles, for each path a
REGISTER can take.

    /tmp/venv/bin/python bench/bench_digest.py [SECONDS_PER_CASE]

Prints one line per case: operations per second and microseconds each,
median and best over batches of 1000.
The credential source is in memory (file or memory source), so every
result fires synchronously, as on a real server with those sources.
"""

import sys
import time

from twisted.internet.task import Clock

from sipdist.auth.client import answerChallenge, verifySignature
from sipdist.auth.credentials import (
    DigestHashChecker, InMemoryDigestHashSource)
from sipdist.auth.limiter import FailureLimiter
from sipdist.auth.server import Authenticated, DigestAuthenticator

URI = "sip:example.com"


def measure(name, seconds, prepare, operation):
    """
    Run C{operation(item)} for C{seconds}, in batches, and print the median
    and the best batch rate (the machine may be shared: the best is the
    least disturbed); C{prepare(n)} builds the inputs of a batch outside
    the timing.
    """
    batch = 1000
    rates = []
    spent = 0.0
    while spent < seconds:
        inputs = prepare(batch)
        start = time.perf_counter()
        for item in inputs:
            operation(item)
        elapsed = time.perf_counter() - start
        spent += elapsed
        rates.append(batch / elapsed)
    rates.sort()
    median, best = rates[len(rates) // 2], rates[-1]
    print(f"{name:<42} median {median:>9,.0f}/s ({1e6 / median:5.1f} us)"
          f"  best {best:>9,.0f}/s ({1e6 / best:5.1f} us)")


def main(seconds=2.0):
    clock = Clock()
    clock.advance(1_700_000_000)
    users = {f"user{i}": f"password{i}" for i in range(1000)}
    auth = DigestAuthenticator(
        "example.com", b"benchmark secret, 32 bytes long!",
        DigestHashChecker(InMemoryDigestHashSource(users)), clock,
        limiter=FailureLimiter(clock, threshold=10**9, window=60),
        maxNonces=10**7)
    challenge = [v for _, v in auth.challenge().headers]

    def answers(algorithmName):
        counter = [0]
        values = []

        def prepare(n):
            out = []
            for _ in range(n):
                # A fresh nonce every 1000 answers, as clients would have.
                if counter[0] % 1000 == 0:
                    values[:] = [v for _, v in auth.challenge().headers
                                 if f"algorithm={algorithmName}," in v]
                counter[0] += 1
                user = f"user{counter[0] % 1000}"
                out.append(answerChallenge(
                    values, "REGISTER", URI, user, users[user],
                    nc=counter[0])[0])
            return out
        return prepare

    def authenticate(value):
        result = []
        auth.authenticate("REGISTER", URI, [value], "192.0.2.1").addCallback(
            result.append)
        assert isinstance(result[0], Authenticated), result

    print(f"sipdist digest benchmark ({sys.implementation.name} "
          f"{sys.version.split()[0]}), {seconds} s per case")
    measure("challenge (request without credentials)", seconds,
            lambda n: [None] * n,
            lambda _: auth.authenticate("REGISTER", URI, [], "192.0.2.1"))
    measure("verify SHA-256 answer (success)", seconds,
            answers("SHA-256"), authenticate)
    measure("verify MD5 answer (success)", seconds,
            answers("MD5"), authenticate)

    wrong = answerChallenge(challenge, "REGISTER", URI, "user1", "wrong")[0]
    measure("wrong password (401, counted)", seconds,
            lambda n: [wrong] * n,
            lambda v: auth.authenticate("REGISTER", URI, [v], "192.0.2.2"))
    measure("malformed header (400)", seconds,
            lambda n: ['Digest username="x", realm="example.com", nc=1'] * n,
            lambda v: auth.authenticate("REGISTER", URI, [v], "192.0.2.3"))

    value, session = answerChallenge([v for _, v in auth.challenge().headers],
                                     "REGISTER", URI, "user1", "password1")
    result = []
    auth.authenticate("REGISTER", URI, [value], "h").addCallback(
        result.append)
    contact = "<sip:home2.example.com;transport=tls>"
    measure("sign a 301 (server)", seconds, lambda n: [None] * n,
            lambda _: auth.sign(result[0], 301, "cid", "1 REGISTER",
                                contact))
    headers = auth.sign(result[0], 301, "cid", "1 REGISTER", contact)
    measure("verify a signed 301 (client)", seconds, lambda n: [None] * n,
            lambda _: verifySignature(session, 301, "cid", "1 REGISTER",
                                      contact, headers))


if __name__ == "__main__":
    main(float(sys.argv[1]) if len(sys.argv) > 1 else 2.0)
