# -*- test-case-name: tests.test_cli -*-
"""
The C{sipdist} command line.

Each feature module contributes its commands: a module named in
L{COMMAND_MODULES} exposes C{commands}, a list of C{(name, OptionsClass,
description)}.  An C{OptionsClass} is a L{usage.Options} with a method
C{run(reactor)} returning an exit code or a L{Deferred} firing with one.

Errors reach the user as one line (C{sipdist COMMAND: what went wrong}) and a
non-zero exit status, never as a traceback.
"""

import importlib
import sys

from twisted.internet.defer import Deferred, ensureDeferred
from twisted.python import usage

import sipdist

# Modules that contribute commands; each is imported when the command line
# is built.  Feature work appends its module here.
COMMAND_MODULES = [
    "sipdist.commands.certs",
    "sipdist.commands.store",
    "sipdist.commands.passwd",
    "sipdist.commands.client",
    "sipdist.commands.distribution",
]


class CommandError(Exception):
    """
    A command failed in a way the user can act on; the message is printed as
    one line and the command exits with status 1.
    """


class OptionsAnywhere(usage.Options):
    """
    Options of a command that accepts its options after its arguments too
    (C{sipdist register alice@example.com --server ...}): getopt stops at
    the first argument that is not an option, so options, with their values,
    are moved before the arguments first.  Which options take a value is
    read from the declared options.
    """

    def parseOptions(self, options=None):
        if options is None:
            options = sys.argv[1:]
        usage.Options.parseOptions(self, self._optionsFirst(list(options)))

    def _optionsFirst(self, args):
        withValue = {"--" + o[:-1] for o in self.longOpt if o.endswith("=")}
        shorts = self.shortOpt
        withValue |= {"-" + shorts[i] for i in range(len(shorts) - 1)
                      if shorts[i + 1] == ":" and shorts[i] != ":"}
        flags, positional = [], []
        i = 0
        while i < len(args):
            arg = args[i]
            if arg == "--":
                positional.extend(args[i + 1:])
                break
            if arg.startswith("-") and arg != "-":
                flags.append(arg)
                if arg in withValue and i + 1 < len(args):
                    flags.append(args[i + 1])
                    i += 1
            else:
                positional.append(arg)
            i += 1
        return flags + ["--"] + positional if positional else flags


def _collectCommands():
    commands = []
    for name in COMMAND_MODULES:
        module = importlib.import_module(name)
        for command, optionsClass, description in module.commands:
            commands.append((command, None, optionsClass, description))
    return sorted(commands)


class Options(usage.Options):
    synopsis = "Usage: sipdist [--version] COMMAND [options]"

    longdesc = (
        "Administer a sipdist deployment and act as a client of it. "
        "Run 'sipdist COMMAND --help' for the options of a command. "
        "The server itself runs under twistd: 'twistd -n sipdist --help'."
    )

    def __init__(self):
        usage.Options.__init__(self)
        self.subCommands = _collectCommands()

    def opt_version(self):
        """
        Print the version and exit.
        """
        print(f"sipdist {sipdist.__version__}")
        sys.exit(0)

    opt_V = opt_version

    def postOptions(self):
        if self.subCommand is None:
            raise usage.UsageError("a command is needed (see 'sipdist --help')")


def _run(reactor, options, stdout, stderr):
    command = options.subOptions
    name = options.subCommand

    def failed(failure):
        if failure.check(CommandError, usage.UsageError):
            stderr.write(f"sipdist {name}: {failure.value}\n")
        else:
            stderr.write(
                f"sipdist {name}: {failure.type.__name__}: {failure.value}\n")
        return 1

    try:
        result = command.run(reactor)
    except Exception:
        from twisted.python.failure import Failure
        return failed(Failure())
    if not isinstance(result, Deferred):
        if hasattr(result, "__await__"):
            result = ensureDeferred(result)
        else:
            return 0 if result is None else result
    result.addCallback(lambda code: 0 if code is None else code)
    result.addErrback(failed)
    return result


def main(argv=None, stdout=None, stderr=None):
    """
    Entry point of the C{sipdist} console script.
    """
    argv = sys.argv[1:] if argv is None else argv
    stdout = sys.stdout if stdout is None else stdout
    stderr = sys.stderr if stderr is None else stderr
    options = Options()
    try:
        options.parseOptions(argv)
    except usage.UsageError as e:
        stderr.write(f"sipdist: {e}\n")
        sys.exit(2)

    from twisted.internet import reactor

    exitCode = []

    def runIt():
        d = ensureDeferred(_maybe(_run(reactor, options, stdout, stderr)))
        d.addCallback(exitCode.append)
        d.addBoth(lambda _: reactor.stop())

    reactor.callWhenRunning(runIt)
    reactor.run()
    sys.exit(exitCode[0] if exitCode else 1)


async def _maybe(result):
    if isinstance(result, Deferred):
        return await result
    return result


if __name__ == "__main__":
    main()
