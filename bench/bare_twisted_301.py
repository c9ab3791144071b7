"""
The reference point of the benchmarks: Twisted's own
C{twisted.protocols.sip.Base} answering every request with a fixed
C{301 Moved Permanently}, nothing else (no validation, no transaction, no
authentication, no lookup).  Run by bench/bench_register.py; by hand:

    python bench/bare_twisted_301.py PORT

It parses each datagram with Twisted's parser, builds the response with
Twisted's C{responseFromRequest} and sends it back (an OPTIONS gets a 200:
the benchmark's start-up probe).
"""

import sys

from twisted.internet import reactor
from twisted.protocols import sip


class Redirector(sip.Base):
    def handle_request(self, message, addr):
        if message.method == "OPTIONS":
            # The benchmark's start-up probe.
            self.deliverResponse(self.responseFromRequest(200, message))
            return
        response = self.responseFromRequest(301, message)
        response.addHeader("contact", "<sip:127.0.0.1:5070>")
        self.deliverResponse(response)

    def handle_response(self, message, addr):
        pass


if __name__ == "__main__":
    reactor.listenUDP(int(sys.argv[1]), Redirector(), interface="127.0.0.1")
    reactor.run()
