"""The corrections file: pairs recorded by `notme correct` (/fix) or imported from elsewhere.

Same format as the builder's `data/pairs.jsonl`: {"prompt": [{"role","content"}...],
"chosen": str, "rejected": str, "meta": {...}}, so `data build` and the preference phase
consume it as-is. Every append rewrites the file atomically (temp + rename, mode 0600).
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

from ..errors import InputError
from ..io import atomic_write_text, read_jsonl

ROLES = ("system", "user", "assistant")


def validate_pair(r: dict, where: str) -> dict:
    """Check one pair record; returns it normalized (InputError names where and what)."""
    if not isinstance(r, dict):
        raise InputError(f"{where}: expected a JSON object")
    for k in ("prompt", "chosen", "rejected"):
        if k not in r:
            raise InputError(f"{where}: missing \"{k}\" (need prompt, chosen, rejected)")
    p = r["prompt"]
    if isinstance(p, str):
        p = [{"role": "user", "content": p}]
    if not isinstance(p, list) or not p or not all(
            isinstance(m, dict) and m.get("role") in ROLES and isinstance(m.get("content"), str) for m in p):
        raise InputError(f"{where}: \"prompt\" must be a non-empty list of {{role: system|user|assistant, content}}")
    for k in ("chosen", "rejected"):
        if not isinstance(r[k], str) or not r[k].strip():
            raise InputError(f"{where}: \"{k}\" must be a non-empty string")
    if r["chosen"].strip() == r["rejected"].strip():
        raise InputError(f"{where}: chosen and rejected are the same text")
    meta = r.get("meta", {})
    if not isinstance(meta, dict):
        raise InputError(f"{where}: \"meta\" must be an object")
    return {"prompt": [{"role": m["role"], "content": m["content"]} for m in p], "chosen": r["chosen"],
            "rejected": r["rejected"], "meta": meta}


def append_pairs(path: str | Path, pairs: list[dict]) -> int:
    """Validate `pairs` and append them to `path` atomically. Returns the new total line count."""
    path = Path(path)
    new = [validate_pair(p, f"pair {i}") for i, p in enumerate(pairs, 1)]
    old = path.read_text(encoding="utf-8") if path.exists() else ""
    if old and not old.endswith("\n"):
        old += "\n"
    atomic_write_text(path, old + "".join(json.dumps(p, ensure_ascii=False) + "\n" for p in new))
    return sum(1 for line in (old.splitlines()) if line.strip()) + len(new)


def correction(prompt: list[dict], fix: str, last_reply: str, model: str | None = None) -> dict:
    """A pair from a /fix: chosen = what the person typed, rejected = the model's last reply."""
    return {"prompt": prompt, "chosen": fix, "rejected": last_reply,
            "meta": {"source": "correction", "model": model,
                     "timestamp": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}}


def import_corrections(src: str | Path, dest: str | Path) -> int:
    """Validate every record of `src` (all-or-nothing) and append them to `dest`. Returns the count added."""
    recs = [validate_pair(r, f"{src}: record {i}") for i, r in enumerate(read_jsonl(src), 1)]
    if not recs:
        raise InputError(f"{src}: no corrections in file")
    for r in recs:
        r["meta"] = {"source": "correction", **r["meta"]}
    append_pairs(dest, recs)
    return len(recs)
