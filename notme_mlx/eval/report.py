"""Report writing: report.json, report.md, report.html (PNGs embedded) and plots/*.png.

`summary_rows(report)` gives the before → after → change table the CLI renders with rich;
`compare(dir_a, dir_b)` lines up two saved reports.
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..io import atomic_write_bytes, atomic_write_text
from .metrics import METRICS, warnings_for

RED = "#c0392b"


def fmt(v: float | None, kind: str) -> str:
    if v is None:
        return "—"
    if kind == "pct":
        return f"{100 * v:.1f}%"
    if kind == "sci":
        return f"{v:.2e}"
    return f"{v:.3g}" if abs(v) < 1000 else f"{v:,.0f}"


def fmt_ci(d: dict | None, kind: str) -> str:
    if not d or d.get("value") is None:
        return "—"
    return f"{fmt(d['value'], kind)} [{fmt(d['lo'], kind)}, {fmt(d['hi'], kind)}] n={d['n']}"


def change(before: dict | None, after: dict | None, kind: str) -> str:
    if not before or not after or before.get("value") is None or after.get("value") is None:
        return "—"
    d = after["value"] - before["value"]
    if kind == "pct":
        return f"{100 * d:+.1f} pts"
    if kind == "sci":
        return f"{d:+.2e}"
    return f"{d:+.3g}"


def summary_rows(report: dict) -> list[dict]:
    """One row per metric: {key, label, before, after, change, better} (strings; better True/False/None)."""
    a = report["model"]["metrics"]
    b = (report.get("baseline") or {}).get("metrics") or {}
    rows = []
    for key, (label, higher, kind) in METRICS.items():
        ma, mb = a.get(key), b.get(key)
        better = None
        if (higher is not None and ma and mb and ma.get("value") is not None and mb.get("value") is not None
                and ma["value"] != mb["value"]):
            better = (ma["value"] > mb["value"]) == higher
        rows.append({"key": key, "label": label, "before": fmt_ci(mb, kind) if b else "—", "after": fmt_ci(ma, kind),
                     "change": change(mb, ma, kind) if b else "—", "better": better})
    return rows


def _describe(meta: dict | None) -> str:
    if not meta:
        return "—"
    s = str(meta.get("model"))
    if meta.get("stack"):
        s += f" + stack {meta['stack']}"
    if meta.get("adapters"):
        s += f" + adapters {meta['adapters']}"
    return s


# --- plots ------------------------------------------------------------------------------------

def _bars(ax, labels, series, title, pct=True):
    x = np.arange(len(labels))
    w = 0.8 / max(len(series), 1)
    colors = ["#95a5a6", "#2e86de"]
    for i, (name, vals) in enumerate(series):
        v = [(d or {}).get("value") or 0.0 for d in vals]
        lo = [max(0.0, v[j] - ((d or {}).get("lo") if (d or {}).get("lo") is not None else v[j])) for j, d in enumerate(vals)]
        hi = [max(0.0, ((d or {}).get("hi") if (d or {}).get("hi") is not None else v[j]) - v[j]) for j, d in enumerate(vals)]
        k = 100.0 if pct else 1.0
        ax.bar(x + (i - (len(series) - 1) / 2) * w, [k * t for t in v], w, yerr=[[k * t for t in lo], [k * t for t in hi]],
               capsize=3, label=name, color=colors[i % len(colors)])
    ax.set_xticks(x)
    ax.set_xticklabels(labels, rotation=25, ha="right", fontsize=8)
    ax.set_title(title, fontsize=10)
    if pct:
        ax.set_ylabel("%")
    ax.legend(fontsize=8)


def write_plots(report: dict, plot_dir: Path) -> list[Path]:
    """Bar charts (baseline vs model, 95% CI error bars). Returns the PNG paths."""
    import matplotlib  # heavy (about a second); imported only when plots are written

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    a = report["model"]
    b = report.get("baseline")
    series_of = (lambda key_fn: ([("baseline", key_fn(b))] if b else []) + [("model", key_fn(a))])
    plot_dir.mkdir(parents=True, exist_ok=True)
    paths = []

    rate_keys = [k for k, (_, _, kind) in METRICS.items() if kind == "pct"]
    fig, ax = plt.subplots(figsize=(8, 4))
    _bars(ax, [METRICS[k][0] for k in rate_keys], series_of(lambda r: [r["metrics"].get(k) for k in rate_keys]),
          "Rates before → after (95% bootstrap CI)")
    fig.tight_layout()
    p = plot_dir / "rates.png"
    fig.savefig(p, dpi=100)
    plt.close(fig)
    paths.append(p)

    cats = sorted(set(a.get("by_cue_category", {})) | set((b or {}).get("by_cue_category", {}) or {}))
    pcats = sorted(set(a.get("by_prompt_category", {})) | set((b or {}).get("by_prompt_category", {}) or {}))
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    _bars(axes[0], cats or ["(none)"], series_of(lambda r: [r.get("by_cue_category", {}).get(c) for c in cats] or [None]),
          "Responses with a cue, by detector category")
    _bars(axes[1], pcats or ["(none)"], series_of(lambda r: [r.get("by_prompt_category", {}).get(c) for c in pcats] or [None]),
          "VSR by prompt category")
    fig.tight_layout()
    p = plot_dir / "vsr_by_category.png"
    fig.savefig(p, dpi=100)
    plt.close(fig)
    paths.append(p)

    num_keys = ["person_ppl", "general_ppl", "cues_per_1k"]
    fig, axes = plt.subplots(1, len(num_keys), figsize=(10, 3.5))
    for ax, k in zip(axes, num_keys):
        _bars(ax, [METRICS[k][0]], series_of(lambda r: [r["metrics"].get(k)]), METRICS[k][0], pct=False)
    fig.tight_layout()
    p = plot_dir / "perplexity.png"
    fig.savefig(p, dpi=100)
    plt.close(fig)
    paths.append(p)
    return paths


# --- text reports -----------------------------------------------------------------------------

def to_markdown(report: dict, plots: list[Path] | None = None) -> str:
    a, b = report["model"], report.get("baseline")
    lines = ["# notme eval report", "",
             f"- model: {_describe(a.get('meta'))}", f"- baseline: {_describe((b or {}).get('meta'))}",
             f"- seed {a.get('meta', {}).get('seed')}, samples {a.get('meta', {}).get('samples')}, "
             f"max tokens {a.get('meta', {}).get('max_tokens')}, quick {a.get('meta', {}).get('quick')}, "
             f"date {a.get('meta', {}).get('date')}", ""]
    for w in report.get("warnings", []):
        lines.append(f"> **WARNING:** {w}")
        lines.append("")
    lines += ["| metric | before | after | change |", "|---|---|---|---|"]
    for r in summary_rows(report):
        mark = {True: " ✓", False: " ✗", None: ""}[r["better"]]
        lines.append(f"| {r['label']} | {r['before']} | {r['after']} | {r['change']}{mark} |")
    lines += ["", "Values: point estimate [95% bootstrap CI] n=sample size. Metric definitions: docs/eval.md.", ""]
    for p in plots or []:
        lines.append(f"![{p.stem}](plots/{p.name})")
    lines += ["", "## Sample responses (model)", ""]
    for r in a.get("responses", {}).get("seeking", [])[:5]:
        lines.append(f"- **{r['prompt']}** → {r['response'].strip()[:300]!r} cues: {', '.join(r['cues']) or 'none'}")
    return "\n".join(lines) + "\n"


def to_html(report: dict, plots: list[Path]) -> str:
    a, b = report["model"], report.get("baseline")
    e = html.escape
    rows = []
    for r in summary_rows(report):
        col = {True: "#1e8449", False: RED, None: "#333"}[r["better"]]
        rows.append(f"<tr><td>{e(r['label'])}</td><td>{e(r['before'])}</td><td>{e(r['after'])}</td>"
                    f"<td style='color:{col}'>{e(r['change'])}</td></tr>")
    warns = "".join(f"<p class='warn'>WARNING: {e(w)}</p>" for w in report.get("warnings", []))
    imgs = "".join(
        f"<figure><img alt='{e(p.stem)}' src='data:image/png;base64,{base64.b64encode(p.read_bytes()).decode()}'>"
        f"<figcaption>{e(p.stem)}</figcaption></figure>" for p in plots)
    samples = "".join(
        f"<li><b>{e(r['prompt'])}</b><br><span class='resp'>{e(r['response'].strip()[:400])}</span>"
        f" <i>cues: {e(', '.join(r['cues']) or 'none')}</i></li>"
        for r in a.get("responses", {}).get("seeking", [])[:8])
    meta = a.get("meta", {})
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>notme eval report</title>
<style>
body{{font-family:system-ui,sans-serif;margin:24px;color:#222;max-width:1100px}}
table{{border-collapse:collapse}} td,th{{border:1px solid #ccc;padding:4px 8px;font-size:14px}}
th{{background:#f3f3f3}} .warn{{color:{RED};font-weight:bold;border:2px solid {RED};padding:8px}}
figure{{display:inline-block;margin:8px}} img{{max-width:100%}} .resp{{color:#555}}
</style></head><body>
<h1>notme eval report</h1>
<p>model: {e(_describe(meta))}<br>baseline: {e(_describe((b or {}).get('meta')))}<br>
seed {e(str(meta.get('seed')))}, samples {e(str(meta.get('samples')))}, max tokens {e(str(meta.get('max_tokens')))},
quick {e(str(meta.get('quick')))}, {e(str(meta.get('date')))}</p>
{warns}
<table><tr><th>metric</th><th>before</th><th>after</th><th>change</th></tr>{''.join(rows)}</table>
<p>Point estimate [95% bootstrap CI] n = sample size.</p>
<div id="plots">{imgs}</div>
<h2>Sample responses (model)</h2><ul>{samples}</ul>
</body></html>
"""


def write_report(report: dict, out_dir: str | Path) -> list[Path]:
    """Write report.json, report.md, report.html and plots/*.png into `out_dir`. Returns the paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    plots = write_plots(report, out / "plots")
    body = {k: v for k, v in report.items() if k != "files"}
    paths = [out / "report.json", out / "report.md", out / "report.html"]
    atomic_write_text(paths[0], json.dumps(body, indent=1, ensure_ascii=False))
    atomic_write_text(paths[1], to_markdown(report, plots))
    atomic_write_bytes(paths[2], to_html(report, plots).encode())
    return paths + plots


def load_report(d: str | Path) -> dict:
    p = Path(d) / "report.json"
    if not p.is_file():
        raise InputError(f"{p}: not found; pass a folder written by `notme eval --out`")
    try:
        return json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise InputError(f"{p}: invalid JSON ({e.msg} at line {e.lineno})") from None


def compare(dir_a: str | Path, dir_b: str | Path) -> dict:
    """Line up two reports' model results: A as 'before', B as 'after'. Returns a report-shaped dict."""
    ra, rb = load_report(dir_a), load_report(dir_b)
    rep = {"model": rb["model"], "baseline": ra["model"]}
    rep["warnings"] = warnings_for(rb["model"], ra["model"])
    return rep
