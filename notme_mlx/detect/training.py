"""Training the learned detector stage: corpus -> labelled sentences/clauses -> logistic
regression (numpy, seeded, deterministic) -> temperature scaling -> threshold.

`train_model(seed)` is what `notme detect train` runs:
  * `holdout=True`: fit on the train families, calibrate on valid families, report test
    families (constructions the model never saw);
  * `holdout=False` (the shipped model): fit on train + test families, calibrate on valid.
Extra labelled rows (`--add`) join the training data with a higher weight.
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError
from ..io import read_jsonl, read_yaml
from .corpus import LABELS, generate
from .detector import CATEGORIES, Detector
from .learned import Hasher, LearnedDetector, Model, clauses

# chosen on the validation families and the dev set tests/data/detector_eval.jsonl (see docs/detect.md)
DEFAULTS = {"dim": 1 << 17, "char_n": 4, "epochs": 6, "lr": 0.05, "l2": 1e-6, "batch": 256, "per_family": 240,
            "threshold": 0.7}


def units(text: str, spans) -> list[tuple[str, int]]:
    """(sentence or clause, label index) for one message with known cue spans [(a, b, category)].

    A unit takes the category of a cue span it overlaps on at least one letter; else "none".
    Sentences come from the engine's own splitter; clauses are added for multi-clause sentences.
    """
    masked = Detector.mask(text)
    out = []

    def label(a: int, b: int) -> int:
        for x, y, c in spans:
            lo, hi = max(a, x), min(b, y)
            if hi > lo and any(ch.isalpha() for ch in masked[lo:hi]):
                return LABELS.index(c)
        return 0

    for a, b in Detector.sentences(masked):
        while a < b and masked[a].isspace():
            a += 1
        while b > a and masked[b - 1].isspace():
            b -= 1
        if b - a < 2 or not any(ch.isalpha() for ch in masked[a:b]):
            continue
        out.append((masked[a:b], label(a, b)))
        cl = clauses(masked[a:b])
        if len(cl) > 1:
            for x, y in cl:
                if any(ch.isalpha() for ch in masked[a + x:a + y]):
                    out.append((masked[a + x:a + y], label(a + x, a + y)))
    return out


def examples(messages: list[dict]) -> tuple[list[str], np.ndarray, list[str]]:
    """Flatten messages to (units, labels, family of each unit)."""
    texts, labs, fams = [], [], []
    for m in messages:
        for u, y in units(m["text"], m["spans"]):
            texts.append(u)
            labs.append(y)
            fams.append(m.get("family", ""))
    return texts, np.asarray(labs, np.int64), fams


def fit(idx: list[np.ndarray], y: np.ndarray, dim: int, seed: int = 0, epochs: int = 12, lr: float = 0.05,
        l2: float = 1e-6, batch: int = 128, weights: np.ndarray | None = None, char_n: int = 4) -> Model:
    """Multinomial logistic regression by Adam on hashed sparse rows; deterministic for a seed."""
    K = len(LABELS)
    rng = np.random.default_rng(seed)
    W = np.zeros((dim, K), np.float32)
    b = np.zeros(K, np.float32)
    mW, vW = np.zeros_like(W), np.zeros_like(W)
    mb, vb = np.zeros_like(b), np.zeros_like(b)
    b1, b2, eps = 0.9, 0.999, 1e-8
    n = len(idx)
    # class weights: every label weighs the same in total
    sw = weights.astype(np.float32) if weights is not None else np.ones(n, np.float32)
    model = Model(W, b, 1.0, 0.5, char_n)
    t = 0
    for _ in range(epochs):
        order = rng.permutation(n)
        for s in range(0, n, batch):
            sel = order[s:s + batch]
            bi = [idx[i] for i in sel]
            P = model.probs(bi, temperature=1.0)
            G = P
            G[np.arange(len(sel)), y[sel]] -= 1.0
            G *= (sw[sel] / sw[sel].sum())[:, None]
            gb = G.sum(axis=0)
            lens = np.asarray([len(i) for i in bi])
            G /= np.sqrt(np.maximum(lens, 1))[:, None]  # rows are L2-normalized binary vectors
            rows = np.repeat(np.arange(len(sel)), lens)
            flat = np.concatenate(bi)
            gW = np.zeros_like(W)
            for k in range(K):
                gW[:, k] = np.bincount(flat, weights=G[rows, k], minlength=dim)
            gW += l2 * W
            t += 1
            for p, g, m_, v_ in ((W, gW, mW, vW), (b, gb, mb, vb)):
                m_ *= b1
                m_ += (1 - b1) * g
                v_ *= b2
                v_ += (1 - b2) * g * g
                p -= lr * (m_ / (1 - b1 ** t)) / (np.sqrt(v_ / (1 - b2 ** t)) + eps)
    return model


def nll(model: Model, idx, y, T: float) -> float:
    P = model.probs(idx, temperature=T)
    return float(-np.mean(np.log(np.maximum(P[np.arange(len(y)), y], 1e-12))))


def fit_temperature(model: Model, idx, y) -> float:
    """T minimizing validation NLL (golden-section search over log T in [log 0.05, log 20])."""
    lo, hi = np.log(0.05), np.log(20.0)
    g = (np.sqrt(5) - 1) / 2
    a, b = hi - g * (hi - lo), lo + g * (hi - lo)
    fa, fb = nll(model, idx, y, np.exp(a)), nll(model, idx, y, np.exp(b))
    for _ in range(40):
        if fa < fb:
            hi, b, fb = b, a, fa
            a = hi - g * (hi - lo)
            fa = nll(model, idx, y, np.exp(a))
        else:
            lo, a, fa = a, b, fb
            b = lo + g * (hi - lo)
            fb = nll(model, idx, y, np.exp(b))
    return float(np.exp((lo + hi) / 2))


def load_additions(path) -> list[dict]:
    """Person-provided training rows as corpus messages ({text, spans, family, split}).

    Accepts (by content):
      * JSONL `{"text", "categories": [...]}` (the eval format): the whole text is the unit;
      * JSONL correction pairs `{"prompt", "chosen", "rejected"}` (`notme correct`, pairs.jsonl):
        sentences of `rejected` that are not in `chosen` are positives (category: the shipped
        model's best category for them), sentences of `chosen` are negatives;
      * a YAML recipe / lexicon with `detect.extra_cues` or `extra_cues`: each cue pattern that is
        plain text (no regex syntax beyond `?`) becomes a positive of its category.
    """
    path = str(path)
    if path.endswith((".yaml", ".yml")):
        doc = read_yaml(path, "additions file") or {}
        cues = (doc.get("detect") or {}).get("extra_cues") or doc.get("extra_cues") or []
        out = []
        for i, c in enumerate(cues):
            if not isinstance(c, dict) or c.get("category") not in CATEGORIES or not isinstance(c.get("pattern"), str):
                raise InputError(f"{path}: extra_cues[{i}]: expected {{category: one of {list(CATEGORIES)}, "
                                 "pattern: str}}")
            pat = c["pattern"].replace("\\?", "?").replace(",?", ",").replace("?", "")
            if any(ch in pat for ch in "()[]{}|*+\\^$"):
                continue  # a real regex: the lexicon handles it; nothing literal to learn from
            for t in (pat, pat.lower(), pat.lower().replace("'", "")):
                out.append({"text": t, "spans": [(0, len(t), c["category"])], "family": "add", "split": "train"})
        return out
    out, shipped = [], None
    for i, r in read_jsonl(path, numbered=True):
        if isinstance(r.get("text"), str) and isinstance(r.get("categories"), list):
            cats = [c for c in r["categories"] if c in CATEGORIES]
            if len(cats) != len(r["categories"]):
                raise InputError(f"{path}:{i}: unknown category in {r['categories']} (use {list(CATEGORIES)})")
            t = r["text"]
            out.append({"text": t, "spans": [(0, len(t), cats[0])] if cats else [], "family": "add",
                        "split": "train"})
        elif all(isinstance(r.get(k), (str, list)) for k in ("chosen", "rejected")):
            rej, cho = _content(r["rejected"]), _content(r["chosen"])
            keep = {s.strip() for s in _sents(cho)}
            if shipped is None:
                shipped = LearnedDetector.load()
            for s in _sents(rej):
                if s.strip() in keep:
                    continue
                p = shipped.score_sentences([s])[0]
                cat = LABELS[1 + int(np.argmax(p[1:]))]
                out.append({"text": s, "spans": [(0, len(s), cat)], "family": "add", "split": "train"})
            for s in _sents(cho):
                out.append({"text": s, "spans": [], "family": "add", "split": "train"})
        else:
            raise InputError(f"{path}:{i}: expected {{\"text\", \"categories\"}} or {{\"chosen\", \"rejected\"}}")
    if not out:
        raise InputError(f"{path}: no usable rows")
    return out


def _content(x) -> str:
    if isinstance(x, list):  # chat messages: the last assistant turn
        for m in reversed(x):
            if isinstance(m, dict) and m.get("role") == "assistant":
                return str(m.get("content", ""))
        return ""
    return x


def _sents(text: str) -> list[str]:
    masked = Detector.mask(text)
    return [text[a:b].strip() for a, b in Detector.sentences(masked) if text[a:b].strip()]


def train_model(seed: int = 0, holdout: bool = False, additions: list[dict] | None = None, add_weight: float = 3.0,
                **hp) -> tuple[Model, dict]:
    """Generate the corpus, fit, calibrate. Returns (model, info) where info has sizes and valid/test metrics."""
    h = {**DEFAULTS, **hp}
    msgs = generate(seed, per_family=h["per_family"])
    fit_splits = ("train",) if holdout else ("train", "test")
    tr = [m for m in msgs if m["split"] in fit_splits] + list(additions or [])
    va = [m for m in msgs if m["split"] == "valid"]
    hasher = Hasher(h["dim"], h["char_n"])
    xt, yt, ft = examples(tr)
    it = hasher.split(xt)
    w = np.asarray([add_weight if f == "add" else 1.0 for f in ft], np.float32)
    model = fit(it, yt, h["dim"], seed=seed, epochs=h["epochs"], lr=h["lr"], l2=h["l2"], batch=h["batch"],
                weights=w, char_n=h["char_n"])
    xv, yv, _ = examples(va)
    iv = hasher.split(xv)
    model.temperature = fit_temperature(model, iv, yv)
    model.threshold = float(h["threshold"])
    info = {"seed": seed, "holdout": holdout, "train_units": len(xt), "valid_units": len(xv),
            "train_messages": len(tr), "additions": len(additions or []),
            "families": {s: sorted({m["family"] for m in msgs if m["split"] == s}) for s in ("train", "valid", "test")},
            "hyperparameters": h}
    return model, info


def reliability(scores: np.ndarray, positive: np.ndarray, bins: int = 10) -> list[dict]:
    """Per score bin: count, mean score, observed positive rate (for a reliability plot)."""
    out = []
    edges = np.linspace(0, 1, bins + 1)
    for i in range(bins):
        sel = (scores >= edges[i]) & ((scores < edges[i + 1]) if i < bins - 1 else (scores <= 1))
        if sel.any():
            out.append({"lo": float(edges[i]), "hi": float(edges[i + 1]), "n": int(sel.sum()),
                        "mean_score": float(scores[sel].mean()), "positive_rate": float(positive[sel].mean())})
    return out
