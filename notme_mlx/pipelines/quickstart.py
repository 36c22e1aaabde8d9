"""`notme quickstart`: bundled samples -> ingest -> data build -> two-phase train -> before/after
validation-seeking rate -> export -> where everything is.

Sized by the shipped quickstart recipe (`recipes/quickstart.yaml`) to finish in minutes on a
2-core Linux CPU (mlx[cpu]); with Metal available, `METAL_OVERRIDES` use longer sequences,
every layer and more steps. The before/after rate is the eval package's quick VSR: greedy
replies to prompts written to invite validation-seeking, scored by the detector.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import mlx.core as mx

from .. import ui
from ..data.builder import build_dataset
from ..errors import ConfigError
from ..eval import quick_vsr
from ..export import quickstart_export
from ..ingest import ingest_to_file
from ..io import atomic_write_text
from ..models import load_model
from ..models.frame import use_recorded_frame
from ..recipe import apply_overrides, load_raw, recipe_from_dict
from ..resources import bundled_file
from ..samples import IDENTITY_FILE, OWNER, sample_paths
from ..train.trainer import train

METAL_OVERRIDES = {
    "data.max_seq_len": 512, "lora.num_layers": None, "lora.rank": 16, "lora.alpha": 32,
    "lora.targets": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "batch_size": 4, "optimizer.lr": 2e-4, "phases.0.max_steps": 150, "phases.1.max_steps": 100,
}


@dataclass
class QuickstartResult:
    workdir: Path
    messages: Path
    data_dir: Path
    run_dir: Path
    adapter_dir: Path
    model: str
    before: dict = field(default_factory=dict)   # {"rate", "lo", "hi", "flagged", "n", "examples", "prompt_set"}
    after: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)  # seconds per stage
    train: dict = field(default_factory=dict)    # steps, per-phase validation
    exported: list = field(default_factory=list)


def metal_available() -> bool:
    metal = getattr(mx, "metal", None)  # absent from some CPU builds
    return bool(metal is not None and metal.is_available())


def seeking_rate(model, tokenizer, n: int, max_new_tokens: int) -> dict:
    """The quickstart's validation-seeking rate: the eval package's quick VSR over `n` prompts of
    its seeking set. Returns {"rate", "lo", "hi", "n", "flagged", "examples", "prompt_set"}."""
    r = quick_vsr(model, tokenizer, n=n, max_tokens=max_new_tokens)
    ex = [{"prompt": e["prompt"], "reply": e["response"], "flagged": bool(e["cues"]), "cues": e["cues"]}
          for e in r["examples"]]
    return {"rate": r["value"], "lo": r.get("lo"), "hi": r.get("hi"), "n": r["n"],
            "flagged": sum(e["flagged"] for e in ex), "examples": ex, "prompt_set": "eval seeking set"}


def quickstart(workdir: str | Path = "runs/quickstart", model: str | None = None, overrides=(), force: bool = False,
               n_prompts: int = 6, max_new_tokens: int = 32, recipe_path: str | Path | None = None,
               skip_eval: bool = False) -> QuickstartResult:
    """Run the whole pipeline on the bundled samples.

    Args:
        workdir: output folder (messages.jsonl, data/, train/ (the run), quickstart_report.json).
        model: base model spec (default: the recipe's, smollm2-135m).
        overrides: `--set` items applied over the quickstart recipe (and METAL_OVERRIDES on a Mac).
        force: replace an existing workdir's data and run.
        n_prompts, max_new_tokens: size of the before/after evaluation.
    Returns:
        `QuickstartResult` (also written to workdir/quickstart_report.json).
    """
    workdir = Path(workdir)
    recipe_path = Path(recipe_path) if recipe_path else bundled_file("recipes", "quickstart.yaml")
    over = dict(METAL_OVERRIDES) if metal_available() else {}
    over.update({"out_dir": str(workdir), "name": "train", "data.train": str(workdir / "data" / "train.jsonl"),
                 "data.valid": str(workdir / "data" / "valid.jsonl"),
                 "data.pairs": str(workdir / "data" / "pairs.jsonl")})
    if model is not None:
        over["model"] = model
    raw = apply_overrides(apply_overrides(load_raw(recipe_path), over), list(overrides))
    recipe = recipe_from_dict(raw, str(recipe_path))
    marker = workdir / ".notme-quickstart"
    if workdir.exists() and any(workdir.iterdir()) and not marker.exists() and not force:
        raise ConfigError(f"{workdir}: exists and was not made by `notme quickstart`; add --force to use it "
                          f"anyway, or --workdir NEW")
    workdir.mkdir(parents=True, exist_ok=True)
    marker.touch()  # a quickstart folder is redone in place by the next quickstart
    t, times = time.perf_counter(), {}
    messages = workdir / "messages.jsonl"
    ui.info(f"[bold]1/5 ingest[/bold] bundled samples of {OWNER} -> {messages}")
    ingest_to_file(sample_paths(), messages, me=[OWNER], identity=IDENTITY_FILE, progress=False)
    times["ingest"] = time.perf_counter() - t

    t = time.perf_counter()
    data_dir = workdir / "data"
    ui.info(f"[bold]2/5 data build[/bold] -> {data_dir}/")
    report = build_dataset(messages, data_dir, recipe.build, force=True, max_seq_len=recipe.data.max_seq_len)
    times["data"] = time.perf_counter() - t

    t = time.perf_counter()
    ui.info(f"[bold]3/5 model[/bold] {recipe.model}")
    base, tok, info = load_model(recipe.model, base_dtype="auto")  # as `notme train` loads it
    use_recorded_frame(tok, data_dir=data_dir)  # a base model: the person's frame names, as data build wrote them
    times["load"] = time.perf_counter() - t
    res = QuickstartResult(workdir, messages, data_dir, recipe.run_dir(), recipe.run_dir() / "adapters",
                           str(info.get("path", recipe.model)))
    t = time.perf_counter()
    if not skip_eval:
        ui.info(f"validation-seeking rate before training ({n_prompts} greedy replies, {max_new_tokens} tokens)")
        res.before = seeking_rate(base, tok, n_prompts, max_new_tokens)
    times["eval_before"] = time.perf_counter() - t

    t = time.perf_counter()
    ui.info(f"[bold]4/5 train[/bold] {len(recipe.phases)} phases -> {recipe.run_dir()}/")
    out = train(recipe, model=base, tokenizer=tok, force=True)
    times["train"] = time.perf_counter() - t
    res.train = {"steps": out.steps, "skipped": out.skipped, "trainable_params": out.trainable_params,
                 "examples": {k: v["examples"] for k, v in report.get("splits", {}).items()},
                 "phases": [{"name": p["name"], "steps": p["steps"], "penalty_weight": p.get("penalty_weight"),
                             "val": p.get("val"), "last_tok_s": p.get("last", {}).get("tok_s")}
                            for p in out.phases]}

    t = time.perf_counter()
    if not skip_eval:
        ui.info("validation-seeking rate after training")
        res.after = seeking_rate(base, tok, n_prompts, max_new_tokens)
    times["eval_after"] = time.perf_counter() - t
    ui.info("[bold]5/5 export[/bold]")
    res.exported = list(quickstart_export(res.model, res.adapter_dir, workdir / "export") or [])
    res.timings = {k: round(v, 2) for k, v in times.items()}
    res.timings["total"] = round(sum(times.values()), 2)
    atomic_write_text(workdir / "quickstart_report.json",
                      json.dumps(asdict(res), indent=2, default=str) + "\n")
    return res
