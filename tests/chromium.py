"""
Headless Chromium driven as a process: the DOM of a page after it has
loaded (C{--dump-dom}) or a PNG of it (C{--screenshot}), each run with a
fresh profile in a temporary directory and a time bound.
"""

import os
import shutil
import tempfile

from twisted.internet import defer

from tests.interop import requireTool, runProcess

# Seconds one Chromium run may take before it is killed.
TIMEOUT = 60


def requireChromium():
    """
    The path of Chromium, or skip the test (fail it under C{CI=true}).
    """
    return requireTool("chromium")


def _argv(chromium, profile, extra, url):
    return [chromium, "--headless", "--no-sandbox", "--disable-gpu",
            "--no-first-run", "--no-default-browser-check",
            "--disable-extensions", "--disable-sync",
            "--disable-background-networking", "--disable-component-update",
            "--disable-dev-shm-usage", "--hide-scrollbars",
            f"--user-data-dir={profile}"] + list(extra) + [url]


@defer.inlineCallbacks
def runChromium(reactor, url, extra, timeout=TIMEOUT, chromium=None):
    """
    Run headless Chromium on C{url} with the options C{extra}.

    @return: L{Deferred} firing with C{(exitCode, stdout, stderr)}.
    """
    chromium = chromium or requireChromium()
    profile = tempfile.mkdtemp(prefix="sipdist-chromium-")
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8",
           "HOME": profile, "TERM": "dumb"}
    try:
        result = yield runProcess(reactor, _argv(chromium, profile, extra,
                                                 url), timeout, env=env)
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    return result


@defer.inlineCallbacks
def dumpDOM(reactor, url, timeout=TIMEOUT):
    """
    The DOM of C{url} once loaded, serialised as HTML (text).

    @raise AssertionError: if Chromium fails.
    """
    code, out, err = yield runChromium(reactor, url, ["--dump-dom"], timeout)
    if code != 0 or "<html" not in out:
        raise AssertionError(f"chromium --dump-dom {url}: exit {code}\n"
                             f"{err[-2000:]}")
    return out


@defer.inlineCallbacks
def screenshot(reactor, url, path, size=(1000, 700), scale=1.0,
               timeout=TIMEOUT):
    """
    Write a PNG of C{url} at C{size} (pixels) to C{path}, the page drawn
    at C{scale} (0.9: a 10% wider page fits).
    """
    # Chromium's window size is in CSS pixels, the PNG's in device pixels.
    width, height = round(size[0] / scale), round(size[1] / scale)
    code, out, err = yield runChromium(
        reactor, url, [f"--screenshot={path}",
                       f"--window-size={width},{height}",
                       f"--force-device-scale-factor={scale:g}"], timeout)
    if code != 0 or not os.path.exists(path):
        raise AssertionError(f"chromium --screenshot {url}: exit {code}\n"
                             f"{err[-2000:]}")
