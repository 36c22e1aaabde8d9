"""MLX on Linux CPU: the wheel's reference BLAS vs numpy's OpenBLAS through notme's shim, side by side.

Each workload runs in two fresh interpreters (NOTME_BLAS=off, then auto), alternating, `--repeat`
times; the table gives medians and the ratio. Workloads (random weights, no downloads):
  gemm      1024x1024x1024 float32 matmul, GFLOP/s
  generate  SmolLM2-135M architecture, batch 8, 16-token prompt, 32 new tokens (KV cache), tok/s
  train     the same architecture, one compiled LoRA step (quickstart LoRA), batch 2 x 128, tok/s

    python benchmarks/bench_blas.py [--repeat 2] [--workloads gemm,generate,train]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _smollm2_arch():
    import mlx.core as mx
    from mlx_lm.models import llama

    args = llama.ModelArgs(model_type="llama", rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=True,
                           hidden_size=576, num_hidden_layers=30, intermediate_size=1536, num_attention_heads=9,
                           num_key_value_heads=3, vocab_size=49152)
    mx.random.seed(0)
    model = llama.Model(args)
    mx.eval(model.parameters())
    return model, args


def inner(workload: str) -> dict:
    import notme_mlx
    import mlx.core as mx
    import numpy as np

    st = notme_mlx.cpu_blas.status()
    if workload == "gemm":
        a = mx.random.normal((1024, 1024))
        mx.eval(a @ a)
        t = time.perf_counter()
        for _ in range(5):
            mx.eval(a @ a)
        dt = (time.perf_counter() - t) / 5
        return {"blas": st, "value": 2 * 1024 ** 3 / dt / 1e9, "unit": "GFLOP/s"}
    if workload == "generate":
        from mlx_lm.models.cache import make_prompt_cache

        model, args = _smollm2_arch()
        rng = np.random.default_rng(0)
        prompt = mx.array(rng.integers(0, args.vocab_size, (8, 16)), mx.int32)
        t = time.perf_counter()
        cache = make_prompt_cache(model)
        logits = model(prompt, cache=cache)
        for _ in range(32):
            tok = mx.argmax(logits[:, -1:, :], axis=-1)
            logits = model(tok, cache=cache)
            mx.eval(logits)
        dt = time.perf_counter() - t
        return {"blas": st, "value": 8 * 32 / dt, "unit": "tok/s"}
    if workload == "train":
        sys.path.insert(0, str(HERE))
        import bench_train_step

        r = bench_train_step.bench("smollm2", steps=2, seq=128, batch=2,
                                   lora={"lora.rank": 8, "lora.alpha": 16, "lora.num_layers": 2,
                                         "lora.targets": ["q_proj", "v_proj", "o_proj", "down_proj"]})
        return {"blas": st, "value": r["tok_s"], "unit": "tok/s"}
    raise SystemExit(f"unknown workload {workload}")


def run(workloads, repeat: int) -> list[dict]:
    rows = []
    for w in workloads:
        vals: dict[str, list[float]] = {"off": [], "auto": []}
        unit, lib = "", None
        for _ in range(repeat):
            for mode in ("off", "auto"):
                env = dict(os.environ, NOTME_BLAS=mode)
                r = subprocess.run([sys.executable, __file__, "--inner", w], capture_output=True, text=True, env=env)
                if r.returncode != 0:
                    raise SystemExit(f"{w} ({mode}) failed: {r.stderr.strip().splitlines()[-1:]}")
                out = json.loads(r.stdout.strip().splitlines()[-1])
                if mode == "auto" and not out["blas"]["active"]:
                    raise SystemExit(f"shim not active: {out['blas']['reason']}")
                vals[mode].append(out["value"])
                unit = out["unit"]
                lib = out["blas"]["library"] or lib
                print(f"{w} {mode}: {out['value']:.2f} {unit}", file=sys.stderr, flush=True)
        off, auto = statistics.median(vals["off"]), statistics.median(vals["auto"])
        rows.append({"workload": w, "unit": unit, "reference": off, "openblas": auto, "ratio": auto / off,
                     "runs": repeat, "library": lib})
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--inner")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--workloads", default="gemm,generate,train")
    ap.add_argument("--json")
    a = ap.parse_args()
    if a.inner:
        print(json.dumps(inner(a.inner)))
        return
    rows = run(a.workloads.split(","), a.repeat)
    print("| workload | reference BLAS | OpenBLAS (shim) | ratio |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r['workload']} | {r['reference']:.2f} {r['unit']} | {r['openblas']:.2f} {r['unit']} | "
              f"{r['ratio']:.1f}x |")
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
