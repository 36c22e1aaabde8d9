"""Load a GGUF file (llama, mistral, qwen2, qwen3, gemma, gemma2, gemma3, phi3) into MLX, with its tokenizer.

The architectures are those of the family table (models/families.py) that llama.cpp names.

This is the inverse of llama.cpp's `convert_hf_to_gguf.py`:

  * tensor names: the mlx-lm model class is built from the config (lazily, no weights), and each
    of its parameter names is mapped to a GGUF name with the `gguf` package's own
    `TensorNameMap` for the architecture; the inverse of that map renames the file's tensors.
    A tensor the model has no place for (e.g. `rope_freqs`) is refused, never dropped.
  * values: Gemma's converter stores every `*norm.weight` as w + 1 (Gemma's RMSNorm scales by
    1 + w); the loader subtracts the 1 again. llama.cpp permutes Q/K rows for the llama
    architecture (interleaved RoPE); those are left as they are and the model is built with
    `rope_traditional=True`. Other architectures use the NeoX RoPE layout, stored unpermuted.
  * tensor data, two paths:
      - every tensor F32/F16/Q8_0/Q4_0/Q4_1 and quantized weights wanted: `mx.load` returns
        MLX affine-quantized triples (`.weight` uint32 packed, `.scales`, `.biases`, group size
        32; bits from the packed shapes), checked row by row against gguf's dequantizer;
      - anything else (K-quants Q4_K/Q5_K/Q6_K, Q5_0, BF16 ...), or dense weights wanted: each
        tensor is decoded by `gguf.quants.dequantize` (the gguf package's reference code) to
        float32, so the loaded weights ARE the reference values. (`mx.load` silently turns
        Q4_K into float16 values that disagree with the reference, and refuses Q5_K.)
  * tokenizer: byte-level BPE ("gpt2") is rebuilt here; SentencePiece vocabularies ("llama":
    Gemma, Llama 2, Mistral, Phi-3) through transformers' GGUF tokenizer builders.
"""

from __future__ import annotations

import importlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import gguf
import mlx.core as mx
import numpy as np
from gguf.quants import dequantize as ref_dequantize
from mlx.utils import tree_flatten

from ..errors import InputError
from .families import FAMILIES
from .gguf_header import read_header

GROUP_SIZE = 32
MX_EXACT_TYPES = ("F32", "F16", "Q8_0", "Q4_0", "Q4_1")  # what mx.load decodes exactly (checked below)


@dataclass(frozen=True)
class GGUFArch:
    """How one GGUF architecture maps back onto an mlx-lm model class."""

    gguf_arch: gguf.MODEL_ARCH
    model_type: str  # mlx-lm model_type (module mlx_lm.models.<model_type>)
    norm_shift: float = 0.0  # llama.cpp stored norm weights as w + norm_shift
    extra: dict = field(default_factory=dict)  # fixed config entries


_GGUF_ARCH = {name: arch for arch, name in gguf.MODEL_ARCH_NAMES.items()}
# llama.cpp hard-codes what Gemma 3's GGUF metadata leaves out: the local RoPE base (10k) and
# the 5 local : 1 global layer pattern
_EXTRA = {"llama": {"rope_traditional": True}, "gemma3": {"rope_local_base_freq": 10000.0, "sliding_window_pattern": 6}}


def _archs() -> dict[str, GGUFArch]:
    """One entry per llama.cpp architecture in the family table (mistral GGUFs are "llama")."""
    out = {}
    for f in FAMILIES:
        if f.gguf_arch in out or f.gguf_arch not in _GGUF_ARCH:
            continue
        extra = dict(_EXTRA.get(f.gguf_arch, {}))
        if f.gguf_permute_qk:  # rows stay in the interleaved order; the model uses interleaved RoPE
            extra["rope_traditional"] = True
        out[f.gguf_arch] = GGUFArch(_GGUF_ARCH[f.gguf_arch], f.model_types[0], f.norm_offset, extra)
    return out


ARCHS = _archs()
SUPPORTED_ARCHS = tuple(ARCHS)


def _scalar(md, key, default=None):
    v = md.get(key, default)
    if isinstance(v, (mx.array, np.ndarray)):
        return v.item()
    return v


def _fail_line(e: Exception) -> str:
    return str(e).splitlines()[0] if str(e) else type(e).__name__


def _check_header(path: Path):
    """(metadata, tensor infos) from the header, before any tensor is read."""
    try:
        meta, tensors = read_header(path, metadata=True)
    except Exception as e:
        raise InputError(f"{path}: cannot read the GGUF header ({_fail_line(e)}); truncated or corrupt file?") from None
    arch = meta.get("general.architecture")
    if arch not in ARCHS:
        raise InputError(f"{path}: GGUF architecture {arch!r} is not supported (supported: {', '.join(SUPPORTED_ARCHS)})")
    bad = [(t.name, t.type_name) for t in tensors if t.type_name.startswith("type")]
    if bad:
        raise InputError(f"{path}: tensor {bad[0][0]} has unknown ggml type {bad[0][1]} ({len(bad)} such tensors); "
                         "the installed gguf package cannot decode it (pip install -U gguf)")
    return meta, tensors


def _spot_check(path: Path, tensors, weights: dict, rows: int = 2) -> None:
    """Compare the first rows of every tensor `mx.load` returned with gguf's reference dequantizer.

    Guards against MLX versions whose GGUF unpacking is wrong (some released versions
    silently corrupted Q4_1 weights); costs a few milliseconds per tensor.
    """
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


def read_gguf(path: str | Path, dequantize: bool = False):
    """Return (weights, metadata, tensor types) of a GGUF file; one clear InputError on anything else.

    weights: GGUF-named tensors. With `dequantize`, or when a tensor type is not in
    MX_EXACT_TYPES, every tensor is float32 from `gguf.quants.dequantize`; otherwise the
    `mx.load` path (MLX affine-quantized triples for Q8_0/Q4_0/Q4_1).
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: file not found")
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic != b"GGUF":
        raise InputError(f"{path}: not a GGUF file (magic {magic!r}, expected b'GGUF')")
    md, tensors = _check_header(path)
    types = {t.name: t.type_name for t in tensors}
    if dequantize or any(t.type_name not in MX_EXACT_TYPES for t in tensors):
        weights = {}
        for t in tensors:
            try:
                weights[t.name] = mx.array(t.dequantize(path))
            except (NotImplementedError, ValueError) as e:
                raise InputError(f"{path}: tensor {t.name} ({t.type_name}): cannot dequantize ({_fail_line(e)})") from None
        return weights, md, types
    try:
        weights = mx.load(str(path))
    except Exception as e:  # mlx raises ValueError/RuntimeError with its own text
        raise InputError(f"{path}: cannot read GGUF tensors ({_fail_line(e)})") from None
    _spot_check(path, tensors, weights)
    return weights, md, types


def _md(md: dict, arch: str, key: str, default=None):
    return _scalar(md, f"{arch}.{key}", default)


def gguf_config(md: dict, weights: dict, path: str | Path = "GGUF file") -> dict:
    """mlx-lm config.json for the GGUF's architecture, from its metadata."""
    a = md.get("general.architecture")
    if a not in ARCHS:
        raise InputError(f"{path}: GGUF architecture {a!r} is not supported (supported: {', '.join(SUPPORTED_ARCHS)})")
    spec = ARCHS[a]
    missing = [k for k in ("block_count", "embedding_length", "feed_forward_length", "attention.head_count")
               if md.get(f"{a}.{k}") is None]
    if missing:
        raise InputError(f"{path}: GGUF metadata lacks {', '.join(a + '.' + k for k in missing)} (incomplete file?)")
    if int(_md(md, a, "expert_count", 0) or 0) > 0:
        raise InputError(f"{path}: mixture-of-experts GGUF ({a}.expert_count={_md(md, a, 'expert_count')}) "
                         "is not supported; use its mlx-lm/Hugging Face directory instead")
    scaling = md.get(f"{a}.rope.scaling.type")
    if scaling not in (None, "none", "linear"):
        raise InputError(f"{path}: RoPE scaling {scaling!r} is not supported (none, linear); "
                         "use the model's mlx-lm/Hugging Face directory instead")
    n_head = int(_md(md, a, "attention.head_count"))
    hidden = int(_md(md, a, "embedding_length"))
    n_layers = int(_md(md, a, "block_count"))
    vocab = int(_md(md, a, "vocab_size", 0) or len(md.get("tokenizer.ggml.tokens", [])))
    cfg = {
        "model_type": spec.model_type,
        "hidden_size": hidden,
        "num_hidden_layers": n_layers,
        "intermediate_size": int(_md(md, a, "feed_forward_length")),
        "num_attention_heads": n_head,
        "num_key_value_heads": int(_md(md, a, "attention.head_count_kv", n_head)),
        "rms_norm_eps": float(_md(md, a, "attention.layer_norm_rms_epsilon", 1e-5)),
        "vocab_size": vocab,
        "max_position_embeddings": int(_md(md, a, "context_length", 2048)),
        "rope_theta": float(_md(md, a, "rope.freq_base", 10000.0)),
        "tie_word_embeddings": "output.weight" not in weights,
    }
    cfg.update(spec.extra)
    if scaling == "linear":
        cfg["rope_scaling"] = {"type": "linear", "factor": float(_md(md, a, "rope.scaling.factor", 1.0))}
    head_dim = _md(md, a, "attention.key_length") or _md(md, a, "rope.dimension_count")
    if a.startswith("gemma"):
        head_dim = int(head_dim or 256)
        cfg["head_dim"] = head_dim
    if a in ("gemma2", "gemma3"):
        # llama.cpp: attention scale 1/sqrt(head_dim), except the 27B models (1/sqrt(hidden/heads))
        cfg["query_pre_attn_scalar"] = int(hidden // n_head if n_layers in (46, 62) else head_dim)
        if _md(md, a, "attention.sliding_window"):
            cfg["sliding_window"] = int(_md(md, a, "attention.sliding_window"))
        if a == "gemma2":
            cfg["attn_logit_softcapping"] = float(_md(md, a, "attn_logit_softcapping", 50.0))
            cfg["final_logit_softcapping"] = float(_md(md, a, "final_logit_softcapping", 30.0))
    elif head_dim and int(head_dim) != hidden // n_head:
        if a == "qwen2":
            raise InputError(f"{path}: qwen2 with head_dim {head_dim} != hidden/heads is not supported")
        cfg["head_dim"] = int(head_dim)
    elif a == "qwen3":
        cfg["head_dim"] = hidden // n_head
    if a == "phi3":
        rot = _md(md, a, "rope.dimension_count")
        if rot and int(rot) != hidden // n_head:
            cfg["partial_rotary_factor"] = int(rot) / (hidden // n_head)
    for k in ("bos", "eos"):
        v = _scalar(md, f"tokenizer.ggml.{k}_token_id")
        if v is not None:
            cfg[f"{k}_token_id"] = int(v)
    return cfg


def _model_class(model_type: str):
    mod = importlib.import_module(f"mlx_lm.models.{model_type}")
    return mod.Model, mod.ModelArgs


def name_map(cfg: dict, arch: str, path: str | Path = "GGUF file") -> dict[str, str]:
    """{GGUF tensor name: mlx-lm parameter name} for the model `cfg` describes.

    The mlx-lm model is built (lazily: no weights are computed) and each of its parameter
    names goes through gguf's TensorNameMap for the architecture, as llama.cpp's converter does.
    """
    a = arch
    Model, Args = _model_class(cfg["model_type"])
    model = Model(Args.from_dict(cfg))
    tmap = gguf.get_tensor_name_map(ARCHS[a].gguf_arch, cfg["num_hidden_layers"])
    out = {}
    for k, _ in tree_flatten(model.parameters()):
        g = tmap.get_name(k, try_suffixes=(".weight", ".bias"))
        if g is None:
            raise InputError(f"{path}: no GGUF name for the {cfg['model_type']} parameter {k} (gguf {a} tensor map)")
        out[g] = k
    return out


def convert_weights(weights: dict, cfg: dict, md: dict, path: Path, dequantize: bool) -> tuple[dict, dict | None]:
    """GGUF-named tensors -> (mlx-lm named weights, quantization config or None)."""
    a = md.get("general.architecture")
    shift = ARCHS[a].norm_shift
    names = name_map(cfg, a, path)
    out, quant = {}, {}
    bases = {k[: -len(".scales")] for k in weights if k.endswith(".scales")}
    for k, v in weights.items():
        base = k.rsplit(".", 1)[0]
        if base in bases and not k.endswith(".weight"):
            continue
        if k not in names:
            raise InputError(f"{path}: tensor {k} has no place in the mlx-lm {cfg['model_type']} model "
                             "(unsupported variant, e.g. per-dimension RoPE frequencies; use its mlx-lm/Hugging Face "
                             "directory instead)")
        name = names[k]
        if base in bases:
            w, s, b = v, weights[base + ".scales"], weights[base + ".biases"]
            bits = w.shape[-1] * 32 // (s.shape[-1] * GROUP_SIZE)
            if bits not in (2, 3, 4, 5, 6, 8):
                raise InputError(f"{path}: tensor {k} has an unsupported packed layout ({bits} bits)")
            stem = name[: -len(".weight")]
            if dequantize:
                # fp32 scales/biases: the product is then exact, as in gguf's own dequantizer
                out[name] = mx.dequantize(w, s.astype(mx.float32), b.astype(mx.float32), GROUP_SIZE, bits)
            else:
                out[name], out[stem + ".scales"], out[stem + ".biases"] = w, s, b
                quant[stem] = {"group_size": GROUP_SIZE, "bits": int(bits)}
            continue
        if not mx.issubdtype(v.dtype, mx.floating):
            raise InputError(f"{path}: tensor {k} has unsupported type {v.dtype}")
        if shift and name.endswith("norm.weight"):
            v = v.astype(mx.float32) - shift
        out[name] = v.astype(mx.float32) if dequantize else v
    missing = sorted(set(names.values()) - set(out) - {"lm_head.weight"})
    if missing:
        raise InputError(f"{path}: GGUF lacks {len(missing)} tensors the {cfg['model_type']} model needs "
                         f"(first: {missing[0]}); incomplete file?")
    if not quant:
        return out, None
    main_bits = max(set(q["bits"] for q in quant.values()), key=lambda b: sum(q["bits"] == b for q in quant.values()))
    qcfg = {"group_size": GROUP_SIZE, "bits": main_bits}
    qcfg.update({n: q for n, q in quant.items() if q["bits"] != main_bits})
    return out, qcfg


def _pre_tokenizer(pre: str):
    from tokenizers import Regex, pre_tokenizers

    bl = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    if pre in ("smollm", "starcoder", "refact", "deepseek-coder"):
        return pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), bl])
    if pre in ("llama-bpe", "llama3", "qwen2"):
        pat = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
               r"|\s*[\r\n]+|\s+(?!\S)|\s+")
        return pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(pat), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ])
    return bl


def _token_types(md: dict, n: int) -> list[int]:
    types = md.get("tokenizer.ggml.token_type")
    if isinstance(types, (mx.array, np.ndarray)):
        return [int(x) for x in types.tolist()]
    return list(types) if types is not None else [1] * n


def _sentencepiece_tokenizer(md: dict, arch: str, path: Path):
    """SentencePiece vocabularies through transformers' GGUF tokenizer builders (merges rebuilt)."""
    from transformers.integrations.gguf import gguf_tokenizer_mapping as tm

    tokens = list(md["tokenizer.ggml.tokens"])
    d = {"tokenizer_type": "llama", "pre_tokenizer_type": md.get("tokenizer.ggml.pre"), "tokens": tokens,
         "token_type": _token_types(md, len(tokens))}
    if md.get("tokenizer.ggml.scores") is not None:
        d["scores"] = [float(x) for x in np.asarray(md["tokenizer.ggml.scores"]).tolist()]
    if md.get("tokenizer.ggml.merges"):
        d["merges"] = list(md["tokenizer.ggml.merges"])
    try:
        tok = tm.select_tokenizer_builder(arch, "llama")(d)
        tok = tm.add_gguf_special_tokens(tok, d)
        tok = tm.set_split_regex(tok, d)
    except Exception as e:
        raise InputError(f"{path}: cannot rebuild the SentencePiece tokenizer ({_fail_line(e)})") from None
    if len(tok) > len(tokens):  # the tokenizer class added defaults the file lacks (e.g. Gemma's <mask>)
        from tokenizers import Tokenizer
        from transformers import PreTrainedTokenizerFast

        tj = json.loads(tok.backend_tokenizer.to_str())
        tj["added_tokens"] = [a for a in tj["added_tokens"] if a["id"] < len(tokens)]
        tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(json.dumps(tj)))
    # the unknown token is matched whole in text, as llama.cpp does (and as a control token would be)
    unknown = [t for t, k in zip(tokens, d["token_type"]) if k == int(gguf.TokenType.UNKNOWN)]
    if unknown:
        from tokenizers import AddedToken

        tok.add_special_tokens({"additional_special_tokens": [AddedToken(t, normalized=False, special=True)
                                                              for t in unknown]},
                               replace_extra_special_tokens=False)
    return tok


def gguf_tokenizer(md: dict, path: Path):
    """A transformers fast tokenizer rebuilt from GGUF metadata."""
    from tokenizers import AddedToken, Tokenizer, decoders, models
    from transformers import PreTrainedTokenizerFast

    kind = md.get("tokenizer.ggml.model")
    tokens = md.get("tokenizer.ggml.tokens")
    if not tokens:
        raise InputError(f"{path}: GGUF has no tokenizer vocabulary (tokenizer.ggml.tokens)")

    def tid(k):
        v = _scalar(md, f"tokenizer.ggml.{k}_token_id")
        return tokens[int(v)] if v is not None and int(v) < len(tokens) else None

    specials = dict(bos_token=tid("bos"), eos_token=tid("eos"), unk_token=tid("unknown"), pad_token=tid("padding"))
    if kind == "llama":
        fast = _sentencepiece_tokenizer(md, md.get("general.architecture"), path)
        for k, v in specials.items():
            if v is not None:
                setattr(fast, k, v)
        add_bos = md.get("tokenizer.ggml.add_bos_token")
        fast.add_bos_token = True if add_bos is None else bool(add_bos)
        fast.add_eos_token = bool(md.get("tokenizer.ggml.add_eos_token", False))
        if hasattr(fast, "update_post_processor"):
            fast.update_post_processor()
    elif kind == "gpt2":
        merges = [tuple(m.split(" ", 1)) for m in md.get("tokenizer.ggml.merges", [])]
        types = _token_types(md, len(tokens))
        vocab = {t: i for i, t in enumerate(tokens)}
        tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False))
        tok.pre_tokenizer = _pre_tokenizer(md.get("tokenizer.ggml.pre", "default"))
        tok.decoder = decoders.ByteLevel()
        special = [AddedToken(tokens[i], special=True, normalized=False) for i, t in enumerate(types) if t == 3]
        user = [AddedToken(tokens[i], special=False, normalized=False) for i, t in enumerate(types) if t == 4]
        tok.add_special_tokens(special)
        if user:
            tok.add_tokens(user)
        if md.get("tokenizer.ggml.add_bos_token") and specials["bos_token"] is not None:  # e.g. Llama 3
            from tokenizers import processors

            bos = specials["bos_token"]
            tok.post_processor = processors.TemplateProcessing(
                single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, int(_scalar(md, "tokenizer.ggml.bos_token_id")))])
        fast = PreTrainedTokenizerFast(tokenizer_object=tok, **specials)
    else:
        raise InputError(f"{path}: tokenizer model {kind!r} is not supported (byte-level BPE 'gpt2', "
                         "SentencePiece 'llama')")
    if md.get("tokenizer.chat_template"):
        fast.chat_template = md["tokenizer.chat_template"]
    return fast


def convert_gguf(path: str | Path, out_dir: str | Path, dequantize: bool = False) -> Path:
    """Write an mlx-lm directory (config, safetensors, tokenizer) for the GGUF at `path`.

    Files whose tensors `mx.load` cannot decode exactly (K-quants, Q5_0, BF16) are written as
    float32 weights decoded by gguf's reference dequantizer, whatever `dequantize` says.
    `out_dir` must not exist yet; the caller renames it into place (see io.atomic_dir).
    """
    path, out_dir = Path(path), Path(out_dir)
    weights, md, types = read_gguf(path, dequantize=dequantize)
    cfg = gguf_config(md, weights, path)
    w, qcfg = convert_weights(weights, cfg, md, path, dequantize)
    if qcfg:
        cfg["quantization"] = qcfg
    tok = gguf_tokenizer(md, path)
    out_dir.mkdir(parents=True, exist_ok=True)
    mx.save_safetensors(str(out_dir / "model.safetensors"), w, metadata={"format": "mlx"})
    (out_dir / "config.json").write_text(json.dumps(cfg, indent=2))
    tok.save_pretrained(str(out_dir))
    counts: dict[str, int] = {}
    for t in types.values():
        counts[t] = counts.get(t, 0) + 1
    (out_dir / "notme_source.json").write_text(json.dumps({
        "gguf": str(path), "architecture": md.get("general.architecture"), "file_type": _scalar(md, "general.file_type"),
        "tensor_types": counts, "tokenizer_pre": md.get("tokenizer.ggml.pre"), "name": md.get("general.name"),
        "license": md.get("general.license"), "dequantized": bool(dequantize or qcfg is None),
    }, indent=2))
    return out_dir
