"""
The C{twistd sipdist} plugin.  It imports nothing but the ServiceMaker: the
server's modules are loaded only when the plugin is used.
"""

from twisted.application.service import ServiceMaker

sipdist = ServiceMaker(
    "sipdist", "sipdist.tap",
    "A SIP server spreading clients over a pool of home servers.", "sipdist")
