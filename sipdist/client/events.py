# -*- test-case-name: tests.test_client_core -*-
"""
What the client tells its observer, and how its requests fail: shared by
the user agent (L{sipdist.client.core}), its dialogs and its login.
"""


class Event:
    """
    A step of the client's work, for its observer (the command line prints
    C{str(event)}).

    @ivar kind: what happened: C{"discovered"}, C{"trying"},
        C{"no-answer"}, C{"challenge"}, C{"redirect"}, C{"redirect-ignored"},
        C{"registered"}, C{"refreshed"}, C{"relogin"}, C{"unregistered"},
        C{"failed"}, C{"dialog-ended"} ...
    @ivar text: one line for a person.
    @ivar fields: the details, by name.
    """

    def __init__(self, kind, text, **fields):
        self.kind = kind
        self.text = text
        self.fields = fields

    def __getattr__(self, name):
        try:
            return self.__dict__["fields"][name]
        except KeyError:
            raise AttributeError(name) from None

    def __str__(self):
        return self.text

    def __repr__(self):
        return f"<Event {self.kind}: {self.text}>"


class ClientError(Exception):
    """
    A request could not be sent or was not answered; C{str()} is one line.
    """


class NoAnswer(ClientError):
    """
    The server did not answer: no connection, transaction timeout, transport
    error.
    """
