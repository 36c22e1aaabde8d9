"""A llama block's training forward built for MLX's CPU backend: exp, attention and SwiGLU.

Measured on the `mlx[cpu]` wheel (2-core x86, float32; benchmarks/results/bench.md): `mx.exp`
runs ~12 ns per element (a scalar loop; a multiply runs ~0.15 ns), so the softmax of one
SmolLM2 layer's attention ([2, 9, 256, 256]) takes ~14 ms, as long as the layer's q/k/v
projections; and MLX's SDPA fallback multiplies each query head by its key/value head on its
own (18 GEMMs of 256 x 64 x 256, 6.6 ms CPU) where the query heads that share a key/value head
can be one GEMM (6 of 768 x 64 x 256, 0.9 ms CPU). On the GPU (Metal, CUDA) MLX's fused
kernels are the better choice, so `supports` chooses this path only when MLX computes on the CPU.

- `exp`: 2^n * e^r with n = round(x log2 e), r = x - n ln 2 (|r| <= ln(2)/2, ln 2 in two parts
  so r is exact), e^r by its degree-7 Taylor polynomial (relative error below 3e-7 over
  float32's range; x < -87.3 gives 0). Written for the code `mx.compile` generates on the CPU (a
  C++ loop built with `g++ -O3`, no -march): only multiplies, adds, compares and integer casts, so
  the compiler vectorizes the loop; rounding by adding and subtracting 1.5 * 2^23 instead of
  `mx.round` (a libm call per element), the polynomial by Estrin's scheme (MLX fuses at most 11
  ops deep; Horner's chain split into several kernels whose intermediates leave the cache): ~1.5
  ns an element at any size, against 12-15 for `mx.exp` and 3.5-15 for a Horner/`mx.round`
  version (the slower the larger the array).
- `attention(q, k, v, mask, scale, keep_probs)`: softmax(q k^T * scale + mask) v with
  grouped-query heads as one GEMM per key/value head. Its backward either uses the forward's
  probabilities (kept) or saves only q, k, v, the output and each row's log-sum-exp and
  recomputes them (as flash attention does), so no [heads, T, T] array outlives the layer's
  forward pass; `block` keeps them while they are no larger than the MLP's saved activations
  (`keep_probs`), recomputing costs a q k^T GEMM and an exp per layer.
- `swiglu(gate, up)` = silu(gate) * up, keeping gate and up for its backward.
- `block(layer, x, mask)`: an mlx-lm llama `TransformerBlock` (SmolLM2, Llama, Mistral) computed
  from the layer's own modules (norms, LoRA-wrapped projections, RoPE) with the three above.
"""

from __future__ import annotations

import math
import os

import mlx.core as mx
from mlx_lm.models import llama

_LOG2E = 1.4426950408889634
_LN2_HI, _LN2_LO = 0.693145751953125, 1.428606765330187e-06  # ln 2 split: n * _LN2_HI is exact
_TAYLOR = [1.0 / math.factorial(k) for k in range(8)]


_MAGIC = 12582912.0  # 1.5 * 2^23: (t + _MAGIC) - _MAGIC rounds t to the nearest integer, |t| < 2^22
_LOW = -87.3  # e^_LOW ~ 1.3e-38, just above float32's smallest normal


@mx.compile
def exp(x: mx.array) -> mx.array:
    """e^x for float32 x (see module doc): x < -87.3 (and -inf) gives 0, x > 88 gives e^88, NaN stays NaN."""
    xc = mx.minimum(mx.maximum(x, _LOW), 88.0)  # NaN passes through maximum and minimum
    n = (xc * _LOG2E + _MAGIC) - _MAGIC  # round(xc log2 e) with adds only: no libm call
    r = (xc - n * _LN2_HI) - n * _LN2_LO  # |r| <= ln(2) / 2
    r2 = r * r
    t = _TAYLOR  # Estrin's scheme: a graph shallow enough for few fused kernels (MLX fuses 11 deep)
    p = ((t[0] + t[1] * r) + r2 * (t[2] + t[3] * r)) + (r2 * r2) * ((t[4] + t[5] * r) + r2 * (t[6] + t[7] * r))
    # 2^n as float32 bits; zero below _LOW, so e^-inf and the flushed tail are exactly 0
    two_n = ((n.astype(mx.int32) + 127) << 23) * (x >= _LOW).astype(mx.int32)
    return p * two_n.view(mx.float32)


def on_cpu() -> bool:
    """True when MLX computes on the CPU and `NOTME_CPU_KERNELS` is not `off`: where this module's
    kernels are the faster choice (on a GPU MLX's own fused kernels are)."""
    return mx.default_device() == mx.cpu and os.environ.get("NOTME_CPU_KERNELS", "auto") != "off"


@mx.compile
def logsumexp(x: mx.array) -> mx.array:
    """logsumexp over the last axis with this module's `exp` (a row of -inf gives -inf)."""
    top = mx.stop_gradient(mx.maximum(x.max(-1), -3e38))  # a row of -inf keeps a finite max
    return top + mx.log(exp(x - top[..., None]).sum(-1))


HALF_TINY = 2.0 ** -14  # float16's smallest normal; below it `float16_to_float32` gives 0


@mx.compile
def float16_to_float32(w: mx.array) -> mx.array:
    """A float16 array as float32 by moving its bits (MLX's CPU `astype` from float16 converts
    each element in software, ~1 ns an element; this ~0.4): exact for zeros and normal values;
    subnormals (|w| < 2^-14) and -0 give +0, infinities and NaN are not kept (weights only)."""
    h = w.view(mx.uint16).astype(mx.uint32)
    bits = ((h & 0x8000) << 16) | (((h & 0x7FFF) << 13) + (112 << 23))  # exponent bias 15 -> 127
    return (bits * ((h & 0x7C00) != 0).astype(mx.uint32)).view(mx.float32)


def sigmoid(x: mx.array) -> mx.array:
    return 1.0 / (1.0 + exp(-x))


@mx.custom_function
def swiglu(gate: mx.array, up: mx.array) -> mx.array:
    """silu(gate) * up."""
    return gate * sigmoid(gate) * up


@swiglu.vjp
def _swiglu_vjp(primals, cotangent, output):
    gate, up = primals
    # After the cotangent, or `mx.compile` merges this sigmoid with the forward's and keeps it.
    s = sigmoid(gate := mx.depends(gate, cotangent))
    silu = gate * s
    return cotangent * up * (s + silu * (1.0 - s)), cotangent * silu


def _scores(q, k, mask, scale):
    """q k^T * scale with masked entries -inf: [B, Hk, r*T, S] (query heads grouped per key head)."""
    B, Hq, T, D = q.shape
    Hk, S = k.shape[1], k.shape[2]
    r = Hq // Hk
    s = (q.reshape(B, Hk, r * T, D) * scale) @ k.swapaxes(-1, -2)
    if mask is None:
        return s
    s = s.reshape(B, Hk, r, T, S)
    m = mask[:, :, None]  # [B|1, 1, 1, T, S]: the same for every head
    s = mx.where(m, s, -mx.inf) if mask.dtype == mx.bool_ else s + m
    return s.reshape(B, Hk, r * T, S)


def _probabilities(s):
    """(softmax of s over the last axis, its log-sum-exp); a fully masked row gives zeros."""
    top = mx.maximum(s.max(-1, keepdims=True), -3e38)  # a fully masked row keeps a finite max
    e = exp(s - top)
    z = mx.maximum(e.sum(-1, keepdims=True), 1e-30)
    return e / z, top + mx.log(z)


def _attention_backward(q, k, v, o, p, do, scale):
    B, Hq, T, D = q.shape
    Hk = k.shape[1]
    r = Hq // Hk
    do = do.reshape(B, Hk, r * T, D)
    dv = p.swapaxes(-1, -2) @ do  # sums the r query heads of each key head
    dp = do @ v.swapaxes(-1, -2)
    ds = p * (dp - (do * o.reshape(B, Hk, r * T, D)).sum(-1, keepdims=True))
    dq = ((ds @ k) * scale).reshape(B, Hq, T, D)
    dk = (ds.swapaxes(-1, -2) @ q.reshape(B, Hk, r * T, D)) * scale
    return dq, dk, dv


def _no_grad(mask, scale):
    dmask = None if mask is None else mx.broadcast_to(mx.zeros((), mask.dtype), mask.shape)
    return dmask, mx.zeros_like(scale)


def _attention_fn(keep_probs: bool):
    """The attention custom function: its second output is the probabilities (kept for the
    backward pass) or each row's log-sum-exp (the backward recomputes the probabilities)."""

    @mx.custom_function
    def fn(q, k, v, mask, scale):
        p, lse = _probabilities(_scores(q, k, mask, scale))
        return (p @ v).reshape(q.shape), p if keep_probs else lse

    @fn.vjp
    def fn_vjp(primals, cotangents, outputs):
        q, k, v, mask, scale = primals
        (o, kept), do = outputs, cotangents[0]
        # Recomputed once the cotangent exists: without the dependency the recomputation needs
        # nothing from the backward pass, and MLX may run it for every layer early, keeping all
        # their [T, S] blocks alive at once.
        p = kept if keep_probs else exp(_scores(mx.depends(q, do), k, mask, scale) - kept)
        return (*_attention_backward(q, k, v, o, p, do, scale), *_no_grad(mask, scale))

    return fn


_ATTENTION = {keep: _attention_fn(keep) for keep in (False, True)}


def attention(q: mx.array, k: mx.array, v: mx.array, mask, scale: float, keep_probs: bool = False) -> mx.array:
    """softmax(q k^T * scale + mask) v.

    Args:
        q: [B, Hq, T, D]; k, v: [B, Hk, S, D] with Hq a multiple of Hk (query head h uses key
            head h // (Hq / Hk), as MLX's SDPA).
        mask: None (no mask), "causal", or a boolean (True = attend) or additive array
            broadcastable to [B, 1, T, S] (one mask for every head).
        keep_probs: the backward pass uses the forward's probabilities ([B, Hq, T, S] kept
            alive until then) instead of recomputing them (one more q k^T GEMM and exp).
    Returns:
        [B, Hq, T, D].
    """
    if isinstance(mask, str):
        if mask != "causal":
            raise ValueError(f"mask {mask!r}: expected None, 'causal' or an array")
        T, S = q.shape[2], k.shape[2]
        mask = (mx.arange(T)[:, None] + (S - T)) >= mx.arange(S)[None]
    if mask is not None:
        if mask.ndim < 4:
            mask = mask.reshape((1,) * (4 - mask.ndim) + mask.shape)
        if mask.shape[1] != 1:
            raise ValueError(f"mask shape {mask.shape}: one mask for all heads expected ([B, 1, T, S])")
    return _ATTENTION[keep_probs](q, k, v, mask, mx.array(scale, q.dtype))[0]


def supports(layer) -> bool:
    """True when `block` computes this layer: an mlx-lm llama TransformerBlock, MLX on the CPU,
    and `NOTME_CPU_KERNELS` is not `off` (set it to compare against mlx-lm's own layer call)."""
    return type(layer) is llama.TransformerBlock and on_cpu()


def keep_probs(layer, T: int) -> bool:
    """Whether `block` keeps a layer's attention probabilities for its backward pass: when they are
    no larger than what its MLP keeps (heads x T <= 3 x intermediate floats per position; SmolLM2:
    T <= 512). Longer rows recompute them, so their memory stays linear in T."""
    return layer.self_attn.n_heads * T <= 3 * layer.args.intermediate_size


def block(layer, x: mx.array, mask) -> mx.array:
    """`layer(x, mask, cache=None)` for an mlx-lm llama TransformerBlock, with this module's kernels."""
    a, m = layer.self_attn, layer.mlp
    B, L, _ = x.shape
    h = layer.input_layernorm(x)
    q = a.rope(a.q_proj(h).reshape(B, L, a.n_heads, -1).transpose(0, 2, 1, 3))
    k = a.rope(a.k_proj(h).reshape(B, L, a.n_kv_heads, -1).transpose(0, 2, 1, 3))
    v = a.v_proj(h).reshape(B, L, a.n_kv_heads, -1).transpose(0, 2, 1, 3)
    o = attention(q, k, v, mask, a.scale, keep_probs=keep_probs(layer, L)).transpose(0, 2, 1, 3).reshape(B, L, -1)
    x = x + a.o_proj(o)
    h = layer.post_attention_layernorm(x)
    return x + m.down_proj(swiglu(m.gate_proj(h), m.up_proj(h)))
