"""A training run: `train(recipe)` sets up the model, LoRA and data, then runs the recipe's
phases (phases.py), each through the one `train_loop` (loop.py).

Where the model lives and how a step's gradients are computed is the run's backend:
`LocalBackend` (one process, or data parallel over an `mx.distributed` group; every rank
holds the whole model) here, `cluster.worker.PipelineBackend` for layer stages across
machines. Everything else (schedule, accumulation, clipping, the non-finite guard, metrics,
signals, checkpoints and resume) is the same code for all of them.
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import mlx.core as mx
import yaml
from mlx.utils import tree_flatten

from .. import ui
from ..data.labels import tokenize_example
from ..errors import ConfigError, InputError, NotmeError
from ..io import atomic_write_text, read_jsonl
from ..lora import LoRAConfig, apply_lora, get_meta, save_adapter, seed_lora_a, set_meta, trainable_parameters
from ..models import load_model
from ..models.frame import recorded_frame
from ..recipe import PhaseConfig, Recipe, dump_recipe
from . import checkpoint as ckpt
from . import pref_phase  # noqa: F401  (registers the orpo, simpo and dpo phase types)
from .loop import local_step
from .metrics import MetricsLog, available_memory_bytes, estimate_memory
from .phases import runner


def lora_config(section) -> LoRAConfig:
    """The recipe's lora section as `notme_mlx.lora.LoRAConfig`."""
    return LoRAConfig(rank=section.rank, alpha=section.alpha, dropout=section.dropout,
                      targets=tuple(section.targets), num_layers=section.num_layers)


# How a recipe's `stack:` is loaded (base + frozen lower layers). The stack package sits above
# train, so it registers its loader here when imported (`notme_mlx.stack`; the CLI imports it).
_STACK_LOADER: list = []


def register_stack_loader(fn) -> None:
    """fn(stack, train_layer, model=, tokenizer=, fuse_lower=) -> (model, tokenizer)."""
    _STACK_LOADER[:] = [fn]


class LocalBackend:
    """The whole model in this process; with `group`, data parallel: each rank takes its share
    of every step's micro-batches (recipe.grad_accum must be a multiple of the group size)."""

    supports_validation = True
    shard = (0, 1)

    def __init__(self, group=None):
        self.group = group
        self.rank = group.rank() if group is not None else 0
        self.writes_checkpoint = self.rank == 0  # replicas hold the same weights
        self.is_main = self.rank == 0

    def load(self, recipe: Recipe, model=None, tokenizer=None):
        """(model with a trainable LoRA adapter, tokenizer, LoRAConfig, trainable parameter count)."""
        world = self.group.size() if self.group is not None else 1
        if recipe.grad_accum % world:
            raise ConfigError(f"grad_accum: {recipe.grad_accum} micro-batches do not split over {world} ranks; "
                              f"use a multiple of {world}")
        if recipe.stack is not None:  # lower layers loaded frozen by the stack package
            if not _STACK_LOADER:
                raise ConfigError(f"stack: {recipe.stack}: training on a stack needs notme_mlx.stack imported "
                                  "(the notme CLI does)")
            model, tokenizer = _STACK_LOADER[0](recipe.stack, recipe.train_layer, model=model, tokenizer=tokenizer,
                                                fuse_lower=recipe.fuse_lower)
        if model is None:
            model, tokenizer, info = load_model(recipe.model, base_dtype="auto")  # a quantized base: 16-bit storage
            if not get_meta(model) and info.get("fingerprint"):
                set_meta(model, {"base_fingerprint": info["fingerprint"], "base_spec": recipe.model, "trained_on": []})
        mx.random.seed(recipe.seed)  # LoRA A init
        cfg = lora_config(recipe.lora)
        trainable = apply_lora(model, cfg, name=recipe.train_layer or "default", trainable=True)
        seed_lora_a(model, 0, recipe.seed, recipe.train_layer or "default")  # as a pipeline stage draws it
        check_memory(model, trainable, recipe)
        return model, tokenizer, cfg, trainable

    def token_step(self, model, loss_fn, penalty_weight, chunk_size, compile=True):
        """The step of a token-loss (sft) phase."""
        return local_step(model, loss_fn, self.group, compile)

    def step(self, model, loss_fn, compile=True, what=""):
        """The step of any other phase type (preference, GRPO)."""
        return local_step(model, loss_fn, self.group, compile)

    def adapter_weights(self, model) -> dict:
        return trainable_parameters(model)

    def barrier(self) -> None:
        if self.group is not None and self.group.size() > 1:
            mx.eval(mx.distributed.all_sum(mx.array(1.0), group=self.group))

    def save_adapter(self, run, out_dir, meta: dict) -> Path:
        if self.is_main:
            save_adapter(run.model, run.recipe.train_layer or "default", out_dir, run.lora_cfg, meta)
        self.barrier()
        return Path(out_dir)


@dataclass
class RunResult:
    """What `train` produced."""

    run_dir: object
    adapter_dir: object
    steps: int
    skipped: int
    trainable_params: int
    phases: list = field(default_factory=list)  # per phase: {"name", "steps", "last", "val", "adapter_dir"}
    stopped_early: bool = False


class Run:
    """Everything one run shares across phases: recipe, model, tokenizer, data, paths, backend."""

    def __init__(self, recipe, model, tokenizer, lora_cfg, trainable: int, backend):
        self.recipe, self.model, self.tokenizer, self.lora_cfg = recipe, model, tokenizer, lora_cfg
        self.trainable, self.backend = trainable, backend
        self.is_main = backend.is_main  # only rank 0 writes metrics and adapters
        self.dir = Path(recipe.run_dir())
        self.ckpt_dir = self.dir / "checkpoints"
        self.recipe_yaml = dump_recipe(recipe)
        self.log = None
        self._examples: dict = {}
        self.frame = None  # a base model's plain-text frame names, from the training data's meta.frame
        self.pad_id = getattr(tokenizer, "pad_token_id", None) or 0

    def examples(self, path: str, what: str = "training", allow_empty: bool = False) -> list:
        """Tokenized examples of a JSONL file (cached); clear errors for missing/empty data."""
        if path in self._examples:
            return self._examples[path]
        if not Path(path).exists():
            hint = " (or data.valid: null to train without validation)" if what == "validation" else ""
            raise InputError(f"{path}: {what} data not found; build it with `notme data build messages.jsonl "
                             f"-o data/` or set data.train/data.valid in the recipe{hint}")
        out, frames = [], Counter()
        n_lines = sum(1 for _ in open(path, "rb"))
        with ui.progress(f"tokenize {Path(path).name}", n_lines, "ex") as task:
            for i, ex in enumerate(read_jsonl(path), 1):
                if not isinstance(ex.get("messages"), list):
                    raise InputError(f"{path}:{i}: expected an example with a 'messages' list (docs/data.md)")
                fr = (ex.get("meta") or {}).get("frame")
                if isinstance(fr, dict):
                    frames[json.dumps(fr, sort_keys=True)] += 1
                t = tokenize_example(self.tokenizer, ex, self.recipe.data.max_seq_len)
                if len(t.tokens) >= 2:
                    out.append(t)
                task.advance(1)
        if not out and not allow_empty:
            raise InputError(f"{path}: no usable examples ({what} data is empty)")
        if what == "training" and not any(1 in t.labels[1:] for t in out):
            raise InputError(f"{path}: no learn tokens (+1 labels) in {len(out)} examples: nothing to train on; "
                             "check the role mapping (your turns must be assistant turns with train: true)")
        if what == "training" and frames:  # the frame names data build recorded, saved with the adapter
            self.frame = recorded_frame(data_dir=Path(path).parent) or json.loads(frames.most_common(1)[0][0])
        self._examples[path] = out
        return out

    def save_checkpoint(self, state, optimizer) -> None:
        """This rank's shard of a checkpoint (every rank calls it: the shards meet in one folder)."""
        b = self.backend
        state.rng = ckpt.capture_rng()
        ckpt.save(self.ckpt_dir, state, b.adapter_weights(self.model), optimizer.state, self.recipe_yaml,
                  self.recipe.keep_last, shard=b.shard, writer=b.writes_checkpoint, barrier=b.barrier)

    def save_adapter(self, out_dir, meta: dict | None = None) -> Path:
        """One mlx-lm adapter folder (stage shards merged), written by rank 0."""
        meta = {"recipe": self.recipe.name, "model": self.recipe.model, "train_layer": self.recipe.train_layer,
                **get_meta(self.model), **(meta or {})}  # base fingerprint + layers below (stack provenance)
        if self.frame is not None:
            meta.setdefault("frame", self.frame)
        return self.backend.save_adapter(self, out_dir, meta)


def check_memory(model, trainable: int, recipe) -> dict:
    """Estimate a step's peak memory; raise ConfigError when it cannot fit."""
    weights = sum(v.nbytes for _, v in tree_flatten(model.parameters()))
    est = estimate_memory(weights, trainable, model.args, recipe)
    avail = available_memory_bytes()
    if recipe.memory_check and est["total"] > 0.9 * avail:
        g = lambda b: f"{b / 1e9:.1f} GB"  # noqa: E731
        raise ConfigError(
            f"recipe {recipe.name}: estimated memory {g(est['total'])} exceeds the {g(0.9 * avail)} available "
            f"(weights {g(est['weights'])}, LoRA+AdamW {g(est['lora'])}, activations {g(est['activations'])}, "
            f"loss {g(est['loss'])}); lower batch_size or data.max_seq_len, set grad_checkpoint: true, "
            "or memory_check: false to try anyway")
    return est


def _start_point(run_dir: Path, resume: bool, force: bool, backend) -> Path | None:
    """The checkpoint to resume from (None = a fresh run; an old run folder is cleared with force)."""
    root = run_dir / "checkpoints"
    start = ckpt.latest(root) if resume else None
    if resume and start is None:
        raise ConfigError(f"{root}: no checkpoint to resume from; run without --resume")
    if not resume and ckpt.list_checkpoints(root):
        if not force:
            raise ConfigError(f"{run_dir}: run already has checkpoints; add --resume to continue it, or "
                              f"--set name=NEW for a fresh run (or --force to start over)")
        if backend.is_main:
            shutil.rmtree(run_dir)
        backend.barrier()
    return start


def _resume(run: Run, start: Path) -> ckpt.TrainState:
    saved = (start / "recipe.yaml").read_text(encoding="utf-8")
    if saved != run.recipe_yaml:
        a, b = yaml.safe_load(saved) or {}, yaml.safe_load(run.recipe_yaml) or {}
        diff = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
        ui.warn(f"resuming {start} with a recipe that differs in {', '.join(diff)}; "
                "the loss trajectory will not match an uninterrupted run")
    state = ckpt.load_state(start)
    weights = ckpt.load_adapter_weights(start, run.backend.shard)
    missing = sorted(set(run.backend.adapter_weights(run.model)) - set(weights))
    if missing:
        raise NotmeError(f"{start}: the checkpoint lacks {len(missing)} of this run's trainable weights (e.g. "
                         f"{missing[0]}); it was written with other LoRA settings or another split")
    run.model.load_weights(list(weights.items()), strict=False)
    ckpt.restore_rng(state.rng)
    return state


def train(recipe: Recipe, *, resume: bool = False, force: bool = False, model=None, tokenizer=None, group=None,
          stop_at_step: int | None = None, backend=None) -> RunResult:
    """Train a recipe: writes runs/<name>/{recipe.yaml, metrics.jsonl, checkpoints/, phases/, adapters/}.

    Args:
        recipe: `Recipe` from `notme_mlx.recipe.load_recipe`.
        resume: continue from the newest checkpoint in runs/<name>/checkpoints/.
        force: start over even if the run folder has checkpoints (they are deleted).
        model, tokenizer: an already loaded base (tests; otherwise `load_model(recipe.model)`).
        group: mx.distributed group for data-parallel training (None = single process).
        stop_at_step: save a checkpoint and return after this global step (simulated interrupt).
        backend: where the model lives and how steps are computed (default `LocalBackend(group)`).
    Returns:
        `RunResult`.
    """
    backend = backend or LocalBackend(group)
    phases = recipe.phases or (PhaseConfig(name="sft", type="sft"),)
    runners = [runner(p.type) for p in phases]  # an unregistered type fails before any work
    run_dir = recipe.run_dir()
    start = _start_point(run_dir, resume, force, backend)
    model, tokenizer, lora_cfg, trainable = backend.load(recipe, model, tokenizer)
    run = Run(recipe, model, tokenizer, lora_cfg, trainable, backend)
    # fail fast on missing data / no learn tokens, for the phases that read examples (a run of
    # preference or grpo phases only needs no data.train)
    for ph in phases:
        if ph.type == "sft":
            run.examples(ph.data or recipe.data.train)
    state = _resume(run, start) if start is not None else ckpt.TrainState()
    if backend.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run_dir / "recipe.yaml", run.recipe_yaml)
    run.log = MetricsLog(run_dir / "metrics.jsonl", resume_step=state.step if start is not None else None,
                         enabled=backend.is_main)
    result = RunResult(run_dir, run_dir / "adapters", 0, 0, trainable)
    try:
        for idx, (phase, fn) in enumerate(zip(phases, runners)):
            if idx < state.phase:
                continue
            resume_from = start if (start is not None and state.phase == idx and state.phase_step > 0) else None
            info = fn(run, idx, phase, state, resume_from, stop_at_step)
            result.phases.append(info)
            result.skipped = state.counters.get("skipped", 0)
            if info.get("stopped_early"):
                result.stopped_early = True
                break
            info["adapter_dir"] = run.save_adapter(run_dir / "phases" / phase.name, {"phase": phase.name})
            state.phase, state.phase_step, state.cursor = idx + 1, 0, {}
            run.save_checkpoint(state, _NoOptimizer())
        if not result.stopped_early:
            run.save_adapter(run_dir / "adapters", {"phases": [p.name for p in phases]})
    finally:
        run.log.close()
    result.steps = state.step
    return result


class _NoOptimizer:
    """Phase boundaries checkpoint no optimizer state (the next phase starts a fresh one)."""

    state: dict = {}
