"""Quantized vs dequantized (float32 dense) forward+backward step time.

Why: `load_model(..., dequantize=None)` defaults to dense float32 weights on
CPU because MLX's quantized-matmul backward is slow there. This measures it.

A step = cross-entropy loss of a [B, T] batch + gradients with respect to every
RMSNorm weight (all other weights frozen), so the backward pass runs through
every (quantized or dense) matmul with respect to its input, as LoRA training
does. The two variants alternate, after one warm-up step each; medians of wall
and process-CPU seconds are reported.

    .venv/bin/python benchmarks/bench_models_dequant.py --model smollm2-135m --seq 64 --repeats 5
"""

from __future__ import annotations

import argparse
import statistics
import time

import notme_mlx  # noqa: F401  (before mlx.core: the OpenBLAS shim on Linux, notme_mlx/cpu_blas.py)
import mlx.core as mx
import mlx.nn as nn


def make_step(model):
    model.freeze()
    for name, m in model.named_modules():
        if isinstance(m, nn.RMSNorm):
            m.unfreeze()

    def loss_fn(model, x, y):
        logits = model(x).astype(mx.float32)  # [B, T, V]
        return nn.losses.cross_entropy(logits, y).mean()

    vg = nn.value_and_grad(model, loss_fn)

    def step(x, y):
        loss, grads = vg(model, x, y)
        mx.eval(loss, grads)
        return loss.item()

    return step


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--seq", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=5)
    a = ap.parse_args()

    from notme_mlx.models import load_model

    steps, losses = {}, {}
    for deq in (False, True):
        model, tok, info = load_model(a.model, dequantize=deq)
        steps[deq] = make_step(model)
        if not deq and not info["quantization"]:
            raise SystemExit(f"{a.model} is not quantized; nothing to compare")
    mx.random.seed(0)
    ids = mx.random.randint(0, info["vocab_size"], (a.batch, a.seq + 1))
    x, y = ids[:, :-1], ids[:, 1:]
    for deq in (False, True):
        losses[deq] = steps[deq](x, y)  # warm-up
    wall = {False: [], True: []}
    cpu = {False: [], True: []}
    for _ in range(a.repeats):
        for deq in (False, True):
            t, c = time.perf_counter(), time.process_time()
            steps[deq](x, y)
            wall[deq].append(time.perf_counter() - t)
            cpu[deq].append(time.process_time() - c)
    print(f"model {a.model}  quantization {info['quantization']}  batch {a.batch}  seq {a.seq}  "
          f"repeats {a.repeats}  device {mx.default_device()}")
    print("| weights | median wall s/step | median CPU s/step | tokens/s (wall) | loss |")
    print("|---|---|---|---|---|")
    for deq in (False, True):
        w, c = statistics.median(wall[deq]), statistics.median(cpu[deq])
        label = "dense float32 (dequantize=True)" if deq else "quantized (dequantize=False)"
        print(f"| {label} | {w:.3f} | {c:.3f} | {a.batch * a.seq / w:.0f} | {losses[deq]:.4f} |")
    print(f"quantized / dense wall ratio: {statistics.median(wall[False]) / statistics.median(wall[True]):.2f}")


if __name__ == "__main__":
    main()
