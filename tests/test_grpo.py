"""GRPO: policy-loss values/gradients vs the plain formula; a known reward rises on the tiny model."""

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from mlx.utils import tree_flatten

from notme_mlx.lora import LoRAConfig, apply_lora
from notme_mlx.synth.grpo import (GRPOConfig, group_advantages, grpo_train, policy_loss, policy_loss_reference,
                                  sample_group)


@pytest.fixture()
def lora_model(tiny_model_dir):
    from mlx_lm import load

    model, tok = load(str(tiny_model_dir))
    mx.random.seed(0)
    apply_lora(model, LoRAConfig(rank=4, alpha=8.0))
    # non-zero B so the adapter changes outputs and the gradients reach both A and B
    for k, v in tree_flatten(model.trainable_parameters()):
        if k.endswith("lora_b"):
            model.load_weights([(k, 0.05 * mx.random.normal(v.shape))], strict=False)
    return model, tok


def test_group_advantages_numpy():
    r = np.array([1.0, 0.0, 0.0, 1.0, 5.0, 5.0, 5.0, 5.0])
    a = group_advantages(r, 4, eps=1e-4)
    np.testing.assert_allclose(a[:4], np.array([0.5, -0.5, -0.5, 0.5]) / (0.5 + 1e-4),
                               rtol=1e-6)
    np.testing.assert_allclose(a[4:], 0.0)


def test_policy_loss_values_and_grads_match_plain(lora_model):
    model, _ = lora_model
    rng = np.random.default_rng(0)
    B, T = 4, 12
    seqs = mx.array(rng.integers(0, 500, (B, T)), dtype=mx.int32)
    mask = np.zeros((B, T - 1), np.float32)
    mask[:, 4:] = 1
    mask[1, 9:] = 0
    mask = mx.array(mask)
    from notme_mlx.synth.grpo import token_logprobs_plain

    lp = token_logprobs_plain(model, seqs)
    # old log-probs off by up to +-0.5 so some ratios fall outside [0.8, 1.2] (clipped)
    old = lp + mx.array(rng.uniform(-0.5, 0.5, (B, T - 1)).astype(np.float32))
    ref = lp + mx.array(rng.uniform(-0.3, 0.3, (B, T - 1)).astype(np.float32))
    adv = mx.array([1.2, -0.4, -1.0, 0.2])
    ratio = np.exp(np.array(lp - old))
    assert ((ratio < 0.8) | (ratio > 1.2)).any() and ((ratio > 0.8) & (ratio < 1.2)).any()
    args = (seqs, mx.stop_gradient(old), mx.stop_gradient(ref), adv, mask)
    f = nn.value_and_grad(model, lambda *a: policy_loss(model, *a, 0.2, 0.1)[0])
    g = nn.value_and_grad(model, lambda *a: policy_loss_reference(model, *a, 0.2, 0.1)[0])
    v1, g1 = f(*args)
    v2, g2 = g(*args)
    # the plain formula once more, in NumPy, for the value
    lpn, oldn, refn, m = (np.array(x, dtype=np.float64) for x in (lp, old, ref, mask))
    r = np.exp(lpn - oldn)
    a = np.array(adv)[:, None]
    pg = -np.minimum(r * a, np.clip(r, 0.8, 1.2) * a)
    kl = np.exp(refn - lpn) - (refn - lpn) - 1
    want = ((pg + 0.1 * kl) * m).sum() / m.sum()
    assert abs(float(v1) - want) < 1e-4 and abs(float(v2) - want) < 1e-4
    f1, f2 = dict(tree_flatten(g1)), dict(tree_flatten(g2))
    assert f1.keys() == f2.keys() and len(f1) > 0
    for k in f1:
        np.testing.assert_allclose(np.array(f1[k]), np.array(f2[k]), rtol=2e-3, atol=1e-6, err_msg=k)
    assert max(float(mx.abs(x).max()) for x in f1.values()) > 0


def test_sample_group_reproducible(lora_model):
    model, tok = lora_model
    ids = list(tok.encode("hello there", add_special_tokens=False))
    a = sample_group(model, ids, 4, 6, 1.0, mx.random.key(3))
    b = sample_group(model, ids, 4, 6, 1.0, mx.random.key(3))
    c = sample_group(model, ids, 4, 6, 1.0, mx.random.key(4))
    np.testing.assert_array_equal(a[0], b[0])
    assert not np.array_equal(a[0], c[0])


def test_grpo_known_reward_rises_and_penalized_tokens_fall(tiny_model_dir, tmp_path):
    from mlx_lm import load

    from notme_mlx.synth.grpo import jsonl_logger

    model, tok = load(str(tiny_model_dir))
    mx.random.seed(0)
    apply_lora(model, LoRAConfig(rank=8, alpha=16.0))
    prompts = [{"prompt": "hello there"}, {"prompt": "what is up"}]
    encs = [list(tok.encode(p["prompt"], add_special_tokens=False)) for p in prompts]

    def first_token_dist():
        return np.mean([np.array(mx.softmax(model(mx.array([e]))[0, -1].astype(mx.float32))) for e in encs], axis=0)

    p0 = first_token_dist()
    bad = sorted(np.argsort(-p0)[:64].tolist())  # the model's 64 likeliest first tokens
    bad_set = set(bad)
    reward = lambda pr, text, ids: -sum(i in bad_set for i in ids) / max(len(ids), 1)  # noqa: E731
    before = {k: np.array(v) for k, v in tree_flatten(model.parameters()) if "lora" not in k}
    h = grpo_train(model, tok, prompts, reward, GRPOConfig(steps=30, k=4, max_tokens=6, lr=3e-3, kl_coef=0.0),
                   render=lambda r: r["prompt"], log=jsonl_logger(tmp_path / "metrics.jsonl"))
    r = [x["reward_mean"] for x in h]
    assert np.mean(r[-10:]) > np.mean(r[:10]) + 0.03
    p1 = first_token_dist()
    assert p1[bad].sum() < 0.5 * p0[bad].sum()
    # frozen base weights untouched
    for k, v in tree_flatten(model.parameters()):
        if "lora" not in k:
            np.testing.assert_array_equal(np.array(v), before[k])
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 30 and '"reward_mean"' in lines[0] and '"kl"' in lines[0]


def test_grpo_recipe_phase_runs_through_the_trainer(tmp_path, tiny_model_dir):
    """phases: [{type: grpo}] runs via the trainer's registry and logs per-step GRPO metrics."""
    import json

    import notme_mlx.synth.phase  # noqa: F401  (registers the grpo phase type, as the CLI does)
    from notme_mlx.recipe import load_recipe
    from notme_mlx.train.trainer import train
    from test_train import make_examples, write_jsonl

    d = tmp_path / "data"
    d.mkdir()
    write_jsonl(d / "train.jsonl", make_examples(4, seed=0, cue=""))
    (d / "prompts.txt").write_text("What is a hash map?\nName a prime number.\n")
    r = load_recipe(None, {"model": str(tiny_model_dir), "out_dir": str(tmp_path / "runs"), "name": "rl",
                           "data.train": str(d / "train.jsonl"), "data.valid": None, "lora.rank": 4,
                           "phases": [{"name": "rl", "type": "grpo", "data": str(d / "prompts.txt"),
                                       "max_steps": 2, "beta": 0.05}]})
    res = train(r)
    recs = [json.loads(x) for x in (res.run_dir / "metrics.jsonl").read_text().splitlines()]
    g = [x for x in recs if x.get("phase") == "rl" and "reward_mean" in x]
    assert [x["step"] for x in g] == [1, 2]
    for x in g:
        # k3 KL is >= 0; at the first step the policy is the reference and float32 rounding of
        # exp(d) - d - 1 around d = 0 can give -1e-8
        assert -2.0 <= x["reward_mean"] <= 1.0 and 0.0 <= x["vsr"] <= 1.0 and x["kl"] >= -1e-6
    probe = [x for x in recs if "refusal_rate" in x]
    assert len(probe) == 1 and 0.0 <= probe[0]["refusal_rate"] <= 1.0
    assert (res.run_dir / "adapters" / "adapters.safetensors").exists()


def test_grpo_phase_interrupted_midway_resumes_bit_identically(tmp_path, tiny_model_dir):
    """A GRPO phase (AdamW, warm-up + cosine, clipping, after an sft phase) stopped at step 3 and
    resumed from its checkpoint gives the same per-step losses, rewards and final adapter, bit
    for bit, as the uninterrupted run: the sampler's prompt position and PRNG key are in the
    checkpoint cursor and the KL reference adapter is saved at the phase start."""
    import json

    import notme_mlx.synth.phase  # noqa: F401
    from notme_mlx.recipe import load_recipe
    from notme_mlx.train import checkpoint as ckpt
    from notme_mlx.train.trainer import train
    from test_train import make_examples, write_jsonl

    d = tmp_path / "data"
    d.mkdir()
    write_jsonl(d / "train.jsonl", make_examples(8, seed=0))
    (d / "prompts.txt").write_text("What is a hash map?\nName a prime number.\nHow do I sort a list?\n")
    over = {"model": str(tiny_model_dir), "out_dir": str(tmp_path / "runs"), "data.train": str(d / "train.jsonl"),
            "data.valid": None, "data.max_seq_len": 64, "lora.rank": 4, "lora.dropout": 0.1, "batch_size": 2,
            "optimizer.lr": 5e-3, "schedule.type": "cosine", "schedule.warmup_steps": 1, "grad_clip": 0.5,
            "save_every": 1, "eval_every": 0,
            "phases": [{"name": "sft", "type": "sft", "max_steps": 1},
                       {"name": "rl", "type": "grpo", "data": str(d / "prompts.txt"), "max_steps": 4, "beta": 0.05,
                        "k": 2, "prompts_per_step": 2, "max_tokens": 5}]}
    full = train(load_recipe(None, {**over, "name": "full"}))
    r = load_recipe(None, {**over, "name": "cut"})
    first = train(r, stop_at_step=3)
    assert first.stopped_early and ckpt.latest(r.run_dir() / "checkpoints").name == "step-3"
    done = train(r, resume=True)

    def steps(run_dir):
        recs = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
        return [(x["step"], x["loss"], x.get("reward_mean"), x["grad_norm"], x["lr"]) for x in recs if "loss" in x]

    a, b = steps(full.run_dir), steps(done.run_dir)
    assert [s[0] for s in a] == [1, 2, 3, 4, 5] and a == b
    assert len({s[4] for s in a[1:]}) > 1  # the schedule moves the learning rate
    x = mx.load(str(full.adapter_dir / "adapters.safetensors"))
    y = mx.load(str(done.adapter_dir / "adapters.safetensors"))
    assert x.keys() == y.keys() and all(np.array_equal(np.array(x[k]), np.array(y[k])) for k in x)


def test_phase_registry_covers_the_recipe_schema(monkeypatch):
    """Every phase type a recipe may name has a runner once synth.phase is imported (the CLI
    does); without its module the trainer refuses the recipe in one line, before any work."""
    import notme_mlx.synth.phase  # noqa: F401
    from notme_mlx.errors import ConfigError
    from notme_mlx.recipe import PHASE_TYPES, load_recipe
    from notme_mlx.train import phases
    from notme_mlx.train.trainer import train

    assert set(phases.RUNNERS) == set(PHASE_TYPES)
    monkeypatch.delitem(phases.RUNNERS, "grpo")
    r = load_recipe(None, {"name": "x", "phases": [{"name": "rl", "type": "grpo", "data": "p.txt"}]})
    with pytest.raises(ConfigError, match="phase type 'grpo' has no runner; import notme_mlx.synth.phase"):
        train(r)
