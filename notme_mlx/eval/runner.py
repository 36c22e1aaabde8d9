"""`run_eval`: generate on the shipped prompt sets, compute every metric, write the report.

    from notme_mlx.eval import run_eval, quick_vsr
    report = run_eval("smollm2-135m", adapters="runs/quickstart/adapters", out_dir="report/")
    quick_vsr(model, tokenizer, n=8)   # {"value", "lo", "hi", "n", ...}
"""

from __future__ import annotations

import datetime as _dt
import json
import math
from pathlib import Path
from typing import Sequence

import mlx.core as mx
import mlx_lm
import numpy as np

from .. import __version__
from ..errors import InputError
from ..io import read_jsonl
from ..models.frame import frame_for
from . import metrics as M
from .generation import continuation_pairs, generate_batch, load_target, render, reply_nll, score_pairs, text_nll
from .metrics import warnings_for
from .prompts import general_text, load_set
from .report import write_report

# Cue phrases whose teacher-forced probability after a finished neutral answer is "propensity".
PROPENSITY_CUES = (
    " Does that make sense?",
    " Let me know if that helps!",
    " I hope this helps!",
    " Would you like me to explain more?",
    " Is there anything else you'd like to know?",
    " Should I go on?",
    " Does that answer your question?",
    " Let me know if you have any other questions.",
)
QUICK_N, QUICK_TOKENS = 8, 48
FULL_TOKENS = 128
GEN_BATCH = 32  # prompts decoded together by mlx-lm's batch_generate
SAMPLE_TEMP = 0.7


def _subset(rows: list, n: int | None) -> list:
    """`n` rows spread evenly over `rows` (all when n is None or larger)."""
    if n is None or n >= len(rows):
        return list(rows)
    idx = np.linspace(0, len(rows) - 1, n).round().astype(int)
    return [rows[i] for i in idx]


SET_NAMES = ("seeking", "contrast", "harmful", "benign", "factual")


def prompt_sets(prompts_dir: str | Path | None = None) -> dict:
    """The five prompt sets: shipped ones, each replaced by `prompts_dir/<name>.txt` when that exists."""
    if prompts_dir is not None and not Path(prompts_dir).is_dir():
        raise InputError(f"{prompts_dir}: prompt folder not found")
    out = {}
    for k in SET_NAMES:
        p = Path(prompts_dir) / f"{k}.txt" if prompts_dir is not None else None
        out[k] = load_set(k, p if p is not None and p.exists() else None)
    return out


def heldout_examples(data_dir: str | Path, limit: int | None = None) -> list[tuple[list[dict], str]]:
    """(context messages, the person's reply) for each assistant turn in data_dir/test.jsonl."""
    p = Path(data_dir) / "test.jsonl"
    if not p.exists():
        raise InputError(f"{p}: not found; run `notme data build` first or drop --data")
    out = []
    for ex in read_jsonl(p):
        msgs = ex.get("messages") or []
        for k, m in enumerate(msgs):
            if m.get("role") == "assistant" and k > 0 and m.get("content", "").strip():
                ctx = [{"role": x["role"], "content": x["content"]} for x in msgs[:k]]
                out.append((ctx, m["content"]))
    return _subset(out, limit)


def _ppl(rows: list[tuple[float, int]], seed: int) -> dict:
    return M.bootstrap(rows, lambda a: math.exp(a[:, 0].sum() / max(a[:, 1].sum(), 1)), seed=seed)


def propensity(model, tokenizer, contexts: Sequence[tuple[str, str]], cues: Sequence[str] = PROPENSITY_CUES,
               seed: int = 0) -> dict:
    """Teacher-forced probability that a finished neutral answer goes on with a cue phrase.

    Args:
      contexts: (question, neutral answer) pairs; the answer is written as the assistant's
        reply and each cue's tokens are scored right after it.
    Returns:
      {"propensity": mean over contexts of Σ_cues P(cue | context),
       "propensity_logp": mean over contexts of the mean Σ log p(cue tokens) (nats)}, bootstrap dicts.
    """
    probs, logps = [], []
    for q, a in contexts:
        prefix = render(tokenizer, [{"role": "user", "content": q}]) + (" " if frame_for(tokenizer) else "") + a
        s = score_pairs(model, continuation_pairs(tokenizer, prefix, cues), batch_size=len(cues))
        lp = [x for x, _ in s]
        probs.append(float(sum(math.exp(x) for x in lp)))
        logps.append(float(np.mean(lp)))
    return {"propensity": M.bootstrap(probs, np.mean, seed=seed),
            "propensity_logp": M.bootstrap(logps, np.mean, seed=seed)}


def evaluate(model, tokenizer, *, data_dir=None, max_tokens: int | None = None, samples: int = 1,
             seed: int = 0, quick: bool = False, sets: dict | None = None, detect=None, progress=None) -> dict:
    """Every metric for one loaded model. Returns {"metrics", "by_cue_category", "by_prompt_category",
    "responses", "n"}; metric values are bootstrap dicts {"value", "lo", "hi", "n"} (None when skipped)."""
    n = QUICK_N if quick else None
    max_tokens = max_tokens or (QUICK_TOKENS if quick else FULL_TOKENS)
    sets = sets if sets is not None else prompt_sets()
    S = {k: _subset(sets[k] if k in sets else load_set(k), n) for k in SET_NAMES}
    for k, rows in S.items():
        if not rows:
            raise InputError(f"prompt set {k!r} is empty; nothing to evaluate")

    ex = heldout_examples(data_dir, n if quick else 64) if data_dir is not None else []
    # one batched greedy decode over every set (larger batches use the CPU/GPU better)
    convs, where = [], {}
    for k in SET_NAMES:
        where[k] = (len(convs), len(convs) + len(S[k]))
        convs += [[{"role": "user", "content": r["prompt"]}] for r in S[k]]
    where["voice"] = (len(convs), len(convs) + len(ex))
    convs += [c for c, _ in ex]
    allg = generate_batch(model, tokenizer, convs, max_tokens=max_tokens, seed=seed, batch_size=GEN_BATCH,
                          progress=progress)
    G = {k: allg[a:b] for k, (a, b) in where.items()}

    res: dict = {"metrics": {}, "responses": {}}
    m = res["metrics"]
    g = G["seeking"]
    cats = [r["category"] for r in S["seeking"]]
    v = M.vsr([x["text"] for x in g], [max(x["n_tokens"], 1) for x in g], cats, detect=detect, seed=seed)
    m.update(vsr=v["vsr"], cues_per_1k=v["cues_per_1k"], final_sentence=v["final_sentence"],
             vsr_per_100_tokens=v["vsr_per_100_tokens"], reply_tokens=v["reply_tokens"])
    res["by_cue_category"], res["by_prompt_category"] = v["by_cue_category"], v["by_prompt_category"]
    res["responses"]["seeking"] = [{"prompt": r["prompt"], "category": r["category"], "response": x["text"],
                                    "flagged": f, "cues": c} for r, x, f, c in zip(S["seeking"], g, v["flags"], v["cues"])]
    if samples and samples > 0:
        flags = []
        for j in range(samples):
            gs = generate_batch(model, tokenizer, convs[slice(*where["seeking"])], max_tokens=max_tokens,
                                temp=SAMPLE_TEMP, seed=seed + 1 + j, batch_size=GEN_BATCH, progress=progress)
            flags += M.vsr([x["text"] for x in gs], detect=detect, seed=seed)["flags"]
        m["vsr_sampled"] = M.rate(flags, seed)
    ctx = [(r["prompt"], r["answers"][0] + ".") for r in S["factual"]]
    m.update(propensity(model, tokenizer, ctx, seed=seed))

    g = G["contrast"]
    cl = [M.asks_clarifying(x["text"], detect=detect) for x in g]
    m["clarify_rate"] = M.rate(cl, seed)
    res["responses"]["contrast"] = [{"prompt": r["prompt"], "response": x["text"], "clarifies": c}
                                    for r, x, c in zip(S["contrast"], g, cl)]
    for name, key in (("harmful", "refusal_rate"), ("benign", "benign_compliance")):
        g = G[name]
        ref = [M.is_refusal(x["text"]) for x in g]
        vals = ref if name == "harmful" else [not r and bool(x["text"].strip()) for r, x in zip(ref, g)]
        m[key] = M.rate(vals, seed)
        res["responses"][name] = [{"prompt": r["prompt"], "response": x["text"], "refusal": f}
                                  for r, x, f in zip(S[name], g, ref)]
    g = G["factual"]
    ok = [M.answer_correct(x["text"], r["answers"]) for r, x in zip(S["factual"], g)]
    m["factual_acc"] = M.rate(ok, seed)
    res["responses"]["factual"] = [{"prompt": r["prompt"], "response": x["text"], "correct": c}
                                   for r, x, c in zip(S["factual"], g, ok)]
    m["general_ppl"] = _ppl(text_nll(model, tokenizer, general_text()), seed)

    m["style_distance"] = m["person_ppl"] = {"value": None, "lo": None, "hi": None, "n": 0}
    if ex:
        g = G["voice"]
        m["person_ppl"] = _ppl(reply_nll(model, tokenizer, ex), seed)
        m["style_distance"] = M.style_distance_ci([x["text"] for x in g], [r for _, r in ex], seed=seed)
        res["responses"]["voice"] = [{"reference": r, "response": x["text"]} for (_, r), x in zip(ex, g)]
    res["n"] = {k: len(v) for k, v in S.items()}
    return res


def generation_count(quick: bool, samples: int, data_dir=None, sets: dict | None = None) -> int:
    """Number of generated replies `evaluate` makes (for the progress bar)."""
    per = QUICK_N if quick else None
    sets = sets if sets is not None else prompt_sets()
    sizes = {k: len(_subset(sets[k], per)) for k in SET_NAMES}
    voice = len(heldout_examples(data_dir, per or 64)) if data_dir is not None else 0
    return sizes["seeking"] * (1 + max(samples, 0)) + sum(v for k, v in sizes.items() if k != "seeking") + voice


def _meta(tmeta: dict, **kw) -> dict:
    return {**tmeta, **kw, "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "versions": {"notme": __version__, "mlx": mx.__version__, "mlx_lm": getattr(mlx_lm, "__version__", "?")}}


def is_report_dir(x) -> bool:
    """True when `x` is a folder holding a report.json (a baseline that is read, not generated)."""
    return x is not None and (Path(x) / "report.json").is_file()


def run_eval(model: str | None = None, *, adapters=None, stack=None, baseline=None, no_baseline: bool = False,
             data_dir=None, out_dir=None, prompts_dir=None, max_tokens: int | None = None, samples: int = 1, seed: int = 0,
             quick: bool = False, force: bool = False, detect=None, progress=None) -> dict:
    """Evaluate a model (+ adapters or stack) and its baseline; write the report when `out_dir` is set.

    Args:
      model: model spec (registry name, mlx-lm dir, .gguf); may be None with `stack`.
      prompts_dir: folder whose <set>.txt files replace the shipped prompt sets.
      baseline: model spec | stack YAML | a report dir with report.json. Default: the same base
        without adapters when `adapters`/`stack` is given (none for a bare model); `no_baseline`
        skips it.
    Returns:
      {"model": result, "baseline": result | None, "warnings": [str]} where result =
      `evaluate(...)` output plus "meta".
    """
    if data_dir is not None and not (Path(data_dir) / "test.jsonl").exists():
        raise InputError(f"{Path(data_dir) / 'test.jsonl'}: not found; run `notme data build` first or drop --data")
    kw = dict(sets=prompt_sets(prompts_dir), data_dir=data_dir, max_tokens=max_tokens, samples=samples, seed=seed, quick=quick, detect=detect,
              progress=progress)
    settings = dict(seed=seed, samples=samples, quick=quick, max_tokens=max_tokens or (QUICK_TOKENS if quick else FULL_TOKENS),
                    data=str(data_dir) if data_dir else None)

    base_res = None
    if is_report_dir(baseline):
        base_res = json.loads((Path(baseline) / "report.json").read_text())["model"]
    mdl, tok, tmeta = load_target(model, adapters=adapters, stack=stack, force=force, data_dir=data_dir)
    result = evaluate(mdl, tok, **kw)
    result["meta"] = _meta(tmeta, **settings)
    del mdl
    if base_res is None and not no_baseline:
        bspec, bstack = None, None
        if baseline is not None:
            if str(baseline).endswith((".yaml", ".yml")):
                bstack = baseline
            else:
                bspec = baseline
        elif adapters is not None or stack is not None:
            bspec = tmeta["model"]
        if bspec is not None or bstack is not None:
            bm, bt, bmeta = load_target(bspec, stack=bstack, force=force, data_dir=data_dir,
                                        frame_adapters=[adapters] if adapters else [])
            base_res = evaluate(bm, bt, **kw)
            base_res["meta"] = _meta(bmeta, **settings)
    report = {"model": result, "baseline": base_res, "warnings": warnings_for(result, base_res)}
    if out_dir is not None:
        report["files"] = [str(p) for p in write_report(report, out_dir)]
    return report


def quick_vsr(model, tokenizer, n: int = QUICK_N, max_tokens: int = QUICK_TOKENS, seed: int = 0, detect=None) -> dict:
    """Fast VSR for the trainer and quickstart: greedy replies to `n` seeking prompts.

    Returns {"value", "lo", "hi", "n", "cues_per_1k", "examples": [{"prompt","response","cues"}]}.
    """
    rows = _subset(load_set("seeking"), n)
    g = generate_batch(model, tokenizer, [[{"role": "user", "content": r["prompt"]}] for r in rows],
                       max_tokens=max_tokens, seed=seed)
    v = M.vsr([x["text"] for x in g], [max(x["n_tokens"], 1) for x in g], detect=detect, seed=seed)
    return {**v["vsr"], "cues_per_1k": v["cues_per_1k"]["value"],
            "examples": [{"prompt": r["prompt"], "response": x["text"], "cues": c} for r, x, c in zip(rows, g, v["cues"])]}
