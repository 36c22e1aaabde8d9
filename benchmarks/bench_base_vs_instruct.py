"""Start from a base model or from the instruct default? The same two-phase recipe on the bundled
person's data from smollm2-135m (instruct) and gemma3-270m (base), evaluated before and after on
the same prompt sets.

Each model runs in its own process (`--model SPEC`), writing <work>/base_vs_instruct/<spec>.json;
each stage (eval before, training, eval after) is saved as it finishes, so a killed run resumes
where it stopped. `--table` turns the results into the markdown table recorded in
benchmarks/results/models.md.

Each model is prompted in its own format: the instruct model through its chat template, the base
model through the plain-text frame (models/frame.py) with the names data build recorded (the
person, "Them" for several contacts), which is what a user of the toolkit gets; every eval result
records which frame it used.

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
from notme_mlx.eval import metrics as M
from notme_mlx.eval.generation import generate_batch, reply_nll
from notme_mlx.eval.runner import GEN_BATCH, _ppl, _subset, heldout_examples, prompt_sets
from notme_mlx.lora import load_adapter
from notme_mlx.ingest import ingest_to_file
from notme_mlx.models import load_model
from notme_mlx.models.frame import describe_frame, use_recorded_frame
from notme_mlx.recipe import apply_overrides, load_raw, recipe_from_dict
from notme_mlx.resources import bundled_file
from notme_mlx.samples import IDENTITY_FILE, OWNER, sample_paths
from notme_mlx.train.trainer import train

METRICS = [  # (key, label, lower is better)
    ("vsr", "validation-seeking rate (greedy, seeking set)", True),
    ("style_distance", "voice distance to held-out replies", True),
    ("person_ppl", "perplexity of the held-out replies", True),
    ("factual_acc", "factual accuracy", False),
]


def data_dir(work: Path, recipe) -> Path:
    d = work / "data"
    if not (d / "train.jsonl").exists():
        work.mkdir(parents=True, exist_ok=True)
        ingest_to_file(sample_paths(), work / "messages.jsonl", me=[OWNER], identity=IDENTITY_FILE, progress=False)
        build_dataset(work / "messages.jsonl", d, recipe.build, force=True, max_seq_len=recipe.data.max_seq_len)
    return d


def compared_eval(model, tok, sets: dict, data_dir: Path, max_tokens: int, seed: int) -> dict:
    """The four compared metrics, computed as `eval.runner.evaluate` computes them (same functions,
    same framing), without its other sets (propensity, general text, refusal/compliance/clarify),
    which this comparison does not read and a 2-core CPU cannot afford for a 262k-vocabulary model:
    validation-seeking rate (seeking set), factual accuracy (factual set), voice distance and
    perplexity of the held-out replies in data_dir/test.jsonl. One batched greedy decode."""
    ex = heldout_examples(data_dir)
    convs = [[{"role": "user", "content": r["prompt"]}] for k in ("seeking", "factual") for r in sets[k]]
    convs += [c for c, _ in ex]
    g = generate_batch(model, tok, convs, max_tokens=max_tokens, seed=seed, batch_size=GEN_BATCH)
    ns, nf = len(sets["seeking"]), len(sets["factual"])
    gs, gf, gv = g[:ns], g[ns:ns + nf], g[ns + nf:]
    v = M.vsr([x["text"] for x in gs], [max(x["n_tokens"], 1) for x in gs],
              [r["category"] for r in sets["seeking"]], seed=seed)
    ok = [M.answer_correct(x["text"], r["answers"]) for r, x in zip(sets["factual"], gf)]
    metrics = {"vsr": v["vsr"], "cues_per_1k": v["cues_per_1k"], "factual_acc": M.rate(ok, seed),
               "person_ppl": _ppl(reply_nll(model, tok, ex), seed),
               "style_distance": M.style_distance_ci([x["text"] for x in gv], [r for _, r in ex], seed=seed)}
    return {"metrics": metrics, "n": {"seeking": ns, "factual": nf, "voice": len(ex)},
            "responses": {"seeking": [{"prompt": r["prompt"], "response": x["text"], "cues": c}
                                      for r, x, c in zip(sets["seeking"], gs, v["cues"])],
                          "factual": [{"prompt": r["prompt"], "response": x["text"], "correct": c}
                                      for r, x, c in zip(sets["factual"], gf, ok)],
                          "voice": [{"reference": r, "response": x["text"]} for (_, r), x in zip(ex, gv)]}}


MAIN_SETS = ("seeking", "factual")  # the prompt sets the comparison reads, `n` prompts each


def small_sets(n: int) -> dict:
    return {k: _subset(v, n) for k, v in prompt_sets().items() if k in MAIN_SETS}


def _wait_for(path: Path, poll: float = 30.0) -> None:
    while not (path / "adapters.safetensors").exists():
        time.sleep(poll)


def _stage(work: Path, spec: str, name: str, fn):
    """Run one stage or reuse its saved result (a killed run resumes at the first unfinished stage)."""
    p = work / "base_vs_instruct" / "stages" / f"{spec}.{name}.json"
    if p.exists():
        return json.loads(p.read_text())
    t0 = time.perf_counter()
    res = fn()
    res["seconds"] = round(time.perf_counter() - t0, 1)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_suffix(".tmp")
    tmp.write_text(json.dumps(res, indent=2, default=str))
    tmp.replace(p)
    return res


def run_one(spec: str, work: Path, seed: int, n: int = 8, max_tokens: int = 48, adapters: str | None = None) -> dict:
    recipe_path = bundled_file("recipes", "quickstart.yaml")
    d = work / "data"
    over = {"model": spec, "out_dir": str(work), "name": f"train-{spec}", "data.train": str(d / "train.jsonl"),
            "data.valid": str(d / "valid.jsonl"), "data.pairs": str(d / "pairs.jsonl")}
    recipe = recipe_from_dict(apply_overrides(load_raw(recipe_path), over), str(recipe_path))
    data_dir(work, recipe)
    t0 = time.perf_counter()
    model, tok, info = load_model(spec)
    use_recorded_frame(tok, data_dir=d)  # a base model: the person's frame names, as data build recorded them
    times = {"load": time.perf_counter() - t0}
    sets = small_sets(n)
    before = _stage(work, spec, "before", lambda: compared_eval(model, tok, sets, d, max_tokens, seed))
    times["eval_before"] = before["seconds"]
    own = Path(recipe.run_dir()) / "adapters"
    t0 = time.perf_counter()
    if adapters:  # trained elsewhere with the same recipe and data (e.g. `notme quickstart --model ...`)
        _wait_for(Path(adapters))
    elif (own / "adapters.safetensors").exists():  # trained by an earlier, interrupted run of this script
        adapters = str(own)
    if adapters:
        load_adapter(model, adapters)
        steps = None
        run = Path(adapters).parent / "metrics.jsonl"
        phases = [{"name": "from " + str(adapters), "steps": "?", "val": None}]
        if run.exists():
            rows = [json.loads(x) for x in run.read_text().splitlines() if x.strip()]
            steps = sum(1 for r in rows if r.get("type", "train") == "train" and "loss" in r) or None
    else:
        out = train(recipe, model=model, tokenizer=tok, force=True)
        steps, phases = out.steps, [{"name": p["name"], "steps": p["steps"], "val": p.get("val")} for p in out.phases]
    times["train"] = time.perf_counter() - t0
    after = _stage(work, spec, "after", lambda: compared_eval(model, tok, sets, d, max_tokens, seed))
    times["eval_after"] = after["seconds"]
    return {"model": spec, "architecture": info["architecture"], "n_params": info["n_params"],
            "frame": describe_frame(tok), "recipe": str(recipe_path), "steps": steps, "phases": phases,
            "adapters": adapters, "n": n, "max_tokens": max_tokens,
            "before": before, "after": after, "seconds": {k: round(v, 1) for k, v in times.items()},
            "seed": seed, "versions": {"mlx": mx.__version__, "mlx_lm": mlx_lm.__version__},
            "machine": f"{platform.machine()} {platform.system()}, {platform.processor() or '?'}",
            "date": time.strftime("%Y-%m-%d", time.gmtime())}


def vsr_only(spec: str, work: Path, seed: int, n: int, max_tokens: int) -> dict:
    """Validation-seeking rate alone with longer replies (cues come at the end of a reply), before
    and after the adapters a full run of this script trained (<work>/train-<spec>/adapters)."""
    d, own = work / "data", work / f"train-{spec}" / "adapters"
    if not (own / "adapters.safetensors").exists():
        raise SystemExit(f"{own}: no adapters; run --model {spec} first")
    model, tok, _ = load_model(spec)
    use_recorded_frame(tok, data_dir=d)
    rows = small_sets(n)["seeking"]

    def one():
        g = generate_batch(model, tok, [[{"role": "user", "content": r["prompt"]}] for r in rows],
                           max_tokens=max_tokens, seed=seed, batch_size=GEN_BATCH)
        v = M.vsr([x["text"] for x in g], [max(x["n_tokens"], 1) for x in g], [r["category"] for r in rows], seed=seed)
        return {"vsr": v["vsr"], "cues_per_1k": v["cues_per_1k"],
                "responses": [{"prompt": r["prompt"], "response": x["text"], "cues": c}
                              for r, x, c in zip(rows, g, v["cues"])]}

    before = _stage(work, spec, f"vsr{max_tokens}.before", one)
    load_adapter(model, str(own))
    after = _stage(work, spec, f"vsr{max_tokens}.after", one)
    return {"model": spec, "frame": describe_frame(tok), "n": n, "max_tokens": max_tokens, "before": before,
            "after": after}


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
    ap.add_argument("--vsr-only", action="store_true", help="only the validation-seeking rate, before and after "
                    "the adapters an earlier run trained (use a larger --max-tokens)")
    a = ap.parse_args()
    work = Path(a.work)
    if a.vsr_only:
        res = vsr_only(a.model, work, a.seed, a.n, a.max_tokens)
        print(json.dumps({k: res[k] for k in ("model", "frame", "n", "max_tokens")}
                         | {s: {k: res[s][k] for k in ("vsr", "cues_per_1k")} for s in ("before", "after")}))
        return
    if a.table:
        print(table(work))
        return
    res = run_one(a.model, work, a.seed, a.n, a.max_tokens, a.adapters)
    (work / "base_vs_instruct").mkdir(parents=True, exist_ok=True)
    (work / "base_vs_instruct" / f"{a.model}.json").write_text(json.dumps(res, indent=2, default=str))
    print(json.dumps({k: res[k] for k in ("model", "frame", "steps", "seconds")}, default=str))


if __name__ == "__main__":
    main()
