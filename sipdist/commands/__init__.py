"""
The C{sipdist} command and its subcommands (L{sipdist.commands.main}).
"""
