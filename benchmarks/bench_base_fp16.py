"""Our trainer with the base's block linears stored in float32 vs float16 (computed in float32).

`BENCH_DTYPES=float16,bfloat16` compares other storages (the first is the reference).
Each repeat runs the two as two `notme_mlx.bench.worker` processes at the same time (one
OpenBLAS thread each on 2 cores), same examples, LoRA, seed and steps, and prints each one's
MLX training peak, max RSS, tokens per CPU second, tokens/s and the last step's loss.
Examples come from `notme data build` output (see `notme bench --data`).

    nice -n 5 .venv/bin/python benchmarks/bench_base_fp16.py --data DATA_DIR --steps 4 --warmup 1 --repeat 4
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import notme_mlx  # noqa: F401  (before mlx.core: the OpenBLAS shim on Linux)
from notme_mlx.bench.runners import Settings
from notme_mlx.bench.suite import load_examples, resolve_model, tokenizer
from notme_mlx.bench.worker import write_examples

DTYPES = tuple(os.environ.get("BENCH_DTYPES", "float32,float16").split(","))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--data", required=True, help="folder with train.jsonl (notme data build)")
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--batch-tokens", type=int, default=512)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=4)
    a = ap.parse_args()
    path = resolve_model(a.model)
    s = Settings(seq=a.seq, steps=a.steps, warmup=a.warmup, batch_tokens=a.batch_tokens)
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1")
    runs: dict[str, list[dict]] = {dt: [] for dt in DTYPES}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        write_examples(work / "examples.jsonl", load_examples(tokenizer(path), a.data, a.seq, 400))
        for r in range(a.repeat):
            procs = []
            for dt in DTYPES if r % 2 == 0 else DTYPES[::-1]:
                spec = {"side": "ours", "model": str(path), "dequantize": None, "base_dtype": dt,
                        "examples": str(work / "examples.jsonl"), "settings": dataclasses.asdict(s)}
                sp, op = work / f"{dt}-{r}.spec.json", work / f"{dt}-{r}.out.json"
                sp.write_text(json.dumps(spec))
                procs.append((dt, op, subprocess.Popen([sys.executable, "-m", "notme_mlx.bench.worker", str(sp), str(op)],
                                                       env=env)))
            for dt, op, p in procs:
                if p.wait() != 0:
                    sys.exit(f"repeat {r} {dt}: worker failed (exit {p.returncode})")
                o = json.loads(op.read_text())
                runs[dt].append(o)
                print(f"repeat {r} {dt}: MLX peak {o['peak_memory'] / 2**20:.0f} MiB, max RSS {o['max_rss'] / 2**20:.0f} "
                      f"MiB, {o['tokens_per_cpu_sec']:.1f} tok/CPU-s, {o['tokens_per_sec']:.1f} tok/s, "
                      f"last loss {o['final_loss']:.6f}", flush=True)
    base = DTYPES[0]
    for dt in DTYPES[1:]:
        ratio = [h["tokens_per_cpu_sec"] / f["tokens_per_cpu_sec"] for f, h in zip(runs[base], runs[dt])]
        peak = [h["peak_memory"] / f["peak_memory"] for f, h in zip(runs[base], runs[dt])]
        print(f"{dt}/{base} per repeat: tokens per CPU second {', '.join(f'{x:.3f}' for x in ratio)} "
              f"(median {statistics.median(ratio):.3f}); MLX peak median {statistics.median(peak):.3f}")


if __name__ == "__main__":
    main()
