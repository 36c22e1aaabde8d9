"""Cluster planning: Exo state parsing, Exo-equal partition, memory budget, hostfile, simulator."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from notme_mlx.cli import main
from notme_mlx.cluster.plan import ModelShape, allocate_layers_proportionally, bubble_fraction, make_plan
from notme_mlx.cluster.simulate import CHIPS, LINKS, simulate
from notme_mlx.cluster.topology import parse_exo_state, read_exo, read_hosts
from notme_mlx.errors import NotmeError

FIX = Path(__file__).resolve().parents[1] / "cluster" / "fixtures"
LLAMA70B = ModelShape(80, 8192, 28672, 128256, 64, 8, "bfloat16", False)


@pytest.mark.parametrize("total,fractions,expected", [
    (80, [0.25] * 4, [20, 20, 20, 20]),
    (80, [480 / 960, 230 / 960, 170 / 960, 80 / 960], [40, 19, 14, 7]),  # 40, 19.17, 14.17, 6.67
    (30, [0.5, 0.5], [15, 15]),
    (7, [0.6, 0.3, 0.1], [4, 2, 1]),  # 4.2, 2.1, 0.7 -> floors 4,2,0; remainder to the 0.7
    (3, [0.98, 0.01, 0.01], [1, 1, 1]),  # every node gets one layer, taken from the largest
    (10, [1 / 3] * 3, [4, 3, 3]),  # ties: the first largest remainder wins
])
def test_partition_matches_exo_largest_remainder(total, fractions, expected):
    assert allocate_layers_proportionally(total, fractions) == expected


def test_partition_properties_random():
    import random

    rng = random.Random(0)
    for _ in range(300):
        n = rng.randint(1, 6)
        mem = [rng.uniform(8, 512) for _ in range(n)]
        L = rng.randint(n, 120)
        fr = [m / sum(mem) for m in mem]
        out = allocate_layers_proportionally(L, fr)
        assert sum(out) == L and min(out) >= 1
        if all(f * L >= 1 for f in fr):  # no minimum-one correction: within one layer of the exact share
            assert all(abs(c - f * L) < 1 for c, f in zip(out, fr))
    with pytest.raises(NotmeError, match="at least one layer per node"):
        allocate_layers_proportionally(2, [0.5, 0.3, 0.2])


# Fixture facts, set in cluster/fixtures/make_exo_states.py (which runs Exo's own state code):
# available GiB per node, directed socket edges, directed RDMA edges.
EXO_FIXTURES = {
    "exo_state_2node.json": ([490, 236], 4, 2),
    "exo_state_3node.json": ([176, 58, 100], 6, 2),
    "exo_state_4x_studio_512.json": ([480] * 4, 8, 8),
    "exo_state_mixed.json": ([480, 230, 170, 80], 8, 8),
}


@pytest.mark.parametrize("name", sorted(EXO_FIXTURES))
def test_exo_generated_state_parses(name):
    gib, sockets, rdma = EXO_FIXTURES[name]
    topo = read_exo(str(FIX / name))
    assert [n.memory_available for n in topo.nodes] == [g * 2**30 for g in gib]
    kinds = [link.kind for link in topo.links]
    assert kinds.count("rdma") == rdma and len(kinds) - kinds.count("rdma") == sockets
    state = json.loads((FIX / name).read_text())
    assert [n.id for n in topo.nodes] == state["topology"]["nodes"]
    for link in topo.links:  # every link is an edge Exo wrote, with its kind read from the right field
        edges = state["topology"]["connections"][link.a][link.b]
        if link.kind == "rdma":
            assert {"sourceRdmaIface": link.iface, "sinkRdmaIface": link.peer_iface} in edges
        else:
            assert link.iface in [e["sinkMultiaddr"]["ip_address"] for e in edges if "sinkMultiaddr" in e]
            sink_ifaces = state["nodeNetwork"][link.b]["interfaces"]
            assert {"ipAddress": link.iface, "interfaceType": link.kind} in [
                {k: i[k] for k in ("ipAddress", "interfaceType")} for i in sink_ifaces]


def test_exo_three_node_kinds_and_rdma_ctl():
    topo = read_exo(str(FIX / "exo_state_3node.json"))
    by_name = {n.name: n for n in topo.nodes}
    assert [n.name for n in topo.nodes] == ["studio", "mini", "laptop"]
    assert [by_name[k].rdma for k in ("studio", "mini", "laptop")] == [True, True, False]
    assert by_name["laptop"].best_ip() == "192.168.1.33" and by_name["studio"].best_ip() == "169.254.30.1"
    names = {frozenset((topo.node(a).name, topo.node(b).name)): k for (a, b), k in topo.pairs().items()}
    assert names == {frozenset(("studio", "mini")): "rdma", frozenset(("studio", "laptop")): "ethernet",
                     frozenset(("mini", "laptop")): "ethernet"}
    # Exo made RDMA edges only between the two nodes whose rdma_ctl is enabled
    assert topo.rdma_iface(by_name["studio"].id, by_name["mini"].id) == "rdma_en3"
    assert topo.rdma_iface(by_name["studio"].id, by_name["laptop"].id) is None


def test_exo_state_extra_fields_ignored():
    state = json.loads((FIX / "exo_state_2node.json").read_text())
    state["somethingNew"] = {"x": [1, 2]}
    nid = state["topology"]["nodes"][0]
    state["nodeMemory"][nid]["ramWired"] = {"inBytes": 5}
    state["topology"]["connections"][nid][state["topology"]["nodes"][1]][0]["sinkMultiaddr"]["extra"] = 1
    a, b = parse_exo_state(state, "s.json"), read_exo(str(FIX / "exo_state_2node.json"))
    assert a.nodes == b.nodes and a.links == b.links


def _edit(state, path, value):
    *head, last = path
    for k in head:
        state = state[k]
    if value is KeyError:
        del state[last]
    else:
        state[last] = value


A, B = "12D3KooWStudioA2n", "12D3KooWStudioB2n"


@pytest.mark.parametrize("path,value,message", [
    (("topology",), [], "topology: expected an object, got list"),
    (("topology", "nodes"), "ab", "topology.nodes: expected a list, got str"),
    (("topology", "connections", A, B), {"x": 1}, f'topology.connections["{A}"]["{B}"]: expected a list, got dict'),
    (("topology", "connections", A, B, 0), {"foo": 1},
     f'topology.connections["{A}"]["{B}"][0]: expected a socket connection (sinkMultiaddr) or an RDMA connection'),
    (("topology", "connections", A, B, 0, "sinkMultiaddr"), {"address": "/tcp/1"},
     f'topology.connections["{A}"]["{B}"][0].sinkMultiaddr.address: not an /ip4 or /ip6 multiaddr'),
    (("topology", "connections", A, B, 2, "sinkRdmaIface"), 7,
     f'topology.connections["{A}"]["{B}"][2].sinkRdmaIface: expected a non-empty string, got 7'),
    (("topology", "connections", A, "nobody"), [],
     f'topology.connections["{A}"]["nobody"]: node nobody is not in topology.nodes or nodeMemory'),
    (("nodeMemory", B), KeyError, f"nodeMemory has no entry for node {B}"),
    (("nodeMemory", A, "ramAvailable", "inBytes"), "lots",
     f'nodeMemory["{A}"].ramAvailable.inBytes: expected a byte count (non-negative integer), got \'lots\''),
    (("nodeMemory", A, "ramTotal"), KeyError, f'nodeMemory["{A}"].ramTotal: expected an object, got NoneType'),
    (("nodeNetwork", A, "interfaces", 0, "interfaceType"), "carrier-pigeon",
     f'nodeNetwork["{A}"].interfaces[0].interfaceType: expected one of'),
    (("nodeRdmaCtl", A, "enabled"), "yes", f'nodeRdmaCtl["{A}"].enabled: expected true or false'),
])
def test_malformed_exo_state_is_one_line(tmp_path, path, value, message):
    state = json.loads((FIX / "exo_state_2node.json").read_text())
    if path[:4] == ("topology", "connections", A, B) and len(path) > 4:  # two socket edges, then the RDMA one
        assert "sinkMultiaddr" in state["topology"]["connections"][A][B][0]
        assert "sinkRdmaIface" in state["topology"]["connections"][A][B][2]
    _edit(state, path, value)
    f = tmp_path / "state.json"
    f.write_text(json.dumps(state))
    before = f.read_bytes()
    r = CliRunner().invoke(main, ["cluster", "plan", "--layers", "80", "--exo-state", str(f)])
    assert r.exit_code != 0 and not isinstance(r.exception, (KeyError, TypeError, AttributeError, ValueError))
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in r.output, r.output
    assert lines[0].startswith(f"error: {f}: ") and message in lines[0], lines[0]
    assert f.read_bytes() == before


@pytest.mark.parametrize("text,message", [
    ("[1, 2]", "state: expected an object, got list"),
    ('{"topology": {}}', "no nodes"),
    ('{"topology": ', ":1: invalid JSON"),
])
def test_malformed_exo_state_whole_file(tmp_path, text, message):
    f = tmp_path / "state.json"
    f.write_text(text)
    with pytest.raises(NotmeError, match=message.replace("(", r"\(").replace(")", r"\)")):
        read_exo(str(f))


@pytest.mark.parametrize("name,counts", [
    # 80 layers by available memory, largest remainder: shares, floors, then the leftover layers
    ("exo_state_2node.json", [54, 26]),           # 490/726, 236/726 of 80: 53.99, 26.01 -> 53, 26 -> +1 to the .99
    ("exo_state_3node.json", [42, 14, 24]),       # 176, 58, 100 of 334: 42.16, 13.89, 23.95 -> 42, 13, 23 -> +1, +1
    ("exo_state_4x_studio_512.json", [20] * 4),   # equal memory
    ("exo_state_mixed.json", [40, 19, 14, 7]),    # 480, 230, 170, 80 of 960: 40, 19.17, 14.17, 6.67 -> +1 to the .67
])
def test_cli_plan_on_exo_fixtures_is_largest_remainder(tmp_path, name, counts):
    out = tmp_path / "plan.json"
    r = CliRunner().invoke(main, ["cluster", "plan", "--layers", "80", "--exo-state", str(FIX / name),
                                  "--json", "-o", str(out)])
    assert r.exit_code == 0, r.output
    d = json.loads(r.output[r.output.index("{"):])
    assert [s["end_layer"] - s["start_layer"] for s in d["stages"]] == counts
    assert [s["start_layer"] for s in d["stages"]] == [sum(counts[:i]) for i in range(len(counts))]
    gib = EXO_FIXTURES[name][0]
    exact = [80 * g / sum(gib) for g in gib]  # independent check: within one layer of the exact share
    assert all(abs(c - e) < 1 for c, e in zip(counts, exact))
    state = json.loads((FIX / name).read_text())
    assert [s["node_id"] for s in d["stages"]] == state["topology"]["nodes"]


def test_plan_70b_on_four_512gb_studios_fits():
    topo = read_exo(str(FIX / "exo_state_4x_studio_512.json"))
    plan = make_plan(topo, LLAMA70B, "pipeline", microbatches=8, batch_size=8, seq_len=2048, lora_rank=16)
    assert [(s.start_layer, s.end_layer) for s in plan.stages] == [(0, 20), (20, 40), (40, 60), (60, 80)]
    layer = LLAMA70B.layer_params()
    assert plan.stages[1].breakdown["weights"] == 20 * layer * 2  # bf16 weights of 20 layers, no embeddings
    assert all(s.need_bytes < s.memory_bytes for s in plan.stages)
    assert plan.backend == "jaccl"  # every node reports RDMA
    d = plan.to_dict()
    assert set(d["stages"][0]) >= {"rank", "node_id", "start_layer", "end_layer", "memory_bytes", "host"}
    assert d["bubble_fraction"] == pytest.approx(3 / 11)


def test_plan_refusal_names_node_and_shortfall(tmp_path):
    hosts = tmp_path / "hosts.yaml"
    hosts.write_text("hosts:\n  - {name: big, ip: 10.0.0.1, memory_gb: 96}\n  - {name: tiny, ip: 10.0.0.2, memory_gb: 16}\n")
    topo = read_hosts(hosts)
    with pytest.raises(NotmeError, match=r"node big \(big\) needs 126.1 GiB for layers 0-68 but has 96.0 GiB available \(short by 30.1 GiB\)"):
        make_plan(topo, LLAMA70B, "pipeline", microbatches=2, batch_size=2, seq_len=1024)


def test_cli_plan_hostfile_rdma_devices_from_exo_links(tmp_path):
    out = tmp_path / "plan.json"
    r = CliRunner().invoke(main, ["cluster", "plan", "--layers", "80", "--exo-state", str(FIX / "exo_state_mixed.json"),
                                  "-o", str(out)])
    assert r.exit_code == 0, r.output
    hf = json.loads((tmp_path / "plan.hostfile.json").read_text())
    assert hf["backend"] == "jaccl" and [h["ips"][0] for h in hf["hosts"]] == [f"169.254.10.{i}" for i in range(1, 5)]
    assert set(hf["hosts"][0]) == {"ssh", "ips", "rdma"}
    # a ring of four: each studio is cabled to its two neighbours (en2 to the next, en3 to the previous)
    assert [h["rdma"] for h in hf["hosts"]] == [
        [None, "rdma_en2", None, "rdma_en3"],
        ["rdma_en3", None, "rdma_en2", None],
        [None, "rdma_en3", None, "rdma_en2"],
        ["rdma_en2", None, "rdma_en3", None],
    ]
    r3 = CliRunner().invoke(main, ["cluster", "plan", "--layers", "80", "--exo-state", str(FIX / "exo_state_3node.json"),
                                   "-o", str(tmp_path / "p3.json")])
    assert r3.exit_code == 0, r3.output
    hf3 = json.loads((tmp_path / "p3.hostfile.json").read_text())
    assert hf3["backend"] == "ring" and all(h["rdma"] == [] for h in hf3["hosts"])  # the laptop has rdma_ctl off


def test_hybrid_and_data_strategies():
    topo = read_exo(str(FIX / "exo_state_4x_studio_512.json"))
    small = ModelShape(32, 4096, 14336, 128256, 32, 8, "bfloat16", False)
    hy = make_plan(topo, small, "hybrid", microbatches=2, batch_size=8, seq_len=1024, data_parallel=2)
    assert [(s.rank, s.start_layer, s.end_layer) for s in hy.stages] == [(0, 0, 16), (1, 16, 32), (2, 0, 16), (3, 16, 32)]
    dp = make_plan(topo, small, "data", microbatches=1, batch_size=8, seq_len=1024)
    assert all((s.start_layer, s.end_layer) == (0, 32) for s in dp.stages)
    with pytest.raises(NotmeError, match="must split"):
        make_plan(topo, small, "hybrid", microbatches=3, batch_size=8, seq_len=1024, data_parallel=2)


def test_simulator_bubble_and_scaling():
    assert bubble_fraction(4, 8) == pytest.approx(3 / 11)
    chip, link = CHIPS["m3-ultra"], LINKS["tb5"]
    a = simulate(LLAMA70B, chip, link, [20] * 4, 8, 2048, 2)
    b = simulate(LLAMA70B, chip, link, [20] * 4, 8, 2048, 8)
    assert b["step_s"] < a["step_s"]  # more micro-batches: smaller bubble
    one = simulate(LLAMA70B, chip, link, [80], 8, 2048, 1)
    # 4 stages with m=8: (8+3)/8 slots of a quarter of the work each, plus links
    assert b["step_s"] == pytest.approx(one["step_s"] * 11 / 32, rel=0.05)
