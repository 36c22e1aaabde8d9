"""Detector evaluation on a labelled JSONL set, and detection rates over Message records.

Eval file: one object per line, `{"text": str, "categories": [category, ...], "kind": str?}`;
`categories: []` marks a negative; `kind: "refusal"` marks a refusal (must never be flagged).

Metrics (per category c, over texts): precision = TP/(TP+FP), recall = TP/(TP+FN), where a
text counts for c when c is among its expected categories / among the categories of the
detector's spans (only if flagged). "overall" is the same at text level (flagged vs any
expected category); "micro" sums TP/FP/FN over the categories.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path

from ..errors import InputError
from ..io import read_jsonl
from .detector import CATEGORIES, Detector


def load_eval_set(path: str | Path) -> list[dict]:
    """Read and validate an eval JSONL; raises InputError naming file:record."""
    rows = []
    for i, r in enumerate(read_jsonl(path), 1):
        cats = r.get("categories", r.get("expected"))
        if not isinstance(r.get("text"), str) or not isinstance(cats, list):
            raise InputError(f"{path}: record {i}: expected {{\"text\": str, \"categories\": [..]}}")
        rows.append({"text": r["text"], "categories": sorted(set(cats)), "kind": r.get("kind", "")})
    if not rows:
        raise InputError(f"{path}: no records")
    return rows


def _pr(tp: int, fp: int, fn: int) -> dict:
    p = tp / (tp + fp) if tp + fp else 1.0
    r = tp / (tp + fn) if tp + fn else 1.0
    f1 = 2 * p * r / (p + r) if p + r else 0.0
    return {"precision": p, "recall": r, "f1": f1, "tp": tp, "fp": fp, "fn": fn, "support": tp + fn}


def evaluate(detector: Detector, rows: list[dict]) -> dict:
    """Precision/recall per category, overall (text level) and micro; flagged refusals.

    Returns:
      {"categories": {c: {precision, recall, f1, tp, fp, fn, support}}, "overall": {...},
       "micro": {...}, "n": int, "flagged_refusals": int, "n_refusals": int, "errors": [...]}
    """
    counts = defaultdict(lambda: [0, 0, 0])
    ov = [0, 0, 0]
    errors, flagged_ref, n_ref = [], 0, 0
    for r in rows:
        d = detector.detect(r["text"])
        pred = set(d.categories) if d.flagged else set()
        exp = set(r["categories"])
        for c in pred | exp:
            counts[c][0 if (c in pred and c in exp) else (1 if c in pred else 2)] += 1
        if pred and exp:
            ov[0] += 1
        elif pred:
            ov[1] += 1
        elif exp:
            ov[2] += 1
        if r.get("kind") == "refusal":
            n_ref += 1
            flagged_ref += bool(pred)
        if pred != exp:
            errors.append({"text": r["text"], "expected": sorted(exp), "predicted": sorted(pred),
                           "spans": [s.to_dict() for s in d.spans]})
    cats = {c: _pr(*counts[c]) for c in list(CATEGORIES) + sorted(set(counts) - set(CATEGORIES))}
    micro = _pr(*(sum(v[k] for v in counts.values()) for k in range(3)))
    return {"categories": cats, "overall": _pr(*ov), "micro": micro, "n": len(rows),
            "flagged_refusals": flagged_ref, "n_refusals": n_ref, "errors": errors}


def detection_stats(detector: Detector, messages, progress=None) -> dict:
    """Detection rates over Message records, grouped by source, speaker, role and category.

    Args:
      messages: iterable of Message records (docs/ingest.md); non-text kinds are skipped.
      progress: optional task with .advance(n).
    Returns:
      {"n": int, "flagged": int, "by_source": {k: [n, flagged]}, "by_speaker": ..., "by_role": ...,
       "by_category": {category: spans}, "messages_with_category": {category: n}}
    """
    by = {"by_source": defaultdict(lambda: [0, 0]), "by_speaker": defaultdict(lambda: [0, 0]),
          "by_role": defaultdict(lambda: [0, 0])}
    cat_spans, cat_msgs = Counter(), Counter()
    n = flagged = 0
    for m in messages:
        if progress is not None:
            progress.advance(1)
        if m.get("kind", "text") != "text" or not isinstance(m.get("text"), str):
            continue
        d = detector.detect(m["text"])
        n += 1
        flagged += d.flagged
        for key, field in (("by_source", "source"), ("by_speaker", "speaker"), ("by_role", "role")):
            slot = by[key][str(m.get(field, "?"))]
            slot[0] += 1
            slot[1] += d.flagged
        if d.flagged:
            for s in d.spans:
                cat_spans[s.category] += 1
            for c in d.categories:
                cat_msgs[c] += 1
    return {"n": n, "flagged": flagged, **{k: dict(v) for k, v in by.items()},
            "by_category": dict(cat_spans), "messages_with_category": dict(cat_msgs)}
