"""Cluster benchmarks over loopback: send/recv bandwidth, step time vs ranks and micro-batches,
bubble share against (p-1)/(m+p-1), and the simulator's prediction beside each measurement.

    .venv/bin/python benchmarks/bench_cluster.py [--quick]

On this 2-core machine every rank shares the same two cores, so p ranks do not run in
parallel: the measured step time of a p-stage pipeline here is roughly the sum of the stage
work, not the max. The bubble is therefore measured as the idle share a rank reports
(time waiting in recv / step time) rather than from speed-ups.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BW_SCRIPT = r'''
import time, json, sys
import notme_mlx  # noqa: F401  (before mlx.core: the OpenBLAS shim on Linux, notme_mlx/cpu_blas.py)
import mlx.core as mx
g = mx.distributed.init()
r = g.rank()
out = {}
for mb in (0.001, 0.1, 1, 8, 32):
    n = int(mb * 2**20 / 4)
    x = mx.ones((max(n, 1),))
    reps = 20 if mb < 8 else 5
    mx.eval(mx.distributed.all_sum(mx.array(1.0), group=g))
    t = None
    for i in range(reps + 1):  # the first round trip is an untimed warm-up
        if i == 1:
            t = time.perf_counter()
        if r == 0:
            mx.eval(mx.distributed.send(x, 1, group=g)); mx.eval(mx.distributed.recv(x.shape, x.dtype, 1, group=g))
        else:
            y = mx.distributed.recv(x.shape, x.dtype, 0, group=g); mx.eval(y); mx.eval(mx.distributed.send(y, 0, group=g))
    dt = (time.perf_counter() - t) / reps / 2
    out[mb] = {"one_way_s": dt, "GBps": x.nbytes / dt / 1e9}
if r == 0:
    print(json.dumps(out))
'''


def bandwidth() -> dict:
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
        f.write(BW_SCRIPT)
    py = sys.executable
    r = subprocess.run([str(Path(py).parent / "mlx.launch"), "-n", "2", "--backend", "ring", "--python", py, f.name],
                       capture_output=True, text=True, timeout=300)
    line = [l for l in r.stdout.splitlines() if l.startswith("{")][-1]
    return {float(k): v for k, v in json.loads(line).items()}


def matmul_gflops() -> float:
    import mlx.core as mx

    a = mx.random.normal((1024, 1024))
    mx.eval(a @ a)
    t = time.perf_counter()
    for _ in range(3):
        mx.eval(a @ a)
    return 3 * 2 * 1024**3 / (time.perf_counter() - t) / 1e9


def steps(workdir: Path, n: int, m: int, schedule: str, hidden: int = 256, layers: int = 4,
          batch: int = 8, seq: int = 128, n_steps: int = 4) -> dict:
    """Median step time of `notme cluster launch`'s worker (n pipeline stages, m micro-batches)."""
    import random

    from notme_mlx.cluster.selftest import launch_job, stages_of
    from notme_mlx.recipe import load_recipe, to_dict
    from notme_mlx.train.metrics import read_metrics

    model = workdir / f"model-{hidden}"
    if not (model / "config.json").exists():
        from notme_mlx.models.tiny import build_tiny_llama

        build_tiny_llama(model, vocab_size=512, seed=0, hidden_size=hidden, intermediate_size=4 * hidden,
                         num_attention_heads=8, num_key_value_heads=4, num_hidden_layers=layers)
    data = workdir / f"train-{seq}.jsonl"
    if not data.exists():  # replies of about `seq` tokens, so a micro-batch is about rows x seq positions
        rng = random.Random(0)
        words = "the parser file code test run model data fix bug flight meeting lunch coffee tomorrow".split()
        rows = [{"messages": [{"role": "user", "content": "go"}, {"role": "assistant", "train": True, "content":
                 " ".join(rng.choice(words) for _ in range(seq // 2))}]} for _ in range(64)]
        data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    recipe = load_recipe(None, {
        "model": str(model), "name": f"run-{n}-{m}-{schedule}", "out_dir": str(workdir / "runs"),
        "data.train": str(data), "data.valid": None, "data.max_seq_len": seq, "batch_size": max(batch // m, 1),
        "grad_accum": m, "max_steps": n_steps, "optimizer.lr": 1e-3, "lora.rank": 8, "lora.alpha": 16,
        "save_every": 0, "eval_every": 0, "cluster.schedule": schedule, "cluster.timeout": 300,
        "memory_check": False})
    job = {"recipe": to_dict(recipe), "model_dir": str(model), "stages": stages_of(layers, n), "replicas": 1,
           "force": True}
    r = launch_job(job, n, workdir / f"job-{n}-{m}-{schedule}.json", timeout=900)
    if r.returncode:
        raise RuntimeError(r.stderr[-1500:])
    t = [x["tokens"] / x["tok_s"] for x in read_metrics(recipe.run_dir() / "metrics.jsonl") if "tok_s" in x]
    return {"median_step_s": sorted(t[1:])[len(t[1:]) // 2], "hidden": hidden, "layers": layers}


def main():
    from notme_mlx.cluster.plan import ModelShape
    from notme_mlx.cluster.simulate import Chip, LinkSpec, simulate

    quick = "--quick" in sys.argv
    wd = Path(tempfile.mkdtemp(prefix="notme-bench-cluster-"))
    bw = bandwidth()
    gf = matmul_gflops()
    print("## loopback send/recv (2 ranks, ring backend)\n")
    print("| message | one-way time | GB/s |\n|---|---|---|")
    for mb, v in bw.items():
        print(f"| {mb:g} MiB | {v['one_way_s'] * 1e3:.3f} ms | {v['GBps']:.2f} |")
    lat = bw[0.001]["one_way_s"]
    big = bw[max(bw)]["GBps"]
    local = Chip("this CPU (mlx[cpu], measured)", gf / 1000, 10.0, 1.0)
    link = LinkSpec("loopback (measured)", big, lat * 1e6)
    print(f"\nmeasured MLX matmul: {gf:.1f} GFLOP/s; loopback latency {lat * 1e6:.0f} us, bandwidth {big:.2f} GB/s\n")
    # --quick: a smaller model/batch so the table finishes in minutes on a loaded 2-core box
    hidden, batch, seq, n_steps = (128, 4, 64, 3) if quick else (256, 8, 128, 4)
    print(f"## step time vs ranks and micro-batches (batch {batch} x {seq} tokens, hidden {hidden}, 4 layers)\n")
    print("| ranks | micro-batches | schedule | measured step | simulator | measured bubble 1-T1/(p*Tp) | simulator bubble = (p-1)/(m+p-1) |\n|---|---|---|---|---|---|---|")
    shape = ModelShape(4, hidden, 4 * hidden, 512, 8, 4, "float32", True)
    cases = [(1, 1, "gpipe"), (2, 1, "gpipe"), (2, 2, "gpipe"), (2, 4, "1f1b"), (4, 4, "1f1b")] if quick else \
        [(1, 1, "gpipe"), (2, 1, "gpipe"), (2, 2, "gpipe"), (2, 2, "1f1b"), (2, 4, "1f1b"), (2, 8, "1f1b"),
         (4, 4, "1f1b")]
    t1 = None
    for n, m, sch in cases:
        meas = steps(wd, n, m, sch, hidden, 4, batch, seq, n_steps)["median_step_s"]
        if n == 1:
            t1 = meas
        counts = [round((i + 1) * 4 / n) - round(i * 4 / n) for i in range(n)]
        pred = simulate(shape, local, link, counts, batch, seq, m, weight_bytes=4, act_bytes=4)
        # ranks share 2 cores here: serialize the stages' work (sum, not max) for the local prediction
        serial = pred["step_s"] * (n / 2 if n > 2 else 1)
        # measured bubble (idle + communication share): only meaningful while p <= cores (2 here)
        mb = f"{1 - t1 / (n * meas):.0%}" if (t1 and 1 < n <= 2) else "n/a"
        sb = pred["bubble_fraction"]
        print(f"| {n} | {m} | {sch} | {meas:.3f} s | {serial:.3f} s | {mb} | {sb:.0%} |", flush=True)


if __name__ == "__main__":
    main()
