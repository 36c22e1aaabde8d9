"""Forward pass of an mlx-lm model of any supported family with an explicit attention mask.

Split into stages so pipeline-parallel workers can run a layer range:
`embed` -> `run_layers(start, end)` -> `final_norm`. `hidden_states` chains
them. Each layer is called as mlx-lm does: `layer(h, mask, cache=None)`. The
family's quirks (see `notme_mlx.models.families`) are applied here: Gemma's
embedding scale, each layer's sliding window (combined with a packed
block-diagonal mask when one is given) and Gemma 2's array-only masks. The
final norm is the model's own module (Gemma's (1 + w) RMSNorm included); the
output head and its soft-cap live in `notme_mlx.loss.output_head`.
"""

from __future__ import annotations

from typing import Optional, Union

import mlx.core as mx
from mlx_lm.models.base import create_causal_mask

from .. import cpu_kernels
from ..models.families import embedding_scale, family_of_model, layer_window

Mask = Union[None, str, mx.array]


def _inner(model):
    return getattr(model, "model", model)


def num_layers(model) -> int:
    """Number of transformer layers."""
    return len(_inner(model).layers)


def embed(model, inputs: mx.array) -> mx.array:
    """Token embeddings (times the family's embedding scale). inputs [B, T] int32 -> [B, T, H]."""
    h = _inner(model).embed_tokens(inputs)
    return embedding_scale(family_of_model(model), model.args, h)


def final_norm(model, h: mx.array) -> mx.array:
    """The model's final RMSNorm. [B, T, H] -> [B, T, H]."""
    return _inner(model).norm(h)


def layer_mask(mask: Mask, T: int, window: Optional[int], array_mask: bool = False) -> Mask:
    """The mask one layer gets, as mlx-lm builds it for that layer.

    Args:
        mask: None / "causal", or a bool/additive array broadcastable to [B, heads, T, T]
            (e.g. the packed block-diagonal mask of `stream.collate`).
        window: the layer's sliding window (None: full attention). A window is
            intersected with an array mask: position i sees j only when j <= i,
            i - j < window and the array allows it.
        array_mask: the layer cannot take the "causal" shortcut (Gemma 2).
    """
    if mask is None or (isinstance(mask, str) and mask == "causal"):
        if T == 1:
            return None
        if window is not None and T > window:
            return create_causal_mask(T, window_size=window)
        return create_causal_mask(T) if array_mask else "causal"
    if isinstance(mask, str):
        raise ValueError(f"mask {mask!r}: expected None, 'causal' or an array")
    if window is None or T <= window:
        return mask
    i = mx.arange(T)[:, None]
    band = (i - mx.arange(T)[None]) < window  # [T, T]
    if mask.dtype == mx.bool_:
        return mask & band
    return mask + mx.where(band, 0.0, -mx.inf).astype(mask.dtype)


def run_layers(model, h: mx.array, start: int = 0, end: Optional[int] = None,
               mask: Mask = None, checkpoint: bool = False, first_layer: int = 0) -> mx.array:
    """Run layers [start, end) on raw hidden states.

    Args:
        h: [B, T, H] (embedding output or a previous stage's output).
        mask: None (causal), "causal", or an additive/boolean array broadcastable
            to [B, heads, T, T] (e.g. the packed mask of `stream.collate`, [B, 1, T, T]).
        checkpoint: wrap each layer in `mx.checkpoint` (recompute in backward).
        first_layer: the model-wide index of `layers[0]` (a pipeline stage holds a slice),
            which decides each layer's sliding window.
    Returns:
        [B, T, H] un-normalized hidden states after layer end-1.
    """
    layers = _inner(model).layers
    end = len(layers) if end is None else end
    if not 0 <= start <= end <= len(layers):
        raise ValueError(f"layer range [{start}, {end}) outside 0..{len(layers)}")
    fam = family_of_model(model)
    T = h.shape[1]
    masks: dict = {}
    for li in range(start, end):
        w = layer_window(fam, model.args, first_layer + li)
        if w not in masks:
            masks[w] = layer_mask(mask, T, w, fam.array_mask)
        layer = layers[li]
        if checkpoint:
            h = _checkpointed(layer)(h, masks[w])
        else:
            h = _call(layer, h, masks[w])
    return h


def _call(layer, h, mask):
    """`layer(h, mask, cache=None)`, through `cpu_kernels.block` where that supports the layer."""
    return cpu_kernels.block(layer, h, mask) if cpu_kernels.supports(layer) else layer(h, mask, cache=None)


def _checkpointed(layer):
    """Call `layer` under mx.checkpoint with its trainable params as explicit inputs."""
    def run(h, mask):
        def inner(params, x):
            layer.update(params)
            return _call(layer, x, mask)

        return mx.checkpoint(inner)(layer.trainable_parameters(), h)

    return run


def hidden_states(model, inputs: mx.array, mask: Mask = None, checkpoint: bool = False,
                  layers: Optional[tuple] = None) -> mx.array:
    """Final-norm hidden states of an mlx-lm model of a supported family.

    Args:
        inputs: [B, T] int32 token ids.
        mask: None/"causal" or an attention mask array (see `run_layers`).
        checkpoint: per-layer `mx.checkpoint`.
        layers: optional (start, end) to run only a range; the embedding is
            applied only when start == 0 and the final norm only when end is the
            last layer (otherwise `inputs` must already be [B, T, H]).
    Returns:
        [B, T, H].
    """
    n = num_layers(model)
    start, end = (0, n) if layers is None else layers
    end = n if end is None else end
    h = embed(model, inputs) if start == 0 else inputs
    h = run_layers(model, h, start, end, mask, checkpoint)
    return final_norm(model, h) if end == n else h
