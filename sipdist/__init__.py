"""
sipdist: a Twisted SIP server that spreads real-time-communication clients
over a pool of home servers.
"""

__version__ = "0.1.0"
