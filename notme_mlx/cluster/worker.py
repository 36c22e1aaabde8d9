"""The per-rank program `notme cluster launch` starts through mlx.launch.

    python -m notme_mlx.cluster.worker JOB.json

JOB.json: {"recipe": the resolved recipe (a mapping), "model_dir": the model folder on every
host, "stages": [[start, end], ...] (one pipeline replica), "replicas": data-parallel copies,
"resume": continue from the run's newest checkpoint, "force": start the run folder over}; tests
add "stop_at_step" (checkpoint and stop there, as `train`'s) and "kill": {"rank", "step"} (that
rank dies at the start of that step: the others must end with a clear error, not hang). Every rank runs `notme train`'s own
`train()`: the same phases, loop, schedule, clipping, metrics and checkpoints. One stage is
plain data parallelism (`LocalBackend` over the world group); several stages use
`PipelineBackend` below: each rank builds only its layers and computes its gradients with
`pipeline_grads`, checkpoints hold one shard per stage, and rank 0 merges the stages into one
mlx-lm adapter at the end of each phase.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import mlx.core as mx
from mlx.utils import tree_flatten
from mlx_lm.tokenizer_utils import load as load_tokenizer

from .. import ui
from ..errors import ConfigError, NotmeError
from ..io import atomic_dir
from ..lora import seed_lora_a
from ..models import resolve
from ..recipe import Recipe, recipe_from_dict, to_dict
from ..train.checkpoint import save_arrays
from ..train.trainer import LocalBackend, lora_config, train
from .pipeline import Layout, PipelineStep, Watchdog
from .plan import load_plan
from .stage import apply_stage_lora, global_lora_weights, load_stage


class PipelineBackend:
    """This rank's layer range of the model (one pipeline stage of one replica) for `train()`."""

    supports_validation = False  # validation needs the whole model; run `notme eval` on the adapter

    def __init__(self, group, stages: list, replicas: int, model_dir: str, schedule: str, timeout: float,
                 kill: dict | None = None):
        self.group, self.stages, self.model_dir, self.kill = group, stages, model_dir, kill or {}
        self.layout = Layout(group.rank(), group.size(), len(stages), replicas)
        self.schedule = schedule
        self.watchdog = Watchdog(group.rank(), timeout) if timeout else None
        self.shard = (self.layout.stage, len(stages))
        self.writes_checkpoint = self.layout.replica == 0
        self.is_main = group.rank() == 0

    def load(self, recipe: Recipe, model=None, tokenizer=None):
        lay = self.layout
        problems = []
        if recipe.data.batching == "pack":
            problems.append("data.batching: pack is not supported in pipeline stages (use bucket)")
        if recipe.grad_accum % lay.replicas:
            problems.append(f"grad_accum: {recipe.grad_accum} micro-batches do not split over {lay.replicas} replicas")
        if recipe.stack is not None:
            problems.append("stack: training on a stack is not supported in pipeline stages")
        if problems:
            raise ConfigError("; ".join(problems))
        start, end = self.stages[lay.stage]
        stage = load_stage(self.model_dir, start, end, lay.first, lay.last)
        cfg = lora_config(recipe.lora)
        n = apply_stage_lora(stage.layers, start, self.stages[-1][1], cfg, recipe.seed)
        seed_lora_a(stage.layers, start, recipe.seed)  # the A a whole-model run draws
        return stage, load_tokenizer(Path(self.model_dir)), cfg, n

    def token_step(self, model, loss_fn, penalty_weight, chunk_size, compile=True):
        step = PipelineStep(model, self.layout, self.group, self.schedule, penalty_weight, chunk_size, self.watchdog)
        if self.kill.get("rank") == self.group.rank():
            return _DiesAt(step, self.kill["step"])
        return step

    def step(self, model, loss_fn, compile=True, what=""):
        raise ConfigError(f"{what}: not supported in pipeline stages (sft phases only); use one stage "
                          "(data parallel) for it")

    def adapter_weights(self, model) -> dict:
        """The stage's trainable weights under its own parameter names (the checkpoint shard)."""
        return dict(tree_flatten(model.trainable_parameters()))

    def barrier(self) -> None:
        if self.watchdog is not None:
            self.watchdog.kick("barrier")
        mx.eval(mx.distributed.all_sum(mx.array(1.0), group=self.group))

    def save_adapter(self, run, out_dir, meta: dict) -> Path:
        """Each stage's weights go to a parts folder; rank 0 merges them into one mlx-lm adapter."""
        out_dir = Path(out_dir)
        parts = out_dir.with_name(f".{out_dir.name}.parts")
        if self.writes_checkpoint:
            parts.mkdir(parents=True, exist_ok=True)
            save_arrays(parts / f"stage-{self.layout.stage}.safetensors", global_lora_weights(run.model))
        self.barrier()
        if self.is_main:
            merge_stages(parts, out_dir, run.lora_cfg, self.stages, meta)
        self.barrier()
        return out_dir


class _DiesAt:
    """A step function whose process exits at its n-th call (a simulated crash of one rank)."""

    def __init__(self, step, n: int):
        self.step, self.n, self.calls = step, n, 0
        self.grad_norm = step.grad_norm

    def __call__(self, *args):
        self.calls += 1
        if self.calls == self.n:
            os._exit(9)
        return self.step(*args)


def merge_stages(parts: Path, out_dir: Path, cfg, stages: list, meta: dict) -> Path:
    """One mlx-lm adapter folder from the stage files in `parts` (which is removed)."""
    w = {}
    for i in range(len(stages)):
        w.update(mx.load(str(parts / f"stage-{i}.safetensors")))
    keys = sorted({".".join(k.split(".")[3:-1]) for k in w})
    layers = sorted({int(k.split(".")[2]) for k in w})
    conf = {"fine_tune_type": "lora", "num_layers": stages[-1][1] - layers[0],
            "lora_parameters": {"rank": cfg.rank, "scale": cfg.scale, "dropout": cfg.dropout, "keys": keys},
            "notme": {"name": "default", "cluster": {"stages": stages}, **meta}}
    with atomic_dir(out_dir, force=True) as tmp:
        mx.save_safetensors(str(tmp / "adapters.safetensors"), w, metadata={"format": "mlx"})
        (tmp / "adapter_config.json").write_text(json.dumps(conf, indent=2))
    for f in parts.iterdir():
        f.unlink()
    parts.rmdir()
    return out_dir


def job_from_recipe(recipe: Recipe, plan_path: str, resume: bool = False, force: bool = False) -> dict:
    """The worker job for a recipe and a plan: the resolved recipe, the model folder and the stages."""
    plan = load_plan(plan_path)
    per = len(plan.stages) // plan.data_parallel
    return {"recipe": to_dict(recipe), "model_dir": str(resolve(recipe.model)),
            "stages": [[s.start_layer, s.end_layer] for s in plan.stages[:per]], "replicas": plan.data_parallel,
            "resume": resume, "force": force}


def run(job: dict) -> int:
    group = mx.distributed.init()
    rank, world = group.rank(), group.size()
    ui.set_rank(rank)
    stages, replicas = job["stages"], job.get("replicas", 1)
    if len(stages) * replicas != world:
        sys.stderr.write(f"error: rank {rank}: plan needs {len(stages) * replicas} ranks ({len(stages)} stages x "
                         f"{replicas} replicas), mlx.launch started {world}\n")
        return 2
    try:
        recipe = recipe_from_dict(job["recipe"], "job recipe")
        if len(stages) == 1:
            backend = LocalBackend(group)
        else:
            backend = PipelineBackend(group, stages, replicas, job["model_dir"], recipe.cluster.schedule,
                                      recipe.cluster.timeout, job.get("kill"))
        train(recipe, resume=job.get("resume", False), force=job.get("force", False), backend=backend,
              stop_at_step=job.get("stop_at_step"))
        if getattr(backend, "watchdog", None) is not None:
            backend.watchdog.stop()
    except NotmeError as e:
        sys.stderr.write(f"error: rank {rank}: {e}\n")
        return e.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(run(json.loads(Path(sys.argv[1]).read_text())))
