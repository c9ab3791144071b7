"""
Tests for L{sipdist.decision}: every branch of the distribution flow.
"""

from twisted.trial.unittest import SynchronousTestCase

from sipdist.decision import (
    NOT_ASSIGNED, SERVER_DOWN, UNKNOWN_SERVER, Assignment, Proxy, Redirect,
    Serve, decide)

HOME2 = Assignment("home2", "sip:127.0.0.1:5080", "active")
HERE = Assignment("home1", "sip:127.0.0.1:5070", "active")

# Who follows the distribution redirect (the option tag, a configured
# User-Agent) and who does not.
FOLLOWS, STANDARD = True, False
REG, INVITE = True, False

# (description, viaCount, follows, register, assignment, role, policy,
#  expected)
TABLE = [
    ("assigned here, home, direct", 1, FOLLOWS, REG, HERE, "home", "auto",
     Serve()),
    ("assigned here, home, standard client", 1, STANDARD, REG, HERE, "home",
     "auto", Serve()),
    ("assigned here, home, through a proxy", 2, FOLLOWS, REG, HERE, "home",
     "auto", Serve()),
    ("assigned here, home, policy proxy", 1, FOLLOWS, REG, HERE, "home",
     "proxy", Serve()),
    ("assigned here, home, INVITE", 1, STANDARD, INVITE, HERE, "home",
     "redirect", Serve()),

    # auto: a redirect only for a client that follows it, talking to us
    ("auto, follows, one Via: redirect", 1, FOLLOWS, REG, HOME2, "home",
     "auto", Redirect("sip:127.0.0.1:5080", "home2")),
    ("auto, standard client, one Via: proxy (Path)", 1, STANDARD, REG, HOME2,
     "home", "auto", Proxy("sip:127.0.0.1:5080", "home2")),
    ("auto, follows, two Via values: proxy", 2, FOLLOWS, REG, HOME2, "home",
     "auto", Proxy("sip:127.0.0.1:5080", "home2")),
    ("auto, follows, five Via values: proxy", 5, FOLLOWS, REG, HOME2, "home",
     "auto", Proxy("sip:127.0.0.1:5080", "home2")),
    ("auto, standard client, two Via values: proxy", 2, STANDARD, REG, HOME2,
     "home", "auto", Proxy("sip:127.0.0.1:5080", "home2")),
    ("auto, INVITE from a standard client: proxy, never 3xx", 1, STANDARD,
     INVITE, HOME2, "distributor", "auto",
     Proxy("sip:127.0.0.1:5080", "home2")),
    ("auto, INVITE from a client that follows: redirect", 1, FOLLOWS,
     INVITE, HOME2, "distributor", "auto",
     Redirect("sip:127.0.0.1:5080", "home2")),

    # proxy: never a redirect
    ("policy proxy never redirects", 1, FOLLOWS, REG, HOME2, "home", "proxy",
     Proxy("sip:127.0.0.1:5080", "home2")),
    ("policy proxy, INVITE", 1, FOLLOWS, INVITE, HOME2, "distributor",
     "proxy", Proxy("sip:127.0.0.1:5080", "home2")),

    # redirect: every REGISTER; other requests only for who follows
    ("policy redirect redirects through a proxy", 2, FOLLOWS, REG, HOME2,
     "home", "redirect", Redirect("sip:127.0.0.1:5080", "home2")),
    ("policy redirect redirects a standard client's REGISTER", 1, STANDARD,
     REG, HOME2, "distributor", "redirect",
     Redirect("sip:127.0.0.1:5080", "home2")),
    ("policy redirect never sends a standard client's INVITE a 3xx", 1,
     STANDARD, INVITE, HOME2, "distributor", "redirect",
     Proxy("sip:127.0.0.1:5080", "home2")),
    ("policy redirect, INVITE through a proxy, standard client", 2,
     STANDARD, INVITE, HOME2, "distributor", "redirect",
     Proxy("sip:127.0.0.1:5080", "home2")),
    ("policy redirect, INVITE from a client that follows", 2, FOLLOWS,
     INVITE, HOME2, "distributor", "redirect",
     Redirect("sip:127.0.0.1:5080", "home2")),

    ("draining server still gets its users", 1, FOLLOWS, REG,
     Assignment("home2", "sip:h2", "draining"), "home", "auto",
     Redirect("sip:h2", "home2")),
    ("distributor is never a home", 1, FOLLOWS, REG,
     Assignment("distributor", "sip:d", "active"), "distributor", "auto",
     Redirect("sip:d", "distributor")),
    ("distributor is never a home, standard client", 1, STANDARD, REG,
     Assignment("distributor", "sip:d", "active"), "distributor", "auto",
     Proxy("sip:d", "distributor")),
    ("distributor redirects direct clients that follow", 1, FOLLOWS, REG,
     HOME2, "distributor", "auto", Redirect("sip:127.0.0.1:5080", "home2")),
    ("distributor proxies direct standard clients", 1, STANDARD, REG, HOME2,
     "distributor", "auto", Proxy("sip:127.0.0.1:5080", "home2")),
    ("distributor proxies through a proxy", 2, FOLLOWS, REG, HOME2,
     "distributor", "auto", Proxy("sip:127.0.0.1:5080", "home2")),
    ("internal edge proxies", 2, FOLLOWS, REG, HOME2, "internal-edge", "auto",
     Proxy("sip:127.0.0.1:5080", "home2")),
    ("unknown user", 1, FOLLOWS, REG, Assignment(), "home", "auto",
     NOT_ASSIGNED),
    ("unknown user, distributor", 2, STANDARD, REG, Assignment(),
     "distributor", "auto", NOT_ASSIGNED),
    ("assigned to an unknown server", 1, STANDARD, REG, Assignment("home9"),
     "home", "auto", UNKNOWN_SERVER),
    ("assigned to a server that is down", 1, FOLLOWS, REG,
     Assignment("home2", "sip:h2", "down"), "home", "auto", SERVER_DOWN),
    ("down server, through a proxy", 3, STANDARD, INVITE,
     Assignment("home2", "sip:h2", "down"), "distributor", "proxy",
     SERVER_DOWN),
]


class DecideTests(SynchronousTestCase):
    """
    L{decide} over every branch.
    """

    def test_table(self):
        for (description, vias, follows, register, assignment, role, policy,
             expected) in TABLE:
            self.assertEqual(
                decide(vias, assignment, role, "home1", policy,
                       followsRedirect=follows, register=register),
                expected, description)

    def test_standardClientsNeverRetargeted(self):
        """
        Whatever the policy and the Via count, a request other than
        REGISTER from a client that does not follow the distribution
        redirect is never answered with a redirect.
        """
        for policy in ("auto", "proxy", "redirect"):
            for vias in (1, 2, 3):
                self.assertEqual(
                    decide(vias, HOME2, "distributor", "distributor", policy,
                           followsRedirect=False, register=False),
                    Proxy("sip:127.0.0.1:5080", "home2"), (policy, vias))

    def test_defaultsAreConservative(self):
        """
        Without the facts about the client, L{decide} assumes a standard
        client: a direct REGISTER is proxied, not redirected.
        """
        self.assertEqual(decide(1, HOME2, "distributor", "distributor"),
                         Proxy("sip:127.0.0.1:5080", "home2"))

    def test_rejectsAreClear(self):
        """
        Every rejection has a 4xx/5xx code and a phrase naming the problem;
        a server that is down tells the client when to retry.
        """
        for reject in (NOT_ASSIGNED, UNKNOWN_SERVER, SERVER_DOWN):
            self.assertTrue(400 <= reject.code < 600)
            self.assertIn("(", reject.phrase)
        self.assertEqual(SERVER_DOWN.code, 503)
        self.assertGreater(SERVER_DOWN.retryAfter, 0)
