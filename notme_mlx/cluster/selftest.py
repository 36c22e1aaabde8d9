"""Loopback equivalence: distributed runs against one process on the same batch.

`reference_run` is the independent side: mlx-lm's own whole-model forward,
the plain full-logits loss (CE + λ·unlikelihood, normalized by the batch's
learn/penalize counts), `nn.value_and_grad`, the same AdamW and clipping.
`launch_job` runs `worker.py` under `mlx.launch --backend ring` over loopback.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import numpy as np
from mlx.utils import tree_flatten, tree_unflatten


def plain_loss(logits, targets, labels, penalty_weight):
    """Full-logits reference: CE on +1, -log(1 - p) on -1 (p clamped below 1)."""
    logp = logits - mx.logsumexp(logits, axis=-1, keepdims=True)
    lp = mx.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]
    learn, pen = (labels == 1).astype(mx.float32), (labels == -1).astype(mx.float32)
    p = mx.minimum(mx.exp(lp), 1.0 - 1e-6)
    ce = -(lp * learn).sum() / mx.maximum(learn.sum(), 1.0)
    ul = -(mx.log1p(-p) * pen).sum() / mx.maximum(pen.sum(), 1.0)
    return ce + penalty_weight * ul


def reference_run(job: dict) -> dict:
    """Single process: per-step losses, step-1 LoRA grads and final adapter (global mlx-lm names)."""
    from mlx_lm import load

    from .stage import apply_stage_lora
    from .worker import clip, lora_cfg, make_optimizer, synthetic_batch

    model, _ = load(job["model_dir"])
    L = len(model.model.layers)
    model.freeze()
    apply_stage_lora(model.model.layers, 0, L, lora_cfg(job), job.get("seed", 0))
    opt = make_optimizer(job)
    b = job["batch"]
    vocab = model.args.vocab_size
    lw = job.get("penalty_weight", 10.0)

    def loss_fn(m, batch):
        return plain_loss(m(batch["inputs"]).astype(mx.float32), batch["targets"], batch["labels"], lw)

    vg = nn.value_and_grad(model, loss_fn)
    losses, first_grads = [], None
    for step in range(1, job.get("steps", 1) + 1):
        batch = synthetic_batch(step, b["size"], b["seq"], vocab, b.get("seed", 0))
        loss, g = vg(model, batch)
        flat = {k.replace(".adapters.default", ""): v for k, v in tree_flatten(g)}
        if first_grads is None:
            first_grads = flat
        norm = math.sqrt(sum(float((v.astype(mx.float32) ** 2).sum().item()) for v in flat.values()))
        g = clip(dict(tree_flatten(g)), norm, job.get("grad_clip"))
        opt.update(model, tree_unflatten(list(g.items())))
        mx.eval(model.parameters(), opt.state)
        losses.append(float(loss.item()))
    adapters = {k.replace(".adapters.default", ""): v for k, v in tree_flatten(model.trainable_parameters())}
    return {"losses": losses, "grads": first_grads, "adapters": adapters}


def launch_job(job: dict, n: int, timeout: float = 600, python: str | None = None) -> subprocess.CompletedProcess:
    """Run the worker on `n` local ranks with mlx.launch (ring backend over loopback)."""
    out = Path(job["out_dir"])
    out.mkdir(parents=True, exist_ok=True)
    jf = out / "job.json"
    jf.write_text(json.dumps(job))
    py = python or sys.executable
    if n == 1:
        return subprocess.run([py, "-m", "notme_mlx.cluster.worker", str(jf)], capture_output=True, text=True,
                              timeout=timeout)
    launcher = Path(py).parent / "mlx.launch"
    cmd = [str(launcher), "-n", str(n), "--backend", "ring", "--python", py, "-m", "notme_mlx.cluster.worker",
           str(jf)] if launcher.exists() else [py, "-m", "mlx.launch", "-n", str(n), "--backend", "ring",
                                                "--python", py, "-m", "notme_mlx.cluster.worker", str(jf)]
    env = dict(os.environ)
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    # mlx.launch can exit 0 when a rank failed; it prints "Node with rank N exited with code C"
    if r.returncode == 0 and "exited with code" in (r.stderr + r.stdout):
        r = subprocess.CompletedProcess(r.args, 1, r.stdout, r.stderr)
    return r


def rel_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / (np.abs(b).max() + 1e-12))


def compare(job: dict, ref: dict, n_ranks: int) -> dict:
    """Worst relative difference of loss, step-1 gradients and final adapters vs the reference."""
    out = Path(job["out_dir"])
    losses = json.loads((out / "losses.json").read_text())
    d_loss = max(abs(a - b) / max(abs(b), 1e-12) for a, b in zip(losses, ref["losses"]))
    got = {}
    p = len(job["stages"])
    for r in range(min(p, n_ranks)):  # replica 0 holds every stage once
        f = out / f"grads-{r}.safetensors"
        if f.exists():
            got.update(mx.load(str(f)))
    d_grad = max((rel_diff(np.array(got[k]), np.array(v)) for k, v in ref["grads"].items()), default=0.0) \
        if got else float("nan")
    if got and set(got) != set(ref["grads"]):
        raise AssertionError(f"gradient keys differ: {sorted(set(got) ^ set(ref['grads']))[:4]}")
    ad = mx.load(str(out / "adapters" / "adapters.safetensors"))
    d_ad = max(rel_diff(np.array(ad[k]), np.array(v)) for k, v in ref["adapters"].items())
    return {"loss": d_loss, "grads": d_grad, "adapters": d_ad, "max_rel_diff": max(d_loss, d_grad, d_ad)}


def selftest(n: int = 2, workdir: str | None = None, steps: int = 3, schedule: str = "1f1b",
             microbatches: int = 2, replicas: int = 1, timeout: float = 60, optimizer: str = "sgd") -> dict:
    """Tiny random llama; distributed run on `n` ranks vs one process. Returns the diffs.

    The default optimizer for the trajectory check is SGD with momentum: Adam divides by
    sqrt(v), so on near-zero gradient elements fp32 summation-order noise (1e-7 relative)
    becomes a sign-like ±lr step; with AdamW the adapters agree to ~3e-3 relative after 3
    steps while loss and gradients still agree to 1e-6.
    """
    from ..models.tiny import build_tiny_llama

    wd = Path(workdir or tempfile.mkdtemp(prefix="notme-selftest-"))
    model_dir = wd / "model"
    if not (model_dir / "config.json").exists():
        build_tiny_llama(model_dir, vocab_size=256, seed=3, num_hidden_layers=4)
    p = n // replicas
    L = 4
    bounds = [round(i * L / p) for i in range(p + 1)]
    job = {"model_dir": str(model_dir), "stages": [[bounds[i], bounds[i + 1]] for i in range(p)],
           "replicas": replicas, "microbatches": microbatches, "schedule": schedule, "steps": steps, "lr": 1e-2, "optimizer": optimizer,
           "grad_clip": 1.0, "seed": 0, "lora": {"rank": 4, "alpha": 8}, "penalty_weight": 10.0,
           "batch": {"size": 2 * replicas * microbatches, "seq": 16, "seed": 1},
           "out_dir": str(wd / f"run-{n}-{schedule}-{microbatches}-{replicas}"), "timeout": timeout,
           "dump_grads": True}
    r = launch_job(job, n)
    if r.returncode != 0:
        raise RuntimeError(f"mlx.launch exited {r.returncode}: {(r.stderr or r.stdout).strip()[-800:]}")
    ref = reference_run(job)
    return compare(job, ref, n)
