"""The principles file: the person's own short rules of conduct.

    principles:
      - name: directness
        description: Say the answer first; no preamble.
        good: ["Use a hash map; lookups are O(1)."]
        bad: ["Great question! Would you like me to explain?"]

It steers `notme data synth` (as the system prompt) and `notme data revise` (model rewrite),
and is shown in the eval report. It never reaches safety refusals: the detector does not
flag refusals, and the safety-replay mix and refusal eval stay on whatever it says.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ConfigError
from ..io import read_yaml

TOP_KEYS = ("principles",)
ITEM_KEYS = ("name", "description", "good", "bad")


@dataclass(frozen=True)
class Principle:
    name: str
    description: str
    good: tuple[str, ...] = field(default_factory=tuple)
    bad: tuple[str, ...] = field(default_factory=tuple)


def _nearest(key: str, valid) -> str:
    m = difflib.get_close_matches(str(key), list(valid), n=1, cutoff=0.0)
    return m[0] if m else valid[0]


def parse_principles(data, where: str = "principles.yaml") -> list[Principle]:
    """Validate a loaded YAML object; every problem is reported at once (one line each, joined by '; ').

    Returns:
      the principles in file order.
    """
    errs: list[str] = []
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping with a 'principles:' list, got {type(data).__name__}")
    for k in data:
        if k not in TOP_KEYS:
            errs.append(f"unknown key {k!r} (did you mean {_nearest(k, TOP_KEYS)!r}?)")
    items = data.get("principles")
    if not isinstance(items, list) or not items:
        errs.append("'principles' must be a non-empty list of {name, description, good?, bad?}")
        items = []
    out, seen = [], set()
    for i, it in enumerate(items):
        p = f"principles[{i}]"
        if not isinstance(it, dict):
            errs.append(f"{p}: expected a mapping, got {type(it).__name__}")
            continue
        for k in it:
            if k not in ITEM_KEYS:
                errs.append(f"{p}: unknown key {k!r} (did you mean {_nearest(k, ITEM_KEYS)!r}?)")
        name, desc = it.get("name"), it.get("description")
        if not isinstance(name, str) or not name.strip():
            errs.append(f"{p}.name: required, a non-empty string")
        elif name in seen:
            errs.append(f"{p}.name: duplicate {name!r}")
        else:
            seen.add(name)
        if not isinstance(desc, str) or not desc.strip():
            errs.append(f"{p}.description: required, a one-line string")
        lists = {}
        for k in ("good", "bad"):
            v = it.get(k, [])
            if isinstance(v, str):
                v = [v]
            if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
                errs.append(f"{p}.{k}: expected a list of strings")
                v = []
            lists[k] = tuple(v)
        if isinstance(name, str) and isinstance(desc, str):
            out.append(Principle(name.strip(), " ".join(desc.split()), lists["good"], lists["bad"]))
    if errs:
        raise ConfigError(f"{where}: " + "; ".join(errs))
    return out


def load_principles(path: str | Path) -> list[Principle]:
    """Read and validate a principles YAML file (ConfigError names the key and the nearest valid one)."""
    path = Path(path)
    return parse_principles(read_yaml(path, "principles file"), str(path))


def system_prompt(principles: list[Principle]) -> str:
    """Render principles as a system prompt (one numbered rule each, examples indented)."""
    lines = ["Follow these principles in every reply:"]
    for i, p in enumerate(principles, 1):
        lines.append(f"{i}. {p.name}: {p.description}")
        for g in p.good:
            lines.append(f"   Good: {g}")
        for b in p.bad:
            lines.append(f"   Avoid: {b}")
    return "\n".join(lines)


def example_path() -> Path:
    """The neutral example file shipped with the package."""
    return Path(__file__).with_name("principles.example.yaml")
