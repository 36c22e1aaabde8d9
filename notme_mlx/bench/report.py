"""Markdown tables of benchmark results (the CLI renders them; scripts print them)."""

from __future__ import annotations


def _mb(b) -> str:
    return f"{b / 2**20:.0f}"


def _spread(a: dict, k: str, fmt: str = "{:.1f}") -> str:
    if k + "_min" not in a:
        return fmt.format(a[k])
    return f"{fmt.format(a[k])} [{fmt.format(a[k + '_min'])}-{fmt.format(a[k + '_max'])}]"


def compare_table(res: dict) -> str:
    """Per-side medians [min-max over repeats], per-process memory, MFU, and the ours/theirs ratios."""
    mfu, mfu_cpu = res.get("mfu", {}), res.get("mfu_cpu", {})
    lines = ["| side | tokens/s (real) | tokens/CPU-s | median step (s) | MLX peak (MiB) | max RSS (MiB) | padding | "
             "MFU (wall / CPU) |", "|---|---|---|---|---|---|---|---|"]
    for side, a in res["sides"].items():
        rss = _mb(a["max_rss"]) if a.get("max_rss") else "-"
        m = f"{mfu[side]:.1%} / {mfu_cpu[side]:.1%}" if side in mfu and side in mfu_cpu else "-"
        lines.append(f"| {side} | {_spread(a, 'tokens_per_sec')} | {_spread(a, 'tokens_per_cpu_sec')} | "
                     f"{_spread(a, 'median_step_s', '{:.2f}')} | {_mb(a['peak_memory'])} | {rss} | "
                     f"{a['padding_fraction']:.1%} | {m} |")
    if "ratio_tokens_per_sec" in res:
        po, pr = res.get("penalty_overhead"), res.get("paired", {})
        lines += ["", "| ratio ours/mlx-lm | medians | paired (same repeat) |", "|---|---|---|",
                  f"| tokens/s | {res['ratio_tokens_per_sec']:.2f}x | {pr.get('ratio_tokens_per_sec', float('nan')):.2f}x |",
                  f"| tokens per CPU second | {res.get('ratio_tokens_per_cpu_sec', float('nan')):.2f}x | "
                  f"{pr.get('ratio_tokens_per_cpu_sec', float('nan')):.2f}x |",
                  f"| median step time | {res['ratio_step_time']:.2f}x | |",
                  f"| MLX peak memory (per process) | {res['ratio_peak_memory']:.2f}x | "
                  f"{pr.get('ratio_peak_memory', float('nan')):.2f}x |"]
        if res.get("ratio_max_rss") is not None:
            lines.append(f"| max RSS (per process) | {res['ratio_max_rss']:.2f}x | |")
        if po is not None:
            lines.append(f"| penalty overhead (ours, on vs off; wall / CPU) | {po:+.1%} / "
                         f"{res.get('penalty_overhead_cpu') or 0:+.1%} | {pr.get('penalty_overhead', 0):+.1%} / "
                         f"{pr.get('penalty_overhead_cpu', 0):+.1%} |")
    g = res.get("gemm_peak_flops")
    if g:
        lines.append(f"\nMFU = tokens/s x {res['flops_per_token'] / 1e9:.2f} GFLOP/token (6N + attention) / "
                     f"{g['used'] / 1e9:.1f} GFLOP/s ({g['n']}^2 float32 GEMM in MLX, best of before "
                     f"{g['before'] / 1e9:.1f} / after {g['after'] / 1e9:.1f}); CPU MFU = tokens per CPU second "
                     f"x the same / {g.get('per_cpu_second', float('nan')) / 1e9:.1f} GFLOP per CPU second.")
    return "\n".join(lines)


def feature_table(rows: list[dict]) -> str:
    """Feature-cost rows (training-step rows and batching rows share one table)."""
    lines = ["| feature | variant | tokens/s | tokens/CPU-s | median step (s) | peak mem (MiB) | padding | note |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        tps = f"{r['tokens_per_sec']:.1f}" if "tokens_per_sec" in r else "-"
        tpc = f"{r['tokens_per_cpu_sec']:.1f}" if "tokens_per_cpu_sec" in r else "-"
        st = f"{r['median_step_s']:.2f}" if "median_step_s" in r else "-"
        pm = _mb(r["peak_memory"]) if "peak_memory" in r else "-"
        note = r.get("note", "")
        if "overhead" in r:
            note = f"overhead {r['overhead']:+.1%} wall, {r['overhead_cpu']:+.1%} CPU"
        if "batches_per_epoch" in r:
            note = f"{r['batches_per_epoch']} batches/epoch {note}".strip()
        pad = f"{r['padding_fraction']:.1%}" if r.get("padding_fraction") is not None else "-"
        lines.append(f"| {r['feature']} | {r['variant']} | {tps} | {tpc} | {st} | {pm} | {pad} | {note} |")
    return "\n".join(lines)


def mfu_table(rows: list[dict]) -> str:
    lines = ["| side | tokens/s | model GFLOP/s (6N+attn) | MFU vs MLX matmul | MFU vs NumPy matmul | "
             "GFLOP/s (4N+6N_lora+attn) |", "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['side']} | {r['tokens_per_sec']:.1f} | {r['achieved_flops'] / 1e9:.2f} | "
                     f"{r['mfu_vs_mlx']:.1%} | {r['mfu_vs_numpy']:.1%} | {r['achieved_flops_lora'] / 1e9:.2f} |")
    if rows:
        lines.append(f"\nMLX matmul peak {rows[0]['mlx_matmul_peak'] / 1e9:.1f} GFLOP/s, NumPy "
                     f"{rows[0]['numpy_matmul_peak'] / 1e9:.1f} GFLOP/s (float32, best of 3).")
    return "\n".join(lines)


def machine_line(m: dict) -> str:
    v = m["versions"]
    mem = f"{m['memory_bytes'] / 2**30:.0f} GiB" if m.get("memory_bytes") else "?"
    return (f"{m['cpu']}, {m['cores']} cores, {mem}, {m['os']}; mlx {v.get('mlx')}, mlx-lm {v.get('mlx_lm')}, "
            f"device {m['device']}; load average {m.get('load_average')}")
