"""notme's trainer vs mlx-lm's on the same model and examples, alternating sides.

`compare()` runs each side `repeat` times in rotating order (fresh model each run, seed
`seed + r` for repeat r on every side, so the sides of one repeat see the same example
order where their batching allows) and reports per side the median over repeats of
tokens/s (real non-pad tokens / summed step time), supervised tokens/s, median step time
and peak memory, plus the ratios ours/theirs. "ours_penalty_off" is the same trainer on
the same batches with the penalize tokens turned into learn tokens and lambda = 0, so
`penalty_overhead` = its tokens/s over ours with the penalty - 1 (the step-time fraction the
unlikelihood term adds).
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
from typing import Callable

import numpy as np

from .data import label_stats
from .machine import machine_info, step_flops
from .runners import RunResult, Settings, load, run_mlxlm, run_ours

SIDES = ("ours", "mlx-lm", "ours_penalty_off")


def penalty_off(examples) -> list:
    """Same tokens, penalize labels (-1) made learn labels (+1)."""
    from ..data.labels import TokenizedExample

    return [TokenizedExample(tokens=e.tokens, labels=[1 if v == -1 else v for v in e.labels]) for e in examples]


def aggregate(runs: list[dict]) -> dict:
    """Median over repeats of each figure (peak memory: the max), with the repeats kept."""
    keys = ("median_step_s", "tokens_per_sec", "supervised_tokens_per_sec", "padding_fraction", "tokens_per_cpu_sec")
    out = {k: float(np.median([r.get(k, np.nan) for r in runs])) for k in keys}
    out["peak_memory"] = int(max(r["peak_memory"] for r in runs))
    out["tokens"] = int(sum(r["tokens"] for r in runs))
    out["repeats"] = runs
    return out


def ratios(sides: dict) -> dict:
    """ours/theirs quotients of the aggregated figures, and the penalty overhead."""
    o, t = sides["ours"], sides["mlx-lm"]
    out = {"ratio_tokens_per_sec": o["tokens_per_sec"] / t["tokens_per_sec"],
           "ratio_supervised_tokens_per_sec": o["supervised_tokens_per_sec"] / t["supervised_tokens_per_sec"],
           "ratio_peak_memory": o["peak_memory"] / t["peak_memory"],
           "ratio_step_time": o["median_step_s"] / t["median_step_s"],
           "ratio_tokens_per_cpu_sec": o["tokens_per_cpu_sec"] / t["tokens_per_cpu_sec"]}
    off = sides.get("ours_penalty_off")
    out["penalty_overhead"] = (off["tokens_per_sec"] / o["tokens_per_sec"] - 1.0) if off else None
    out["penalty_overhead_cpu"] = (off["tokens_per_cpu_sec"] / o["tokens_per_cpu_sec"] - 1.0) if off else None
    return out


def compare(model_path, examples, settings: Settings, repeat: int = 3, sides=SIDES,
            on_run: Callable[[str, int, dict], None] | None = None) -> dict:
    """Run the comparison; returns the result dict (see module doc; `--json` writes it).

    Args:
        model_path: mlx-lm directory; examples: [TokenizedExample], each <= settings.seq tokens.
        on_run(side, repeat, summary): called after every run (progress display).
    """
    data = {"ours": examples, "mlx-lm": examples, "ours_penalty_off": penalty_off(examples)}
    runs: dict[str, list[dict]] = {s: [] for s in sides}
    args = None
    for r in range(repeat):
        order = list(sides[r % len(sides):]) + list(sides[:r % len(sides)])  # rotate who goes first
        s = dataclasses.replace(settings, seed=settings.seed + r)
        for side in order:
            model, tok = load(model_path)
            args = model.args
            if side == "mlx-lm":
                res: RunResult = run_mlxlm(model, data[side], s)
            else:
                s2 = dataclasses.replace(s, penalty_weight=0.0) if side == "ours_penalty_off" else s
                res = run_ours(model, data[side], s2, pad_id=tok.pad_token_id or 0)
            summ = res.summary()
            runs[side].append(summ)
            if on_run:
                on_run(side, r, summ)
            del model
    agg = {side: aggregate(v) for side, v in runs.items()}
    stats = label_stats(examples)
    lens = np.array([len(e.tokens) for e in examples])
    out = {"date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
           "settings": dataclasses.asdict(settings), "repeat": repeat, "model": str(model_path),
           "model_args": {k: getattr(args, k, None) for k in ("hidden_size", "num_hidden_layers", "intermediate_size",
                                                               "num_attention_heads", "num_key_value_heads",
                                                               "vocab_size")},
           "data": {**stats, "length_percentiles": {p: float(np.percentile(lens, p)) for p in (10, 50, 90, 99)}},
           "sides": agg, **(ratios(agg) if "mlx-lm" in agg and "ours" in agg else {}),
           "machine": machine_info()}
    if args is not None:
        f = step_flops(args, 1, float(np.mean(lens)) / 2)
        out["flops_per_token"] = f["flops"]
        out["achieved_flops"] = {side: a["tokens_per_sec"] * f["flops"] for side, a in agg.items()}
    return out
