"""
The package's shape: no import circles, the SIP stack importable without a
reactor, and an editable install that twistd finds.
"""

import ast
import os
import subprocess
import sys
import tempfile

from twisted.python.filepath import FilePath
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tests.interop import inCI

TOP = FilePath(__file__).parent().parent()
PACKAGE = TOP.child("sipdist")


def moduleName(path):
    parts = list(path.segmentsFrom(TOP))
    parts[-1] = parts[-1][:-3]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def importGraph():
    """
    Which sipdist modules each sipdist module imports, anywhere in it (at
    its top or inside a function: a deferred import is a circle too).
    """
    files = {moduleName(p): p for p in PACKAGE.walk()
             if p.basename().endswith(".py")}
    graph = {}
    for name, path in files.items():
        tree = ast.parse(path.getContent(), path.path)
        isPackage = path.basename() == "__init__.py"
        found = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    package = name.split(".")
                    if not isPackage:
                        package.pop()
                    package = package[:len(package) - node.level + 1]
                    base = ".".join(package + ([base] if base else []))
                targets = [f"{base}.{a.name}" for a in node.names] + [base]
            else:
                continue
            for target in targets:
                while target and target not in files:
                    target = target.rpartition(".")[0]
                if target and target != name:
                    found.add(target)
        graph[name] = found
    return graph


def cycles(graph):
    """
    The strongly connected components of more than one module.
    """
    index, low, stack, onStack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        onStack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in onStack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                onStack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


class CycleTests(SynchronousTestCase):
    """
    No two modules of sipdist import each other, directly or through
    others.
    """

    def test_cyclesFound(self):
        """
        The check sees a circle when there is one.
        """
        self.assertEqual(cycles({"a": {"b"}, "b": {"c"}, "c": {"a"},
                                 "d": {"a"}}), [["a", "b", "c"]])

    def test_graphSeesDeferredImports(self):
        """
        The graph holds the imports made inside functions: the server
        imports the table of chains, which names no role module.
        """
        graph = importGraph()
        self.assertIn("sipdist.roles.chains", graph["sipdist.server"])
        self.assertFalse({m for m in graph["sipdist.server"]
                          if m.startswith("sipdist.roles.")
                          and m != "sipdist.roles.chains"})

    def test_noCycles(self):
        """
        The import graph of sipdist has no circle.
        """
        self.assertEqual(cycles(importGraph()), [])

    def test_stackBelowServices(self):
        """
        The SIP stack (sipdist.sip) imports nothing of the services, roles,
        pool, store or commands above it.
        """
        graph = importGraph()
        above = ("sipdist.services", "sipdist.roles", "sipdist.pool",
                 "sipdist.store", "sipdist.commands", "sipdist.server",
                 "sipdist.client")
        for name, imported in graph.items():
            if name.startswith("sipdist.sip"):
                self.assertEqual(
                    [m for m in imported if m.startswith(above)], [], name)


def run(code, python=sys.executable, **kw):
    return subprocess.run([python, "-c", code], capture_output=True,
                          text=True, timeout=120, **kw)


class ReactorTests(SynchronousTestCase):
    """
    Importing the SIP stack and the plugin's modules installs no reactor,
    so twistd's C{--reactor} and test runners choose it.
    """

    def test_noReactor(self):
        """
        After importing sipdist.sip.uri, sipdist.sip.message,
        sipdist.sip.transaction, sipdist.tap and the plugin files, no
        reactor is installed; Twisted's SIP module still reaches the real
        reactor when it is used.
        """
        result = run(
            "import sys\n"
            "import sipdist.sip.uri, sipdist.sip.message\n"
            "import sipdist.sip.transaction, sipdist.tap\n"
            "from twisted.plugins import sipdist_plugin, sipdist_stores\n"
            "print('twisted.internet.reactor' in sys.modules)\n"
            "from twisted.internet import reactor\n"
            "from twisted.protocols import sip\n"
            "print(sip.reactor.seconds is not None)\n",
            cwd=TOP.path)
        self.assertEqual(result.stdout.split(), ["False", "True"],
                         result.stderr)


class EditableInstallTests(TestCase):
    """
    C{pip install -e .} gives a twistd that finds the sipdist plugin.
    """

    def test_twistdFindsPlugin(self):
        """
        In a fresh virtual environment, an editable install of the project
        (its dependencies installed there too: none of this environment's
        copy of sipdist is seen) makes C{twistd sipdist --help} list
        sipdist's options.
        """
        with tempfile.TemporaryDirectory() as tmp:
            venv = os.path.join(tmp, "venv")
            subprocess.run([sys.executable, "-m", "venv", venv], check=True,
                           capture_output=True, timeout=120)
            python = os.path.join(venv, "bin", "python")
            pip = subprocess.run(
                [python, "-m", "pip", "install", "-q", "-e",
                 TOP.path], capture_output=True, text=True, timeout=300)
            if pip.returncode:
                message = f"pip install -e failed: {pip.stderr[-500:]}"
                if inCI():
                    self.fail(message)
                raise self.skipTest(message)
            twistd = subprocess.run(
                [python, "-c", "import sys; from twisted.scripts.twistd "
                 "import run; sys.argv = ['twistd', 'sipdist', '--help']; "
                 "run()"], cwd=tmp,
                capture_output=True, text=True, timeout=120)
            self.assertIn("--role", twistd.stdout, twistd.stderr)
            self.assertIn("--store", twistd.stdout)
