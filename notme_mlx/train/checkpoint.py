"""Training checkpoints: everything needed to continue a run exactly.

    runs/<name>/checkpoints/step-<n>/
        adapter.safetensors     trainable (LoRA) weights, flat keys
        optimizer.safetensors   optimizer state (tree_flatten keys: m, v, step, learning_rate)
        state.json              step, phase, phase step, data cursor, RNG states, counters, shards
        recipe.yaml             the resolved recipe

One format for every run: a run whose weights are split over ranks (pipeline stages under
`notme cluster launch`) writes one shard per stage, `adapter.shard-<i>-of-<n>.safetensors`
and `optimizer.shard-<i>-of-<n>.safetensors`; a single process (or data-parallel replicas,
which hold the same weights) writes the one shard under the plain names above.

Each shard file is written to a temp name and renamed; state.json is written last, after
every shard (the `barrier` between them waits for the other ranks), so `latest()` trusts
only folders with state.json: a crash leaves the previous checkpoint as the newest.
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
from ..io import atomic_write_text

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


def shard_files(shard: tuple[int, int] = (0, 1)) -> tuple[str, str]:
    """(adapter, optimizer) file names of shard i of n."""
    i, n = shard
    tag = "" if n == 1 else f".shard-{i}-of-{n}"
    return f"adapter{tag}.safetensors", f"optimizer{tag}.safetensors"


def save_arrays(path: Path, arrays: dict, metadata: dict | None = None) -> None:
    """Write `arrays` as safetensors at `path` atomically (temp + rename), user-readable only."""
    tmp = path.with_name(f".{path.name}.tmp.safetensors")
    mx.save_safetensors(str(tmp), arrays, metadata=metadata or {})
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def save(ckpt_root: Path, state: TrainState, adapter: dict, optimizer_state, recipe_yaml: str,
         keep_last: int | None = None, shard: tuple[int, int] = (0, 1), writer: bool = True,
         barrier=lambda: None) -> Path:
    """Write this rank's shard of `ckpt_root/step-<state.step>/`, then (after `barrier`) state.json.

    Args:
        adapter: flat {key: array} of this shard's trainable weights.
        optimizer_state: this shard's optimizer state tree (`optimizer.state`).
        shard: (index, count) of this rank's shard; writer: False on ranks that hold a copy of
            another rank's shard (data-parallel replicas), which only take part in the barriers.
        barrier: waits for every rank (a no-op in one process).
    Returns:
        the checkpoint folder.
    """
    final = Path(ckpt_root) / f"step-{state.step}"
    if writer:
        (final / "state.json").unlink(missing_ok=True)  # a re-save of this step is untrusted until done
    barrier()
    if writer:
        final.mkdir(parents=True, exist_ok=True)
        os.chmod(final, 0o700)
        a_name, o_name = shard_files(shard)
        save_arrays(final / a_name, dict(adapter))
        save_arrays(final / o_name, {k: v for k, v in tree_flatten(optimizer_state) if isinstance(v, mx.array)})
    barrier()
    if writer:
        atomic_write_text(final / "recipe.yaml", recipe_yaml)
        body = {"step": state.step, "phase": state.phase, "phase_step": state.phase_step,
                "cursor": state.cursor, "counters": state.counters, "rng": state.rng, "shards": shard[1]}
        atomic_write_text(final / "state.json", json.dumps(body))
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


def load_adapter_weights(ckpt: Path, shard: tuple[int, int] = (0, 1)) -> dict:
    """Flat {key: array} of the trainable weights of one shard of a checkpoint."""
    path = Path(ckpt) / shard_files(shard)[0]
    if not path.exists():
        raise NotmeError(f"{path}: missing; the checkpoint was written by a run split {_shards(ckpt)} way(s), "
                         f"this one is split {shard[1]} way(s)")
    return mx.load(str(path))


def _shards(ckpt: Path) -> int:
    try:
        return int(json.loads((Path(ckpt) / "state.json").read_text(encoding="utf-8")).get("shards", 1))
    except (OSError, ValueError):
        return 1


def restore_optimizer(optimizer, params: dict, ckpt: Path, shard: tuple[int, int] = (0, 1)) -> None:
    """Load optimizer state saved by `save` into `optimizer`, keeping its tree structure.

    Args:
        optimizer: a fresh optimizer of the same type; params: the trainable parameter tree.
    """
    saved = mx.load(str(Path(ckpt) / shard_files(shard)[1]))
    optimizer.init(params)
    missing = [k for k, v in tree_flatten(optimizer.state) if isinstance(v, mx.array) and k not in saved]
    if missing:
        raise NotmeError(f"{ckpt}/{shard_files(shard)[1]}: missing {len(missing)} entries (e.g. {missing[0]}); "
                         "the checkpoint does not match this recipe's LoRA settings")
    optimizer.state = tree_map_with_path(lambda k, v: saved.get(k, v) if isinstance(v, mx.array) else v,
                                         optimizer.state)
    optimizer.init(params)  # marks it initialized; existing entries are kept
