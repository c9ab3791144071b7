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
        self.assertIn("sipdist", start)
        self.assertIn("twisted.trial tests", test)
        self.assertIn(test, commandLines(ci))

    def test_configsExist(self):
        """
        The configuration the start command names is shipped.
        """
        readme = TOP.child("README.rst").getContent().decode("utf-8")
        start = commandLines(readme)[0]
        config = start.split("--config", 1)[1].split()[0]
        self.assertTrue(TOP.preauthChild(config).exists(), config)
