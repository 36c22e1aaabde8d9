"""Stack operations behind `notme stack`: describe, edit, diff (fusing a stack is an export: export/fused.py)."""

from __future__ import annotations

import mlx.core as mx

from ..errors import NotmeError
from .compose import adapter_meta
from .manifest import LAYER_ORDER, Stack, StackLayer, adapter_hash, with_layers


def describe_layer(stack: Stack, l: StackLayer) -> dict:
    p = l.resolved(stack.root)
    d = {"layer": l.layer, "name": l.name, "path": str(p), "scale": l.scale, "exists": p.exists()}
    if not p.exists():
        return d
    w = mx.load(str(p / "adapters.safetensors"))
    meta = adapter_meta(p)
    d.update({
        "params": int(sum(v.size for v in w.values())),
        "rank": meta.get("_lora", {}).get("rank"),
        "modules": len(w) // 2,
        "sha256": adapter_hash(p),
        "recipe": meta.get("recipe"),
        "phases": meta.get("phases"),
        "trained_on": [t["name"] for t in meta.get("trained_on", [])],
        "base_fingerprint": meta.get("base_fingerprint"),
    })
    return d


def describe(stack: Stack) -> list[dict]:
    return [describe_layer(stack, l) for l in stack.layers]


def add_layer(stack: Stack, layer: str, name: str, path: str, scale: float = 1.0) -> Stack:
    if layer not in LAYER_ORDER:
        raise NotmeError(f"layer {layer!r} must be one of {', '.join(LAYER_ORDER)}")
    if name in stack.names():
        raise NotmeError(f"{stack.source}: a layer named {name!r} exists already (swap it instead)")
    layers = list(stack.layers) + [StackLayer(layer, name, path, scale)]
    layers.sort(key=lambda l: LAYER_ORDER.index(l.layer))  # stable within one kind
    return with_layers(stack, layers)


def remove_layer(stack: Stack, name: str) -> Stack:
    stack.get(name)
    return with_layers(stack, [l for l in stack.layers if l.name != name and l.layer != name])


def swap_layer(stack: Stack, name: str, path: str, new_name: str | None = None) -> Stack:
    old = stack.get(name)
    return with_layers(stack, [StackLayer(l.layer, new_name or l.name, path, l.scale) if l == old else l
                               for l in stack.layers])


def scale_layer(stack: Stack, name: str, scale: float) -> Stack:
    old = stack.get(name)
    return with_layers(stack, [StackLayer(l.layer, l.name, l.path, float(scale)) if l == old else l
                               for l in stack.layers])


def diff(a: Stack, b: Stack) -> list[dict]:
    """Per layer kind: what each stack has there and whether it is the same adapter."""
    rows = [{"layer": "base", "a": a.base_spec, "b": b.base_spec,
             "same": (a.base_fingerprint or a.base_spec) == (b.base_fingerprint or b.base_spec)}]
    for kind in LAYER_ORDER:
        la = [l for l in a.layers if l.layer == kind]
        lb = [l for l in b.layers if l.layer == kind]
        if not la and not lb:
            continue
        ha = [adapter_hash(l.resolved(a.root)) if l.resolved(a.root).exists() else None for l in la]
        hb = [adapter_hash(l.resolved(b.root)) if l.resolved(b.root).exists() else None for l in lb]
        rows.append({"layer": kind, "a": ", ".join(f"{l.name}×{l.scale:g}" for l in la) or "—",
                     "b": ", ".join(f"{l.name}×{l.scale:g}" for l in lb) or "—",
                     "same": ha == hb and [l.scale for l in la] == [l.scale for l in lb]})
    return rows
