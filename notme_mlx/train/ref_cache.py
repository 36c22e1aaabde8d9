"""DPO reference log-probs, computed once with the stack minus the trained layer and cached.

DPO needs log π_ref(y|x) for every pair. The reference here is the model the Mode
layer is trained on: base + every lower layer, i.e. the current model with the
trained adapter switched off (scale 0). We compute it once, before (or during)
the preference phase, in the SAME model object — never a second model in memory —
and write it to a safetensors file:

    chosen [P] float32, rejected [P] float32   summed reply log-probs per pair
    metadata: pairs_sha256 (token ids + labels), n_pairs, excluded adapters, adapters used

`load_reference_logprobs` refuses a cache whose pairs do not match (the data changed). The DPO
phase (`train.pref_phase.dpo_loss`) computes its loss on top of the cached values.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import mlx.core as mx
import numpy as np

from ..errors import NotmeError
from ..lora import adapter_names, lora_modules
from ..loss import output_head, sequence_logprobs
from .checkpoint import save_arrays
from .forward import hidden_states


def pairs_hash(pairs) -> str:
    """sha256 over every (chosen, rejected) pair's token ids and labels (cache identity)."""
    h = hashlib.sha256()
    for two in pairs:
        for ex in two:
            h.update(np.asarray(ex.tokens, np.int64).tobytes())
            h.update(b"|")
            h.update(np.asarray(ex.labels, np.int64).tobytes())
            h.update(b";")
    return h.hexdigest()


def reply_rows(examples, pad_id: int = 0):
    """TokenizedExamples -> inputs, targets, mask [B, T] (mask = reply tokens, label +1)."""
    T = max(len(e.tokens) - 1 for e in examples)
    inp = np.full((len(examples), T), pad_id, np.int32)
    tgt, msk = inp.copy(), np.zeros((len(examples), T), np.float32)
    for b, e in enumerate(examples):
        n = len(e.tokens) - 1
        inp[b, :n], tgt[b, :n] = e.tokens[:-1], e.tokens[1:]
        msk[b, :n] = np.asarray(e.labels[1:]) == 1
    return mx.array(inp), mx.array(tgt), mx.array(msk)


def reference_logprobs(model, pairs, exclude=(), batch_size: int = 8, chunk_size: int = 8192):
    """Summed reply log-probs of chosen and rejected under the model minus `exclude` adapters.

    Args:
        model: mlx-lm model with MultiLoRALinear adapters (the stack).
        pairs: [(chosen, rejected)] TokenizedExample-like (tokens, labels; reply labelled +1).
        exclude: adapter names switched off (scale 0) for the computation, restored after.
    Returns:
        (chosen [P], rejected [P]) float32 numpy arrays.
    """
    exclude = [exclude] if isinstance(exclude, str) else list(exclude)
    missing = [n for n in exclude if n not in adapter_names(model)]
    if missing:
        raise NotmeError(f"reference log-probs: no adapter named {missing[0]!r} to leave out "
                         f"(have: {', '.join(adapter_names(model)) or 'none'})")
    saved = [(a, a.scale) for _, m in lora_modules(model) for n, a in m.adapters.items() if n in exclude]
    out_c, out_r = [], []
    try:
        for a, _ in saved:
            a.scale = 0.0
        for i in range(0, len(pairs), batch_size):
            chunk = pairs[i:i + batch_size]
            rows = [p[0] for p in chunk] + [p[1] for p in chunk]
            inp, tgt, msk = reply_rows(rows)
            h = hidden_states(model, inp)
            lp = mx.stop_gradient(sequence_logprobs(h, output_head(model), tgt, msk, chunk_size))
            mx.eval(lp)
            lp = np.array(lp, np.float32)
            out_c.append(lp[:len(chunk)])
            out_r.append(lp[len(chunk):])
    finally:
        for a, s in saved:
            a.scale = s
    return np.concatenate(out_c), np.concatenate(out_r)


def compute_reference_logprobs(model, pairs, out_path: str | Path, exclude=(), batch_size: int = 8,
                               chunk_size: int = 8192, meta: dict | None = None) -> Path:
    """Compute `reference_logprobs` once and save them (safetensors, atomic). Returns the path."""
    c, r = reference_logprobs(model, pairs, exclude, batch_size, chunk_size)
    exclude = [exclude] if isinstance(exclude, str) else list(exclude)
    md = {"pairs_sha256": pairs_hash(pairs), "n_pairs": str(len(pairs)),
          "excluded": json.dumps(exclude), "adapters": json.dumps([n for n in adapter_names(model) if n not in exclude]),
          "meta": json.dumps(meta or {})}
    out_path = Path(out_path)
    save_arrays(out_path, {"chosen": mx.array(c), "rejected": mx.array(r)}, metadata=md)
    return out_path


def load_reference_logprobs(path: str | Path, pairs=None):
    """Read a cache -> (chosen [P], rejected [P] mx arrays, metadata); checks it matches `pairs`."""
    path = Path(path)
    if not path.exists():
        raise NotmeError(f"{path}: no reference log-prob cache; compute it with compute_reference_logprobs")
    arrs, md = mx.load(str(path), return_metadata=True)
    if pairs is not None and md.get("pairs_sha256") != pairs_hash(pairs):
        raise NotmeError(f"{path}: reference log-probs were computed for other pairs "
                         f"({md.get('n_pairs')} pairs, data or tokenizer changed) — delete it to recompute")
    return arrs["chosen"], arrs["rejected"], md
