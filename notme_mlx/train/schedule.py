"""Learning-rate schedules and the optimizer, built from a recipe.

The schedule is a function of the optimizer's step counter (mlx.optimizers
calls it with `optimizer.step`), so it is restored exactly with the optimizer
state on resume.
"""

from __future__ import annotations

import math

import mlx.core as mx
import mlx.optimizers as optim

from ..recipe import OptimizerConfig, ScheduleConfig


def lr_at(step: int, lr: float, total_steps: int, sched: ScheduleConfig) -> float:
    """Plain-Python reference of the schedule (tests, ETA display).

    Args:
        step: optimizer steps already taken (0-based).
        lr: peak learning rate; total_steps: steps in this phase.
    Returns:
        the learning rate used for update number `step + 1`.
    """
    w = sched.warmup_steps
    if w > 0 and step < w:
        return lr * (step + 1) / (w + 1)  # never a zero-lr step
    if sched.type == "constant":
        return lr
    decay = max(total_steps - w, 1)
    t = min(max(step - w, 0), decay) / decay
    lo = lr * sched.min_lr_ratio
    if sched.type == "linear":
        return lr + (lo - lr) * t
    return lo + 0.5 * (lr - lo) * (1.0 + math.cos(math.pi * t))


def build_schedule(lr: float, total_steps: int, sched: ScheduleConfig):
    """An `mlx.optimizers` schedule (callable on the step array) matching `lr_at`."""
    w = sched.warmup_steps
    lo = lr * sched.min_lr_ratio
    decay = max(total_steps - w, 1)
    if sched.type == "constant":
        main = lambda s: mx.array(lr, dtype=mx.float32)  # noqa: E731
    elif sched.type == "linear":
        main = optim.linear_schedule(lr, lo, decay)
    else:
        main = optim.cosine_decay(lr, decay, lo)
    if w == 0:
        return main
    return optim.join_schedules([optim.linear_schedule(lr / (w + 1), lr, w), main], [w])


def build_optimizer(cfg: OptimizerConfig, sched: ScheduleConfig, total_steps: int, lr: float | None = None):
    """AdamW with the recipe's schedule: the one optimizer builder of every phase type.

    Args:
        cfg: optimizer section; sched: schedule section; total_steps: steps in the phase;
        lr: override of cfg.lr (per-phase lr).
    Returns:
        `mlx.optimizers.AdamW`.
    """
    if cfg.name != "adamw":
        raise ValueError(f"unknown optimizer {cfg.name!r}")
    peak = cfg.lr if lr is None else lr
    return optim.AdamW(
        learning_rate=build_schedule(peak, total_steps, sched),
        betas=list(cfg.betas), eps=cfg.eps, weight_decay=cfg.weight_decay,
    )
