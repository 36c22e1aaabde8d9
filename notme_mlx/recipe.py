"""Recipes: one YAML file -> one frozen, typed `Recipe`, validated with every problem reported at once.

This is the one reader of recipe files: `notme data build`, `notme train`, `notme cluster
launch`, `notme eval` and `notme data synth` all take the `Recipe` (or one of its sections)
that `load_recipe` returns, never a path. It imports nothing above `notme_mlx.errors`.

Precedence (tested): `--set key=value` > the recipe (and its `base:` chain) > the defaults
below. A recipe may start with `base: other.yaml` (resolved relative to the recipe's folder,
then to the shipped `recipes/` folder): the base is loaded first and the recipe's keys are
merged over it (dicts merge key by key, lists and scalars replace). Every field carries
help text in `metadata["help"]`; docs/train.md lists the same table (a test checks it).
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional

import yaml

from .errors import ConfigError
from .resources import bundled_dir

RECIPES_DIR = bundled_dir("recipes")  # the checkout's recipes/ folder, or an installed wheel's copy
LAYERS = ("domain", "use", "mode", "identity")
# Phase types a recipe may name. Each is implemented by a runner registered in
# `notme_mlx.train.phases` (sft, orpo, simpo, dpo) or `notme_mlx.synth.phase` (grpo).
PHASE_TYPES = ("sft", "orpo", "simpo", "dpo", "grpo")
BUILD_MODES = ("auto", "mirror", "assistant")


def _f(default, help: str, **kw):
    if isinstance(default, (list, dict, tuple)) or dataclasses.is_dataclass(default):
        return field(default_factory=lambda d=default: _copy(d), metadata={"help": help}, **kw)
    return field(default=default, metadata={"help": help}, **kw)


def _copy(d):
    return dataclasses.replace(d) if dataclasses.is_dataclass(d) else type(d)(d)


def parse_duration(s) -> float:
    """'90s' | '30m' | '2h' | '1d' | number (minutes) -> seconds."""
    if isinstance(s, (int, float)) and not isinstance(s, bool):
        return float(s) * 60
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", str(s))
    if not m:
        raise ConfigError(f"session_gap: expected e.g. '30m', '2h', '90s', got {s!r}")
    return float(m.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400, "": 60}[m.group(2)]


@dataclass(frozen=True)
class DataConfig:
    train: str = _f("data/train.jsonl", "Training examples (chat JSONL from `notme data build`; docs/data.md).")
    valid: Optional[str] = _f("data/valid.jsonl", "Validation examples; null disables validation.")
    pairs: Optional[str] = _f("data/pairs.jsonl", "Preference pairs for orpo/simpo/dpo phases.")
    max_seq_len: int = _f(1024, "Tokens per example, for `notme data build` (context windows) and the trainer "
                                "(longer examples are left-trimmed).")
    batching: Literal["bucket", "pack"] = _f(
        "pack", "pack: several examples per row with a block-diagonal causal mask (about batch_size "
        "examples per micro-batch, or batch_tokens positions); bucket: length-bucketed batches padded "
        "to pad_multiple (pipeline stages need bucket).")
    pad_multiple: int = _f(32, "Pad each batch's length up to a multiple of this (fewer compiled shapes).")
    pool_size: int = _f(64, "Bucketing pool in batches: examples are sorted by length within random pools.")
    batch_tokens: Optional[int] = _f(None, "Token budget per micro-batch: rows are packed (batching: pack) or "
                                           "bucketed so each holds about this many token positions, instead "
                                           "of batch_size examples; null = batch_size rows (packing: batch_size x the "
                                           "mean example length).")
    max_valid_examples: Optional[int] = _f(256, "Cap on validation examples per evaluation (null = all).")


@dataclass(frozen=True)
class BuildConfig:
    """Options of `notme data build` (the recipe's `build:` section; data.max_seq_len sizes the windows)."""

    seed: int = _f(0, "Seed of the train/valid/test split, the safety sampling and the train shuffle.")
    session_gap: str = _f("30m", "A longer silence starts a new session ('45s', '30m', '2h', '1d').")
    mode: Literal["auto", "mirror", "assistant"] = _f(
        "auto", "Role mapping: mirror (your turns are targets), assistant (the AI's turns are, with "
        "validation-seeking spans penalized); auto: assistant for conversations with an `ai` speaker.")
    mode_by_source: dict = _f({}, "Mode per source, e.g. {chatgpt: assistant, whatsapp: mirror}.")
    penalize: bool = _f(True, "Mark detector spans in target turns as penalize.")
    safety_fraction: float = _f(0.05, "Share of the train split made of safety-replay examples.")
    valid_fraction: float = _f(0.05, "Share of conversations in the validation split.")
    test_fraction: float = _f(0.05, "Share of conversations in the test split.")
    min_target_chars: int = _f(2, "Shorter target turns become context.")
    max_target_chars: int = _f(8000, "Longer target turns become context.")
    dedupe: bool = _f(True, "Remove exact and near-duplicate examples.")
    near_dup_threshold: float = _f(0.85, "Estimated Jaccard of word 3-gram shingles above which examples are near duplicates.")
    scrub: bool = _f(False, "Replace PII with placeholders/pseudonyms before building.")
    system_prompt: Optional[str] = _f(None, "System turn prepended to every example.")
    opener: str = _f("(new conversation)", "User turn inserted when a session opens with a target turn.")
    group_names: bool = _f(True, "Prefix 'Name: ' to user turns in group chats.")

    def gap_seconds(self) -> float:
        return parse_duration(self.session_gap)


@dataclass(frozen=True)
class LoraSection:
    rank: int = _f(16, "LoRA rank r.")
    alpha: float = _f(32.0, "LoRA alpha; the update is scaled by alpha / rank.")
    dropout: float = _f(0.0, "Dropout on the LoRA input during training.")
    targets: tuple[str, ...] = _f(
        ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
        "Linear layers that get an adapter (names inside each transformer block).")
    num_layers: Optional[int] = _f(None, "Adapt only the last N transformer blocks (null = all).")


@dataclass(frozen=True)
class OptimizerConfig:
    name: Literal["adamw"] = _f("adamw", "Optimizer (mlx.optimizers.AdamW).")
    lr: float = _f(2e-4, "Peak learning rate.")
    betas: tuple[float, ...] = _f((0.9, 0.999), "AdamW (beta1, beta2).")
    weight_decay: float = _f(0.0, "Decoupled weight decay.")
    eps: float = _f(1e-8, "AdamW epsilon.")


@dataclass(frozen=True)
class ScheduleConfig:
    type: Literal["constant", "linear", "cosine"] = _f("cosine", "Decay after warmup: constant, linear to min, cosine to min.")
    warmup_steps: int = _f(0, "Linear warmup over this many optimizer steps (step k uses lr*(k+1)/(w+1)).")
    min_lr_ratio: float = _f(0.1, "Final learning rate as a fraction of lr (linear/cosine).")


@dataclass(frozen=True)
class LossConfig:
    penalty_weight: float = _f(10.0, "lambda on the unlikelihood term for penalize (-1) tokens; 0 turns it off.")
    chunk_size: int = _f(8192, "Vocabulary rows per chunk in the fused loss (memory ~ tokens x chunk x 8 B).")


@dataclass(frozen=True)
class CueConfig:
    category: str = _f("custom", "Lexicon category of the cue (a new name starts a category of weight 1).")
    pattern: str = _f("", "Regular expression, matched case-insensitively (lexicon rules, docs/detect.md).")
    weight: Optional[float] = _f(None, "Cue weight (null = the category's).")
    span: Optional[Literal["sentence", "match"]] = _f(None, "What a hit marks (null = the category's).")
    question: bool = _f(False, "The sentence must be a question.")
    anchor: Optional[Literal["start"]] = _f(None, "start: the cue must open its sentence.")

    def to_lexicon(self) -> dict:
        """The cue as `Detector.from_config(extra_cues=...)` takes it (unset fields left out)."""
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None and v is not False}


@dataclass(frozen=True)
class DetectConfig:
    extra_cues: tuple[CueConfig, ...] = _f(
        (), "Extra validation-seeking cues, each {category, pattern[, weight, span, question, anchor]}; "
            "a plain string is a literal phrase in category 'custom'.")
    extra_yaml: Optional[str] = _f(None, "Extra detector lexicon YAML (relative to the recipe's folder).")
    engine: Literal["lexicon", "learned", "both"] = _f(
        "both", "Detector engine: lexicon (YAML cues), learned (sentence classifier) or both (docs/detect.md).")


@dataclass(frozen=True)
class PhaseConfig:
    name: str = _f("sft", "Phase name (used in logs and metrics).")
    type: str = _f("sft", "Phase type: " + ", ".join(PHASE_TYPES) + ".")
    penalty_weight: Optional[float] = _f(None, "Override loss.penalty_weight in this phase (0 = learn only).")
    epochs: Optional[float] = _f(None, "Override epochs in this phase.")
    max_steps: Optional[int] = _f(None, "Override max_steps in this phase (grpo: default 20).")
    lr: Optional[float] = _f(None, "Override optimizer.lr in this phase.")
    beta: float = _f(0.1, "Preference strength (orpo lambda / simpo / dpo beta; grpo: KL coefficient).")
    gamma: float = _f(0.5, "SimPO target margin.")
    data: Optional[str] = _f(None, "Override the phase's data file (train examples, pairs for preference, prompts for grpo).")
    k: int = _f(4, "grpo: completions sampled per prompt (the group).")
    prompts_per_step: int = _f(2, "grpo: prompts per optimizer step.")
    max_tokens: int = _f(32, "grpo: tokens per sampled completion.")
    temp: float = _f(1.0, "grpo: sampling temperature.")
    clip_eps: float = _f(0.2, "grpo: PPO ratio clip.")
    nll_weight: float = _f(0.0, "dpo: weight of the chosen replies' per-token NLL added to the DPO loss (RPO, "
                                "TRL's rpo_alpha); keeps the chosen text likely so the margin cannot be won by "
                                "making every reply unlikely (e.g. ending replies early).")


@dataclass(frozen=True)
class ClusterConfig:
    schedule: Literal["gpipe", "1f1b"] = _f(
        "1f1b", "`notme cluster launch`: pipeline schedule over the grad_accum micro-batches of a step.")
    timeout: float = _f(600.0, "`notme cluster launch`: seconds without progress before a rank gives up "
                               "(a peer died); 0 = wait forever.")


@dataclass(frozen=True)
class Recipe:
    model: str = _f("smollm2-135m", "Base model: registry name, mlx-lm dir, hub id or .gguf file.")
    name: Optional[str] = _f(None, "Run name; outputs go to <out_dir>/<name>/ (default: recipe file stem).")
    out_dir: str = _f("runs", "Folder that holds runs.")
    data: DataConfig = _f(DataConfig(), "Data files and batching.")
    build: BuildConfig = _f(BuildConfig(), "How `notme data build` turns messages into examples.")
    detect: DetectConfig = _f(DetectConfig(), "Detector settings (`notme data build`, eval, synth).")
    lora: LoraSection = _f(LoraSection(), "LoRA adapter shape.")
    optimizer: OptimizerConfig = _f(OptimizerConfig(), "Optimizer.")
    schedule: ScheduleConfig = _f(ScheduleConfig(), "Learning-rate schedule.")
    epochs: float = _f(2.0, "Passes over the training data (ignored when max_steps is set).")
    max_steps: Optional[int] = _f(None, "Optimizer steps per phase; overrides epochs.")
    batch_size: int = _f(4, "Examples (or packed rows) per micro-batch.")
    grad_accum: int = _f(1, "Micro-batches per optimizer step (loss normalized over all of them; under "
                            "`notme cluster launch` they are the pipeline's micro-batches, split over replicas).")
    grad_clip: Optional[float] = _f(1.0, "Clip the global gradient norm to this (null = no clipping).")
    loss: LossConfig = _f(LossConfig(), "Fused CE + unlikelihood loss.")
    eval_every: int = _f(50, "Validation every N steps (0 = only at the end of each phase).")
    save_every: int = _f(100, "Checkpoint every N steps (0 = only at phase ends).")
    keep_last: int = _f(3, "Keep this many newest checkpoints.")
    log_every: int = _f(1, "Write a metrics line every N steps.")
    seed: int = _f(0, "Seed for weights init, data order and dropout.")
    max_bad_steps: int = _f(5, "Stop after this many non-finite steps in a row.")
    phases: tuple[PhaseConfig, ...] = _f((), "Training phases in order (empty = one sft phase).")
    stack: Optional[str] = _f(None, "Stack manifest (stack.yaml) whose layers are loaded frozen below the trained one.")
    train_layer: Optional[Literal["domain", "use", "mode", "identity"]] = _f(None, "Stack layer this run trains.")
    grad_checkpoint: bool = _f(False, "Recompute each block in the backward pass (less activation memory, more compute).")
    fuse_lower: bool = _f(False, "With `stack:`, merge the frozen lower layers into a dense base first (one-adapter step cost; dense base only).")
    compile: bool = _f(True, "mx.compile the training step.")
    memory_check: bool = _f(True, "Refuse to start when the estimated memory exceeds what is available.")
    cluster: ClusterConfig = _f(ClusterConfig(), "Multi-machine training (`notme cluster launch`).")

    def run_dir(self) -> Path:
        return Path(self.out_dir) / (self.name or "run")

    def to_dict(self) -> dict:
        return to_dict(self)


# ----------------------------------------------------------------------------- conversion


def to_dict(obj) -> Any:
    """Plain YAML-able dict of a recipe (tuples become lists)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(x) for x in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def _type_name(tp) -> str:
    origin = typing.get_origin(tp)
    if origin is typing.Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return " or ".join(_type_name(a) for a in args) + " or null"
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (tuple, list):
        return f"list of {_type_name(typing.get_args(tp)[0])}"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return {int: "integer", float: "number", str: "string", bool: "true/false", dict: "a mapping"}.get(tp, str(tp))


def _convert(value, tp, path: str, errors: list[str], shown=None):
    """Check `value` against type `tp`; return the converted value (errors appended, not raised)."""
    origin = typing.get_origin(tp)
    bad = f"{path}: expected {_type_name(shown or tp)}, got {type(value).__name__} {value!r}"
    if origin is typing.Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _convert(value, args[0], path, errors, shown=tp)
    if origin is Literal:
        choices = typing.get_args(tp)
        if value in choices:
            return value
        near = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1)
        errors.append(bad + (f" (did you mean {near[0]!r}?)" if near else ""))
        return choices[0]
    if origin in (tuple, list):
        if isinstance(value, str) or not isinstance(value, (list, tuple)):
            errors.append(bad)
            return ()
        (inner,) = typing.get_args(tp)[:1]
        return tuple(_convert(v, inner, f"{path}[{i}]", errors) for i, v in enumerate(value))
    if dataclasses.is_dataclass(tp):
        if tp is CueConfig and isinstance(value, str):  # a plain phrase: matched literally
            return CueConfig(category="custom", pattern=re.escape(value).replace("\\ ", " "))
        if not isinstance(value, dict):
            errors.append(bad)
            return tp()
        return _build(tp, value, path, errors)
    if tp is bool:
        if not isinstance(value, bool):
            errors.append(bad)
        return bool(value) if isinstance(value, bool) else False
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            errors.append(bad)
            return 0
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads "2e-4" as a string
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            errors.append(bad)
            return 0.0
        return float(value)
    if tp is dict:
        if not isinstance(value, dict):
            errors.append(bad)
            return {}
        return dict(value)
    if tp is str:
        if not isinstance(value, str):
            errors.append(bad)
            return ""
        return value
    raise AssertionError(f"unhandled type {tp}")


def _build(cls, data: dict, path: str, errors: list[str]):
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        where = f"{path}.{key}" if path else str(key)
        if key not in names:
            moved = {k: v for (c, k), v in _MOVED.items() if c is cls}  # keys of another section
            near = difflib.get_close_matches(str(key), names + list(moved), n=1, cutoff=0.5)
            full = (moved[near[0]] if near[0] in moved else (path + "." if path else "") + near[0]) if near else None
            errors.append(f"{where}: unknown key" + (f" (did you mean {full!r}?)" if full else ""))
            continue
        kwargs[key] = _convert(value, hints[key], where, errors)
    return cls(**kwargs)


# Keys that belong to another section: `notme data build` options live in `build:`, not `data:`.
_MOVED = {(DataConfig, f.name): f"build.{f.name}" for f in dataclasses.fields(BuildConfig)
          if f.name not in {g.name for g in dataclasses.fields(DataConfig)}}


def _check_values(r: Recipe, errors: list[str]) -> None:
    def need(cond, msg):
        if not cond:
            errors.append(msg)

    need(r.lora.rank >= 1, f"lora.rank: must be >= 1, got {r.lora.rank}")
    need(0.0 <= r.lora.dropout < 1.0, f"lora.dropout: must be in [0, 1), got {r.lora.dropout}")
    need(r.lora.num_layers is None or r.lora.num_layers >= 1, "lora.num_layers: must be >= 1 or null")
    need(len(r.lora.targets) > 0, "lora.targets: give at least one module name")
    need(r.optimizer.lr > 0, f"optimizer.lr: must be > 0, got {r.optimizer.lr}")
    need(len(r.optimizer.betas) == 2 and all(0 <= b < 1 for b in r.optimizer.betas),
         f"optimizer.betas: expected two numbers in [0, 1), got {list(r.optimizer.betas)}")
    need(r.schedule.warmup_steps >= 0, "schedule.warmup_steps: must be >= 0")
    need(r.data.max_seq_len >= 8, f"data.max_seq_len: must be >= 8, got {r.data.max_seq_len}")
    need(r.data.pad_multiple >= 1, "data.pad_multiple: must be >= 1")
    need(r.data.batch_tokens is None or r.data.batch_tokens >= 1, "data.batch_tokens: must be >= 1 or null")
    need(r.batch_size >= 1, f"batch_size: must be >= 1, got {r.batch_size}")
    need(r.grad_accum >= 1, f"grad_accum: must be >= 1, got {r.grad_accum}")
    need(r.epochs > 0, f"epochs: must be > 0, got {r.epochs}")
    need(r.max_steps is None or r.max_steps >= 1, "max_steps: must be >= 1 or null")
    need(r.grad_clip is None or r.grad_clip > 0, "grad_clip: must be > 0 or null")
    need(r.loss.penalty_weight >= 0, "loss.penalty_weight: must be >= 0")
    need(r.loss.chunk_size >= 1, "loss.chunk_size: must be >= 1")
    need(r.keep_last >= 1, "keep_last: must be >= 1")
    need(r.max_bad_steps >= 1, "max_bad_steps: must be >= 1")
    need(r.log_every >= 1, "log_every: must be >= 1")
    b = r.build
    for k in ("safety_fraction", "valid_fraction", "test_fraction"):
        need(0.0 <= getattr(b, k) < 1.0, f"build.{k}: expected 0 <= value < 1, got {getattr(b, k)}")
    need(b.valid_fraction + b.test_fraction < 1.0, "build: valid_fraction + test_fraction must be < 1")
    need(0.0 < b.near_dup_threshold <= 1.0, f"build.near_dup_threshold: expected 0 < t <= 1, got {b.near_dup_threshold}")
    for k, v in b.mode_by_source.items():
        need(v in ("mirror", "assistant"), f"build.mode_by_source.{k}: expected mirror or assistant, got {v!r}")
    try:
        parse_duration(b.session_gap)
    except ConfigError as e:
        errors.append(f"build.{e}")
    for i, c in enumerate(r.detect.extra_cues):
        need(bool(c.pattern), f"detect.extra_cues[{i}]: give a pattern")
    for i, p in enumerate(r.phases):
        if p.type not in PHASE_TYPES:
            near = difflib.get_close_matches(p.type, list(PHASE_TYPES), n=1)
            errors.append(f"phases[{i}].type: unknown phase type {p.type!r}; known: {', '.join(PHASE_TYPES)}"
                          + (f" (did you mean {near[0]!r}?)" if near else ""))
    if len({p.name for p in r.phases}) != len(r.phases):
        errors.append("phases: phase names must be unique")
    if r.train_layer is not None and r.stack is None:
        errors.append("train_layer: set `stack:` too (the stack whose lower layers are loaded)")


# ----------------------------------------------------------------------------- loading


def _read_yaml(path: Path) -> dict:
    if not path.exists():
        raise ConfigError(f"{path}: recipe not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f":{mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}{where}: invalid YAML ({getattr(e, 'problem', e)})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a recipe is a YAML mapping of key: value, got {type(data).__name__}")
    return data


def merge(base: dict, over: dict) -> dict:
    """Deep-merge `over` onto `base` (dicts merge, everything else replaces); inputs untouched."""
    out = dict(base)
    for k, v in over.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _resolve_base(ref: str, here: Path) -> Path:
    for cand in (here.parent / ref, RECIPES_DIR / ref, Path(ref)):
        if cand.exists():
            return cand
    return here.parent / ref


def load_raw(path: str | Path, _seen: tuple = ()) -> dict:
    """The recipe's merged dict, with its `base:` chain applied (no validation)."""
    path = Path(path)
    if path.resolve() in _seen:
        raise ConfigError(f"{path}: `base:` chain loops back to itself")
    data = _read_yaml(path)
    det = data.get("detect")
    if isinstance(det, dict) and isinstance(det.get("extra_yaml"), str):  # relative to this file
        data["detect"] = dict(det, extra_yaml=str((path.parent / det["extra_yaml"]).resolve()))
    ref = data.pop("base", None)
    if ref is None:
        return data
    if not isinstance(ref, str):
        raise ConfigError(f"{path}: base: expected a recipe file name, got {ref!r}")
    return merge(load_raw(_resolve_base(ref, path), _seen + (path.resolve(),)), data)


def parse_override(item: str) -> tuple[list, Any]:
    """'lora.rank=32' -> (['lora', 'rank'], 32); values are parsed as YAML; list indexes allowed."""
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected key=value, e.g. --set lora.rank=32")
    key, _, raw = item.partition("=")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    parts = [int(p) if p.isdigit() else p for p in key.strip().split(".")]
    if any(p == "" for p in parts):
        raise ConfigError(f"--set {item!r}: empty key part")
    return parts, value


def apply_overrides(data: dict, overrides) -> dict:
    """Apply `--set` items (strings 'a.b=v' or a {dotted key: value} dict) to a raw recipe dict."""
    items = overrides.items() if isinstance(overrides, dict) else [parse_override(s) for s in overrides or ()]
    out = merge({}, data)
    for parts, value in items:
        if isinstance(parts, str):
            parts = [int(p) if p.isdigit() else p for p in parts.split(".")]
        node = out
        for depth, p in enumerate(parts[:-1]):
            nxt = node[p] if isinstance(node, list) and isinstance(p, int) and p < len(node) else (
                node.get(p) if isinstance(node, dict) else None)
            if nxt is None:
                if isinstance(node, list):
                    raise ConfigError(f"--set {'.'.join(map(str, parts))}: index {p} out of range")
                nxt = node[p] = {}
            elif isinstance(nxt, dict):
                nxt = node[p] = dict(nxt)
            elif isinstance(nxt, list):
                nxt = node[p] = [dict(x) if isinstance(x, dict) else x for x in nxt]
            node = nxt
        last = parts[-1]
        if isinstance(node, list):
            if not isinstance(last, int) or last >= len(node):
                raise ConfigError(f"--set {'.'.join(map(str, parts))}: index {last} out of range")
        node[last] = value
    return out


def recipe_from_dict(data: dict, source: str = "recipe") -> Recipe:
    """Validate a raw dict into a `Recipe`; raise one ConfigError listing every problem."""
    errors: list[str] = []
    recipe = _build(Recipe, data, "", errors)
    if not errors:
        _check_values(recipe, errors)
    if errors:
        n = len(errors)
        raise ConfigError(f"{source}: {n} problem{'s' if n > 1 else ''}: " + "; ".join(errors))
    return recipe


def load_recipe(path: str | Path | None, overrides=()) -> Recipe:
    """Load a recipe YAML (with its `base:` chain), apply `--set` overrides, validate.

    Args:
        path: recipe file, or None for the defaults alone.
        overrides: ["lora.rank=32", ...] or {"lora.rank": 32}.
    Returns:
        frozen `Recipe`; `name` defaults to the recipe file's stem.
    """
    data = load_raw(path) if path is not None else {}
    data = apply_overrides(data, overrides)
    if path is not None and data.get("name") is None:
        data["name"] = Path(path).stem
    return recipe_from_dict(data, str(path) if path is not None else "recipe")


def dump_recipe(recipe: Recipe) -> str:
    """The resolved recipe as YAML (what runs/<name>/recipe.yaml holds)."""
    return yaml.safe_dump(to_dict(recipe), sort_keys=False)


def field_docs(cls=Recipe, prefix: str = "") -> list[tuple[str, str, str, str]]:
    """(dotted key, type, default, help) for every field, nested sections expanded."""
    rows = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp, key = hints[f.name], prefix + f.name
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        if dataclasses.is_dataclass(tp):
            rows += field_docs(tp, key + ".")
        else:
            rows.append((key, _type_name(tp), repr(to_dict(default)), f.metadata.get("help", "")))
        if f.name == "phases":
            rows += field_docs(PhaseConfig, "phases[].")
    return rows
