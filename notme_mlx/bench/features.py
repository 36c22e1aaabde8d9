"""The cost of each trainer feature: one function per feature, each returning table rows.

Every training-step row is `runners.run_ours` on the bench model with one switch flipped
(same examples, same seed, so the same batches); the variants of a feature alternate
`repeat` times (rotating order) and each row gives the median tokens/s (wall and per CPU
second), the median step time and the max peak memory. `batching_padding` needs no
training: it lays out one epoch with each batching scheme and counts pad positions.
"""

from __future__ import annotations

import dataclasses

import mlx.nn as nn
import numpy as np
from mlx_lm.tuner.trainer import iterate_batches

from ..train.stream import BatchStream
from .compare import penalty_off
from .runners import Settings, load, run_ours


def _ours(model_path, examples, s: Settings, quantize: dict | None = None, lora_names=("default",)) -> dict:
    model, tok, _ = load(model_path)
    if quantize:
        nn.quantize(model, **quantize)
    return run_ours(model, examples, s, pad_id=tok.pad_token_id or 0, lora_names=lora_names).summary()


def _alternate(feature: str, variants: list[tuple[str, dict]], model_path, examples, s: Settings,
               repeat: int) -> list[dict]:
    """Run each variant (name, kwargs for `_ours`) `repeat` times, rotating the order; one row per variant."""
    runs: dict[str, list[dict]] = {v: [] for v, _ in variants}
    for r in range(repeat):
        for name, kw in variants[r % len(variants):] + variants[:r % len(variants)]:
            kw = dict(kw)
            ex = kw.pop("examples", examples)
            runs[name].append(_ours(model_path, ex, kw.pop("settings", s), **kw))
    rows = []
    for name, _ in variants:
        rs = runs[name]
        rows.append({"feature": feature, "variant": name, "repeats": len(rs),
                     "tokens_per_sec": float(np.median([x["tokens_per_sec"] for x in rs])),
                     "tokens_per_cpu_sec": float(np.median([x["tokens_per_cpu_sec"] for x in rs])),
                     "median_step_s": float(np.median([x["median_step_s"] for x in rs])),
                     "peak_memory": int(max(x["peak_memory"] for x in rs)),
                     "padding_fraction": float(np.median([x["padding_fraction"] for x in rs]))})
    return rows


def penalty_cost(model_path, examples, s: Settings, repeat: int = 2) -> list[dict]:
    """Penalty on (lambda on the -1 tokens) vs off (same tokens as +1, lambda 0)."""
    rows = _alternate("penalty", [("off (lambda 0)", {"examples": penalty_off(examples),
                                                      "settings": dataclasses.replace(s, penalty_weight=0.0)}),
                                  (f"on (lambda {s.penalty_weight:g})", {})], model_path, examples, s, repeat)
    rows[1]["overhead"] = rows[0]["tokens_per_sec"] / rows[1]["tokens_per_sec"] - 1
    rows[1]["overhead_cpu"] = rows[0]["tokens_per_cpu_sec"] / rows[1]["tokens_per_cpu_sec"] - 1
    return rows


def checkpointing_cost(model_path, examples, s: Settings, repeat: int = 2) -> list[dict]:
    """Per-layer gradient checkpointing off vs on."""
    return _alternate("grad checkpointing", [(v, {"settings": dataclasses.replace(s, grad_checkpoint=v == "on")})
                                             for v in ("off", "on")], model_path, examples, s, repeat)


def quantized_cost(model_path, examples, s: Settings, repeat: int = 2, bits: int = 4, group_size: int = 64) -> list[dict]:
    """Dense float32 base vs an MLX-quantized base (QLoRA), same LoRA."""
    return _alternate("base weights", [("dense fp32", {}),
                                       (f"quantized {bits}-bit g{group_size}",
                                        {"quantize": {"bits": bits, "group_size": group_size}})],
                      model_path, examples, s, repeat)


def compile_cost(model_path, examples, s: Settings, repeat: int = 2) -> list[dict]:
    """mx.compile'd step vs the same step uncompiled."""
    return _alternate("compile", [(v, {"settings": dataclasses.replace(s, compile=v == "compiled")})
                                  for v in ("compiled", "not compiled")], model_path, examples, s, repeat)


def stack_cost(model_path, examples, s: Settings, repeat: int = 2) -> list[dict]:
    """One trainable adapter vs a stack of 3 frozen adapters + 1 trainable on every target linear."""
    return _alternate("adapters", [("1 (trained)", {}),
                                   ("4-layer stack (3 frozen + 1 trained)",
                                    {"lora_names": ("base", "domain", "persona", "default")})],
                      model_path, examples, s, repeat)


def batching_padding(examples, batch: int, seq: int, seed: int = 0) -> list[dict]:
    """Pad share and rows per epoch: notme bucketing, notme packing, mlx-lm's iterate_batches.

    Counts real (input, target) pairs = L-1 per example and pad positions of each laid-out batch.
    """
    lengths = [len(e.tokens) - 1 for e in examples]
    rows = []
    for mode in ("bucket", "pack"):
        st = BatchStream(examples, batch, seed, batching=mode, max_len=seq)
        real = pad = nb = nrows = 0
        for rows_idx in st.plan(0):
            b = _collate_counts(lengths, rows_idx, 32, seq if mode == "pack" else None)
            real, pad, nb, nrows = real + b[0], pad + b[1], nb + 1, nrows + len(rows_idx)
        rows.append({"feature": "batching", "variant": f"notme {mode}", "padding_fraction": pad / (real + pad),
                     "batches_per_epoch": nb, "rows": nrows, "tokens": real})
    data = [(list(e.tokens), 0) for e in examples]
    real = pad = nb = 0
    for arr, lens in iterate_batches(data, batch, seq, loop=False, seed=seed):
        w = arr.shape[1] - 1
        L = np.minimum(np.array(lens)[:, 1], w + 1) - 1
        real, pad, nb = real + int(L.sum()), pad + int(len(L) * w - L.sum()), nb + 1
    rows.append({"feature": "batching", "variant": "mlx-lm iterate_batches", "padding_fraction": pad / (real + pad),
                 "batches_per_epoch": nb, "rows": nb * batch, "tokens": real,
                 "note": "drops the last partial batch" if real < sum(lengths) else ""})
    return rows


def _collate_counts(lengths, rows, pad_multiple, max_len):
    """(real, pad) of one batch as `stream.collate` lays it out (without building arrays)."""
    per_row = [sum(lengths[i] for i in r) for r in rows]
    T = -(-max(per_row) // pad_multiple) * pad_multiple
    if max_len is not None:
        T = min(T, max(max_len, max(per_row)))
    real = sum(per_row)
    return real, len(rows) * T - real
