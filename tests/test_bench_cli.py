"""`notme bench` CLI on the tiny model: JSON written with the required keys; bad flag combos fail cleanly."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from notme_mlx.cli import main


def test_bench_cli_json(tiny_model_dir, tmp_path):
    out = tmp_path / "b.json"
    r = CliRunner().invoke(main, ["bench", "--model", str(tiny_model_dir), "--steps", "1", "--warmup", "0",
                                  "--repeat", "1", "--seq", "96", "--examples", "8", "--rank", "2",
                                  "--json", str(out)])
    assert r.exit_code == 0, r.output
    d = json.loads(out.read_text())
    assert set(d["sides"]) == {"ours", "mlx-lm", "ours_penalty_off"}
    assert d["ratio_tokens_per_sec"] == pytest.approx(d["sides"]["ours"]["tokens_per_sec"]
                                                      / d["sides"]["mlx-lm"]["tokens_per_sec"])
    assert d["settings"]["rank"] == 2 and d["settings"]["seq"] == 96 and d["data"]["kind"] == "synthetic chat-like"
    assert "| ours |" in r.output


def test_bench_cli_rejects_data_and_synthetic(tiny_model_dir, tmp_path):
    r = CliRunner().invoke(main, ["bench", "--model", str(tiny_model_dir), "--data", str(tmp_path), "--synthetic"])
    assert r.exit_code != 0 and "pick one" in r.output


def test_bench_cli_missing_data(tiny_model_dir, tmp_path):
    r = CliRunner().invoke(main, ["bench", "--model", str(tiny_model_dir), "--data", str(tmp_path)])
    assert r.exit_code != 0 and "train.jsonl" in r.output
