"""Fuse a stack into dense base weights and write them as one mlx-lm / Hugging Face folder."""

from __future__ import annotations

from pathlib import Path

from ..errors import NotmeError
from ..io import atomic_dir
from ..lora import adapter_names, fuse
from ..models import load_model
from ..stack import Stack, load_stack_into
from .hf import write_hf_dir


def fuse_stack(stack: Stack, out: str | Path, layers: list[str] | None = None, dtype: str = "float16",
               force: bool = False) -> Path:
    """Fuse chosen layers (default all) into dense base weights and write an mlx-lm/HF dir."""
    model, tok, info = load_model(stack.base_spec, dequantize=True)
    load_stack_into(model, stack, info, force=force, layers=layers)
    fuse(model)
    if adapter_names(model):
        raise NotmeError("internal: unfused adapters remain")
    with atomic_dir(out, force=force) as tmp:
        write_hf_dir(tmp, model, tok, dtype=dtype)
    return Path(out)
