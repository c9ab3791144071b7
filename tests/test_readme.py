"""
The README's promises: the newcomer's commands are there, and CI runs the
same test command.
"""

from twisted.python.filepath import FilePath
from twisted.trial.unittest import SynchronousTestCase

TOP = FilePath(__file__).parent().parent()


def commandLines(text):
    return [line.strip() for line in text.splitlines()
            if line.strip().startswith("python3 -m venv .venv")]


class ReadmeTests(SynchronousTestCase):
    """
    README.rst and .ci/run agree.
    """

    def test_newcomerCommands(self):
        """
        The README holds a command that starts a local deployment and one
        that runs the tests, and CI runs that test command word for word.
        """
        readme = TOP.child("README.rst").getContent().decode("utf-8")
        ci = TOP.child(".ci").child("run").getContent().decode("utf-8")
        commands = commandLines(readme)
        self.assertEqual(len(commands), 2, commands)
        start, test = commands
        self.assertIn("run-local", start)
        self.assertIn("twisted.trial -j2 tests", test)
        self.assertIn(test, commandLines(ci))

    def test_pypyCommand(self):
        """
        The README's PyPy test command is the one CI runs.
        """
        readme = TOP.child("README.rst").getContent().decode("utf-8")
        ci = TOP.child(".ci").child("run").getContent().decode("utf-8")
        pypy = [line.strip() for line in readme.splitlines()
                if line.strip().startswith("pypy3 -m venv")]
        self.assertEqual(len(pypy), 1, pypy)
        self.assertIn("twisted.trial", pypy[0])
        self.assertIn(pypy[0], [line.strip() for line in ci.splitlines()])

    def test_deploymentShipped(self):
        """
        The start command runs etc/run-local, which starts the configurations
        shipped in etc/ with the store and credentials they name.
        """
        readme = TOP.child("README.rst").getContent().decode("utf-8")
        start = commandLines(readme)[0]
        self.assertTrue(start.endswith("etc/run-local"), start)
        etc = TOP.child("etc")
        self.assertTrue(etc.child("run-local").getPermissions().user.execute)
        for name in ("distributor", "home1", "home2"):
            self.assertTrue(etc.child(f"{name}.toml").exists(), name)
        for name in ("assignments.conf", "credentials", "nonce-secret"):
            self.assertTrue(etc.child(name).exists(), name)


class DocumentsTests(SynchronousTestCase):
    """
    The README and docs/ are valid reStructuredText (a broken table or
    heading shows as raw text to the reader).
    """

    def test_valid(self):
        import docutils.core
        import docutils.utils

        paths = [TOP.child("README.rst")] + TOP.child("docs").globChildren("*.rst")
        for path in paths:
            text = path.getContent().decode("utf-8")
            try:
                docutils.core.publish_string(
                    text, writer_name="null",
                    settings_overrides={"report_level": 5, "halt_level": 2})
            except docutils.utils.SystemMessage as e:
                self.fail(f"{path.basename()}: {e}")
