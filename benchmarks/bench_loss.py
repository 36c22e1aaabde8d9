"""Peak extra memory and time of fused_token_loss vs naive_token_loss (loss + grad w.r.t. hidden).

Run: .venv/bin/python benchmarks/bench_loss.py [--n 1024,4096,16384 --h 576 --v 49152 --compile]
Per N it measures: full logits (naive), the fused loss with default settings (chunk_size 8192
capped by the working-set budget, `notme_mlx.loss.effective_chunk`), and the fused loss with a
fixed 8192-row chunk (the behaviour before the budget). Peak extra memory =
mx.get_peak_memory() after mx.reset_peak_memory(), minus the memory already held by the inputs
(hidden, W, targets, labels). `--md FILE` writes the table as markdown.
"""

from __future__ import annotations

import argparse
import platform
import time

import notme_mlx  # noqa: F401  (before mlx.core: the OpenBLAS shim on Linux, notme_mlx/cpu_blas.py)
import mlx.core as mx

from notme_mlx.loss import WORKING_SET, effective_chunk, fused_token_loss, naive_token_loss


def measure(fn, h, w, y, lab, chunk, compiled=False, working_set=WORKING_SET):
    """Returns (peak extra bytes, seconds, loss, grad, CPU seconds) of one value_and_grad(hidden) evaluation.

    CPU seconds (all threads of this process) are what a shared machine disturbs least."""
    def lf(h):
        return fn(h, w, y, lab, penalty_weight=10.0, chunk_size=chunk, working_set=working_set)[0]

    vg = mx.value_and_grad(lf)
    if compiled:
        vg = mx.compile(vg)
    mx.synchronize()
    mx.clear_cache()
    base = mx.get_active_memory()
    mx.reset_peak_memory()
    t0, c0 = time.perf_counter(), time.process_time()
    loss, g = vg(h)
    mx.eval(loss, g)
    dt, cpu = time.perf_counter() - t0, time.process_time() - c0
    peak = mx.get_peak_memory() - base
    return peak, dt, loss, g, cpu


def inputs(n, hdim, v, seed=0):
    """Random fp32 hidden [n, h], W [v, h], targets and mixed labels."""
    k1, k2, k3, k4 = mx.random.split(mx.random.key(seed), 4)
    h = mx.random.normal((n, hdim), key=k1)
    w = mx.random.normal((v, hdim), key=k2) * (hdim ** -0.5)
    y = mx.random.randint(0, v, (n,), key=k3).astype(mx.int32)
    lab = mx.random.randint(-1, 2, (n,), key=k4).astype(mx.int32)
    mx.eval(h, w, y, lab)
    return h, w, y, lab


def rows_for(n, hdim, v, compiled=False, skip_naive=False, repeat=1):
    """Table rows at one N: naive, fused default, fused fixed 8192 (best time of `repeat`)."""
    h, w, y, lab = inputs(n, hdim, v)
    variants = [] if skip_naive else [("full logits (naive)", naive_token_loss, None, None)]
    variants += [(f"fused, default (chunk {effective_chunk(n)})", fused_token_loss, 8192, WORKING_SET),
                 ("fused, fixed chunk 8192", fused_token_loss, 8192, None)]
    out, ref = [], None
    for name, fn, chunk, ws in variants:
        runs = [measure(fn, h, w, y, lab, chunk, compiled, ws) for _ in range(repeat)]
        peak, dt, cpu = max(r[0] for r in runs), min(r[1] for r in runs), min(r[4] for r in runs)
        _, _, loss, g, _ = runs[-1]
        row = {"n": n, "impl": name, "peak_mib": peak / 2**20, "time_s": dt, "cpu_s": cpu, "loss": loss.item()}
        if ref is None and fn is naive_token_loss:
            ref = (peak, g)
        elif ref is not None:
            row["ratio"] = ref[0] / peak
            row["grad_rel_diff"] = (mx.abs(g - ref[1]).max() / mx.abs(ref[1]).max()).item()
        out.append(row)
        del g
    return out


def table(rows) -> str:
    lines = ["| N | impl | peak extra MiB | time s | CPU s | full/fused memory | max grad rel diff | loss |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ratio = f"{r['ratio']:.1f}x" if "ratio" in r else "-"
        diff = f"{r['grad_rel_diff']:.1e}" if "grad_rel_diff" in r else "-"
        lines.append(f"| {r['n']} | {r['impl']} | {r['peak_mib']:.0f} | {r['time_s']:.2f} | {r['cpu_s']:.2f} | {ratio} | {diff} | "
                     f"{r['loss']:.6f} |")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", default="1024,4096,16384", help="positions, comma-separated")
    ap.add_argument("--h", type=int, default=576)
    ap.add_argument("--v", type=int, default=49152)
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--skip-naive", action="store_true")
    ap.add_argument("--naive-max", type=int, default=4096,
                    help="skip full logits above this N (it needs ~0.94 MiB x N; 15 GiB at 16384)")
    ap.add_argument("--repeat", type=int, default=1, help="runs per variant (best time, max memory)")
    ap.add_argument("--md", default=None, help="write the table here")
    a = ap.parse_args()
    print(f"H={a.h} V={a.v} fp32 compile={a.compile} device={mx.default_device()} mlx={mx.__version__} "
          f"working set {WORKING_SET} elements; {platform.platform()}", flush=True)
    rows = []
    for n in [int(x) for x in a.n.split(",")]:
        rows += rows_for(n, a.h, a.v, a.compile, a.skip_naive or n > a.naive_max, a.repeat)
        print(table(rows), flush=True)
    if a.md:
        with open(a.md, "w", encoding="utf-8") as f:
            f.write(table(rows) + "\n")


if __name__ == "__main__":
    main()
