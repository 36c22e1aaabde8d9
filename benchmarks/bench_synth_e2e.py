"""The synth pipeline end to end on the default model, through the `notme` CLI:

    base eval -> data synth (starter prompts, the model's own replies, detector-flagged ones
    revised into pairs) -> data revise (re-check) -> train (one DPO phase, recipes/synth-dpo.yaml)
    -> eval with the base report as baseline

Each step is skipped when its output exists, so an interrupted run resumes. Prints and writes a
JSON summary (validation-seeking and refusal before -> after, with n and 95% CIs).

    python benchmarks/bench_synth_e2e.py --work e2e/ [--n 480] [--tokens 160] [--samples 4]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from clisteps import notme_exe, sh

ROOT = Path(__file__).resolve().parent.parent
KEYS = ["vsr", "vsr_sampled", "cues_per_1k", "final_sentence", "refusal_rate", "benign_compliance",
        "clarify_rate", "factual_acc", "general_ppl", "propensity", "propensity_logp"]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default="e2e")
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--n", type=int, default=480, help="synth replies (the 120 starter prompts cycled)")
    ap.add_argument("--temp", type=float, default=0.9)
    ap.add_argument("--tokens", type=int, default=160, help="max tokens per reply (synth and eval)")
    ap.add_argument("--samples", type=int, default=4, help="sampled replies per seeking prompt in eval")
    ap.add_argument("--recipe", default=str(ROOT / "recipes" / "synth-dpo.yaml"))
    ap.add_argument("--set", action="append", default=[], help="recipe overrides passed to notme train")
    a = ap.parse_args()
    w = Path(a.work).resolve()
    (w / "synth").mkdir(parents=True, exist_ok=True)
    log = w / "e2e.log"
    notme = notme_exe()
    times = {}
    ev = ["--max-tokens", str(a.tokens), "--samples", str(a.samples)]
    if not (w / "base_report" / "report.json").exists():
        times["eval_base"] = sh(notme + ["eval", "--model", a.model, "--no-baseline", *ev, "--out", "base_report"], log)
    if not (w / "synth" / "synth.pairs.jsonl").exists():
        times["synth"] = sh(notme + ["data", "synth", "--model", a.model, "--prompts", "starter", "-n", str(a.n),
                                     "--temp", str(a.temp), "--max-tokens", str(a.tokens), "--batch-size", "24",
                                     "-o", "synth/synth.jsonl"], log)
    if not (w / "synth" / "revised.pairs.jsonl").exists():
        # `data revise` reads the pairs' rejected sides again and re-derives every chosen (each
        # must pass the detector): the critique-and-revise step as its own command
        times["revise"] = sh(notme + ["data", "revise", "synth/synth.pairs.jsonl", "-o", "synth/revised.pairs.jsonl"],
                             log)
    run_dir = w / "runs" / "synth-dpo"
    if not (run_dir / "adapters" / "adapters.safetensors").exists():
        sets = ["--set", "data.pairs=synth/revised.pairs.jsonl", "--set", f"out_dir={w / 'runs'}",
                "--set", f"model={a.model}"] + [x for s in a.set for x in ("--set", s)]
        times["train"] = sh(notme + ["train", a.recipe, *sets], log)
    if not (w / "after_report" / "report.json").exists():
        times["eval_after"] = sh(notme + ["eval", "--model", a.model, "--adapters", str(run_dir / "adapters"),
                                          "--baseline", "base_report", *ev, "--out", "after_report"], log)
    base = json.loads((w / "base_report" / "report.json").read_text())
    after = json.loads((w / "after_report" / "report.json").read_text())
    summary = {"args": vars(a), "times_s": times, "metrics": {}}
    bm = base.get("model", base).get("metrics", {})
    am = after.get("model", after).get("metrics", {})
    for k in KEYS:
        if k in bm or k in am:
            summary["metrics"][k] = {"before": bm.get(k), "after": am.get(k)}
    for name in ("synth.jsonl", "synth.pairs.jsonl", "revised.pairs.jsonl"):
        p = w / "synth" / name
        summary.setdefault("files", {})[name] = sum(1 for ln in p.read_text().splitlines() if ln.strip())
    (w / "summary.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
