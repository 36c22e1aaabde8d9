"""ORPO / SimPO phases: formulas against NumPy, and an ORPO phase raising the chosen-vs-rejected margin."""

from __future__ import annotations

import json

import mlx.core as mx
import numpy as np
import pytest

from notme_mlx.recipe import load_recipe
from notme_mlx.train.pref_phase import pair_terms
from notme_mlx.train.trainer import train
from test_train import make_examples, write_jsonl

COMPILE = True


def test_pair_terms_match_numpy():
    c = np.array([-0.5, -2.0, -0.01], np.float32)
    r = np.array([-1.0, -0.5, -3.0], np.float32)
    nll, pref = pair_terms(mx.array(c), mx.array(r), "orpo", 0.1, 0.5, mx.array(-c))
    lo = lambda x: x - np.log1p(-np.exp(x))  # noqa: E731
    ref = 0.1 * np.logaddexp(0, -(lo(c) - lo(r)))
    np.testing.assert_allclose(np.array(pref), ref, rtol=1e-5)
    np.testing.assert_allclose(np.array(nll), -c)
    _, sp = pair_terms(mx.array(c), mx.array(r), "simpo", 2.0, 0.5, None)
    np.testing.assert_allclose(np.array(sp), np.logaddexp(0, -(2.0 * (c - r) - 0.5)), rtol=1e-5)


@pytest.mark.parametrize("kind", ["orpo", "simpo"])
def test_preference_phase_raises_margin(tmp_path, tiny_model_dir, kind):
    d = tmp_path / "data"
    d.mkdir()
    exs = make_examples(16, seed=0, cue="")
    pairs = []
    for e in exs:
        ans = e["messages"][-1]["content"]
        pairs.append({"prompt": e["messages"][:-1], "chosen": ans, "rejected": ans + " Does that make sense?"})
    write_jsonl(d / "train.jsonl", exs)
    write_jsonl(d / "pairs.jsonl", pairs)
    r = load_recipe(None, {"model": str(tiny_model_dir), "out_dir": str(tmp_path / "runs"), "name": kind,
                           "data.train": str(d / "train.jsonl"), "data.valid": None,
                           "data.pairs": str(d / "pairs.jsonl"), "data.max_seq_len": 64, "lora.rank": 4,
                           "optimizer.lr": 3e-3, "batch_size": 4, "schedule.type": "constant",
                           "phases": [{"name": "pref", "type": kind, "max_steps": 12,
                                       "beta": 1.0 if kind == "orpo" else 2.0}], "compile": COMPILE})
    res = train(r)
    recs = [json.loads(ln) for ln in (res.run_dir / "metrics.jsonl").read_text().splitlines()]
    first, last = recs[0]["ul"], recs[-1]["ul"]  # mean preference term per pair
    assert last < first * 0.7, (first, last)


def test_pair_terms_agree_with_preference_module():
    """The phase's per-pair terms (summed, then divided by the global pair count) average to
    the loss helper's ORPO/SimPO losses (mean over pairs)."""
    from notme_mlx.train.preference import orpo_loss, simpo_loss

    c = mx.array([-0.5, -2.0, -0.01, -1.3])
    r = mx.array([-1.0, -0.5, -3.0, -1.2])
    nll, pref = pair_terms(c, r, "orpo", 0.1, 0.5, -c)
    ref, _ = orpo_loss(c, r, lam=0.1)
    assert abs((nll + pref).mean().item() - ref.item()) < 1e-6
    _, sp = pair_terms(c, r, "simpo", 2.0, 0.5, None)
    ref, _ = simpo_loss(c, r, beta=2.0, gamma=0.5)
    assert abs(sp.mean().item() - ref.item()) < 1e-6


def test_dpo_phase_uses_cached_reference_and_raises_margin(tmp_path, tiny_model_dir):
    """DPO: reference log-probs of the model entering the phase are computed once and cached;
    the implicit reward margin (C - C_ref) - (R - R_ref) grows from 0."""
    d = tmp_path / "data"
    d.mkdir()
    exs = make_examples(16, seed=0, cue="")
    pairs = [{"prompt": e["messages"][:-1], "chosen": e["messages"][-1]["content"],
              "rejected": e["messages"][-1]["content"] + " Does that make sense?"} for e in exs]
    write_jsonl(d / "pairs.jsonl", pairs)  # no train.jsonl: a preference-only run needs none
    r = load_recipe(None, {"model": str(tiny_model_dir), "out_dir": str(tmp_path / "runs"), "name": "dpo",
                           "data.train": str(d / "absent.jsonl"), "data.valid": None,
                           "data.pairs": str(d / "pairs.jsonl"), "data.max_seq_len": 64, "lora.rank": 4,
                           "optimizer.lr": 3e-3, "batch_size": 4, "schedule.type": "constant",
                           "phases": [{"name": "pref", "type": "dpo", "max_steps": 10, "beta": 0.5}],
                           "compile": COMPILE})
    res = train(r)
    cache = res.run_dir / "ref_logprobs-0-pref.safetensors"
    assert cache.exists()
    recs = [json.loads(ln) for ln in (res.run_dir / "metrics.jsonl").read_text().splitlines() if '"ul"' in ln]
    first, last = recs[0]["ul"], recs[-1]["ul"]  # mean DPO term per pair: log 2 at the reference
    assert abs(first - np.log(2)) < 1e-3, first
    assert last < first * 0.8, (first, last)
