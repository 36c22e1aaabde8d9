"""The training loop: one compiled step, global-count accumulation, skip-on-non-finite,
validation, checkpoints, exact resume.

`train(recipe)` sets up the run (model, LoRA, data, memory check) and runs the recipe's
phases (see phases.py). `train_loop` is the loop itself: it takes the loss and the batch
stream as arguments (like mlx-lm's trainer) so other phase types reuse it.

Normalization: an optimizer step covers `grad_accum` micro-batches (and every rank of
`group`). The learn/penalize counts of all of them are summed first and passed to every
micro-batch's loss as the denominators, so the summed micro-losses (and summed grads) equal
the loss of one big batch. Grads are therefore SUMMED across micro-steps and ranks, not
averaged.
"""

from __future__ import annotations

import signal
import threading
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Callable

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
from mlx.utils import tree_map

from ..errors import NotmeError
from . import checkpoint as ckpt
from .metrics import LiveDisplay, peak_memory_gb


class TrainingStopped(NotmeError):
    """Too many non-finite steps in a row; the last good checkpoint is kept."""


class Interrupted(NotmeError):
    """Ctrl-C / SIGTERM: a checkpoint was saved."""

    exit_code = 130


def default_loss(model, batch, n_learn, n_penalize, *, penalty_weight=10.0, chunk_size=8192,
                 grad_checkpoint=False):
    """Fused CE + unlikelihood over a micro-batch.

    Args:
        batch: {"inputs", "targets", "labels": [B, T] int32, "mask": [B, 1, T, T] bool | None}, and
            optionally "sel", "sel_targets", "sel_labels" [M]: the supervised positions only
            (`stream.supervised`), so the vocabulary pass skips context and padding.
        n_learn, n_penalize: global denominators (scalars).
    Returns:
        (loss, stats) as `notme_mlx.loss.fused_token_loss`.
    """
    from ..loss import fused_token_loss, output_head
    from . import _resolve

    h = _resolve.hidden_states(model, batch["inputs"], mask=batch.get("mask"), checkpoint=grad_checkpoint)
    B, T, H = h.shape
    h = h.reshape(B * T, H)
    if "sel" in batch:
        h, targets, labels = h[batch["sel"]], batch["sel_targets"], batch["sel_labels"]  # [M, H], [M], [M]
    else:
        targets, labels = batch["targets"].reshape(-1), batch["labels"].reshape(-1)
    return fused_token_loss(h, output_head(model), targets, labels, penalty_weight, chunk_size, n_learn, n_penalize)


def _arrays(batch: dict) -> dict:
    return {k: v for k, v in batch.items() if isinstance(v, mx.array)}


def _select(ok, new, old):
    """In place: keep `new` leaves where ok else `old` (same tree structure)."""
    if isinstance(new, dict):
        for k in new:
            if k in old:
                new[k] = _select(ok, new[k], old[k])
        return new
    if isinstance(new, list):
        for i in range(len(new)):
            new[i] = _select(ok, new[i], old[i])
        return new
    return mx.where(ok, new, old) if isinstance(new, mx.array) else new


def make_step(model, optimizer, loss_fn: Callable, grad_clip: float | None, group=None, compile: bool = True):
    """The training step: value-and-grad of one micro-batch, plus (on the last micro-batch)
    all-reduce over `group`, global-norm clip and the AdamW update, skipped in place when
    the loss or the gradient norm is non-finite.

    Returns:
        step(batch, n_learn, n_penalize, acc_grad, acc_loss, do_update) ->
        (loss_sum, stats, grad_or_None, grad_norm, ok).
    """
    value_and_grad = nn.value_and_grad(model, loss_fn)
    state = [model.state, optimizer.state, mx.random.state]

    def step(batch, n_learn, n_penalize, acc_grad, acc_loss, do_update):
        (loss, stats), grad = value_and_grad(model, batch, n_learn, n_penalize)
        if acc_grad is not None:
            grad = tree_map(mx.add, grad, acc_grad)
            loss = loss + acc_loss
        if not do_update:
            return loss, stats, grad, mx.array(0.0), mx.array(True)
        if group is not None:  # data parallel: each rank's loss is already over the global counts
            grad = tree_map(lambda g: mx.distributed.all_sum(g, group=group), grad)
            loss = mx.distributed.all_sum(loss, group=group)
        grad, norm = optim.clip_grad_norm(grad, grad_clip if grad_clip else float("inf"))
        ok = mx.isfinite(norm) & mx.isfinite(loss)
        old_params = model.trainable_parameters()
        old_opt = tree_map(lambda x: x, optimizer.state)
        optimizer.update(model, tree_map(lambda g: mx.where(ok, g, 0.0), grad))
        model.update(_select(ok, model.trainable_parameters(), old_params))
        _select(ok, optimizer.state, old_opt)
        return loss, stats, None, norm, ok

    return partial(mx.compile, inputs=state, outputs=state)(step) if compile else step


@dataclass
class LoopResult:
    steps_done: int
    skipped: int
    last_metrics: dict = field(default_factory=dict)
    stopped_early: bool = False


class _Signals:
    """SIGINT/SIGTERM set a flag the loop checks after each step (main thread only)."""

    def __init__(self):
        self.hit = None
        self._old = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGINT, signal.SIGTERM):
                self._old[s] = signal.signal(s, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.hit is not None:  # second Ctrl-C: stop hard
            raise KeyboardInterrupt
        self.hit = signal.Signals(signum).name

    def __exit__(self, *exc):
        for s, h in self._old.items():
            signal.signal(s, h)


def train_loop(model, optimizer, stream, loss_fn: Callable, *, total_steps: int, state: ckpt.TrainState,
               grad_accum: int, grad_clip: float | None, seed: int, max_bad_steps: int,
               save: Callable, evaluate: Callable | None = None, log: Callable = lambda m: None,
               eval_every: int = 0, save_every: int = 0, phase_name: str = "sft", group=None,
               compile: bool = True, stop_at_step: int | None = None, log_every: int = 1) -> LoopResult:
    """Run optimizer steps `state.phase_step + 1 .. total_steps` of one phase.

    Args:
        stream: `BatchStream`-like: `.next()` -> batch dict, `.cursor()`.
        loss_fn: (model, batch, n_learn, n_penalize) -> (loss, stats).
        state: progress (updated in place); save(state): writes a checkpoint;
        evaluate(): -> {"val_loss", "val_ce", "val_ul"}; log(record): metrics sink.
        stop_at_step: save and return after this global step (tests; simulated interruption).
    """
    step_fn = make_step(model, optimizer, loss_fn, grad_clip, group, compile)
    bad_in_row, skipped, last = 0, state.counters.get("skipped", 0), {}
    model.train()
    with LiveDisplay(phase_name, total_steps, state.phase_step, log_every) as display, _Signals() as sig:
        while state.phase_step < total_steps:
            t0 = time.perf_counter()
            micro = [stream.next() for _ in range(grad_accum)]
            n_learn = sum(b["n_learn"] for b in micro)  # global counts over the accumulated batch
            n_pen = sum(b["n_penalize"] for b in micro)
            if group is not None:
                n_learn, n_pen = (int(x) for x in mx.distributed.all_sum(mx.array([n_learn, n_pen]), group=group).tolist())
            mx.random.seed(seed * 1_000_003 + state.step)  # dropout key: a function of the step
            acc_g, acc_l, ce_sum, ul_sum = None, None, 0.0, 0.0
            for i, b in enumerate(micro):
                loss, stats, acc_g, norm, ok = step_fn(_arrays(b), mx.array(n_learn, mx.float32),
                                                       mx.array(n_pen, mx.float32), acc_g, acc_l,
                                                       i == grad_accum - 1)
                acc_l = loss
                ce_sum, ul_sum = ce_sum + stats["ce_sum"], ul_sum + stats["ul_sum"]
            mx.eval(model.state, optimizer.state, loss, norm, ok, ce_sum, ul_sum)
            state.step, state.phase_step = state.step + 1, state.phase_step + 1
            state.cursor = stream.cursor()
            if not ok.item():
                skipped, bad_in_row = skipped + 1, bad_in_row + 1
                state.counters["skipped"] = skipped
                display.message(f"step {state.step}: non-finite loss/grad, update skipped ({bad_in_row} in a row)")
                if bad_in_row >= max_bad_steps:
                    raise TrainingStopped(
                        f"{bad_in_row} non-finite steps in a row at step {state.step}; stopped. The last good "
                        "checkpoint is kept; lower optimizer.lr or loss.penalty_weight, or check the data")
            else:
                bad_in_row = 0
            tokens = sum(b["tokens"] for b in micro)
            padded = sum(b["padded"] for b in micro)
            dt = time.perf_counter() - t0
            state.counters["tokens"] = state.counters.get("tokens", 0) + tokens
            last = {"phase": phase_name, "step": state.step, "phase_step": state.phase_step,
                    "loss": loss.item(), "ce": ce_sum.item() / max(n_learn, 1),
                    "ul": ul_sum.item() / max(n_pen, 1), "lr": float(optimizer.learning_rate.item()),
                    "grad_norm": norm.item(), "tokens": tokens, "tok_s": tokens / dt,
                    "peak_mem_gb": peak_memory_gb(), "pad_frac": padded / max(tokens + padded, 1),
                    "skipped": skipped}
            if state.phase_step % log_every == 0 or state.phase_step == total_steps:
                log(last)
            display.update(last)
            if evaluate is not None and eval_every and state.phase_step % eval_every == 0 \
                    and state.phase_step < total_steps:
                v = evaluate()
                log({"phase": phase_name, "step": state.step, **v})
                display.message(f"[{phase_name}] step {state.step}: val loss {v['val_loss']:.4f} "
                                f"(ce {v['val_ce']:.4f}, pen {v['val_ul']:.4f})")
                model.train()
            if sig.hit or state.step == stop_at_step or (
                    ok.item() and save_every and state.phase_step % save_every == 0):
                save(state)
            if sig.hit:
                raise Interrupted(f"{sig.hit} at step {state.step}: checkpoint saved; continue with --resume")
            if stop_at_step is not None and state.step >= stop_at_step:
                return LoopResult(state.phase_step, skipped, last, stopped_early=True)
    return LoopResult(state.phase_step, skipped, last)


def evaluate(model, batches: list[dict], loss_fn: Callable, penalty_weight: float) -> dict:
    """Validation CE (per learn token) and unlikelihood (per penalize token), separately.

    Returns:
        {"val_loss", "val_ce", "val_ul", "val_learn", "val_penalize"}.
    """
    model.eval()
    ce = ul = 0.0
    nl = npn = 0
    for b in batches:
        _, stats = loss_fn(model, _arrays(b), None, None)
        mx.eval(stats)
        ce, ul = ce + stats["ce_sum"].item(), ul + stats["ul_sum"].item()
        nl, npn = nl + b["n_learn"], npn + b["n_penalize"]
    vce, vul = ce / max(nl, 1), ul / max(npn, 1)
    return {"val_loss": vce + penalty_weight * vul, "val_ce": vce, "val_ul": vul,
            "val_learn": nl, "val_penalize": npn}


# ----------------------------------------------------------------------------- the run


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
    """Everything one run shares across phases: recipe, model, tokenizer, data, paths."""

    def __init__(self, recipe, model, tokenizer, lora_cfg, trainable: int, group=None):
        from pathlib import Path

        from .config import dump_recipe

        self.recipe, self.model, self.tokenizer, self.lora_cfg = recipe, model, tokenizer, lora_cfg
        self.trainable, self.group = trainable, group
        self.is_main = group is None or group.rank() == 0  # only rank 0 writes files
        self.dir = Path(recipe.run_dir())
        self.ckpt_dir = self.dir / "checkpoints"
        self.recipe_yaml = dump_recipe(recipe)
        self.log = None
        self._examples: dict = {}
        self.pad_id = getattr(tokenizer, "pad_token_id", None) or 0

    def examples(self, path: str, what: str = "training", allow_empty: bool = False) -> list:
        """Tokenized examples of a JSONL file (cached); clear errors for missing/empty data."""
        from pathlib import Path

        from ..errors import InputError
        from ..io import read_jsonl
        from . import _resolve

        if path in self._examples:
            return self._examples[path]
        if not Path(path).exists():
            hint = " (or data.valid: null to train without validation)" if what == "validation" else ""
            raise InputError(f"{path}: {what} data not found; build it with `notme data build messages.jsonl "
                             f"-o data/` or set data.train/data.valid in the recipe{hint}")
        from .. import ui

        out = []
        n_lines = sum(1 for _ in open(path, "rb"))
        with ui.progress(f"tokenize {Path(path).name}", n_lines, "ex") as task:
            for i, ex in enumerate(read_jsonl(path), 1):
                if not isinstance(ex.get("messages"), list):
                    raise InputError(f"{path}:{i}: expected an example with a 'messages' list (DESIGN §4)")
                t = _resolve.tokenize_example(self.tokenizer, ex, self.recipe.data.max_seq_len)
                if len(t.tokens) >= 2:
                    out.append(t)
                task.advance(1)
        if not out and not allow_empty:
            raise InputError(f"{path}: no usable examples ({what} data is empty)")
        if what == "training" and not any(1 in t.labels[1:] for t in out):
            raise InputError(f"{path}: no learn tokens (+1 labels) in {len(out)} examples: nothing to train on; "
                             "check the role mapping (your turns must be assistant turns with train: true)")
        self._examples[path] = out
        return out

    def save_checkpoint(self, state, optimizer) -> None:
        from . import _resolve

        if not self.is_main:
            return
        state.rng = ckpt.capture_rng()
        ckpt.save(self.ckpt_dir, state, _resolve.trainable_parameters(self.model), optimizer.state,
                  self.recipe_yaml, self.recipe.keep_last)

    def save_adapter(self, out_dir, meta: dict | None = None):
        from . import _resolve

        if not self.is_main:
            return Path(out_dir)
        from ..stack.compose import get_meta

        meta = {"recipe": self.recipe.name, "model": self.recipe.model, "train_layer": self.recipe.train_layer,
                **get_meta(self.model), **(meta or {})}  # base fingerprint + layers below (stack provenance)  # lora.save_adapter nests it under "notme" in adapter_config.json
        return _resolve.save_adapter(self.model, self.recipe.train_layer or "default", out_dir, self.lora_cfg, meta)


def check_memory(model, trainable: int, recipe) -> dict:
    """Estimate a step's peak memory; raise ConfigError when it cannot fit."""
    from mlx.utils import tree_flatten

    from ..errors import ConfigError
    from .metrics import available_memory_bytes, estimate_memory

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


def train(recipe, *, resume: bool = False, force: bool = False, model=None, tokenizer=None, group=None,
          stop_at_step: int | None = None) -> RunResult:
    """Train a recipe: writes runs/<name>/{recipe.yaml, metrics.jsonl, checkpoints/, phases/, adapters/}.

    Args:
        recipe: `Recipe` from `load_recipe`.
        resume: continue from the newest checkpoint in runs/<name>/checkpoints/.
        force: start over even if the run folder has checkpoints (they are deleted).
        model, tokenizer: an already loaded base (tests; otherwise `load_model(recipe.model)`).
        group: mx.distributed group for data-parallel training (None = single process).
        stop_at_step: save a checkpoint and return after this global step (simulated interrupt).
    Returns:
        `RunResult`.
    """
    import shutil

    from ..errors import ConfigError, NotImplementedYet
    from ..io import atomic_write_text
    from . import _resolve
    from .config import PhaseConfig
    from .metrics import MetricsLog
    from .phases import PHASE_TYPES

    run_dir = recipe.run_dir()
    start = ckpt.latest(run_dir / "checkpoints") if resume else None
    if resume and start is None:
        raise ConfigError(f"{run_dir}/checkpoints: no checkpoint to resume from; run without --resume")
    if not resume and ckpt.list_checkpoints(run_dir / "checkpoints"):
        if not force:
            raise ConfigError(f"{run_dir}: run already has checkpoints; add --resume to continue it, or "
                              f"--set name=NEW for a fresh run (or --force to start over)")
        shutil.rmtree(run_dir)
    if recipe.stack is not None:  # lower layers loaded frozen by the stack package (issue 7)
        try:
            from ..stack import load_for_training
        except ImportError:
            raise NotImplementedYet("recipe.stack: training on a stack of adapters comes with issue 7 "
                                    "(notme_mlx.stack.load_for_training)") from None
        model, tokenizer = load_for_training(recipe.stack, recipe.train_layer, model=model, tokenizer=tokenizer,
                                             fuse_lower=recipe.fuse_lower)
    if model is None:
        model, tokenizer, _info = _resolve.load_model(recipe.model)
        from ..stack.compose import get_meta, set_meta

        if not get_meta(model) and _info.get("fingerprint"):
            set_meta(model, {"base_fingerprint": _info["fingerprint"], "base_spec": recipe.model, "trained_on": []})
    mx.random.seed(recipe.seed)  # LoRA A init
    lora_cfg = _resolve.lora_config(recipe.lora)
    trainable = _resolve.apply_lora(model, lora_cfg, name=recipe.train_layer or "default", trainable=True)
    check_memory(model, trainable, recipe)
    run = Run(recipe, model, tokenizer, lora_cfg, trainable, group)
    # fail fast on missing data / no learn tokens, for the phases that read examples (a run of
    # preference or grpo phases only needs no data.train)
    for ph in recipe.phases or [None]:
        if ph is None or ph.type == "sft":
            run.examples((ph and ph.data) or recipe.data.train)

    state = ckpt.TrainState()
    if start is not None:
        saved = (start / "recipe.yaml").read_text(encoding="utf-8")
        if saved != run.recipe_yaml:
            import yaml

            a, b = yaml.safe_load(saved) or {}, yaml.safe_load(run.recipe_yaml) or {}
            diff = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
            from .. import ui

            ui.warn(f"resuming {start} with a recipe that differs in {', '.join(diff)}; "
                    "the loss trajectory will not match an uninterrupted run")
        state = ckpt.load_state(start)
        model.load_weights(list(ckpt.load_adapter_weights(start).items()), strict=False)
        ckpt.restore_rng(state.rng)
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / "recipe.yaml", run.recipe_yaml)
    run.log = MetricsLog(run_dir / "metrics.jsonl", resume_step=state.step if start is not None else None,
                         enabled=run.is_main)

    phases = recipe.phases or (PhaseConfig(name="sft", type="sft"),)
    result = RunResult(run_dir, run_dir / "adapters", 0, 0, trainable)
    try:
        for idx, phase in enumerate(phases):
            if idx < state.phase:
                continue
            resume_from = start if (start is not None and state.phase == idx and state.phase_step > 0) else None
            info = PHASE_TYPES[phase.type](run, idx, phase, state, resume_from, stop_at_step)
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
