# -*- test-case-name: tests.test_fastregister -*-
"""
The fast path of the commonest authenticated request a home receives: the
second REGISTER of a login (or a refresh), over UDP, with valid Digest
credentials, of a user assigned here, which the full path answers with the
registrar's signed C{200}.

L{sipdist.roles.fastchallenge.FastChallenge} scans the datagram (the plain
REGISTER it answers with a C{401}, plus one C{Authorization} written
plainly and a C{Supported} list of option tags) and hands a request that
carries credentials to L{FastRegister}, which answers it only when every
step of the full path is sure to end in that C{200}, and decides so before
it changes anything:

  - the credentials, the identity and the assignment as on a distributor
    (L{sipdist.roles.fastredirect.FastAuthenticated.check});
  - L{sipdist.decision.decide} saying L{Serve} (the user is assigned here:
    no handover, no standby);
  - one C{Contact} written plainly (its header parameters, such as
    C{expires}, C{q}, C{+sip.instance} and C{reg-id}, without a comma in a
    quoted value), and the registrar accepting it (L{Registrar.plan}: the
    same checks, not too brief, not out of order, not too many contacts,
    the registrar not full).

Then it does what the full path does, with the same result: the counters,
the decision event when decisions are logged, the registrar's change
(L{Registrar.apply}: the bindings, the expiry heap, the journal, the
observers), and the response's bytes: the Via as the transport rewrites
it, From, To with a fresh tag, Call-ID, CSeq, C{Server}, the C{Contact}
values of the bindings, C{Supported}, C{Flow-Timer} when asked for,
C{Sipdist-Backup} and the signature headers.  Anything else goes down the
full path with nothing changed.  C{tests/test_fastregister.py} runs both
paths over a corpus and compares.
"""

from sipdist.decision import Serve
from sipdist.deferreds import NOT_FIRED
from sipdist.roles.fastredirect import (
    FastAuthenticated, answer, listsTag, signedHeaders)
from sipdist.services.registrar import RegistrarError, contactHeaderValues

_CALL_ID = len(b"Call-ID: ")
_CSEQ = len(b"CSeq: ")
_CONTACT = len(b"Contact: ")
_EXPIRES = len(b"Expires: ")


class FastRegister(FastAuthenticated):
    """
    Answers an authenticated REGISTER of a user of this home with the
    registrar's signed C{200} (see the module).
    """

    code = 200

    def possible(self):
        """
        Whether this server may answer any request this way: a home (a
        registrar), and L{FastAuthenticated.possible}.
        """
        return (self._processor.registrar is not None
                and FastAuthenticated.possible(self))

    def __call__(self, addr, uriText, values, viaText, flow, key):
        """
        Answer a scanned REGISTER, or leave it to the full path.

        @param addr: where it came from.
        @param uriText: its Request-URI, as written.
        @param values: its header lines by name (the L{re.Match} of the Via
            value for C{Via}, the Digest parameters as C{(name, value)}
            pairs for C{Authorization}).
        @param viaText: its Via value as the response carries it.
        @param flow: its transaction's L{DatagramFlow}.
        @param key: its transaction's key.
        @return: the bytes of the response, every side effect of the full
            path done but the transaction's (counting the answer, sending,
            timer J); or L{None}, nothing done.
        """
        processor = self._processor
        registrar = processor.registrar
        contact = values.get(b"Contact")
        if registrar is None or contact is None:
            return None
        checked = self.check(addr, uriText, values, flow, key)
        if checked is None:
            return None
        if type(checked.outcome) is not Serve:
            return None
        server = self._server

        # The registrar (_serveRegister): planned, not yet made.
        callID = values[b"Call-ID"][_CALL_ID:].decode("ascii")
        cseqText = values[b"CSeq"][_CSEQ:].decode("ascii")
        contactText = contact[_CONTACT:].decode("ascii")
        expires = values.get(b"Expires")
        if expires is not None:
            expires = int(expires[_EXPIRES:])
        try:
            registration = registrar.plan(
                checked.identity.aor, [contactText], callID,
                int(cseqText.partition(" ")[0]), expires, (), flow)
        except (RegistrarError, ValueError):
            return None
        backup = self.backup(checked, server.name)
        if backup is NOT_FIRED:
            return None
        signature = self.signature(checked, 200, callID, cseqText, None,
                                   backup)
        if signature is None:
            return None

        # Decided: the side effects of the full path, in its order.
        self.decided(checked, values, flow, callID, "serve", server.name)
        processor.served += 1
        bindings = registrar.apply(registration)
        self.taken += 1
        headers = [f"Server: {server.serverHeader}"]
        headers += contactHeaderValues(bindings, server._reactor.seconds(),
                                       "Contact: ")
        headers.append("Supported: path, outbound")
        if processor.flowTimerUDP and _wantsFlowTimer(values, contactText):
            headers.append(f"Flow-Timer: {processor.flowTimerUDP}")
        return answer("200 OK", viaText, values,
                      headers + signedHeaders(backup, signature))


def _wantsFlowTimer(values, contactText):
    """
    L{sipdist.roles.distribution.wantsFlowTimer} of a scanned request.
    """
    supported = values.get(b"Supported")
    if supported is not None and listsTag(supported, b"outbound"):
        return True
    return ";reg-id=" in contactText.replace(" ", "").lower()
