"""
Small helpers shared by the store tests.
"""

import shutil
import tempfile


def tempDir(case):
    """
    A fresh temporary directory removed when C{case} ends (outside the
    working directory, whichever runner is used).
    """
    path = tempfile.mkdtemp(prefix="sipdist-test-")
    case.addCleanup(shutil.rmtree, path, True)
    return path
