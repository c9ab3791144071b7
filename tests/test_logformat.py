# -*- test-case-name: tests.test_logformat -*-
"""
Tests for C{--log-format=json}: twisted.logger's JSON events in the log
file of a real twistd process, and one event per distribution decision.
"""

import io
import os
import subprocess
import sys

from twisted.internet import defer
from twisted.logger import eventsFromJSONLogFile, globalLogPublisher
from twisted.trial.unittest import TestCase

from tests.distribution_helpers import startClients, startPool
from tests.test_resources import TOP, ServerProcess
from tests.test_startup import NO_WARMUP


class JSONLogFileTests(TestCase):
    """
    A twistd sipdist process run with C{--log-format=json}.
    """

    timeout = 60

    def test_jsonLines(self):
        """
        Every record of the log file is a JSON event that
        L{eventsFromJSONLogFile} reads back: the startup events, and the
        server's own events with their fields.
        """
        server = ServerProcess(self, "--log-format=json")
        server.stop()
        with open(server.log, encoding="utf-8") as f:
            text = f.read()
        records = [r for r in text.split("\x1e") if r.strip()]
        self.assertTrue(records, text)
        events = list(eventsFromJSONLogFile(io.StringIO(text)))
        # Nothing was skipped as unreadable.
        self.assertEqual(len(events), len(records))
        self.assertTrue(all("log_format" in e and "log_level" in e
                            for e in events))
        self.assertTrue(any(e.get("log_namespace", "").startswith("sipdist")
                            for e in events), text[-3000:])

    def test_badFormat(self):
        """
        A C{--log-format} other than text or json ends twistd with one
        line naming the option.
        """
        twistd = os.path.join(os.path.dirname(sys.executable), "twistd")
        result = subprocess.run(
            [twistd, "-n", "--pidfile=", "sipdist", NO_WARMUP, "--role=home",
             "--name=home1", "--domain=example.com",
             "--credentials=memory:bob:bob-pw", "--log-format=xml"],
            env=dict(os.environ, PYTHONPATH=TOP), capture_output=True,
            text=True, timeout=30)
        self.assertEqual(result.returncode, 1)
        self.assertIn("--log-format: 'xml' is not one of text, json",
                      result.stderr + result.stdout)


class DecisionEventTests(TestCase):
    """
    With C{log-format} json, the distribution processor logs one event per
    decision.
    """

    timeout = 20

    @defer.inlineCallbacks
    def test_decisions(self):
        """
        A client logging in through the distributor is redirected to its
        home (one C{redirect} event naming the home chosen), which serves
        it (a C{serve} event); each event carries the method, Call-ID,
        user and a time taken.
        """
        events = []

        def observe(event):
            if event.get("decision"):
                events.append(event)
        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)
        pool = yield startPool(self, homes=("home1",), users=["alice"],
                               **{"log-format": "json"})
        yield pool.store.assignUsers([("alice@example.com", "home1")])
        yield startClients(self, pool, ["alice"])
        byServer = {}
        for event in events:
            byServer.setdefault(event["server"], []).append(event)
        redirect, = [e for e in byServer["distributor"]
                     if e["method"] == "REGISTER"]
        self.assertEqual(redirect["outcome"], "redirect")
        self.assertEqual(redirect["chosen"], "home1")
        self.assertEqual(redirect["user"], "sip:alice@example.com")
        self.assertTrue(redirect["callID"])
        self.assertGreaterEqual(redirect["elapsed"], 0)
        served = [e for e in byServer["home1"] if e["method"] == "REGISTER"]
        self.assertEqual([e["outcome"] for e in served], ["serve"])
        self.assertEqual(served[0]["chosen"], "home1")

    @defer.inlineCallbacks
    def test_textQuiet(self):
        """
        With the default text format no decision is logged.
        """
        events = []

        def observe(event):
            if event.get("decision"):
                events.append(event)
        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)
        pool = yield startPool(self, homes=("home1",), users=["alice"])
        yield pool.store.assignUsers([("alice@example.com", "home1")])
        agents = yield startClients(self, pool, ["alice"])
        self.assertTrue(agents["alice"].registration)
        self.assertEqual(events, [])
