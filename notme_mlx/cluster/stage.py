"""One pipeline stage of a model of any supported family: only its layer range is loaded.

The stage is built from the family's own mlx-lm classes (random init is lazy, so
layers outside the range are never materialized) and run through
`train.forward`, so the first stage applies the family's embedding scale, every
layer gets its own sliding-window mask by its model-wide index, and the last
stage owns the final norm and the output head (with Gemma 2's soft-cap, via
`loss.output_head`).

Weights are read lazily from the model folder's safetensors (`mx.load` maps
them; only the selected tensors are materialized), renamed from global
(`model.layers.{g}.…`) to local names. LoRA A matrices are initialized from a
key derived from (seed, global layer, module), so a stage's adapters equal the
same layers' adapters in a single-process run of the whole model.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten, tree_unflatten

from ..errors import NotmeError
from ..lora import ALL_TARGETS, LoRAConfig, MultiLoRALinear
from ..loss import output_head
from ..models.families import FUSED, family_of
from ..train.forward import embed, final_norm, run_layers

# Stable module ids for the per-(layer, module) LoRA init keys (llama's ids unchanged).
_TARGET_IDS = ALL_TARGETS + tuple(FUSED)


def family_module(args):
    """The mlx-lm module that implements `args.model_type`'s family."""
    return importlib.import_module(f"mlx_lm.models.{family_of(args.model_type).mlx_module}")


class StageModel(nn.Module):
    """Layers [start, end) of a model; embeddings on the first stage, norm + head on the last.

    `tied`: the output head is the embedding matrix (then the last stage holds it too).
    """

    def __init__(self, args, start: int, end: int, first: bool, last: bool, tied: bool | None = None):
        super().__init__()
        full = family_module(args).Model(args)  # lazy init: nothing outside the range is computed
        inner = full.model
        if tied is None:
            tied = "lm_head" not in full
        self.args, self.start, self.end, self.first, self.last = args, start, end, first, last
        self.layers = inner.layers[start:end]  # model-wide layer objects (Gemma 3 layers know their index)
        if first or (last and tied):
            self.embed_tokens = inner.embed_tokens
        if last:
            self.norm = inner.norm
            if not tied:
                self.lm_head = full.lm_head

    def __call__(self, x):
        """x: [B, T] token ids on the first stage, else [B, T, H] activations."""
        h = embed(self, x) if self.first else x
        h = run_layers(self, h, first_layer=self.start)
        return final_norm(self, h) if self.last else h

    def head(self):
        """The output head as a loss weight spec (soft-capped for Gemma 2)."""
        return output_head(self)


def _weight_files(model_dir: Path) -> list[Path]:
    idx = model_dir / "model.safetensors.index.json"
    if idx.exists():
        return sorted({model_dir / f for f in json.loads(idx.read_text())["weight_map"].values()})
    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise NotmeError(f"{model_dir}: no safetensors weights")
    return files


def local_name(key: str, start: int, end: int, first: bool, last: bool, tied: bool) -> str | None:
    if key.startswith("model.layers."):
        g = int(key.split(".")[2])
        if start <= g < end:
            return f"layers.{g - start}." + ".".join(key.split(".")[3:])
        return None
    if key.startswith("model.embed_tokens."):
        return key[len("model."):] if (first or (last and tied)) else None
    if key.startswith("model.norm."):
        return key[len("model."):] if last else None
    if key.startswith("lm_head."):
        return key if last and not tied else None
    return None


def load_stage(model_dir: str | Path, start: int, end: int, first: bool, last: bool) -> StageModel:
    """Build and load one stage from an mlx-lm folder of a supported family (dense or mlx-quantized)."""
    model_dir = Path(model_dir)
    cfg = json.loads((model_dir / "config.json").read_text())
    fam = family_of(cfg.get("model_type"), str(model_dir / "config.json"))
    module = importlib.import_module(f"mlx_lm.models.{fam.mlx_module}")
    args = module.ModelArgs.from_dict(cfg)
    if not 0 <= start < end <= args.num_hidden_layers:
        raise NotmeError(f"stage layers [{start}, {end}) outside the model's {args.num_hidden_layers} layers")
    files = {f: mx.load(str(f)) for f in _weight_files(model_dir)}
    has_head = any("lm_head.weight" in w for w in files.values())
    tied = not has_head or bool(getattr(args, "tie_word_embeddings", False) and fam.name != "gemma3")
    stage = StageModel(args, start, end, first, last, tied=tied)
    weights = {}
    for w in files.values():
        for k, v in w.items():
            name = local_name(k, start, end, first, last, tied)
            if name is not None:
                weights[name] = v
    if "quantization" in cfg:
        q = cfg["quantization"]
        nn.quantize(stage, group_size=q["group_size"], bits=q["bits"],
                    class_predicate=lambda p, m: f"{p}.scales" in weights)
    stage.load_weights(list(weights.items()), strict=True)
    stage.freeze()
    mx.eval(stage.parameters())
    return stage


def _wanted(leaf: str, want: set) -> bool:
    """A leaf is adapted when named, or when it fuses projections that are all named (as `lora.apply_lora`)."""
    return leaf in want or (leaf in FUSED and set(FUSED[leaf]) <= want)


def _lora_key(seed: int, layer: int, module: int) -> mx.array:
    return mx.random.key(seed * 1_000_003 + layer * 101 + module)


def apply_stage_lora(layers, global_offset: int, n_total: int, cfg: LoRAConfig, seed: int, name: str = "default") -> int:
    """LoRA on `layers` (global indices start at `global_offset`), deterministic per (seed, layer, module).

    Applies to the last `cfg.num_layers` of the whole model, as `notme_mlx.lora.apply_lora` does.
    Returns the number of LoRA parameters added.
    """
    first_adapted = 0 if not cfg.num_layers else max(0, n_total - cfg.num_layers)
    want = set(cfg.targets)
    added = 0
    for li, layer in enumerate(layers):
        g = global_offset + li
        if g < first_adapted:
            continue
        updates = []
        for path, mod in layer.named_modules():
            leaf = path.split(".")[-1]
            if not _wanted(leaf, want) or not isinstance(mod, (nn.Linear, nn.QuantizedLinear, MultiLoRALinear)):
                continue
            wrapped = mod if isinstance(mod, MultiLoRALinear) else MultiLoRALinear(mod)
            a = wrapped.add(name, cfg.rank, cfg.scale, cfg.dropout)
            in_dims, out_dims = wrapped.dims
            bound = 1.0 / in_dims ** 0.5
            a.lora_a = mx.random.uniform(-bound, bound, (in_dims, cfg.rank), key=_lora_key(seed, g, _TARGET_IDS.index(leaf)))
            added += cfg.rank * (in_dims + out_dims)
            if wrapped is not mod:
                updates.append((path, wrapped))
        if updates:
            layer.update_modules(tree_unflatten(updates))
    for layer in layers:
        layer.freeze()
        for _, m in layer.named_modules():
            if isinstance(m, MultiLoRALinear) and name in m.adapters:
                m.adapters[name].unfreeze(keys=["lora_a", "lora_b"], recurse=False)
    return added


def global_lora_weights(stage: StageModel, name: str = "default") -> dict[str, mx.array]:
    """This stage's adapter with mlx-lm global names (`model.layers.{g}.self_attn.q_proj.lora_a`)."""
    out = {}
    for path, m in stage.named_modules():
        if isinstance(m, MultiLoRALinear) and name in m.adapters and path.startswith("layers."):
            parts = path.split(".")
            g = int(parts[1]) + stage.start
            key = "model.layers." + ".".join([str(g)] + parts[2:])
            out[key + ".lora_a"] = m.adapters[name].lora_a
            out[key + ".lora_b"] = m.adapters[name].lora_b
    return out


def flat_trainable(stage) -> dict[str, mx.array]:
    return dict(tree_flatten(stage.trainable_parameters()))
