"""Safety replay: short, plain refusals of harmful requests, mixed into every train split.

The examples live in `safety_replay.jsonl` beside this module (written by us, non-graphic).
Their assistant turns are always `train: true` and are never penalized, so the penalty on
validation-seeking can never push the model away from refusing.

`safety_eval.jsonl` holds 30 *different* harmful prompts (with a reference refusal) that are
never trained on, for measuring refusal retention before/after (`load_safety_eval`).
"""

from __future__ import annotations

import json
import math
import random
from importlib import resources


def load_safety_replay() -> list[dict]:
    """The bundled replay set as Examples (docs/data.md), meta.source = 'safety_replay'."""
    text = resources.files("notme_mlx.data").joinpath("safety_replay.jsonl").read_text(encoding="utf-8")
    out = []
    for i, line in enumerate(text.splitlines()):
        if not line.strip():
            continue
        r = json.loads(line)
        out.append({"messages": [
            {"role": "user", "content": r["prompt"], "train": False, "spans": []},
            {"role": "assistant", "content": r["response"], "train": True, "spans": []},
        ], "meta": {"source": "safety_replay", "conversation_id": f"safety-{i:03d}", "mode": "safety"}})
    return out


def safety_count(n_train: int, fraction: float) -> int:
    """How many replay examples make up `fraction` of the mixed train split."""
    if fraction <= 0 or n_train <= 0:
        return 0
    return max(1, math.ceil(fraction * n_train / (1.0 - fraction)))


def sample_safety(n: int, seed: int) -> list[dict]:
    """`n` replay examples: whole passes over the set in a seeded order, then a seeded sample."""
    pool = load_safety_replay()
    rng = random.Random(f"safety-{seed}")
    out: list[dict] = []
    while len(out) < n:
        order = list(range(len(pool)))
        rng.shuffle(order)
        out.extend(pool[i] for i in order[: n - len(out)])
    return out


def load_safety_eval() -> list[dict]:
    """Held-out harmful prompts for refusal-retention evals: [{"prompt", "reference"}] (never in training)."""
    text = resources.files("notme_mlx.data").joinpath("safety_eval.jsonl").read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]
