"""Read the cluster: Exo's `/state` (live or saved) or a plain hosts file.

Exo serves its cluster state at `GET http://<node>:52415/state`: its pydantic `State`
encoded by FastAPI, camelCase keys. The parts read here:

- `topology`: `{"nodes": [node_id, ...], "connections": {source_id: {sink_id: [edge, ...]}}}`.
  An edge is a socket connection, `{"sinkMultiaddr": {"address": "/ip4/…/tcp/52415",
  "ip_address": "…", ...}}` (the sink answered on that address), or an RDMA connection,
  `{"sourceRdmaIface": "rdma_en2", "sinkRdmaIface": "rdma_en3"}` (a Thunderbolt cable between
  two nodes whose rdma_ctl is enabled).
- `nodeMemory[id]`: `{ramTotal: {inBytes}, ramAvailable: {inBytes}, ...}`.
- `nodeIdentities[id]`: `{modelId, chipId, friendlyName, osVersion, osBuildVersion}`.
- `nodeNetwork[id]`: `{interfaces: [{name, ipAddress, interfaceType}]}`, interfaceType one of
  wifi, ethernet, maybe_ethernet, thunderbolt, unknown. A socket edge's kind is the
  interfaceType of the sink's interface that holds its address.
- `nodeRdmaCtl[id]`: `{enabled}`.

Every other field is ignored. A state that does not have this shape is one `InputError`
naming the source and the place (`topology.connections["a"]["b"][0]`), never a traceback.
The fixtures in `cluster/fixtures/` were written by Exo's own code (see SOURCE.md there).
"""

from __future__ import annotations

import json
import re
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InputError, NotmeError
from ..io import read_yaml

EXO_PORT = 52415
LINK_RANK = {"rdma": 4, "thunderbolt": 3, "ethernet": 2, "maybe_ethernet": 2, "wifi": 1, "unknown": 0}
INTERFACE_TYPES = ("wifi", "ethernet", "maybe_ethernet", "thunderbolt", "unknown")


@dataclass
class Node:
    id: str
    name: str
    chip: str = "unknown"
    memory_total: int = 0
    memory_available: int = 0
    addresses: list = field(default_factory=list)  # [(ip, interface_type)]
    rdma: bool = False
    ssh: str | None = None

    def best_ip(self, prefer=("thunderbolt", "ethernet", "maybe_ethernet", "wifi", "unknown")) -> str | None:
        for kind in prefer:
            for ip, k in self.addresses:
                if k == kind and not ip.startswith("127.") and ":" not in ip:
                    return ip
        return self.addresses[0][0] if self.addresses else None


@dataclass
class Link:
    """One directed edge from node `a` to node `b`.

    kind: "rdma" or the interface type of the address `b` answered on. For an RDMA link,
    `iface` is `a`'s RDMA device towards `b` and `peer_iface` is `b`'s; for a socket link,
    `iface` is `b`'s address.
    """

    a: str
    b: str
    kind: str
    iface: str = ""
    peer_iface: str = ""


@dataclass
class Topology:
    nodes: list
    links: list = field(default_factory=list)
    source: str = ""

    def node(self, node_id: str) -> Node:
        for n in self.nodes:
            if n.id == node_id:
                return n
        raise NotmeError(f"no node {node_id!r} in {self.source}")

    def rdma_iface(self, a: str, b: str) -> str | None:
        """`a`'s RDMA device for a cable to `b`, or None when Exo reports no RDMA link."""
        for link in self.links:
            if link.a == a and link.b == b and link.kind == "rdma":
                return link.iface
        return None

    def pairs(self) -> dict:
        """{(a, b): best link kind} over both directions, for display."""
        out: dict = {}
        for link in self.links:
            key = tuple(sorted((link.a, link.b)))
            if LINK_RANK.get(link.kind, 0) >= LINK_RANK.get(out.get(key, "unknown"), 0):
                out[key] = link.kind
        return out


_FIELDS = {"state", "topology", "nodes", "connections", "nodeMemory", "ramTotal", "ramAvailable", "inBytes",
           "nodeIdentities", "nodeNetwork", "interfaces", "interfaceType", "ipAddress", "nodeRdmaCtl", "enabled",
           "sourceRdmaIface", "sinkRdmaIface", "sinkMultiaddr", "address", "ip_address"}


def _where(path: tuple) -> str:
    """`topology.connections["a"]["b"][0]`: field names dotted, node ids and indices in brackets."""
    out = ""
    for p in path:
        if isinstance(p, int):
            out += f"[{p}]"
        elif p in _FIELDS:
            out += f".{p}" if out else p
        else:
            out += f'["{p}"]'
    return out


class _Reader:
    """Typed access to a JSON document; a wrong shape is one InputError naming source and place."""

    def __init__(self, source: str):
        self.source = source

    def fail(self, path: tuple, msg: str):
        raise InputError(f"{self.source}: {_where(path)}: {msg}")

    def obj(self, v, path: tuple, optional: bool = False) -> dict:
        if v is None and optional:
            return {}
        if not isinstance(v, dict):
            self.fail(path, f"expected an object, got {type(v).__name__}")
        return v

    def seq(self, v, path: tuple, optional: bool = False) -> list:
        if v is None and optional:
            return []
        if not isinstance(v, list):
            self.fail(path, f"expected a list, got {type(v).__name__}")
        return v

    def text(self, v, path: tuple) -> str:
        if not isinstance(v, str) or not v:
            self.fail(path, f"expected a non-empty string, got {v!r}")
        return v

    def count(self, v, path: tuple) -> int:
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            self.fail(path, f"expected a byte count (non-negative integer), got {v!r}")
        return v


_IP_IN_MULTIADDR = re.compile(r"^/ip[46]/([^/]+)")


def parse_exo_state(state, source: str = "exo state") -> Topology:
    """Nodes (memory, chip, addresses, rdma_ctl) and directed links from Exo's `/state` JSON."""
    r = _Reader(source)
    state = r.obj(state, ("state",))
    topo = r.obj(state.get("topology"), ("topology",), optional=True)
    mem = r.obj(state.get("nodeMemory"), ("nodeMemory",), optional=True)
    ids = r.obj(state.get("nodeIdentities"), ("nodeIdentities",), optional=True)
    net = r.obj(state.get("nodeNetwork"), ("nodeNetwork",), optional=True)
    rdma = r.obj(state.get("nodeRdmaCtl"), ("nodeRdmaCtl",), optional=True)
    listed = [r.text(n, ("topology", "nodes", i))
              for i, n in enumerate(r.seq(topo.get("nodes"), ("topology", "nodes"), optional=True))]
    node_ids = list(dict.fromkeys(listed + list(mem)))
    if not node_ids:
        raise InputError(f"{source}: no nodes (topology.nodes and nodeMemory are empty or missing); "
                         f"is this Exo's /state?")
    nodes = []
    for nid in node_ids:
        if nid not in mem:
            raise InputError(f"{source}: nodeMemory has no entry for node {nid} (Exo has not received its "
                             f"memory report yet; save the state again in a few seconds)")
        m = r.obj(mem[nid], ("nodeMemory", nid))
        ram = {k: r.count(r.obj(m.get(k), ("nodeMemory", nid, k)).get("inBytes"), ("nodeMemory", nid, k, "inBytes"))
               for k in ("ramTotal", "ramAvailable")}
        ident = r.obj(ids.get(nid), ("nodeIdentities", nid), optional=True)
        addrs = []
        ifaces = r.obj(net.get(nid), ("nodeNetwork", nid), optional=True).get("interfaces")
        for i, iface in enumerate(r.seq(ifaces, ("nodeNetwork", nid, "interfaces"), optional=True)):
            where = ("nodeNetwork", nid, "interfaces", i)
            iface = r.obj(iface, where)
            kind = iface.get("interfaceType", "unknown")
            if kind not in INTERFACE_TYPES:
                r.fail(where + ("interfaceType",), f"expected one of {', '.join(INTERFACE_TYPES)}, got {kind!r}")
            addrs.append((r.text(iface.get("ipAddress"), where + ("ipAddress",)), kind))
        enabled = r.obj(rdma.get(nid), ("nodeRdmaCtl", nid), optional=True).get("enabled", False)
        if not isinstance(enabled, bool):
            r.fail(("nodeRdmaCtl", nid, "enabled"), f"expected true or false, got {enabled!r}")
        name, chip = ident.get("friendlyName"), ident.get("chipId")
        nodes.append(Node(id=nid, name=name if isinstance(name, str) and name and name != "Unknown" else nid[:12],
                          chip=chip if isinstance(chip, str) and chip else "unknown",
                          memory_total=ram["ramTotal"], memory_available=ram["ramAvailable"],
                          addresses=addrs, rdma=enabled))
    kind_of_ip = {ip: kind for n in nodes for ip, kind in n.addresses}
    links = []
    conns = r.obj(topo.get("connections"), ("topology", "connections"), optional=True)
    for a, sinks in conns.items():
        for b, edges in r.obj(sinks, ("topology", "connections", a)).items():
            for end in (a, b):
                if end not in node_ids:
                    r.fail(("topology", "connections", a, b), f"node {end} is not in topology.nodes or nodeMemory")
            for i, edge in enumerate(r.seq(edges, ("topology", "connections", a, b))):
                where = ("topology", "connections", a, b, i)
                edge = r.obj(edge, where)
                if "sourceRdmaIface" in edge or "sinkRdmaIface" in edge:
                    links.append(Link(a, b, "rdma", r.text(edge.get("sourceRdmaIface"), where + ("sourceRdmaIface",)),
                                      r.text(edge.get("sinkRdmaIface"), where + ("sinkRdmaIface",))))
                elif "sinkMultiaddr" in edge:
                    ma = r.obj(edge["sinkMultiaddr"], where + ("sinkMultiaddr",))
                    ip = ma.get("ip_address")
                    if ip is None:
                        m = _IP_IN_MULTIADDR.match(r.text(ma.get("address"), where + ("sinkMultiaddr", "address")))
                        if not m:
                            r.fail(where + ("sinkMultiaddr", "address"), f"not an /ip4 or /ip6 multiaddr: "
                                                                         f"{ma.get('address')!r}")
                        ip = m.group(1)
                    ip = r.text(ip, where + ("sinkMultiaddr", "ip_address"))
                    links.append(Link(a, b, kind_of_ip.get(ip, "unknown"), ip))
                else:
                    r.fail(where, "expected a socket connection (sinkMultiaddr) or an RDMA connection "
                                  "(sourceRdmaIface, sinkRdmaIface)")
    return Topology(nodes, links, source)


def read_exo(url_or_file: str, timeout: float = 5.0) -> Topology:
    """Exo state from a running node (`http://host:52415`, `/state` added) or a saved JSON file."""
    if url_or_file.startswith(("http://", "https://")):
        url = url_or_file.rstrip("/")
        if not url.endswith("/state"):
            url += "/state"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as resp:  # the user's own LAN node
                state = json.loads(resp.read().decode("utf-8"))
        except (OSError, ValueError) as e:
            raise NotmeError(f"{url}: could not read Exo's cluster state ({e}); is exo running there?") from None
        return parse_exo_state(state, url)
    p = Path(url_or_file)
    if not p.exists():
        raise InputError(f"{p}: file not found")
    try:
        state = json.loads(p.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise InputError(f"{p}: not UTF-8 text (byte {e.start})") from None
    except json.JSONDecodeError as e:
        raise InputError(f"{p}:{e.lineno}: invalid JSON ({e.msg})") from None
    return parse_exo_state(state, str(p))


def read_hosts(path: str | Path) -> Topology:
    """A plain hosts.yaml: `hosts: [{name, ip, ssh?, memory_gb, chip?, link?, rdma?}]`."""

    p = Path(path)
    data = read_yaml(p, "hosts file") or {}
    hosts = data.get("hosts") if isinstance(data, dict) else None
    if not hosts:
        raise InputError(f"{p}: expected `hosts:` with a list of {{name, ip, memory_gb}}")
    nodes = []
    for i, h in enumerate(hosts):
        for k in ("name", "ip", "memory_gb"):
            if k not in h:
                raise InputError(f"{p}: hosts[{i}] is missing {k!r}")
        gb = float(h["memory_gb"])
        nodes.append(Node(id=str(h.get("id", h["name"])), name=str(h["name"]), chip=str(h.get("chip", "unknown")),
                          memory_total=int(gb * 2**30), memory_available=int(float(h.get("available_gb", gb)) * 2**30),
                          addresses=[(str(h["ip"]), str(h.get("link", "ethernet")))], rdma=bool(h.get("rdma", False)),
                          ssh=h.get("ssh")))
    kind = str(data.get("link", "ethernet"))
    links = [Link(a.id, b.id, kind) for a, b in zip(nodes, nodes[1:] + nodes[:1])] if len(nodes) > 1 else []
    return Topology(nodes, links, str(p))
