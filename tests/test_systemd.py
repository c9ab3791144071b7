# -*- test-case-name: tests.test_systemd -*-
"""
Tests for C{etc/systemd/sipdist@.service}: the templated unit runs one
server per configuration file, hardened.
"""

import configparser
import os
import shutil
import subprocess
import sys
import tempfile

from twisted.trial.unittest import TestCase

from tests.interop import requireTool

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
UNIT = os.path.join(TOP, "etc", "systemd", "sipdist@.service")
TWISTD = "/opt/sipdist/venv/bin/twistd"


def unitText():
    with open(UNIT, encoding="utf-8") as f:
        return f.read()


class UnitTests(TestCase):
    """
    The unit file's keys, and what C{systemd-analyze verify} says of it.
    """

    def service(self):
        parser = configparser.ConfigParser(strict=False, interpolation=None)
        parser.optionxform = str
        parser.read_string(unitText())
        return parser["Service"]

    def test_command(self):
        """
        The unit runs twistd in the foreground without a pid file, on the
        configuration file named by the instance.
        """
        self.assertEqual(
            self.service()["ExecStart"],
            f"{TWISTD} --nodaemon --pidfile= sipdist "
            f"--config /etc/sipdist/%i.toml")

    def test_hardened(self):
        """
        The server runs as its own user, cannot gain privileges, sees the
        file system read-only but for its state directory, and may open
        65536 files.
        """
        service = self.service()
        for key, value in [
                ("User", "sipdist"), ("NoNewPrivileges", "yes"),
                ("ProtectSystem", "strict"), ("ProtectHome", "yes"),
                ("PrivateTmp", "yes"), ("StateDirectory", "sipdist"),
                ("ReadWritePaths", "/var/lib/sipdist"),
                ("LimitNOFILE", "65536"), ("Restart", "on-failure")]:
            self.assertEqual(service.get(key), value, key)

    def test_verify(self):
        """
        C{systemd-analyze verify} finds nothing to say of the unit (it
        needs the command to exist: a copy names this virtual
        environment's twistd).
        """
        analyze = requireTool("systemd-analyze")
        directory = tempfile.mkdtemp(prefix="sipdist-unit-")
        self.addCleanup(shutil.rmtree, directory, True)
        twistd = os.path.join(os.path.dirname(sys.executable), "twistd")
        path = os.path.join(directory, "sipdist@.service")
        with open(path, "w", encoding="utf-8") as f:
            f.write(unitText().replace(TWISTD, twistd))
        result = subprocess.run([analyze, "verify", path],
                                capture_output=True, text=True, timeout=60)
        self.assertEqual((result.returncode, result.stderr.strip()),
                         (0, ""), result.stdout)
