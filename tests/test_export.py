"""Export: HF layout checked by an independent numpy llama forward; GGUF read back with
gguf.GGUFReader and dequantized with gguf.quants; Modelfile from the chat template."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import gguf
import mlx.core as mx
import numpy as np
import pytest
from click.testing import CliRunner
from mlx.utils import tree_flatten
from mlx_lm import load
from mlx_lm.models import llama
from safetensors.numpy import load_file

from notme_mlx.cli import main
from notme_mlx.errors import NotmeError
from notme_mlx.export import VERIFY_PROMPTS, export_model, quickstart_export, verify_llama_cpp
from notme_mlx.export.gguf_export import gguf_name, write_gguf
from notme_mlx.export.hf import permute_qk, unpermute_qk, write_hf_dir
from notme_mlx.export.templates import family_of, modelfile
from notme_mlx.lora import LoRAConfig, apply_lora, load_adapter, save_adapter
from notme_mlx.models import load_model
from notme_mlx.models.tiny import perturb_adapters


# --- an independent llama forward in numpy, reading HF-layout safetensors --------------


def _np_llama_logits(d: Path, ids: list[int]) -> np.ndarray:
    cfg = json.loads((d / "config.json").read_text())
    w = {k: v.astype(np.float64) for k, v in load_file(str(d / "model.safetensors")).items()}
    H, nh = cfg["hidden_size"], cfg["num_attention_heads"]
    nkv, hd, eps = cfg["num_key_value_heads"], H // cfg["num_attention_heads"], cfg["rms_norm_eps"]
    T = len(ids)
    x = w["model.embed_tokens.weight"][ids]  # (T, H)

    def rms(v, g):
        return v / np.sqrt((v**2).mean(-1, keepdims=True) + eps) * g

    inv = cfg["rope_theta"] ** (-np.arange(0, hd, 2) / hd)
    ang = np.arange(T)[:, None] * inv[None]  # (T, hd/2)
    cos, sin = np.cos(ang), np.sin(ang)

    def rope(q):  # HF half-split: (x1, x2) -> (x1 cos - x2 sin, x2 cos + x1 sin)
        a, b = q[..., : hd // 2], q[..., hd // 2 :]
        return np.concatenate([a * cos - b * sin, b * cos + a * sin], -1)

    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        h = rms(x, w[p + "input_layernorm.weight"])
        q = (h @ w[p + "self_attn.q_proj.weight"].T).reshape(T, nh, hd).transpose(1, 0, 2)
        k = (h @ w[p + "self_attn.k_proj.weight"].T).reshape(T, nkv, hd).transpose(1, 0, 2)
        v = (h @ w[p + "self_attn.v_proj.weight"].T).reshape(T, nkv, hd).transpose(1, 0, 2)
        q, k = rope(q), rope(k)
        k, v = np.repeat(k, nh // nkv, 0), np.repeat(v, nh // nkv, 0)
        s = q @ k.transpose(0, 2, 1) / np.sqrt(hd) + np.triu(np.full((T, T), -np.inf), 1)
        s = np.exp(s - s.max(-1, keepdims=True))
        a = (s / s.sum(-1, keepdims=True)) @ v  # (nh, T, hd)
        x = x + a.transpose(1, 0, 2).reshape(T, H) @ w[p + "self_attn.o_proj.weight"].T
        h = rms(x, w[p + "post_attention_layernorm.weight"])
        g, u = h @ w[p + "mlp.gate_proj.weight"].T, h @ w[p + "mlp.up_proj.weight"].T
        x = x + (g / (1 + np.exp(-g)) * u) @ w[p + "mlp.down_proj.weight"].T
    x = rms(x, w["model.norm.weight"])
    head = w.get("lm_head.weight", w["model.embed_tokens.weight"])
    return x @ head.T


def test_qk_permutation_roundtrip():
    w = mx.arange(8 * 6 * 3, dtype=mx.float32).reshape(8 * 6, 3)
    np.testing.assert_array_equal(np.array(unpermute_qk(permute_qk(w, 8), 8)), np.array(w))
    # interleaved order pairs row j with row j + head_dim/2 of the same head
    p = np.array(permute_qk(w, 8))
    np.testing.assert_array_equal(p[1], np.array(w)[3])


@pytest.mark.parametrize("which", ["tiny_model_dir", "tiny_model_untied_dir"])
def test_hf_export_matches_independent_numpy_llama(which, request, tmp_path):
    model, tok = load(str(request.getfixturevalue(which)))
    write_hf_dir(tmp_path, model, tok, dtype="float32")
    ids = tok.encode("Does that make sense? I hope this helps!")
    ref = np.array(model(mx.array([ids]))[0].astype(mx.float32))
    got = _np_llama_logits(tmp_path, ids)
    np.testing.assert_allclose(got, ref, atol=1e-4, rtol=1e-4)
    # mlx-lm reloads it and the config carries the HF llama keys
    m2, t2 = load(str(tmp_path))
    np.testing.assert_allclose(np.array(m2(mx.array([ids]))[0]), ref, atol=1e-5)
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["architectures"] == ["LlamaForCausalLM"] and cfg["torch_dtype"] == "float32"
    assert t2.encode("Should I go ahead?") == tok.encode("Should I go ahead?")


def test_hf_export_from_traditional_rope_unpermutes(tiny_model, tmp_path):
    """A model holding GGUF-ordered Q/K (rope_traditional) exports to HF order."""
    model, tok = tiny_model
    args = llama.ModelArgs.from_dict({**model.args.__dict__, "rope_traditional": True})
    trad = llama.Model(args)

    flat = dict(tree_flatten(model.parameters()))
    for k in list(flat):
        if k.endswith("q_proj.weight"):
            flat[k] = permute_qk(flat[k], args.num_attention_heads)
        if k.endswith("k_proj.weight"):
            flat[k] = permute_qk(flat[k], args.num_key_value_heads)
    trad.load_weights(list(flat.items()))
    ids = tok.encode("hello there, want me to fix the parser?")
    ref = np.array(model(mx.array([ids]))[0])
    np.testing.assert_allclose(np.array(trad(mx.array([ids]))[0]), ref, atol=1e-4)  # same function
    write_hf_dir(tmp_path, trad, tok, dtype="float32")
    np.testing.assert_allclose(_np_llama_logits(tmp_path, ids), ref, atol=1e-4, rtol=1e-4)


def test_sharding_writes_index(tiny_model, tmp_path):
    model, tok = tiny_model
    write_hf_dir(tmp_path, model, tok, dtype="float32", max_shard_bytes=64 * 1024)
    idx = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    shards = sorted(set(idx["weight_map"].values()))
    assert len(shards) > 1 and all((tmp_path / s).exists() for s in shards)
    m2, _ = load(str(tmp_path))
    ids = mx.array([tok.encode("abc")])
    np.testing.assert_allclose(np.array(m2(ids)), np.array(model(ids)), atol=1e-6)


# --- GGUF --------------------------------------------------------------------------------

REQUIRED_KEYS = [
    "general.architecture", "llama.context_length", "llama.embedding_length", "llama.block_count",
    "llama.feed_forward_length", "llama.attention.head_count", "llama.attention.head_count_kv",
    "llama.attention.layer_norm_rms_epsilon", "llama.rope.freq_base", "llama.rope.dimension_count",
    "tokenizer.ggml.model", "tokenizer.ggml.pre", "tokenizer.ggml.tokens", "tokenizer.ggml.token_type",
    "tokenizer.ggml.merges", "tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id",
    "tokenizer.chat_template",
]
TOL = {"f32": 1e-7, "f16": 2e-3, "q8_0": 1.5e-2, "q4_0": 0.25}


@pytest.mark.parametrize("quant", ["f32", "f16", "q8_0", "q4_0"])
def test_gguf_tensors_and_metadata_read_back(quant, tiny_model, tmp_path):
    model, tok = tiny_model
    path = tmp_path / "m.gguf"
    types = write_gguf(path, model, tok, quant=quant)
    r = gguf.GGUFReader(str(path))
    for k in REQUIRED_KEYS:
        assert k in r.fields, k
    f = r.fields["tokenizer.ggml.tokens"]
    tokens = [bytes(f.parts[i]).decode() for i in f.data]
    vocab = tok._tokenizer.get_vocab()
    assert len(tokens) == len(vocab) and all(tokens[i] == t for t, i in vocab.items())
    assert int(r.fields["tokenizer.ggml.eos_token_id"].parts[-1][0]) == tok.eos_token_id
    flat = dict(tree_flatten(model.parameters()))
    args = model.args
    byname = {t.name: t for t in r.tensors}
    assert "output.weight" not in byname  # tied embeddings
    for k, v in flat.items():

        t = byname[gguf_name(k)]
        arr = gguf.quants.dequantize(t.data, t.tensor_type).reshape(v.shape).astype(np.float32)
        if k.endswith("q_proj.weight"):
            arr = np.array(unpermute_qk(mx.array(arr), args.num_attention_heads))
        if k.endswith("k_proj.weight"):
            arr = np.array(unpermute_qk(mx.array(arr), args.num_key_value_heads))
        ref = np.array(v)
        err = np.max(np.abs(arr - ref)) / (np.max(np.abs(ref)) + 1e-12)
        assert err <= TOL[quant] if v.ndim == 2 else err == 0, (k, err)
    if quant in ("q8_0", "q4_0"):
        assert types["blk.0.attn_q.weight"] == quant.upper() and types["output_norm.weight"] == "F32"


def test_gguf_refuses_other_architectures(tiny_model, tmp_path):
    model, tok = tiny_model

    class Fake:
        args = type("A", (), {"model_type": "mamba"})()

    with pytest.raises(NotmeError, match="supports llama"):
        write_gguf(tmp_path / "x.gguf", Fake(), tok)
    assert not (tmp_path / "x.gguf").exists()


# --- Ollama ------------------------------------------------------------------------------


def test_modelfile_from_chatml(tiny_model):
    _, tok = tiny_model
    mf = modelfile("model.gguf", tok._tokenizer.chat_template, system='Be "direct".')
    assert mf.startswith("FROM ./model.gguf\n")
    assert 'PARAMETER stop "<|im_end|>"' in mf
    assert "{{ .Content }}<|im_end|>" in mf and 'SYSTEM """Be "direct"."""' in mf


def test_template_families_and_unknown():
    assert family_of("{{ '<|start_header_id|>' }}").name == "llama3"
    assert family_of("[INST] {{ m }} [/INST]").name == "mistral"
    assert family_of("<start_of_turn>user").name == "gemma"
    with pytest.raises(NotmeError, match="unrecognised chat template"):
        family_of("{{ messages }}")
    with pytest.raises(NotmeError, match="no chat template"):
        family_of(None)


# --- llama.cpp itself (optional [verify] extra) --------------------------------------------


@pytest.mark.slow  # needs the [verify] extra, which `make test-slow` installs
@pytest.mark.parametrize("quant,tol", [("f32", 5e-3), ("f16", 1e-2), ("q8_0", 0.15)])
def test_gguf_runs_in_llama_cpp_with_same_logits(quant, tol, tiny_model_untied_dir, tmp_path):
    pytest.importorskip("llama_cpp", reason="install the [verify] extra: pip install -e '.[verify]'")


    model, tok = load(str(tiny_model_untied_dir))
    write_gguf(tmp_path / "m.gguf", model, tok, quant=quant)
    res = verify_llama_cpp(model, tok, tmp_path / "m.gguf", n_tokens=8)
    # logits at every prompt position, computed by llama.cpp's own graph, match MLX's
    assert res["logits_max_abs_diff"] < tol, res["logits_max_abs_diff"]
    assert res["position_top1_agreement"] >= (1.0 if quant != "q8_0" else 0.9)
    if quant == "f32":
        assert res["all_match"], res["prompts"]


# --- end to end through export_model with a trained-shaped adapter ---------------------------


@pytest.fixture
def adapter_dir(tiny_model_dir, tmp_path):
    model, _ = load(str(tiny_model_dir))
    cfg = LoRAConfig(rank=4, alpha=8)
    apply_lora(model, cfg)
    perturb_adapters(model, ["default"], 0.05, seed=11)
    return save_adapter(model, "default", tmp_path / "adapters", cfg, extra_meta={"layer": "identity"})


def _unfused_logits(model_dir, adapter, prompts):
    model, tok = load(str(model_dir))
    load_adapter(model, adapter)
    return [np.array(model(mx.array([tok.encode(p)]))[0, -1]) for p in prompts]


@pytest.mark.parametrize("to,quant,tol", [("hf", "f16", 2e-2), ("mlx", "f16", 2e-2), ("gguf", "f16", 2e-2),
                                          ("gguf", "q8_0", 0.1), ("ollama", "q8_0", 0.1)])
def test_export_fused_adapter_roundtrip(to, quant, tol, tiny_model_dir, adapter_dir, tmp_path):
    out = tmp_path / f"out-{to}"
    res = export_model(str(tiny_model_dir), out, to=to, adapters=[adapter_dir], quant=quant, verify=True,
                       dtype="float16")
    assert res.verify["max_abs_diff"] < tol and res.verify["top1_agreement"] == 1.0
    assert (out / "README.md").exists() and "identity" not in res.files
    ref = _unfused_logits(tiny_model_dir, adapter_dir, VERIFY_PROMPTS)

    spec = out if to in ("hf", "mlx") else out / "model.gguf"
    m2, t2, _ = load_model(str(spec))
    for p, r in zip(VERIFY_PROMPTS, ref):
        got = np.array(m2(mx.array([t2.encode(p)]))[0, -1].astype(mx.float32))
        assert np.abs(got - r).max() < tol * 2, p
    if to == "ollama":
        mf = (out / "Modelfile").read_text()
        assert mf.startswith("FROM ./model.gguf") and 'PARAMETER stop "<|im_end|>"' in mf


def test_export_refuses_existing_out_and_leaves_nothing_on_failure(tiny_model_dir, tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    with pytest.raises(NotmeError, match="already exists"):
        export_model(str(tiny_model_dir), out, to="hf")
    with pytest.raises(NotmeError, match="no adapters.safetensors"):
        export_model(str(tiny_model_dir), tmp_path / "o2", to="hf", adapters=[tmp_path])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o"]


def test_export_cli_gguf(tiny_model_dir, adapter_dir, tmp_path):
    r = CliRunner().invoke(main, ["export", "--model", str(tiny_model_dir), "--adapters", str(adapter_dir),
                                  "--to", "gguf", "--quant", "q8_0", "--out", str(tmp_path / "g"), "--verify"])
    assert r.exit_code == 0, r.output
    assert "top1_agreement" in r.output and (tmp_path / "g" / "model.gguf").exists()


@pytest.mark.slow
def test_smollm2_with_adapter_matches_llama_cpp_greedy(tmp_path):
    """The default model + a LoRA adapter, fused and exported F16, runs in llama.cpp with the
    same greedy continuation as MLX for 16 tokens (needs the [verify] extra)."""
    pytest.importorskip("llama_cpp", reason="install the [verify] extra: pip install -e '.[verify]'")

    model, _, _ = load_model("smollm2-135m")
    cfg = LoRAConfig(rank=8, alpha=16, num_layers=4)
    apply_lora(model, cfg)
    perturb_adapters(model, ["default"], 0.02, seed=5)
    ad = save_adapter(model, "default", tmp_path / "ad", cfg)
    res = export_model("smollm2-135m", tmp_path / "gg", to="gguf", quant="f16", adapters=[ad], verify=True)
    lc = res.verify["llama_cpp"]
    assert lc is not None and lc["all_match"], lc["prompts"]
    assert lc["position_top1_agreement"] >= 0.95


def test_gguf_lora_adapter_export(tiny_model_dir, adapter_dir, tmp_path):
    """Adapter-only GGUF: tensors are Aᵀ/Bᵀ (Q/K rows permuted) with alpha = scale·r; with the
    [verify] extra, llama.cpp applies it to the base GGUF and matches MLX's logits."""


    res = export_model(str(tiny_model_dir), tmp_path / "lora", to="gguf-lora", adapters=[adapter_dir])
    r = gguf.GGUFReader(str(tmp_path / "lora" / "adapter.gguf"))
    f = r.fields
    assert bytes(f["general.type"].parts[-1]).decode() == "adapter"
    assert float(f["adapter.lora.alpha"].parts[-1][0]) == pytest.approx(2.0 * 4)
    w = mx.load(str(adapter_dir / "adapters.safetensors"))
    t = {x.name: x for x in r.tensors}
    a = w["model.layers.0.mlp.up_proj.lora_a"]
    np.testing.assert_array_equal(np.array(t["blk.0.ffn_up.weight.lora_a"].data).reshape(a.shape[::-1]), np.array(a).T)
    bq = np.array(t["blk.1.attn_q.weight.lora_b"].data)
    ref = np.array(permute_qk(w["model.layers.1.self_attn.q_proj.lora_b"].T, 4))
    np.testing.assert_array_equal(bq.reshape(ref.shape), ref)
    assert res.tensor_types["modules"] == 14

    if importlib.util.find_spec("llama_cpp"):  # the optional [verify] extra
        from llama_cpp import Llama

        model, tok = load(str(tiny_model_dir))
        write_gguf(tmp_path / "base.gguf", model, tok, quant="f32")
        load_adapter(model, adapter_dir)
        ids = tok.encode("Does that make sense? I hope this helps")
        llm = Llama(model_path=str(tmp_path / "base.gguf"), lora_path=str(tmp_path / "lora" / "adapter.gguf"),
                    n_ctx=128, logits_all=True, verbose=False)
        llm.eval(ids)
        got = np.array(llm.scores[: len(ids)])
        assert np.abs(got - np.array(model(mx.array([ids]))[0])).max() < 5e-3


def test_quickstart_export_hook(tiny_model_dir, adapter_dir, tmp_path):
    paths = quickstart_export(str(tiny_model_dir), adapter_dir, tmp_path / "export")
    names = sorted(Path(p).name for p in paths)
    assert names == ["Modelfile", "README.md", "model.gguf", "verify.json"]
    v = json.loads((tmp_path / "export" / "verify.json").read_text())
    assert v["top1_agreement"] == 1.0 and v["max_abs_diff"] < 0.1
