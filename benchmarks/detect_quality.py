"""Quality of the detector engines (lexicon, learned, both): family-held-out test, labelled sets,
calibration. Prints markdown tables; writes the reliability plot.

    .venv/bin/python benchmarks/detect_quality.py [--plot docs/detect_reliability.png]

1. Family-held-out: a model trained (same recipe, same seed) on the train families only,
   calibrated on the valid families, scored on the test families' messages (constructions it
   never saw). 2. The shipped model on the labelled sets in tests/data (detector_eval.jsonl was
   the development set for hyperparameters and threshold; detector_after_freeze.jsonl was
   written after the model was frozen; detector_contrast_replies.jsonl are clarifying replies
   to the eval contrast prompts: all negatives). 3. Reliability of the calibrated score.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import notme_mlx  # noqa: E402,F401  (BLAS shim before numpy-heavy work)
from notme_mlx.detect import get_detector  # noqa: E402
from notme_mlx.detect.corpus import generate  # noqa: E402
from notme_mlx.detect.evaluate import evaluate, load_eval_set  # noqa: E402
from notme_mlx.detect.learned import CombinedDetector, LearnedDetector  # noqa: E402
from notme_mlx.detect.training import DEFAULTS, examples, reliability, train_model  # noqa: E402

SETS = [("detector_eval.jsonl", "dev (tuned on)"), ("detector_heldout.jsonl", "held-out"),
        ("detector_samples.jsonl", "bundled samples"), ("detector_fresh.jsonl", "fresh"),
        ("detector_after_freeze.jsonl", "written after freeze"),
        ("detector_contrast_replies.jsonl", "clarifying replies (contrast)")]


def row_metrics(det, rows) -> dict:
    res = evaluate(det, rows)
    o = res["overall"]
    caught = cat_ok = 0
    kinds: dict = {}
    for r in rows:
        d = det.detect(r["text"])
        if r["categories"] and d.flagged:
            caught += 1
            cat_ok += bool(set(r["categories"]) & set(d.categories))
        if not r["categories"]:
            k = kinds.setdefault(r.get("kind") or "negative", [0, 0])
            k[0] += 1
            k[1] += d.flagged
    return {"P": o["precision"], "R": o["recall"], "tp": o["tp"], "fp": o["fp"], "fn": o["fn"],
            "cat": cat_ok / caught if caught else float("nan"), "ref": res["flagged_refusals"],
            "n_ref": res["n_refusals"], "neg_kinds": kinds, "n": len(rows)}


def fmt(name: str, eng: str, m: dict) -> str:
    return (f"| {name} | {eng} | {m['n']} | {m['P']:.3f} ({m['tp']}/{m['tp'] + m['fp']}) | "
            f"{m['R']:.3f} ({m['tp']}/{m['tp'] + m['fn']}) | {m['cat']:.3f} | {m['ref']}/{m['n_ref']} |")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--plot", default=None, help="write the reliability plot PNG here")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    lex = get_detector("lexicon")
    head = "| set | engine | texts | precision | recall | category acc. | refusals flagged |\n|---|---|---:|---:|---:|---:|---:|"

    # 1. family-held-out
    model, info = train_model(args.seed, holdout=True)
    hold = LearnedDetector(model)
    engines = {"lexicon": lex, "learned": hold, "both": CombinedDetector(lex, hold)}
    msgs = generate(args.seed, per_family=DEFAULTS["per_family"])
    print(f"hyperparameters: {DEFAULTS}\nholdout model: T={model.temperature:.3f}, threshold {model.threshold}")
    print("test families:", ", ".join(info["families"]["test"]))
    print("valid families:", ", ".join(info["families"]["valid"]))
    print(head)
    for split in ("valid", "test"):
        rows = [{"text": m["text"], "categories": sorted({s[2] for s in m["spans"]}), "kind": m["kind"]}
                for m in msgs if m["split"] == split]
        for eng, det in engines.items():
            print(fmt(f"{split} families (hold-out model)", eng, row_metrics(det, rows)))

    # 2. shipped model on the labelled sets
    shipped = {"lexicon": lex, "learned": get_detector("learned"), "both": get_detector("both")}
    print("\nshipped model:", shipped["learned"].manifest.get("sha256", "")[:12])
    print(head)
    neg_lines = []
    for f, label in SETS:
        rows = load_eval_set(ROOT / "tests" / "data" / f)
        for eng, det in shipped.items():
            m = row_metrics(det, rows)
            print(fmt(f"{label} (`{f}`)", eng, m))
            neg_lines.append(f"| {label} | {eng} | " + ", ".join(f"{k} {v[1]}/{v[0]}" for k, v in sorted(m["neg_kinds"].items())) + " |")
    print("\nnegatives flagged, by kind:\n| set | engine | flagged / total |\n|---|---|---|")
    print("\n".join(neg_lines))

    # 3. calibration: sentence units of the test families (hold-out model), texts of all labelled sets (shipped)
    xt, yt, _ = examples([m for m in msgs if m["split"] == "test"])
    p = hold.score_sentences(xt)
    s_units, pos_units = 1.0 - p[:, 0], (yt > 0).astype(float)
    texts, pos_texts = [], []
    for f, _ in SETS:
        for r in load_eval_set(ROOT / "tests" / "data" / f):
            texts.append(r["text"])
            pos_texts.append(float(bool(r["categories"])))
    s_texts = np.asarray([d.score for d in shipped["learned"].detect_batch(texts)])
    pos_texts = np.asarray(pos_texts)
    curves = {"test-family sentences/clauses (hold-out model)": (s_units, pos_units),
              "labelled-set texts (shipped model)": (s_texts, pos_texts)}
    for name, (s, y) in curves.items():
        rel = reliability(s, y)
        ece = sum(b["n"] * abs(b["mean_score"] - b["positive_rate"]) for b in rel) / len(s)
        print(f"\nreliability, {name}: n={len(s)}, expected calibration error {ece:.3f}")
        print("| score bin | n | mean score | positive rate |\n|---|---:|---:|---:|")
        for b in rel:
            print(f"| {b['lo']:.1f}-{b['hi']:.1f} | {b['n']} | {b['mean_score']:.3f} | {b['positive_rate']:.3f} |")
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(5, 5))
        ax.plot([0, 1], [0, 1], "k:", label="perfect calibration")
        for (name, (s, y)), mk in zip(curves.items(), ("o-", "s-")):
            rel = reliability(s, y)
            ax.plot([b["mean_score"] for b in rel], [b["positive_rate"] for b in rel], mk, label=name)
        ax.set_xlabel("learned score (1 - p(none), temperature-scaled)")
        ax.set_ylabel("share that is validation-seeking")
        ax.set_title("Learned detector: reliability")
        ax.legend(fontsize=7, loc="upper left")
        fig.tight_layout()
        fig.savefig(args.plot, dpi=110)
        print(f"\nwrote {args.plot}")


if __name__ == "__main__":
    main()
