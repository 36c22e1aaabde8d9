"""Fused token loss: cross-entropy on learn tokens + unlikelihood on penalize tokens.

One pass over the vocabulary in chunks. For positions t with
hidden state h_t, frozen output matrix W [V, H], target y_t and label l_t:

    lse_t = logsumexp_v(h_t . W_v)      z_t = h_t . W_{y_t}
    CE_t  = lse_t - z_t                           (l_t = +1)
    UL_t  = -log(1 - exp(z_t - lse_t))            (l_t = -1, p clamped below 1)
    loss  = sum CE / max(N+, 1) + penalty_weight * sum UL / max(N-, 1)

`chunked_logsumexp` is an `mx.custom_function`: its forward is an online
logsumexp over a chunk of rows of W at a time (`chunk_size` at most, fewer when
positions x rows would exceed the WORKING_SET budget) and its VJP recomputes each
chunk's logits, so the [N, V] logits never exist. z_t is a row gather
(W[y_t] . h_t), so the one-hot part of the logits gradient never needs a
chunk. See docs/loss.md for the derivation and memory numbers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Union

import mlx.core as mx
import mlx.nn as nn

from . import cpu_kernels
from .errors import NotmeError
from .models.families import family_of_model, final_softcap


@dataclass(frozen=True)
class SoftCapped:
    """An output head whose logits are soft-capped: c·tanh(z / c) (Gemma 2's final logits)."""

    weight: "WeightSpec"
    cap: float


# A dense [V, H] array, or (w, scales, biases, group_size, bits[, mode]), or SoftCapped(either, c).
WeightSpec = Union[mx.array, tuple, SoftCapped]


def _split_cap(weight: WeightSpec):
    """(weight without the cap, cap or None)."""
    return (weight.weight, weight.cap) if isinstance(weight, SoftCapped) else (weight, None)


def _capped(logits: mx.array, cap) -> mx.array:
    return logits if cap is None else cap * mx.tanh(logits / cap)

# Working-set budget of one vocabulary chunk, in logits elements (positions x rows): 2^23
# float32 = a 32 MiB logits block. MLX's CPU scheduler keeps several chunk-sized temporaries
# alive at once, so the peak extra memory is a small multiple of this, independent of N.
WORKING_SET = 1 << 23
MIN_CHUNK = 256  # rows; below this the per-chunk GEMMs get too thin to be efficient

P_MAX = 1.0 - 1e-6  # penalized-token probability clamp (UL <= ~13.8)
_X_MAX = math.log(P_MAX)  # the same clamp on x = z - lse = log p
_LN_HALF = -math.log(2.0)


def output_head(model) -> WeightSpec:
    """The model's output head as a loss weight spec, soft-capped where the family caps its logits."""
    spec = _head_weights(model)
    try:
        cap = final_softcap(family_of_model(model), model.args)
    except (NotmeError, AttributeError):  # not a known family: no cap
        cap = None
    return spec if cap is None else SoftCapped(spec, cap)


def _head_weights(model) -> WeightSpec:
    """The frozen output matrix of an mlx-lm model, as a loss weight spec.

    Args:
        model: mlx-lm model (llama family): `model.lm_head` when untied, else
            `model.model.embed_tokens` (tied embeddings).
    Returns:
        dense weight [V, H], or (w, scales, biases, group_size, bits) for
        QuantizedLinear / QuantizedEmbedding (a 6th item `mode` when not affine).
    """
    head = getattr(model, "lm_head", None)
    if head is None:
        inner = getattr(model, "model", model)
        head = getattr(inner, "embed_tokens", None)
    if head is None:
        raise TypeError(f"{type(model).__name__} has neither lm_head nor model.embed_tokens")
    if isinstance(head, (nn.QuantizedLinear, nn.QuantizedEmbedding)):
        spec = (head.weight, head.scales, getattr(head, "biases", None), head.group_size, head.bits)
        mode = getattr(head, "mode", "affine")
        return spec if mode == "affine" else spec + (mode,)
    if isinstance(head, (nn.Linear, nn.Embedding)) and "bias" not in head:
        return head.weight
    raise TypeError(f"unsupported output head {type(head).__name__} (need Linear/Embedding or quantized)")


def vocab_size(weight: WeightSpec) -> int:
    """Number of rows V of a weight spec."""
    weight = _split_cap(weight)[0]
    return (weight[0] if isinstance(weight, tuple) else weight).shape[0]


def _rows(weight: WeightSpec, start=None, stop=None, index=None) -> mx.array:
    """Dense rows of W: W[start:stop] or W[index] ([n, H]); dequantizes only those rows."""
    weight = _split_cap(weight)[0]
    if not isinstance(weight, tuple):
        return weight[index] if index is not None else weight[start:stop]
    w, scales, biases, group_size, bits = weight[:5]
    mode = weight[5] if len(weight) > 5 else "affine"
    sel = (lambda a: a[index]) if index is not None else (lambda a: a[start:stop])
    return mx.dequantize(
        sel(w), sel(scales), None if biases is None else sel(biases),
        group_size=group_size, bits=bits, mode=mode,
    )


def _chunks(V: int, chunk_size: int):
    return [(s, min(s + chunk_size, V)) for s in range(0, V, chunk_size)]


def effective_chunk(n_positions: int, chunk_size: int = 8192, working_set: int | None = WORKING_SET) -> int:
    """Vocabulary rows per chunk for `n_positions` positions.

    `chunk_size` is the cap; the working set (positions x rows) sets the chunk when it is
    smaller, rounded down to a multiple of MIN_CHUNK and never below it. So the logits
    block stays about `working_set` elements whatever the number of positions, and short
    batches keep the large chunk (fewer, fatter GEMMs).
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    if not working_set or n_positions < 1:
        return chunk_size
    fit = max(MIN_CHUNK, working_set // n_positions // MIN_CHUNK * MIN_CHUNK)
    return min(chunk_size, fit)


def chunked_logsumexp(hidden: mx.array, weight: WeightSpec, chunk_size: int = 8192,
                      working_set: int | None = WORKING_SET) -> mx.array:
    """logsumexp over the vocabulary of hidden @ W.T without forming [N, V].

    Differentiable w.r.t. `hidden` only (W is treated as a frozen constant).

    Args:
        hidden: [N, H] (any float dtype; logits are accumulated in float32).
        weight: dense [V, H] or a quantized spec (see `output_head`).
        chunk_size: most rows of W per chunk.
        working_set: cap on positions x rows of one chunk (`effective_chunk`); None: chunk_size.
            Peak extra memory is a small multiple of the chunk's logits block (N x chunk x 4 B).
    Returns:
        lse: [N] float32.
    """
    cap = _split_cap(weight)[1]
    # MLX's CPU exp and logsumexp run ~12 ns an element (a scalar loop); cpu_kernels' ~1.5 ns,
    # but their fused kernels leave chunk-sized intermediates: with a quarter of the working set
    # the peak stays below MLX's exp at the full one (short batches keep the full chunk either way).
    cpu = cpu_kernels.on_cpu()
    if cpu and working_set:
        working_set //= 4
    bounds = _chunks(vocab_size(weight), effective_chunk(hidden.shape[0], chunk_size, working_set))
    exp = cpu_kernels.exp if cpu else mx.exp
    lse_of = cpu_kernels.logsumexp if cpu else (lambda x: mx.logsumexp(x, axis=-1))

    @mx.custom_function
    def lse_fn(h):
        lse = None
        for s, e in bounds:
            # Chain each chunk on the running result so only one chunk's logits live at a time.
            hc = h if lse is None else mx.depends(h, lse)
            logits = _capped((hc @ _rows(weight, s, e).T).astype(mx.float32), cap)  # [N, C]
            part = lse_of(logits)  # [N]
            lse = part if lse is None else mx.logaddexp(lse, part)
        return lse

    @lse_fn.vjp
    def lse_vjp(primals, cotangent, output):
        h = primals[0] if isinstance(primals, (tuple, list)) else primals
        g, lse = cotangent, output  # [N], [N]
        dh = None
        for s, e in bounds:
            wc = _rows(weight, s, e)  # [C, H]
            hc = h if dh is None else mx.depends(h, dh)
            logits = (hc @ wc.T).astype(mx.float32)  # [N, C]
            if cap is None:
                coef = exp(logits - lse[:, None]) * g[:, None]  # a_t * softmax_chunk
            else:  # d(c·tanh(z/c))/dz = 1 - tanh²(z/c)
                t = mx.tanh(logits / cap)
                coef = exp(cap * t - lse[:, None]) * g[:, None] * (1.0 - t * t)
            part = coef.astype(wc.dtype) @ wc  # [N, H]
            dh = part.astype(mx.float32) if dh is None else dh + part
        return dh.astype(h.dtype)

    return lse_fn(hidden)


def target_logits(hidden: mx.array, weight: WeightSpec, targets: mx.array) -> mx.array:
    """z_t = h_t . W[y_t] for every position.

    Args:
        hidden: [N, H]; weight: spec; targets: [N] int.
    Returns:
        [N] float32.
    """
    rows = _rows(weight, index=targets)  # [N, H]
    return _capped((hidden.astype(mx.float32) * rows.astype(mx.float32)).sum(axis=-1), _split_cap(weight)[1])


def log1mexp(x: mx.array) -> mx.array:
    """log(1 - exp(x)) for x < 0, stable near 0 and for very negative x."""
    return mx.where(x < _LN_HALF, mx.log1p(-mx.exp(x)), mx.log(-mx.expm1(x)))


def _combine(lse, z, labels, penalty_weight, n_learn, n_penalize):
    """Loss and stats from per-position lse [N] and z [N]."""
    learn = labels == 1
    penal = labels == -1
    ce = mx.where(learn, lse - z, 0.0)
    x = mx.minimum(z - lse, _X_MAX)  # log p, clamped below log(1 - 1e-6)
    ul = mx.where(penal, -log1mexp(x), 0.0)
    ce_sum, ul_sum = ce.sum(), ul.sum()
    local_learn = learn.sum().astype(mx.float32)
    local_penal = penal.sum().astype(mx.float32)
    nl = local_learn if n_learn is None else mx.array(n_learn, dtype=mx.float32)
    npn = local_penal if n_penalize is None else mx.array(n_penalize, dtype=mx.float32)
    loss = ce_sum / mx.maximum(nl, 1.0)
    if penalty_weight:
        loss = loss + penalty_weight * ul_sum / mx.maximum(npn, 1.0)
    stats = {"ce_sum": ce_sum, "ul_sum": ul_sum, "n_learn": local_learn, "n_penalize": local_penal}
    return loss, stats


def _check(hidden, targets, labels):
    if hidden.ndim != 2 or targets.shape != hidden.shape[:1] or labels.shape != targets.shape:
        raise ValueError(
            f"expected hidden [N, H], targets [N], labels [N]; got {hidden.shape}, "
            f"{targets.shape}, {labels.shape} (flatten [B, T] inputs first)"
        )


def fused_token_loss(
    hidden: mx.array,
    weight: WeightSpec,
    targets: mx.array,
    labels: mx.array,
    penalty_weight: float = 10.0,
    chunk_size: int = 8192,
    n_learn=None,
    n_penalize=None,
    working_set: int | None = WORKING_SET,
):
    """CE on learn tokens + penalty_weight * unlikelihood on penalize tokens, fused.

    Args:
        hidden: [N, H] final-norm hidden states.
        weight: frozen output matrix [V, H] or quantized spec (`output_head`).
        targets: [N] int32 next-token ids.
        labels: [N] int32 in {+1 learn, 0 context, -1 penalize}.
        penalty_weight: lambda on the unlikelihood term (0 turns it off).
        chunk_size: most vocabulary rows per chunk.
        n_learn, n_penalize: GLOBAL counts (all micro-steps and ranks) used as
            denominators; None uses this call's local counts.
        working_set: positions x rows cap of one chunk (`effective_chunk`); None: chunk_size.
    Returns:
        (loss scalar, stats) with stats = {"ce_sum", "ul_sum", "n_learn",
        "n_penalize"}: local sums and local counts (mx float32 scalars).
    """
    _check(hidden, targets, labels)
    lse = chunked_logsumexp(hidden, weight, chunk_size, working_set)
    z = target_logits(hidden, weight, targets)
    return _combine(lse, z, labels, penalty_weight, n_learn, n_penalize)


def naive_token_loss(
    hidden, weight, targets, labels, penalty_weight=10.0, chunk_size=None,
    n_learn=None, n_penalize=None, working_set=None,
):
    """Reference for `fused_token_loss` (same signature): full [N, V] logits, plain formula.

    `chunk_size` and `working_set` are ignored. Memory O(N * V); use for tests and small shapes only.
    """
    _check(hidden, targets, labels)
    w = _rows(weight, 0, vocab_size(weight))
    logits = hidden @ w.T  # [N, V]
    if logits.dtype != mx.float64:  # float64 (CPU) is kept for exact references
        logits = logits.astype(mx.float32)
    logits = _capped(logits, _split_cap(weight)[1])
    logp = logits - mx.logsumexp(logits, axis=-1, keepdims=True)
    lp = mx.take_along_axis(logp, targets[:, None].astype(mx.int32), axis=-1)[:, 0]  # [N]
    p = mx.minimum(mx.exp(lp), P_MAX)
    learn, penal = labels == 1, labels == -1
    ce_sum = mx.where(learn, -lp, 0.0).sum()
    ul_sum = mx.where(penal, -mx.log1p(-p), 0.0).sum()
    nl = learn.sum().astype(mx.float32)
    npn = penal.sum().astype(mx.float32)
    dl = nl if n_learn is None else mx.array(n_learn, dtype=mx.float32)
    dp = npn if n_penalize is None else mx.array(n_penalize, dtype=mx.float32)
    loss = ce_sum / mx.maximum(dl, 1.0) + penalty_weight * ul_sum / mx.maximum(dp, 1.0)
    return loss, {"ce_sum": ce_sum, "ul_sum": ul_sum, "n_learn": nl, "n_penalize": npn}


def token_logprobs(hidden: mx.array, weight: WeightSpec, targets: mx.array, chunk_size: int = 8192):
    """log p(y_t | h_t) for every position, fused (no [N, V]).

    Args:
        hidden: [..., H]; targets: [...] int.
    Returns:
        [...] float32.
    """
    shape = targets.shape
    h = hidden.reshape(-1, hidden.shape[-1])
    y = targets.reshape(-1)
    lp = target_logits(h, weight, y) - chunked_logsumexp(h, weight, chunk_size)
    return lp.reshape(shape)


def sequence_logprobs(
    hidden: mx.array, weight: WeightSpec, targets: mx.array, mask: mx.array,
    chunk_size: int = 8192, average: bool = False,
):
    """Summed (or mean) target log-probs per sequence, for preference losses.

    Args:
        hidden: [B, T, H]; targets: [B, T] int; mask: [B, T] (1 = count the position).
        average: divide by the number of counted positions (SimPO's length norm).
    Returns:
        [B] float32.
    """
    m = mask.astype(mx.float32)
    lp = token_logprobs(hidden, weight, targets, chunk_size) * m  # [B, T]
    total = lp.sum(axis=-1)
    return total / mx.maximum(m.sum(axis=-1), 1.0) if average else total
