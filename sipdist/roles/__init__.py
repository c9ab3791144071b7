"""
The role adapters: how a C{home}, C{distributor}, C{edge} or
C{internal-edge} server is assembled from the services.  Each role's chain
of request processors is declared in one table, L{sipdist.roles.chains}.
"""
