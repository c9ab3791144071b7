"""
The loops a login runs on the fast paths.

On PyPy a loop in a function the JIT inlines into the request's path is
entered through its own compiled code, for which the function's frame
must be made: some 500 bytes of the nursery and 40 ns or more for every
request, a few hundred ns when the loop's exit needs a bridge (a
comprehension or a generator expression is such a function, and so is
C{any} of one).  A home's signed C{200} went through 18 of them before
they were written out, and allocated 63 KB instead of 51 (docs/
performance.rst, 5 December 2026, at night).  So the fast paths loop only
where the work is a loop (the scan over the header lines, the Digest
parameters) and in the functions compiled apart
(L{sipdist.jitparams.compiledApart}), whose frame is made anyway; and in
the probes of an open-addressing table, which loop only on a collision.

These tests trace the opcodes of logins taken by the fast paths (with
either scan: the readers PyPy uses and the patterns CPython uses) and
name every function in which a jump went backwards.  They run on both
interpreters: the loops are in the code, whichever runs it.
"""

import os
import sys

from twisted.trial.unittest import TestCase

from sipdist.roles import fastchallenge
from sipdist.roles.fastredirect import REDIRECT_TAG, listsTag
from sipdist.services import registrar
from sipdist.sip import message as _message

from tests.test_fastchallenge import CLIENT, _register, _server
from tests.test_fastredirect import credentials

# Where a login's path may loop: (module, function name).
ALLOWED = {
    # The scan: each header line; the Digest parameters (by hand or by
    # pattern).
    ("fastchallenge", "__call__"),
    ("fastchallenge", "_readDigest"),
    ("fastchallenge", "match"),
    # Compiled apart (checked below): their frame is made anyway.
    ("registrar", "plan"),
    ("registrar", "_schedule"),
    ("registrar", "contactHeaderValues"),
    # Open addressing: a probe loops only past a collision.
    ("transaction", "find"),
    ("transaction", "add"),
    ("nonce", "_free"),
    ("nonce", "_locate"),
}


def loopingFunctions(run):
    """
    Call C{run}, tracing every opcode.  (On CPython 3.12 and later the
    first traced call of a function gives no opcode events: trace the
    same path twice and use the second.)

    @return: the C{(module, function name)} of each function in which a
        jump went backwards (a loop took a second turn, or a one-turn loop
        went back to its test).
    """
    looped = set()

    def tracer(frame, event, arg):
        frame.f_trace_opcodes = True
        last = [-1]

        def local(frame, event, arg):
            if event == "opcode":
                if frame.f_lasti < last[0]:
                    code = frame.f_code
                    looped.add((os.path.splitext(
                        os.path.basename(code.co_filename))[0],
                        code.co_name))
                last[0] = frame.f_lasti
            return local
        return local

    sys.settrace(tracer)
    try:
        run()
    finally:
        sys.settrace(None)
    return looped


class HotLoopsTests(TestCase):

    def _logins(self, role, hand, extra=()):
        """
        Three logins (a plain REGISTER, its 401, the authenticated one) to
        a server of C{role} with the fast path on, the scan by hand or by
        pattern; the last two traced (see L{loopingFunctions}).

        @return: the looping functions of the last login.
        """
        values, requestLine = fastchallenge.scanPatterns(hand)
        self.patch(fastchallenge, "_VALUES", values)
        self.patch(fastchallenge, "_requestLine", requestLine)
        service, protocol, udp, clock = _server(
            role, True, {"redirect-user-agent": ["^test agent"]})
        self.patch(_message, "_randomBytes", service._random)
        fastPath = service.transport.fastPath

        looped = set()

        def login(n, traced):
            def deliver(data):
                if traced:
                    looped.update(loopingFunctions(
                        lambda: protocol.datagramReceived(data, CLIENT)))
                else:
                    protocol.datagramReceived(data, CLIENT)

            # A refresh: the same Call-ID, a higher CSeq.
            cseq = f"CSeq: {1826 + n} REGISTER".encode("ascii")
            deliver(_register(
                via=f"SIP/2.0/UDP 192.0.2.7:5060;branch=z9hG4bKplain{n}",
                extra=extra).replace(b"CSeq: 1826 REGISTER", cseq))
            challenge = udp.sent[-1][0]
            self.assertTrue(challenge.startswith(b"SIP/2.0 401 "))
            nonce = challenge.split(b'nonce="', 1)[1].split(b'"', 1)[0]
            authorization = credentials(nonceValue=nonce.decode("ascii"))
            deliver(_register(
                via=f"SIP/2.0/UDP 192.0.2.7:5060;branch=z9hG4bKauth{n}",
                extra=[f"Authorization: {authorization}"] + list(extra),
            ).replace(b"CSeq: 1826 REGISTER", cseq))

        login(1, False)
        login(2, True)
        looped.clear()
        taken = fastPath.taken
        login(3, True)
        final = b"SIP/2.0 200 " if role == "home" else b"SIP/2.0 301 "
        self.assertTrue(udp.sent[-1][0].startswith(final), udp.sent[-1][0])
        # Both requests of the traced login took the fast path.
        self.assertEqual(fastPath.taken, taken + 2)
        return looped

    def assertLoopsAllowed(self, looped):
        self.assertEqual(sorted(looped - ALLOWED), [])

    def test_distributor(self):
        """
        A distributor's login (C{401}, signed C{301}) loops only in the
        scan, with either reading of the lines.
        """
        for hand in (True, False):
            with self.subTest(hand=hand):
                looped = self._logins("distributor", hand)
                self.assertLoopsAllowed(looped)
                self.assertIn(("fastchallenge", "__call__"), looped)

    def test_home(self):
        """
        A home's login (C{401}, the registrar's signed C{200}, a binding
        refreshed) loops only in the scan and in the registrar's functions
        compiled apart.
        """
        for hand in (True, False):
            with self.subTest(hand=hand):
                looped = self._logins("home", hand)
                self.assertLoopsAllowed(looped)
                self.assertIn(("registrar", "plan"), looped)

    def test_supported(self):
        """
        A C{Supported} line as baresip and linphone write it (read for the
        redirect option tag and, on a home, for C{outbound}) adds no loop.
        """
        for role in ("distributor", "home"):
            for line in ("Supported: replaces, outbound, gruu, path",
                         "Supported: path,outbound,replaces"):
                with self.subTest(role=role, line=line):
                    self.assertLoopsAllowed(self._logins(
                        role, fastchallenge.HAND_READERS, [line]))

    def test_listsTag(self):
        """
        L{listsTag} tells whether a scanned C{Supported} line lists a tag
        as the set of its tags, stripped and lower-cased, does.
        """
        lines = [b"Supported: " + tags for tags in (
            b"outbound", b"OutBound", b"path, outbound", b"path,outbound",
            b"outbound, path", b"outbounds, path", b"path, xoutbound",
            b"sipdist-redirect", b"replaces, Sipdist-Redirect, gruu",
            b"sipdist-redirect2", b"a,b, c")]
        for line in lines:
            for tag in (b"outbound", REDIRECT_TAG, b"path", b"c"):
                with self.subTest(line=line, tag=tag):
                    self.assertEqual(
                        listsTag(line, tag),
                        tag.decode() in {
                            t.strip().lower() for t in
                            line[11:].decode("ascii").split(",")})

    def test_compiledApart(self):
        """
        The functions allowed to loop for being compiled apart are.
        """
        for function in (registrar.Registrar.plan,
                         registrar.Registrar._schedule,
                         registrar.contactHeaderValues):
            self.assertTrue(getattr(function, "compiledApart", False),
                            function.__name__)

    def test_detects(self):
        """
        A comprehension, a generator expression given to C{any}, and a
        loop in a function are each found; straight code is not.
        """
        items = [1]

        def comprehension():
            return [i for i in items]

        def generator():
            return any(i > 1 for i in items)

        def loop():
            total = 0
            for i in items:
                total += i
            return total

        def straight():
            return items[0] + 1

        def twice(function):
            loopingFunctions(function)
            return loopingFunctions(function)

        # CPython 3.12 and later run a comprehension in the function's own
        # frame (PEP 709).
        inlined = sys.implementation.name == "cpython" and \
            sys.version_info >= (3, 12)
        self.assertEqual(
            twice(comprehension),
            {("test_hotloops",
              "comprehension" if inlined else "<listcomp>")})
        self.assertEqual(twice(generator), {("test_hotloops", "<genexpr>")})
        self.assertEqual(twice(loop), {("test_hotloops", "loop")})
        self.assertEqual(twice(straight), set())
