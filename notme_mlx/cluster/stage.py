"""One pipeline stage of a llama model: only its layer range is built and loaded.

Weights are read lazily from the model folder's safetensors (`mx.load` maps
them; only the selected tensors are materialized), renamed from global
(`model.layers.{g}.…`) to local names. LoRA A matrices are initialized from a
key derived from (seed, global layer, module), so a stage's adapters equal the
same layers' adapters in a single-process run of the whole model.
"""

from __future__ import annotations

import json
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten, tree_unflatten

from ..errors import NotmeError
from ..lora import ALL_TARGETS, LoRAConfig, MultiLoRALinear


class StageModel(nn.Module):
    """Layers [start, end) of a llama; embeddings on the first stage, norm + head on the last."""

    def __init__(self, args, start: int, end: int, first: bool, last: bool):
        super().__init__()
        from mlx_lm.models.llama import TransformerBlock

        self.args, self.start, self.end, self.first, self.last = args, start, end, first, last
        self.layers = [TransformerBlock(args) for _ in range(end - start)]
        if first or (last and args.tie_word_embeddings):
            self.embed_tokens = nn.Embedding(args.vocab_size, args.hidden_size)
        if last:
            self.norm = nn.RMSNorm(args.hidden_size, eps=args.rms_norm_eps)
            if not args.tie_word_embeddings:
                self.lm_head = nn.Linear(args.hidden_size, args.vocab_size, bias=False)

    def __call__(self, x):
        """x: [B, T] token ids on the first stage, else [B, T, H] activations."""
        h = self.embed_tokens(x) if self.first else x
        for layer in self.layers:
            h = layer(h, "causal", None)
        return self.norm(h) if self.last else h

    def head(self):
        return self.lm_head.weight if "lm_head" in self else self.embed_tokens.weight


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
    """Build and load one stage from an mlx-lm llama folder (dense or mlx-quantized weights)."""
    from mlx_lm.models import llama

    model_dir = Path(model_dir)
    cfg = json.loads((model_dir / "config.json").read_text())
    if cfg.get("model_type") != "llama":
        raise NotmeError(f"{model_dir}: pipeline stages support llama models, got {cfg.get('model_type')!r}")
    args = llama.ModelArgs.from_dict(cfg)
    if not 0 <= start < end <= args.num_hidden_layers:
        raise NotmeError(f"stage layers [{start}, {end}) outside the model's {args.num_hidden_layers} layers")
    stage = StageModel(args, start, end, first, last)
    weights = {}
    for f in _weight_files(model_dir):
        for k, v in mx.load(str(f)).items():
            name = local_name(k, start, end, first, last, args.tie_word_embeddings)
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


def _lora_key(seed: int, layer: int, module: int) -> mx.array:
    return mx.random.key(seed * 1_000_003 + layer * 101 + module)


def apply_stage_lora(layers, global_offset: int, n_total: int, cfg: LoRAConfig, seed: int, name: str = "default") -> int:
    """LoRA on `layers` (global indices start at `global_offset`), deterministic per (seed, layer, module).

    Applies to the last `cfg.num_layers` of the whole model, as `notme_mlx.lora.apply_lora` does.
    Returns the number of LoRA parameters added.
    """
    first_adapted = 0 if not cfg.num_layers else max(0, n_total - cfg.num_layers)
    added = 0
    for li, layer in enumerate(layers):
        g = global_offset + li
        if g < first_adapted:
            continue
        updates = []
        for path, mod in layer.named_modules():
            leaf = path.split(".")[-1]
            if leaf not in cfg.targets or not isinstance(mod, (nn.Linear, nn.QuantizedLinear, MultiLoRALinear)):
                continue
            wrapped = mod if isinstance(mod, MultiLoRALinear) else MultiLoRALinear(mod)
            a = wrapped.add(name, cfg.rank, cfg.scale, cfg.dropout)
            in_dims, out_dims = wrapped.dims
            bound = 1.0 / in_dims ** 0.5
            a.lora_a = mx.random.uniform(-bound, bound, (in_dims, cfg.rank), key=_lora_key(seed, g, ALL_TARGETS.index(leaf)))
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
