"""
Tests for L{sipdist.decision}: every branch of the distribution flow.
"""

from twisted.trial.unittest import SynchronousTestCase

from sipdist.decision import (
    NOT_ASSIGNED, SERVER_DOWN, UNKNOWN_SERVER, Assignment, Proxy, Redirect,
    Serve, decide)

HOME2 = Assignment("home2", "sip:127.0.0.1:5080", "active")
HERE = Assignment("home1", "sip:127.0.0.1:5070", "active")

# (description, viaCount, assignment, role, policy, expected)
TABLE = [
    ("assigned here, home, direct", 1, HERE, "home", "auto", Serve()),
    ("assigned here, home, through a proxy", 2, HERE, "home", "auto", Serve()),
    ("assigned here, home, policy proxy", 1, HERE, "home", "proxy", Serve()),
    ("assigned elsewhere, one Via: redirect", 1, HOME2, "home", "auto",
     Redirect("sip:127.0.0.1:5080", "home2")),
    ("assigned elsewhere, two Via values: proxy", 2, HOME2, "home", "auto",
     Proxy("sip:127.0.0.1:5080", "home2")),
    ("assigned elsewhere, five Via values: proxy", 5, HOME2, "home", "auto",
     Proxy("sip:127.0.0.1:5080", "home2")),
    ("policy proxy never redirects", 1, HOME2, "home", "proxy",
     Proxy("sip:127.0.0.1:5080", "home2")),
    ("policy redirect redirects through a proxy", 2, HOME2, "home", "redirect",
     Redirect("sip:127.0.0.1:5080", "home2")),
    ("draining server still gets its users", 1,
     Assignment("home2", "sip:h2", "draining"), "home", "auto",
     Redirect("sip:h2", "home2")),
    ("distributor is never a home", 1,
     Assignment("distributor", "sip:d", "active"), "distributor", "auto",
     Redirect("sip:d", "distributor")),
    ("distributor redirects direct clients", 1, HOME2, "distributor", "auto",
     Redirect("sip:127.0.0.1:5080", "home2")),
    ("distributor proxies through a proxy", 2, HOME2, "distributor", "auto",
     Proxy("sip:127.0.0.1:5080", "home2")),
    ("internal edge proxies", 2, HOME2, "internal-edge", "auto",
     Proxy("sip:127.0.0.1:5080", "home2")),
    ("unknown user", 1, Assignment(), "home", "auto", NOT_ASSIGNED),
    ("unknown user, distributor", 2, Assignment(), "distributor", "auto",
     NOT_ASSIGNED),
    ("assigned to an unknown server", 1, Assignment("home9"), "home", "auto",
     UNKNOWN_SERVER),
    ("assigned to a server that is down", 1,
     Assignment("home2", "sip:h2", "down"), "home", "auto", SERVER_DOWN),
    ("down server, through a proxy", 3,
     Assignment("home2", "sip:h2", "down"), "distributor", "proxy", SERVER_DOWN),
]


class DecideTests(SynchronousTestCase):
    """
    L{decide} over every branch.
    """

    def test_table(self):
        for description, vias, assignment, role, policy, expected in TABLE:
            self.assertEqual(
                decide(vias, assignment, role, "home1", policy), expected,
                description)

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
