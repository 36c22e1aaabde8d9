"""`notme train` from the command line: a good run, and one clear line + non-zero exit for
bad recipes, missing data, data without learn tokens and out-of-memory-sized configs."""

from __future__ import annotations

import json

import pytest
import yaml
from click.testing import CliRunner

from notme_mlx.cli import main
from test_train import make_examples, write_jsonl


@pytest.fixture()
def setup(tmp_path, tiny_model_dir):
    d = tmp_path / "data"
    d.mkdir()
    write_jsonl(d / "train.jsonl", make_examples(12))
    write_jsonl(d / "valid.jsonl", make_examples(4, seed=1))
    rec = {"model": str(tiny_model_dir), "out_dir": str(tmp_path / "runs"),
           "data": {"train": str(d / "train.jsonl"), "valid": str(d / "valid.jsonl"), "max_seq_len": 64},
           "lora": {"rank": 2}, "max_steps": 2, "eval_every": 1, "save_every": 1,
           "phases": [{"name": "learn", "penalty_weight": 0.0}, {"name": "penalize"}]}
    p = tmp_path / "r.yaml"
    p.write_text(yaml.safe_dump(rec))
    return p, d, tmp_path


def run(args):
    return CliRunner().invoke(main, args)


def _one_error_line(res):
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    errs = [ln for ln in lines if ln.startswith("error:")]
    assert len(errs) == 1, res.output
    return errs[0]


def test_train_cli_runs_and_resume_and_existing_run(setup):
    p, _, tmp = setup
    res = run(["train", str(p)])
    assert res.exit_code == 0, res.output
    rd = tmp / "runs" / "r"
    assert (rd / "adapters" / "adapters.safetensors").exists()
    assert (rd / "phases" / "learn" / "adapter_config.json").exists()
    assert yaml.safe_load((rd / "recipe.yaml").read_text())["lora"]["rank"] == 2
    recs = [json.loads(ln) for ln in (rd / "metrics.jsonl").read_text().splitlines()]
    assert any("val_ce" in r for r in recs) and sum("loss" in r for r in recs) == 4
    again = run(["train", str(p)])
    assert again.exit_code == 1 and "--resume" in _one_error_line(again)
    assert run(["train", str(p), "--resume"]).exit_code == 0  # everything done: just re-saves adapters
    assert run(["train", str(p), "--force", "--set", "max_steps=1"]).exit_code == 0


def test_check_prints_resolved_recipe_with_overrides(setup):
    p, _, _ = setup
    res = run(["train", str(p), "--check", "--set", "lora.rank=8"])
    assert res.exit_code == 0
    assert yaml.safe_load(res.output)["lora"]["rank"] == 8


def test_bad_recipe_one_line(setup):
    p, _, _ = setup
    res = run(["train", str(p), "--set", "lora.rnak=3", "--set", "batch_size=two"])
    assert res.exit_code == 1
    line = _one_error_line(res)
    assert "2 problems" in line and "did you mean 'lora.rank'" in line and "batch_size: expected integer" in line


def test_missing_data(setup):
    p, d, _ = setup
    res = run(["train", str(p), "--set", f"data.train={d / 'nope.jsonl'}"])
    assert res.exit_code == 1
    assert "nope.jsonl: training data not found" in _one_error_line(res)


def test_no_learn_tokens(setup):
    p, d, _ = setup
    rows = make_examples(6)
    for r in rows:
        r["messages"][-1]["train"] = False
    write_jsonl(d / "ctx.jsonl", rows)
    res = run(["train", str(p), "--set", f"data.train={d / 'ctx.jsonl'}"])
    assert res.exit_code == 1
    assert "no learn tokens" in _one_error_line(res)


def test_oom_sized_config_refused_before_training(setup):
    p, _, tmp = setup
    res = run(["train", str(p), "--set", "batch_size=4096", "--set", "data.max_seq_len=32768"])
    assert res.exit_code == 1
    line = _one_error_line(res)
    assert "estimated memory" in line and "lower batch_size" in line
    assert not (tmp / "runs" / "r" / "metrics.jsonl").exists()


def test_resume_without_checkpoint(setup):
    p, _, _ = setup
    res = run(["train", str(p), "--resume"])
    assert res.exit_code == 1 and "no checkpoint to resume" in _one_error_line(res)


def test_packed_batching_run_has_less_padding(setup):
    """Short replies mixed with long ones: bucketing pads each pair to a multiple of 32, packing
    fills rows of data.max_seq_len with several examples."""
    p, d, tmp = setup
    short = [{"messages": [{"role": "user", "content": "ok?"}, {"role": "assistant", "content": w, "train": True}]}
             for w in ("Yes.", "Sure.", "No.", "Fine.", "Done.", "Maybe.") * 2]
    write_jsonl(d / "mixed.jsonl", make_examples(12) + short)
    for mode in ("bucket", "pack"):
        res = run(["train", str(p), "--set", f"name={mode}", "--set", f"data.batching={mode}",
                   "--set", "batch_size=2", "--set", "eval_every=0", "--set", f"data.train={d / 'mixed.jsonl'}",
                   "--set", "data.max_seq_len=128"])
        assert res.exit_code == 0, res.output
    pad = {m: [json.loads(ln)["pad_frac"] for ln in (tmp / "runs" / m / "metrics.jsonl").read_text().splitlines()
               if '"pad_frac"' in ln] for m in ("bucket", "pack")}
    assert sum(pad["pack"]) / len(pad["pack"]) < sum(pad["bucket"]) / len(pad["bucket"])
