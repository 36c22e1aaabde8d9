"""`notme data revise`: flagged replies -> (prompt, chosen, rejected) pairs.

Input records (JSONL): an Example {"messages": [...]} (the last assistant message is the
reply), a pair-like {"prompt": [messages] | str, "rejected" | "reply": str}, or a synth output
record. For each reply the detector flags: rule-based span removal + sentence repair
(`notme_mlx.detect.remove_spans`); optionally a model rewrite guided by the principles; the
candidate must pass the detector again, else the record is skipped (counted).
"""

from __future__ import annotations

from pathlib import Path

from ..detect import default_detector
from ..detect.repair import remove_spans
from ..errors import InputError
from ..io import read_jsonl
from ..models.generate import chat_prompt, generate_text

REWRITE = ("Rewrite the reply below so it follows the principles: keep its content, remove any asking for "
           "approval, permission or confirmation, hedging and flattery. Output only the rewritten reply.\n\n"
           "Reply:\n{reply}")


def _split_record(r: dict, where: str) -> tuple[list[dict], str]:
    if isinstance(r.get("messages"), list):
        msgs = r["messages"]
        idx = [i for i, m in enumerate(msgs) if isinstance(m, dict) and m.get("role") == "assistant"]
        if not idx:
            raise InputError(f"{where}: no assistant message to revise")
        i = idx[-1]
        return [{"role": m["role"], "content": m["content"]} for m in msgs[:i]], msgs[i]["content"]
    reply = r.get("rejected", r.get("reply"))
    prompt = r.get("prompt", [])
    if isinstance(prompt, str):
        prompt = [{"role": "user", "content": prompt}]
    if not isinstance(reply, str) or not isinstance(prompt, list):
        raise InputError(f"{where}: expected {{\"messages\": [...]}} or {{\"prompt\", \"rejected\"|\"reply\"}}")
    return prompt, reply


def revise_records(records, detector=None, rewrite_fn=None, where: str = "input") -> dict:
    """Revise every flagged reply.

    Args:
      records: iterable of input dicts (see module doc).
      rewrite_fn: optional fn(prompt_messages, reply, rule_based) -> str, a model rewrite; used when
        its output is non-empty and passes the detector, else the rule-based revision is kept.
    Returns:
      {"pairs": [{"prompt","chosen","rejected","meta"}], "counts": {...}}.
    """
    det = detector or default_detector()
    pairs, c = [], {"records": 0, "flagged": 0, "rule": 0, "model": 0, "unfixable": 0}
    for i, r in enumerate(records, 1):
        c["records"] += 1
        prompt, reply = _split_record(r, f"{where}: record {i}")
        d = det.detect(reply)
        if not d.flagged:
            continue
        c["flagged"] += 1
        rule = remove_spans(reply, d.spans)
        chosen, how = rule, "rule"
        if rewrite_fn is not None:
            alt = (rewrite_fn(prompt, reply, rule) or "").strip()
            if alt and not det.detect(alt).flagged:
                chosen, how = alt, "model"
        if not chosen or det.detect(chosen).flagged:
            c["unfixable"] += 1
            continue
        c[how] += 1
        meta = {k: v for k, v in (r.get("meta") or {}).items() if k in ("source", "conversation_id")}
        pairs.append({"prompt": prompt, "chosen": chosen, "rejected": reply,
                      "meta": {**meta, "revised_by": how, "record": i, "score": round(d.score, 4),
                               "spans": [[s.start, s.end, "penalize"] for s in d.spans]}})
    return {"pairs": pairs, "counts": c}


def revise_file(path: str | Path, detector=None, rewrite_fn=None) -> dict:
    """`revise_records` over a JSONL file (InputError names file:record)."""
    return revise_records(read_jsonl(path), detector, rewrite_fn, where=str(path))


def model_rewriter(model, tokenizer, principles_text: str | None, max_tokens: int = 256):
    """A `rewrite_fn` that asks `model` (greedy) to rewrite a reply under the principles."""
    def fn(prompt, reply, rule):
        msgs = ([{"role": "system", "content": principles_text}] if principles_text else []) + [
            {"role": "user", "content": REWRITE.format(reply=reply)}]
        return generate_text(model, tokenizer, chat_prompt(tokenizer, msgs), max_tokens=max_tokens, temp=0.0)

    return fn
