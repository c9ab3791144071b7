# -*- test-case-name: tests.test_deployment -*-
"""
The design's figures as deployments on separate hosts: which hosts, on
which networks, run which servers with which options, what the firewall
lets through (nftables rules) and what the name server answers (NAPTR, SRV,
A for the domain).

The data here is what L{tests.test_deployment} builds with network
namespaces (L{tests.netns.Lab}) and what C{docs/deployment.rst} shows:
that file is L{render}'s output (C{python -m tests.deployments >
docs/deployment.rst}), and a test fails when the two differ.

Every server listens on port L{PORT} (UDP and TCP) of its addresses; the
clients are C{sipdist register} and C{sipdist call} started with an
address-of-record alone: RFC 3263 discovery finds the first server.
"""

import sys
import textwrap

DOMAIN = "example.com"
PORT = 5160
# The edge tells its sides apart by port: its inside listens on another.
INSIDE_PORT = 5162
DNS_ADDRESS = "10.200.1.53"
# Where the files named in server options live on a real host; the harness
# puts them in the lab's own directory.
ETC = "/etc/sipdist"
USERS = {"alice": "home1", "bob": "home2"}

INTERNET = ("internet", "10.200.1", "the clients and the name server")
FIREWALL_HEAD = """\
table inet sipdist {
    chain forward {
        type filter hook forward priority filter; policy drop;
        ct state established,related accept
"""
FIREWALL_TAIL = """\
    }
}
"""


def _sip(address, transport="tcp"):
    return f"sip:{address}:{PORT};transport={transport}"


def _listen(address, transports=("udp", "tcp")):
    return [f"--listen={t}:{PORT}:interface={address}" for t in transports]


def _zone(target, address, name):
    """
    The records of DOMAIN pointing SIP over TCP (and UDP) at C{name}
    (C{address}).
    """
    return [
        (DOMAIN, "SOA", [f"ns.{DOMAIN}", f"hostmaster.{DOMAIN}"]),
        (DOMAIN, "NAPTR", [10, 10, "S", "SIP+D2T", "", f"_sip._tcp.{DOMAIN}"]),
        (DOMAIN, "NAPTR", [20, 10, "S", "SIP+D2U", "", f"_sip._udp.{DOMAIN}"]),
        (f"_sip._tcp.{DOMAIN}", "SRV", [0, 1, PORT, f"{name}.{DOMAIN}"]),
        (f"_sip._udp.{DOMAIN}", "SRV", [0, 1, PORT, f"{name}.{DOMAIN}"]),
        (f"{name}.{DOMAIN}", "A", [address]),
    ]


def _rules(*lines):
    body = "".join(f"        {line}\n" for line in lines)
    return FIREWALL_HEAD + body + FIREWALL_TAIL


class Figure:
    """
    One deployment.

    @ivar number: the design's figure number.
    @ivar title: what it shows, one line.
    @ivar networks: C{(name, prefix, what is on it)}: C{prefix.0/24}.
    @ivar hosts: C{(name, {network: address}, what it runs)}; a host's
        first network holds its default route (through the router).
    @ivar servers: C{(name, host, options)}: C{twistd sipdist} options;
        C{{etc}} stands for the directory of the pool's files.
    @ivar homes: C{{home id: address}} for the assignment store.
    @ivar records: the name server's records, C{(name, type, fields)}.
    @ivar firewall: the router's nftables ruleset (text for C{nft -f}).
    @ivar clients: the hosts of alice and bob (clients) and where the name
        server runs.
    """

    def __init__(self, number, title, networks, hosts, servers, homes,
                 records, firewall, text):
        self.number = number
        self.title = title
        self.networks = networks
        self.hosts = hosts
        self.servers = servers
        self.homes = homes
        self.records = records
        self.firewall = firewall
        self.text = text

    def address(self, host, network=None):
        """
        The address of C{host} (on C{network}, default its first).
        """
        for name, addresses, _ in self.hosts:
            if name == host:
                if network is None:
                    return next(iter(addresses.values()))
                return addresses[network]
        raise KeyError(host)

    def serverHost(self, server):
        for name, host, _ in self.servers:
            if name == server:
                return host
        raise KeyError(server)

    def storeText(self):
        """
        The file store (C{--store=file:{etc}/assignments.conf}).
        """
        lines = [f"server {home} {_sip(address, 'udp').split(';')[0]} "
                 f"tcp-uri={_sip(address)}"
                 for home, address in self.homes.items()]
        lines += [f"user {user}@{DOMAIN} {home}"
                  for user, home in USERS.items()]
        return "\n".join(lines) + "\n"


def _home(name, address, network):
    return (name, name, [
        "--role=home", f"--name={name}", *_listen(address),
        "--store=file:{etc}/assignments.conf",
        "--credentials=file:{etc}/credentials",
        f"--trusted-peer={network}.0/24"])


def _edge(name, outside, inside, nextHops):
    return (name, name, [
        "--role=edge", f"--name={name}", *_listen(outside),
        f"--inside-listen=tcp:{INSIDE_PORT}:interface={inside}",
        *[f"--next-hop={_sip(hop)}" for hop in nextHops],
        "--next-hop-check=0"])


def _storeServer(name, role, address):
    return (name, name, [
        f"--role={role}", f"--name={name}", *_listen(address),
        "--store=file:{etc}/assignments.conf",
        "--credentials=file:{etc}/credentials"])


CLIENTS = [("alice", {"internet": "10.200.1.10"}, "client: sipdist call"),
           ("bob", {"internet": "10.200.1.11"},
            "client: sipdist register --answer"),
           ("dns", {"internet": DNS_ADDRESS}, "name server (twisted.names)")]


FIGURE1 = Figure(
    1, "client -> distributor, redirected (signed 301) to its home",
    networks=[INTERNET, ("public", "10.200.2", "the published servers")],
    hosts=CLIENTS + [
        ("distributor", {"public": "10.200.2.2"}, "sipdist distributor"),
        ("home1", {"public": "10.200.2.3"}, "sipdist home"),
        ("home2", {"public": "10.200.2.4"}, "sipdist home")],
    servers=[_storeServer("distributor", "distributor", "10.200.2.2"),
             _home("home1", "10.200.2.3", "10.200.2"),
             _home("home2", "10.200.2.4", "10.200.2")],
    homes={"home1": "10.200.2.3", "home2": "10.200.2.4"},
    records=_zone("sip", "10.200.2.2", "sip"),
    firewall=_rules(
        "ip saddr 10.200.1.0/24 ip daddr { 10.200.2.2, 10.200.2.3, "
        f"10.200.2.4 }} meta l4proto {{ tcp, udp }} th dport {PORT} accept",
        "ip saddr 10.200.2.0/24 ip daddr 10.200.1.0/24 accept"),
    text="""\
    All servers are published.  DNS names the distributor; it answers a
    client of ours (one Via value, option tag ``sipdist-redirect``) with a
    signed ``301`` naming the user's home, which the client then uses as
    its outbound proxy.  alice (home1) calls bob (home2): home1 proxies to
    home2, which reaches bob over the connection bob registered on.""")


_EDGE_NETWORKS = [INTERNET,
                  ("dmz", "10.200.2", "the edge's outside interface"),
                  ("pool", "10.200.3", "the edge's inside interface and "
                   "the pool")]
_EDGE_RULES = (
    f"ip saddr 10.200.1.0/24 ip daddr 10.200.2.2 meta l4proto {{ tcp, udp }} "
    f"th dport {PORT} accept",
    "ip saddr 10.200.2.2 ip daddr 10.200.1.0/24 accept")


FIGURE8 = Figure(
    8, "client -> edge -> home (which proxies to the user's home)",
    networks=_EDGE_NETWORKS,
    hosts=CLIENTS + [
        ("edge", {"dmz": "10.200.2.2", "pool": "10.200.3.2"}, "sipdist edge"),
        ("home1", {"pool": "10.200.3.3"}, "sipdist home"),
        ("home2", {"pool": "10.200.3.4"}, "sipdist home")],
    servers=[_edge("edge", "10.200.2.2", "10.200.3.2",
                   ["10.200.3.3", "10.200.3.4"]),
             _home("home1", "10.200.3.3", "10.200.3"),
             _home("home2", "10.200.3.4", "10.200.3")],
    homes={"home1": "10.200.3.3", "home2": "10.200.3.4"},
    records=_zone("edge", "10.200.2.2", "edge"),
    firewall=_rules(*_EDGE_RULES),
    text="""\
    Only the edge is published (its outside address, SIP ports); the pool
    network is reached from the edge's inside interface alone.  The edge
    passes each request to a home at random; a home that is not the
    user's proxies it on.  Calls to bob come back through the edge over
    the TCP connection bob opened.""")


FIGURE10 = Figure(
    10, "client -> edge -> internal edge -> home",
    networks=_EDGE_NETWORKS,
    hosts=CLIENTS + [
        ("edge", {"dmz": "10.200.2.2", "pool": "10.200.3.2"}, "sipdist edge"),
        ("internal", {"pool": "10.200.3.5"}, "sipdist internal-edge"),
        ("home1", {"pool": "10.200.3.3"}, "sipdist home"),
        ("home2", {"pool": "10.200.3.4"}, "sipdist home")],
    servers=[_edge("edge", "10.200.2.2", "10.200.3.2", ["10.200.3.5"]),
             _storeServer("internal", "internal-edge", "10.200.3.5"),
             _home("home1", "10.200.3.3", "10.200.3"),
             _home("home2", "10.200.3.4", "10.200.3")],
    homes={"home1": "10.200.3.3", "home2": "10.200.3.4"},
    records=_zone("edge", "10.200.2.2", "edge"),
    firewall=_rules(*_EDGE_RULES),
    text="""\
    As Figure 8, but the edge's only next hop is the internal edge, the
    one server of the path that reads the store: it proxies each request
    (two Via values) to the user's home.""")


FIGURE12 = Figure(
    12, "client -> forward proxy -> distributor (which proxies)",
    networks=[("corp", "10.200.1", "the clients, their name server and "
               "the forward proxy's inside"),
              ("public", "10.200.2", "the forward proxy's outside and the "
               "published servers")],
    hosts=[("alice", {"corp": "10.200.1.10"}, "client: sipdist call"),
           ("bob", {"corp": "10.200.1.11"},
            "client: sipdist register --answer"),
           ("dns", {"corp": DNS_ADDRESS},
            "the site's name server (twisted.names)"),
           ("proxy", {"corp": "10.200.1.2", "public": "10.200.2.9"},
            "forward proxy: sipdist edge"),
           ("distributor", {"public": "10.200.2.2"}, "sipdist distributor"),
           ("home1", {"public": "10.200.2.3"}, "sipdist home"),
           ("home2", {"public": "10.200.2.4"}, "sipdist home")],
    servers=[_edge("proxy", "10.200.1.2", "10.200.2.9", ["10.200.2.2"]),
             _storeServer("distributor", "distributor", "10.200.2.2"),
             _home("home1", "10.200.2.3", "10.200.2"),
             _home("home2", "10.200.2.4", "10.200.2")],
    homes={"home1": "10.200.2.3", "home2": "10.200.2.4"},
    records=_zone("proxy", "10.200.1.2", "proxy"),
    firewall=_rules(),
    text="""\
    The clients' site lets nothing out but its forward proxy (an edge
    whose only next hop is the distributor), and its name server points
    the domain's SIP services at that proxy.  Requests reach the
    distributor with two Via values, so it proxies them to the user's
    home instead of redirecting.""")


FIGURES = [FIGURE1, FIGURE8, FIGURE10, FIGURE12]


def zoneText(records):
    """
    C{records} in zone file syntax.
    """
    lines = []
    for name, kind, fields in records:
        if kind == "SOA":
            data = f"{fields[0]}. {fields[1]}. 1 60 60 60 60"
        elif kind == "NAPTR":
            order, pref, flags, service, regexp, replacement = fields
            data = (f'{order} {pref} "{flags}" "{service}" "{regexp}" '
                    f"{replacement}.")
        elif kind == "SRV":
            data = " ".join(str(f) for f in fields[:3]) + f" {fields[3]}."
        else:
            data = fields[0]
        lines.append(f"{name + '.':<26} 60 IN {kind:<5} {data}")
    return "\n".join(lines) + "\n"


def serverCommand(options):
    """
    The command line starting a server with C{options}.
    """
    args = [o.replace("{etc}", ETC) for o in options]
    return "twistd -n sipdist \\\n    " + " \\\n    ".join(args)


def _indent(text):
    return textwrap.indent(text, "    ")


def render():
    """
    The text of C{docs/deployment.rst}.
    """
    out = [
        "Deployments: hosts, ports, firewall, DNS",
        "========================================",
        "",
        "The figures of the design as they run on separate hosts, generated",
        "from ``tests/deployments.py`` (``python -m tests.deployments >",
        "docs/deployment.rst``): ``tests/test_deployment.py`` builds each one",
        "out of Linux network namespaces (one per host, a bridge per network,",
        "a router between the networks that applies the firewall rules below",
        "with nftables), starts the servers with these command lines and the",
        "clients with an address-of-record alone, and checks that the calls",
        "work, what the firewall drops, and what leaves the edge.  A test",
        "fails when this file and the harness differ.",
        "",
        f"Every server listens on port {PORT}, UDP and TCP; an edge's inside",
        f"interface listens on {INSIDE_PORT}, TCP (the edge tells its sides",
        "apart by port).  Every server is also given ``--domain=example.com``",
        "and ``--secret-file`` (the pool's shared secret); the harness adds",
        "``--logfile=- --log-format=json`` to read their decisions.",
        f"``{ETC}/assignments.conf`` is the file store, ``{ETC}/credentials``",
        "the users' digests (``sipdist passwd``).  Hosts on one network reach",
        "each other directly; between networks, packets go through the",
        "router and its ``forward`` chain.",
        "",
        "What leaves the edge: the addresses of the pool (the edge's inside",
        "address, the homes, the internal edge) appear in the messages the",
        "edge sends to clients only in ``Via`` (a request to a client carries",
        "the Via of every hop, RFC 3261 section 16.6) and ``Record-Route``",
        "(the dialog's route set, in the requests creating a dialog and their",
        "responses, section 16.6 and 12.1); the pool's entries there are",
        "sealed (docs/topologies.rst).  Nowhere else: not in a start line,",
        "Contact, Path (the ``200`` to a ``REGISTER`` carries none) or body.",
        "The test of each edge figure captures the edge's outside interface",
        "and checks every message the edge sends there.",
        "",
    ]
    for figure in FIGURES:
        title = f"Figure {figure.number}: {figure.title}"
        out += [title, "-" * len(title), "",
                textwrap.dedent(figure.text), "", "Networks and hosts:", ""]
        for name, prefix, what in figure.networks:
            out.append(f"- ``{name}`` {prefix}.0/24: {what}")
        out.append("")
        out.append(".. code-block:: text")
        out.append("")
        for name, addresses, what in figure.hosts:
            where = ", ".join(f"{n} {a}" for n, a in addresses.items())
            out.append(f"    {name:<12} {where:<38} {what}")
        out += ["", "Servers:", "", ".. code-block:: sh", ""]
        for name, host, options in figure.servers:
            out.append(_indent(f"# on {host}"))
            out.append(_indent(serverCommand(options)))
        out += ["", f"Assignment store (``{ETC}/assignments.conf``):", "",
                ".. code-block:: text", "", _indent(figure.storeText()),
                "Firewall (the router's nftables ruleset; hosts of one "
                "network are not filtered):", "",
                ".. code-block:: text", "", _indent(figure.firewall),
                f"DNS records of {DOMAIN} (name server at "
                f"{figure.address('dns')}, the clients' resolv.conf):", "",
                ".. code-block:: text", "", _indent(zoneText(figure.records))]
    out += ["Figure 6 is not defined in docs/topologies.rst or the design's",
            "list of topologies, so it has no deployment here.", ""]
    return "\n".join(out)


if __name__ == "__main__":
    sys.stdout.write(render())
