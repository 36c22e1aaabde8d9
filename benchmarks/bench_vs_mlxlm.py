"""notme's trainer vs mlx-lm's LoRA trainer: tokens/s, tokens per CPU second, per-process memory.

The script form of `notme bench` (same `notme_mlx.bench.compare.compare`): every run is a fresh
process, the sides alternate --repeat times, the model is loaded the way `notme train` loads it
(SmolLM2-135M, the recipe default, dense float32 on a CPU). Chat data from `notme data build`
with --data, synthetic chat-like data otherwise; --equal-length uses rows of exactly --seq
tokens, all learned (where batching cannot help).

    python benchmarks/bench_vs_mlxlm.py [--model smollm2-135m] [--data data/] [--steps 2] [--warmup 1]
        [--repeat 5] [--batch 4] [--batch-tokens 512] [--seq 256] [--parallel 1] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import notme_mlx  # noqa: F401  (before mlx.core: the OpenBLAS shim on Linux)
from notme_mlx.bench.compare import SIDES, compare, model_args
from notme_mlx.bench.data import equal_length_examples
from notme_mlx.bench.report import compare_table, machine_line
from notme_mlx.bench.runners import Settings
from notme_mlx.bench.suite import load_examples, resolve_model, tokenizer


def run(model=None, steps=2, warmup=1, repeat=5, batch=4, seq=256, rank=8, equal_length=False, n_examples=400,
        data=None, batch_tokens=None, parallel=1, grad_checkpoint=False) -> dict:
    path = resolve_model(model)
    if equal_length:
        examples = equal_length_examples(max(n_examples // 4, batch * (steps + warmup)), seq,
                                         model_args(path).vocab_size)
        sides = ("ours", "mlx-lm")
    else:
        examples = load_examples(tokenizer(path), data, seq, n_examples)
        sides = SIDES
    s = Settings(batch=batch, seq=seq, rank=rank, alpha=2.0 * rank, steps=steps, warmup=warmup,
                 batch_tokens=batch_tokens, grad_checkpoint=grad_checkpoint)

    def on_run(side, r, summ):
        print(f"  repeat {r + 1} {side}: {summ['tokens_per_sec']:.1f} tok/s, {summ['tokens_per_cpu_sec']:.1f} tok/CPU-s, "
              f"median step {summ['median_step_s']:.2f} s, MLX peak {summ['peak_memory'] / 2**20:.0f} MiB, "
              f"max RSS {summ['max_rss'] / 2**20:.0f} MiB", file=sys.stderr, flush=True)

    res = compare(path, examples, s, repeat=repeat, sides=sides, on_run=on_run, parallel=parallel)
    res["data"]["kind"] = "equal-length" if equal_length else (f"file {data}" if data else "synthetic chat-like")
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None)
    ap.add_argument("--data", default=None)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--batch-tokens", type=int, default=None)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--parallel", type=int, default=1)
    ap.add_argument("--grad-checkpoint", action="store_true")
    ap.add_argument("--equal-length", action="store_true")
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    res = run(a.model, a.steps, a.warmup, a.repeat, a.batch, a.seq, a.rank, a.equal_length, data=a.data,
              batch_tokens=a.batch_tokens, parallel=a.parallel, grad_checkpoint=a.grad_checkpoint)
    print(machine_line(res["machine"]))
    print(f"data: {res['data']['kind']}, {res['data']['examples']} examples, settings "
          f"{json.dumps({k: v for k, v in res['settings'].items() if k in ('batch', 'batch_tokens', 'seq', 'rank', 'steps', 'warmup')})}")
    print(compare_table(res))
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=2, default=str))


if __name__ == "__main__":
    main()
