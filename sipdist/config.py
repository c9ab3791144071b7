# -*- test-case-name: tests.test_server -*-
"""
What building a server from its configuration can fail with.
"""


class ConfigurationError(Exception):
    """
    The configuration cannot make a server (a store or credential string a
    provider rejects, an edge without a usable next hop, ...); the message
    is one line for the operator.
    """
