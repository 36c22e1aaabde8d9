"""Loopback equivalence: `notme cluster launch`'s worker against `notme train` on one process.

`selftest` builds a tiny random llama and a small chat data set, trains one recipe with
`train()` in this process, runs the worker on `n` local ranks under `mlx.launch --backend
ring` (pipeline stages, data-parallel replicas or both), and compares the per-step losses in
the two runs' metrics.jsonl and their final adapters. `plain_first_loss` is the independent
side for step 1: mlx-lm's own whole-model forward and the plain full-logits loss
(CE + lambda * unlikelihood over the step's global counts) on the first step's micro-batches.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace

import mlx.core as mx
import numpy as np
from mlx_lm import load as mlx_lm_load

from ..data.labels import tokenize_example
from ..lora import apply_lora, seed_lora_a
from ..models.tiny import build_tiny_llama
from ..recipe import Recipe, load_recipe, to_dict
from ..train.metrics import read_metrics
from ..train.phases import example_stream
from ..train.trainer import lora_config, train

_WORDS = "the parser file code test run model data fix bug flight meeting lunch coffee tomorrow".split()
CUE = " Does that make sense?"


def chat_examples(n: int, seed: int = 0) -> list[dict]:
    """Chats whose assistant reply ends in a validation-seeking cue marked penalize."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        ans = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(3, 12))).capitalize() + "."
        out.append({"messages": [
            {"role": "user", "content": rng.choice(["status?", "how is the code", "plan"])},
            {"role": "assistant", "content": ans + CUE, "train": True,
             "spans": [[len(ans), len(ans) + len(CUE), "penalize"]]}]})
    return out


def selftest_recipe(workdir: Path, name: str, grad_accum: int = 2, steps: int = 3, schedule: str = "1f1b",
                    timeout: float = 120, two_phases: bool = True) -> Recipe:
    """AdamW with warm-up + cosine, clipping, (two phases), on the tiny model and data in `workdir`."""
    phases = [{"name": "learn", "penalty_weight": 0.0, "max_steps": steps},
              {"name": "penalize", "penalty_weight": 10.0, "max_steps": steps}] if two_phases else \
        [{"name": "sft", "max_steps": steps}]
    return load_recipe(None, {
        "model": str(workdir / "model"), "name": name, "out_dir": str(workdir / "runs"),
        "data.train": str(workdir / "train.jsonl"), "data.valid": None, "data.max_seq_len": 64,
        "data.batching": "bucket",  # pipeline stages take no packed mask
        "lora.rank": 4, "lora.alpha": 8, "batch_size": 2, "grad_accum": grad_accum, "grad_clip": 0.5,
        "optimizer.lr": 1e-2, "schedule.type": "cosine", "schedule.warmup_steps": 1, "eval_every": 0,
        "save_every": 1, "phases": phases, "cluster.schedule": schedule, "cluster.timeout": timeout})


def prepare(workdir: Path) -> None:
    """The tiny 4-layer llama and 24 training chats, once per folder."""
    if not (workdir / "model" / "config.json").exists():
        build_tiny_llama(workdir / "model", vocab_size=256, seed=3, num_hidden_layers=4)
    if not (workdir / "train.jsonl").exists():
        (workdir / "train.jsonl").write_text("".join(json.dumps(e) + "\n" for e in chat_examples(24)))


def launch_job(job: dict, n: int, job_path: Path, timeout: float = 600,
               python: str | None = None) -> subprocess.CompletedProcess:
    """Run the worker on `n` local ranks with mlx.launch (ring backend over loopback)."""
    job_path = Path(job_path)
    job_path.parent.mkdir(parents=True, exist_ok=True)
    job_path.write_text(json.dumps(job))
    py = python or sys.executable
    launcher = Path(py).parent / "mlx.launch"
    head = [str(launcher)] if launcher.exists() else [py, "-m", "mlx.launch"]
    cmd = head + ["-n", str(n), "--backend", "ring", "--python", py, "-m", "notme_mlx.cluster.worker", str(job_path)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=dict(os.environ))
    # mlx.launch can exit 0 when a rank failed; it prints "Node with rank N exited with code C"
    if r.returncode == 0 and "exited with code" in (r.stderr + r.stdout):
        r = subprocess.CompletedProcess(r.args, 1, r.stdout, r.stderr)
    return r


def stages_of(n_layers: int, p: int) -> list[list[int]]:
    b = [round(i * n_layers / p) for i in range(p + 1)]
    return [[b[i], b[i + 1]] for i in range(p)]


def step_losses(run_dir: Path) -> list[float]:
    return [m["loss"] for m in read_metrics(Path(run_dir) / "metrics.jsonl") if "loss" in m]


def rel_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / (np.abs(b).max() + 1e-12))


def plain_first_loss(recipe: Recipe) -> float:
    """Step 1's loss from mlx-lm's whole-model logits and the plain formula (independent of the
    fused loss and of the pipeline): sum over the step's micro-batches of CE on learn tokens and
    lambda x -log(1 - p) on penalize tokens, over the step's global counts."""
    model, tok = mlx_lm_load(recipe.model)
    model.freeze()
    mx.random.seed(recipe.seed)
    apply_lora(model, lora_config(recipe.lora))
    seed_lora_a(model, 0, recipe.seed)
    exs = [tokenize_example(tok, json.loads(x), recipe.data.max_seq_len)
           for x in Path(recipe.data.train).read_text().splitlines()]

    run = SimpleNamespace(recipe=recipe, pad_id=getattr(tok, "pad_token_id", None) or 0)  # what the stream reads
    stream = example_stream(run, [e for e in exs if len(e.tokens) >= 2], 0)
    micro = [stream.next() for _ in range(recipe.grad_accum)]
    lam = recipe.phases[0].penalty_weight if recipe.phases and recipe.phases[0].penalty_weight is not None \
        else recipe.loss.penalty_weight
    n_learn = sum(b["n_learn"] for b in micro)
    n_pen = sum(b["n_penalize"] for b in micro)
    ce = ul = 0.0
    for b in micro:
        logits = model(b["inputs"]).astype(mx.float32)
        logp = logits - mx.logsumexp(logits, axis=-1, keepdims=True)
        lp = mx.take_along_axis(logp, b["targets"][..., None], axis=-1)[..., 0]
        p = mx.minimum(mx.exp(lp), 1.0 - 1e-6)
        ce += float(-(lp * (b["labels"] == 1)).sum().item())
        ul += float(-(mx.log1p(-p) * (b["labels"] == -1)).sum().item())
    return ce / max(n_learn, 1) + lam * ul / max(n_pen, 1)


def selftest(n: int = 2, workdir: str | None = None, schedule: str = "1f1b", microbatches: int = 2,
             replicas: int = 1, steps: int = 3, timeout: float = 120) -> dict:
    """`notme train` vs the worker on `n` ranks (n / replicas pipeline stages). Returns the worst
    relative differences of the per-step losses and final adapters, and of step 1's loss against
    `plain_first_loss`."""
    wd = Path(workdir or tempfile.mkdtemp(prefix="notme-selftest-"))
    prepare(wd)
    tag = f"{n}-{schedule}-{microbatches}-{replicas}"
    accum = microbatches * replicas
    single = train(selftest_recipe(wd, f"single-{tag}", accum, steps, schedule, timeout), force=True)
    dist = selftest_recipe(wd, f"dist-{tag}", accum, steps, schedule, timeout)
    job = {"recipe": to_dict(dist), "model_dir": str(wd / "model"), "stages": stages_of(4, n // replicas),
           "replicas": replicas, "force": True}
    r = launch_job(job, n, wd / f"job-{tag}.json", timeout=max(600, 4 * timeout))
    if r.returncode != 0:
        raise RuntimeError(f"mlx.launch exited {r.returncode}: {(r.stderr or r.stdout).strip()[-1500:]}")
    a, b = step_losses(dist.run_dir()), step_losses(single.run_dir)
    if len(a) != len(b):
        raise RuntimeError(f"{len(a)} distributed steps vs {len(b)} single-process steps")
    d_loss = max(abs(x - y) / max(abs(y), 1e-12) for x, y in zip(a, b))
    plain = plain_first_loss(dist)
    d_plain = abs(a[0] - plain) / abs(plain)
    x = mx.load(str(dist.run_dir() / "adapters" / "adapters.safetensors"))
    y = mx.load(str(Path(single.adapter_dir) / "adapters.safetensors"))
    if set(x) != set(y):
        raise RuntimeError(f"adapter keys differ: {sorted(set(x) ^ set(y))[:4]}")
    d_ad = max(rel_diff(np.array(x[k]), np.array(y[k])) for k in y)
    return {"loss": d_loss, "plain_step1": d_plain, "adapters": d_ad, "losses": a, "reference_losses": b,
            "max_rel_diff": max(d_loss, d_plain)}
