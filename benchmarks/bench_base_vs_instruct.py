"""Start from a base model or from the instruct default? The same two-phase recipe on the bundled
person's data from smollm2-135m (instruct) and gemma3-270m (base), evaluated before and after on
the same prompt sets.

Each model runs in its own process (`--model SPEC`), writing <work>/<spec>.json; `--table`
turns those into the markdown table recorded in benchmarks/results/models.md.

Each model is prompted in its own format: the instruct model through its chat template, the base
model through the plain-text frame (models/frame.py), which is what a user of the toolkit gets;
every eval result records which frame it used.

    nice -n 5 .venv/bin/python benchmarks/bench_base_vs_instruct.py --model smollm2-135m
    nice -n 5 .venv/bin/python benchmarks/bench_base_vs_instruct.py --model gemma3-270m
    .venv/bin/python benchmarks/bench_base_vs_instruct.py --table
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import notme_mlx  # noqa: F401  (first: the CPU BLAS shim loads before mlx.core)
import mlx.core as mx
import mlx_lm

from notme_mlx.data.builder import build_dataset
from notme_mlx.eval.runner import _subset, evaluate, prompt_sets
from notme_mlx.lora import load_adapter
from notme_mlx.ingest import ingest_to_file
from notme_mlx.models import load_model
from notme_mlx.models.frame import describe_frame
from notme_mlx.recipe import apply_overrides, load_raw, recipe_from_dict
from notme_mlx.resources import bundled_file
from notme_mlx.samples import IDENTITY_FILE, OWNER, sample_paths
from notme_mlx.train.trainer import train

METRICS = [  # (key, label, lower is better)
    ("vsr", "validation-seeking rate (greedy, seeking set)", True),
    ("style_distance", "voice distance to held-out replies", True),
    ("person_ppl", "perplexity of the person's held-out replies", True),
    ("factual_acc", "factual accuracy", False),
    ("general_ppl", "general-text perplexity (forgetting)", True),
    ("refusal_rate", "refusal of harmful prompts (kept)", False),
]


def data_dir(work: Path, recipe) -> Path:
    d = work / "data"
    if not (d / "train.jsonl").exists():
        work.mkdir(parents=True, exist_ok=True)
        ingest_to_file(sample_paths(), work / "messages.jsonl", me=[OWNER], identity=IDENTITY_FILE, progress=False)
        build_dataset(work / "messages.jsonl", d, recipe.build, force=True, max_seq_len=recipe.data.max_seq_len)
    return d


def _slim(res: dict) -> dict:
    return {"metrics": res["metrics"], "n": res["n"], "responses": {k: v[:4] for k, v in res["responses"].items()}}


# the sets the comparison reads get `n` prompts; the others (refusal/compliance/clarify checks,
# not compared here) get 2 so the shared eval runs
MAIN_SETS = ("seeking", "factual")


def small_sets(n: int) -> dict:
    return {k: _subset(v, n if k in MAIN_SETS else 2) for k, v in prompt_sets().items()}


def _wait_for(path: Path, poll: float = 30.0) -> None:
    while not (path / "adapters.safetensors").exists():
        time.sleep(poll)


def run_one(spec: str, work: Path, seed: int, n: int = 8, max_tokens: int = 48, adapters: str | None = None) -> dict:
    recipe_path = bundled_file("recipes", "quickstart.yaml")
    d = work / "data"
    over = {"model": spec, "out_dir": str(work), "name": f"train-{spec}", "data.train": str(d / "train.jsonl"),
            "data.valid": str(d / "valid.jsonl"), "data.pairs": str(d / "pairs.jsonl")}
    recipe = recipe_from_dict(apply_overrides(load_raw(recipe_path), over), str(recipe_path))
    data_dir(work, recipe)
    t0 = time.perf_counter()
    model, tok, info = load_model(spec)
    times = {"load": time.perf_counter() - t0}
    sets = small_sets(n)
    kw = dict(data_dir=d, quick=True, samples=0, seed=seed, sets=sets, max_tokens=max_tokens)
    t0 = time.perf_counter()
    before = evaluate(model, tok, **kw)
    times["eval_before"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    if adapters:  # trained elsewhere with the same recipe and data (e.g. `notme quickstart --model ...`)
        _wait_for(Path(adapters))
        load_adapter(model, adapters)
        steps, phases = None, []
        run = Path(adapters).parent / "metrics.jsonl"
        phases = [{"name": "from " + str(adapters), "steps": "?", "val": None}]
        if run.exists():
            rows = [json.loads(x) for x in run.read_text().splitlines() if x.strip()]
            steps = sum(1 for r in rows if r.get("type", "train") == "train" and "loss" in r) or None
    else:
        out = train(recipe, model=model, tokenizer=tok, force=True)
        steps, phases = out.steps, [{"name": p["name"], "steps": p["steps"], "val": p.get("val")} for p in out.phases]
    times["train"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    after = evaluate(model, tok, **kw)
    times["eval_after"] = time.perf_counter() - t0
    return {"model": spec, "architecture": info["architecture"], "n_params": info["n_params"],
            "frame": describe_frame(tok), "recipe": str(recipe_path), "steps": steps, "phases": phases,
            "adapters": adapters, "n": n, "max_tokens": max_tokens,
            "before": _slim(before), "after": _slim(after), "seconds": {k: round(v, 1) for k, v in times.items()},
            "seed": seed, "versions": {"mlx": mx.__version__, "mlx_lm": mlx_lm.__version__},
            "machine": f"{platform.machine()} {platform.system()}, {platform.processor() or '?'}",
            "date": time.strftime("%Y-%m-%d", time.gmtime())}


def _fmt(m: dict | None, key: str) -> str:
    if not m or m.get("value") is None:
        return "–"
    v, lo, hi = m["value"], m.get("lo"), m.get("hi")
    pct = key in ("vsr", "factual_acc", "refusal_rate")
    f = (lambda x: f"{100 * x:.0f}%") if pct else (lambda x: f"{x:.3g}")
    ci = f" [{f(lo)}, {f(hi)}]" if lo is not None and hi is not None else ""
    return f"{f(v)}{ci}"


def table(work: Path) -> str:
    rows = [json.loads(p.read_text()) for p in sorted((work / "base_vs_instruct").glob("*.json"), reverse=True)]
    lines = ["| metric (n) | " + " | ".join(f"{r['model']} before | {r['model']} after" for r in rows) + " |",
             "|---|" + "---|---|" * len(rows)]
    for key, label, _ in METRICS:
        n = rows[0]["before"]["metrics"].get(key, {}) or {}
        cells = []
        for r in rows:
            cells += [_fmt(r["before"]["metrics"].get(key), key), _fmt(r["after"]["metrics"].get(key), key)]
        lines.append(f"| {label} (n={n.get('n', '?')}) | " + " | ".join(cells) + " |")
    lines.append("")
    for r in rows:
        lines.append(f"- `{r['model']}` ({r['architecture']}, {r['n_params'] / 1e6:.0f} M params): frame "
                     f"{r['frame']}; {r['steps']} steps ({', '.join(p['name'] + ' ' + str(p['steps']) for p in r['phases'])}); "
                     f"n={r.get('n')} prompts per compared set, {r.get('max_tokens')} tokens per reply; "
                     f"seconds {r['seconds']}; mlx {r['versions']['mlx']}, mlx-lm {r['versions']['mlx_lm']}, {r['date']}")
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model")
    ap.add_argument("--work", default="/tmp/notme-base-vs-instruct")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--table", action="store_true")
    ap.add_argument("--n", type=int, default=8, help="prompts per compared set (seeking, factual)")
    ap.add_argument("--max-tokens", type=int, default=48)
    ap.add_argument("--adapters", help="evaluate these adapters (trained with the same recipe) instead of training")
    a = ap.parse_args()
    work = Path(a.work)
    if a.table:
        print(table(work))
        return
    res = run_one(a.model, work, a.seed, a.n, a.max_tokens, a.adapters)
    (work / "base_vs_instruct").mkdir(parents=True, exist_ok=True)
    (work / "base_vs_instruct" / f"{a.model}.json").write_text(json.dumps(res, indent=2, default=str))
    print(json.dumps({k: res[k] for k in ("model", "frame", "steps", "seconds")}, default=str))


if __name__ == "__main__":
    main()
