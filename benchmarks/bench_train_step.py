"""Training-step throughput of notme's compiled step (random weights, no downloads).

Shapes: "tiny" (2 layers, 64 dims, vocab 512: the unit-test model) and "smollm2" (the
SmolLM2-135M architecture: 30 layers, 576 dims, 9/3 heads, vocab 49152) with the
quickstart's LoRA (last 2 blocks, q/v/o/down, rank 8). Prints a Markdown table.

    python benchmarks/bench_train_step.py [--shapes tiny,smollm2] [--steps 5] [--seq 128] [--batch 2]
"""

from __future__ import annotations

import argparse
import time
from functools import partial

import notme_mlx  # noqa: F401  (before mlx.core: the OpenBLAS shim on Linux, notme_mlx/cpu_blas.py)
import mlx.core as mx
import mlx.optimizers as optim
import numpy as np
from mlx_lm.models import llama

from notme_mlx.lora import apply_lora
from notme_mlx.train.trainer import lora_config
from notme_mlx.recipe import load_recipe
from notme_mlx.train.stream import supervised
from notme_mlx.train.loop import default_loss, local_step, make_update

SHAPES = {
    "tiny": dict(hidden_size=64, num_hidden_layers=2, intermediate_size=128, num_attention_heads=4,
                 num_key_value_heads=2, vocab_size=512),
    "smollm2": dict(hidden_size=576, num_hidden_layers=30, intermediate_size=1536, num_attention_heads=9,
                    num_key_value_heads=3, vocab_size=49152),
}


def bench(shape: str, steps: int, seq: int, batch: int, lora: dict, compile: bool = True, select: bool = True) -> dict:
    args = llama.ModelArgs(model_type="llama", rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=True,
                           **SHAPES[shape])
    mx.random.seed(0)
    model = llama.Model(args)
    mx.eval(model.parameters())
    n = apply_lora(model, lora_config(load_recipe(None, lora).lora))
    rng = np.random.default_rng(0)
    toks = mx.array(rng.integers(0, args.vocab_size, (batch, seq + 1)), mx.int32)
    labels = mx.array(np.where(rng.random((batch, seq)) < 0.5, 1, 0), mx.int32)
    b = {"inputs": toks[:, :-1], "targets": toks[:, 1:], "labels": labels}
    if select:
        b.update(supervised(np.array(toks[:, 1:]), np.array(labels)))
    nl = mx.array(float(np.array(labels).astype(bool).sum()))
    step = local_step(model, partial(default_loss, penalty_weight=10.0, chunk_size=8192), compile=compile)
    update = make_update(model, optim.AdamW(1e-4), 1.0, compile=compile)
    mx.reset_peak_memory()
    times = []
    for _ in range(steps + 1):
        t = time.perf_counter()
        loss, grads, _ = step([b], nl, nl)
        ok = update(grads, loss, step.grad_norm(grads))
        mx.eval(loss, ok, model.state)
        times.append(time.perf_counter() - t)
    dt = float(np.median(times[1:]))  # the first includes compilation
    return {"shape": shape, "lora_params": n, "batch x seq": f"{batch}x{seq}", "step_s": dt,
            "tok_s": batch * seq / dt, "first_step_s": times[0], "peak_mem_gb": mx.get_peak_memory() / 1e9}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shapes", default="tiny,smollm2")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--all-layers", action="store_true", help="LoRA on every block and projection (Mac default)")
    ap.add_argument("--no-compile", action="store_true", help="run the step without mx.compile")
    ap.add_argument("--no-select", action="store_true", help="vocabulary pass over every position, not only labelled ones")
    a = ap.parse_args()
    lora = {"lora.rank": 8, "lora.alpha": 16}
    if not a.all_layers:
        lora.update({"lora.num_layers": 2, "lora.targets": ["q_proj", "v_proj", "o_proj", "down_proj"]})
    rows = [bench(s, a.steps, a.seq, a.batch, lora, not a.no_compile, not a.no_select) for s in a.shapes.split(",")]
    print("| shape | LoRA params | batch x seq | step (s) | tok/s | first step (s) | peak mem (GB) |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['shape']} | {r['lora_params']:,} | {r['batch x seq']} | {r['step_s']:.3f} | {r['tok_s']:.0f} "
              f"| {r['first_step_s']:.2f} | {r['peak_mem_gb']:.2f} |")


if __name__ == "__main__":
    main()
