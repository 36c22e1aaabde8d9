"""notme's trainer vs mlx-lm's on the same model and examples, each run in a fresh process.

`compare()` runs each side `repeat` times, rotating which side goes first, every run in its
own subprocess (`bench.worker`: load the model the way `notme train` does, train, report), so
no side's allocations, caches or compiled graphs reach another side's figures. Repeat r uses
seed `seed + r` on every side. Per side it reports the median and spread (min, max) over
repeats of tokens/s (real non-pad tokens / summed step time), tokens per CPU second,
supervised tokens/s and step time, and per process the MLX peak memory of training (weights
included) and the max resident set size. "ours_penalty_off" is the same trainer on the same
batches with the penalize tokens turned into learn tokens and lambda = 0, so
`penalty_overhead` = its tokens/s over ours with the penalty - 1. Ratios are of the medians;
`paired` gives the median over repeats of the same-repeat ratios as well (less disturbed by
load that drifts over the run). MFU: achieved model FLOP/s (`machine.step_flops`) over the
float32 GEMM peak measured in this process before and after the runs.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import os
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace
from typing import Callable

import numpy as np

from ..data.labels import TokenizedExample
from ..errors import NotmeError
from ..io import atomic_write_text
from .data import label_stats
from .machine import machine_info, mlx_matmul_peak, step_flops
from .runners import Settings
from .worker import write_examples

SIDES = ("ours", "mlx-lm", "ours_penalty_off")
_FIGURES = ("median_step_s", "tokens_per_sec", "supervised_tokens_per_sec", "padding_fraction", "tokens_per_cpu_sec")


def penalty_off(examples) -> list:
    """Same tokens, penalize labels (-1) made learn labels (+1)."""
    return [TokenizedExample(tokens=e.tokens, labels=[1 if v == -1 else v for v in e.labels]) for e in examples]


def aggregate(runs: list[dict]) -> dict:
    """Median over repeats of each figure, its spread ({figure}_min / _max), and per-process memory:
    `peak_memory` / `max_rss` are medians over the runs (`_max`: the largest); the repeats are kept."""
    out = {}
    for k in _FIGURES:
        v = [r.get(k, np.nan) for r in runs]
        out[k], out[k + "_min"], out[k + "_max"] = float(np.median(v)), float(np.min(v)), float(np.max(v))
    for k in ("peak_memory", "max_rss"):
        v = [r[k] for r in runs if r.get(k) is not None]
        if v:
            out[k], out[k + "_max"] = int(np.median(v)), int(max(v))
    out["tokens"] = int(sum(r["tokens"] for r in runs))
    out["repeats"] = runs
    return out


def _paired(a: list[dict], b: list[dict], key: str) -> float:
    return float(np.median([x[key] / y[key] for x, y in zip(a, b)]))


def ratios(sides: dict) -> dict:
    """ours/theirs quotients of the medians, the penalty overhead, and same-repeat (paired) medians."""
    o, t = sides["ours"], sides["mlx-lm"]
    out = {"ratio_tokens_per_sec": o["tokens_per_sec"] / t["tokens_per_sec"],
           "ratio_supervised_tokens_per_sec": o["supervised_tokens_per_sec"] / t["supervised_tokens_per_sec"],
           "ratio_peak_memory": o["peak_memory"] / t["peak_memory"],
           "ratio_step_time": o["median_step_s"] / t["median_step_s"],
           "ratio_tokens_per_cpu_sec": o["tokens_per_cpu_sec"] / t["tokens_per_cpu_sec"]}
    if o.get("max_rss") and t.get("max_rss"):
        out["ratio_max_rss"] = o["max_rss"] / t["max_rss"]
    off = sides.get("ours_penalty_off")
    out["penalty_overhead"] = (off["tokens_per_sec"] / o["tokens_per_sec"] - 1.0) if off else None
    out["penalty_overhead_cpu"] = (off["tokens_per_cpu_sec"] / o["tokens_per_cpu_sec"] - 1.0) if off else None
    ro, rt = o["repeats"], t["repeats"]
    out["paired"] = {"ratio_tokens_per_sec": _paired(ro, rt, "tokens_per_sec"),
                     "ratio_tokens_per_cpu_sec": _paired(ro, rt, "tokens_per_cpu_sec"),
                     "ratio_peak_memory": _paired(ro, rt, "peak_memory")}
    if off:
        out["paired"]["penalty_overhead"] = _paired(off["repeats"], ro, "tokens_per_sec") - 1.0
        out["paired"]["penalty_overhead_cpu"] = _paired(off["repeats"], ro, "tokens_per_cpu_sec") - 1.0
    return out


def blas_threads(parallel: int) -> int | None:
    """OpenBLAS threads per worker when `parallel` run at once: cores / parallel (at least 1), or
    None when the user set OPENBLAS_NUM_THREADS. Measured on 2 cores: with 3 processes of 2 threads
    each, a rank-8 LoRA GEMM (512 x 8 x 1536) took 16 ms instead of 0.3 ms (threads waiting for a
    busy core a scheduler tick at a time), which distorts exactly the small GEMMs LoRA adds."""
    if "OPENBLAS_NUM_THREADS" in os.environ:
        return None
    return max(1, (os.cpu_count() or 1) // max(1, parallel))


def run_worker(spec: dict, workdir: Path, name: str, timeout: float | None = None,
               threads: int | None = None) -> dict:
    """Run one side in a fresh `python -m notme_mlx.bench.worker` process (OpenBLAS limited to
    `threads` when given); its result dict."""
    spec_path, out_path = workdir / f"{name}.spec.json", workdir / f"{name}.out.json"
    atomic_write_text(spec_path, json.dumps(spec))
    env = dict(os.environ, **({"OPENBLAS_NUM_THREADS": str(threads)} if threads else {}))
    try:
        p = subprocess.run([sys.executable, "-m", "notme_mlx.bench.worker", str(spec_path), str(out_path)],
                           capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        raise NotmeError(f"bench run {name}: no result within {timeout:.0f} s") from None
    if p.returncode != 0 or not out_path.exists():
        tail = (p.stderr or p.stdout or "").strip().splitlines()[-1:] or ["no output"]
        raise NotmeError(f"bench run {name} failed (exit {p.returncode}): {tail[0]}")
    return json.loads(out_path.read_text(encoding="utf-8"))


def model_args(model_path) -> SimpleNamespace:
    """The architecture fields of a model directory's config.json (no weights loaded)."""
    cfg = json.loads((Path(model_path) / "config.json").read_text(encoding="utf-8"))
    cfg = {**cfg.get("text_config", {}), **cfg}
    return SimpleNamespace(**{k: cfg.get(k) for k in ("hidden_size", "num_hidden_layers", "intermediate_size",
                                                      "num_attention_heads", "num_key_value_heads", "vocab_size")})


def compare(model_path, examples, settings: Settings, repeat: int = 3, sides=SIDES,
            on_run: Callable[[str, int, dict], None] | None = None, dequantize: bool | None = None,
            timeout: float | None = None, gemm_n: int = 1024, parallel: int = 1, base_dtype: str = "auto") -> dict:
    """Run the comparison; returns the result dict (see module doc; `--json` writes it).

    Args:
        model_path: mlx-lm directory; examples: [TokenizedExample], each <= settings.seq tokens.
        on_run(side, repeat, summary): called after every run (progress display).
        dequantize: how the workers load the model (None: as `notme train` on this platform).
        base_dtype: how our sides store the dequantized base (`models.load_model`; "auto": as
            `notme train`); mlx-lm's side always loads float32.
        timeout: seconds per run; gemm_n: size of the GEMM whose FLOP/s is the MFU peak (0: skip).
        parallel: run up to this many sides of one repeat at the same time (1: one after the
            other). On a machine busy with other work, running a repeat's sides together puts
            them under the same load; per-process memory is unaffected, and tokens per CPU
            second little affected, but wall-clock tokens/s then measure shared cores.
    """
    peaks = [(mlx_matmul_peak(gemm_n), mlx_matmul_peak(gemm_n, per_cpu_second=True))] if gemm_n else []
    threads = blas_threads(parallel)
    runs: dict[str, list[dict]] = {s: [] for s in sides}
    with tempfile.TemporaryDirectory(prefix="notme-bench-") as tmp:
        work = Path(tmp)
        data = {"ours": work / "examples.jsonl", "mlx-lm": work / "examples.jsonl",
                "ours_penalty_off": work / "examples_penalty_off.jsonl"}
        write_examples(data["ours"], examples)
        if "ours_penalty_off" in sides:
            write_examples(data["ours_penalty_off"], penalty_off(examples))
        for r in range(repeat):
            order = list(sides[r % len(sides):]) + list(sides[:r % len(sides)])  # rotate who goes first
            s = dataclasses.replace(settings, seed=settings.seed + r)
            specs = [(side, {"side": side, "model": str(model_path), "dequantize": dequantize, "base_dtype": base_dtype,
                             "examples": str(data[side]), "settings": dataclasses.asdict(s)}) for side in order]
            with ThreadPoolExecutor(max(1, parallel)) as pool:
                futures = [(side, pool.submit(run_worker, spec, work, f"{side}-{r}", timeout, threads))
                           for side, spec in specs]
                for side, fut in futures:
                    summ = fut.result()
                    runs[side].append(summ)
                    if on_run:
                        on_run(side, r, summ)
    if gemm_n:
        peaks.append((mlx_matmul_peak(gemm_n), mlx_matmul_peak(gemm_n, per_cpu_second=True)))
    out = summarize(runs, model_path, examples, settings, dequantize=dequantize, parallel=parallel,
                    peaks=peaks, gemm_n=gemm_n)
    out["blas_threads_per_worker"] = threads or os.environ.get("OPENBLAS_NUM_THREADS")
    out["base_dtype"] = base_dtype
    return out


def summarize(runs: dict[str, list[dict]], model_path, examples, settings: Settings, dequantize=None,
              parallel: int = 1, peaks: list[tuple[float, float]] = (), gemm_n: int = 1024) -> dict:
    """The result dict of `compare` from the worker results {side: [run, ...]} (also usable on the
    `*.out.json` files of an interrupted comparison). peaks: (wall, per-CPU-second) GEMM FLOP/s
    measurements; MFU divides tokens/s by the best wall one, and `mfu_cpu` tokens per CPU second
    by the best per-CPU-second one."""
    agg = {side: aggregate(v) for side, v in runs.items() if v}
    repeat = min(len(v) for v in runs.values())
    stats = label_stats(examples)
    lens = np.array([len(e.tokens) for e in examples])
    args = model_args(model_path)
    out = {"date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
           "settings": dataclasses.asdict(settings), "repeat": repeat, "parallel": parallel,
           "model": str(model_path),
           "dequantize": dequantize, "model_args": vars(args),
           "data": {**stats, "length_percentiles": {p: float(np.percentile(lens, p)) for p in (10, 50, 90, 99)}},
           "sides": agg, **(ratios(agg) if "mlx-lm" in agg and "ours" in agg else {}),
           "machine": machine_info()}
    f = step_flops(args, 1, float(np.mean(lens)) / 2)
    out["flops_per_token"] = f["flops"]
    out["achieved_flops"] = {side: a["tokens_per_sec"] * f["flops"] for side, a in agg.items()}
    if peaks:
        peak, peak_cpu = max(p[0] for p in peaks), max(p[1] for p in peaks)
        out["gemm_peak_flops"] = {"n": gemm_n, "before": peaks[0][0], "after": peaks[-1][0], "used": peak,
                                  "per_cpu_second": peak_cpu}
        out["mfu"] = {side: v / peak for side, v in out["achieved_flops"].items()}
        out["mfu_cpu"] = {side: a["tokens_per_cpu_sec"] * f["flops"] / peak_cpu for side, a in agg.items()}
    return out
