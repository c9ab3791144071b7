"""
Errors of the credential sources, apart so that the plugin layer
(L{sipdist.auth.sources}) and the sources import them without importing
each other.
"""


class CredentialsConfigError(ValueError):
    """
    A credentials string is not valid.
    """
