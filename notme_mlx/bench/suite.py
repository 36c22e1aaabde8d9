"""Inputs of `notme bench`: the model directory and the tokenized examples."""

from __future__ import annotations

from pathlib import Path

from mlx_lm.utils import load_tokenizer

from ..errors import InputError
from ..io import read_jsonl
from ..models import resolve
from ..recipe import Recipe
from .data import PRESETS, model_dir, synthetic_chats, tokenize

DEFAULT_MODEL = Recipe().model  # the model a recipe trains when it names none


def resolve_model(spec: str | None) -> Path:
    """A preset name (bench-s, bench-xs: random llamas, built and cached), an mlx-lm dir, or any
    `notme_mlx.models` spec (registry name, hub id, .gguf); None: the recipe's default model."""
    if spec in PRESETS:
        return model_dir(spec)
    spec = spec or DEFAULT_MODEL
    p = Path(spec)
    if p.is_dir() and (p / "config.json").exists():
        return p
    return Path(resolve(spec))


def tokenizer(model_path):
    """The tokenizer of a model directory (no weights loaded)."""
    return load_tokenizer(Path(model_path))


def load_examples(tokenizer, data: str | None, seq: int, n: int = 400, seed: int = 0) -> list:
    """Tokenized examples: DIR/train.jsonl (or a .jsonl file) from `notme data build`, else `n` synthetic chats."""
    if data is None:
        return tokenize(tokenizer, synthetic_chats(n, seed), seq)
    p = Path(data)
    f = p / "train.jsonl" if p.is_dir() else p
    if not f.exists():
        raise InputError(f"--data {data}: no {f.name}; pass a folder from `notme data build` or use --synthetic")
    chats = []
    for i, ex in enumerate(read_jsonl(f), 1):
        if not isinstance(ex.get("messages"), list):
            raise InputError(f"{f}:{i}: expected an example with a 'messages' list (a `notme data build` example)")
        chats.append(ex)
        if len(chats) >= n:
            break
    out = tokenize(tokenizer, chats, seq)
    if not out:
        raise InputError(f"{f}: no usable examples")
    return out
