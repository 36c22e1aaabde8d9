"""The stack manifest (`stack.yaml`): a base model and its ordered adapter layers.

    base: {spec: smollm2-135m, fingerprint: <sha256 of the base weights>}
    layers:
      - {layer: domain,   name: law,     path: ../runs/genesis-domain/adapters, scale: 1.0}
      - {layer: identity, name: alex,    path: ../runs/genesis-identity/adapters}

Layers go bottom to top in the order Base → Domain → Use → Mode → Identity;
paths are relative to the manifest file. Each adapter is trained with every
layer below it frozen and active (`y = Wx + Σ_i s_i B_i A_i x`).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field, replace
from pathlib import Path

import yaml

from ..errors import ConfigError, NotmeError
from ..io import atomic_write_text, read_yaml, sha256_file

LAYER_ORDER = ("domain", "use", "mode", "identity")
_LAYER_KEYS = ("layer", "name", "path", "scale")
_TOP_KEYS = ("base", "layers", "description")
_BASE_KEYS = ("spec", "fingerprint")


@dataclass(frozen=True)
class StackLayer:
    layer: str
    name: str
    path: str
    scale: float = 1.0

    def resolved(self, root: Path) -> Path:
        p = Path(self.path).expanduser()
        return p if p.is_absolute() else (root / p)


@dataclass(frozen=True)
class Stack:
    base_spec: str
    base_fingerprint: str | None
    layers: tuple = ()
    description: str = ""
    root: Path = field(default=Path("."), compare=False)
    source: Path | None = field(default=None, compare=False)

    def names(self) -> list[str]:
        return [l.name for l in self.layers]

    def below(self, layer: str) -> tuple:
        """Layers strictly below `layer` in the five-layer order."""
        k = LAYER_ORDER.index(layer)
        return tuple(l for l in self.layers if LAYER_ORDER.index(l.layer) < k)

    def get(self, name: str) -> StackLayer:
        for l in self.layers:
            if l.name == name or l.layer == name:
                return l
        raise NotmeError(f"{self.source or 'stack'}: no layer named {name!r} (have: {', '.join(self.names()) or 'none'})")

    def to_dict(self) -> dict:
        d = {"base": {"spec": self.base_spec, "fingerprint": self.base_fingerprint},
             "layers": [{"layer": l.layer, "name": l.name, "path": l.path, "scale": l.scale} for l in self.layers]}
        if self.description:
            d["description"] = self.description
        return d


def _unknown(keys, valid, where, errors):
    for k in keys:
        if k not in valid:
            near = difflib.get_close_matches(k, valid, n=1)
            errors.append(f"{where}: unknown key {k!r}" + (f" (did you mean {near[0]!r}?)" if near else ""))


def parse_stack(data: dict, source: Path | None = None) -> Stack:
    """Validate a manifest dict; every problem is reported at once in one ConfigError."""
    where = str(source or "stack")
    errors: list[str] = []
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping with 'base' and 'layers'")
    _unknown(data, _TOP_KEYS, where, errors)
    base = data.get("base")
    if isinstance(base, str):
        base = {"spec": base}
    if not isinstance(base, dict) or not base.get("spec"):
        errors.append(f"{where}: base.spec is required (a model spec, e.g. smollm2-135m)")
        base = {}
    _unknown(base, _BASE_KEYS, f"{where}: base", errors)
    layers = []
    seen = set()
    last = -1
    for i, raw in enumerate(data.get("layers") or []):
        at = f"{where}: layers[{i}]"
        if not isinstance(raw, dict):
            errors.append(f"{at}: expected a mapping")
            continue
        _unknown(raw, _LAYER_KEYS, at, errors)
        kind = raw.get("layer")
        if kind not in LAYER_ORDER:
            errors.append(f"{at}: layer {kind!r} must be one of {', '.join(LAYER_ORDER)}")
            continue
        if LAYER_ORDER.index(kind) < last:
            errors.append(f"{at}: {kind} comes after a higher layer; order is {' → '.join(LAYER_ORDER)}")
        last = max(last, LAYER_ORDER.index(kind))
        name = str(raw.get("name") or kind)
        if name in seen:
            errors.append(f"{at}: duplicate layer name {name!r}")
        seen.add(name)
        if not raw.get("path"):
            errors.append(f"{at}: path is required (an adapter folder)")
            continue
        try:
            scale = float(raw.get("scale", 1.0))
        except (TypeError, ValueError):
            errors.append(f"{at}: scale must be a number, got {raw.get('scale')!r}")
            continue
        layers.append(StackLayer(kind, name, str(raw["path"]), scale))
    if errors:
        raise ConfigError("; ".join(errors))
    return Stack(str(base["spec"]), base.get("fingerprint"), tuple(layers), str(data.get("description", "")),
                 root=(source.parent if source else Path(".")), source=source)


def load_stack(path: str | Path) -> Stack:
    path = Path(path)
    return parse_stack(read_yaml(path, "stack manifest") or {}, path)


def save_stack(stack: Stack, path: str | Path) -> Path:
    text = yaml.safe_dump(stack.to_dict(), sort_keys=False, allow_unicode=True)
    return atomic_write_text(path, text, mode=0o644)


def with_layers(stack: Stack, layers) -> Stack:
    return replace(stack, layers=tuple(layers))


def adapter_hash(path: str | Path) -> str:
    """sha256 of an adapter folder's weights file (its identity in provenance records)."""
    f = Path(path) / "adapters.safetensors"
    if not f.exists():
        raise NotmeError(f"{path}: no adapters.safetensors (expected a folder written by notme train)")
    return sha256_file(f)
