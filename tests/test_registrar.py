"""
Tests for L{sipdist.services.registrar}.
"""

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from sipdist.sip.message import parseMessage
from sipdist.services.registrar import (
    Binding, Registrar, RegistrarError, contactHeaderValues)
from sipdist.sip.uri import parseURI
from tests.test_roles import registerBytes

AOR = "sip:alice@example.com"


def register(registrar, contact=None, cseq=1, callID="c1", expires=None,
             extra=()):
    request = parseMessage(registerBytes(contact=contact, cseq=cseq,
                                         callID=callID, expires=expires,
                                         extra=extra))
    return registrar.register(AOR, request, flow="flow")


class RegistrarTests(SynchronousTestCase):
    """
    RFC 3261 section 10.3 and RFC 3327.
    """

    def setUp(self):
        self.clock = Clock()
        self.registrar = Registrar(self.clock, maxBindings=3, maxAORs=2)

    def tearDown(self):
        self.registrar.stop()

    def test_bindAndLookup(self):
        """
        A contact is bound with the default expiry; the lookup returns it
        with the flow it came on.
        """
        [binding] = register(self.registrar)
        self.assertEqual(binding.remaining(self.clock.seconds()), 3600)
        self.assertEqual(binding.flow, "flow")
        self.assertEqual(self.registrar.lookup(AOR), [binding])

    def test_contactReadOnce(self):
        """
        A Contact value is read once and remembered: the refresh of a
        binding reads nothing again, and gets the same answer as a
        registrar that reads it anew (whose table was emptied).  A value
        that is no Contact is refused each time, and not remembered.
        """
        from sipdist.services import registrar as module
        reads = []
        real = module.parseNameAddr

        def parse(value):
            reads.append(value)
            return real(value)

        self.patch(module, "parseNameAddr", parse)
        contact = "<sip:a@h:5062;transport=udp>;expires=120;q=0.5"
        [first] = register(self.registrar, contact=contact, cseq=1)
        [again] = register(self.registrar, contact=contact, cseq=2)
        self.assertEqual(reads, [contact])
        self.assertEqual((again.contact, again.q, again.remaining(0), again.cseq),
                         ("<sip:a@h:5062;transport=udp>", 0.5, 120, 2))
        self.registrar._contacts.clear()
        [anew] = register(self.registrar, contact=contact, cseq=3)
        self.assertEqual(len(reads), 2)
        self.assertEqual((anew.contact, anew.uri.toString(), anew.key),
                         (again.contact, again.uri.toString(), again.key))
        for cseq in (4, 5):
            error = self.assertRaises(
                RegistrarError, register, self.registrar,
                contact="<sip:a@h", cseq=cseq)
            self.assertEqual(error.code, 400)
        self.assertNotIn("<sip:a@h", self.registrar._contacts)

    def test_contactsRememberedBounded(self):
        """
        The table of Contact values read is emptied when full, and a value
        longer than C{maxContactLength} is not kept.
        """
        registrar = Registrar(self.clock)
        self.addCleanup(registrar.stop)
        registrar.maxContactsRemembered = 2
        for n in range(5):
            register(registrar, contact=f"<sip:a@h{n}>", callID=f"c{n}")
            self.assertLessEqual(len(registrar._contacts), 2)
        self.assertEqual(len(registrar.lookup(AOR)), 5)
        self.assertLessEqual(len(registrar._contacts), 2)
        registrar._contacts.clear()
        longContact = "<sip:a@" + "h" * registrar.maxContactLength + ">"
        register(registrar, contact=longContact, callID="long")
        self.assertEqual(registrar._contacts, {})

    def test_expiresParameterWins(self):
        """
        A Contact's expires parameter wins over the Expires header, and the
        registrar cuts what is over its maximum.
        """
        [b] = register(self.registrar, contact="<sip:a@h>;expires=120", expires=600)
        self.assertEqual(b.remaining(0), 120)
        registrar = Registrar(self.clock, maxExpires=1000)
        [b] = register(registrar, expires=99999)
        self.assertEqual(b.remaining(0), 1000)
        registrar.stop()

    def test_tooBrief(self):
        """
        An interval below Min-Expires is a 423 carrying Min-Expires.
        """
        error = self.assertRaises(RegistrarError, register, self.registrar,
                                  expires=30)
        self.assertEqual((error.code, error.headers), (423, [("Min-Expires", "60")]))

    def test_severalContactsSortedByQ(self):
        """
        Several contacts are bound at once and looked up by preference.
        """
        register(self.registrar, contact="<sip:a@h1>;q=0.2, <sip:a@h2>;q=0.9")
        self.assertEqual([str(b.uri) for b in self.registrar.lookup(AOR)],
                         ["sip:a@h2", "sip:a@h1"])
        values = contactHeaderValues(self.registrar.lookup(AOR), 0)
        self.assertEqual(values, ["<sip:a@h2>;expires=3600;q=0.9",
                                  "<sip:a@h1>;expires=3600;q=0.2"])

    def test_refreshAndRemove(self):
        """
        A refresh replaces the binding's expiry; expires=0 removes it.
        """
        register(self.registrar, cseq=1)
        self.clock.advance(100)
        [b] = register(self.registrar, cseq=2)
        self.assertEqual(b.remaining(self.clock.seconds()), 3600)
        self.assertEqual(register(self.registrar, cseq=3, expires=0), [])
        self.assertEqual(self.registrar.lookup(AOR), [])
        self.assertEqual(self.registrar.count, 0)

    def test_refreshComparesURIs(self):
        """
        A Contact refreshes the binding of an equal URI (RFC 3261 section
        19.1.4: host and parameters without case), however written; a
        URI that differs (its port) is another binding.
        """
        register(self.registrar, contact="<sip:alice@Host.Example:5062;"
                 "Transport=UDP>", cseq=1)
        self.clock.advance(100)
        [b] = register(self.registrar, contact="<sip:alice@host.example:"
                       "5062;transport=udp>", cseq=2)
        self.assertEqual(b.remaining(self.clock.seconds()), 3600)
        self.assertEqual(len(self.registrar.lookup(AOR)), 1)
        register(self.registrar, contact="<sip:alice@host.example:5063;"
                 "transport=udp>", cseq=3)
        self.assertEqual(len(self.registrar.lookup(AOR)), 2)

    def test_refreshOfRestoredBinding(self):
        """
        A binding read back from the journal (made without its comparison
        key) is refreshed by an equal Contact, not doubled.
        """
        [b] = register(self.registrar, contact="<sip:alice@h.example:5062>")
        restored = Binding(contact=b.contact, uri=parseURI("sip:alice@"
                           "H.EXAMPLE:5062"), expires=b.expires,
                           callID="old", cseq=7)
        self.assertIsNone(restored.key)
        self.registrar.restore({AOR: [restored]})
        self.clock.advance(100)
        [refreshed] = register(self.registrar,
                               contact="<sip:alice@h.example:5062>",
                               callID="new", cseq=1)
        self.assertEqual(refreshed.callID, "new")
        self.assertEqual(len(self.registrar.lookup(AOR)), 1)

    def test_refreshesDoNotPileUp(self):
        """
        The expiry heap keeps about one entry per binding however often a
        binding is refreshed, and the binding still expires when its last
        refresh says.
        """
        for cseq in range(1, 1001):
            register(self.registrar, cseq=cseq, expires=120)
            self.clock.advance(1)
        self.assertLessEqual(len(self.registrar._heap), 2 * 1 + 64)
        self.clock.advance(100)
        self.assertEqual(len(self.registrar.lookup(AOR)), 1)
        self.clock.advance(30)
        self.assertEqual(self.registrar.lookup(AOR), [])
        self.assertEqual(self.registrar.count, 0)
        self.assertEqual(self.registrar._count, 0)

    def test_refreshAddsNothingToTheHeap(self):
        """
        A refresh, which only makes a binding last longer, leaves the expiry
        heap as it was: a burst of refreshes keeps no entry (nor its time
        and address-of-record) alive after it.  The check at the first
        expiry finds the binding refreshed and is moved to its new expiry.
        """
        register(self.registrar, cseq=1, expires=120)
        entries = list(self.registrar._heap)
        self.assertEqual(len(entries), 1)
        for cseq in range(2, 1002):
            register(self.registrar, cseq=cseq, expires=120)
        self.assertEqual(len(self.registrar._heap), 1)
        self.assertIs(self.registrar._heap[0], entries[0])
        self.clock.advance(100)
        register(self.registrar, cseq=1002, expires=120)
        self.clock.advance(30)
        self.assertEqual(len(self.registrar.lookup(AOR)), 1)
        self.assertEqual(len(self.registrar._heap), 1)
        self.assertEqual(self.registrar._heap[0][0], 220.0)
        self.clock.advance(95)
        self.assertEqual(self.registrar.lookup(AOR), [])
        self.assertEqual(self.registrar.count, 0)
        self.assertEqual(self.registrar._heap, [])

    def test_shorterBindingSweptAtItsExpiry(self):
        """
        A binding shorter than the others of its address-of-record is swept
        at its own expiry, not at theirs.
        """
        register(self.registrar, contact="<sip:alice@192.0.2.1>",
                 expires=3600)
        register(self.registrar, contact="<sip:alice@192.0.2.2>",
                 callID="c2", expires=60)
        self.assertEqual(self.registrar.bindingCount, 2)
        self.clock.advance(66)
        self.assertEqual(self.registrar.bindingCount, 1)
        self.clock.advance(3600)
        self.assertEqual(self.registrar.bindingCount, 0)

    def test_churnKeepsTheHeapBounded(self):
        """
        Addresses-of-record registered and removed in turn leave a heap of
        about one entry per address-of-record with bindings.
        """
        for n in range(1000):
            aor = f"sip:user{n}@example.com"
            self.registrar.register(aor, parseMessage(registerBytes(
                user=f"user{n}")))
            self.registrar.remove(aor)
        self.assertEqual(self.registrar.count, 0)
        self.assertLessEqual(len(self.registrar._heap), 64)

    def test_outOfOrder(self):
        """
        Same Call-ID with a CSeq not above the stored one is refused (500);
        another Call-ID replaces the binding.
        """
        register(self.registrar, cseq=5)
        error = self.assertRaises(RegistrarError, register, self.registrar, cseq=5)
        self.assertEqual(error.code, 500)
        [b] = register(self.registrar, cseq=1, callID="other")
        self.assertEqual(b.callID, "other")

    def test_star(self):
        """
        Contact * with Expires 0 removes every binding; with another expiry
        or another contact it is a 400.
        """
        register(self.registrar, contact="<sip:a@h1>, <sip:a@h2>")
        error = self.assertRaises(RegistrarError, register, self.registrar,
                                  contact="*", cseq=2, expires=60)
        self.assertEqual(error.code, 400)
        self.assertEqual(register(self.registrar, contact="*", cseq=3, expires=0), [])
        self.assertEqual(self.registrar.lookup(AOR), [])

    def test_query(self):
        """
        A REGISTER without Contact changes nothing and lists the bindings.
        """
        register(self.registrar)
        request = parseMessage(registerBytes().replace(
            b"Contact: <sip:alice@192.0.2.1:5060>\r\n", b""))
        self.assertEqual(len(self.registrar.register(AOR, request)), 1)

    def test_bounds(self):
        """
        Past the bindings per AOR the REGISTER is a 403, applied not at all;
        past the AORs in all, a 503.
        """
        register(self.registrar, contact="<sip:a@h1>, <sip:a@h2>")
        error = self.assertRaises(RegistrarError, register, self.registrar,
                                  contact="<sip:a@h3>, <sip:a@h4>", cseq=2)
        self.assertEqual(error.code, 403)
        self.assertEqual(len(self.registrar.lookup(AOR)), 2)
        request = parseMessage(registerBytes())
        self.registrar.register("sip:b@example.com", request)
        error = self.assertRaises(RegistrarError, self.registrar.register,
                                  "sip:c@example.com", request)
        self.assertEqual(error.code, 503)

    def test_path(self):
        """
        The Path of the REGISTER is stored with the binding (RFC 3327).
        """
        [b] = register(self.registrar, extra=(
            "Path: <sip:edge.example;lr>", "Path: <sip:home1.example;lr>"))
        self.assertEqual(b.path, ["<sip:edge.example;lr>", "<sip:home1.example;lr>"])

    def test_badContact(self):
        """
        Malformed contacts, expiries and q values are 400s.
        """
        for contact in ("<sip:a@>", "<sip:a@h>;expires=x", "<sip:a@h>;q=2"):
            error = self.assertRaises(RegistrarError, register, self.registrar,
                                      contact=contact)
            self.assertEqual(error.code, 400, contact)

    def test_expiry(self):
        """
        Bindings expire on the clock: never returned once expired, removed
        by the sweep, observers told, no timer left behind.
        """
        events = []
        self.registrar.observe(lambda aor, registered: events.append((aor, registered)))
        register(self.registrar, contact="<sip:a@h>;expires=100")
        self.clock.advance(99)
        self.assertEqual(len(self.registrar.lookup(AOR)), 1)
        self.clock.advance(1)
        self.assertEqual(self.registrar.lookup(AOR), [])
        self.clock.advance(5)
        self.assertEqual(self.registrar.aors(), [])
        self.assertEqual(events, [(AOR, True), (AOR, False)])
        self.assertEqual(self.clock.getDelayedCalls(), [])


INSTANCE = '"<urn:uuid:00000000-0000-4000-8000-000000000001>"'


class OutboundBindingTests(SynchronousTestCase):
    """
    RFC 5626 section 6: a Contact with C{+sip.instance} and C{reg-id} is
    bound by its instance id and reg-id, whatever its URI.
    """

    def setUp(self):
        self.clock = Clock()
        self.registrar = Registrar(self.clock, maxBindings=3)
        self.addCleanup(self.registrar.stop)

    def flow(self, port, regId=1, instance=INSTANCE, cseq=1, callID="c1",
             expires=None):
        contact = f"<sip:alice@192.0.2.1:{port};transport=tcp>" \
            f";+sip.instance={instance};reg-id={regId}"
        return register(self.registrar, contact=contact, cseq=cseq,
                        callID=callID, expires=expires)

    def test_sameInstanceAndRegIdReplaces(self):
        """
        A client that connects again (a new port, a new Call-ID after a
        new login) replaces its binding instead of adding one.
        """
        self.flow(40001)
        [binding] = self.flow(40002, callID="c2")
        self.assertEqual(binding.uri.port, 40002)
        self.assertEqual(binding.regId, "1")
        self.assertEqual(binding.instance, INSTANCE)

    def test_contactKeepsInstance(self):
        """
        The binding keeps the Contact's C{+sip.instance} as written (its
        quoted C{<urn:...>} holds a C{>}, which is not where the URI
        ends), without the C{expires} and C{q} the registrar writes
        anew; the 200's Contact value carries it back to the client.
        """
        contact = (f'"A > B" <sip:alice@192.0.2.1:40001;transport=tcp>'
                   f';expires=600;+sip.instance={INSTANCE};q=0.5;reg-id=1')
        [binding] = register(self.registrar, contact=contact)
        self.assertEqual(
            binding.contact,
            f'"A > B" <sip:alice@192.0.2.1:40001;transport=tcp>'
            f';+sip.instance={INSTANCE};reg-id=1')
        [value] = contactHeaderValues([binding], self.clock.seconds())
        self.assertEqual(value, binding.contact + ";expires=600;q=0.5")

    def test_instanceComparedWithoutCase(self):
        """
        Instance ids are compared case insensitively.
        """
        self.flow(40001)
        [binding] = self.flow(40002, callID="c2", instance=INSTANCE.upper()
                              .replace("URN:UUID", "urn:uuid"))
        self.assertEqual(binding.uri.port, 40002)

    def test_otherRegIdAdds(self):
        """
        Another reg-id of the same instance is another flow: a second
        binding.
        """
        self.flow(40001)
        self.assertEqual(len(self.flow(40002, regId=2, callID="c2")), 2)

    def test_otherInstanceAdds(self):
        """
        Another instance (another device of the user) adds a binding.
        """
        self.flow(40001)
        other = '"<urn:uuid:00000000-0000-4000-8000-000000000002>"'
        self.assertEqual(len(self.flow(40002, instance=other,
                                       callID="c2")), 2)

    def test_removedByInstance(self):
        """
        Expires 0 on a Contact with the instance id and reg-id removes that
        flow's binding, whatever the URI.
        """
        self.flow(40001)
        self.assertEqual(self.flow(40009, callID="c2", expires=0), [])
        self.assertEqual(self.registrar.lookup(AOR), [])

    def test_outOfOrder(self):
        """
        An older CSeq of the same Call-ID for the same flow is refused.
        """
        self.flow(40001, cseq=5)
        e = self.assertRaises(RegistrarError, self.flow, 40002, cseq=4)
        self.assertEqual(e.code, 500)

    def test_badRegId(self):
        """
        A reg-id that is not a positive integer is a 400.
        """
        e = self.assertRaises(RegistrarError, self.flow, 40001, regId="x")
        self.assertEqual((e.code, e.phrase), (400, "Bad Contact reg-id"))

    def test_regIdWithoutInstanceIgnored(self):
        """
        A reg-id without an instance id does not make an RFC 5626 flow: the
        Contact is bound by its URI, as without it.
        """
        register(self.registrar, contact="<sip:alice@192.0.2.1:1>;reg-id=1")
        bindings = register(self.registrar, contact="<sip:alice@192.0.2.1:2>"
                            ";reg-id=1", callID="c2")
        self.assertEqual(len(bindings), 2)
        self.assertIsNone(bindings[0].regId)

    def test_plainContactUnchanged(self):
        """
        Contacts without an instance id are still bound by their URI.
        """
        register(self.registrar, contact="<sip:alice@192.0.2.1:1>")
        self.assertEqual(len(register(
            self.registrar, contact="<sip:alice@192.0.2.1:1>", cseq=2)), 1)
