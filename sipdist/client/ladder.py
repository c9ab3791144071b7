# -*- test-case-name: tests.test_client_cli -*-
"""
The message flow as a ladder diagram, for C{sipdist register --trace}: the
client and every server it talks to as columns (a column is added when a new
peer appears), one row per message with an arrow from sender to receiver (a server reached
over TCP or TLS is named C{host:port/TCP}, C{host:port/TLS})::

    client                    127.0.0.1:5060            127.0.0.1:5070
      |-------REGISTER-------->|                         |
      |<---401 Unauthorized----|                         |

A L{Ladder} is a tracer for L{sipdist.client.core.UserAgent}: it is
called with C{(direction, message, flow)} and writes lines with the
C{write} callable it was given.  At most L{MAX_COLUMNS} peers get a column
of their own; further peers share the last one.
"""

from sipdist.sip.message import Request

COLUMN_WIDTH = 26
MAX_COLUMNS = 8


def label(message):
    """
    What a row says: the method of a request, the status of a response.
    """
    if isinstance(message, Request):
        return message.method
    return f"{message.code} {message.phrase}"


class Ladder:
    """
    A ladder of the messages a user agent sends and receives.

    @param write: called with each line (without newline).
    @param width: the width of a column, in characters.
    """

    def __init__(self, write, width=COLUMN_WIDTH):
        self._write = write
        self.width = width
        self.columns = ["client"]
        self._headerShown = False

    def _column(self, flow):
        host, port = flow.remote[0], flow.remote[1]
        name = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        transport = getattr(flow, "transport", "UDP")
        if transport != "UDP":
            name = f"{name}/{transport}"
        if name not in self.columns:
            if len(self.columns) > MAX_COLUMNS:
                return len(self.columns) - 1
            self.columns.append(name)
            self._header()
        return self.columns.index(name)

    def _header(self):
        self._write("".join(c[:self.width - 2].ljust(self.width)
                            for c in self.columns).rstrip())

    def row(self, fromColumn, toColumn, text):
        """
        The line for an arrow between two columns.
        """
        width = self.width
        positions = [2 + i * width for i in range(len(self.columns))]
        line = [" "] * (positions[-1] + 1)
        for x in positions:
            line[x] = "|"
        left, right = sorted((positions[fromColumn], positions[toColumn]))
        span = right - left - 1
        text = text[:max(0, span - 4)]
        body = list(text.center(span - 2, "-"))
        if fromColumn < toColumn:
            arrow = ["-"] + body + [">"]
        else:
            arrow = ["<"] + body + ["-"]
        line[left + 1:right] = arrow
        return "".join(line).rstrip()

    def __call__(self, direction, message, flow):
        if not self._headerShown:
            self._headerShown = True
            if len(self.columns) == 1:
                self._column(flow)
        column = self._column(flow)
        text = label(message)
        if direction == "out":
            self._write(self.row(0, column, text))
        else:
            self._write(self.row(column, 0, text))
