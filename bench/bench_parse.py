"""
Parse and serialise rate of a typical REGISTER on one core.

    python bench/bench_parse.py [--seconds 3]

Prints messages per second for: parsing only (what the hot path needs to
decide: headers split, nothing else), parse + validate + Via count + To
AOR, a 301 built and serialised from the parsed request, a full
parse-and-serialise round trip, and the same bytes through Twisted's
``sip.MessagesParser`` for comparison.  Each figure is the best of three
runs of at least ``--seconds`` / 3 seconds.
"""

import argparse
import sys
import time

sys.path.insert(0, __file__.rsplit("/bench/", 1)[0])

from twisted.protocols import sip  # noqa: E402

from sipdist.sip.message import (  # noqa: E402
    countVias, parseMessage, parseNameAddr, responseTo, validateRequest)
from sipdist.sip.uri import normaliseAOR  # noqa: E402

REGISTER = (
    "REGISTER sip:example.com SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK-524287-1---77ba8a8f4b8d;rport\r\n"
    "Max-Forwards: 70\r\n"
    "Contact: <sip:alice@192.0.2.10:5060;rinstance=6a1f4b1d7e1a2b3c;transport=UDP>;+sip.instance=\"<urn:uuid:00000000-0000-1000-8000-AABBCCDDEEFF>\";reg-id=1\r\n"
    "To: \"Alice\" <sip:alice@example.com>\r\n"
    "From: \"Alice\" <sip:alice@example.com>;tag=4fa3c2d1\r\n"
    "Call-ID: 8f2e1c7b9a6d4e3f2a1b0c9d8e7f6a5b@192.0.2.10\r\n"
    "CSeq: 2 REGISTER\r\n"
    "Expires: 3600\r\n"
    "Allow: INVITE, ACK, CANCEL, BYE, NOTIFY, REFER, MESSAGE, OPTIONS, INFO, SUBSCRIBE\r\n"
    "Supported: replaces, outbound, path, gruu\r\n"
    "User-Agent: Example Softphone 5.1\r\n"
    "Authorization: Digest username=\"alice\", realm=\"example.com\", "
    "nonce=\"AAAAAGcW3d1l0n4CVmXbZ8yD1jgq3mrxZ0Q\", uri=\"sip:example.com\", "
    "response=\"753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1\", "
    "algorithm=SHA-256, cnonce=\"f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ\", "
    "qop=auth, nc=00000001\r\n"
    "Content-Length: 0\r\n\r\n").encode("ascii")


def parseOnly():
    parseMessage(REGISTER)


def decide():
    request = parseMessage(REGISTER)
    validateRequest(request)
    countVias(request)
    normaliseAOR(parseNameAddr(request.header("to"))[1])


def redirect():
    request = parseMessage(REGISTER)
    response = responseTo(request, 301)
    response.headers["contact"] = ["<sip:127.0.0.1:5080>"]
    response.toBytes()


def roundTrip():
    parseMessage(REGISTER).toBytes()


def twistedParser():
    messages = []
    parser = sip.MessagesParser(messages.append)
    parser.dataReceived(REGISTER)
    parser.dataDone()
    assert messages


def rate(function, seconds):
    best = 0.0
    for _ in range(3):
        n = 0
        batch = 1000
        start = time.process_time()
        deadline = start + seconds / 3
        while True:
            for _ in range(batch):
                function()
            n += batch
            now = time.process_time()
            if now >= deadline:
                break
        best = max(best, n / (now - start))
    return best


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    print(f"{sys.implementation.name} {sys.version.split()[0]}; "
          f"REGISTER of {len(REGISTER)} bytes; messages per CPU-second")
    for name, function in [
            ("parse (headers split, URI/Via lazy)", parseOnly),
            ("parse + validate + Via count + To AOR", decide),
            ("parse + 301 built and serialised", redirect),
            ("parse + serialise (round trip)", roundTrip),
            ("twisted.protocols.sip.MessagesParser", twistedParser)]:
        print(f"  {name:40s} {rate(function, args.seconds):>10,.0f}/s")


if __name__ == "__main__":
    main()
