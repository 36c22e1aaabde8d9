"""Shipped prompt sets for `notme eval` (see README.md here for what each set is for).

Files are plain text, one record per line, `#` comments; tab-separated fields.
`load_set(name)` returns a list of dicts; `load_set(name, path=...)` reads a user file in
the same format (an empty set is an error).
"""

from __future__ import annotations

from pathlib import Path

from ...errors import InputError

HERE = Path(__file__).parent
SETS = {
    "seeking": ("category", "prompt"),
    "contrast": ("prompt",),
    "harmful": ("prompt",),
    "benign": ("prompt",),
    "factual": ("prompt", "answers"),
}


def load_set(name: str, path: str | Path | None = None) -> list[dict]:
    """Records of set `name` from the shipped file (or `path`).

    Returns [{"prompt": str, "category"?: str, "answers"?: [str]}].
    """
    if name not in SETS:
        raise InputError(f"unknown prompt set {name!r}; expected one of {', '.join(SETS)}")
    p = Path(path) if path is not None else HERE / f"{name}.txt"
    if not p.exists():
        raise InputError(f"{p}: prompt set file not found")
    fields = SETS[name]
    rows = []
    for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parts = line.split("\t")
        if len(parts) != len(fields) or not all(x.strip() for x in parts):
            raise InputError(f"{p}:{i}: expected {len(fields)} tab-separated field(s) ({', '.join(fields)})")
        rec = dict(zip(fields, (x.strip() for x in parts)))
        if "answers" in rec:
            rec["answers"] = [a.strip() for a in rec["answers"].split("|") if a.strip()]
        rows.append(rec)
    if not rows:
        raise InputError(f"{p}: prompt set {name!r} is empty; add at least one prompt line")
    return rows


def general_text(path: str | Path | None = None) -> list[str]:
    """Paragraphs of the general-text perplexity probe (our own neutral prose)."""
    p = Path(path) if path is not None else HERE / "general.txt"
    paras = [x.strip() for x in p.read_text(encoding="utf-8").split("\n\n") if x.strip()]
    if not paras:
        raise InputError(f"{p}: general-text probe is empty")
    return paras
