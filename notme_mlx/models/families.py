"""Model families: the one table of supported architectures and their quirks.

A family is a `model_type` value of a model's config.json that notme can train,
stack, fuse, export and run in pipeline stages. Each entry says which mlx-lm
module implements it and what differs from plain llama:

- embedding scale: Gemma multiplies token embeddings by √hidden (Gemma 3 rounds
  that factor to bfloat16 first, as mlx-lm and transformers do);
- RMSNorm offset: Gemma norms compute x·(1 + w); llama.cpp stores 1 + w;
- final logit soft-cap (Gemma 2): logits = c·tanh(z / c);
- sliding-window layers (Gemma 3, llama `layer_types`): those layers attend to
  the last `sliding_window` positions only;
- fused projections (Phi-3): `qkv_proj` and `gate_up_proj` are single linears;
- layers without RoPE (SmolLM3: every 4th);
- GGUF: llama.cpp's architecture name, tensor names and whether Q/K rows are
  permuted into the interleaved RoPE order (llama.cpp's llama architecture only).

Shared by the trainer's forward pass, LoRA targets, pipeline stages, GGUF export
and `notme model info`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import mlx.core as mx

from ..errors import NotmeError

LLAMA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
PHI3_TARGETS = ("qkv_proj", "o_proj", "gate_up_proj", "down_proj")
# Fused linear -> the separate projections it holds (in row order).
FUSED = {"qkv_proj": ("q_proj", "k_proj", "v_proj"), "gate_up_proj": ("gate_proj", "up_proj")}

# mlx-lm / Hugging Face name part -> GGUF name part, applied in order (llama.cpp's tensor names).
_GGUF_COMMON = (
    ("model.embed_tokens", "token_embd"), ("model.norm", "output_norm"), ("lm_head", "output"),
    ("model.layers.", "blk."), ("self_attn.q_proj", "attn_q"), ("self_attn.k_proj", "attn_k"),
    ("self_attn.v_proj", "attn_v"), ("self_attn.o_proj", "attn_output"),
    ("self_attn.qkv_proj", "attn_qkv"), ("self_attn.q_norm", "attn_q_norm"),
    ("self_attn.k_norm", "attn_k_norm"), ("input_layernorm", "attn_norm"),
    ("mlp.gate_proj", "ffn_gate"), ("mlp.up_proj", "ffn_up"), ("mlp.gate_up_proj", "ffn_up"),
    ("mlp.down_proj", "ffn_down"),
)
_GGUF_LLAMA_NORMS = (("post_attention_layernorm", "ffn_norm"),)
_GGUF_GEMMA_NORMS = (
    ("post_attention_layernorm", "post_attention_norm"), ("pre_feedforward_layernorm", "ffn_norm"),
    ("post_feedforward_layernorm", "post_ffw_norm"),
)

FEATURES = ("load", "train", "stack", "fuse", "export GGUF", "llama.cpp verified", "cluster stages")


@dataclass(frozen=True)
class Family:
    """What notme needs to know about one architecture."""

    name: str
    model_types: tuple[str, ...]  # config.json model_type values
    mlx_module: str  # mlx_lm.models.<mlx_module>
    hf_architecture: str  # config.json "architectures" entry for an exported HF folder
    gguf_arch: str  # llama.cpp's general.architecture
    targets: tuple[str, ...] = LLAMA_TARGETS  # every adaptable linear of a layer
    embed_scale: str = "none"  # "none" | "sqrt" | "sqrt_bf16"
    norm_offset: float = 0.0  # RMSNorm uses (norm_offset + w)
    gguf_permute_qk: bool = False  # llama.cpp's llama arch uses interleaved RoPE rows
    gguf_norm_names: tuple = _GGUF_LLAMA_NORMS
    gguf_tied_output: bool = True  # llama.cpp accepts a separate `output` tensor for this arch
    array_mask: bool = False  # the layers need an array mask (not the "causal" shortcut)
    softcap: Optional[str] = None  # ModelArgs field of the final logit soft-cap
    features: tuple[str, ...] = FEATURES

    def gguf_name(self, hf_name: str) -> str:
        """GGUF tensor name of an mlx-lm parameter name (`model.layers.0.self_attn.q_proj.weight`)."""
        for a, b in _GGUF_COMMON[:4] + self.gguf_norm_names + _GGUF_COMMON[4:]:
            hf_name = hf_name.replace(a, b)
        return hf_name


FAMILIES: tuple[Family, ...] = (
    Family("llama", ("llama",), "llama", "LlamaForCausalLM", "llama", gguf_permute_qk=True),
    Family("mistral", ("mistral",), "llama", "MistralForCausalLM", "llama", gguf_permute_qk=True),
    Family("qwen2", ("qwen2",), "qwen2", "Qwen2ForCausalLM", "qwen2"),
    Family("qwen3", ("qwen3",), "qwen3", "Qwen3ForCausalLM", "qwen3"),
    Family("gemma", ("gemma",), "gemma", "GemmaForCausalLM", "gemma", embed_scale="sqrt", norm_offset=1.0,
           gguf_tied_output=False),
    Family("gemma2", ("gemma2",), "gemma2", "Gemma2ForCausalLM", "gemma2", embed_scale="sqrt", norm_offset=1.0,
           gguf_norm_names=_GGUF_GEMMA_NORMS, gguf_tied_output=False, array_mask=True,
           softcap="final_logit_softcapping"),
    Family("gemma3", ("gemma3_text",), "gemma3_text", "Gemma3ForCausalLM", "gemma3", embed_scale="sqrt_bf16",
           norm_offset=1.0, gguf_norm_names=_GGUF_GEMMA_NORMS),
    Family("phi3", ("phi3",), "phi3", "Phi3ForCausalLM", "phi3", targets=PHI3_TARGETS),
    # SmolLM3: llama layers, every 4th without RoPE (NoPE)
    Family("smollm3", ("smollm3",), "smollm3", "SmolLM3ForCausalLM", "smollm3", gguf_permute_qk=True),
)


def supported_names() -> str:
    return ", ".join(f"{f.name} ({'/'.join(f.model_types)})" if f.model_types != (f.name,) else f.name
                     for f in FAMILIES)


def family_of(model_type: str | None, where: str = "model") -> Family:
    """The family of a config `model_type`; one clear error line when unsupported."""
    for f in FAMILIES:
        if model_type in f.model_types:
            return f
    raise NotmeError(f"{where}: architecture {model_type!r} is not supported "
                     f"(supported: {supported_names()})")


def model_type_of(model) -> str | None:
    args = getattr(model, "args", None)
    return getattr(args, "model_type", None) or getattr(model, "model_type", None)


def family_of_model(model) -> Family:
    """The family of a loaded mlx-lm model (or a pipeline stage, which keeps `args`)."""
    return family_of(model_type_of(model), type(model).__module__.rsplit(".", 1)[-1])


def embedding_scale(family: Family, args, h: mx.array) -> mx.array:
    """Apply the family's embedding scale exactly as its mlx-lm module does."""
    if family.embed_scale == "sqrt":
        return h * (args.hidden_size ** 0.5)
    if family.embed_scale == "sqrt_bf16":
        return h * mx.array(args.hidden_size ** 0.5, mx.bfloat16).astype(h.dtype)
    return h


def layer_window(family: Family, args, layer: int) -> Optional[int]:
    """Sliding-window size of global layer `layer` (None: full causal attention).

    Gemma 3: every layer except each `sliding_window_pattern`-th. llama (and
    mistral, which mlx-lm runs as llama): layers whose `layer_types` entry is
    `sliding_attention`. mlx-lm runs Gemma 2 with full causal attention in every
    layer, and so do we (its sliding window is 4096 tokens).
    """
    if family.name == "gemma3":
        pattern = int(args.sliding_window_pattern)
        return int(args.sliding_window) if (layer + 1) % pattern != 0 else None
    types = getattr(args, "layer_types", None)
    if family.mlx_module in ("llama", "smollm3") and types and types[layer] == "sliding_attention":
        return int(args.sliding_window)
    return None


def final_softcap(family: Family, args) -> Optional[float]:
    """The final logit soft-cap c (logits = c·tanh(z/c)), or None."""
    if family.softcap is None:
        return None
    c = getattr(args, family.softcap, None)
    return float(c) if c else None
