"""Compose a stack onto a base model, with provenance checks.

Every adapter records the base it was trained on (`base_fingerprint`) and the
layers below it that were active (`trained_on`: name, layer, sha256 of their
weights). Loading refuses a stack whose base or lower layers differ from what
an adapter was trained with, unless `force`.
"""

from __future__ import annotations

from pathlib import Path

import mlx.nn as nn

from ..errors import NotmeError
from ..lora import fuse, load_adapter, read_adapter_config, set_meta
from ..models import load_model, model_fingerprint
from .manifest import LAYER_ORDER, Stack, adapter_hash, load_stack

def _as_stack(stack) -> Stack:
    return stack if isinstance(stack, Stack) else load_stack(stack)


def adapter_meta(path: Path) -> dict:
    cfg = read_adapter_config(path)
    return {**cfg.get("notme", {}), "_lora": cfg.get("lora_parameters", {})}


def check_stack(stack: Stack, base_fingerprint: str | None, force: bool = False) -> list[str]:
    """Return a list of provenance problems (raises NotmeError on the first unless `force`)."""
    problems = []
    src = stack.source or "stack"
    if stack.base_fingerprint and base_fingerprint and stack.base_fingerprint != base_fingerprint:
        problems.append(f"{src}: base {stack.base_spec} has fingerprint {base_fingerprint[:12]}…, "
                        f"the manifest expects {stack.base_fingerprint[:12]}… (a different base model)")
    below = []
    for l in stack.layers:
        p = l.resolved(stack.root)
        meta = adapter_meta(p)
        fp = meta.get("base_fingerprint")
        if fp and base_fingerprint and fp != base_fingerprint:
            problems.append(f"{src}: layer {l.name!r} ({p}) was trained on base {fp[:12]}…, "
                            f"not on {stack.base_spec} ({base_fingerprint[:12]}…)")
        trained_on = meta.get("trained_on")
        if trained_on is not None:
            want = [(t["name"], t["sha256"]) for t in trained_on]
            have = [(b.name, adapter_hash(b.resolved(stack.root))) for b in below]
            if want != have:
                problems.append(f"{src}: layer {l.name!r} was trained on top of "
                                f"[{', '.join(n for n, _ in want) or 'the bare base'}], but the manifest puts it on "
                                f"[{', '.join(n for n, _ in have) or 'the bare base'}] (or their weights changed)")
        below.append(l)
    if problems and not force:
        raise NotmeError(problems[0] + " — use --force to load it anyway")
    return problems


def load_stack_into(model, stack, base_info: dict | None = None, force: bool = False,
                    layers: list[str] | None = None, trainable: str | None = None) -> list[dict]:
    """Add the stack's adapters (all, or the names in `layers`) to `model`, frozen.

    Returns one dict per loaded layer {layer, name, path, scale, sha256}.
    """
    st = _as_stack(stack)
    check_stack(st, (base_info or {}).get("fingerprint"), force)
    out = []
    for l in st.layers:
        if layers is not None and l.name not in layers and l.layer not in layers:
            continue
        p = l.resolved(st.root)
        load_adapter(model, p, name=l.name, scale=l.scale, trainable=(l.name == trainable))
        out.append({"layer": l.layer, "name": l.name, "path": str(p), "scale": l.scale, "sha256": adapter_hash(p)})
    return out


def load_stack_model(stack, force: bool = False, layers: list[str] | None = None, dequantize=None):
    """Load the stack's base with `load_model` and compose the layers. Returns (model, tok, info, loaded)."""
    st = _as_stack(stack)
    model, tok, info = load_model(st.base_spec, dequantize=dequantize)
    loaded = load_stack_into(model, st, info, force=force, layers=layers)
    return model, tok, info, loaded


def load_for_training(stack, train_layer: str, model=None, tokenizer=None, force: bool = False,
                      fuse_lower: bool = False):
    """Base + every layer below `train_layer`, frozen; records provenance on the model.

    The trainer then adds the trainable adapter named `train_layer` on top and
    saves `base_fingerprint` and `trained_on` with it. `fuse_lower`: merge the frozen
    lower layers into the (dense) base weights so a step costs the same as a single
    adapter (equal up to float rounding; refused on a quantized base, which would need
    dequantizing to full size).
    """
    st = _as_stack(stack)
    if train_layer not in LAYER_ORDER:
        raise NotmeError(f"train_layer {train_layer!r} must be one of {', '.join(LAYER_ORDER)}")
    info = {}
    if model is None:
        model, tokenizer, info = load_model(st.base_spec, base_dtype="auto")  # as `notme train` loads it
    fp = info.get("fingerprint")
    if fp is None:
        try:
            fp = model_fingerprint(st.base_spec)
        except NotmeError:
            fp = None
    below = st.below(train_layer)
    sub = Stack(st.base_spec, st.base_fingerprint, below, root=st.root, source=st.source)
    loaded = load_stack_into(model, sub, {"fingerprint": fp}, force=force)
    if fuse_lower and loaded:
        if any(isinstance(m, nn.QuantizedLinear) for _, m in model.named_modules()):
            raise NotmeError(f"{st.source or 'stack'}: fuse_lower needs a dense base; this one is quantized "
                             f"(load it with dequantize=True, or train without fuse_lower)")
        fuse(model)
    set_meta(model, {"base_fingerprint": fp, "base_spec": st.base_spec, "layer": train_layer,
                     "stack": str(st.source) if st.source else None,
                     "trained_on": [{"name": l["name"], "layer": l["layer"], "sha256": l["sha256"]} for l in loaded]})
    return model, tokenizer
