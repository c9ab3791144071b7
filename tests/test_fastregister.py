"""
Tests for L{sipdist.roles.fastregister}: for every authenticated REGISTER
of a corpus sent to a home, the fast path gives the same datagrams and
leaves the same state as the full path (the registrar's bindings, expiry
heap and journal, nonce counts, limiter, counters, backup table, log), and
takes the plain ones of users assigned here.
"""

import os

from twisted.trial.unittest import TestCase

from sipdist.roles.fastregister import FastRegister

from tests.test_fastchallenge import CLIENT, _server
from tests.test_fastredirect import (
    BothPathsMixin, _left, _lines, _pool, _taken, credentials, nonce,
    request)


def _withContact(contact, user="alice", expires="7200", display=""):
    """
    L{_lines} with another C{Contact} (none for L{None}) and C{Expires}
    (none for L{None}).
    """
    lines = []
    for line in _lines(user, display=display):
        if line.startswith("Contact:"):
            if contact is not None:
                lines.append(f"Contact: {contact}")
        elif line.startswith("Expires:"):
            if expires is not None:
                lines.append(f"Expires: {expires}")
        else:
            lines.append(line)
    return lines


def _registerAs(branch, callID="843817637684230@998sdasdh09", cseq=1826,
                contact="<sip:alice@192.0.2.7:5060;transport=udp>",
                expires="7200", **kw):
    """
    An authenticated REGISTER with the given Call-ID, CSeq, Contact and
    Expires.
    """
    lines = []
    for line in _withContact(contact, expires=expires):
        if line.startswith("Call-ID:"):
            line = f"Call-ID: {callID}"
        elif line.startswith("CSeq:"):
            line = f"CSeq: {cseq} REGISTER"
        elif line.startswith("Via:"):
            line = f"Via: SIP/2.0/UDP 192.0.2.7:5060;branch={branch}"
        lines.append(line)
    return request(headers=lines, **kw)


class FastRegisterTests(BothPathsMixin, TestCase):

    role = "home"

    def test_taken(self):
        """
        The plain authenticated REGISTERs of a user of this home are
        answered by the fast path with the full path's signed 200, whether
        or not the client follows the redirect (which only decides whether
        a backup home is named).
        """
        for name, data, addr in _taken():
            with self.subTest(name):
                self.assertEqual(self._both(data, addr), 1, name)
        for name, data in _homeTaken():
            with self.subTest(name):
                self.assertEqual(self._both(data), 1, name)

    def test_left(self):
        """
        Anything unusual is left to the full path, and both answer the
        same.
        """
        for name, data, addr in _left():
            if name in ("not following the redirect", "no User-Agent",
                        "Supported without the tag"):
                # A home serves those too (without a backup).
                continue
            with self.subTest(name):
                self.assertEqual(self._both(data, addr), 0, name)
        for name, data in _homeLeft():
            with self.subTest(name):
                self.assertEqual(self._both(data), 0, name)

    def test_sequences(self):
        """
        A login's REGISTERs in turn (refreshes, a second contact, a
        removal, out of order): every step compared with the full path.
        """
        first = _registerAs("z9hG4bKs1", cseq=1)
        refresh = _registerAs("z9hG4bKs2", cseq=2, expires="600")
        second = _registerAs("z9hG4bKs3", callID="other-call", cseq=1,
                             contact="<sip:alice@192.0.2.8:5070>")
        remove = _registerAs("z9hG4bKs4", cseq=3, expires="0")
        stale = _registerAs("z9hG4bKs5", cseq=2)
        self.assertEqual(self._both([first, refresh, second, remove]), 4)
        # The out-of-order REGISTER gets the full path's 500.
        self.assertEqual(self._both([first, refresh, stale]), 2)

    def test_tooManyContacts(self):
        """
        A contact beyond C{--max-bindings} gets the full path's 403.
        """
        first = _registerAs("z9hG4bKm1", cseq=1)
        second = _registerAs("z9hG4bKm2", callID="other-call", cseq=1,
                             contact="<sip:alice@192.0.2.8:5070>")
        self.assertEqual(self._both([first, second],
                                    extra={"max-bindings": 1}), 1)

    def test_registrarFull(self):
        """
        A new address-of-record in a full registrar gets the full path's
        503.
        """
        def full(service, udp):
            _pool(service, udp)
            service.registrar.maxAORs = 0
        self.assertEqual(self._both(request(), prepare=full), 0)

    def test_journal(self):
        """
        With a bindings file, the registrar's journal is told of the same
        changes on both paths.
        """
        path = self.mktemp()
        os.mkdir(path)
        self.assertEqual(self._both(
            [_registerAs("z9hG4bKj1", cseq=1),
             _registerAs("z9hG4bKj2", cseq=2, expires="0")],
            extra={"bindings-file": os.path.join(path, "bindings")}), 2)

    def test_observers(self):
        """
        The registrar's observers (the event server's, for reg events) are
        told the same on both paths: here the first binding and the last.
        """
        seen = []

        def observed(service, udp):
            _pool(service, udp)
            seen.append([])
            service.registrar.observe(
                lambda aor, registered: seen[-1].append((aor, registered)))

        self.assertEqual(self._both(
            [_registerAs("z9hG4bKo1", cseq=1),
             _registerAs("z9hG4bKo2", cseq=2, expires="0")],
            prepare=observed), 2)
        self.assertEqual(seen[0], seen[1])
        self.assertEqual(seen[0], [("sip:alice@example.com", True),
                                   ("sip:alice@example.com", False)])

    def test_jsonLog(self):
        """
        With decisions logged (C{--log-format=json}), the fast path logs
        the full path's decision event.
        """
        self.assertEqual(self._both(request(), extra={"log-format": "json"}),
                         1)

    def test_flowTimer(self):
        """
        A client that supports outbound, or whose Contact has a C{reg-id},
        gets the UDP Flow-Timer on both paths; with C{--flow-timer-udp=0},
        none.
        """
        outbound = request(extra=["Supported: outbound, sipdist-redirect"],
                           agent=None)
        regId = request(headers=_withContact(
            "<sip:alice@192.0.2.7:5060;reg-id=1>"))
        for data in (outbound, regId):
            self.assertEqual(self._both(data), 1)
            self.assertEqual(self._both(data, extra={"flow-timer-udp": 0}),
                             1)

    def test_otherHomes(self):
        """
        A user assigned to another home is left to the full path (which
        redirects it, or serves it as that home's backup when the home is
        down); one whose home is this server is served fast.
        """
        def elsewhere(service, udp):
            _pool(service, udp)
            service.store.assignUser("alice@example.com", "home2")
            # The standby's probes of home2: the same Call-ID on both.
            service.processor.standby.prober._callId = "probe@sipdist-monitor"

        def homeDown(service, udp):
            elsewhere(service, udp)
            service.store.updateServer("home2", state="down")

        self.assertEqual(self._both(request(), prepare=elsewhere), 0)
        self.assertEqual(self._both(request(), prepare=homeDown), 0)
        self.assertEqual(self._both(request()), 1)

    def test_ownStates(self):
        """
        Whatever the store says of this home (draining, marked down), both
        paths decide alike.
        """
        for state in ("draining", "down"):
            def marked(service, udp, state=state):
                _pool(service, udp)
                service.store.updateServer("home1", state=state)
            with self.subTest(state):
                self._both(request(), prepare=marked)

    def test_sendFails(self):
        """
        A 200 that cannot be sent counts as a transport error on both
        paths and leaves no transaction (the binding is made on both).
        """
        def failing(service, udp):
            _pool(service, udp)
            udp.fail = True
        self.assertEqual(self._both(request(), prepare=failing,
                                    retransmit=False), 1)

    def test_answer(self):
        """
        The fast path's answer is a 200 with the binding, the backup home
        and the signature headers.
        """
        service, protocol, udp, clock = _server(
            "home", extra={"redirect-user-agent": ["^test agent"]})
        _pool(service, udp)
        protocol.datagramReceived(request(), CLIENT)
        self.assertEqual(service.transport.fastPath.authenticated.taken, 1)
        response = udp.sent[0][0].decode("ascii")
        self.assertTrue(response.startswith("SIP/2.0 200 OK\r\n"), response)
        self.assertIn("\r\nContact: <sip:alice@192.0.2.7:5060;transport=udp>"
                      ";expires=7200\r\n", response)
        self.assertIn("\r\nSipdist-Backup: <sip:127.0.0.1:5080>\r\n",
                      response)
        self.assertIn("\r\nSipdist-Signature: v=2, ", response)
        self.assertEqual(
            len(service.registrar.lookup("sip:alice@example.com")), 1)

    def test_status(self):
        """
        The status document counts the fast path's answers: the 401s and
        the signed 200s.
        """
        from sipdist.pool.status import statusOf
        from tests.test_fastchallenge import _register
        service, protocol, udp, clock = _server("home")
        protocol.datagramReceived(_register(), CLIENT)
        protocol.datagramReceived(request(), CLIENT)
        self.assertEqual(statusOf(service, {"name": "home1"})["fast_path"],
                         {"enabled": True, "challenges": 1,
                          "authenticated": 1})

    def test_installed(self):
        """
        A home's fast path has a L{FastRegister}; with C{--fast-path=false}
        there is none.
        """
        self.assertIsInstance(
            _server("home")[0].transport.fastPath.authenticated,
            FastRegister)
        self.assertIsNone(_server("home", fast=False)[0].transport.fastPath)

    def test_nonceCounts(self):
        """
        A nonce used again with a higher count is taken; with the same
        count it is a replay, challenged by the full path (stale).
        """
        n = nonce()
        first = _registerAs("z9hG4bKn1", cseq=1, nonceValue=n)
        again = _registerAs("z9hG4bKn2", cseq=2, nonceValue=n, cnonce="ab")
        higher = _registerAs("z9hG4bKn3", cseq=3, nonceValue=n, nc=2)
        self.assertEqual(self._both([first, higher]), 2)
        self.assertEqual(self._both([first, again]), 1)


def _homeTaken():
    """
    C{(name, bytes)} of requests a home's fast path answers (besides
    L{_taken}'s).
    """
    yield "Contact expires", request(headers=_withContact(
        "<sip:alice@192.0.2.7:5060>;expires=600"))
    yield "Contact q", request(headers=_withContact(
        "<sip:alice@192.0.2.7:5060>;q=0.5"))
    yield "Contact instance and reg-id (outbound)", request(
        headers=_withContact('<sip:alice@192.0.2.7:5060;ob>;reg-id=1;'
                             '+sip.instance="<urn:uuid:1>"'))
    yield "Contact instance", request(headers=_withContact(
        '<sip:alice@192.0.2.7:5060>;+sip.instance="<urn:uuid:1>"'))
    yield "Route to this home", request(
        extra=["Route: <sip:127.0.0.1:5060;lr>"])
    yield "not following the redirect", request(agent="other")
    yield "no User-Agent", request(agent=None)
    yield "no Expires", request(headers=_withContact(
        "<sip:alice@192.0.2.7:5060;transport=udp>", expires=None))
    yield "Expires above the maximum", request(headers=_withContact(
        "<sip:alice@192.0.2.7:5060>", expires="999999"))
    yield "Expires 0 without a binding", request(headers=_withContact(
        "<sip:alice@192.0.2.7:5060>", expires="0"))
    yield "Contact URI parameters", request(headers=_withContact(
        "<sip:alice@192.0.2.7:5060;transport=udp;ob;line=abc>"))
    yield "Contact without a port", request(headers=_withContact(
        "<sip:alice@client.example.com>"))
    yield "SIPp", request(sipp=True, agent="other")
    yield "SHA-256 with option tags", request(
        algorithm="SHA-256", agent=None,
        extra=["Supported: path, outbound"])


def _homeLeft():
    """
    C{(name, bytes)} of requests a home's fast path leaves to the full
    path (besides L{_left}'s).
    """
    yield "no Contact (a query)", request(headers=_withContact(None))
    yield "Expires too brief", request(headers=_withContact(
        "<sip:alice@192.0.2.7:5060>", expires="30"))
    yield "Contact expires too brief", request(headers=_withContact(
        "<sip:alice@192.0.2.7:5060>;expires=30"))
    yield "Contact q out of range", request(headers=_withContact(
        "<sip:alice@192.0.2.7:5060>;q=2"))
    yield "Contact bad reg-id", request(headers=_withContact(
        '<sip:alice@192.0.2.7:5060>;+sip.instance="<urn:uuid:1>";reg-id=x'))
    yield "Contact *", request(headers=_withContact("*", expires="0"))
    yield "two Contact", request(extra=[
        "Contact: <sip:alice@192.0.2.8:5070>"])
    yield "Path", request(extra=["Path: <sip:edge.example.com;lr>"])
    yield "wrong password", request(password="wrong")
    yield "bad credentials for the To", request(
        authorization=credentials(username="alice"),
        headers=_lines(to="sip:bob@example.com"))

