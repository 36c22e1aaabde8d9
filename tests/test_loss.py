"""fused_token_loss vs the naive full-logits reference: values and grads w.r.t. hidden."""

import math

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest

from notme_mlx.loss import (
    fused_token_loss, naive_token_loss, output_head, sequence_logprobs, token_logprobs,
)


def _data(N, H, V, seed=0, labels=None):
    k = mx.random.split(mx.random.key(seed), 4)
    h = mx.random.normal((N, H), key=k[0])
    w = mx.random.normal((V, H), key=k[1]) * (H ** -0.5) * 3
    y = mx.random.randint(0, V, (N,), key=k[2]).astype(mx.int32)
    lab = mx.random.randint(-1, 2, (N,), key=k[3]).astype(mx.int32) if labels is None else labels
    return h, w, y, lab


def _vg(fn, w, y, lab, compiled=False, **kw):
    f = mx.value_and_grad(lambda h: fn(h, w, y, lab, **kw)[0])
    return mx.compile(f) if compiled else f


def _close(a, b, rtol=1e-5):
    a, b = np.array(a, dtype=np.float64), np.array(b, dtype=np.float64)
    scale = max(np.abs(b).max(), 1e-30)
    assert np.abs(a - b).max() <= rtol * scale, (np.abs(a - b).max(), scale)


@pytest.mark.parametrize("V,N,chunk", [(1000, 64, 300), (49152, 8, 8192)])
@pytest.mark.parametrize("compiled", [False, True])
def test_matches_naive(V, N, chunk, compiled):
    h, w, y, lab = _data(N, 32, V)
    v1, g1 = _vg(fused_token_loss, w, y, lab, compiled, chunk_size=chunk)(h)
    # The reference runs in float64 (CPU): at V=49152 an fp32 naive softmax is itself off by
    # ~5e-5 relative in the gradient, while the chunked fp32 path stays within ~7e-6. float64
    # exists on the CPU only, so the reference runs on a CPU stream whatever the default device.
    with mx.stream(mx.cpu):
        v0, g0 = _vg(naive_token_loss, w.astype(mx.float64), y, lab)(h.astype(mx.float64))
    v32, g32 = _vg(naive_token_loss, w, y, lab)(h)
    _close(v1, v32)
    _close(g1, g32, rtol=1e-4)
    _close(v1, v0)
    _close(g1, g0)


def test_plain_numpy_values():
    h, w, y, lab = _data(40, 16, 200, seed=3)
    loss, st = fused_token_loss(h, w, y, lab, penalty_weight=2.5, chunk_size=64)
    logits = np.array(h, np.float64) @ np.array(w, np.float64).T
    lse = np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1)) + logits.max(1)
    lp = logits[np.arange(40), np.array(y)] - lse
    L = np.array(lab)
    ce, ul = -lp[L == 1].sum(), -np.log1p(-np.exp(lp[L == -1])).sum()
    assert math.isclose(st["ce_sum"].item(), ce, rel_tol=1e-5)
    assert math.isclose(st["ul_sum"].item(), ul, rel_tol=1e-5)
    assert st["n_learn"].item() == (L == 1).sum() and st["n_penalize"].item() == (L == -1).sum()
    expect = ce / (L == 1).sum() + 2.5 * ul / (L == -1).sum()
    assert math.isclose(loss.item(), expect, rel_tol=1e-5)


def test_all_context_rows_zero():
    h, w, y, _ = _data(16, 32, 500)
    lab = mx.array([0] * 8 + [1, -1] * 4, dtype=mx.int32)
    v, g = _vg(fused_token_loss, w, y, lab, chunk_size=128)(h)
    assert float(mx.abs(g[:8]).max()) == 0.0 and float(mx.abs(g[8:]).max()) > 0
    zero = mx.zeros((16,), dtype=mx.int32)
    v, g = _vg(fused_token_loss, w, y, zero, chunk_size=128)(h)
    assert v.item() == 0.0 and float(mx.abs(g).max()) == 0.0


def test_penalty_gradient_pushes_target_down():
    h, w, y, _ = _data(4, 16, 100)
    lab = mx.full((4,), -1, dtype=mx.int32)
    _, g = _vg(fused_token_loss, w, y, lab)(h)
    lp0 = token_logprobs(h, w, y)
    lp1 = token_logprobs(h - 0.01 * g, w, y)
    assert bool((lp1 < lp0).all())


def test_global_count_normalization():
    h, w, y, lab = _data(64, 32, 700, seed=5)
    nl, npn = int((lab == 1).sum()), int((lab == -1).sum())
    whole, gw = _vg(fused_token_loss, w, y, lab, chunk_size=256)(h)
    parts, grads = 0.0, []
    for s in (slice(0, 20), slice(20, 64)):
        v, g = _vg(fused_token_loss, w, y[s], lab[s], chunk_size=256, n_learn=nl, n_penalize=npn)(h[s])
        parts += v.item()
        grads.append(g)
    assert math.isclose(parts, whole.item(), rel_tol=1e-5)
    _close(mx.concatenate(grads), gw)


@pytest.mark.parametrize("bits", [4, 8])
def test_quantized_head_matches_dequantized(bits):
    h, w, y, lab = _data(24, 64, 1000)
    q = nn.QuantizedLinear.from_linear(_linear(w), group_size=32, bits=bits)
    spec = output_head(_Wrap(q))
    assert isinstance(spec, tuple) and spec[3:5] == (32, bits)
    dense = mx.dequantize(q.weight, q.scales, q.biases, group_size=32, bits=bits)
    v1, g1 = _vg(fused_token_loss, spec, y, lab, chunk_size=300)(h)
    v0, g0 = _vg(naive_token_loss, dense, y, lab)(h)
    _close(v1, v0)
    _close(g1, g0)


def test_output_head_tied_and_untied(tiny_model):
    model = tiny_model[0]
    assert output_head(model) is model.model.embed_tokens.weight
    e = nn.QuantizedEmbedding.from_embedding(model.model.embed_tokens, group_size=32, bits=8)
    spec = output_head(_Wrap(None, e))
    assert spec[0] is e.weight and spec[3:] == (32, 8)


def test_sequence_logprobs():
    B, T, H, V = 3, 7, 16, 300
    k = mx.random.split(mx.random.key(1), 4)
    hid = mx.random.normal((B, T, H), key=k[0])
    w = mx.random.normal((V, H), key=k[1])
    y = mx.random.randint(0, V, (B, T), key=k[2]).astype(mx.int32)
    m = (mx.random.uniform(shape=(B, T), key=k[3]) > 0.3).astype(mx.int32)
    logp = nn.log_softmax(hid @ w.T, axis=-1)
    ref = (mx.take_along_axis(logp, y[..., None], -1)[..., 0] * m).sum(-1)
    _close(sequence_logprobs(hid, w, y, m, chunk_size=64), ref)
    _close(sequence_logprobs(hid, w, y, m, average=True), ref / m.sum(-1))


class _Wrap(nn.Module):
    def __init__(self, head, emb=None):
        super().__init__()
        if head is not None:
            self.lm_head = head
        self.model = nn.Module()
        self.model.embed_tokens = emb


def _linear(w):
    lin = nn.Linear(w.shape[1], w.shape[0], bias=False)
    lin.weight = w
    return lin
