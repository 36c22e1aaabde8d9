"""One timed training run per side, on the same model, examples, LoRA and optimizer.

* `run_ours`: the trainer's compiled step (`train.trainer.make_step` + `default_loss`) fed by
  its `train.stream.BatchStream`, the same calls `train_loop` makes (a thin wrapper: the
  loop's display, checkpoints and metrics file are left out).
* `run_mlxlm`: `mlx_lm.tuner.trainer.train` itself with its own `iterate_batches`, as
  `mlx_lm.lora` runs it, steps_per_report=1 and a `TrainingCallback` collecting each step.

Both time a step the way mlx-lm's trainer does: the clock starts after the batch is built
and stops after `mx.eval` of the new state. Both also record the process CPU time from one
step's end to the next (batch building included, on both sides): on a machine shared with
other work, CPU seconds are far less disturbed than wall-clock seconds. Token counts are counted here, the same way for
both: a row of an example of L tokens holds L-1 real (input, target) pairs; pad positions
are not tokens.
"""

from __future__ import annotations

import contextlib
import io
import tempfile
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import mlx.core as mx
import mlx.optimizers as optim
import numpy as np
from mlx_lm.models import llama
from mlx_lm.tuner import trainer as mt
from mlx_lm.tuner.callbacks import TrainingCallback
from mlx_lm.tuner.utils import linear_to_lora_layers

from ..lora import LoRAConfig, apply_lora
from ..models import load_model
from ..train.loop import default_loss, local_step, make_update
from ..train.stream import BatchStream

TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass
class Settings:
    """What both sides share."""

    batch: int = 4
    seq: int = 256              # sequence cap (tokens per example)
    rank: int = 8
    alpha: float = 16.0
    targets: tuple = TARGETS
    num_layers: int | None = None  # LoRA on the last n blocks (None: all)
    lr: float = 1e-4
    steps: int = 5
    warmup: int = 2
    seed: int = 0
    penalty_weight: float = 10.0
    batching: str = "pack"      # ours: bucket | pack
    batch_tokens: int | None = None  # ours: token budget per step (None: `batch` rows)
    grad_checkpoint: bool = False
    compile: bool = True
    chunk_size: int = 8192


@dataclass
class RunResult:
    """Per measured step (warmup excluded): seconds, real tokens, supervised tokens, pad positions."""

    side: str
    step_s: list = field(default_factory=list)
    cpu_s: list = field(default_factory=list)  # process CPU seconds from the previous step's end to this one's
    tokens: list = field(default_factory=list)
    supervised: list = field(default_factory=list)
    padded: list = field(default_factory=list)
    peak_memory: int = 0  # bytes, mx.get_peak_memory() over the whole run (warmup included)
    extra: dict = field(default_factory=dict)

    def summary(self) -> dict:
        t = float(np.sum(self.step_s))
        tok, sup, pad = int(np.sum(self.tokens)), int(np.sum(self.supervised)), int(np.sum(self.padded))
        cpu = float(np.sum(self.cpu_s)) if self.cpu_s else float("nan")
        return {"side": self.side, "steps": len(self.step_s), "median_step_s": float(np.median(self.step_s)),
                "time_s": t, "tokens": tok, "supervised_tokens": sup, "padded": pad,
                "tokens_per_sec": tok / t, "supervised_tokens_per_sec": sup / t,
                "cpu_s": cpu, "tokens_per_cpu_sec": tok / cpu,
                "padding_fraction": pad / max(tok + pad, 1), "peak_memory": self.peak_memory, **self.extra}


def _fresh_memory():
    mx.synchronize()
    mx.clear_cache()
    mx.reset_peak_memory()


def load(model_path, dequantize: bool | None = None, base_dtype: str = "auto"):
    """A base loaded the way `notme train` loads a base (`notme_mlx.models.load_model`:
    quantized weights become dense computed in float32 on CPU, the blocks' linears stored as
    `base_dtype="auto"` says; they stay quantized on Metal). `dequantize` and `base_dtype`
    override that; mlx-lm's side asks for float32 storage (its plain `nn.Linear` layers would
    upcast a 16-bit weight and keep the float32 copy for the backward pass). Returns (model,
    tokenizer, info) as `load_model`."""
    return load_model(str(model_path), dequantize=dequantize, base_dtype=base_dtype)


def run_ours(model, examples, s: Settings, pad_id: int = 0, lora_names: tuple = ("default",)) -> RunResult:
    """Train `s.warmup + s.steps` steps with notme's trainer step on `model` (LoRA applied here).

    The step is the one `train.loop.train_loop` runs: `local_step` (compiled value-and-grad of
    the micro-batch) then `make_update` (clip + AdamW, compiled), evaluated together.

    Args:
        examples: [TokenizedExample] (tokens, labels), each <= s.seq tokens.
        lora_names: adapters to stack; the LAST is trained, the others are frozen (stack cost).
    """
    mx.random.seed(s.seed)
    cfg = LoRAConfig(rank=s.rank, alpha=s.alpha, targets=tuple(s.targets), num_layers=s.num_layers)
    for i, name in enumerate(lora_names):
        apply_lora(model, cfg, name=name, trainable=i == len(lora_names) - 1)
    opt = optim.AdamW(learning_rate=s.lr)
    loss_fn = partial(default_loss, penalty_weight=s.penalty_weight, chunk_size=s.chunk_size,
                      grad_checkpoint=s.grad_checkpoint)
    step = local_step(model, loss_fn, compile=s.compile)
    update = make_update(model, opt, 1.0, s.compile)  # clip 1.0, the recipe default
    stream = BatchStream(examples, s.batch, s.seed, batching=s.batching, max_len=s.seq, pad_id=pad_id,
                         batch_tokens=s.batch_tokens)
    model.train()
    res = RunResult("ours")
    res.extra["step_shapes"] = {"distinct": stream.epoch_shapes(0)["distinct"],
                                "batches_per_epoch": len(stream.plan(0))}
    _fresh_memory()
    cpu0 = time.process_time()
    for i in range(s.warmup + s.steps):
        b = stream.next()
        tic = time.perf_counter()
        loss, grads, _stats = step([b], b["n_learn"], b["n_penalize"])
        norm = step.grad_norm(grads)
        ok = update(grads, loss, norm)
        mx.eval(model.state, opt.state, loss, norm, ok)
        dt = time.perf_counter() - tic
        cpu1 = time.process_time()
        if i >= s.warmup:
            res.step_s.append(dt)
            res.cpu_s.append(cpu1 - cpu0)
            res.tokens.append(b["tokens"])
            res.supervised.append(b["n_learn"] + b["n_penalize"])
            res.padded.append(b["padded"])
        cpu0 = cpu1
    res.peak_memory = mx.get_peak_memory()
    res.extra["final_loss"] = float(loss.item())
    return res


def run_mlxlm(model, examples, s: Settings) -> RunResult:
    """Train with `mlx_lm.tuner.trainer.train` on the same examples (pre-tokenized).

    Each example is given as (tokens, offset), offset = its first supervised position, i.e.
    mlx-lm's `--mask-prompt`: CE from there to the end of the row (it has no penalty and
    no per-token labels). LoRA via `mlx_lm.tuner.utils.linear_to_lora_layers`.
    """
    mx.random.seed(s.seed)
    model.freeze()
    n = len(model.model.layers)
    keys = [("self_attn." if k.endswith(("q_proj", "k_proj", "v_proj", "o_proj")) else "mlp.") + k for k in s.targets]
    linear_to_lora_layers(model, s.num_layers or n, {"rank": s.rank, "scale": s.alpha / s.rank, "dropout": 0.0,
                                                     "keys": keys})
    data = [(list(e.tokens), next((j for j, v in enumerate(e.labels) if v != 0), 1)) for e in examples]
    res = RunResult("mlx-lm")
    batches: list[tuple[int, int, int]] = []  # per yielded batch: real tokens, supervised, padded

    def counting_batches(dataset, batch_size, max_seq_length, loop=False, seed=None, comm_group=None):
        for batch, lengths in mt.iterate_batches(dataset, batch_size, max_seq_length, loop, seed, comm_group):
            L = np.array(lengths)  # [B, 2]: (offset, length)
            width = batch.shape[1] - 1  # inputs = batch[:, :-1]
            real = int(np.minimum(L[:, 1], width + 1).sum()) - len(L)
            sup = int(np.clip(np.minimum(L[:, 1], width + 1) - np.maximum(L[:, 0], 1), 0, None).sum())
            batches.append((real, sup, len(L) * width - real))
            yield batch, lengths

    cpu = [time.process_time()]

    class Collect(TrainingCallback):
        def on_train_loss_report(self, info):
            it = info["iteration"]
            now = time.process_time()
            cpu_dt, cpu[0] = now - cpu[0], now
            if it > s.warmup:
                res.cpu_s.append(cpu_dt)
                real, sup, pad = batches[it - 1]
                res.step_s.append(1.0 / info["iterations_per_second"])
                res.tokens.append(real)
                res.supervised.append(sup)
                res.padded.append(pad)
            res.extra["final_loss"] = float(info["train_loss"])
            res.extra["mlxlm_reported_peak_gb"] = info["peak_memory"]

    opt = optim.AdamW(learning_rate=s.lr)
    orig_call = llama.TransformerBlock.__call__  # mlx-lm's grad_checkpoint patches the class
    np.random.seed(s.seed)  # mlx-lm's batch order uses the global NumPy state
    with tempfile.TemporaryDirectory() as tmp:
        args = mt.TrainingArgs(batch_size=s.batch, iters=s.warmup + s.steps, steps_per_report=1,
                               steps_per_eval=10**9, steps_per_save=10**9, max_seq_length=s.seq,
                               adapter_file=str(Path(tmp) / "adapters.safetensors"),
                               grad_checkpoint=s.grad_checkpoint)
        _fresh_memory()
        cpu[0] = time.process_time()
        with contextlib.redirect_stdout(io.StringIO()):  # its progress UI
            try:
                mt.train(model, opt, data, None, args, iterate_batches=counting_batches, training_callback=Collect())
            finally:
                llama.TransformerBlock.__call__ = orig_call
    res.peak_memory = mx.get_peak_memory()
    return res
