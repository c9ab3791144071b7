# -*- test-case-name: tests.test_store_plugins -*-
"""
Providers chosen by a string, as Twisted's endpoint and cred strings are:
C{PREFIX:REST}, where the prefix selects a parser plugin (found with
L{twisted.plugin.getPlugins}) that builds the provider from the whole
string.  Assignment stores (C{--store}) and credential sources
(C{--credentials}) are chosen this way.
"""


def parsersFor(interface):
    """
    @return: L{dict} from prefix to every plugin providing C{interface} on
        the path (C{twisted.plugins}); the first found wins a prefix.
    """
    from twisted import plugins
    from twisted.plugin import getPlugins
    found = {}
    for parser in getPlugins(interface, plugins):
        found.setdefault(parser.prefix, parser)
    return found


def parserFor(description, parsers, kind, examples, error):
    """
    The parser for a provider string.

    @param kind: what is chosen, for messages (C{"store"}).
    @param examples: example strings, for messages.
    @param error: the exception class to raise.
    @raise error: for a string without a prefix, or an unknown prefix.
    """
    if not isinstance(description, str) or ":" not in description:
        raise error(f"bad {kind} string {description!r}: expected "
                    f"PREFIX:..., e.g. {examples}")
    prefix = description.split(":", 1)[0]
    parser = parsers.get(prefix)
    if parser is None:
        known = ", ".join(sorted(parsers)) or "none"
        raise error(f"unknown {kind} type {prefix!r} (known: {known})")
    return parser
