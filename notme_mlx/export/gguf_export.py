"""Write a dense model of a supported family and its tokenizer as a GGUF file for llama.cpp.

Layout facts (from llama.cpp's convert_hf_to_gguf.py / conversion/*.py, its model
loaders and the `gguf` package): the architecture name and tensor names come
from `models.families` (`token_embd`, `blk.{i}.attn_q|attn_k|attn_v|attn_qkv|
attn_output|attn_norm|attn_q_norm|attn_k_norm|ffn_gate|ffn_up|ffn_down|ffn_norm|
post_attention_norm|post_ffw_norm`, `output_norm`, `output` (absent when the
embeddings are tied)); Q/K rows go in the interleaved RoPE order for llama.cpp's
llama architecture only (HF weights are permuted, weights that came from GGUF
already are); Gemma norms are stored as 1 + w; Phi-3's fused qkv_proj is
`attn_qkv` and its gate_up_proj is `ffn_up` (2·n_ff rows, gate first); norms stay
F32; a byte-level BPE vocabulary is `tokenizer.ggml.model = "gpt2"` with tokens,
merges and token types (1 normal, 3 control, 4 user-defined); a SentencePiece-style one is
`"llama"` with scores (-merge rank), byte tokens, and for Gemma its runs of spaces spelled with
spaces as user-defined tokens, as Gemma's own GGUF files have them; `add_bos_token` says whether
the tokenizer puts BOS first (asked of the tokenizer, not of a config flag).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import gguf
import mlx.core as mx
import numpy as np
from mlx.utils import tree_flatten

from ..errors import NotmeError
from ..models.families import FAMILIES, Family, family_of, family_of_model
from ..models.frame import bos_prefix
from .hf import permute_qk

QUANTS = ("f32", "f16", "q8_0", "q4_0", "q4_1")
SUPPORTED_ARCHS = tuple(f.model_types[0] for f in FAMILIES)
GEMMA2_SLIDING_WINDOW = 4096  # every Gemma 2 size; mlx-lm's ModelArgs does not keep it


def gguf_name(hf_name: str, family: Family | None = None) -> str:
    """GGUF tensor name of an mlx-lm parameter name (llama names when no family is given)."""
    return (family or family_of("llama")).gguf_name(hf_name)


def _family(model) -> Family:
    try:
        return family_of_model(model)
    except NotmeError:
        raise NotmeError(f"GGUF export supports {', '.join(f.name for f in FAMILIES)} models, "
                         f"not {getattr(getattr(model, 'args', None), 'model_type', None)!r}") from None


def _head_dim(args) -> int:
    return getattr(args, "head_dim", None) or args.hidden_size // args.num_attention_heads


def _check_llama_cpp_can_run(fam: Family, args) -> None:
    """Refuse what llama.cpp would silently compute differently."""
    if fam.name in ("gemma2", "gemma3"):
        # llama.cpp derives Gemma's attention scale: 1/sqrt(head_dim), or 1/sqrt(hidden/heads) for 27B.
        big = {"gemma2": 46, "gemma3": 62}[fam.name] == args.num_hidden_layers
        want = args.hidden_size // args.num_attention_heads if big else _head_dim(args)
        if float(args.query_pre_attn_scalar) != float(want):
            raise NotmeError(f"{fam.name}: query_pre_attn_scalar {args.query_pre_attn_scalar} differs from the "
                             f"{want} that llama.cpp derives for this model size; GGUF export would change it")
    if fam.name == "phi3" and getattr(args, "rope_scaling", None):
        raise NotmeError("phi3: rope_scaling (LongRoPE) models are not exported to GGUF yet; "
                         "the 4k-context Phi-3 models are")
    if fam.name == "phi3" and float(getattr(args, "partial_rotary_factor", 1.0)) != 1.0:
        raise NotmeError("phi3: partial_rotary_factor != 1 is not exported to GGUF")
    if fam.name == "smollm3":
        step4 = [int((i + 1) % 4 != 0) for i in range(args.num_hidden_layers)]
        if [int(x) for x in args.no_rope_layers] != step4:
            raise NotmeError("smollm3: llama.cpp drops RoPE in every 4th layer; this model's no_rope_layers "
                             f"{list(args.no_rope_layers)} differ")
    scaling = getattr(args, "rope_scaling", None) or {}
    kind = scaling.get("rope_type", scaling.get("type"))
    if kind not in (None, "default", "linear", "llama3"):
        raise NotmeError(f"{fam.name}: rope_scaling type {kind!r} is not exported to GGUF (linear and llama3 are)")


def llama3_rope_factors(args) -> np.ndarray | None:
    """llama.cpp's `rope_freqs` tensor for Llama 3.1+ rope scaling (as its converter computes it)."""
    sc = getattr(args, "rope_scaling", None) or {}
    if sc.get("rope_type", sc.get("type")) != "llama3":
        return None
    dim = _head_dim(args)
    freqs = 1.0 / (float(args.rope_theta) ** (np.arange(0, dim, 2, dtype=np.float32) / dim))
    factor = sc.get("factor", 8.0)
    low, high = sc.get("low_freq_factor", 1.0), sc.get("high_freq_factor", 4.0)
    old = sc.get("original_max_position_embeddings", 8192)
    low_wl, high_wl = old / low, old / high
    out = []
    for f in freqs:
        wl = 2 * math.pi / f
        if wl < high_wl:
            out.append(1.0)
        elif wl > low_wl:
            out.append(factor)
        else:
            smooth = (old / wl - low) / (high - low)
            out.append(1 / ((1 - smooth) / factor + smooth))
    return np.array(out, dtype=np.float32)


def _hparams(w, fam: Family, args) -> None:
    n_head = args.num_attention_heads
    hd = _head_dim(args)
    w.add_context_length(int(getattr(args, "max_position_embeddings", None) or 2048))
    w.add_embedding_length(args.hidden_size)
    w.add_block_count(args.num_hidden_layers)
    w.add_feed_forward_length(args.intermediate_size)
    w.add_head_count(n_head)
    w.add_head_count_kv(getattr(args, "num_key_value_heads", None) or n_head)
    w.add_key_length(hd)
    w.add_value_length(hd)
    w.add_layer_norm_rms_eps(float(args.rms_norm_eps))
    w.add_rope_freq_base(float(args.rope_theta))
    w.add_rope_dimension_count(hd)
    w.add_vocab_size(args.vocab_size)
    sc = getattr(args, "rope_scaling", None) or {}
    if sc.get("rope_type", sc.get("type")) == "linear":
        w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        w.add_rope_scaling_factor(float(sc["factor"]))
    if fam.name == "gemma2":
        w.add_attn_logit_softcapping(float(args.attn_logit_softcapping))
        w.add_final_logit_softcapping(float(args.final_logit_softcapping))
        w.add_sliding_window(GEMMA2_SLIDING_WINDOW)
    if fam.name == "gemma3":
        pattern = int(args.sliding_window_pattern)
        if pattern != 1:
            w.add_sliding_window(int(args.sliding_window))
            w.add_sliding_window_pattern([(i + 1) % pattern != 0 for i in range(args.num_hidden_layers)])
            w.add_rope_freq_base_swa(float(args.rope_local_base_freq))
    if fam.name == "phi3":
        w.add_rope_scaling_orig_ctx_len(int(getattr(args, "original_max_position_embeddings", 4096)))


def _tensor_type(name: str, arr: np.ndarray, quant: str):
    T = gguf.GGMLQuantizationType
    if arr.ndim == 1 or name.endswith("norm.weight") or quant == "f32":
        return T.F32
    if quant == "f16":
        return T.F16
    if arr.shape[-1] % 32 != 0:  # block size 32 along rows
        return T.F16
    return {"q8_0": T.Q8_0, "q4_0": T.Q4_0, "q4_1": T.Q4_1}[quant]


def _is_sentencepiece(tj: dict) -> bool:
    """A SentencePiece vocabulary in tokenizer.json form: BPE with byte fallback and ▁ for spaces
    (Gemma, Llama 2, Mistral v0.x, Phi-3), as opposed to byte-level BPE (Llama 3, Qwen, SmolLM)."""
    return tj.get("model", {}).get("type") == "BPE" and bool(tj["model"].get("byte_fallback"))


def _prepends_space(tj: dict) -> bool:
    """Does the tokenizer put ▁ before the first word (SentencePiece's add_dummy_prefix)?"""
    def walk(node):
        if isinstance(node, dict):
            if node.get("type") == "Prepend" and node.get("prepend") == "\u2581":
                return True
            if node.get("type") == "Metaspace" and node.get("prepend_scheme", "always") != "never":
                return True
            return any(walk(v) for v in node.values())
        if isinstance(node, list):
            return any(walk(v) for v in node)
        return False

    return walk(tj.get("normalizer")) or walk(tj.get("pre_tokenizer"))


def sentencepiece_scores(tokens: list[str], merges: list[str]) -> list[float]:
    """SentencePiece scores from BPE merges: llama.cpp's SPM tokenizer merges the adjacent pair whose
    result has the highest score, BPE the pair with the lowest merge rank, so score = -rank, the
    rank of the first merge making the token among the distinct tokens merges make (so merges
    listing more than one split of a token, as tokenizers rebuilt from a GGUF do, give the same
    scores). Tokens no merge produces (characters, bytes, specials) get 0."""
    rank: dict[str, int] = {}
    for m in merges:
        a, b = m.split(" ", 1)
        rank.setdefault(a + b, len(rank))
    return [-float(rank[t]) if t in rank else 0.0 for t in tokens]


# tokenizer.json pre-tokenizer split regexes -> llama.cpp's pre-tokenizer names (llama-vocab.cpp
# quotes the original tokenizer.json regex for each of its types)
_SPLIT_REGEX_PRE = {
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*"
    "|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+": "llama-bpe",
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*"
    "|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+": "qwen2",
}


def bpe_pre_tokenizer(tj: dict) -> str:
    """llama.cpp's `tokenizer.ggml.pre` for a byte-level BPE tokenizer.json: GPT-2's regex
    (ByteLevel with its regex) is `gpt-2`, digits split one by one before it `smollm`, the
    Llama 3 / Qwen 2 split regexes `llama-bpe` / `qwen2`; anything else `default`."""
    pre = tj.get("pre_tokenizer") or {}
    parts = pre.get("pretokenizers", [pre]) if pre.get("type") == "Sequence" else [pre]
    kinds = [x.get("type") for x in parts]
    if kinds == ["ByteLevel"] and parts[0].get("use_regex", True):
        return "gpt-2"
    if kinds == ["Digits", "ByteLevel"] and parts[0].get("individual_digits") and parts[1].get("use_regex", True):
        return "smollm"
    if kinds[:1] == ["Split"] and parts[0].get("pattern", {}).get("Regex") in _SPLIT_REGEX_PRE:
        return _SPLIT_REGEX_PRE[parts[0]["pattern"]["Regex"]]
    return "default"


def _gemma_spaces(token: str) -> bool:
    """A run of two or more spaces, which Gemma's GGUF vocabulary spells with real spaces as a
    user-defined token (llama.cpp matches it whole) and tokenizer.json spells with ▁."""
    return len(token) >= 2 and set(token) == {"\u2581"}


def _tokenizer_metadata(w, tokenizer, pre: str | None, arch: str | None = None) -> None:
    hf = getattr(tokenizer, "_tokenizer", tokenizer)
    tj = json.loads(hf.backend_tokenizer.to_str())
    model = tj.get("model", {})
    if model.get("type") != "BPE":
        raise NotmeError(f"GGUF export supports BPE tokenizers (byte-level or SentencePiece-style), "
                         f"got {model.get('type')!r}")
    spm = _is_sentencepiece(tj)
    vocab = hf.get_vocab()
    n = max(vocab.values()) + 1
    tokens = [f"[PAD{i}]" for i in range(n)]
    for tok, i in vocab.items():
        tokens[i] = tok
    special = {a["id"] for a in tj.get("added_tokens", []) if a.get("special")}
    added = {a["id"] for a in tj.get("added_tokens", []) if not a.get("special")}
    T = gguf.TokenType

    def kind(i: int):
        if i in special:
            return T.UNKNOWN if spm and i == hf.unk_token_id else T.CONTROL
        if i in added:
            return T.USER_DEFINED
        if spm and len(tokens[i]) == 6 and tokens[i].startswith("<0x") and tokens[i].endswith(">"):
            return T.BYTE
        return T.NORMAL

    types = [kind(i) for i in range(n)]
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    if spm:
        scores = sentencepiece_scores(tokens, merges)
        listed = list(tokens)
        if arch is not None and arch.startswith("gemma"):  # space runs as Gemma's own GGUF writes them
            for i, t in enumerate(tokens):
                if _gemma_spaces(t) and types[i] == T.NORMAL:
                    listed[i], types[i] = " " * len(t), T.USER_DEFINED
        w.add_tokenizer_model("llama")
        w.add_tokenizer_pre("default")
        w.add_token_list(listed)
        w.add_token_scores(scores)
        w.add_token_types(types)
        w.add_add_space_prefix(_prepends_space(tj))
    else:
        w.add_tokenizer_model("gpt2")
        w.add_tokenizer_pre(pre or bpe_pre_tokenizer(tj))
        w.add_token_list(tokens)
        w.add_token_types(types)
        w.add_token_merges(merges)
    for tid, add in ((hf.bos_token_id, w.add_bos_token_id), (hf.eos_token_id, w.add_eos_token_id),
                     (hf.pad_token_id, w.add_pad_token_id), (hf.unk_token_id, w.add_unk_token_id)):
        if tid is not None:
            add(int(tid))
    w.add_add_bos_token(bool(bos_prefix(tokenizer)))  # asked of the tokenizer (transformers 5 has no flag)
    if getattr(hf, "chat_template", None):
        w.add_chat_template(hf.chat_template)


def write_gguf(path: Path, model, tokenizer, quant: str = "f16", name: str = "notme",
               tokenizer_pre: str | None = None) -> dict:
    """Write `model` (dense, any supported family) + tokenizer to `path`. Returns {tensor: type name}."""
    if quant not in QUANTS:
        raise NotmeError(f"--quant {quant!r}: expected one of {', '.join(QUANTS)}")
    args = model.args
    fam = _family(model)
    _check_llama_cpp_can_run(fam, args)
    flat = dict(tree_flatten(model.parameters()))
    if any(k.endswith(".scales") for k in flat):
        raise NotmeError("model has quantized layers; it must be fused/dequantized before GGUF export")
    n_head = args.num_attention_heads
    n_kv = getattr(args, "num_key_value_heads", None) or n_head
    permute = fam.gguf_permute_qk and not bool(getattr(args, "rope_traditional", False))

    w = gguf.GGUFWriter(str(path), fam.gguf_arch)
    w.add_name(name)
    _hparams(w, fam, args)
    w.add_file_type({"f32": 0, "f16": 1, "q8_0": 7, "q4_0": 2, "q4_1": 3}[quant])
    _tokenizer_metadata(w, tokenizer, tokenizer_pre, fam.gguf_arch)

    types = {}
    factors = llama3_rope_factors(args) if fam.gguf_permute_qk else None
    if factors is not None:
        w.add_tensor("rope_freqs.weight", factors)
        types["rope_freqs.weight"] = "F32"
    for k in sorted(flat):
        v = flat[k]
        if permute and k.endswith("self_attn.q_proj.weight"):
            v = permute_qk(v, n_head)
        elif permute and k.endswith("self_attn.k_proj.weight"):
            v = permute_qk(v, n_kv)
        arr = np.array(v.astype(mx.float32))
        gname = fam.gguf_name(k)
        if fam.norm_offset and gname.endswith("norm.weight"):
            arr = arr + np.float32(fam.norm_offset)
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
    """Write a LoRA adapter as a llama.cpp GGUF adapter (`general.type = adapter`), any supported family.

    llama.cpp applies y += (alpha / r) · B (A x) with `lora_a` [r, in] and `lora_b` [out, r]
    (PEFT layout), so our A [in, r] and B [r, out] are transposed, alpha = scale · r, and the
    rows of B for Q/K are permuted into GGUF's interleaved RoPE order like the base weights.
    `adapter_weights`: {"model.layers.{i}.self_attn.q_proj.lora_a": [in, r], ... .lora_b: [r, out]}.
    Phi-3's fused qkv_proj / gate_up_proj adapters become `attn_qkv` / `ffn_up` adapters.
    Returns the number of adapted modules.
    """
    args = model.args
    fam = _family(model)
    n_head = args.num_attention_heads
    n_kv = getattr(args, "num_key_value_heads", None) or n_head
    permute = fam.gguf_permute_qk and not bool(getattr(args, "rope_traditional", False))
    w = gguf.GGUFWriter(str(path), fam.gguf_arch)
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
        g = fam.gguf_name(base + ".weight")
        w.add_tensor(g + ".lora_a", np.array(a))
        w.add_tensor(g + ".lora_b", np.array(b))
        n += 1
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return n
