# -*- test-case-name: tests.test_status -*-
"""
The HTTP status listener (C{--status-listen}): C{GET /} (or C{/pool}) is
the operator's page of the pool (L{sipdist.pool.page}); C{GET /status}
answers a JSON document with the server's name, role, load figures (see
L{sipdist.pool.monitor.loadFigures}), counters of its parts, and, in the
distributor that runs the monitor, what the monitor knows of every server
and its last moves; C{GET /metrics} answers the same figures in the
Prometheus text format (L{sipdist.pool.metrics}).

The listener binds to loopback unless told otherwise: C{tcp:8081} listens
on 127.0.0.1 (C{tcp6:8081} on ::1).  A listener on any other address must
authenticate its clients, with either

  - C{--status-token FILE}: a bearer token (C{Authorization: Bearer
    TOKEN}, compared in constant time).  A browser gives it once as
    C{?token=TOKEN}: it is answered with a cookie derived from the token
    and a redirect to the same page without the query; or
  - an C{ssl:} listener with C{--status-client-ca FILE}: TLS where every
    client presents a certificate issued by one of those CAs.

Without either, the server does not start (one line,
L{ConfigurationError}).  A request without valid credentials gets C{401}
and nothing else.
"""

import hashlib
import hmac
import ipaddress
import json
from dataclasses import dataclass

from twisted.application import internet
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.web import http, resource, server, util
from twisted.web.iweb import IPolicyForHTTPS
from zope.interface import implementer

from sipdist.config import ConfigurationError

# The cookie a browser keeps once it has given the token.
COOKIE = b"sipdist-status"
# Seconds the cookie lasts.
COOKIE_AGE = 12 * 3600
# Shortest token accepted.
MIN_TOKEN = 16


def statusOf(service, config):
    """
    The status document of a running server, as a L{dict}.
    """
    from sipdist.pool.monitor import loadFigures
    document = {"name": config.get("name"), "role": config.get("role", "home"),
                "load": loadFigures(service),
                "transactions": service.transactions.stats(),
                "transport": service.transport.stats()}
    fastPath = getattr(service.transport, "fastPath", None)
    if fastPath is not None:
        document["fast_path"] = fastPath.stats()
    proxy = getattr(service, "proxy", None)
    if proxy is not None:
        document["proxy"] = proxy.stats()
    authenticator = getattr(service, "authenticator", None)
    limiter = getattr(authenticator, "limiter", None)
    if limiter is not None:
        document["auth_failures"] = limiter.stats()
    hep = getattr(service, "hep", None)
    if hep is not None:
        document["hep"] = hep.stats()
    notifier = getattr(service, "notifier", None)
    if notifier is not None:
        document["subscriptions"] = notifier.stats()
    handover = getattr(service, "handover", None)
    if handover is not None:
        document["handover"] = {"served": handover.served,
                                "released": handover.released}
    standby = getattr(service, "standby", None)
    if standby is not None:
        document["standby"] = {"served": standby.served,
                               "probes": standby.probes}
    failover = getattr(service, "failover", None)
    if failover is not None:
        document["failover"] = {"atOnce": failover.failedOver,
                                "withFallback": failover.planned,
                                "probes": failover.probes.probes}
    monitor = getattr(service, "monitor", None)
    if monitor is not None:
        progress = monitor.progress
        document["monitor"] = {
            "servers": monitor.status(), "plans": monitor.plans,
            "moved": monitor.moved, "recent": list(monitor.recent),
            "progress": None if progress is None else
            {"done": progress[0], "total": progress[1]}}
    return document


class StatusResource(resource.Resource):
    """
    C{/status}: the JSON document of L{statusOf}.
    """

    isLeaf = True

    def __init__(self, service, config):
        resource.Resource.__init__(self)
        self.service = service
        self.config = config

    def render_GET(self, request):
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"cache-control", b"no-store")
        return json.dumps(statusOf(self.service, self.config), indent=1,
                          sort_keys=True).encode("utf-8") + b"\n"


@dataclass
class StatusEndpoint:
    """
    A parsed C{--status-listen}.

    @ivar kind: C{tcp} or C{ssl}.
    @ivar loopback: whether it listens on a loopback address only.
    @ivar certificate: for C{ssl}, the PEM certificate (with its chain)
        and C{key} its private key.
    """

    kind: str
    port: int
    interface: str
    backlog: int = 50
    certificate: str = None
    key: str = None

    @property
    def loopback(self):
        if self.interface == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.interface).is_loopback
        except ValueError:
            return False


def _split(description):
    """
    The fields of an endpoint description: C{:} separates them, C{\\}
    escapes the next character (C{interface=\\:\\:1}).
    """
    fields, current, escaped = [], [], False
    for c in description:
        if escaped:
            current.append(c)
            escaped = False
        elif c == "\\":
            escaped = True
        elif c == ":":
            fields.append("".join(current))
            current = []
        else:
            current.append(c)
    fields.append("".join(current))
    return fields


def parseStatusListen(description, config):
    """
    Parse C{--status-listen}: C{tcp:PORT}, C{tcp6:PORT} or C{ssl:PORT},
    each with C{interface=ADDR} and C{backlog=N}; C{ssl} with
    C{certKey=PEM} and C{privateKey=PEM} (default: C{--tls-cert} and
    C{--tls-key}).  Without C{interface}, the loopback address.

    @rtype: L{StatusEndpoint}
    @raise ConfigurationError: one line saying what is wrong.
    """
    def bad(problem):
        return ConfigurationError(f"--status-listen: {description!r}: "
                                  f"{problem}")

    fields = _split(description)
    if len(fields) == 1:
        fields = ["tcp"] + fields
    kind, portText, options = fields[0].lower(), fields[1], fields[2:]
    if kind not in ("tcp", "tcp6", "ssl"):
        raise bad("use tcp:PORT, tcp6:PORT or ssl:PORT (with "
                  ":interface=ADDR)")
    try:
        port = int(portText)
        if not 0 <= port <= 65535:
            raise ValueError()
    except ValueError:
        raise bad(f"{portText!r} is not a port number") from None
    known = {"interface", "backlog"}
    if kind == "ssl":
        known |= {"certKey", "privateKey"}
    values = {}
    for option in options:
        name, equals, value = option.partition("=")
        if not equals or name not in known:
            raise bad(f"unknown option {option!r} (known: "
                      f"{', '.join(sorted(known))})")
        values[name] = value
    interface = values.get("interface") or ("::1" if kind == "tcp6"
                                            else "127.0.0.1")
    try:
        backlog = int(values.get("backlog", 50))
    except ValueError:
        raise bad("backlog must be a number") from None
    endpoint = StatusEndpoint("ssl" if kind == "ssl" else "tcp", port,
                              interface, backlog)
    if kind == "ssl":
        endpoint.certificate = values.get("certKey") or config.get(
            "tls-cert")
        endpoint.key = values.get("privateKey") or config.get("tls-key")
        if not (endpoint.certificate and endpoint.key):
            raise bad("an ssl: listener needs certKey= and privateKey= (or "
                      "--tls-cert and --tls-key)")
    return endpoint


def readToken(path):
    """
    The bearer token in C{path} (surrounding white space removed).

    @raise ConfigurationError: if it cannot be read or is too short.
    """
    try:
        with open(path, "rb") as f:
            token = f.read().strip()
    except OSError as e:
        raise ConfigurationError(
            f"--status-token: {path}: {e.strerror}") from None
    if len(token) < MIN_TOKEN or any(c <= 32 or c > 126 for c in token):
        raise ConfigurationError(
            f"--status-token: {path}: the token needs at least {MIN_TOKEN} "
            f"printable characters, no spaces")
    return token


def checkStatusListen(config):
    """
    Check the status listener's options: the endpoint, the token file, the
    client CA, and that a listener beyond loopback authenticates.

    @return: the L{StatusEndpoint}, or L{None} without C{--status-listen}.
    @raise ConfigurationError: one line saying what is wrong.
    """
    description = config.get("status-listen")
    tokenFile = config.get("status-token")
    clientCA = config.get("status-client-ca")
    if not description:
        if tokenFile or clientCA:
            raise ConfigurationError(
                "--status-token and --status-client-ca go with "
                "--status-listen")
        return None
    endpoint = parseStatusListen(description, config)
    if tokenFile:
        readToken(tokenFile)
    if clientCA and endpoint.kind != "ssl":
        raise ConfigurationError(
            "--status-client-ca: client certificates need an ssl: "
            "--status-listen")
    if not endpoint.loopback and not tokenFile and not clientCA:
        raise ConfigurationError(
            f"--status-listen: {description!r} is not a loopback address: "
            f"give --status-token FILE, or an ssl: listener with "
            f"--status-client-ca FILE")
    if endpoint.kind == "ssl":
        _serverOptions(endpoint, clientCA)
    return endpoint


def _serverOptions(endpoint, clientCA):
    from sipdist.sip.tls import TLSConfigError, serverContextFactory
    try:
        return serverContextFactory(
            endpoint.certificate, endpoint.key, clientCA or (),
            requireClientCertificate=bool(clientCA))
    except TLSConfigError as e:
        raise ConfigurationError(f"--status-listen: {e}") from None


def cookieValue(token):
    """
    The cookie of a browser that gave C{token}: derived from it (the token
    itself is not kept by the browser), changed when the token changes.
    """
    return hmac.new(token, b"sipdist-status-cookie",
                    hashlib.sha256).hexdigest().encode("ascii")


class _Unauthorized(resource.Resource):
    isLeaf = True

    def render(self, request):
        request.setResponseCode(http.UNAUTHORIZED)
        request.setHeader(b"www-authenticate", b'Bearer realm="sipdist"')
        request.setHeader(b"content-type", b"text/plain")
        request.setHeader(b"cache-control", b"no-store")
        return b"401 Unauthorized\n"


class TokenGuard(resource.Resource):
    """
    Lets a request through to C{wrapped} only with the token: in an
    C{Authorization: Bearer} header, in the cookie L{cookieValue}, or in a
    C{token} query argument (answered with that cookie and a redirect to
    the same path without the query).  Every other request gets a bare
    C{401}.
    """

    def __init__(self, wrapped, token):
        resource.Resource.__init__(self)
        self.wrapped = wrapped
        self.token = token
        self.cookie = cookieValue(token)

    def getChildWithDefault(self, path, request):
        authorization = request.getHeader(b"authorization") or b""
        scheme, _, given = authorization.partition(b" ")
        if scheme.lower() == b"bearer" and hmac.compare_digest(
                given.strip(), self.token):
            return self.wrapped.getChildWithDefault(path, request)
        cookie = request.getCookie(COOKIE)
        if cookie is not None and hmac.compare_digest(cookie, self.cookie):
            return self.wrapped.getChildWithDefault(path, request)
        query = request.args.get(b"token")
        if query and hmac.compare_digest(query[0], self.token):
            request.addCookie(COOKIE, self.cookie, path=b"/", httpOnly=True,
                              sameSite="strict", max_age=str(COOKIE_AGE),
                              secure=request.isSecure())
            return util.Redirect(request.path)
        return _Unauthorized()


class _NoQuery:
    """
    A request as the access log sees it: its path without the query (a
    token given as C{?token=} stays out of the log).
    """

    def __init__(self, request):
        self._request = request
        self.uri = request.path

    def __getattr__(self, name):
        return getattr(self._request, name)


def _accessLogFormatter(timestamp, request):
    return http.combinedLogFormatter(timestamp, _NoQuery(request))


def installStatus(service, config, reactor):
    """
    The extension serving the page, L{StatusResource} and the metrics on
    C{--status-listen} (see the module docstring for who may use them).

    @raise ConfigurationError: see L{checkStatusListen}.
    """
    endpointSpec = checkStatusListen(config)
    if endpointSpec is None:
        return
    from sipdist.pool.page import PoolPage, PoolView
    root = resource.Resource()
    page = PoolPage(PoolView(service, config, reactor))
    root.putChild(b"", page)
    root.putChild(b"pool", page)
    root.putChild(b"status", StatusResource(service, config))
    from sipdist.pool.metrics import MetricsResource, registryFor
    service.metricsRegistry = registryFor(service, config)
    root.putChild(b"metrics", MetricsResource(service.metricsRegistry))
    top = root
    if config.get("status-token"):
        top = TokenGuard(root, readToken(config["status-token"]))
    site = server.Site(top, logFormatter=_accessLogFormatter,
                       reactor=reactor)
    site.displayTracebacks = False
    if endpointSpec.kind == "ssl":
        from twisted.internet.endpoints import SSL4ServerEndpoint
        endpoint = SSL4ServerEndpoint(
            reactor, endpointSpec.port,
            _serverOptions(endpointSpec, config.get("status-client-ca")),
            backlog=endpointSpec.backlog, interface=endpointSpec.interface)
    else:
        endpoint = TCP4ServerEndpoint(
            reactor, endpointSpec.port, backlog=endpointSpec.backlog,
            interface=endpointSpec.interface)
    web = internet.StreamServerEndpointService(endpoint, site)
    web.setServiceParent(service)
    service.statusSite = web


class StatusFetchError(Exception):
    """
    The status document could not be had; the message is one line naming
    the URL.
    """


@implementer(IPolicyForHTTPS)
class _FixedPolicy:
    """
    An C{IPolicyForHTTPS} giving the same TLS options for every host.
    """

    def __init__(self, options):
        self.options = options

    def creatorForNetloc(self, hostname, port):
        return self.options


async def fetchStatus(reactor, url, token=None, tlsOptions=None,
                      timeout=5.0):
    """
    C{GET} the status document at C{url} (C{http://HOST:PORT/status} or
    C{https://...}).

    @param token: the bearer token (L{bytes}) to send, or L{None}.
    @param tlsOptions: for C{https}, the client's TLS options (see
        L{sipdist.sip.tls.clientContextFactory}: the CA to trust, the
        client certificate to present).
    @return: the document (a L{dict}).
    @raise StatusFetchError: one line, for every failure.
    """
    from twisted.internet import defer
    from twisted.web.client import Agent, readBody
    from twisted.web.http_headers import Headers

    kwargs = {"connectTimeout": timeout}
    if tlsOptions is not None:
        kwargs["contextFactory"] = _FixedPolicy(tlsOptions)
    agent = Agent(reactor, **kwargs)
    headers = Headers()
    if token:
        headers.addRawHeader(b"authorization", b"Bearer " + token)
    try:
        d = agent.request(b"GET", url.encode("utf-8"), headers)
        d.addTimeout(timeout, reactor)
        response = await d
        d = readBody(response)
        d.addTimeout(timeout, reactor)
        body = await d
    except defer.TimeoutError:
        raise StatusFetchError(f"{url}: no answer in {timeout:g} s") \
            from None
    except Exception as e:
        reasons = getattr(e, "reasons", None)
        if reasons:
            e = reasons[0].value
        raise StatusFetchError(f"{url}: {type(e).__name__}: {e}") from None
    if response.code == http.UNAUTHORIZED:
        raise StatusFetchError(f"{url}: 401 Unauthorized (give the "
                               f"listener's --status-token)")
    if response.code != http.OK:
        phrase = response.phrase.decode("ascii", "replace")
        raise StatusFetchError(f"{url}: {response.code} {phrase}")
    try:
        return json.loads(body)
    except ValueError:
        raise StatusFetchError(f"{url}: not a status document") from None
