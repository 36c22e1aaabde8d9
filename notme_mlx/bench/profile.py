"""Where a training step's CPU time goes: the parts of notme's step, timed alone, and mlx-lm's loss.

`step_profile` builds one batch the way `runners.run_ours` does (same stream, same LoRA) and
times, in CPU seconds of this process (what a shared machine disturbs least) and wall
seconds, the median of `repeat` evaluations after one warm-up of each part:

    forward        hidden states of the LoRA model (no gradient)
    backbone       value-and-grad of the LoRA weights through the blocks, loss head excluded
                   (a linear function of the hidden states stands in for the loss)
    loss head      fused CE + unlikelihood, value-and-grad w.r.t. the hidden states, supervised rows
    step           the whole compiled step (`local_step` + `make_update`), as run_ours
    full logits    mlx-lm's loss on the same hidden states: logits for every position, CE
                   (value-and-grad w.r.t. the hidden states), for comparison
"""

from __future__ import annotations

import time
from functools import partial

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np

from ..lora import LoRAConfig, apply_lora
from ..loss import fused_token_loss, output_head
from ..train.forward import hidden_states
from ..train.loop import default_loss, local_step, make_update
from ..train.stream import BatchStream
from .runners import Settings


def _time(fn, repeat: int) -> dict:
    mx.eval(fn())
    wall, cpu = [], []
    for _ in range(repeat):
        t, c = time.perf_counter(), time.process_time()
        mx.eval(fn())
        wall.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    return {"wall_s": float(np.median(wall)), "cpu_s": float(np.median(cpu))}


def step_profile(model, examples, s: Settings, pad_id: int = 0, repeat: int = 3) -> dict:
    """{part: {"wall_s", "cpu_s"}} plus the batch's shape and counts (see module doc)."""
    mx.random.seed(s.seed)
    apply_lora(model, LoRAConfig(rank=s.rank, alpha=s.alpha, targets=tuple(s.targets), num_layers=s.num_layers))
    stream = BatchStream(examples, s.batch, s.seed, batching=s.batching, max_len=s.seq, pad_id=pad_id,
                         batch_tokens=s.batch_tokens)
    b = stream.next()
    x, mask = b["inputs"], b["mask"]
    W = output_head(model)
    nl, npn = mx.array(b["n_learn"], mx.float32), mx.array(b["n_penalize"], mx.float32)
    model.train()
    out = {"batch": {"shape": list(x.shape), "tokens": b["tokens"], "padded": b["padded"],
                     "loss_rows": int(b["sel"].shape[0]), "supervised": b["n_learn"] + b["n_penalize"]}}

    out["forward"] = _time(lambda: hidden_states(model, x, mask=mask, checkpoint=s.grad_checkpoint), repeat)

    probe = mx.random.normal((model.args.hidden_size,)) * 1e-3

    def backbone_loss(_m):
        return (hidden_states(model, x, mask=mask, checkpoint=s.grad_checkpoint) @ probe).sum()

    vg_backbone = nn.value_and_grad(model, backbone_loss)
    out["backbone"] = _time(lambda: vg_backbone(model), repeat)

    h = mx.stop_gradient(hidden_states(model, x, mask=mask))
    mx.eval(h)
    hs = h.reshape(-1, h.shape[-1])[b["sel"]]
    head = mx.value_and_grad(lambda v: fused_token_loss(v, W, b["sel_targets"], b["sel_labels"], s.penalty_weight,
                                                        s.chunk_size, nl, npn)[0])
    out["loss head"] = _time(lambda: head(hs), repeat)

    def full_logits_ce(v):
        logits = v @ (W if isinstance(W, mx.array) else mx.dequantize(*W[:3], W[3], W[4])).T
        ce = nn.losses.cross_entropy(logits, b["targets"]) * (b["labels"] != 0)
        return ce.sum() / mx.maximum((b["labels"] != 0).sum(), 1)

    full = mx.value_and_grad(full_logits_ce)
    out["full logits"] = _time(lambda: full(h), repeat)

    opt = optim.AdamW(learning_rate=s.lr)
    step = local_step(model, partial(default_loss, penalty_weight=s.penalty_weight, chunk_size=s.chunk_size,
                                     grad_checkpoint=s.grad_checkpoint), compile=s.compile)
    update = make_update(model, opt, 1.0, s.compile)

    def whole():
        loss, grads, _ = step([b], b["n_learn"], b["n_penalize"])
        ok = update(grads, loss, step.grad_norm(grads))
        return [model.state, opt.state, loss, ok]

    out["step"] = _time(whole, repeat)
    return out
