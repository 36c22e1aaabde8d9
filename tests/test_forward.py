"""hidden_states / run_layers equal mlx-lm's own forward; checkpoint gives the same values and grads."""

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from mlx_lm import load

from notme_mlx.train.forward import embed, final_norm, hidden_states, layer_mask, num_layers, run_layers


@pytest.fixture(scope="module")
def untied(tiny_model_untied_dir):
    return load(str(tiny_model_untied_dir))[0]


def _inputs(B=2, T=24, V=512, seed=0):
    return mx.random.randint(0, V, (B, T), key=mx.random.key(seed)).astype(mx.int32)


def test_matches_mlx_lm(tiny_model, untied):
    for model in (tiny_model[0], untied):
        x = _inputs()
        ref = model.model(x)
        out = hidden_states(model, x)
        # On the CPU the blocks run through cpu_kernels (another float32 summation order).
        np.testing.assert_allclose(np.array(out), np.array(ref), rtol=1e-5, atol=1e-5)


def test_stages_compose(untied):
    x = _inputs()
    n = num_layers(untied)
    h = embed(untied, x)
    h = run_layers(untied, h, 0, 2)
    h = hidden_states(untied, h, layers=(2, n))
    np.testing.assert_allclose(np.array(h), np.array(untied.model(x)), rtol=1e-5, atol=1e-5)
    mid = hidden_states(untied, x, layers=(0, 2))
    np.testing.assert_allclose(np.array(mid), np.array(run_layers(untied, embed(untied, x), 0, 2)),
                               rtol=0, atol=0)
    np.testing.assert_allclose(np.array(final_norm(untied, run_layers(untied, embed(untied, x)))),
                               np.array(untied.model(x)), rtol=1e-5, atol=1e-5)


def test_explicit_causal_mask_array(untied):
    x = _inputs(T=16)
    T = x.shape[1]
    causal = mx.where(mx.tril(mx.ones((T, T), dtype=mx.bool_)), 0.0, -mx.inf)[None, None]
    np.testing.assert_allclose(np.array(hidden_states(untied, x, mask=causal)),
                               np.array(untied.model(x)), rtol=1e-5, atol=1e-5)


def test_checkpoint_same_values_and_grads(untied):
    x = _inputs(T=16)
    untied.freeze()
    untied.model.layers[1].self_attn.q_proj.unfreeze()

    def loss(m, ck):
        return (hidden_states(m, x, checkpoint=ck) ** 2).mean()

    v0, g0 = nn.value_and_grad(untied, lambda m: loss(m, False))(untied)
    v1, g1 = nn.value_and_grad(untied, lambda m: loss(m, True))(untied)
    assert abs(v0.item() - v1.item()) <= 1e-6 * abs(v0.item())
    a = g0["model"]["layers"][1]["self_attn"]["q_proj"]["weight"]
    b = g1["model"]["layers"][1]["self_attn"]["q_proj"]["weight"]
    assert float(mx.abs(a).max()) > 0
    np.testing.assert_allclose(np.array(b), np.array(a), rtol=1e-5, atol=1e-7)
    untied.unfreeze()


def test_layer_mask_window_intersects_bool_and_additive_masks():
    """A sliding window on top of a packed (block-diagonal) mask: i sees j iff same document, j <= i
    and i - j < window; the additive form gives the same pattern."""
    T, w = 12, 3
    seg = np.array([0] * 7 + [1] * 5)
    packed = (seg[:, None] == seg[None]) & np.tril(np.ones((T, T), bool))
    want = packed & ((np.arange(T)[:, None] - np.arange(T)[None]) < w)
    got = layer_mask(mx.array(packed)[None, None], T, w)
    np.testing.assert_array_equal(np.array(got)[0, 0], want)
    additive = mx.where(mx.array(packed), 0.0, -mx.inf)[None, None]
    got_add = np.array(layer_mask(additive, T, w))[0, 0]
    np.testing.assert_array_equal(np.isfinite(got_add), want)
    assert layer_mask(None, T, None) == "causal" and layer_mask(None, 1, 4) is None
    np.testing.assert_array_equal(np.array(layer_mask(None, T, w)), np.tril(np.ones((T, T), bool)) & (
        (np.arange(T)[:, None] - np.arange(T)[None]) < w))
    np.testing.assert_array_equal(np.array(layer_mask("causal", T, None, array_mask=True)),
                                  np.tril(np.ones((T, T), bool)))
