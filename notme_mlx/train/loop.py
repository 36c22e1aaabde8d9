"""The training loop, shared by every way of computing a step's gradients.

`train_loop` owns what all training runs have in common: the learning-rate schedule (in the
optimizer), gradient accumulation over `grad_accum` micro-batches with GLOBAL normalization,
global-norm clipping, the non-finite guard (the update is skipped in place), metrics, Ctrl-C /
SIGTERM and checkpoints. How the gradients of one step are computed is the step function it
is given:

    local_step(model, loss_fn, group=None)    one process, or data parallel over `group`
    cluster.pipeline.PipelineStep             layer stages over mx.distributed (+ replicas)
    the GRPO phase                            local_step over sampled completions

A step function is called as `step(micro, n_learn, n_penalize)` with the step's micro-batches
(the same list on every rank; each rank takes its share) and the counts summed over all of
them, and returns `(loss, grads, {"ce_sum", "ul_sum"})` summed over the whole step. Its
`grad_norm(grads)` gives the global gradient norm (a pipeline stage adds the other stages').

Normalization: the learn/penalize counts of all micro-batches are passed to every
micro-batch's loss as the denominators, so the summed micro-losses (and summed grads) equal
the loss of one big batch. Grads are therefore SUMMED across micro-batches and ranks.
"""

from __future__ import annotations

import signal
import threading
import time
from dataclasses import dataclass, field
from functools import partial
from typing import Callable

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_map, tree_reduce

from ..errors import NotmeError
from ..loss import fused_token_loss, output_head
from . import checkpoint as ckpt
from .forward import hidden_states
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
    h = hidden_states(model, batch["inputs"], mask=batch.get("mask"), checkpoint=grad_checkpoint)
    B, T, H = h.shape
    h = h.reshape(B * T, H)
    if "sel" in batch:
        h, targets, labels = h[batch["sel"]], batch["sel_targets"], batch["sel_labels"]  # [M, H], [M], [M]
    else:
        targets, labels = batch["targets"].reshape(-1), batch["labels"].reshape(-1)
    return fused_token_loss(h, output_head(model), targets, labels, penalty_weight, chunk_size, n_learn, n_penalize)


def array_fields(batch: dict) -> dict:
    """The batch's arrays (what a compiled step takes); host-side counts are left out."""
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


def tree_norm(grads) -> mx.array:
    """sqrt(sum of squares) over every leaf of a gradient tree."""
    return mx.sqrt(tree_reduce(lambda acc, g: acc + (g.astype(mx.float32) ** 2).sum(), grads, mx.array(0.0)))


class LocalStep:
    """Gradients of one step on this process; with `group`, data parallel: rank r takes the
    micro-batches r, r + world, ... of the step and the sums are all-reduced.

    `micro_step(batch, n_learn, n_penalize, acc_grad, acc_loss)` is the compiled value-and-grad
    of one micro-batch added to the running sums (exposed for tests).
    """

    def __init__(self, model, loss_fn: Callable, group=None, compile: bool = True):
        self.model, self.group = model, group
        value_and_grad = nn.value_and_grad(model, loss_fn)

        def micro_step(batch, n_learn, n_penalize, acc_grad, acc_loss):
            (loss, stats), grad = value_and_grad(model, batch, n_learn, n_penalize)
            if acc_grad is not None:
                grad = tree_map(mx.add, grad, acc_grad)
                loss = loss + acc_loss
            return loss, stats, grad

        state = [model.state, mx.random.state]
        self.micro_step = partial(mx.compile, inputs=state, outputs=state)(micro_step) if compile else micro_step

    def __call__(self, micro: list[dict], n_learn, n_penalize):
        g = self.group
        mine = micro if g is None else micro[g.rank()::g.size()]
        nl, npn = mx.array(n_learn, mx.float32), mx.array(n_penalize, mx.float32)
        loss = grads = None
        ce = ul = mx.array(0.0)
        for b in mine:
            loss, stats, grads = self.micro_step(array_fields(b), nl, npn, grads, loss)
            ce, ul = ce + stats["ce_sum"], ul + stats["ul_sum"]
        if g is not None and g.size() > 1:
            grads = tree_map(lambda x: mx.distributed.all_sum(x, group=g), grads)
            loss, ce, ul = (mx.distributed.all_sum(x, group=g) for x in (loss, ce, ul))
        return loss, grads, {"ce_sum": ce, "ul_sum": ul}

    def grad_norm(self, grads) -> mx.array:
        return tree_norm(grads)


def local_step(model, loss_fn: Callable, group=None, compile: bool = True) -> LocalStep:
    return LocalStep(model, loss_fn, group, compile)


def make_update(model, optimizer, grad_clip: float | None, compile: bool = True) -> Callable:
    """`update(grads, loss, norm) -> ok`: clip to `grad_clip` by the global norm and apply the
    optimizer, or leave parameters and optimizer state untouched when the loss or the norm is
    non-finite (decided on the device, no host round trip)."""
    max_norm = grad_clip if grad_clip else float("inf")

    def update(grads, loss, norm):
        ok = mx.isfinite(norm) & mx.isfinite(loss)
        scale = mx.minimum(max_norm / (norm + 1e-6), 1.0)  # as mlx.optimizers.clip_grad_norm
        old_params = model.trainable_parameters()
        old_opt = tree_map(lambda x: x, optimizer.state)
        optimizer.update(model, tree_map(lambda g: mx.where(ok, g * scale, 0.0), grads))
        model.update(_select(ok, model.trainable_parameters(), old_params))
        _select(ok, optimizer.state, old_opt)
        return ok

    state = [model.state, optimizer.state]
    return partial(mx.compile, inputs=state, outputs=state)(update) if compile else update


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


def _record(phase_name, state, loss, ce, ul, n_learn, n_pen, optimizer, norm, micro, dt, skipped) -> dict:
    """The step's metrics.jsonl line."""
    tokens = sum(b["tokens"] for b in micro)
    padded = sum(b["padded"] for b in micro)
    return {"phase": phase_name, "step": state.step, "phase_step": state.phase_step,
            "loss": loss.item(), "ce": ce.item() / max(n_learn, 1), "ul": ul.item() / max(n_pen, 1),
            "lr": float(optimizer.learning_rate.item()), "grad_norm": norm.item(), "tokens": tokens,
            "tok_s": tokens / dt, "peak_mem_gb": peak_memory_gb(), "pad_frac": padded / max(tokens + padded, 1),
            "skipped": skipped}


def train_loop(model, optimizer, stream, step_fn, *, total_steps: int, state: ckpt.TrainState,
               grad_accum: int, grad_clip: float | None, seed: int, max_bad_steps: int,
               save: Callable, evaluate: Callable | None = None, log: Callable = lambda m: None,
               eval_every: int = 0, save_every: int = 0, phase_name: str = "sft",
               compile: bool = True, stop_at_step: int | None = None, log_every: int = 1) -> LoopResult:
    """Run optimizer steps `state.phase_step + 1 .. total_steps` of one phase.

    Args:
        stream: `.next()` -> micro-batch dict (arrays + host counts "n_learn", "n_penalize",
            "tokens", "padded"), `.cursor()` -> JSON-able position; optional `.step_metrics()`
            -> extra fields for the step's metrics record.
        step_fn: `(micro, n_learn, n_penalize) -> (loss, grads, stats)` with `.grad_norm(grads)`
            (`local_step`, `cluster.pipeline.PipelineStep`).
        state: progress (updated in place); save(state): writes a checkpoint;
        evaluate(): -> {"val_loss", "val_ce", "val_ul"}; log(record): metrics sink.
        stop_at_step: save and return after this global step (tests; simulated interruption).
    """
    update = make_update(model, optimizer, grad_clip, compile)
    bad_in_row, skipped, last = 0, state.counters.get("skipped", 0), {}
    model.train()
    with LiveDisplay(phase_name, total_steps, state.phase_step, log_every) as display, _Signals() as sig:
        while state.phase_step < total_steps:
            t0 = time.perf_counter()
            # the MLX key (dropout, and sampling in a GRPO stream) is a function of the step, so a
            # resumed run draws what the uninterrupted one drew
            mx.random.seed(seed * 1_000_003 + state.step)
            micro = [stream.next() for _ in range(grad_accum)]
            n_learn = sum(b["n_learn"] for b in micro)  # global counts over the accumulated batch
            n_pen = sum(b["n_penalize"] for b in micro)
            loss, grads, stats = step_fn(micro, n_learn, n_pen)
            norm = step_fn.grad_norm(grads)
            ok = update(grads, loss, norm)
            mx.eval(model.state, optimizer.state, loss, norm, ok, stats)
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
            last = _record(phase_name, state, loss, stats["ce_sum"], stats["ul_sum"], n_learn, n_pen, optimizer,
                           norm, micro, time.perf_counter() - t0, skipped)
            state.counters["tokens"] = state.counters.get("tokens", 0) + last["tokens"]
            if hasattr(stream, "step_metrics"):
                last.update(stream.step_metrics())
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


def validation_loss(model, batches: list[dict], loss_fn: Callable, penalty_weight: float) -> dict:
    """Validation CE (per learn token) and unlikelihood (per penalize token), separately.

    Returns:
        {"val_loss", "val_ce", "val_ul", "val_learn", "val_penalize"}.
    """
    model.eval()
    ce = ul = 0.0
    nl = npn = 0
    for b in batches:
        _, stats = loss_fn(model, array_fields(b), None, None)
        mx.eval(stats)
        ce, ul = ce + stats["ce_sum"].item(), ul + stats["ul_sum"].item()
        nl, npn = nl + b["n_learn"], npn + b["n_penalize"]
    vce, vul = ce / max(nl, 1), ul / max(npn, 1)
    return {"val_loss": vce + penalty_weight * vul, "val_ce": vce, "val_ul": vul,
            "val_learn": nl, "val_penalize": npn}
