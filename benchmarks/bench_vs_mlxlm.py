"""notme's trainer vs mlx-lm's LoRA trainer: tokens/s, peak memory, padding, penalty cost.

Same model (the cached `bench-s` random llama: 4 layers, 256 dims, vocab 8192), same
examples, LoRA (rank 8, alpha 16, all 7 projections, all layers), AdamW lr 1e-4 and
sequence cap; sides alternate --repeat times. Chat-like synthetic data by default;
--equal-length uses rows of exactly --seq tokens, all learned (where batching cannot help).

    python benchmarks/bench_vs_mlxlm.py [--model bench-s] [--steps 4] [--warmup 1] [--repeat 3]
        [--batch 4] [--seq 256] [--equal-length] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from notme_mlx.bench.compare import SIDES, compare
from notme_mlx.bench.data import equal_length_examples
from notme_mlx.bench.report import compare_table, machine_line
from notme_mlx.bench.runners import Settings, load
from notme_mlx.bench.suite import load_examples, resolve_model


def run(model=None, steps=4, warmup=1, repeat=3, batch=4, seq=256, rank=8, equal_length=False, n_examples=400,
        data=None) -> dict:
    path = resolve_model(model)
    m, tok = load(path)
    if equal_length:
        examples = equal_length_examples(max(n_examples // 4, batch * (steps + warmup)), seq, m.args.vocab_size)
        sides = ("ours", "mlx-lm")
    else:
        examples = load_examples(tok, data, seq, n_examples)
        sides = SIDES
    s = Settings(batch=batch, seq=seq, rank=rank, alpha=2.0 * rank, steps=steps, warmup=warmup)

    def on_run(side, r, summ):
        print(f"  repeat {r + 1} {side}: {summ['tokens_per_sec']:.1f} tok/s, median step {summ['median_step_s']:.2f} s, "
              f"peak {summ['peak_memory'] / 2**20:.0f} MiB", file=sys.stderr, flush=True)

    res = compare(path, examples, s, repeat=repeat, sides=sides, on_run=on_run)
    res["data"]["kind"] = "equal-length" if equal_length else ("file" if data else "synthetic chat-like")
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None)
    ap.add_argument("--data", default=None)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--equal-length", action="store_true")
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    res = run(a.model, a.steps, a.warmup, a.repeat, a.batch, a.seq, a.rank, a.equal_length, data=a.data)
    print(machine_line(res["machine"]))
    print(f"data: {res['data']['kind']}, {res['data']['examples']} examples, settings "
          f"{json.dumps({k: v for k, v in res['settings'].items() if k in ('batch', 'seq', 'rank', 'steps', 'warmup')})}")
    print(compare_table(res))
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=2, default=str))


if __name__ == "__main__":
    main()
