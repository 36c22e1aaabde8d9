"""Phase types: a registry. A recipe's `phases:` list names them by `type`.

    sft    token-level CE on learn tokens + penalty_weight x unlikelihood on penalize
           tokens (penalty_weight 0 = phase 1 of two-phase training: penalize tokens ignored)
    orpo   reference-free preference phase on data.pairs (odds-ratio term + NLL of chosen)
    simpo  reference-free preference phase (length-normalized margin)
    dpo    preference phase against cached reference log-probs of the model entering the phase
    grpo   sampled completions scored by the detector (registered by notme_mlx.synth.phase)

A phase runner is `fn(run, idx, phase, state, resume_from, stop_at_step) -> dict`, added with
`@register("name")` by the module that implements it (`train.pref_phase`, `synth.phase`), so
this package never imports the packages above it. Every phase continues from the adapter the
previous phase left in the model, with a fresh optimizer and schedule, and runs `train_loop`.
"""

from __future__ import annotations

import math
from functools import partial

from .. import ui
from ..errors import ConfigError
from ..recipe import PHASE_TYPES
from . import checkpoint as ckpt
from .loop import default_loss, train_loop, validation_loss
from .schedule import build_optimizer
from .stream import BatchStream

RUNNERS: dict = {}  # phase type -> runner
# Where the runner of a phase type that lives above `train` is registered.
_REGISTERED_BY = {"grpo": "notme_mlx.synth.phase"}


def register(name: str):
    """Decorator: add a phase runner to the registry under `name` (a type the recipe schema knows)."""
    if name not in PHASE_TYPES:
        raise ValueError(f"phase type {name!r} is not in notme_mlx.recipe.PHASE_TYPES")

    def deco(fn):
        RUNNERS[name] = fn
        return fn

    return deco


def runner(phase_type: str):
    """The registered runner of a phase type; a clear error when its module was not imported."""
    if phase_type not in RUNNERS:
        where = _REGISTERED_BY.get(phase_type, "notme_mlx.train.pref_phase")
        raise ConfigError(f"phase type {phase_type!r} has no runner; import {where} first (the notme CLI does)")
    return RUNNERS[phase_type]


def phase_total_steps(recipe, phase, batches_per_epoch: int) -> int:
    """Optimizer steps of a phase: max_steps (phase, then recipe) or ceil(epochs x batches / accum)."""
    if phase.max_steps is not None:
        return phase.max_steps
    if phase.epochs is None and recipe.max_steps is not None:
        return recipe.max_steps
    epochs = phase.epochs if phase.epochs is not None else recipe.epochs
    return max(1, math.ceil(epochs * batches_per_epoch / recipe.grad_accum))


def example_stream(run, examples, idx, cursor=None) -> BatchStream:
    """The phase's batches in the seeded order; every rank builds the same stream (the step
    function gives each rank its share of a step's micro-batches)."""
    r = run.recipe
    return BatchStream(examples, r.batch_size, r.seed + 7919 * idx, r.data.batching, r.data.pad_multiple,
                       r.data.pool_size, r.data.max_seq_len, run.pad_id, cursor=cursor,
                       batch_tokens=r.data.batch_tokens)


def validation_batches(run, idx) -> list[dict]:
    """The validation set as batches (fixed order, capped at data.max_valid_examples)."""
    r = run.recipe
    if not r.data.valid or not run.backend.supports_validation:
        return []
    exs = run.examples(r.data.valid, "validation", allow_empty=True)
    if not exs:
        ui.warn(f"{r.data.valid}: no validation examples; training without validation")
        return []
    if r.data.max_valid_examples is not None:
        exs = exs[: r.data.max_valid_examples]
    s = example_stream(run, exs, idx)  # every rank validates on the whole set
    return [s.next() for _ in range(s.batches_per_epoch())]


def phase_optimizer(run, phase, total, resume_from):
    """AdamW with the phase's schedule; its state restored from `resume_from` when given."""
    r, model = run.recipe, run.model
    opt = build_optimizer(r.optimizer, r.schedule, total, phase.lr)
    opt.init(model.trainable_parameters())
    if resume_from is not None:
        ckpt.restore_optimizer(opt, model.trainable_parameters(), resume_from, run.backend.shard)
    return opt


def run_phase_loop(run, phase, stream, step, opt, total, state, stop_at_step, evaluate=None, log=None):
    """`train_loop` with the recipe's settings, the run's checkpoint writer and metrics log."""
    r = run.recipe
    return train_loop(run.model, opt, stream, step, total_steps=total, state=state, grad_accum=r.grad_accum,
                      grad_clip=r.grad_clip, seed=r.seed, max_bad_steps=r.max_bad_steps,
                      save=lambda st: run.save_checkpoint(st, opt), evaluate=evaluate, log=log or run.log.write,
                      eval_every=r.eval_every, save_every=r.save_every, phase_name=phase.name,
                      compile=r.compile, stop_at_step=stop_at_step, log_every=r.log_every)


@register("sft")
def sft_phase(run, idx, phase, state, resume_from, stop_at_step=None) -> dict:
    """Token-level phase with the fused CE + unlikelihood loss."""
    r, model = run.recipe, run.model
    penalty = r.loss.penalty_weight if phase.penalty_weight is None else phase.penalty_weight
    stream = example_stream(run, run.examples(phase.data or r.data.train), idx,
                            state.cursor if resume_from is not None else None)
    total = phase_total_steps(r, phase, stream.batches_per_epoch())
    opt = phase_optimizer(run, phase, total, resume_from)
    loss_fn = partial(default_loss, penalty_weight=penalty, chunk_size=r.loss.chunk_size,
                      grad_checkpoint=r.grad_checkpoint)
    step = run.backend.token_step(model, loss_fn, penalty, r.loss.chunk_size, r.compile)
    valid = validation_batches(run, idx)
    eval_fn = (lambda: validation_loss(model, valid, loss_fn, penalty)) if valid else None
    res = run_phase_loop(run, phase, stream, step, opt, total, state, stop_at_step, eval_fn)
    info = {"name": phase.name, "type": "sft", "steps": res.steps_done, "total": total, "last": res.last_metrics,
            "penalty_weight": penalty, "stopped_early": res.stopped_early}
    if eval_fn is not None and not res.stopped_early:
        info["val"] = eval_fn()
        run.log.write({"phase": phase.name, "step": state.step, **info["val"]})
    return info
