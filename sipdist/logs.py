# -*- test-case-name: tests.test_logs -*-
"""
Bounded logging: a limiter for lines that traffic can cause at will, and the
log file C{twistd sipdist} writes to (rotated by size, a bounded number of
old files kept).

Lines an outsider or an overload can multiply (malformed input, C{503}s,
transactions that time out) go through a L{LogLimiter}: at most C{burst}
lines per C{period} seconds, and at the end of a period in which lines
were held back one summary line says how many (or the overload control's
periodic summary counts them, when it watches the limiter).
"""

import os
import sys

from twisted.logger import jsonFileLogObserver, textFileLogObserver
from twisted.python.logfile import LogFile

DEFAULT_ROTATE_LENGTH = 1000000
DEFAULT_KEEP = 10


class LogLimiter:
    """
    At most C{burst} lines per C{period} seconds for one kind of event.

    Call L{allow} for each event and log the line only when it does not
    return L{None}.  With a C{log} and a C{what}, the first event of a new
    period logs one summary line (C{"{what}: N more not logged in the last
    P s"}) for the lines held back in the periods before, and L{allow}
    returns C{0}; without them it returns that count, for the caller to put
    in its line.

    @ivar suppressed: events held back since the last line or summary.
    @ivar total: every event held back since the limiter was made.
    """

    def __init__(self, reactor, burst=20, period=10.0, log=None, what=None):
        self._reactor = reactor
        self.burst = burst
        self.period = period
        self._log = log
        self.what = what
        self._windowStart = None
        self._lines = 0
        self.suppressed = 0
        self.total = 0

    def allow(self):
        """
        @return: L{None} if this event must not be logged, else how many
            were held back since the last line (always C{0} when this
            limiter logs its own summaries).
        """
        now = self._reactor.seconds()
        if (self._windowStart is None or now - self._windowStart >= self.period
                or now < self._windowStart):
            if self.suppressed and self._log is not None:
                self._log.warn(
                    "{what}: {count} more not logged in the last {period} s",
                    what=self.what, count=self.suppressed,
                    period=self.period)
                self.suppressed = 0
            self._windowStart = now
            self._lines = 0
        if self._lines >= self.burst:
            self.suppressed += 1
            self.total += 1
            return None
        self._lines += 1
        suppressed, self.suppressed = self.suppressed, 0
        return suppressed

    def take(self):
        """
        For a caller that reports the lines held back in its own summary
        (L{sipdist.sip.overload.OverloadControl}): how many since the last
        line or summary; they are then no longer this limiter's to report.
        """
        suppressed, self.suppressed = self.suppressed, 0
        return suppressed


# The log file twistd writes to, when sipdist's options chose it; see
# useRotatingLogFile.
_logFile = None


def useRotatingLogFile(options, keep=DEFAULT_KEEP,
                       rotateLength=DEFAULT_ROTATE_LENGTH, json=False):
    """
    Make twistd log to its C{--logfile} (C{twistd.log} for a daemon) through
    a L{LogFile} that keeps at most C{keep} rotated files, instead of
    twistd's own, which keeps every one.

    twistd builds its log observer after the plugin's options are parsed
    and before the service is made, from its C{--logger} option (a factory
    taking no argument); this sets that option to L{rotatingLogObserver}
    and remembers the file for it.  Nothing changes when twistd logs to
    standard output (unless C{json}: then standard output gets the JSON
    lines) or syslog or was given its own C{--logger}.

    @param options: twistd's L{twisted.scripts.twistd.ServerOptions}.
    @param json: write twisted.logger's JSON events (L{jsonFileLogObserver})
        instead of text lines.
    @return: the path of the log file (C{"-"} for JSON to standard
        output), or L{None} when nothing changed.
    """
    global _logFile
    if options.get("logger") or options.get("syslog"):
        return None
    path = options.get("logfile") or None
    if path == "-" or (path is None and options.get("nodaemon")):
        if not json:
            return None
        _logFile = ("-", keep, rotateLength, json)
        options["logger"] = f"{__name__}.rotatingLogObserver"
        return "-"
    path = os.path.abspath(path or "twistd.log")
    _logFile = (path, keep, rotateLength, json)
    options["logger"] = f"{__name__}.rotatingLogObserver"
    return path


def rotatingLogObserver():
    """
    The observer twistd logs through after L{useRotatingLogFile}: text lines
    (or JSON events) to the file, rotated at C{rotateLength} bytes, at most
    C{keep} old files kept; JSON events to standard output for C{"-"}.
    """
    path, keep, rotateLength, json = _logFile
    if path == "-":
        return jsonFileLogObserver(sys.stdout)
    logFile = LogFile(os.path.basename(path), os.path.dirname(path),
                      rotateLength=rotateLength, maxRotatedFiles=keep)
    if json:
        return jsonFileLogObserver(logFile)
    return textFileLogObserver(logFile)

