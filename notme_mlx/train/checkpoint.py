"""Training checkpoints (DESIGN §7): everything needed to continue a run exactly.

    runs/<name>/checkpoints/step-<n>/
        adapter.safetensors     trainable (LoRA) weights, flat mlx-lm keys
        optimizer.safetensors   optimizer state (tree_flatten keys: m, v, step, learning_rate)
        state.json              step, phase, phase step, data cursor, RNG states, counters
        recipe.yaml             the resolved recipe

A checkpoint is built in a temp folder and renamed into place, so a crash
leaves either the old or the new one, never half of one. `latest()` only
trusts folders that contain state.json (written last).
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import mlx.core as mx
import numpy as np
from mlx.utils import tree_flatten, tree_map_with_path

from ..errors import NotmeError
from ..io import atomic_dir

_STEP_RE = re.compile(r"^step-(\d+)$")


@dataclass
class TrainState:
    """Host-side progress saved in state.json.

    step: global optimizer steps done (all phases); phase: index of the phase in
    progress; phase_step: steps done in that phase; cursor: the batch iterator's
    state (epoch, batch index); counters: running totals (tokens, skipped steps).
    """

    step: int = 0
    phase: int = 0
    phase_step: int = 0
    cursor: dict = field(default_factory=dict)
    counters: dict = field(default_factory=dict)
    rng: dict = field(default_factory=dict)


def capture_rng() -> dict:
    """Python, numpy and MLX RNG states as JSON-able data."""
    py = random.getstate()
    npst = np.random.get_state()
    return {
        "python": [py[0], list(py[1]), py[2]],
        "numpy": [npst[0], npst[1].tolist(), int(npst[2]), int(npst[3]), float(npst[4])],
        "mlx_key": np.array(mx.random.state[0]).tolist(),
    }


def restore_rng(rng: dict) -> None:
    """Restore Python and numpy RNGs. The MLX key is re-derived per step from (seed, step)
    by the trainer, so it needs no setter; it is stored for the record."""
    if "python" in rng:
        v, st, g = rng["python"]
        random.setstate((v, tuple(st), g))
    if "numpy" in rng:
        n = rng["numpy"]
        np.random.set_state((n[0], np.array(n[1], dtype=np.uint32), n[2], n[3], n[4]))


def save(ckpt_root: Path, state: TrainState, adapter: dict, optimizer_state, recipe_yaml: str,
         keep_last: int | None = None) -> Path:
    """Write `ckpt_root/step-<state.step>/` atomically; prune to `keep_last` newest.

    Args:
        adapter: flat {key: array} of trainable weights.
        optimizer_state: the optimizer's state tree (`optimizer.state`).
    Returns:
        the checkpoint folder.
    """
    ckpt_root = Path(ckpt_root)
    final = ckpt_root / f"step-{state.step}"
    with atomic_dir(final, force=True) as tmp:  # makes ckpt_root; a re-save replaces the step whole
        mx.save_safetensors(str(tmp / "adapter.safetensors"), dict(adapter))
        opt = {k: v for k, v in tree_flatten(optimizer_state) if isinstance(v, mx.array)}
        mx.save_safetensors(str(tmp / "optimizer.safetensors"), opt)
        (tmp / "recipe.yaml").write_text(recipe_yaml, encoding="utf-8")
        body = {"step": state.step, "phase": state.phase, "phase_step": state.phase_step,
                "cursor": state.cursor, "counters": state.counters, "rng": state.rng}
        (tmp / "state.json").write_text(json.dumps(body), encoding="utf-8")
        for p in tmp.iterdir():
            os.chmod(p, 0o600)
    if keep_last:
        prune(ckpt_root, keep_last)
    return final


def list_checkpoints(ckpt_root: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints as (step, folder), oldest first."""
    root = Path(ckpt_root)
    if not root.is_dir():
        return []
    out = []
    for p in root.iterdir():
        m = _STEP_RE.match(p.name)
        if m and (p / "state.json").exists():
            out.append((int(m.group(1)), p))
    return sorted(out)


def latest(ckpt_root: Path) -> Path | None:
    """The newest complete checkpoint folder, or None."""
    cks = list_checkpoints(ckpt_root)
    return cks[-1][1] if cks else None


def prune(ckpt_root: Path, keep_last: int) -> None:
    """Delete all but the `keep_last` newest checkpoints."""
    for _, p in list_checkpoints(ckpt_root)[:-keep_last]:
        shutil.rmtree(p, ignore_errors=True)


def load_state(ckpt: Path) -> TrainState:
    """Read state.json of a checkpoint folder."""
    try:
        d = json.loads((Path(ckpt) / "state.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise NotmeError(f"{ckpt}/state.json: unreadable checkpoint ({e}); delete that folder to resume "
                         "from the previous one") from None
    return TrainState(step=d["step"], phase=d["phase"], phase_step=d["phase_step"], cursor=d["cursor"],
                      counters=d.get("counters", {}), rng=d.get("rng", {}))


def load_adapter_weights(ckpt: Path) -> dict:
    """Flat {key: array} of the checkpoint's trainable weights."""
    return mx.load(str(Path(ckpt) / "adapter.safetensors"))


def restore_optimizer(optimizer, params: dict, ckpt: Path) -> None:
    """Load optimizer state saved by `save` into `optimizer`, keeping its tree structure.

    Args:
        optimizer: a fresh optimizer of the same type; params: the trainable parameter tree.
    """
    saved = mx.load(str(Path(ckpt) / "optimizer.safetensors"))
    optimizer.init(params)
    missing = [k for k, v in tree_flatten(optimizer.state) if isinstance(v, mx.array) and k not in saved]
    if missing:
        raise NotmeError(f"{ckpt}/optimizer.safetensors: missing {len(missing)} entries (e.g. {missing[0]}); "
                         "the checkpoint does not match this recipe's LoRA settings")
    optimizer.state = tree_map_with_path(lambda k, v: saved.get(k, v) if isinstance(v, mx.array) else v,
                                         optimizer.state)
    optimizer.init(params)  # marks it initialized; existing entries are kept
