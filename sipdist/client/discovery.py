# -*- test-case-name: tests.test_client_discovery -*-
"""
Locating a SIP server (RFC 3263 section 4) with L{twisted.names}.

L{findServers} turns a SIP or SIPS URI (the domain of the user's
address-of-record, a configured outbound proxy, the Contact of a redirect)
into the ordered list of L{Target}s a client tries, one after the other,
until one answers:

  - a numeric host, or a host with an explicit port: no NAPTR/SRV; the
    transport is the URI's C{transport} parameter, else UDP (C{sip:}) or TLS
    (C{sips:}); a name is resolved with A and AAAA;
  - otherwise NAPTR records for the domain (services C{SIPS+D2T},
    C{SIP+D2T}, C{SIP+D2U}, in order/preference) name the SRV records to
    query; without NAPTR records the client queries C{_sips._tcp},
    C{_sip._tcp} and C{_sip._udp} (only C{_sips._tcp} for a C{sips:} URI),
    in that order of preference;
  - SRV targets are ordered by priority, then by weighted random choice
    within a priority (RFC 2782), and resolved with A and AAAA (the
    additional section of the SRV answer is used when it holds them);
  - without any SRV record: A and AAAA of the domain, port 5060 (5061 for
    TLS).

The identity a TLS server must prove is the host of the URI (RFC 5922
section 4), not the SRV target: C{Target.tlsHostname}.

Everything is bounded: at most L{MAX_TARGETS} targets, DNS timeouts of a
few seconds (L{DNS_TIMEOUT}).  The resolver is an L{IResolver} given by the
caller (a L{twisted.names.client.Resolver} built with the caller's reactor);
nothing here touches the global reactor.
"""

import functools
import ipaddress
import random as _random

from twisted.internet import defer
from twisted.logger import Logger
from twisted.names import dns
from twisted.names.error import DNSNameError, DomainError
from twisted.internet.error import TimeoutError as _TwistedTimeout

from sipdist.sip.uri import URI, parseURI

DEFAULT_PORTS = {"UDP": 5060, "TCP": 5060, "TLS": 5061}
MAX_TARGETS = 16
DNS_TIMEOUT = (1, 3, 5)

# NAPTR services we understand and their transport (RFC 3263 section 4.1).
NAPTR_SERVICES = {b"SIPS+D2T": "TLS", b"SIP+D2T": "TCP", b"SIP+D2U": "UDP"}

# SRV prefixes tried without NAPTR, in preference order.
SRV_PREFIXES = (("_sips._tcp.", "TLS"), ("_sip._tcp.", "TCP"),
                ("_sip._udp.", "UDP"))

_log = Logger()


class DiscoveryError(Exception):
    """
    No server could be found for a URI; C{str()} is one line.
    """


class Target:
    """
    One place to send requests to.

    @ivar transport: C{"UDP"}, C{"TCP"} or C{"TLS"}.
    @ivar host: an IP address (text).
    @ivar port: the port number.
    @ivar tlsHostname: the name the server's certificate must carry.
    @ivar name: how the server was named (SRV target or URI host), for
        messages.
    """

    __slots__ = ("transport", "host", "port", "tlsHostname", "name")

    def __init__(self, transport, host, port, tlsHostname=None, name=None):
        self.transport = transport
        self.host = host
        self.port = port
        self.tlsHostname = tlsHostname or host
        self.name = name or host

    @property
    def address(self):
        """
        C{(host, port)}: what identifies the server whatever the transport.
        """
        return (self.host, self.port)

    def __eq__(self, other):
        if not isinstance(other, Target):
            return NotImplemented
        return ((self.transport, self.host, self.port, self.tlsHostname)
                == (other.transport, other.host, other.port,
                    other.tlsHostname))

    def __hash__(self):
        return hash((self.transport, self.host, self.port))

    def __str__(self):
        host = f"[{self.host}]" if ":" in self.host else self.host
        where = f"{host}:{self.port} ({self.transport})"
        if self.name != self.host:
            where = f"{self.name} {where}"
        return where

    def __repr__(self):
        return f"<Target {self}>"


@functools.lru_cache(maxsize=256)
def isNumeric(host):
    """
    Whether C{host} is an IPv4 or IPv6 address (IPv6 with or without
    brackets).  The answers for the last 256 hosts asked are remembered:
    a login asks it for the same few servers again and again.
    """
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def _uriTransport(uri):
    transport = uri.transport
    if transport is None:
        return None
    transport = transport.upper()
    if uri.scheme == "sips" and transport == "TCP":
        return "TLS"
    if transport not in DEFAULT_PORTS:
        raise DiscoveryError(f"{uri}: unsupported transport {uri.transport!r}")
    return transport


def asURI(text):
    """
    Parse a server given as a URI, C{host}, or C{host:port}.

    @rtype: L{URI}
    @raise DiscoveryError: if it cannot be parsed.
    """
    if isinstance(text, URI):
        return text
    text = text.strip()
    if text.startswith("<") and text.endswith(">"):
        text = text[1:-1]
    if not text.lower().startswith(("sip:", "sips:")):
        text = "sip:" + text
    try:
        return parseURI(text)
    except ValueError as e:
        raise DiscoveryError(f"not a server URI: {e}") from None


def orderSRV(records, random=_random):
    """
    Order SRV records per RFC 2782: by priority, then, within a priority, by
    repeated weighted random choice (a weight of 0 has a small chance).

    @param records: L{dns.Record_SRV} objects.
    @param random: a L{random.Random}-like object (tests pass a seeded one).
    @rtype: L{list}
    """
    byPriority = {}
    for record in records:
        byPriority.setdefault(record.priority, []).append(record)
    ordered = []
    for priority in sorted(byPriority):
        group = sorted(byPriority[priority], key=lambda r: r.weight)
        while group:
            total = sum(r.weight for r in group)
            if total == 0:
                ordered.extend(group)
                break
            pick = random.randint(0, total)
            running = 0
            for i, record in enumerate(group):
                running += record.weight
                if running >= pick:
                    break
            ordered.append(group.pop(i))
    return ordered


class ServerLocator:
    """
    RFC 3263 server location over an L{IResolver}.

    @param resolver: an L{twisted.internet.interfaces.IResolver}
        (L{twisted.names.client.Resolver}, a chain with a hosts file...).
    @param random: for the weighted choice between SRV targets.
    @param timeout: the DNS timeouts, as given to C{lookup*}.
    """

    _log = Logger()

    def __init__(self, resolver, random=_random, timeout=DNS_TIMEOUT):
        self._resolver = resolver
        self._random = random
        self._timeout = timeout

    @defer.inlineCallbacks
    def findServers(self, uri, transports=("TLS", "TCP", "UDP")):
        """
        The targets to try for C{uri}, best first.

        @param uri: a L{URI}, or text (C{sip:example.com},
            C{example.com:5060}, C{sips:proxy.example.com}).
        @param transports: the transports the client supports.
        @return: L{Deferred} firing with a non-empty L{list} of L{Target};
            fails with L{DiscoveryError}.
        """
        uri = asURI(uri)
        host = uri.maddr or uri.host
        bare = host.strip("[]")
        tlsName = uri.host.strip("[]")
        secure = uri.scheme == "sips"
        transport = _uriTransport(uri)
        if isNumeric(bare) or uri.port is not None or transport is not None:
            if transport is None:
                transport = "TLS" if secure else "UDP"
            port = uri.port or DEFAULT_PORTS[transport]
            if isNumeric(bare):
                return [Target(transport, bare, port, tlsName, bare)]
            addresses = yield self._addresses(bare)
            if not addresses:
                raise DiscoveryError(f"{bare}: no address (A/AAAA) found")
            return [Target(transport, a, port, tlsName, bare)
                    for a in addresses[:MAX_TARGETS]]

        allowed = [t for t in transports if not secure or t == "TLS"]
        services = yield self._naptr(bare, allowed)
        if not services:
            services = [(prefix + bare, t) for prefix, t in SRV_PREFIXES
                        if t in allowed]
        targets = []
        for name, transport in services:
            srvTargets = yield self._srv(name, transport, tlsName)
            for target in srvTargets:
                if target not in targets and len(targets) < MAX_TARGETS:
                    targets.append(target)
        if targets:
            return targets
        # No SRV record: the domain's own addresses (section 4.2).
        transport = "TLS" if secure else ("UDP" if "UDP" in allowed
                                          else allowed[0])
        addresses = yield self._addresses(bare)
        if not addresses:
            raise DiscoveryError(
                f"{bare}: no SIP server found (no NAPTR, SRV or A/AAAA "
                f"record)")
        return [Target(transport, a, DEFAULT_PORTS[transport], tlsName, bare)
                for a in addresses[:MAX_TARGETS]]

    def _lookup(self, method, name):
        d = method(name, timeout=self._timeout)
        d.addErrback(self._lookupFailed, name)
        return d

    def _lookupFailed(self, failure, name):
        if failure.check(DNSNameError):
            return ([], [], [])
        if failure.check(DomainError, defer.TimeoutError, _TwistedTimeout):
            self._log.info("DNS lookup of {name} failed: {reason}", name=name,
                           reason=failure.getErrorMessage() or failure.type)
            return ([], [], [])
        return failure

    @defer.inlineCallbacks
    def _naptr(self, domain, allowed):
        answers, _, _ = yield self._lookup(
            self._resolver.lookupNamingAuthorityPointer, domain)
        records = [r.payload for r in answers
                   if r.type == dns.NAPTR
                   and _text(r.payload.flags).lower() == b"s"
                   and _text(r.payload.service).upper() in NAPTR_SERVICES]
        records.sort(key=lambda p: (p.order, p.preference))
        services = []
        for payload in records:
            transport = NAPTR_SERVICES[_text(payload.service).upper()]
            if transport in allowed:
                services.append((payload.replacement.name.decode("ascii"),
                                 transport))
        return services

    @defer.inlineCallbacks
    def _srv(self, name, transport, tlsName):
        answers, _, additional = yield self._lookup(
            self._resolver.lookupService, name)
        records = [r.payload for r in answers if r.type == dns.SRV]
        # A single record with target "." means: no such service here.
        records = [r for r in records if r.target.name not in (b"", b".")]
        glue = {}
        for r in additional:
            if r.type in (dns.A, dns.AAAA):
                glue.setdefault(r.name.name.lower(), []).append(
                    r.payload.dottedQuad() if r.type == dns.A
                    else _ipv6(r.payload.address))
        targets = []
        for record in orderSRV(records, self._random)[:MAX_TARGETS]:
            target = record.target.name.decode("ascii").rstrip(".")
            if isNumeric(target):
                addresses = [target]
            else:
                addresses = glue.get(record.target.name.lower())
                if not addresses:
                    addresses = yield self._addresses(target)
            for address in addresses:
                targets.append(Target(transport, address, record.port,
                                      tlsName, target))
        return targets

    @defer.inlineCallbacks
    def _addresses(self, name):
        if name.lower() == "localhost":
            return ["127.0.0.1"]
        answers, _, _ = yield self._lookup(self._resolver.lookupAddress, name)
        addresses = [r.payload.dottedQuad() for r in answers if r.type == dns.A]
        answers, _, _ = yield self._lookup(self._resolver.lookupIPV6Address,
                                           name)
        addresses += [_ipv6(r.payload.address) for r in answers
                      if r.type == dns.AAAA]
        return list(dict.fromkeys(addresses))


def _text(charstr):
    return getattr(charstr, "string", charstr)


def _ipv6(packed):
    return str(ipaddress.IPv6Address(packed))
