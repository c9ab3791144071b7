# -*- test-case-name: tests.test_store_plugins -*-
"""
Tests for choosing store providers through Twisted plugins.
"""

import os
import sys

from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

import twisted.plugins
from sipdist.interfaces import IAssignmentStoreParser
from sipdist.store import storeFromString, storeParsers

PLUGIN_PKG = os.path.join(os.path.dirname(__file__), "plugin_pkg")


class PluginTests(SynchronousTestCase):
    """
    Providers are found by prefix among the plugins on the path.
    """

    def test_shipped(self):
        """
        sipdist ships the memory, file and ldap providers, each providing
        L{IAssignmentStoreParser}.
        """
        parsers = storeParsers()
        for prefix in ("memory", "file", "ldap"):
            self.assertTrue(verifyObject(IAssignmentStoreParser,
                                         parsers[prefix]))

    def test_discoveryIsLight(self):
        """
        Finding the providers imports neither ldaptor nor the reactor.
        """
        import subprocess
        code = ("import sys; from sipdist.store import storeParsers; "
                "storeParsers(); "
                "print('twisted.internet.reactor' in sys.modules, "
                "any(m.startswith('ldaptor') for m in sys.modules))")
        out = subprocess.run([sys.executable, "-c", code], timeout=60,
                             capture_output=True, text=True, check=True)
        self.assertEqual(out.stdout.strip(), "False False")

    def test_thirdPartyProvider(self):
        """
        A provider registered by another package's C{twisted/plugins}
        directory is selected by its prefix.
        """
        import shutil
        from tests.helpers_store import tempDir
        pkg = os.path.join(tempDir(self), "pkg")
        shutil.copytree(PLUGIN_PKG, pkg)
        sys.path.insert(0, pkg)
        extra = os.path.join(pkg, "twisted", "plugins")
        twisted.plugins.__path__.append(extra)

        def restore():
            sys.path.remove(pkg)
            twisted.plugins.__path__.remove(extra)
            sys.modules.pop("examplestore", None)
            sys.modules.pop("twisted.plugins.example_store", None)

        self.addCleanup(restore)
        self.assertIn("example", storeParsers())
        store = storeFromString(None, "example:home7:sip\\:10.0.0.7")
        record = self.successResultOf(store.getServer("home7"))
        self.assertEqual(record.uri, "sip:10.0.0.7")
