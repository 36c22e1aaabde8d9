"""The machine and versions a benchmark ran on, and measured matmul peaks (for MFU)."""

from __future__ import annotations

import os
import platform
import time
from importlib.metadata import PackageNotFoundError, version

import mlx.core as mx
import numpy as np

from .. import cpu_blas


def machine_info() -> dict:
    """CPU model, cores, memory, OS, Python and library versions, MLX device."""
    cpu = platform.processor() or ""
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = None
    try:
        mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        pass
    versions = {}
    for name in ("mlx", "mlx_lm", "numpy", "notme_mlx"):
        try:
            versions[name] = version(name.replace("_", "-"))
        except PackageNotFoundError:  # not installed as a distribution
            versions[name] = getattr(__import__(name), "__version__", "?")
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_bytes": mem, "os": platform.platform(),
            "python": platform.python_version(), "device": str(mx.default_device()), "versions": versions,
            "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
            "cpu_blas": _blas()}


def _blas() -> str:
    st = cpu_blas.status()
    return f"OpenBLAS shim ({st['library']})" if st["active"] else f"MLX wheel BLAS ({st['reason']})"


def mlx_matmul_peak(n: int = 1024, repeat: int = 3, dtype: str = "float32", per_cpu_second: bool = False) -> float:
    """Best-of-`repeat` FLOP/s of an n x n @ n x n matmul in MLX (2 n^3 FLOPs).

    per_cpu_second: FLOPs per second of process CPU time instead of wall time (all threads;
    what a machine shared with other work disturbs least)."""
    a = mx.random.normal((n, n)).astype(getattr(mx, dtype))
    b = mx.random.normal((n, n)).astype(getattr(mx, dtype))
    mx.eval(a, b, a @ b)
    clock = time.process_time if per_cpu_second else time.perf_counter
    best = float("inf")
    for _ in range(repeat):
        t = clock()
        mx.eval(a @ b)
        best = min(best, clock() - t)
    return 2 * n ** 3 / best


def numpy_matmul_peak(n: int = 2048, repeat: int = 3) -> float:
    """Best-of-`repeat` FLOP/s of an n x n float32 matmul in NumPy (its BLAS)."""
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((n, n), np.float32), rng.standard_normal((n, n), np.float32)
    a @ b
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * n ** 3 / best


def step_flops(args, tokens: int, mean_ctx: float, lora_params: int = 0) -> dict:
    """Model FLOPs of one training step over `tokens` real tokens.

    Formula (stated): 6·N·tokens + 12·L·H·ctx·tokens, with N = the non-embedding matmul
    parameters of the blocks plus the output head (V·H, computed for every position by
    mlx-lm; notme computes it only for supervised positions, so the formula over-counts
    ours: the comparison uses the same formula for both), ctx = mean attended context
    (≈ row length / 2 for causal attention). The 6 = 2 forward + 4 backward; with a frozen
    base the weight-gradient half is skipped, so `flops_lora` also gives 4·N·tokens +
    6·N_lora·tokens + the attention term.
    Returns {"flops", "flops_lora", "n_matmul_params"}.
    """
    H, L, I, V = args.hidden_size, args.num_hidden_layers, args.intermediate_size, args.vocab_size
    heads, kv = args.num_attention_heads, getattr(args, "num_key_value_heads", None) or args.num_attention_heads
    hd = H // heads
    per_layer = H * heads * hd + 2 * H * kv * hd + heads * hd * H + 3 * H * I
    n = L * per_layer + V * H
    attn = 12 * L * H * mean_ctx * tokens
    return {"flops": 6 * n * tokens + attn, "flops_lora": 4 * n * tokens + 6 * lora_params * tokens + attn,
            "n_matmul_params": n}
