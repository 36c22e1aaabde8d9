"""Read the cluster: Exo's `/state` (live or saved) or a plain hosts file.

Exo (exo-explore/exo, v1) serves its cluster state as JSON at
`GET http://<node>:52415/state` with camelCase keys (pydantic CamelCaseModel):
`nodeIdentities[id] = {modelId, chipId, friendlyName, osVersion}`,
`nodeMemory[id] = {ramTotal: {inBytes}, ramAvailable: {inBytes}, swapTotal, swapAvailable}`,
`nodeNetwork[id] = {interfaces: [{name, ipAddress, interfaceType}]}` with
interfaceType in wifi | ethernet | maybe_ethernet | thunderbolt | unknown,
`nodeRdmaCtl[id] = {enabled}` and `topology.connections` (links between node
ids). Field names were read from exo's `shared/types/profiling.py` and
`master/placement_utils.py`; the fixtures in `cluster/fixtures/` follow them.
"""

from __future__ import annotations

import json
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path


from ..errors import InputError, NotmeError

EXO_PORT = 52415
LINK_RANK = {"thunderbolt": 3, "rdma": 4, "ethernet": 2, "maybe_ethernet": 2, "wifi": 1, "unknown": 0}


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
    a: str
    b: str
    kind: str


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


def _bytes(v) -> int:
    if isinstance(v, dict):
        for k in ("inBytes", "in_bytes", "bytes"):
            if k in v:
                return int(v[k])
        return 0
    return int(v or 0)


def parse_exo_state(state: dict, source: str = "exo state") -> Topology:
    """Nodes and links from Exo's /state JSON."""
    if not isinstance(state, dict):
        raise InputError(f"{source}: expected a JSON object (Exo's /state)")
    mem = state.get("nodeMemory") or {}
    ids = state.get("nodeIdentities") or {}
    net = state.get("nodeNetwork") or {}
    rdma = state.get("nodeRdmaCtl") or {}
    node_ids = list(dict.fromkeys(list(mem) + list(ids)))
    if not node_ids:
        raise InputError(f"{source}: no nodes (nodeMemory / nodeIdentities are empty or missing)")
    nodes = []
    for nid in node_ids:
        ident, m = ids.get(nid, {}), mem.get(nid, {})
        if not m:
            raise InputError(f"{source}: node {nid} has no nodeMemory entry")
        addrs = [(i.get("ipAddress") or i.get("ip_address"), i.get("interfaceType") or i.get("interface_type", "unknown"))
                 for i in (net.get(nid, {}) or {}).get("interfaces", []) if i.get("ipAddress") or i.get("ip_address")]
        nodes.append(Node(
            id=nid, name=ident.get("friendlyName") or nid[:12], chip=ident.get("chipId", "unknown"),
            memory_total=_bytes(m.get("ramTotal")), memory_available=_bytes(m.get("ramAvailable")),
            addresses=addrs, rdma=bool((rdma.get(nid) or {}).get("enabled", False)),
        ))
    links = []
    conns = (state.get("topology") or {}).get("connections") or []
    for c in conns:
        a = c.get("localNodeId") or c.get("source") or c.get("from")
        b = c.get("sendBackNodeId") or c.get("sink") or c.get("to")
        if not a or not b:
            continue
        kind = c.get("kind") or ("rdma" if "rdma" in json.dumps(c).lower() else "unknown")
        if kind == "unknown":
            mb = (c.get("sendBackMultiaddr") or {})
            addr = mb.get("address") if isinstance(mb, dict) else str(mb)
            for n in nodes:
                for ip, k in n.addresses:
                    if addr and ip and ip in str(addr):
                        kind = k
        links.append(Link(a, b, kind))
    return Topology(nodes, links, source)


def read_exo(url_or_file: str, timeout: float = 5.0) -> Topology:
    """Exo state from a running node (`http://host:52415`, `/state` added) or a saved JSON file."""
    if url_or_file.startswith(("http://", "https://")):
        url = url_or_file.rstrip("/")
        if not url.endswith("/state"):
            url += "/state"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as r:  # the user's own LAN node
                state = json.loads(r.read().decode("utf-8"))
        except Exception as e:
            raise NotmeError(f"{url}: could not read Exo's cluster state ({e}); is exo running there?") from None
        return parse_exo_state(state, url)
    p = Path(url_or_file)
    if not p.exists():
        raise InputError(f"{p}: file not found")
    try:
        state = json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise InputError(f"{p}:{e.lineno}: invalid JSON ({e.msg})") from None
    return parse_exo_state(state, str(p))


def read_hosts(path: str | Path) -> Topology:
    """A plain hosts.yaml: `hosts: [{name, ip, ssh?, memory_gb, chip?, link?, rdma?}]`."""
    from ..io import read_yaml

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
