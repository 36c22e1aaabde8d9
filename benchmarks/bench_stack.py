"""Step time: one adapter through MultiLoRALinear vs mlx-lm's LoRALinear vs a 4-layer stack.

One training step = value_and_grad of token cross-entropy w.r.t. the trainable adapter
+ AdamW update + eval, on a random small llama (no downloads). Variants are timed
ALTERNATING (one step of each per round) so load changes on the shared CPU hit all
of them alike; we report the median over rounds after warm-up.

    python benchmarks/bench_stack.py                      # default: 4 x 256, V 1024, 4x128 tokens
    python benchmarks/bench_stack.py --rounds 30 --compile

Variants:
  mlx-lm      mlx_lm.tuner.utils.linear_to_lora_layers (LoRALinear), rank 8
  multi-1     notme_mlx.lora.apply_lora, one adapter (fast path), rank 8
  stack-4     domain/use/mode frozen (rank 8 each) + identity trainable (rank 8)
  stack-4-fused  the same, lower three fused into the base first (load_for_training(fuse_lower=True))
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import notme_mlx  # noqa: F401  (before mlx.core: the OpenBLAS shim on Linux, notme_mlx/cpu_blas.py)
import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def build(model_dir, variant, rank):
    from mlx_lm import load

    from notme_mlx.lora import LoRAConfig, apply_lora
    from notme_mlx.models.tiny import perturb_adapters

    model, _ = load(str(model_dir))
    model.freeze()
    if variant == "mlx-lm":
        from mlx_lm.tuner.utils import linear_to_lora_layers

        linear_to_lora_layers(model, len(model.model.layers),
                              {"rank": rank, "scale": 2.0, "dropout": 0.0, "keys": [f"self_attn.{k}" for k in TARGETS[:4]]
                               + [f"mlp.{k}" for k in TARGETS[4:]]})
    else:
        cfg = LoRAConfig(rank=rank, alpha=2.0 * rank, targets=TARGETS)
        names = ["domain", "use", "mode", "identity"] if variant.startswith("stack-4") else ["identity"]
        for n in names:
            apply_lora(model, cfg, name=n, trainable=(n == names[-1]))
        perturb_adapters(model, None, 0.01, seed=1)  # non-zero frozen layers, as after training
        if variant == "stack-4-fused":  # load_for_training(fuse_lower=True): lower layers merged into W
            from notme_mlx.lora import fuse, remove_adapter

            remove_adapter(model, "identity")
            fuse(model)
            apply_lora(model, cfg, name="identity", trainable=True)
    return model


def make_step(model, do_compile):
    opt = optim.AdamW(learning_rate=1e-4)

    def loss_fn(m, x, y):
        return nn.losses.cross_entropy(m(x), y, reduction="mean")

    vg = nn.value_and_grad(model, loss_fn)

    def step(x, y):
        loss, g = vg(model, x, y)
        opt.update(model, g)
        return loss

    if do_compile:
        state = [model.state, opt.state]
        step = mx.compile(step, inputs=state, outputs=state)
    return step, opt


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--vocab", type=int, default=1024)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)

    from notme_mlx.lora import count_parameters
    from notme_mlx.models.tiny import build_tiny_llama

    tmp = Path(tempfile.mkdtemp())
    d = build_tiny_llama(tmp / "m", vocab_size=a.vocab, num_hidden_layers=a.layers, hidden_size=a.hidden,
                         intermediate_size=2 * a.hidden, num_attention_heads=4, num_key_value_heads=2)
    variants = ["mlx-lm", "multi-1", "stack-4", "stack-4-fused"]
    models = {v: build(d, v, a.rank) for v in variants}
    steps, opts = {}, {}
    for v, m in models.items():
        steps[v], opts[v] = make_step(m, a.compile)
    rng = np.random.default_rng(0)
    V = models["mlx-lm"].args.vocab_size
    x = mx.array(rng.integers(0, V, (a.batch, a.seq)), dtype=mx.int32)
    y = mx.array(rng.integers(0, V, (a.batch, a.seq)), dtype=mx.int32)
    times = {v: [] for v in variants}
    for r in range(a.warmup + a.rounds):
        order = variants if r % 2 == 0 else variants[::-1]
        for v in order:
            t0 = time.perf_counter()
            loss = steps[v](x, y)
            mx.eval(loss, models[v].parameters(), opts[v].state)
            dt = time.perf_counter() - t0
            if r >= a.warmup:
                times[v].append(dt)
    base = statistics.median(times["mlx-lm"])
    rows = []
    for v in variants:
        med = statistics.median(times[v])
        rows.append({"variant": v, "trainable": count_parameters(models[v].trainable_parameters()),
                     "median_s": med, "min_s": min(times[v]), "vs_mlx_lm": med / base - 1.0})
    print(f"# {a.layers} x {a.hidden}, V {V}, batch {a.batch} x seq {a.seq}, rank {a.rank}, "
          f"compile={a.compile}, {a.rounds} rounds alternating")
    print("| variant | trainable params | median step (ms) | min (ms) | vs mlx-lm |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['variant']} | {r['trainable']:,} | {1e3 * r['median_s']:.1f} | {1e3 * r['min_s']:.1f} | "
              f"{100 * r['vs_mlx_lm']:+.1f}% |")
    if a.json:
        Path(a.json).write_text(json.dumps({"args": vars(a), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
