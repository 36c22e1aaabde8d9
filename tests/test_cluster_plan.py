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


def test_exo_fixture_parses():
    topo = read_exo(str(FIX / "exo_state_mixed.json"))
    assert [n.name for n in topo.nodes] == ["studio-1", "studio-2", "studio-3", "studio-4"]
    assert [n.memory_available // 2**30 for n in topo.nodes] == [480, 230, 170, 80]
    assert topo.nodes[0].best_ip() == "169.254.10.1" and topo.nodes[0].rdma
    assert {l.kind for l in topo.links} == {"thunderbolt"} and len(topo.links) == 4
    with pytest.raises(NotmeError, match="no nodes"):
        parse_exo_state({"topology": {}}, "x.json")


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


def test_cli_plan_json_and_hostfile(tmp_path):
    out = tmp_path / "plan.json"
    r = CliRunner().invoke(main, ["cluster", "plan", "--layers", "80", "--exo-state", str(FIX / "exo_state_mixed.json"),
                                  "--json", "-o", str(out)])
    assert r.exit_code == 0, r.output
    js = r.output[r.output.index("{"):]
    d = json.loads(js)
    assert [s["end_layer"] - s["start_layer"] for s in d["stages"]] == [40, 19, 14, 7]
    assert d["stages"][0]["node_id"] == "12D3KooWAxStudio1"
    hf = json.loads((tmp_path / "plan.hostfile.json").read_text())
    assert hf["backend"] == "jaccl" and [h["ips"][0] for h in hf["hosts"]] == [f"169.254.10.{i}" for i in range(1, 5)]
    assert set(hf["hosts"][0]) == {"ssh", "ips", "rdma"}


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
