"""Inputs of `notme bench`: the model directory and the tokenized examples."""

from __future__ import annotations

from pathlib import Path

from ..errors import InputError
from .data import PRESETS, model_dir, synthetic_chats, tokenize


def resolve_model(spec: str | None) -> Path:
    """A preset name (bench-s, bench-xs; default bench-s, built and cached), an mlx-lm dir, or
    any `notme_mlx.models` spec (registry name, hub id, .gguf)."""
    if spec is None or spec in PRESETS:
        return model_dir(spec or "bench-s")
    p = Path(spec)
    if p.is_dir() and (p / "config.json").exists():
        return p
    try:
        from ..models import resolve
    except ImportError:
        raise InputError(f"--model {spec}: not a preset ({', '.join(PRESETS)}) or an mlx-lm directory") from None
    return Path(resolve(spec))


def load_examples(tokenizer, data: str | None, seq: int, n: int = 400, seed: int = 0) -> list:
    """Tokenized examples: DIR/train.jsonl (or a .jsonl file) of DESIGN §4 chats, else `n` synthetic chats."""
    if data is None:
        return tokenize(tokenizer, synthetic_chats(n, seed), seq)
    from ..io import read_jsonl

    p = Path(data)
    f = p / "train.jsonl" if p.is_dir() else p
    if not f.exists():
        raise InputError(f"--data {data}: no {f.name}; pass a folder from `notme data build` or use --synthetic")
    chats = []
    for i, ex in enumerate(read_jsonl(f), 1):
        if not isinstance(ex.get("messages"), list):
            raise InputError(f"{f}:{i}: expected an example with a 'messages' list (DESIGN §4)")
        chats.append(ex)
        if len(chats) >= n:
            break
    out = tokenize(tokenizer, chats, seq)
    if not out:
        raise InputError(f"{f}: no usable examples")
    return out
