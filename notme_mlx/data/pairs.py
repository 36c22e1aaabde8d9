"""Contrastive pairs for preference training: chosen = target minus penalized spans."""

from __future__ import annotations

from ..detect.repair import remove_spans


def pairs_from_example(ex: dict, split: str, min_chars: int = 1) -> list[dict]:
    """One pair per target turn that has penalize spans.

    Returns:
      [{"prompt": [{"role","content"}...], "chosen": str, "rejected": str, "meta": {...}}];
      turns whose repaired text is empty (the whole turn was validation-seeking) are skipped.
    """
    out = []
    msgs = ex["messages"]
    for i, m in enumerate(msgs):
        pen = [s for s in m.get("spans", []) if s[2] == "penalize"]
        if m["role"] != "assistant" or m.get("train") is False or not pen:
            continue
        chosen = remove_spans(m["content"], pen)
        if len(chosen) < min_chars or chosen == m["content"]:
            continue
        out.append({
            "prompt": [{"role": p["role"], "content": p["content"]} for p in msgs[:i]],
            "chosen": chosen,
            "rejected": m["content"],
            "meta": {**{k: ex["meta"][k] for k in ("source", "conversation_id", "frame") if k in ex["meta"]},
                     "split": split, "turn": i, "spans": pen},
        })
    return out
