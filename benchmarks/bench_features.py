"""The cost of each trainer feature on the bench model (one function per feature).

Rows: penalty on/off, grad checkpointing on/off, dense vs 4-bit base, compiled vs not,
1 adapter vs a 4-adapter stack (tokens/s wall and per CPU second, median step, peak memory; same batches, variants alternating
--repeat times), the
padding share of bucketing / packing / mlx-lm's batching over one epoch, and the fused
loss head vs naive full logits (loss + grad w.r.t. hidden; `bench_loss.measure`) at
V in {32k, 49k, 128k}, small N/H to fit this CPU.

    python benchmarks/bench_features.py [--only penalty,loss,...] [--steps 3] [--warmup 1] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from notme_mlx.bench import features as F  # noqa: E402
from notme_mlx.bench.report import feature_table, machine_line  # noqa: E402
from notme_mlx.bench.runners import Settings, load  # noqa: E402
from notme_mlx.bench.suite import load_examples, resolve_model  # noqa: E402

STEP_FEATURES = {"penalty": F.penalty_cost, "checkpointing": F.checkpointing_cost, "quantized": F.quantized_cost,
                 "compile": F.compile_cost, "stack": F.stack_cost}


def fused_vs_naive(vocabs=(32768, 49152, 131072), n=256, h=256) -> list[dict]:
    """Fused chunked loss vs naive full logits: time and peak extra memory (bench_loss.measure)."""
    import bench_loss
    import mlx.core as mx

    rows = []
    for v in vocabs:
        h_, w, y, lab = bench_loss.inputs(n, h, v)
        for name, fn, chunk in (("naive logits", bench_loss.naive_token_loss, None),
                                ("fused chunked", bench_loss.fused_token_loss, 8192)):
            peak, dt, loss, _, _ = bench_loss.measure(fn, h_, w, y, lab, chunk)
            rows.append({"feature": f"loss head V={v}", "variant": name, "median_step_s": dt, "peak_memory": peak,
                         "padding_fraction": None, "note": f"N={n} H={h}, time = 1 loss+grad (s), mem = peak extra"})
        del h_, w
        mx.clear_cache()
    return rows


def run(only=None, steps=3, warmup=1, batch=4, seq=256, model=None, repeat=2) -> list[dict]:
    path = resolve_model(model)
    _, tok, _ = load(path)
    examples = load_examples(tok, None, seq, 400)
    s = Settings(batch=batch, seq=seq, steps=steps, warmup=warmup)
    names = only or ["penalty", "loss", "batching", "checkpointing", "quantized", "compile", "stack"]
    rows = []
    for name in names:
        print(f"  {name} ...", file=sys.stderr, flush=True)
        if name == "loss":
            rows += fused_vs_naive()
        elif name == "batching":
            rows += F.batching_padding(examples, batch, seq)
        else:
            rows += STEP_FEATURES[name](path, examples, s, repeat=repeat)
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", default=None, help="comma list of: penalty,loss,batching,checkpointing,quantized,compile,stack")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=2, help="alternating runs per variant")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--model", default=None)
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    rows = run(a.only.split(",") if a.only else None, a.steps, a.warmup, a.batch, a.seq, a.model, a.repeat)
    from notme_mlx.bench.machine import machine_info

    print(machine_line(machine_info()))
    print(feature_table(rows))
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=2, default=str))


if __name__ == "__main__":
    main()
