"""Load a llama-architecture GGUF file into MLX, and rebuild its tokenizer.

Facts this relies on (checked with mx.load on files written by the `gguf`
package and by llama.cpp): `mx.load(path, return_metadata=True)` returns F32/F16
tensors as arrays and Q4_0/Q4_1/Q8_0 tensors as MLX affine-quantized triples
`name.weight` (uint32, packed), `name.scales`, `name.biases` with group size 32;
the bit width follows from the packed shapes (weight cols / scales cols). GGUF
keeps Q/K rows in the interleaved RoPE order, so the model is built with
`rope_traditional=True` and the rows are left as they are.
"""

from __future__ import annotations

import json
from pathlib import Path

import mlx.core as mx

from ..errors import InputError

GROUP_SIZE = 32
SUPPORTED_ARCHS = ("llama",)
_TO_MLX = [
    ("attn_q.", "self_attn.q_proj."), ("attn_k.", "self_attn.k_proj."), ("attn_v.", "self_attn.v_proj."),
    ("attn_output.", "self_attn.o_proj."), ("attn_norm.", "input_layernorm."),
    ("ffn_norm.", "post_attention_layernorm."), ("ffn_gate.", "mlp.gate_proj."),
    ("ffn_up.", "mlp.up_proj."), ("ffn_down.", "mlp.down_proj."),
]
_SKIP = ()


def mlx_name(gguf_name: str) -> str:
    """`blk.3.attn_q.weight` -> `model.layers.3.self_attn.q_proj.weight`."""
    name = gguf_name
    for a, b in (("token_embd.", "model.embed_tokens."), ("output_norm.", "model.norm."), ("output.", "lm_head.")):
        if name.startswith(a):
            return b + name[len(a):]
    if name.startswith("blk."):
        name = "model.layers." + name[len("blk."):]
    for a, b in _TO_MLX:
        name = name.replace(a, b)
    return name


def _scalar(md, key, default=None):
    v = md.get(key, default)
    if isinstance(v, mx.array):
        return v.item()
    return v


SUPPORTED_TYPES = ("F32", "F16", "Q8_0", "Q4_0", "Q4_1")


def _check_header(path: Path):
    """Architecture and tensor types from the header, before any tensor is read.

    mx.load silently converts some other types (Q2_K, Q4_K, Q6_K, BF16) to
    float16; its Q4_K conversion disagrees with gguf's reference dequantizer,
    so only the types checked exactly in the tests are let through.
    """
    from .gguf_header import read_header

    try:
        meta, tensors = read_header(path)
    except Exception as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise InputError(f"{path}: cannot read the GGUF header ({msg}); truncated or corrupt file?") from None
    arch = meta["general.architecture"]
    if arch not in SUPPORTED_ARCHS:
        raise InputError(f"{path}: GGUF architecture {arch!r} is not supported (supported: {', '.join(SUPPORTED_ARCHS)})")
    bad = [(t.name, t.type_name) for t in tensors if t.type_name not in SUPPORTED_TYPES]
    if bad:
        kinds = sorted({t for _, t in bad})
        raise InputError(f"{path}: tensor {bad[0][0]} has type {bad[0][1]} ({len(bad)} tensors of type "
                         f"{', '.join(kinds)}); supported types: {', '.join(SUPPORTED_TYPES)} "
                         "(re-quantize with llama.cpp, or load the mlx-lm/Hugging Face directory)")
    return tensors


def _spot_check(path: Path, tensors, weights: dict, rows: int = 2) -> None:
    """Compare the first rows of every tensor with gguf's reference dequantizer.

    Guards against MLX versions whose GGUF unpacking is wrong (mlx PR #3664 fixed
    silently corrupted Q4_1 weights); costs a few milliseconds per tensor.
    """
    import gguf
    import numpy as np
    from gguf.quants import dequantize as ref_dequantize

    for t in tensors:
        raw = t.rows(path, rows)
        ref = ref_dequantize(raw, gguf.GGMLQuantizationType(t.type_id)).astype(np.float32)
        base = t.name[: -len(".weight")] if t.name.endswith(".weight") else t.name
        if base + ".scales" in weights:
            w, sc, b = weights[t.name], weights[base + ".scales"], weights[base + ".biases"]
            bits = w.shape[-1] * 32 // (sc.shape[-1] * GROUP_SIZE)
            got = mx.dequantize(w[:rows], sc[:rows].astype(mx.float32), b[:rows].astype(mx.float32), GROUP_SIZE, bits)
        else:
            got = weights[t.name]
            got = got[:rows] if got.ndim > 1 else got
        got = np.array(got.astype(mx.float32)).reshape(ref.shape)
        err = float(np.abs(got - ref).max()) if ref.size else 0.0
        if not err <= 1e-5 * max(1.0, float(np.abs(ref).max())):
            raise InputError(f"{path}: tensor {t.name} ({t.type_name}) read by mlx {mx.__version__} differs from "
                             f"the GGUF reference by {err:.3g}; upgrade mlx (pip install -U mlx)")


def read_gguf(path: str | Path):
    """Return (weights, metadata) of a GGUF file; one clear InputError on anything else."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: file not found")
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic != b"GGUF":
        raise InputError(f"{path}: not a GGUF file (magic {magic!r}, expected b'GGUF')")
    tensors = _check_header(path)
    try:
        weights, md = mx.load(str(path), return_metadata=True)
    except Exception as e:  # mlx raises ValueError/RuntimeError with its own text
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise InputError(f"{path}: cannot read GGUF tensors ({msg}); supported types: {', '.join(SUPPORTED_TYPES)}") from None
    arch = md.get("general.architecture")
    if arch not in SUPPORTED_ARCHS:
        raise InputError(f"{path}: GGUF architecture {arch!r} is not supported (supported: {', '.join(SUPPORTED_ARCHS)})")
    _spot_check(path, tensors, weights)
    return weights, md


def _check_supported(md: dict, weights: dict, src) -> None:
    """Refuse llama-family variants this loader would otherwise run silently wrong."""
    a = "llama"
    if int(_scalar(md, f"{a}.expert_count", 0) or 0) > 0:
        raise InputError(f"{src}: mixture-of-experts GGUF ({a}.expert_count={_scalar(md, f'{a}.expert_count')}) "
                         "is not supported; use its mlx-lm/Hugging Face directory instead")
    if "rope_freqs.weight" in weights:
        raise InputError(f"{src}: per-dimension RoPE frequencies (rope_freqs, Llama-3 scaling) are not supported; "
                         "use the model's mlx-lm/Hugging Face directory instead")
    scaling = md.get(f"{a}.rope.scaling.type")
    if scaling not in (None, "none", "linear"):
        raise InputError(f"{src}: RoPE scaling {scaling!r} is not supported (none, linear); "
                         "use the model's mlx-lm/Hugging Face directory instead")


def gguf_config(md: dict, weights: dict, path: str | Path = "GGUF file") -> dict:
    """mlx-lm llama config.json from GGUF metadata."""
    a = "llama"
    missing = [k for k in ("block_count", "embedding_length", "feed_forward_length", "attention.head_count")
               if md.get(f"{a}.{k}") is None]
    if missing:
        raise InputError(f"{path}: GGUF metadata lacks {', '.join(a + '.' + k for k in missing)} (incomplete file?)")
    _check_supported(md, weights, path)
    n_head = int(_scalar(md, f"{a}.attention.head_count"))
    hidden = int(_scalar(md, f"{a}.embedding_length"))
    vocab = int(_scalar(md, f"{a}.vocab_size", 0) or len(md.get("tokenizer.ggml.tokens", [])))
    cfg = {
        "model_type": "llama",
        "hidden_size": hidden,
        "num_hidden_layers": int(_scalar(md, f"{a}.block_count")),
        "intermediate_size": int(_scalar(md, f"{a}.feed_forward_length")),
        "num_attention_heads": n_head,
        "num_key_value_heads": int(_scalar(md, f"{a}.attention.head_count_kv", n_head)),
        "rms_norm_eps": float(_scalar(md, f"{a}.attention.layer_norm_rms_epsilon", 1e-5)),
        "vocab_size": vocab,
        "max_position_embeddings": int(_scalar(md, f"{a}.context_length", 2048)),
        "rope_theta": float(_scalar(md, f"{a}.rope.freq_base", 10000.0)),
        "rope_traditional": True,
        "tie_word_embeddings": "output.weight" not in weights,
    }
    scaling = md.get(f"{a}.rope.scaling.type")
    if scaling == "linear":
        cfg["rope_scaling"] = {"type": "linear", "factor": float(_scalar(md, f"{a}.rope.scaling.factor", 1.0))}
    head_dim = _scalar(md, f"{a}.rope.dimension_count")
    if head_dim and int(head_dim) != hidden // n_head:
        cfg["head_dim"] = int(head_dim)
    for k in ("bos", "eos"):
        v = _scalar(md, f"tokenizer.ggml.{k}_token_id")
        if v is not None:
            cfg[f"{k}_token_id"] = int(v)
    return cfg


def convert_weights(weights: dict, dequantize: bool, path: Path) -> tuple[dict, dict | None]:
    """GGUF tensors -> (mlx-lm named weights, quantization config or None)."""
    out, quant = {}, {}
    bases = {k[: -len(".scales")] for k in weights if k.endswith(".scales")}
    for k, v in weights.items():
        if k in _SKIP:
            continue
        base = k.rsplit(".", 1)[0]
        if base in bases:
            if not k.endswith(".weight"):
                continue
            w, s, b = v, weights[base + ".scales"], weights[base + ".biases"]
            bits = w.shape[-1] * 32 // (s.shape[-1] * GROUP_SIZE)
            if bits not in (2, 3, 4, 5, 6, 8):
                raise InputError(f"{path}: tensor {k} has an unsupported packed layout ({bits} bits)")
            name = mlx_name(base + ".weight")[: -len(".weight")]
            if dequantize:
                # fp32 scales/biases: the product is then exact, as in gguf's own dequantizer
                out[name + ".weight"] = mx.dequantize(w, s.astype(mx.float32), b.astype(mx.float32), GROUP_SIZE, bits)
            else:
                out[name + ".weight"], out[name + ".scales"], out[name + ".biases"] = w, s, b
                quant[name] = {"group_size": GROUP_SIZE, "bits": int(bits)}
        else:
            if not mx.issubdtype(v.dtype, mx.floating):
                raise InputError(f"{path}: tensor {k} has unsupported type {v.dtype}")
            out[mlx_name(k)] = v.astype(mx.float32) if dequantize else v
    if not quant:
        return out, None
    main_bits = max(set(q["bits"] for q in quant.values()), key=lambda b: sum(q["bits"] == b for q in quant.values()))
    qcfg = {"group_size": GROUP_SIZE, "bits": main_bits}
    qcfg.update({n: q for n, q in quant.items() if q["bits"] != main_bits})
    return out, qcfg


def _pre_tokenizer(pre: str):
    from tokenizers import pre_tokenizers

    bl = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    if pre in ("smollm", "starcoder", "refact", "deepseek-coder"):
        return pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), bl])
    if pre in ("llama-bpe", "llama3", "qwen2"):
        pat = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
               r"|\s*[\r\n]+|\s+(?!\S)|\s+")
        from tokenizers import Regex

        return pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(pat), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ])
    return bl


def gguf_tokenizer(md: dict, path: Path):
    """A transformers fast tokenizer rebuilt from GGUF metadata (byte-level BPE only)."""
    from tokenizers import AddedToken, Tokenizer, decoders, models
    from transformers import PreTrainedTokenizerFast

    kind = md.get("tokenizer.ggml.model")
    if kind != "gpt2":
        raise InputError(f"{path}: tokenizer model {kind!r} is not supported (byte-level BPE 'gpt2' only)")
    tokens = md["tokenizer.ggml.tokens"]
    merges = [tuple(m.split(" ", 1)) for m in md.get("tokenizer.ggml.merges", [])]
    types = md.get("tokenizer.ggml.token_type")
    types = types.tolist() if isinstance(types, mx.array) else [1] * len(tokens)
    vocab = {t: i for i, t in enumerate(tokens)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False))
    tok.pre_tokenizer = _pre_tokenizer(md.get("tokenizer.ggml.pre", "default"))
    tok.decoder = decoders.ByteLevel()
    special = [AddedToken(tokens[i], special=True, normalized=False) for i, t in enumerate(types) if t == 3]
    user = [AddedToken(tokens[i], special=False, normalized=False) for i, t in enumerate(types) if t == 4]
    tok.add_special_tokens(special)
    if user:
        tok.add_tokens(user)

    def tid(k):
        v = _scalar(md, f"tokenizer.ggml.{k}_token_id")
        return tokens[int(v)] if v is not None and int(v) < len(tokens) else None

    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=tid("bos"), eos_token=tid("eos"),
                                   unk_token=tid("unknown"), pad_token=tid("padding"))
    if md.get("tokenizer.chat_template"):
        fast.chat_template = md["tokenizer.chat_template"]
    return fast


def convert_gguf(path: str | Path, out_dir: str | Path, dequantize: bool = False) -> Path:
    """Write an mlx-lm directory (config, safetensors, tokenizer) for the GGUF at `path`.

    `out_dir` must not exist yet; the caller renames it into place (see io.atomic_dir).
    """
    path, out_dir = Path(path), Path(out_dir)
    weights, md = read_gguf(path)
    cfg = gguf_config(md, weights, path)
    w, qcfg = convert_weights(weights, dequantize, path)
    if qcfg:
        cfg["quantization"] = qcfg
    tok = gguf_tokenizer(md, path)
    out_dir.mkdir(parents=True, exist_ok=True)
    mx.save_safetensors(str(out_dir / "model.safetensors"), w, metadata={"format": "mlx"})
    (out_dir / "config.json").write_text(json.dumps(cfg, indent=2))
    tok.save_pretrained(str(out_dir))
    (out_dir / "notme_source.json").write_text(json.dumps({
        "gguf": str(path), "file_type": _scalar(md, "general.file_type"),
        "tokenizer_pre": md.get("tokenizer.ggml.pre"), "name": md.get("general.name"),
        "dequantized": dequantize,
    }, indent=2))
    return out_dir
