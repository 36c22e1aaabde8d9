"""`notme quickstart`: bundled samples -> ingest -> data build -> two-phase train -> before/after
validation-seeking rate on held-out prompts -> (export hook) -> where everything is.

Sized by recipes/quickstart.yaml to finish in minutes on a 2-core Linux CPU (mlx[cpu]);
with Metal available, `METAL_OVERRIDES` use longer sequences, every layer and more steps.
The before/after rate uses the eval package's fast subset when it exists, else a greedy
generation + detector loop over the held-out (test split) prompts.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..errors import ConfigError

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
    before: dict = field(default_factory=dict)   # {"rate", "flagged", "n", "examples": [...]}
    after: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)  # seconds per stage
    train: dict = field(default_factory=dict)    # steps, per-phase validation
    exported: list = field(default_factory=list)


def metal_available() -> bool:
    try:
        import mlx.core as mx

        return bool(mx.metal.is_available())
    except Exception:  # noqa: BLE001 - no metal module on some builds
        return False


def held_out_prompts(data_dir: Path, n: int, context_turns: int = 1) -> list[list[dict]]:
    """Chat prompts from test.jsonl (else valid.jsonl): the system turn (if any) and the last
    `context_turns` messages before the last assistant turn (short prompts: CPU prefill is slow)."""
    from ..io import read_jsonl

    out = []
    for split in ("test", "valid"):
        p = Path(data_dir) / f"{split}.jsonl"
        if not p.exists():
            continue
        for ex in read_jsonl(p):
            msgs = ex["messages"]
            last = max((i for i, m in enumerate(msgs) if m["role"] == "assistant"), default=None)
            if last:
                sys_ = [m for m in msgs[:1] if m["role"] == "system"]
                ctx = [m for m in msgs[max(len(sys_), last - context_turns):last]]
                out.append([{"role": m["role"], "content": m["content"]} for m in sys_ + ctx])
            if len(out) >= n:
                return out
    return out


def seeking_rate(model, tokenizer, prompts, max_new_tokens: int = 48, progress=None) -> dict:
    """Greedy replies to `prompts`, scored by the detector.

    Returns:
        {"rate": flagged / n, "flagged", "n", "examples": [{"reply", "flagged", "cues"}]}.
    """
    try:  # the eval helper's fast subset when present
        from ..eval import fast_seeking_rate

        return fast_seeking_rate(model, tokenizer, prompts, max_new_tokens=max_new_tokens)
    except ImportError:
        pass
    from mlx_lm import generate
    from mlx_lm.sample_utils import make_sampler

    from ..detect import detect

    sampler = make_sampler(temp=0.0)
    rows = []
    for p in prompts:
        text = tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True)
        reply = generate(model, tokenizer, text, max_tokens=max_new_tokens, sampler=sampler, verbose=False)
        d = detect(reply)
        rows.append({"reply": reply, "flagged": bool(d.flagged), "cues": [s.cue for s in d.spans]})
        if progress is not None:
            progress.advance(1)
    flagged = sum(r["flagged"] for r in rows)
    return {"rate": flagged / max(len(rows), 1), "flagged": flagged, "n": len(rows), "examples": rows}


def before_after_rate(model, tokenizer, prompts, n: int, max_new_tokens: int, progress=None) -> dict:
    """The quickstart's validation-seeking rate: the eval package's seeking prompt set
    (`notme_mlx.eval.quick_vsr`: prompts written to invite approval-seeking) when present,
    else greedy replies to the held-out `prompts`. Returns seeking_rate's dict + "prompt_set"."""
    try:
        from ..eval import quick_vsr
    except ImportError:
        quick_vsr = None
    if quick_vsr is not None:
        r = quick_vsr(model, tokenizer, n=n, max_tokens=max_new_tokens)
        ex = [{"prompt": e["prompt"], "reply": e["response"], "flagged": bool(e["cues"]), "cues": e["cues"]}
              for e in r["examples"]]
        return {"rate": r["value"], "lo": r.get("lo"), "hi": r.get("hi"), "n": r["n"],
                "flagged": sum(e["flagged"] for e in ex), "examples": ex, "prompt_set": "eval seeking set"}
    return {**seeking_rate(model, tokenizer, prompts, max_new_tokens, progress), "prompt_set": "held-out test split"}


def _export_hook(result: QuickstartResult) -> list:
    """Export step (the export helper adds `notme_mlx.export.quickstart_export`); skipped if absent."""
    try:
        from ..export import quickstart_export
    except ImportError:
        return []
    return list(quickstart_export(result.model, result.adapter_dir, result.workdir / "export") or [])


def quickstart(workdir: str | Path = "runs/quickstart", model: str | None = None, overrides=(), force: bool = False,
               n_prompts: int = 6, max_new_tokens: int = 32, recipe_path: str | Path | None = None,
               skip_eval: bool = False) -> QuickstartResult:
    """Run the whole pipeline on the bundled samples.

    Args:
        workdir: output folder (messages.jsonl, data/, train/ (the run), quickstart_report.json).
        model: base model spec (default: the recipe's, smollm2-135m).
        overrides: `--set` items applied over recipes/quickstart.yaml (and METAL_OVERRIDES on a Mac).
        force: replace an existing workdir's data and run.
        n_prompts, max_new_tokens: size of the before/after evaluation.
    Returns:
        `QuickstartResult` (also written to workdir/quickstart_report.json).
    """
    from .. import ui
    from ..data.builder import build_dataset
    from ..data.config import DataConfig as BuildConfig
    from ..ingest import ingest_to_file
    from ..io import atomic_write_text
    from ..samples import IDENTITY_FILE, OWNER, sample_paths
    from . import _resolve
    from .config import RECIPES_DIR
    from .trainer import train

    workdir = Path(workdir)
    recipe_path = Path(recipe_path or RECIPES_DIR / "quickstart.yaml")
    if not recipe_path.exists():
        raise ConfigError(f"{recipe_path}: quickstart recipe not found (run from the notme-mlx checkout)")
    over = dict(METAL_OVERRIDES) if metal_available() else {}
    over.update({"out_dir": str(workdir), "name": "train", "data.train": str(workdir / "data" / "train.jsonl"),
                 "data.valid": str(workdir / "data" / "valid.jsonl"),
                 "data.pairs": str(workdir / "data" / "pairs.jsonl")})
    if model is not None:
        over["model"] = model
    from .config import apply_overrides, load_raw, recipe_from_dict

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
    build_cfg = BuildConfig(**{**recipe.data.builder, "max_seq_len": recipe.data.max_seq_len})
    report = build_dataset(messages, data_dir, build_cfg, force=True)
    times["data"] = time.perf_counter() - t

    t = time.perf_counter()
    ui.info(f"[bold]3/5 model[/bold] {recipe.model}")
    base, tok, info = _resolve.load_model(recipe.model)
    times["load"] = time.perf_counter() - t
    prompts = held_out_prompts(data_dir, n_prompts)
    res = QuickstartResult(workdir, messages, data_dir, recipe.run_dir(), recipe.run_dir() / "adapters",
                           str(info.get("path", recipe.model)))
    t = time.perf_counter()
    if not skip_eval:
        ui.info(f"validation-seeking rate before training ({n_prompts} greedy replies, {max_new_tokens} tokens)")
        with ui.progress("eval before", len(prompts)) as task:
            res.before = before_after_rate(base, tok, prompts, n_prompts, max_new_tokens, task)
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
        with ui.progress("eval after", len(prompts)) as task:
            res.after = before_after_rate(base, tok, prompts, n_prompts, max_new_tokens, task)
    times["eval_after"] = time.perf_counter() - t
    ui.info("[bold]5/5 export[/bold]")
    res.exported = _export_hook(res)
    res.timings = {k: round(v, 2) for k, v in times.items()}
    res.timings["total"] = round(sum(times.values()), 2)
    atomic_write_text(workdir / "quickstart_report.json",
                      json.dumps(asdict(res), indent=2, default=str) + "\n")
    return res
