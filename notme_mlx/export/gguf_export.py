"""Write a dense llama model and its tokenizer as a GGUF file for llama.cpp.

Layout facts (from llama.cpp's convert_hf_to_gguf.py and the GGUF spec):
tensor names `token_embd`, `blk.{i}.attn_q|attn_k|attn_v|attn_output|attn_norm|
ffn_gate|ffn_up|ffn_down|ffn_norm`, `output_norm`, `output` (absent when the
embeddings are tied); Q/K rows in the interleaved RoPE order (HF weights are
permuted, weights that came from GGUF already are); norms stay F32; a byte-level
BPE vocabulary is `tokenizer.ggml.model = "gpt2"` with tokens, merges and token
types (1 normal, 3 control, 4 user-defined).
"""

from __future__ import annotations

import json
from pathlib import Path

import mlx.core as mx
import numpy as np
from mlx.utils import tree_flatten

from ..errors import NotmeError
from .hf import permute_qk

QUANTS = ("f32", "f16", "q8_0", "q4_0", "q4_1")
_NAMES = [
    ("model.embed_tokens", "token_embd"), ("model.norm", "output_norm"), ("lm_head", "output"),
    ("model.layers.", "blk."), ("self_attn.q_proj", "attn_q"), ("self_attn.k_proj", "attn_k"),
    ("self_attn.v_proj", "attn_v"), ("self_attn.o_proj", "attn_output"),
    ("post_attention_layernorm", "ffn_norm"), ("input_layernorm", "attn_norm"),
    ("mlp.gate_proj", "ffn_gate"), ("mlp.up_proj", "ffn_up"), ("mlp.down_proj", "ffn_down"),
]
SUPPORTED_ARCHS = ("llama",)


def gguf_name(hf_name: str) -> str:
    for a, b in _NAMES:
        hf_name = hf_name.replace(a, b)
    return hf_name


def _tensor_type(name: str, arr: np.ndarray, quant: str):
    import gguf

    T = gguf.GGMLQuantizationType
    if arr.ndim == 1 or name.endswith("_norm.weight") or quant == "f32":
        return T.F32
    if quant == "f16":
        return T.F16
    if arr.shape[-1] % 32 != 0:  # block size 32 along rows
        return T.F16
    return {"q8_0": T.Q8_0, "q4_0": T.Q4_0, "q4_1": T.Q4_1}[quant]


def _tokenizer_metadata(w, tokenizer, pre: str | None) -> None:
    import gguf

    hf = getattr(tokenizer, "_tokenizer", tokenizer)
    tj = json.loads(hf.backend_tokenizer.to_str())
    model = tj.get("model", {})
    if model.get("type") != "BPE":
        raise NotmeError(f"GGUF export supports byte-level BPE tokenizers only, got {model.get('type')!r}")
    vocab = hf.get_vocab()
    n = max(vocab.values()) + 1
    tokens = [f"[PAD{i}]" for i in range(n)]
    for tok, i in vocab.items():
        tokens[i] = tok
    special = {a["id"] for a in tj.get("added_tokens", []) if a.get("special")}
    added = {a["id"] for a in tj.get("added_tokens", []) if not a.get("special")}
    types = [
        gguf.TokenType.CONTROL if i in special else gguf.TokenType.USER_DEFINED if i in added
        else gguf.TokenType.NORMAL for i in range(n)
    ]
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(pre or "default")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    for tid, add in ((hf.bos_token_id, w.add_bos_token_id), (hf.eos_token_id, w.add_eos_token_id),
                     (hf.pad_token_id, w.add_pad_token_id), (hf.unk_token_id, w.add_unk_token_id)):
        if tid is not None:
            add(int(tid))
    w.add_add_bos_token(False)
    if getattr(hf, "chat_template", None):
        w.add_chat_template(hf.chat_template)


def write_gguf(path: Path, model, tokenizer, quant: str = "f16", name: str = "notme",
               tokenizer_pre: str | None = None) -> dict:
    """Write `model` (dense mlx-lm llama) + tokenizer to `path`. Returns {tensor: type name}."""
    import gguf

    if quant not in QUANTS:
        raise NotmeError(f"--quant {quant!r}: expected one of {', '.join(QUANTS)}")
    args = model.args
    arch = getattr(args, "model_type", None)
    if arch not in SUPPORTED_ARCHS:
        raise NotmeError(f"GGUF export supports {', '.join(SUPPORTED_ARCHS)} models, not {arch!r}")
    flat = dict(tree_flatten(model.parameters()))
    if any(k.endswith(".scales") for k in flat):
        raise NotmeError("model has quantized layers; it must be fused/dequantized before GGUF export")
    n_head = args.num_attention_heads
    n_kv = args.num_key_value_heads or n_head
    head_dim = getattr(args, "head_dim", None) or args.hidden_size // n_head
    permute = not bool(getattr(args, "rope_traditional", False))

    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name(name)
    w.add_context_length(int(getattr(args, "max_position_embeddings", None) or 2048))
    w.add_embedding_length(args.hidden_size)
    w.add_block_count(args.num_hidden_layers)
    w.add_feed_forward_length(args.intermediate_size)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_kv)
    w.add_layer_norm_rms_eps(float(args.rms_norm_eps))
    w.add_rope_freq_base(float(args.rope_theta))
    w.add_rope_dimension_count(head_dim)
    w.add_vocab_size(args.vocab_size)
    w.add_file_type({"f32": 0, "f16": 1, "q8_0": 7, "q4_0": 2, "q4_1": 3}[quant])
    _tokenizer_metadata(w, tokenizer, tokenizer_pre)

    types = {}
    for k in sorted(flat):
        v = flat[k]
        if permute and k.endswith("self_attn.q_proj.weight"):
            v = permute_qk(v, n_head)
        elif permute and k.endswith("self_attn.k_proj.weight"):
            v = permute_qk(v, n_kv)
        arr = np.array(v.astype(mx.float32))
        gname = gguf_name(k)
        t = _tensor_type(gname, arr, quant)
        if t == gguf.GGMLQuantizationType.F32:
            w.add_tensor(gname, arr)
        elif t == gguf.GGMLQuantizationType.F16:
            w.add_tensor(gname, arr.astype(np.float16))
        else:
            w.add_tensor(gname, gguf.quants.quantize(arr, t), raw_dtype=t)
        types[gname] = t.name
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return types


def write_gguf_lora(path: Path, model, adapter_weights: dict, rank: int, scale: float, name: str = "notme-lora") -> int:
    """Write a LoRA adapter as a llama.cpp GGUF adapter (`general.type = adapter`).

    llama.cpp applies y += (alpha / r) · B (A x) with `lora_a` [r, in] and `lora_b` [out, r]
    (PEFT layout), so our A [in, r] and B [r, out] are transposed, alpha = scale · r, and the
    rows of B for Q/K are permuted into GGUF's interleaved RoPE order like the base weights.
    `adapter_weights`: {"model.layers.{i}.self_attn.q_proj.lora_a": [in, r], ... .lora_b: [r, out]}.
    Returns the number of adapted modules.
    """
    import gguf

    args = model.args
    n_head = args.num_attention_heads
    n_kv = args.num_key_value_heads or n_head
    permute = not bool(getattr(args, "rope_traditional", False))
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_string("general.type", "adapter")
    w.add_name(name)
    w.add_string("adapter.type", "lora")
    w.add_float32("adapter.lora.alpha", float(scale * rank))
    n = 0
    for k in sorted(adapter_weights):
        if not k.endswith(".lora_a"):
            continue
        base = k[: -len(".lora_a")]
        a = adapter_weights[k].astype(mx.float32).T  # [r, in]
        b = adapter_weights[base + ".lora_b"].astype(mx.float32).T  # [out, r]
        if permute and base.endswith("self_attn.q_proj"):
            b = permute_qk(b, n_head)
        elif permute and base.endswith("self_attn.k_proj"):
            b = permute_qk(b, n_kv)
        g = gguf_name(base + ".weight")
        w.add_tensor(g + ".lora_a", np.array(a))
        w.add_tensor(g + ".lora_b", np.array(b))
        n += 1
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return n
