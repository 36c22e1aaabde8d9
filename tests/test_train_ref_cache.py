"""DPO reference log-probs: cached once from the stack minus the trained layer, no second model."""

from __future__ import annotations

from collections import namedtuple

import mlx.core as mx
import numpy as np
import pytest

from notme_mlx.models.tiny import perturb_adapters
from notme_mlx.errors import NotmeError
from notme_mlx.lora import LoRAConfig, apply_lora, save_adapter
from notme_mlx.train.ref_cache import (
    compute_reference_logprobs, load_reference_logprobs, reference_logprobs,
)
from notme_mlx.train.preference import dpo_terms as _dpo_terms


def dpo_terms(c, r, rc, rr, beta):
    return _dpo_terms(c, r, rc, rr, beta)[0]

Ex = namedtuple("Ex", "tokens labels")


def _randomize(model, name, seed):
    """Give adapter `name` non-zero B so it changes the output."""
    perturb_adapters(model, [name], 0.05, seed)


def _pairs(seed=0, n=5):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        two = []
        for _ in range(2):
            p, r = int(rng.integers(3, 9)), int(rng.integers(2, 7))
            toks = rng.integers(5, 500, p + r).tolist()
            two.append(Ex(toks, [0] * p + [1] * r))
        out.append(tuple(two))
    return out


def _naive(model, pairs):
    """Independent: full logits -> log_softmax in NumPy (float64) -> sum over reply targets."""
    res = []
    for two in pairs:
        row = []
        for e in two:
            logits = np.array(model(mx.array([e.tokens[:-1]]))[0], np.float64)
            lsm = logits - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1, keepdims=True)) \
                - logits.max(-1, keepdims=True)
            t = np.array(e.tokens[1:])
            m = np.array(e.labels[1:]) == 1
            row.append(lsm[np.arange(len(t)), t][m].sum())
        res.append(row)
    return np.array(res)


def test_reference_is_stack_minus_trained_layer(tiny_model_dir, tmp_path):
    from mlx_lm import load

    model, _ = load(str(tiny_model_dir))
    dom = LoRAConfig(rank=4, alpha=8, targets=("q_proj", "v_proj", "down_proj"))
    apply_lora(model, dom, name="domain", trainable=False)
    _randomize(model, "domain", 1)
    save_adapter(model, "domain", tmp_path / "domain", dom)
    apply_lora(model, LoRAConfig(rank=8, alpha=8), name="mode", trainable=True)
    _randomize(model, "mode", 2)
    pairs = _pairs()
    before = np.array(model(mx.array([pairs[0][0].tokens])))

    path = compute_reference_logprobs(model, pairs, tmp_path / "ref.safetensors", exclude="mode", batch_size=2)
    c, r, md = load_reference_logprobs(path, pairs)
    assert md["n_pairs"] == "5" and "mode" in md["excluded"]

    # independent reference: a fresh base with only the lower layer, loaded by mlx-lm itself
    ref_model, _ = load(str(tiny_model_dir), adapter_path=str(tmp_path / "domain"))
    want = _naive(ref_model, pairs)
    np.testing.assert_allclose(np.array(c), want[:, 0], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(np.array(r), want[:, 1], rtol=1e-4, atol=1e-4)
    # the trained layer was switched back on: same model output as before
    np.testing.assert_array_equal(np.array(model(mx.array([pairs[0][0].tokens]))), before)
    # and the full stack differs from the reference (the layer does something)
    full_c, _ = reference_logprobs(model, pairs)
    assert np.abs(full_c - np.array(c)).max() > 1e-3


def test_stale_cache_and_unknown_layer_refused(tiny_model_dir, tmp_path):
    from mlx_lm import load

    model, _ = load(str(tiny_model_dir))
    apply_lora(model, LoRAConfig(rank=4, alpha=8), name="mode")
    pairs = _pairs(0)
    path = compute_reference_logprobs(model, pairs, tmp_path / "ref.safetensors", exclude=["mode"])
    with pytest.raises(NotmeError, match="other pairs"):
        load_reference_logprobs(path, _pairs(1))
    with pytest.raises(NotmeError, match="no adapter named 'identity'"):
        reference_logprobs(model, pairs, exclude="identity")


def test_dpo_terms_formula():
    c, r, rc, rr = (mx.array([-3.0, -1.0]), mx.array([-2.0, -4.0]), mx.array([-2.5, -1.5]), mx.array([-2.0, -3.0]))
    got = np.array(dpo_terms(c, r, rc, rr, beta=0.5))
    z = 0.5 * ((np.array([-3.0, -1.0]) + np.array([2.5, 1.5])) - (np.array([-2.0, -4.0]) + np.array([2.0, 3.0])))
    np.testing.assert_allclose(got, -np.log(1 / (1 + np.exp(-z))), rtol=1e-6)


def test_dpo_loss_uses_cache_and_trains_only_the_upper_layer(tiny_model_dir, tmp_path):
    """dpo_loss == mean DPO term from independent log-softmax; zero at the reference; grads on 'mode' only."""
    from mlx.utils import tree_flatten
    from mlx_lm import load
    import mlx.nn as nn

    from notme_mlx.train.pref_phase import dpo_loss
    from notme_mlx.train.ref_cache import reply_rows as _rows

    model, _ = load(str(tiny_model_dir))
    apply_lora(model, LoRAConfig(rank=4, alpha=8), name="domain", trainable=False)
    _randomize(model, "domain", 3)
    apply_lora(model, LoRAConfig(rank=4, alpha=8), name="mode", trainable=True)
    pairs = _pairs(2, n=4)
    path = compute_reference_logprobs(model, pairs, tmp_path / "ref.safetensors", exclude="mode")
    c, r, _ = load_reference_logprobs(path, pairs)
    sel = [3, 1]
    inp, tgt, msk = _rows([pairs[i][0] for i in sel] + [pairs[i][1] for i in sel])
    batch = {"inputs": inp, "targets": tgt, "labels": msk.astype(mx.int32), "pair_idx": mx.array(sel)}
    loss, _ = dpo_loss(model, batch, ref=(c, r), beta=0.5)  # mode has B = 0: policy == reference
    np.testing.assert_allclose(float(loss), np.log(2.0), rtol=1e-5)
    _randomize(model, "mode", 4)
    loss, st = dpo_loss(model, batch, ref=(c, r), beta=0.5)
    pol = _naive(model, [pairs[i] for i in sel])
    z = 0.5 * ((pol[:, 0] - np.array(c)[sel]) - (pol[:, 1] - np.array(r)[sel]))
    np.testing.assert_allclose(float(loss), np.mean(np.log1p(np.exp(-z))), rtol=1e-4)
    # RPO: + w * per-token NLL of each chosen reply (token counts from the reply mask)
    n_tok = np.array(msk[:2]).sum(axis=1)
    loss_rpo, st = dpo_loss(model, batch, ref=(c, r), beta=0.5, nll_weight=0.7)
    want = np.mean(np.log1p(np.exp(-z)) + 0.7 * (-pol[:, 0] / n_tok))
    np.testing.assert_allclose(float(loss_rpo), want, rtol=1e-4)
    np.testing.assert_allclose(float(st["ce_sum"]), 0.7 * np.sum(-pol[:, 0] / n_tok), rtol=1e-4)
    g = nn.value_and_grad(model, lambda m: dpo_loss(m, batch, ref=(c, r), beta=0.5)[0])(model)[1]
    keys = [k for k, _ in tree_flatten(g)]
    assert keys and all(".adapters.mode." in k for k in keys)


def test_dpo_terms_agree_with_loss_helpers_dpo():
    from notme_mlx.train.preference import dpo_loss as helper_dpo

    rng = np.random.default_rng(0)
    c, r, rc, rr = (mx.array(rng.normal(-20, 5, 6).astype(np.float32)) for _ in range(4))
    want, _ = helper_dpo(c, r, rc, rr, beta=0.2)
    np.testing.assert_allclose(float(dpo_terms(c, r, rc, rr, beta=0.2).mean()), float(want), rtol=1e-6)
