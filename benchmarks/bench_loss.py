"""Peak extra memory and time of fused_token_loss vs naive_token_loss (loss + grad w.r.t. hidden).

Run: .venv/bin/python benchmarks/bench_loss.py [--n 4096 --h 576 --v 49152 --chunks 8192,4096 --compile]
Peak extra memory = mx.get_peak_memory() after mx.reset_peak_memory(), minus the
memory already held by the inputs (hidden, W, targets, labels).
"""

from __future__ import annotations

import argparse
import time

import notme_mlx  # noqa: F401  (before mlx.core: the OpenBLAS shim on Linux, notme_mlx/cpu_blas.py)
import mlx.core as mx

from notme_mlx.loss import fused_token_loss, naive_token_loss


def measure(fn, h, w, y, lab, chunk, compiled=False):
    """Returns (peak extra bytes, seconds, loss, grad) of one value_and_grad(hidden) evaluation."""
    def lf(h):
        return fn(h, w, y, lab, penalty_weight=10.0, chunk_size=chunk)[0]

    vg = mx.value_and_grad(lf)
    if compiled:
        vg = mx.compile(vg)
    mx.synchronize()
    mx.clear_cache()
    base = mx.get_active_memory()
    mx.reset_peak_memory()
    t0 = time.perf_counter()
    loss, g = vg(h)
    mx.eval(loss, g)
    dt = time.perf_counter() - t0
    peak = mx.get_peak_memory() - base
    return peak, dt, loss, g


def inputs(n, hdim, v, seed=0):
    """Random fp32 hidden [n, h], W [v, h], targets and mixed labels."""
    k1, k2, k3, k4 = mx.random.split(mx.random.key(seed), 4)
    h = mx.random.normal((n, hdim), key=k1)
    w = mx.random.normal((v, hdim), key=k2) * (hdim ** -0.5)
    y = mx.random.randint(0, v, (n,), key=k3).astype(mx.int32)
    lab = mx.random.randint(-1, 2, (n,), key=k4).astype(mx.int32)
    mx.eval(h, w, y, lab)
    return h, w, y, lab


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=4096)
    ap.add_argument("--h", type=int, default=576)
    ap.add_argument("--v", type=int, default=49152)
    ap.add_argument("--chunks", default="8192,4096,2048")
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--skip-naive", action="store_true")
    a = ap.parse_args()
    h, w, y, lab = inputs(a.n, a.h, a.v)
    mib = 2 ** 20
    print(f"N={a.n} H={a.h} V={a.v} fp32 compile={a.compile} device={mx.default_device()} mlx={mx.__version__}")
    print(f"[N,V] fp32 logits = {a.n * a.v * 4 / mib:.0f} MiB")
    print("| impl | chunk | peak extra MiB | time s | loss |")
    print("|---|---|---|---|---|")
    ref = None
    if not a.skip_naive:
        peak, dt, loss, g = measure(naive_token_loss, h, w, y, lab, None, a.compile)
        ref = (peak, loss, g)
        print(f"| naive | - | {peak / mib:.0f} | {dt:.1f} | {loss.item():.6f} |", flush=True)
    for c in [int(x) for x in a.chunks.split(",")]:
        peak, dt, loss, g = measure(fused_token_loss, h, w, y, lab, c, a.compile)
        extra = ""
        if ref is not None:
            rel = (mx.abs(g - ref[2]).max() / mx.abs(ref[2]).max()).item()
            extra = f" (naive/fused memory {ref[0] / peak:.1f}x, max grad rel diff {rel:.1e})"
        print(f"| fused | {c} | {peak / mib:.0f} | {dt:.1f} | {loss.item():.6f} |{extra}", flush=True)


if __name__ == "__main__":
    main()
