"""Pipeline- and data-parallel LoRA training over `mx.distributed` (started by mlx.launch).

Ranks are laid out replica-major: rank = replica * p + stage. Within a replica,
stage s receives activations from rank-1 and sends to rank+1; gradients flow
back the same links. `send` has no VJP and `recv` is a constant, so every stage
runs `mx.vjp` on its own function (recomputing its forward from the saved stage
input: activation checkpointing at stage boundaries). send/recv pair first in,
first out, so both ends walk micro-batches in the same order:

* GPipe: all m forwards, then all m backwards (m stage inputs held).
* 1F1B: p-s-1 warm-up forwards, then one forward / one backward, then the
  remaining backwards (at most p-s inputs held). In the steady state a stage
  computes its forward, *receives* the gradient it needs next, and only then
  sends the activation on, so the two directions of a link never both wait
  on a send (safe even when send blocks until the peer receives).

Data parallelism: replicas hold the same stages; after the micro-batches each
stage's LoRA gradients are summed over its data-parallel group. The loss is
normalized by the GLOBAL learn/penalize token counts of the whole batch, so the
sum over micro-batches and replicas equals the single-process loss.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from dataclasses import dataclass

import mlx.core as mx
from mlx.utils import tree_flatten, tree_unflatten

from ..loss import fused_token_loss

from .stage import StageModel, flat_trainable


@dataclass
class Layout:
    rank: int
    world: int
    stages: int  # p
    replicas: int  # dp

    @property
    def stage(self) -> int:
        return self.rank % self.stages

    @property
    def replica(self) -> int:
        return self.rank // self.stages

    @property
    def first(self) -> bool:
        return self.stage == 0

    @property
    def last(self) -> bool:
        return self.stage == self.stages - 1

    @property
    def prev(self) -> int:
        return self.rank - 1

    @property
    def next(self) -> int:
        return self.rank + 1


class Watchdog:
    """Exit this process (code 3, message naming the rank) if no `kick()` for `timeout` seconds.

    A dead peer leaves `recv` waiting forever; this turns that into a clear error on every rank.
    """

    def __init__(self, rank: int, timeout: float, what: str = "step"):
        self.rank, self.timeout, self.what = rank, timeout, what
        self._last = time.monotonic()
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        if timeout and timeout > 0:
            self._t.start()

    def kick(self, what: str | None = None):
        self._last = time.monotonic()
        if what:
            self.what = what

    def _run(self):
        while not self._stop.wait(min(1.0, self.timeout / 4)):
            if time.monotonic() - self._last > self.timeout:
                sys.stderr.write(f"error: rank {self.rank}: no progress for {self.timeout:.0f}s during {self.what} "
                                 f"(a peer rank died or stopped answering); exiting\n")
                sys.stderr.flush()
                os._exit(3)

    def stop(self):
        self._stop.set()


class _StageWork:
    """One step's work on this rank: forwards and backwards of its micro-batches with the
    send/recv of stage activations and their gradients (the schedules order the calls)."""

    def __init__(self, stage: StageModel, micro: list[dict], layout: Layout, group, n_learn, n_penalize,
                 penalty_weight: float, chunk_size: int, watchdog: Watchdog | None):
        self.stage, self.layout, self.group = stage, layout, group
        self.ins, self.tgts, self.labs = ([b[k] for b in micro] for k in ("inputs", "targets", "labels"))
        self.n_learn, self.n_pen = mx.array(n_learn, mx.float32), mx.array(n_penalize, mx.float32)
        self.penalty_weight, self.chunk_size = penalty_weight, chunk_size
        flat = flat_trainable(stage)
        self.keys = list(flat)
        self.params = [flat[k] for k in self.keys]
        self.H = stage.args.hidden_size
        self.dtype = stage.layers[0].input_layernorm.weight.dtype if stage.layers else mx.float32
        self.saved: dict[int, mx.array] = {}
        self.pending_out: dict[int, mx.array] = {}
        self.grads = [mx.zeros_like(p) for p in self.params]
        self.sums = [mx.array(0.0)] * 3  # loss, ce_sum, ul_sum (on the last stage)
        self.kick = watchdog.kick if watchdog else (lambda *_: None)

    def set_params(self, ps):
        self.stage.update(tree_unflatten(list(zip(self.keys, ps))))

    def body(self, ps, x):
        self.set_params(ps)
        return self.stage(x)

    def loss_of(self, ps, x, i):
        h = self.body(ps, x)
        loss, st = fused_token_loss(h.reshape(-1, self.H), self.stage.head(), self.tgts[i].reshape(-1),
                                    self.labs[i].reshape(-1), self.penalty_weight, self.chunk_size,
                                    self.n_learn, self.n_pen)
        return [loss, st["ce_sum"], st["ul_sum"]]

    def act_shape(self, i):
        return (self.ins[i].shape[0], self.ins[i].shape[1], self.H)

    def recv_grad(self, i):
        cot = mx.distributed.recv(self.act_shape(i), self.dtype, self.layout.next, group=self.group)
        mx.eval(cot)
        return cot

    def fwd(self, i, send_now=True):
        lay = self.layout
        self.kick(f"forward micro-batch {i}")
        x = self.ins[i] if lay.first else mx.distributed.recv(self.act_shape(i), self.dtype, lay.prev, group=self.group)
        mx.eval(x)
        self.saved[i] = x
        if not lay.last:
            out = self.body(self.params, x)
            mx.eval(out)
            self.pending_out[i] = out
            if send_now:
                self.flush(i)

    def flush(self, i):
        mx.eval(mx.distributed.send(self.pending_out.pop(i), self.layout.next, group=self.group))

    def bwd(self, i, cot=None):
        lay, params = self.layout, self.params
        self.kick(f"backward micro-batch {i}")
        x = self.saved.pop(i)
        if lay.last:  # the output is the loss (and its stats, which carry no gradient)
            fn, cots = (lambda *a: self.loss_of(list(a[:-1]), a[-1], i)), [mx.array(1.0), mx.array(0.0), mx.array(0.0)]
        else:
            fn, cots = (lambda *a: [self.body(list(a[:-1]), a[-1])]), [cot if cot is not None else self.recv_grad(i)]
        if lay.first:  # the input is token ids: no gradient to pass back
            outs, gp = mx.vjp(lambda *ps: fn(*ps, x), params, cots)
            gx = None
        else:
            outs, vj = mx.vjp(fn, params + [x], cots)
            gp, gx = vj[:-1], vj[-1]
        if lay.last:
            self.sums = [a + mx.stop_gradient(b) for a, b in zip(self.sums, outs)]
        self.grads = [g + d for g, d in zip(self.grads, gp)]
        mx.eval(self.grads, self.sums)
        if not lay.first:
            mx.eval(mx.distributed.send(gx.astype(self.dtype), lay.prev, group=self.group))

    def run(self, schedule: str) -> None:
        """GPipe: all forwards, then all backwards. 1F1B: p-s-1 warm-up forwards, then one
        forward / one backward (receiving the gradient before sending the next activation),
        then the remaining backwards."""
        lay, m = self.layout, len(self.ins)
        p, s = lay.stages, lay.stage
        if p == 1 or schedule == "gpipe":
            for i in range(m):
                self.fwd(i)
            for i in range(m):
                self.bwd(i)
            return
        if schedule != "1f1b":
            raise ValueError(f"schedule {schedule!r}: expected gpipe or 1f1b")
        warm = min(p - s - 1, m)
        for i in range(warm):
            self.fwd(i)
        for j in range(m - warm):
            i = warm + j
            if lay.last:
                self.fwd(i)
                self.bwd(j)
            else:
                self.fwd(i, send_now=False)
                cot = self.recv_grad(j)
                self.flush(i)
                self.bwd(j, cot)
        for j in range(m - warm, m):
            self.bwd(j)


def pipeline_grads(stage: StageModel, micro: list[dict], layout: Layout, group, n_learn, n_penalize,
                   schedule: str = "1f1b", penalty_weight: float = 10.0, chunk_size: int = 8192,
                   watchdog: Watchdog | None = None, dp_group=None):
    """Loss and stats (global, on every rank) and this stage's LoRA gradients for one step.

    micro: this replica's micro-batches, each {"inputs", "targets", "labels": [b, T]} (T may
    differ between micro-batches; every rank holds the same list, so shapes are known on both
    ends of a link); n_learn, n_penalize: the counts of the whole step over every replica.
    Returns (loss, grads: flat dict, {"ce_sum", "ul_sum"}), mx scalars.
    """
    work = _StageWork(stage, micro, layout, group, n_learn, n_penalize, penalty_weight, chunk_size, watchdog)
    work.run(schedule)
    work.set_params(work.params)
    work.kick("all-reduce")
    grads = work.grads
    if layout.replicas > 1:
        grads = dp_allreduce(grads, layout, group, dp_group)
    # the loss lives on each replica's last stage: sum it over the whole world
    out = work.sums
    if group.size() > 1:
        out = [mx.distributed.all_sum(x if layout.last else mx.zeros_like(x), group=group) for x in out]
    mx.eval(grads, out)
    return out[0], dict(zip(work.keys, grads)), {"ce_sum": out[1], "ul_sum": out[2]}


class PipelineStep:
    """The step function `train_loop` runs on a pipeline rank: this replica's share of the step's
    micro-batches (replica r takes r, r + dp, ...) through `pipeline_grads`; the gradient norm
    adds every stage's part."""

    def __init__(self, stage: StageModel, layout: Layout, group, schedule: str, penalty_weight: float,
                 chunk_size: int, watchdog: Watchdog | None = None):
        self.stage, self.layout, self.group, self.schedule = stage, layout, group, schedule
        self.penalty_weight, self.chunk_size, self.watchdog = penalty_weight, chunk_size, watchdog

    def __call__(self, micro: list[dict], n_learn, n_penalize):
        lay = self.layout
        mine = micro[lay.replica::lay.replicas]
        loss, grads, stats = pipeline_grads(self.stage, mine, lay, self.group, n_learn, n_penalize, self.schedule,
                                            self.penalty_weight, self.chunk_size, self.watchdog)
        if self.watchdog is not None:
            self.watchdog.kick("optimizer step")
        return loss, tree_unflatten(list(grads.items())), stats

    def grad_norm(self, grads) -> mx.array:
        return global_grad_norm(dict(tree_flatten(grads)), self.layout, self.group)


def dp_allreduce(grads: list, layout: Layout, group, dp_group=None) -> list:
    """Sum each stage's gradients over its data-parallel replicas.

    Pure data parallelism uses `all_sum` on the whole group. With pipeline stages the
    replicas of one stage are a subset of ranks; the ring backend can neither split
    groups nor send between non-neighbours, so every rank writes its flat gradient into
    its stage's slot of a zero vector and one world `all_sum` adds each slot over the
    replicas (p times the bytes of a per-stage reduction; JACCL/MPI groups can do better).
    """
    if not grads:
        return grads
    shapes = [g.shape for g in grads]
    flat = mx.concatenate([g.reshape(-1) for g in grads])
    if layout.stages == 1:
        flat = mx.distributed.all_sum(flat, group=dp_group or group)
    else:
        sizes = mx.zeros((layout.stages,), dtype=mx.float32)
        sizes[layout.stage] = float(flat.size) / layout.replicas
        sizes = [int(round(x)) for x in mx.distributed.all_sum(sizes, group=group).tolist()]
        off = sum(sizes[: layout.stage])
        slot = mx.zeros((sum(sizes),), dtype=flat.dtype)
        slot[off:off + flat.size] = flat
        flat = mx.distributed.all_sum(slot, group=group)[off:off + flat.size]
    out, i = [], 0
    for shp in shapes:
        n = 1
        for d in shp:
            n *= d
        out.append(flat[i:i + n].reshape(shp))
        i += n
    return out


def global_grad_norm(grads: dict, layout: Layout, group) -> mx.array:
    """sqrt(sum over all stages of ||g||^2), counting each stage once (replica 0)."""
    sq = sum(((g.astype(mx.float32) ** 2).sum() for g in grads.values()), mx.array(0.0))
    if group.size() > 1:
        sq = mx.distributed.all_sum(sq if layout.replica == 0 else mx.array(0.0), group=group)
    return mx.sqrt(sq)
