"""Forward pass of mlx-lm llama-family models with an explicit attention mask.

Split into stages so pipeline-parallel workers can run a layer range:
`embed` -> `run_layers(start, end)` -> `final_norm`. `hidden_states` chains
them. Each layer is called as mlx-lm does: `layer(h, mask, cache=None)`.
"""

from __future__ import annotations

from typing import Optional, Union

import mlx.core as mx

Mask = Union[None, str, mx.array]


def _inner(model):
    return getattr(model, "model", model)


def num_layers(model) -> int:
    """Number of transformer layers."""
    return len(_inner(model).layers)


def embed(model, inputs: mx.array) -> mx.array:
    """Token embeddings. inputs [B, T] int32 -> [B, T, H]."""
    return _inner(model).embed_tokens(inputs)


def final_norm(model, h: mx.array) -> mx.array:
    """The model's final RMSNorm. [B, T, H] -> [B, T, H]."""
    return _inner(model).norm(h)


def _resolve_mask(mask: Mask, T: int) -> Mask:
    if mask is None:
        return "causal" if T > 1 else None
    return mask


def run_layers(model, h: mx.array, start: int = 0, end: Optional[int] = None,
               mask: Mask = None, checkpoint: bool = False) -> mx.array:
    """Run layers [start, end) on raw hidden states.

    Args:
        h: [B, T, H] (embedding output or a previous stage's output).
        mask: None (causal), "causal", or an additive/boolean array broadcastable
            to [B, heads, T, T] (e.g. the packed mask of `stream.collate`, [B, 1, T, T]).
        checkpoint: wrap each layer in `mx.checkpoint` (recompute in backward).
    Returns:
        [B, T, H] un-normalized hidden states after layer end-1.
    """
    layers = _inner(model).layers
    end = len(layers) if end is None else end
    if not 0 <= start <= end <= len(layers):
        raise ValueError(f"layer range [{start}, {end}) outside 0..{len(layers)}")
    m = _resolve_mask(mask, h.shape[1])
    for layer in layers[start:end]:
        if checkpoint:
            h = _checkpointed(layer)(h, m)
        else:
            h = layer(h, m, cache=None)
    return h


def _checkpointed(layer):
    """Call `layer` under mx.checkpoint with its trainable params as explicit inputs."""
    def run(h, mask):
        def inner(params, x):
            layer.update(params)
            return layer(x, mask, cache=None)

        return mx.checkpoint(inner)(layer.trainable_parameters(), h)

    return run


def hidden_states(model, inputs: mx.array, mask: Mask = None, checkpoint: bool = False,
                  layers: Optional[tuple] = None) -> mx.array:
    """Final-norm hidden states of an mlx-lm llama model.

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
