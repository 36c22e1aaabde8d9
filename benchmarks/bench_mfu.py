"""MFU of a training step: achieved model FLOP/s (6·N·tokens + 12·L·H·ctx·tokens) over the
measured float32 matmul peak of MLX (1024^2) and of NumPy (2048^2) on this machine.

    python benchmarks/bench_mfu.py [--steps 3] [--warmup 1] [--batch 4] [--seq 256] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from notme_mlx.bench.machine import machine_info
from notme_mlx.bench.mfu import mfu
from notme_mlx.bench.report import machine_line, mfu_table
from notme_mlx.bench.runners import Settings, load
from notme_mlx.bench.suite import load_examples, resolve_model


def run(steps=3, warmup=1, batch=4, seq=256, model=None) -> list[dict]:
    path = resolve_model(model)
    _, tok = load(path)
    return mfu(path, load_examples(tok, None, seq, 400), Settings(batch=batch, seq=seq, steps=steps, warmup=warmup))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--model", default=None)
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    rows = run(a.steps, a.warmup, a.batch, a.seq, a.model)
    print(machine_line(machine_info()))
    print(mfu_table(rows))
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=2, default=str))


if __name__ == "__main__":
    main()
