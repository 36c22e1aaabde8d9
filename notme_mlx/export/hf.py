"""Write a fused model as an mlx-lm / Hugging Face directory (any supported family).

mlx-lm's parameter names are the Hugging Face names
(`model.layers.{i}.self_attn.q_proj.weight`, ...), so the tensors are written
as they are, except when a llama-architecture model came from a GGUF file: GGUF
stores its Q/K rows in the interleaved (traditional) RoPE order, which
transformers cannot run, so those rows are permuted back to the half-split
order and `rope_traditional` is cleared. The config carries the family's
`model_type` and Hugging Face architecture name.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import mlx.core as mx
from mlx.utils import tree_flatten

from ..models.families import family_of_model

SHARD_BYTES = 5 * 1024**3
DTYPES = {"float16": mx.float16, "bfloat16": mx.bfloat16, "float32": mx.float32}
_CONFIG_KEYS = (
    "hidden_size", "num_hidden_layers", "intermediate_size", "num_attention_heads",
    "num_key_value_heads", "rms_norm_eps", "vocab_size", "head_dim", "max_position_embeddings",
    "rope_theta", "rope_scaling", "tie_word_embeddings", "attention_bias", "mlp_bias",
)


def unpermute_qk(w: mx.array, n_heads: int) -> mx.array:
    """Interleaved (GGUF) rows -> half-split (HF) rows. w: [n_heads*head_dim, in]."""
    out, rest = w.shape[0], w.shape[1:]
    return w.reshape(n_heads, out // n_heads // 2, 2, *rest).swapaxes(1, 2).reshape(out, *rest)


def permute_qk(w: mx.array, n_heads: int) -> mx.array:
    """Half-split (HF) rows -> interleaved (GGUF) rows; inverse of `unpermute_qk`."""
    out, rest = w.shape[0], w.shape[1:]
    return w.reshape(n_heads, 2, out // n_heads // 2, *rest).swapaxes(1, 2).reshape(out, *rest)


def hf_config(args, family=None) -> dict:
    """HF config.json from an mlx-lm ModelArgs (rope always half-split on output).

    Every ModelArgs field is kept (mlx-lm reads them back; transformers uses the same names),
    with the family's architecture name and activation.
    """
    arch = family.hf_architecture if family else "LlamaForCausalLM"
    cfg = {"architectures": [arch], "model_type": getattr(args, "model_type", None) or "llama"}
    fields = [f.name for f in dataclasses.fields(args)] if dataclasses.is_dataclass(args) else _CONFIG_KEYS
    for k in fields:
        v = getattr(args, k, None)
        if v is not None and k not in ("model_type", "rope_traditional"):
            cfg[k] = v
    cfg.setdefault("num_key_value_heads", args.num_attention_heads)
    cfg["hidden_act"] = "gelu_pytorch_tanh" if family is not None and family.embed_scale != "none" else "silu"
    return cfg


def hf_weights(model, dtype: str = "float16") -> dict[str, mx.array]:
    """Dense weights with HF names/layout, cast to `dtype`. Raises on quantized layers."""
    args = model.args
    flat = dict(tree_flatten(model.parameters()))
    if any(k.endswith(".scales") for k in flat):
        raise ValueError("model still has quantized layers; fuse/dequantize before export")
    traditional = bool(getattr(args, "rope_traditional", False)) and family_of_model(model).gguf_permute_qk
    n_kv = getattr(args, "num_key_value_heads", None) or args.num_attention_heads
    out = {}
    for k, v in flat.items():
        if traditional and k.endswith("self_attn.q_proj.weight"):
            v = unpermute_qk(v, args.num_attention_heads)
        elif traditional and k.endswith("self_attn.k_proj.weight"):
            v = unpermute_qk(v, n_kv)
        out[k] = v.astype(DTYPES[dtype]) if mx.issubdtype(v.dtype, mx.floating) else v
    return out


def write_safetensors_sharded(out_dir: Path, weights: dict[str, mx.array], max_bytes: int = SHARD_BYTES) -> list[str]:
    """`model.safetensors`, or `model-0000i-of-0000n.safetensors` + index above `max_bytes`."""
    shards: list[dict] = [{}]
    size = 0
    for k in sorted(weights):
        nb = weights[k].nbytes
        if shards[-1] and size + nb > max_bytes:
            shards.append({})
            size = 0
        shards[-1][k] = weights[k]
        size += nb
    if len(shards) == 1:
        mx.save_safetensors(str(out_dir / "model.safetensors"), shards[0], metadata={"format": "pt"})
        return ["model.safetensors"]
    names, wmap = [], {}
    for i, sh in enumerate(shards, 1):
        name = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
        mx.save_safetensors(str(out_dir / name), sh, metadata={"format": "pt"})
        names.append(name)
        wmap.update({k: name for k in sh})
    index = {"metadata": {"total_size": sum(v.nbytes for v in weights.values())}, "weight_map": wmap}
    (out_dir / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
    return names


def write_hf_dir(out_dir: Path, model, tokenizer, dtype: str = "float16", max_shard_bytes: int = SHARD_BYTES) -> None:
    """Write config, weights, tokenizer and generation config into `out_dir` (exists)."""
    cfg = hf_config(model.args, family_of_model(model))
    cfg["torch_dtype"] = dtype
    hf_tok = getattr(tokenizer, "_tokenizer", tokenizer)
    eos = hf_tok.eos_token_id
    bos = hf_tok.bos_token_id
    cfg.update({"bos_token_id": bos, "eos_token_id": eos})
    write_safetensors_sharded(out_dir, hf_weights(model, dtype), max_shard_bytes)
    (out_dir / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True))
    hf_tok.save_pretrained(str(out_dir))
    gen = {"bos_token_id": bos, "eos_token_id": eos, "do_sample": False}
    (out_dir / "generation_config.json").write_text(json.dumps(gen, indent=2))
