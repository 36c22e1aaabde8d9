"""The CPU training kernels against MLX's own ops: exp vs float64, attention and SwiGLU (values and
gradients) vs mx.fast.scaled_dot_product_attention / nn.silu under autograd, and the llama block
vs mlx-lm's layer call, LoRA gradients included."""

import math

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from mlx.utils import tree_flatten

from notme_mlx import cpu_kernels as ck
from notme_mlx.lora import LoRAConfig, apply_lora
from notme_mlx.models.tiny import build_tiny_family_model, perturb_adapters
from notme_mlx.train.forward import hidden_states


def test_exp_matches_float64_over_float32_range():
    x = np.concatenate([np.linspace(-87.0, 88.0, 200_001), np.array([0.0, -1e-8, 1e-8, -0.5, 0.5, -0.3465736])])
    got = np.array(ck.exp(mx.array(x.astype(np.float32))))
    want = np.exp(x.astype(np.float32).astype(np.float64))
    rel = np.abs(got - want) / want
    assert rel.max() < 3e-7
    assert float(ck.exp(mx.array([-mx.inf]))[0].item()) == 0.0
    # below float32's normal range: 0 (as with flush-to-zero), e^-87.3 itself still normal; above it e^88
    tiny = np.array(ck.exp(mx.array([-100.0, -1000.0, -87.31, -87.3])))
    assert np.all(tiny[:3] == 0.0) and 1.17e-38 < tiny[3] < 1.5e-38
    assert np.isnan(np.array(ck.exp(mx.array([np.nan, 1.0])))[0])
    np.testing.assert_allclose(np.array(ck.exp(mx.array([100.0, 1e6]))), np.exp(88.0), rtol=1e-6)


def test_swiglu_value_and_gradients_match_autograd():
    mx.random.seed(0)
    g, u, c = (mx.random.normal((3, 5, 40)) * 4 for _ in range(3))

    def ref(g, u):
        return (nn.silu(g) * u * c).sum()

    def ours(g, u):
        return (ck.swiglu(g, u) * c).sum()

    np.testing.assert_allclose(np.array(ck.swiglu(g, u)), np.array(nn.silu(g) * u), rtol=1e-5, atol=1e-6)
    for a, b in zip(mx.grad(ours, argnums=(0, 1))(g, u), mx.grad(ref, argnums=(0, 1))(g, u)):
        np.testing.assert_allclose(np.array(a), np.array(b), rtol=1e-5, atol=1e-5)


def _packed_mask(B, T, cut):
    i = np.arange(T)
    seg = (i >= cut).astype(int)
    m = (i[:, None] >= i[None]) & (seg[:, None] == seg[None])
    return np.broadcast_to(m, (B, 1, T, T)).copy()


@pytest.mark.parametrize("keep", [False, True])
@pytest.mark.parametrize("kind", ["bool", "additive", "causal", "none"])
@pytest.mark.parametrize("heads", [(4, 2), (3, 3), (6, 1)])
def test_attention_matches_mlx_sdpa_with_gradients(kind, heads, keep):
    Hq, Hk = heads
    B, T, D = 2, 24, 8
    mx.random.seed(1)
    q, k, v = mx.random.normal((B, Hq, T, D)), mx.random.normal((B, Hk, T, D)), mx.random.normal((B, Hk, T, D))
    w = mx.random.normal((B, Hq, T, D))
    pm = _packed_mask(B, T, 10)
    mask = {"bool": mx.array(pm), "additive": mx.array(np.where(pm, 0.0, -np.inf).astype(np.float32)),
            "causal": "causal", "none": None}[kind]
    scale = 1 / math.sqrt(D)

    def ref(q, k, v):
        return (mx.fast.scaled_dot_product_attention(q, k, v, scale=scale, mask=mask) * w).sum()

    def ours(q, k, v):
        return (ck.attention(q, k, v, mask, scale, keep_probs=keep) * w).sum()

    np.testing.assert_allclose(np.array(ck.attention(q, k, v, mask, scale, keep_probs=keep)),
                               np.array(mx.fast.scaled_dot_product_attention(q, k, v, scale=scale, mask=mask)),
                               rtol=1e-5, atol=1e-5)
    for a, b in zip(mx.grad(ours, argnums=(0, 1, 2))(q, k, v), mx.grad(ref, argnums=(0, 1, 2))(q, k, v)):
        np.testing.assert_allclose(np.array(a), np.array(b), rtol=1e-4, atol=1e-5)


def test_attention_backward_keeps_no_probability_matrix():
    """Chained attention layers under autograd: each layer adds its q/k/v/output (~0.5 MiB here),
    not its [heads, T, T] probabilities (4 MiB here), to what the backward pass holds."""
    B, H, T, D = 1, 4, 512, 16
    mx.random.seed(2)
    mask = mx.array(_packed_mask(B, T, 300))

    def peak(fn, n_layers):
        x = mx.random.normal((B, H, T, D))
        mx.eval(x)

        def loss(x):
            h = x
            for _ in range(n_layers):
                h = fn(h, h, h)
            return h.sum()

        mx.synchronize()
        mx.reset_peak_memory()
        base = mx.get_active_memory()
        mx.eval(mx.grad(loss)(x))
        return (mx.get_peak_memory() - base) / 2 ** 20

    ours = lambda q, k, v: ck.attention(q, k, v, mask, 0.25, keep_probs=False)  # noqa: E731
    ref = lambda q, k, v: mx.softmax(q @ k.swapaxes(-1, -2) * 0.25 + mx.where(mask, 0.0, -mx.inf), -1) @ v  # noqa: E731
    per_layer_ours = (peak(ours, 6) - peak(ours, 2)) / 4
    per_layer_ref = (peak(ref, 6) - peak(ref, 2)) / 4
    probs_mib = H * T * T * 4 / 2 ** 20
    assert per_layer_ref >= probs_mib  # the plain composition keeps each layer's probabilities
    assert per_layer_ours < probs_mib / 2


def _lora_model(family, seed=0):
    model, _cfg = build_tiny_family_model(family, seed=seed)
    apply_lora(model, LoRAConfig(rank=4, alpha=8))
    perturb_adapters(model, scale=0.1, seed=seed)
    mx.eval(model.parameters())
    return model


@pytest.mark.parametrize("long_rows", [False, True])
@pytest.mark.parametrize("family", ["llama", "mistral"])
def test_block_matches_mlx_lm_layer_with_lora_gradients(family, long_rows):
    model = _lora_model(family)
    layer = model.model.layers[0]
    assert ck.supports(layer)
    mx.random.seed(3)
    # long rows: just past the length where the block stops keeping attention probabilities
    T = 3 * model.args.intermediate_size // model.args.num_attention_heads + 4 if long_rows else 16
    assert ck.keep_probs(layer, T) != long_rows
    B, H = 2, model.args.hidden_size
    x = mx.random.normal((B, T, H))
    w = mx.random.normal((B, T, H))
    for mask in ["causal", mx.array(_packed_mask(B, T, 7))]:
        np.testing.assert_allclose(np.array(ck.block(layer, x, mask)), np.array(layer(x, mask, cache=None)),
                                   rtol=1e-5, atol=1e-5)

        def ours(_m):
            return (ck.block(layer, x, mask) * w).sum()

        def ref(_m):
            return (layer(x, mask, cache=None) * w).sum()

        g_ours = dict(tree_flatten(nn.value_and_grad(layer, ours)(layer)[1]))
        g_ref = dict(tree_flatten(nn.value_and_grad(layer, ref)(layer)[1]))
        assert set(g_ours) == set(g_ref) and len(g_ref) == 14  # lora_a and lora_b of 7 projections
        for key in g_ref:
            ref = np.array(g_ref[key])
            np.testing.assert_allclose(np.array(g_ours[key]), ref, rtol=1e-4, atol=1e-5 * np.abs(ref).max(), err_msg=key)


def test_hidden_states_equal_with_and_without_kernels(monkeypatch):
    model = _lora_model("llama", seed=4)
    x = mx.array(np.random.default_rng(0).integers(0, 500, (2, 20)), mx.int32)
    mask = mx.array(_packed_mask(2, 20, 9))
    with_kernels = hidden_states(model, x, mask=mask)
    monkeypatch.setenv("NOTME_CPU_KERNELS", "off")
    assert not ck.supports(model.model.layers[0])
    without = hidden_states(model, x, mask=mask)
    np.testing.assert_allclose(np.array(with_kernels), np.array(without), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("family", ["qwen2", "gemma", "phi3"])
def test_other_families_keep_their_own_layer(family):
    model, _cfg = build_tiny_family_model(family)
    assert not ck.supports(model.model.layers[0])


def test_gpu_device_keeps_mlx_layer(monkeypatch):
    model, _cfg = build_tiny_family_model("llama")
    monkeypatch.setattr(mx, "default_device", lambda: mx.gpu)
    assert not ck.supports(model.model.layers[0])
