"""LoRA adapters that stack: several named adapters on one linear layer.

    y = W x + Σ_i s_i · B_i (A_i x)        A_i: [in, r_i], B_i: [r_i, out]

`MultiLoRALinear` wraps an `nn.Linear` or `nn.QuantizedLinear` (QLoRA) and holds
named adapters, each with its own rank, scale and dropout; at most one is
trainable, the base and every other adapter are frozen. With one adapter the
forward pass is the plain LoRA formula (no loop). Adapters are saved in
mlx-lm's layout (`adapters.safetensors` + `adapter_config.json`, keys
`model.layers.{i}.self_attn.q_proj.lora_a`), so `mlx_lm.load(...,
adapter_path=...)` and `mlx_lm.generate --adapter-path` load a single layer.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten, tree_unflatten

from .errors import NotmeError
from .io import atomic_dir
from .models import HalfStoredLinear, dequantized_matmul
from .models.families import FUSED, LLAMA_TARGETS, family_of_model

# The default targets: every projection of a layer. A family with fused projections (Phi-3's
# qkv_proj, gate_up_proj) adapts a fused linear when all the projections it holds are targets.
ALL_TARGETS = LLAMA_TARGETS


@dataclass(frozen=True)
class LoRAConfig:
    """rank r, alpha (scale = alpha / r), dropout, target module names, last `num_layers` layers."""

    rank: int = 16
    alpha: float = 32.0
    dropout: float = 0.0
    targets: tuple = ALL_TARGETS
    num_layers: int | None = None

    @property
    def scale(self) -> float:
        return self.alpha / self.rank


class LoRAAdapter(nn.Module):
    """One adapter: lora_a [in, r] (uniform init as mlx-lm), lora_b [r, out] (zeros)."""

    def __init__(self, in_dims: int, out_dims: int, rank: int, scale: float, dropout: float = 0.0):
        super().__init__()
        bound = 1.0 / math.sqrt(in_dims)
        self.lora_a = mx.random.uniform(-bound, bound, (in_dims, rank))
        self.lora_b = mx.zeros((rank, out_dims))
        self.scale = float(scale)
        self.base_scale = float(scale)  # the scale as loaded/trained; chat's /scale multiplies it
        self.dropout = nn.Dropout(dropout) if dropout > 0 else None

    def __call__(self, x):
        if self.dropout is not None:
            x = self.dropout(x)
        return self.scale * ((x @ self.lora_a) @ self.lora_b).astype(x.dtype)


def _dims(base) -> tuple[int, int]:
    if isinstance(base, nn.QuantizedLinear):
        out_dims = base.weight.shape[0]
        in_dims = base.weight.shape[1] * 32 // base.bits
        return in_dims, out_dims
    out_dims, in_dims = base.weight.shape
    return in_dims, out_dims


def _blas_device() -> bool:
    """True when MLX computes on the CPU, where its quantized matmul is ~14x slower than a BLAS GEMM."""
    return mx.default_device() == mx.cpu


class MultiLoRALinear(nn.Module):
    """A frozen base linear plus named LoRA adapters summed on its output."""

    def __init__(self, base: nn.Module):
        super().__init__()
        self.base = base
        self.adapters = {}
        self.base.freeze()

    @property
    def dims(self) -> tuple[int, int]:
        return _dims(self.base)

    def add(self, name: str, rank: int, scale: float, dropout: float = 0.0) -> LoRAAdapter:
        if name in self.adapters:
            raise NotmeError(f"adapter {name!r} is already on this layer")
        in_dims, out_dims = self.dims
        self.adapters[name] = LoRAAdapter(in_dims, out_dims, rank, scale, dropout)
        return self.adapters[name]

    def __call__(self, x):
        b = self.base  # a HalfStoredLinear upcasts its 16-bit weight per GEMM itself
        y = dequantized_matmul(x, b) if isinstance(b, nn.QuantizedLinear) and _blas_device() else b(x)
        ads = self.adapters
        if len(ads) == 1:  # fast path: plain LoRA
            (a,) = ads.values()
            return y + a(x)
        for a in ads.values():
            if a.scale != 0.0:
                y = y + a(x)
        return y

    def dense_weight(self, names=None) -> mx.array:
        """Base weight (dequantized) plus Σ s·(A B)ᵀ over `names` (default all). [out, in].
        float32 for a 16-bit stored base (`HalfStoredLinear`, computed in float32)."""
        b = self.base
        if isinstance(b, nn.QuantizedLinear):
            w = mx.dequantize(b.weight, b.scales, b.biases, b.group_size, b.bits)
        else:
            w = b.weight
        dt = mx.float32 if isinstance(b, HalfStoredLinear) else w.dtype
        w = w.astype(mx.float32)
        for n, a in self.adapters.items():
            if names is None or n in names:
                w = w + (a.scale * a.lora_b.T.astype(mx.float32)) @ a.lora_a.T.astype(mx.float32)
        return w.astype(dt if dt != mx.uint32 else mx.float32)


def _layers(model):
    layers = getattr(model, "layers", None)
    if layers is None:
        layers = model.model.layers
    return layers


def _layer_offset(model, num_layers):
    n = len(_layers(model))
    if num_layers is None or num_layers <= 0 or num_layers > n:
        return 0
    return n - num_layers


def resolve_targets(model, targets) -> set[str]:
    """The layer leaf names to adapt in `model` for the requested `targets`.

    A fused linear (`qkv_proj`, `gate_up_proj`) is adapted when it is named or when every
    projection it holds is; naming only some of them is refused (one adapter spans the
    whole fused matrix).
    """
    want = set(targets)
    try:
        fam = family_of_model(model)
    except NotmeError:
        return want  # not a known family: match the names as given
    out = set()
    for leaf in fam.targets:
        parts = set(FUSED.get(leaf, ()))
        if leaf in want or (parts and parts <= want):
            out.add(leaf)
        elif parts & want:
            raise NotmeError(f"{fam.name} fuses {', '.join(FUSED[leaf])} into one {leaf} linear: target all of "
                             f"them or {leaf} (asked for {', '.join(sorted(parts & want))})")
    unknown = want - out - {p for leaf in out for p in FUSED.get(leaf, ())} - set(fam.targets)
    if unknown and not out:
        raise NotmeError(f"LoRA targets {sorted(unknown)} are not {fam.name} projections "
                         f"(it has: {', '.join(fam.targets)})")
    return out


def lora_modules(model):
    """[(path, MultiLoRALinear)] for every wrapped linear in `model`."""
    return [(p, m) for p, m in model.named_modules() if isinstance(m, MultiLoRALinear)]


def _freeze_all_but(model, trainable: str | None):
    model.freeze()
    if trainable is None:
        return
    for _, m in lora_modules(model):
        if trainable in m.adapters:
            m.adapters[trainable].unfreeze(keys=["lora_a", "lora_b"], recurse=False)


def _set_trainable_after_add(model, name: str, trainable: bool) -> None:
    """A newly added adapter becomes the only trainable one, or stays frozen."""
    if trainable:
        _freeze_all_but(model, name)
        return
    for _, m in lora_modules(model):
        if name in m.adapters:
            m.adapters[name].freeze()


def apply_lora(model, config: LoRAConfig, name: str = "default", trainable: bool = True) -> int:
    """Add adapter `name` to the target linears of the last `config.num_layers` layers.

    Freezes the base (and other adapters when `trainable`). Returns the number of
    parameters the new adapter adds (Σ r·(in + out) over wrapped linears).
    """
    layers = _layers(model)
    start = _layer_offset(model, config.num_layers)
    targets = resolve_targets(model, config.targets)
    added = 0
    for li in range(start, len(layers)):
        layer = layers[li]
        updates = []
        for path, mod in layer.named_modules():
            leaf = path.split(".")[-1]
            if leaf not in targets:
                continue
            if isinstance(mod, MultiLoRALinear):
                wrapped = mod
            elif isinstance(mod, (nn.Linear, nn.QuantizedLinear)):
                wrapped = MultiLoRALinear(mod)
                updates.append((path, wrapped))
            else:
                continue
            wrapped.add(name, config.rank, config.scale, config.dropout)
            i, o = wrapped.dims
            added += config.rank * (i + o)
        if updates:
            layer.update_modules(tree_unflatten(updates))
    if added == 0:
        raise NotmeError(f"LoRA targets {sorted(targets)} matched no linear layer in the model")
    _set_trainable_after_add(model, name, trainable)
    return added


META_ATTR = "_notme_meta_json"  # a str attribute on the model (not a parameter)


def set_meta(model, meta: dict) -> None:
    """Record adapter provenance on the model (the base it was trained on, the layers below);
    `save_adapter` callers store it in adapter_config.json."""
    object.__setattr__(model, META_ATTR, json.dumps(meta))


def get_meta(model) -> dict:
    raw = getattr(model, META_ATTR, None)
    return json.loads(raw) if raw else {}


def lora_key(seed: int, layer: int, module: str) -> mx.array:
    """PRNG key of one adapter's A matrix: a function of (seed, global layer index, module name)."""
    m = ALL_TARGETS.index(module) if module in ALL_TARGETS else 100 + sum(map(ord, module))
    return mx.random.key(seed * 1_000_003 + layer * 101 + m)


def seed_lora_a(layers, global_offset: int, seed: int, name: str = "default") -> None:
    """Draw adapter `name`'s A matrices (uniform +-1/sqrt(in), as at construction) from
    `lora_key(seed, global layer, module)`, so a pipeline stage holding layers [s, e) of a model
    gets the same A as a run of the whole model with the same seed (B stays zero).

    Args:
        layers: a list of transformer blocks, or a model (its blocks).
    """
    if not isinstance(layers, (list, tuple)):
        layers = _layers(layers)
    for li, layer in enumerate(layers):
        for path, m in layer.named_modules():
            if isinstance(m, MultiLoRALinear) and name in m.adapters:
                a = m.adapters[name]
                bound = 1.0 / math.sqrt(a.lora_a.shape[0])
                a.lora_a = mx.random.uniform(-bound, bound, a.lora_a.shape,
                                             key=lora_key(seed, global_offset + li, path.split(".")[-1]))


def adapter_names(model) -> list[str]:
    seen = []
    for _, m in lora_modules(model):
        for n in m.adapters:
            if n not in seen:
                seen.append(n)
    return seen


def adapter_parameters(model, name: str) -> dict[str, mx.array]:
    """Flat {mlx-lm key: array} for adapter `name` (keys like `model.layers.0.self_attn.q_proj.lora_a`)."""
    out = {}
    for path, m in lora_modules(model):
        if name in m.adapters:
            a = m.adapters[name]
            out[f"{path}.lora_a"] = a.lora_a
            out[f"{path}.lora_b"] = a.lora_b
    return out


def trainable_parameters(model) -> dict[str, mx.array]:
    return dict(tree_flatten(model.trainable_parameters()))


def count_parameters(tree) -> int:
    return sum(v.size for _, v in tree_flatten(tree))


def set_scale(model, name: str, scale: float, relative: bool = False) -> None:
    """Set adapter `name`'s output scale (absolute, or multiply when `relative`)."""
    found = False
    for _, m in lora_modules(model):
        if name in m.adapters:
            a = m.adapters[name]
            a.scale = a.scale * scale if relative else float(scale)
            found = True
    if not found:
        raise NotmeError(f"no adapter named {name!r} (have: {', '.join(adapter_names(model)) or 'none'})")


def set_trainable(model, name: str | None) -> None:
    """Make `name` the only trainable adapter (None: nothing trainable)."""
    if name is not None and name not in adapter_names(model):
        raise NotmeError(f"no adapter named {name!r}")
    _freeze_all_but(model, name)


def remove_adapter(model, name: str) -> None:
    for _, m in lora_modules(model):
        m.adapters.pop(name, None)


def save_adapter(model, name: str, out_dir: str | Path, config: LoRAConfig, extra_meta: dict | None = None,
                 force: bool = True) -> Path:
    """Write adapter `name` as `adapters.safetensors` + `adapter_config.json` (mlx-lm layout), atomically."""
    params = adapter_parameters(model, name)
    if not params:
        raise NotmeError(f"no adapter named {name!r} to save")
    layer_ids = sorted({int(k.split(".")[2]) for k in params if k.startswith("model.layers.")})
    n_layers = len(_layers(model))
    num_layers = n_layers - layer_ids[0] if layer_ids else n_layers
    keys = sorted({".".join(k.split(".")[3:-1]) for k in params if k.startswith("model.layers.")})
    scales = {m.adapters[name].scale for _, m in lora_modules(model) if name in m.adapters}
    ranks = {m.adapters[name].lora_a.shape[1] for _, m in lora_modules(model) if name in m.adapters}
    cfg = {
        "fine_tune_type": "lora",
        "num_layers": num_layers,
        "lora_parameters": {"rank": ranks.pop() if len(ranks) == 1 else config.rank,
                            "scale": scales.pop() if len(scales) == 1 else config.scale,
                            "dropout": config.dropout, "keys": keys},
        "notme": {"name": name, "lora": {**asdict(config), "targets": list(config.targets)}, **(extra_meta or {})},
    }
    out_dir = Path(out_dir)
    with atomic_dir(out_dir, force=force) as tmp:
        mx.save_safetensors(str(tmp / "adapters.safetensors"), params, metadata={"format": "mlx"})
        (tmp / "adapter_config.json").write_text(json.dumps(cfg, indent=2))
    return out_dir


def read_adapter_config(path: str | Path) -> dict:
    p = Path(path) / "adapter_config.json"
    if not p.exists():
        raise NotmeError(f"{path}: no adapter_config.json (expected a folder written by notme train)")
    try:
        return json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise NotmeError(f"{p}: invalid JSON ({e.msg} at line {e.lineno})") from None


def load_adapter(model, path: str | Path, name: str | None = None, scale: float | None = None,
                 trainable: bool = False) -> str:
    """Add the adapter saved in `path` to `model` under `name` (default: its saved name).

    `scale` multiplies the saved LoRA scale (1.0 = as trained). Returns the name used.
    """
    path = Path(path)
    cfg = read_adapter_config(path)
    wfile = path / "adapters.safetensors"
    if not wfile.exists():
        raise NotmeError(f"{path}: no adapters.safetensors")
    weights = mx.load(str(wfile))
    meta = cfg.get("notme", {})
    name = name or meta.get("name") or path.name
    if name in adapter_names(model):
        raise NotmeError(f"an adapter named {name!r} is already loaded; pass another name")
    lp = cfg.get("lora_parameters", {})
    saved_scale = float(lp.get("scale", 1.0))
    dropout = float(lp.get("dropout", 0.0) or 0.0) if trainable else 0.0
    modules = dict(model.named_modules())
    by_module: dict[str, dict] = {}
    for k, v in weights.items():
        mod_path, leaf = k.rsplit(".", 1)
        by_module.setdefault(mod_path, {})[leaf] = v
    layers = _layers(model)
    for mod_path, ab in by_module.items():
        if set(ab) != {"lora_a", "lora_b"}:
            raise NotmeError(f"{wfile}: {mod_path} has {sorted(ab)}, expected lora_a and lora_b")
        mod = modules.get(mod_path)
        if mod is None:
            raise NotmeError(f"{wfile}: {mod_path} does not exist in this model (adapter for another architecture?)")
        if not isinstance(mod, MultiLoRALinear):
            parts = mod_path.split(".")
            li = int(parts[2])
            wrapped = MultiLoRALinear(mod)
            layers[li].update_modules(tree_unflatten([(".".join(parts[3:]), wrapped)]))
            mod = wrapped
        in_dims, out_dims = mod.dims
        if ab["lora_a"].shape[0] != in_dims or ab["lora_b"].shape[1] != out_dims:
            raise NotmeError(f"{wfile}: {mod_path} shapes {ab['lora_a'].shape}/{ab['lora_b'].shape} "
                             f"do not fit the layer [{in_dims} -> {out_dims}] (adapter for another base?)")
        a = mod.add(name, ab["lora_a"].shape[1], saved_scale * (1.0 if scale is None else scale), dropout)
        a.lora_a, a.lora_b = ab["lora_a"], ab["lora_b"]
    _set_trainable_after_add(model, name, trainable)
    return name


def fuse(model, names=None) -> int:
    """Merge adapters (`names`, default all) into dense base weights; returns #linears fused.

    A quantized base is dequantized first (never fused back into 4-bit silently).
    Unfused adapters stay, wrapped around the new dense base.
    """
    was_trainable = [n for n in adapter_names(model)
                     if any(f".adapters.{n}." in k for k in trainable_parameters(model))]
    n = 0
    for path, m in lora_modules(model):
        chosen = [k for k in m.adapters if names is None or k in names]
        if not chosen:
            continue
        w = m.dense_weight(chosen)
        bias = getattr(m.base, "bias", None) if "bias" in m.base else None
        lin = nn.Linear(w.shape[1], w.shape[0], bias=bias is not None)
        mx.eval(w)  # materialize now: no adapter graph carried into later steps
        lin.weight = w
        if bias is not None:
            lin.bias = bias
        rest = {k: v for k, v in m.adapters.items() if k not in chosen}
        if rest:
            new = MultiLoRALinear(lin)
            new.adapters = rest
        else:
            new = lin
        model.update_modules(tree_unflatten([(path, new)]))
        n += 1
    model.freeze()
    still = [k for k in was_trainable if k in adapter_names(model)]
    if still:  # an unfused trainable adapter stays trainable
        _freeze_all_but(model, still[0])
    return n
