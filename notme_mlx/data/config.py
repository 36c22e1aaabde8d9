"""Dataset-builder options: defaults < recipe `data:`/`detect:` sections < CLI flags."""

from __future__ import annotations

import dataclasses
import difflib
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ..errors import ConfigError

MODES = ("auto", "mirror", "assistant")


@dataclass(frozen=True)
class DataConfig:
    """Options of `notme data build` (each is also a key of a recipe's `data:` section)."""

    seed: int = 0                      # split + safety sampling + train shuffle
    max_seq_len: int = 2048            # tokens (estimated as ceil(chars/4)+4 per turn without a tokenizer)
    session_gap: str = "30m"           # a longer silence starts a new session ("45s", "30m", "2h", "1d")
    mode: str = "auto"                 # auto: conversations with an `ai` speaker -> assistant, else mirror
    mode_by_source: dict = field(default_factory=dict)  # e.g. {chatgpt: assistant, whatsapp: mirror}
    penalize: bool = True              # mark detector spans in target turns as `penalize`
    safety_fraction: float = 0.05      # share of the train split made of safety-replay examples
    valid_fraction: float = 0.05
    test_fraction: float = 0.05
    min_target_chars: int = 2          # shorter target turns become context
    max_target_chars: int = 8000       # longer target turns become context
    dedupe: bool = True
    near_dup_threshold: float = 0.85   # estimated Jaccard of word 3-gram shingles
    scrub: bool = False
    system_prompt: str | None = None   # prepended as a system turn to every example
    opener: str = "(new conversation)" # user turn inserted when a session opens with a target turn
    group_names: bool = True           # prefix "Name: " to user turns in group chats

    def gap_seconds(self) -> float:
        return parse_duration(self.session_gap)


def parse_duration(s) -> float:
    """'90s' | '30m' | '2h' | '1d' | number (minutes) -> seconds."""
    if isinstance(s, (int, float)):
        return float(s) * 60
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", str(s))
    if not m:
        raise ConfigError(f"session_gap: expected e.g. '30m', '2h', '90s', got {s!r}")
    return float(m.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400, "": 60}[m.group(2)]


def _check(cfg: DataConfig) -> None:
    errs = []
    if cfg.mode not in MODES:
        errs.append(f"mode: expected one of {MODES}, got {cfg.mode!r}")
    for k, v in cfg.mode_by_source.items():
        if v not in ("mirror", "assistant"):
            errs.append(f"mode_by_source.{k}: expected mirror|assistant, got {v!r}")
    for k in ("safety_fraction", "valid_fraction", "test_fraction"):
        v = getattr(cfg, k)
        if not 0.0 <= v < 1.0:
            errs.append(f"{k}: expected 0 <= value < 1, got {v}")
    if cfg.valid_fraction + cfg.test_fraction >= 1.0:
        errs.append("valid_fraction + test_fraction must be < 1")
    if cfg.max_seq_len < 16:
        errs.append(f"max_seq_len: expected >= 16, got {cfg.max_seq_len}")
    if not 0.0 < cfg.near_dup_threshold <= 1.0:
        errs.append(f"near_dup_threshold: expected 0 < t <= 1, got {cfg.near_dup_threshold}")
    try:
        parse_duration(cfg.session_gap)
    except ConfigError as e:
        errs.append(str(e))
    if errs:
        raise ConfigError("; ".join(errs))


_TRAINER_KEYS = ("train", "valid", "pairs", "max_seq_len", "batching", "pad_multiple", "pool_size",
                 "max_valid_examples")


def _trainer_keys() -> set:
    """Keys of the recipe's `data:` section that belong to the trainer (ignored here)."""
    try:
        from ..train.config import TRAINER_DATA_KEYS
    except Exception:  # the trainer may not be importable (or not built yet)
        TRAINER_DATA_KEYS = ()
    return set(_TRAINER_KEYS) | set(TRAINER_DATA_KEYS)


def load_data_config(recipe: str | Path | None = None, **overrides) -> tuple[DataConfig, dict]:
    """Build a DataConfig from a recipe's `data:` section and CLI overrides (None = not given).

    Returns:
      (config, detect_section) where detect_section holds `extra_cues` / `extra_yaml` if any.
    """
    names = {f.name for f in dataclasses.fields(DataConfig)}
    values: dict = {}
    detect: dict = {}
    if recipe is not None:
        p = Path(recipe)
        try:
            doc = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
        except FileNotFoundError:
            raise ConfigError(f"{p}: recipe not found") from None
        except yaml.YAMLError as e:
            raise ConfigError(f"{p}: invalid YAML ({e})") from None
        if not isinstance(doc, dict):
            raise ConfigError(f"{p}: expected a mapping at the top level")
        sec = doc.get("data") or {}
        if not isinstance(sec, dict):
            raise ConfigError(f"{p}: 'data' must be a mapping")
        bad = []
        trainer_keys = _trainer_keys()
        for k, v in sec.items():
            if k in trainer_keys and k not in names:
                continue  # the trainer's keys share the `data:` section
            if k not in names:
                near = difflib.get_close_matches(k, sorted(names), n=1)
                bad.append(f"data.{k}: unknown key" + (f" (did you mean {near[0]!r}?)" if near else ""))
            else:
                values[k] = v
        if bad:
            raise ConfigError(f"{p}: " + "; ".join(bad))
        detect = doc.get("detect") or {}
        if not isinstance(detect, dict):
            raise ConfigError(f"{p}: 'detect' must be a mapping")
        if detect.get("extra_yaml"):
            detect = dict(detect, extra_yaml=str((p.parent / detect["extra_yaml"]).resolve()))
    for k, v in overrides.items():
        if k not in names:
            raise ConfigError(f"unknown data option {k!r}")
        if v is not None:
            values[k] = v
    try:
        cfg = DataConfig(**values)
    except TypeError as e:
        raise ConfigError(str(e)) from None
    _check(cfg)
    return cfg, detect
