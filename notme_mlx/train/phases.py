"""Phase types: a small registry. A recipe's `phases:` list names them by `type`.

    sft    token-level CE on learn tokens + penalty_weight x unlikelihood on penalize
           tokens (penalty_weight 0 = phase 1 of two-phase training: penalize tokens ignored)
    orpo   reference-free preference phase on data.pairs (odds-ratio term + NLL of chosen)
    simpo  reference-free preference phase (length-normalized margin)
    dpo    preference phase against cached reference log-probs of the model entering the phase

A phase runner is `fn(run, idx, phase, state, resume_from, stop_at_step) -> dict` and is
added with `@register("name")` (issue 12 adds `grpo`). Every phase continues from the
adapter the previous phase left in the model, with a fresh optimizer and schedule.
"""

from __future__ import annotations

import math
from functools import partial

from . import checkpoint as ckpt
from .schedule import build_optimizer
from .stream import BatchStream

PHASE_TYPES: dict = {}


def register(name: str):
    """Decorator: add a phase runner to the registry under `name`."""

    def deco(fn):
        PHASE_TYPES[name] = fn
        return fn

    return deco


def phase_total_steps(recipe, phase, batches_per_epoch: int) -> int:
    """Optimizer steps of a phase: max_steps (phase, then recipe) or ceil(epochs x batches / accum)."""
    if phase.max_steps is not None:
        return phase.max_steps
    if phase.epochs is None and recipe.max_steps is not None:
        return recipe.max_steps
    epochs = phase.epochs if phase.epochs is not None else recipe.epochs
    return max(1, math.ceil(epochs * batches_per_epoch / recipe.grad_accum))


def _stream(run, examples, idx, cursor=None, shard=True):
    r = run.recipe
    g = run.group if shard else None
    return BatchStream(examples, r.batch_size, r.seed + 7919 * idx, r.data.batching, r.data.pad_multiple,
                       r.data.pool_size, r.data.max_seq_len, run.pad_id, cursor=cursor,
                       rank=g.rank() if g is not None else 0, world=g.size() if g is not None else 1)


def validation_batches(run, idx) -> list[dict]:
    """The validation set as batches (fixed order, capped at data.max_valid_examples)."""
    r = run.recipe
    if not r.data.valid:
        return []
    exs = run.examples(r.data.valid, "validation", allow_empty=True)
    if not exs:
        from .. import ui

        ui.warn(f"{r.data.valid}: no validation examples; training without validation")
        return []
    if r.data.max_valid_examples is not None:
        exs = exs[: r.data.max_valid_examples]
    s = _stream(run, exs, idx, shard=False)  # every rank validates on the whole set
    return [s.next() for _ in range(s.batches_per_epoch())]


def _optimizer(run, phase, total, resume_from):
    r, model = run.recipe, run.model
    opt = build_optimizer(r.optimizer, r.schedule, total, phase.lr)
    opt.init(model.trainable_parameters())
    if resume_from is not None:
        ckpt.restore_optimizer(opt, model.trainable_parameters(), resume_from)
    return opt


@register("sft")
def sft_phase(run, idx, phase, state, resume_from, stop_at_step=None) -> dict:
    """Token-level phase with the fused CE + unlikelihood loss."""
    from .trainer import default_loss, evaluate, train_loop

    r, model = run.recipe, run.model
    penalty = r.loss.penalty_weight if phase.penalty_weight is None else phase.penalty_weight
    stream = _stream(run, run.examples(phase.data or r.data.train), idx,
                     state.cursor if resume_from is not None else None)
    total = phase_total_steps(r, phase, stream.batches_per_epoch())
    opt = _optimizer(run, phase, total, resume_from)
    loss_fn = partial(default_loss, penalty_weight=penalty, chunk_size=r.loss.chunk_size,
                      grad_checkpoint=r.grad_checkpoint)
    valid = validation_batches(run, idx)
    eval_fn = (lambda: evaluate(model, valid, loss_fn, penalty)) if valid else None
    res = train_loop(model, opt, stream, loss_fn, total_steps=total, state=state, grad_accum=r.grad_accum,
                     grad_clip=r.grad_clip, seed=r.seed, max_bad_steps=r.max_bad_steps,
                     save=lambda st: run.save_checkpoint(st, opt), evaluate=eval_fn, log=run.log.write,
                     eval_every=r.eval_every, save_every=r.save_every, phase_name=phase.name,
                     group=run.group, compile=r.compile, stop_at_step=stop_at_step, log_every=r.log_every)
    info = {"name": phase.name, "type": "sft", "steps": res.steps_done, "total": total, "last": res.last_metrics,
            "penalty_weight": penalty, "stopped_early": res.stopped_early}
    if eval_fn is not None and not res.stopped_early:
        info["val"] = eval_fn()
        run.log.write({"phase": phase.name, "step": state.step, **info["val"]})
    return info


@register("orpo")
def orpo_phase(run, idx, phase, state, resume_from, stop_at_step=None) -> dict:
    from .pref_phase import preference_phase

    return preference_phase(run, idx, phase, state, resume_from, stop_at_step, kind="orpo")


@register("dpo")
def dpo_phase(run, idx, phase, state, resume_from, stop_at_step=None) -> dict:
    from .pref_phase import preference_phase

    return preference_phase(run, idx, phase, state, resume_from, stop_at_step, kind="dpo")


@register("simpo")
def simpo_phase(run, idx, phase, state, resume_from, stop_at_step=None) -> dict:
    from .pref_phase import preference_phase

    return preference_phase(run, idx, phase, state, resume_from, stop_at_step, kind="simpo")


@register("grpo")
def grpo_phase(run, idx, phase, state, resume_from, stop_at_step=None) -> dict:
    from ..synth.phase import grpo_phase as _grpo  # issue 12: GRPO with the detector as reward

    return _grpo(run, idx, phase, state, resume_from, stop_at_step)
