"""
Write the screenshot of the status page in the docs (docs/pool-page.png):
the demo pool of L{tests.page_helpers} on loopback, its page taken by
headless Chromium at 1000x700 pixels (the page drawn at 90%)::

    .venv/bin/python -m tests.page_screenshot docs/pool-page.png
"""

import sys

from twisted.internet import defer, task

from tests.chromium import screenshot
from tests.page_helpers import startDemoPool


class _Cleanups:
    """
    What L{startDemoPool} needs of a test case: somewhere to register
    what stops the servers.
    """

    def __init__(self):
        self.calls = []

    def addCleanup(self, f, *args):
        self.calls.append((f, args))

    async def run(self):
        for f, args in reversed(self.calls):
            await defer.maybeDeferred(f, *args)


async def main(reactor, path):
    cleanups = _Cleanups()
    try:
        pool, port = await startDemoPool(cleanups)
        await screenshot(reactor, f"http://127.0.0.1:{port}/", path,
                         scale=0.9)
    finally:
        await cleanups.run()
    print(f"wrote {path}")


if __name__ == "__main__":
    task.react(lambda reactor: defer.ensureDeferred(
        main(reactor, sys.argv[1] if len(sys.argv) > 1 else
             "docs/pool-page.png")))
