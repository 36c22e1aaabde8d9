"""The per-rank program `notme cluster launch` / `selftest` start through mlx.launch.

    python -m notme_mlx.cluster.worker JOB.json

JOB.json: model_dir, stages [[start, end], ...] (one pipeline replica), replicas,
microbatches, schedule (gpipe|1f1b), steps, lr, grad_clip, seed, lora {rank, alpha,
targets, num_layers}, batch {size, seq, seed, vocab} (synthetic) or data (a
tokenized JSONL), penalty_weight, out_dir, timeout, dump_grads, kill {rank, step},
resume. Each rank writes `stage-<rank>` checkpoints; rank 0 writes `losses.json`
and, at the end, the merged single-machine adapter (`adapters/`).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import mlx.core as mx
import mlx.optimizers as optim
from mlx.utils import tree_flatten, tree_unflatten


def synthetic_batch(step: int, size: int, seq: int, vocab: int, seed: int) -> dict:
    """Deterministic batch: random tokens, labels ~ 70% learn / 20% context / 10% penalize."""
    key = mx.random.key(seed * 7919 + step)
    k1, k2 = mx.random.split(key)
    toks = mx.random.randint(0, vocab, (size, seq + 1), key=k1)
    u = mx.random.uniform(shape=(size, seq), key=k2)
    labels = mx.where(u < 0.7, 1, mx.where(u < 0.9, 0, -1)).astype(mx.int32)
    return {"inputs": toks[:, :-1].astype(mx.int32), "targets": toks[:, 1:].astype(mx.int32), "labels": labels}


class DataBatches:
    """Real data for a cluster run: tokenized examples in a seeded order, one batch per step.

    Every rank builds the same batches (the data is small next to the model), so no
    data has to cross the network; rows are padded to a multiple of 32 with label 0.
    """

    def __init__(self, job: dict):
        import random

        from ..data.labels import tokenize_example
        from ..io import read_jsonl
        from mlx_lm.tokenizer_utils import load as load_tokenizer

        tok = load_tokenizer(Path(job["model_dir"]))
        d = job["data"]
        self.rows = []
        for ex in read_jsonl(d["train"]):
            t = tokenize_example(tok, ex, d.get("max_seq_len", 1024))
            if any(l != 0 for l in t.labels[1:]):
                self.rows.append((t.tokens, t.labels))
        if not self.rows:
            from ..errors import InputError

            raise InputError(f"{d['train']}: no example has learn or penalize tokens")
        self.order = list(range(len(self.rows)))
        random.Random(job.get("seed", 0)).shuffle(self.order)
        self.size = job["batch"]["size"]

    def __call__(self, step: int) -> dict:
        idx = [self.order[(step * self.size + i) % len(self.order)] for i in range(self.size)]
        rows = [self.rows[i] for i in idx]
        T = max(len(t) for t, _ in rows) - 1
        T = (T + 31) // 32 * 32
        ins, tg, lb = [], [], []
        for toks, labs in rows:
            n = len(toks) - 1
            ins.append(toks[:-1] + [0] * (T - n))
            tg.append(toks[1:] + [0] * (T - n))
            lb.append(labs[1:] + [0] * (T - n))
        return {"inputs": mx.array(ins, dtype=mx.int32), "targets": mx.array(tg, dtype=mx.int32),
                "labels": mx.array(lb, dtype=mx.int32)}


def job_from_recipe(recipe_path: str, plan_path: str, overrides: dict | None = None) -> dict:
    """A worker job for recipe + plan: model folder, data, LoRA, optimizer and the plan's stages."""
    from ..cluster.plan import load_plan
    from ..models import resolve
    from ..recipe import load_recipe

    r = load_recipe(recipe_path, overrides or {})
    plan = load_plan(plan_path)
    per = len(plan.stages) // plan.data_parallel
    return {
        "model_dir": str(resolve(r.model)), "stages": [[s.start_layer, s.end_layer] for s in plan.stages[:per]],
        "replicas": plan.data_parallel, "microbatches": plan.microbatches, "schedule": "1f1b",
        "steps": r.max_steps or 100, "lr": r.optimizer.lr, "optimizer": "adamw", "grad_clip": r.grad_clip,
        "seed": r.seed, "penalty_weight": r.loss.penalty_weight,
        "lora": {"rank": r.lora.rank, "alpha": r.lora.alpha, "targets": list(r.lora.targets), "num_layers": r.lora.num_layers},
        "batch": {"size": plan.batch_size}, "data": {"train": r.data.train, "max_seq_len": r.data.max_seq_len},
        "out_dir": str(Path(r.out_dir) / (r.name or Path(recipe_path).stem)), "timeout": 600, "save_every": r.save_every,
    }


def lora_cfg(job):
    from ..lora import ALL_TARGETS, LoRAConfig

    l = job.get("lora", {})
    return LoRAConfig(rank=l.get("rank", 4), alpha=l.get("alpha", 8.0), dropout=0.0,
                      targets=tuple(l.get("targets", ALL_TARGETS)), num_layers=l.get("num_layers"))


def make_optimizer(job: dict):
    name = job.get("optimizer", "adamw")
    lr = job.get("lr", 1e-3)
    if name == "adamw":
        return optim.AdamW(learning_rate=lr, weight_decay=job.get("weight_decay", 0.0))
    if name == "sgd":
        return optim.SGD(learning_rate=lr, momentum=0.9)
    raise ValueError(f"optimizer {name!r}: expected adamw or sgd")


def clip(grads: dict, norm: float, max_norm: float | None) -> dict:
    if max_norm and norm > max_norm:
        s = max_norm / (norm + 1e-6)
        return {k: v * s for k, v in grads.items()}
    return grads


def save_stage_ckpt(ckpt_dir: Path, rank: int, stage, opt, step: int, losses: list):
    from ..io import atomic_write_text
    from .stage import global_lora_weights

    ckpt_dir.mkdir(parents=True, exist_ok=True)
    w = global_lora_weights(stage)
    state = dict(tree_flatten(opt.state))
    tmp_w = ckpt_dir / f".stage-{rank}.tmp.safetensors"
    tmp_o = ckpt_dir / f".optim-{rank}.tmp.safetensors"
    mx.save_safetensors(str(tmp_w), w)
    mx.save_safetensors(str(tmp_o), {k: v for k, v in state.items() if isinstance(v, mx.array)})
    os.replace(tmp_w, ckpt_dir / f"stage-{rank}.safetensors")
    os.replace(tmp_o, ckpt_dir / f"optim-{rank}.safetensors")
    atomic_write_text(ckpt_dir / f"meta-{rank}.json", json.dumps({"step": step, "losses": losses}), mode=0o644)


def load_stage_ckpt(ckpt_dir: Path, rank: int, stage, opt):
    from .stage import global_lora_weights

    w = mx.load(str(ckpt_dir / f"stage-{rank}.safetensors"))
    names = global_lora_weights(stage)
    from ..lora import MultiLoRALinear

    for path, m in stage.named_modules():
        if isinstance(m, MultiLoRALinear) and "default" in m.adapters and path.startswith("layers."):
            parts = path.split(".")
            key = "model.layers." + ".".join([str(int(parts[1]) + stage.start)] + parts[2:])
            m.adapters["default"].lora_a = w[key + ".lora_a"]
            m.adapters["default"].lora_b = w[key + ".lora_b"]
    assert set(names) == set(w), "checkpoint does not match this stage's layers"
    st = mx.load(str(ckpt_dir / f"optim-{rank}.safetensors"))
    opt.state = tree_unflatten(list(st.items()))
    meta = json.loads((ckpt_dir / f"meta-{rank}.json").read_text())
    return meta["step"], meta["losses"]


def merge_stages(ckpt_dir: Path, out_dir: Path, job: dict, n_stages: int) -> Path:
    """One mlx-lm adapter folder from the stage files of replica 0."""
    from ..io import atomic_dir

    w = {}
    for r in range(n_stages):
        w.update(mx.load(str(ckpt_dir / f"stage-{r}.safetensors")))
    cfg = lora_cfg(job)
    keys = sorted({".".join(k.split(".")[3:-1]) for k in w})
    layers = sorted({int(k.split(".")[2]) for k in w})
    n_total = job["stages"][-1][1]
    conf = {"fine_tune_type": "lora", "num_layers": n_total - layers[0],
            "lora_parameters": {"rank": cfg.rank, "scale": cfg.scale, "dropout": 0.0, "keys": keys},
            "notme": {"name": "default", "cluster": {"stages": job["stages"], "replicas": job.get("replicas", 1)}}}
    with atomic_dir(out_dir, force=True) as tmp:
        mx.save_safetensors(str(tmp / "adapters.safetensors"), w)
        (tmp / "adapter_config.json").write_text(json.dumps(conf, indent=2))
    return out_dir


def run(job: dict) -> int:
    from .. import ui
    from .pipeline import Layout, Watchdog, global_grad_norm, pipeline_grads
    from .stage import apply_stage_lora, load_stage

    group = mx.distributed.init(strict=job.get("strict", False))
    rank, world = group.rank(), group.size()
    ui.set_rank(rank)
    stages = job["stages"]
    p, dp = len(stages), job.get("replicas", 1)
    if p * dp != world:
        sys.stderr.write(f"error: rank {rank}: plan needs {p * dp} ranks ({p} stages x {dp} replicas), "
                         f"mlx.launch started {world}\n")
        return 2
    layout = Layout(rank, world, p, dp)
    dp_group = group if dp > 1 and p == 1 else None  # pipeline replicas reduce point-to-point
    start, end = stages[layout.stage]
    n_total = stages[-1][1]
    stage = load_stage(job["model_dir"], start, end, layout.first, layout.last)
    apply_stage_lora(stage.layers, start, n_total, lora_cfg(job), job.get("seed", 0))
    opt = make_optimizer(job)
    out = Path(job["out_dir"])
    ckpt_dir = out / "checkpoints"
    step0, losses = 0, []
    if job.get("resume") and (ckpt_dir / f"meta-{rank}.json").exists():
        step0, losses = load_stage_ckpt(ckpt_dir, rank, stage, opt)
    wd = Watchdog(rank, job.get("timeout", 60.0))
    b = job["batch"]
    vocab = stage.args.vocab_size
    data = DataBatches(job) if job.get("data") else None
    import time

    times = []
    for step in range(step0 + 1, job.get("steps", 1) + 1):
        t0 = time.perf_counter()
        kill = job.get("kill") or {}
        if kill.get("rank") == rank and kill.get("step") == step:
            os._exit(9)  # simulated crash of this rank mid-run
        batch = data(step) if data else synthetic_batch(step, b["size"], b["seq"], vocab, b.get("seed", 0))
        loss, grads, stats = pipeline_grads(stage, batch, layout, group, job.get("microbatches", 1),
                                            job.get("schedule", "1f1b"), job.get("penalty_weight", 10.0),
                                            watchdog=wd, dp_group=dp_group)
        if job.get("dump_grads") and step == 1:
            mx.save_safetensors(str(out / f"grads-{rank}.safetensors"),
                                {_global(k, start): v for k, v in grads.items()})
        norm = global_grad_norm(grads, layout, group)
        grads = clip(grads, norm, job.get("grad_clip"))
        opt.update(stage, tree_unflatten(list(grads.items())))
        mx.eval(stage.parameters(), opt.state)
        losses.append(loss)
        times.append(time.perf_counter() - t0)
        wd.kick(f"step {step} done")
        if job.get("save_every") and step % job["save_every"] == 0:
            save_stage_ckpt(ckpt_dir, rank, stage, opt, step, losses)
    save_stage_ckpt(ckpt_dir, rank, stage, opt, job.get("steps", 1), losses)
    if world > 1:
        mx.eval(mx.distributed.all_sum(mx.array(1.0), group=group))  # everyone saved
    if rank == 0:
        merge_stages(ckpt_dir, out / "adapters", job, p)
        (out / "losses.json").write_text(json.dumps(losses))
        (out / "timings.json").write_text(json.dumps({"step_s": times}))
    wd.stop()
    return 0


def _global(local_key: str, start: int) -> str:
    parts = local_key.split(".")
    if parts[0] == "layers":
        parts = ["model", "layers", str(int(parts[1]) + start)] + parts[2:]
    return ".".join(parts).replace(".adapters.default", "")


if __name__ == "__main__":
    sys.exit(run(json.loads(Path(sys.argv[1]).read_text())))
