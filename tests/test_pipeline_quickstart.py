"""`notme quickstart` (notme_mlx.pipelines) end to end on the tiny model (a few steps; the real default model is slow)."""

from __future__ import annotations

import json

from click.testing import CliRunner

from notme_mlx.cli import main
from notme_mlx.train.metrics import read_metrics


def test_quickstart_tiny(tmp_path, tiny_model_dir):
    wd = tmp_path / "qs"
    args = ["quickstart", "--workdir", str(wd), "--model", str(tiny_model_dir), "--prompts", "2",
            "--max-new-tokens", "6", "--set", "phases.0.max_steps=2", "--set", "phases.1.max_steps=2"]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    rep = json.loads((wd / "quickstart_report.json").read_text())
    assert rep["train"]["steps"] == 4 and [p["name"] for p in rep["train"]["phases"]] == ["learn", "penalize"]
    assert rep["before"]["n"] == rep["after"]["n"] == 2
    from notme_mlx.detect import detect

    for side in ("before", "after"):
        r = rep[side]
        flags = [bool(detect(e["reply"]).flagged or detect(e["reply"]).spans) for e in r["examples"]]
        assert r["flagged"] == sum(flags) and abs(r["rate"] - sum(flags) / r["n"]) < 1e-9
        assert r["prompt_set"] in ("eval seeking set", "held-out test split")
    for f in ("messages.jsonl", "data/train.jsonl", "train/adapters/adapters.safetensors",
              "train/phases/learn/adapter_config.json"):
        assert (wd / f).exists(), f
    steps = [m for m in read_metrics(wd / "train/metrics.jsonl") if "loss" in m]
    assert [m["phase"] for m in steps] == ["learn"] * 2 + ["penalize"] * 2
    assert steps[0]["ul"] >= 0 and all(m["tokens"] > 0 for m in steps)
    again = CliRunner().invoke(main, args)  # a quickstart folder is redone in place
    assert again.exit_code == 0, again.output
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep")
    refused = CliRunner().invoke(main, args[:2] + [str(other)] + args[3:])
    assert refused.exit_code == 1 and "--force" in refused.output
    assert (other / "notes.txt").read_text() == "keep"
