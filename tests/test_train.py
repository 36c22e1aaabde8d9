"""Trainer on the tiny model: parameter count, frozen base, reproducibility, exact resume,
accumulation == big batch (global normalization), and the penalty doing its job."""

from __future__ import annotations

import json
import random

import mlx.core as mx
import numpy as np
import pytest
from mlx.utils import tree_flatten

from notme_mlx.data.labels import tokenize_example
from notme_mlx.lora import apply_lora
from notme_mlx.train import checkpoint as ckpt
from notme_mlx.recipe import load_recipe
from notme_mlx.train.metrics import read_metrics
from notme_mlx.train.trainer import lora_config, train

CUE = " Does that make sense?"
_WORDS = "the parser file code test run model data fix bug flight meeting lunch coffee tomorrow".split()


def make_examples(n, seed=0, cue=CUE, spans=True):
    """Chats whose assistant reply is an answer followed by a validation-seeking cue.

    spans=True marks the cue as a penalize span; spans=False makes it plain learn text.
    """
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        ans = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(3, 9))).capitalize() + "."
        msg = {"role": "assistant", "content": ans + cue, "train": True}
        if spans and cue:
            msg["spans"] = [[len(ans), len(ans) + len(cue), "penalize"]]
        out.append({"messages": [{"role": "user", "content": rng.choice(["status?", "how is the code", "plan"])},
                                 msg]})
    return out


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture()
def data_dir(tmp_path):
    d = tmp_path / "data"
    d.mkdir()
    write_jsonl(d / "train.jsonl", make_examples(24, seed=0))
    write_jsonl(d / "valid.jsonl", make_examples(8, seed=1))
    return d


def recipe(tiny_model_dir, data_dir, tmp_path, **over):
    base = {"model": str(tiny_model_dir), "data.train": str(data_dir / "train.jsonl"),
            "data.valid": str(data_dir / "valid.jsonl"), "data.max_seq_len": 64, "out_dir": str(tmp_path / "runs"),
            "name": "t", "lora.rank": 4, "lora.alpha": 8, "batch_size": 4, "max_steps": 4, "eval_every": 0,
            "save_every": 0, "optimizer.lr": 1e-2, "schedule.type": "constant"}
    base.update(over)
    return load_recipe(None, base)


def losses(run_dir):
    return [m["loss"] for m in read_metrics(run_dir / "metrics.jsonl") if "loss" in m]


def test_param_count_lora_changes_and_frozen_base(tiny_model_dir, data_dir, tmp_path):
    from mlx_lm import load

    model, tok = load(str(tiny_model_dir))
    before = {k: np.array(v) for k, v in tree_flatten(model.parameters())}
    r = recipe(tiny_model_dir, data_dir, tmp_path, **{"lora.rank": 4})
    res = train(r, model=model, tokenizer=tok)
    a = model.args
    kv = a.num_key_value_heads * (a.hidden_size // a.num_attention_heads)
    H, inter = a.hidden_size, a.intermediate_size
    per_layer = 4 * ((H + H) + 2 * (H + kv) + (H + H) + 2 * (H + inter) + (inter + H))
    assert res.trainable_params == a.num_hidden_layers * per_layer  # r (in + out) per adapted linear
    after = dict(tree_flatten(model.parameters()))
    # the wrapped linear keeps the base under a sub-module (".linear"/".base"): normalize the key
    frozen = {".".join(p for p in k.split(".") if p not in ("linear", "base")): v
              for k, v in after.items() if "lora" not in k}
    assert set(frozen) == set(before)
    assert all(np.array_equal(before[k], np.array(frozen[k])) for k in before)
    lora_b = [k for k in after if k.endswith("lora_b")]
    assert lora_b and all(float(mx.abs(after[k]).max()) > 0 for k in lora_b)  # zero-init B moved
    cfg = json.loads((res.adapter_dir / "adapter_config.json").read_text())
    assert cfg["fine_tune_type"] == "lora" and cfg["lora_parameters"]["rank"] == 4
    saved = mx.load(str(res.adapter_dir / "adapters.safetensors"))
    assert len(saved) == 2 * len(lora_b)
    # mlx-lm itself loads the final adapter and computes the same logits as the trained model
    ref_model, _ = load(str(tiny_model_dir), adapter_path=str(res.adapter_dir))
    x = mx.array([[1, 5, 9, 30, 7]])
    model.eval()
    np.testing.assert_allclose(np.array(ref_model(x)), np.array(model(x)), rtol=1e-4, atol=1e-4)


def test_seeded_run_reproducible_and_metrics_fields(tiny_model_dir, data_dir, tmp_path):
    a = train(recipe(tiny_model_dir, data_dir, tmp_path, name="a", **{"lora.dropout": 0.1}))
    b = train(recipe(tiny_model_dir, data_dir, tmp_path, name="b", **{"lora.dropout": 0.1}))
    assert losses(a.run_dir) == losses(b.run_dir)
    rec = read_metrics(a.run_dir / "metrics.jsonl")[0]
    for k in ("step", "loss", "ce", "ul", "lr", "grad_norm", "tokens", "tok_s", "peak_mem_gb", "pad_frac"):
        assert k in rec
    assert 0.0 <= rec["pad_frac"] < 1.0 and rec["tokens"] > 0
    c = train(recipe(tiny_model_dir, data_dir, tmp_path, name="c", seed=1, **{"lora.dropout": 0.1}))
    assert losses(c.run_dir) != losses(a.run_dir)


def test_resume_equals_uninterrupted_across_phases(tiny_model_dir, data_dir, tmp_path):
    """Bit-identical per-step losses on CPU: the stop/resume run replays the same batches, the
    same dropout keys (seeded per step) and the restored AdamW state."""
    phases = [{"name": "learn", "penalty_weight": 0.0, "max_steps": 3},
              {"name": "penalize", "penalty_weight": 10.0, "max_steps": 3}]
    over = {"lora.dropout": 0.1, "phases": phases, "save_every": 1, "keep_last": 2,
            "schedule.type": "cosine", "schedule.warmup_steps": 1, "grad_accum": 2, "batch_size": 2}
    full = train(recipe(tiny_model_dir, data_dir, tmp_path, name="full", **over))
    r = recipe(tiny_model_dir, data_dir, tmp_path, name="cut", **over)
    first = train(r, stop_at_step=2)
    assert first.stopped_early and ckpt.latest(r.run_dir() / "checkpoints").name == "step-2"
    train(r, resume=True, stop_at_step=5)  # crosses the phase boundary
    done = train(r, resume=True)
    assert len(ckpt.list_checkpoints(r.run_dir() / "checkpoints")) == 2  # keep_last
    assert losses(done.run_dir) == losses(full.run_dir)
    a = mx.load(str(full.adapter_dir / "adapters.safetensors"))
    b = mx.load(str(done.adapter_dir / "adapters.safetensors"))
    assert all(np.array_equal(np.array(a[k]), np.array(b[k])) for k in a)


def test_batch8_equals_batch4_times_accum2(tiny_model_dir):
    """Summed micro-losses/grads with GLOBAL counts == one big batch; per-micro counts differ."""
    from notme_mlx.train.stream import collate
    from notme_mlx.train.loop import default_loss, local_step
    from functools import partial

    from mlx_lm import load

    model, tok = load(str(tiny_model_dir))
    mx.random.seed(0)
    apply_lora(model, lora_config(load_recipe(None, {"lora.rank": 4}).lora))
    rows = make_examples(4, seed=3) + make_examples(4, seed=4, cue=" Should I go ahead? Great question!")
    exs = [tokenize_example(tok, e, 64) for e in rows]
    big = collate(exs, [[i] for i in range(8)], 32)
    T = big["inputs"].shape[1]
    halves = [collate(exs, [[i] for i in range(h, h + 4)], T) for h in (0, 4)]
    assert halves[0]["n_penalize"] != halves[1]["n_penalize"]  # uneven counts: normalization matters
    loss_fn = partial(default_loss, penalty_weight=10.0, chunk_size=128)
    step = local_step(model, loss_fn, compile=True)
    arr = lambda b: {k: b[k] for k in ("inputs", "targets", "labels")}  # noqa: E731
    nl, npn = big["n_learn"], big["n_penalize"]
    l8, g8, _ = step([arr(big)], nl, npn)
    l2, g2, _ = step([arr(halves[0]), arr(halves[1])], nl, npn)
    assert abs(l2.item() - l8.item()) < 1e-5 * abs(l8.item())
    fa, fb = dict(tree_flatten(g8)), dict(tree_flatten(g2))
    for k in fa:
        np.testing.assert_allclose(np.array(fb[k]), np.array(fa[k]), rtol=1e-4, atol=1e-6)
    # the supervised-rows-only path (context and padding skipped in the vocab pass) is the same loss
    sel = {**arr(big), **{k: big[k] for k in ("sel", "sel_targets", "sel_labels")}}
    assert sel["sel"].shape[0] < big["inputs"].size
    ls, gs, _ = step([sel], nl, npn)
    assert abs(ls.item() - l8.item()) < 1e-5 * abs(l8.item())
    for k, v in tree_flatten(gs):
        np.testing.assert_allclose(np.array(v), np.array(fa[k]), rtol=1e-4, atol=1e-6)
    # the naive per-micro normalization (local counts, averaged) is measurably different
    m1, _ = loss_fn(model, arr(halves[0]), None, None)
    m2, _ = loss_fn(model, arr(halves[1]), None, None)
    assert abs((m1.item() + m2.item()) / 2 - l8.item()) > 1e-3


def _cue_prob_and_ce(model, tok, examples):
    """Teacher-forced mean p(penalized token) and mean CE on learn tokens, from full logits."""

    ps, ces = [], []
    for e in examples:
        t = tokenize_example(tok, e, 64)
        x = mx.array([t.tokens[:-1]])
        y = np.array(t.tokens[1:])
        lab = np.array(t.labels[1:])
        logp = np.array(mx.log(mx.softmax(model(x)[0].astype(mx.float32), axis=-1)))
        lp = logp[np.arange(len(y)), y]
        ps += list(np.exp(lp[lab == -1]))
        ces += list(-lp[lab == 1])
    return float(np.mean(ps)), float(np.mean(ces))


def test_penalty_lowers_cue_probability(tiny_model_dir, tmp_path):
    """A habit phase teaches the cue (like a base model's habit); phase 1 (penalty 0) and phase 2
    (penalty 10) then train on the same data with the cue marked penalize. Bound: phase 2 lowers
    the held-out teacher-forced cue probability by >= 20x while the held-out learn-token CE rises
    by < 0.5 nats relative to the end of phase 1."""
    from mlx_lm import load

    d = tmp_path / "data"
    d.mkdir()
    write_jsonl(d / "habit.jsonl", make_examples(48, seed=0, spans=False))
    write_jsonl(d / "train.jsonl", make_examples(48, seed=0))
    held = make_examples(12, seed=9)
    write_jsonl(d / "valid.jsonl", held)
    phases = [{"name": "habit", "penalty_weight": 0.0, "max_steps": 40, "data": str(d / "habit.jsonl")},
              {"name": "learn", "penalty_weight": 0.0, "max_steps": 10},
              {"name": "penalize", "penalty_weight": 10.0, "max_steps": 30}]
    r = recipe(tiny_model_dir, d, tmp_path, name="pen", phases=phases, batch_size=8,
               **{"lora.rank": 8, "lora.alpha": 16, "optimizer.lr": 1e-3, "grad_clip": None})
    m1, tok = load(str(tiny_model_dir))
    train(r, model=m1, tokenizer=tok, stop_at_step=50)  # end of phase "learn"
    p_before, ce_before = _cue_prob_and_ce(m1, tok, held)
    m2, _ = load(str(tiny_model_dir))
    train(r, model=m2, tokenizer=tok, resume=True)
    p_after, ce_after = _cue_prob_and_ce(m2, tok, held)
    assert p_before > 0.2, "the habit phase should make the cue likely"
    print(f"cue p {p_before:.4f} -> {p_after:.6f}; learn CE {ce_before:.3f} -> {ce_after:.3f}")
    assert p_after < p_before / 20
    assert ce_after - ce_before < 0.5
