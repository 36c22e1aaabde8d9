"""Export of every supported family: GGUF read back and checked against the `gguf` package's own
tensor tables, HF/mlx folders reloaded by mlx-lm, GGUF LoRA adapters, and (slow, needs the [verify]
extra) llama.cpp's logits against MLX's on fixed prompts."""

from __future__ import annotations

import re
from pathlib import Path

import gguf
import jinja2
import mlx.core as mx
import numpy as np
import pytest
from mlx.utils import tree_flatten
from mlx_lm import load

from notme_mlx.export import export_model, kl_divergence, verify_llama_cpp
from notme_mlx.export.gguf_export import write_gguf, write_gguf_lora
from notme_mlx.export.hf import unpermute_qk, write_hf_dir
from notme_mlx.export.templates import family_of as template_family_of
from notme_mlx.export.templates import modelfile
from notme_mlx.lora import LoRAConfig, adapter_parameters, apply_lora, fuse, load_adapter, save_adapter
from notme_mlx.models.families import FAMILIES, family_of_model
from notme_mlx.models.tiny import build_tiny_model, perturb_adapters

NAMES = [f.name for f in FAMILIES]
# 4 layers so that Gemma 3's sliding/global pattern (every 2nd layer global here) repeats.
LAYERS = 4


@pytest.fixture(scope="module")
def family_dir(tmp_path_factory):
    cache = {}

    def get(name):
        if name not in cache:
            cache[name] = build_tiny_model(tmp_path_factory.mktemp(f"exp_{name}"), name, 512, seed=8,
                                           num_hidden_layers=LAYERS)
        return cache[name]

    return get


def _allowed_tensor_names(arch: str) -> list[re.Pattern]:
    """The tensor names the `gguf` package lists for llama.cpp's architecture `arch`."""
    a = next(k for k, v in gguf.MODEL_ARCH_NAMES.items() if v == arch)
    return [re.compile(re.escape(gguf.TENSOR_NAMES[t]).replace(r"\{bid\}", r"\d+") + r"\.(weight|bias)")
            for t in gguf.MODEL_TENSORS[a]]


def _field(r, key):
    f = r.fields[key]
    return [f.parts[i].tolist() for i in f.data] if len(f.data) > 1 else f.parts[f.data[0]].tolist()


@pytest.mark.parametrize("name", NAMES)
def test_gguf_names_metadata_and_values(name, family_dir, tmp_path):
    model, tok = load(str(family_dir(name)))
    fam = family_of_model(model)
    path = tmp_path / "m.gguf"
    write_gguf(path, model, tok, quant="f32")
    r = gguf.GGUFReader(str(path))
    assert bytes(r.fields["general.architecture"].parts[-1]).decode() == fam.gguf_arch
    allowed = _allowed_tensor_names(fam.gguf_arch)
    byname = {t.name: t for t in r.tensors}
    for n in byname:
        assert any(p.fullmatch(n) for p in allowed), f"{n} is not a {fam.gguf_arch} tensor in the gguf package"
    args = model.args
    flat = dict(tree_flatten(model.parameters()))
    assert len(byname) == len(flat)
    assert ("output.weight" in byname) == ("lm_head.weight" in flat)
    for k, v in flat.items():
        arr = np.array(byname[fam.gguf_name(k)].data).reshape(v.shape)
        if fam.gguf_permute_qk and k.endswith(("q_proj.weight", "k_proj.weight")):
            heads = args.num_attention_heads if "q_proj" in k else args.num_key_value_heads
            arr = np.array(unpermute_qk(mx.array(arr), heads))
        want = np.array(v) + (fam.norm_offset if k.endswith("norm.weight") else 0.0)
        np.testing.assert_allclose(arr, want, rtol=0, atol=1e-6, err_msg=k)
    a = fam.gguf_arch
    assert _field(r, f"{a}.block_count")[0] == LAYERS
    assert _field(r, f"{a}.attention.key_length")[0] == (getattr(args, "head_dim", None) or 16)
    if name == "gemma2":
        assert _field(r, f"{a}.attn_logit_softcapping")[0] == pytest.approx(5.0)
        assert _field(r, f"{a}.final_logit_softcapping")[0] == pytest.approx(3.0)
    if name == "gemma3":
        assert _field(r, f"{a}.attention.sliding_window")[0] == 8
        assert [bool(x[0]) for x in _field(r, f"{a}.attention.sliding_window_pattern")] == [True, False] * 2
        assert _field(r, f"{a}.rope.freq_base_swa")[0] == pytest.approx(10000.0)
    if name == "phi3":
        assert "blk.0.attn_qkv.weight" in byname and "blk.0.ffn_gate.weight" not in byname
        assert tuple(byname["blk.0.ffn_up.weight"].shape) == (64, 2 * 128)


@pytest.mark.parametrize("name", NAMES)
def test_hf_folder_reloads_with_same_logits(name, family_dir, tmp_path):
    model, tok = load(str(family_dir(name)))
    write_hf_dir(tmp_path, model, tok, dtype="float32")
    m2, _ = load(str(tmp_path))
    x = mx.array([tok.encode("Does that make sense? I hope this helps")])
    np.testing.assert_allclose(np.array(m2(x)), np.array(model(x)), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_gguf_lora_adapter_names_match_base_tensors(name, family_dir, tmp_path):
    model, tok = load(str(family_dir(name)))
    write_gguf(tmp_path / "base.gguf", model, tok, quant="f32")
    base = {t.name: t for t in gguf.GGUFReader(str(tmp_path / "base.gguf")).tensors}
    apply_lora(model, LoRAConfig(rank=4, alpha=8.0))
    perturb_adapters(model, scale=0.05, seed=1)
    n = write_gguf_lora(tmp_path / "lora.gguf", model, adapter_parameters(model, "default"), 4, 2.0)
    r = gguf.GGUFReader(str(tmp_path / "lora.gguf"))
    names = [t.name for t in r.tensors]
    assert len(names) == 2 * n == 2 * len(adapter_parameters(model, "default")) // 2
    for t in r.tensors:
        stem = t.name.rsplit(".", 1)[0]  # blk.0.attn_q.weight
        assert stem in base, stem
        out_rows = base[stem].shape[-1]  # gguf shapes are reversed: (in, out)
        if t.name.endswith("lora_b"):
            assert t.shape[-1] == out_rows
    assert bytes(r.fields["general.architecture"].parts[-1]).decode() == family_of_model(model).gguf_arch


# --- llama.cpp itself (the [verify] extra) --------------------------------------------------------

# Every exported family: llama.cpp's next-token distribution at every prompt position is MLX's
# (KL < 1e-4 nats; measured 1e-8 .. 5e-5), top-1 agrees (a random tiny model has near-ties a
# 1e-3 logit difference can flip: >= 98 % of positions) and the greedy continuations match. f32
# weights; llama.cpp's GELU is a float16 lookup table, hence up to ~3e-2 logit differences for the
# Gemma families against ~1e-3 for the SiLU ones.
@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_llama_cpp_logits_agree_with_mlx(name, family_dir, tmp_path):
    pytest.importorskip("llama_cpp", reason="install the [verify] extra: pip install -e '.[verify]'")
    model, tok = load(str(family_dir(name)))
    write_gguf(tmp_path / "m.gguf", model, tok, quant="f32")
    res = verify_llama_cpp(model, tok, tmp_path / "m.gguf", n_tokens=8)
    print(name, {k: v for k, v in res.items() if k != "prompts"})
    assert res["kl_max"] < 1e-4, res
    assert res["position_top1_agreement"] >= 0.98, res
    assert res["logits_max_abs_diff"] < (5e-2 if name.startswith("gemma") else 5e-3), res
    assert res["all_match"], res


@pytest.mark.slow
def test_llama3_rope_scaling_exports_rope_freqs(tmp_path):
    """Llama 3.1+ rope scaling changes every position's rotation: llama.cpp needs rope_freqs."""
    pytest.importorskip("llama_cpp", reason="install the [verify] extra: pip install -e '.[verify]'")
    d = build_tiny_model(tmp_path / "m", "llama", 512, seed=9, rope_scaling={
        "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
        "original_max_position_embeddings": 64})
    model, tok = load(str(d))
    write_gguf(tmp_path / "m.gguf", model, tok, quant="f32")
    res = verify_llama_cpp(model, tok, tmp_path / "m.gguf", n_tokens=8)
    assert res["position_top1_agreement"] >= 0.98 and res["kl_max"] < 1e-4, res


@pytest.mark.slow
@pytest.mark.parametrize("name", ["qwen3", "gemma3", "phi3"])
def test_export_cli_path_with_adapter_runs_in_llama_cpp(name, family_dir, tmp_path):
    """export_model fuses a trained-shaped adapter and writes a GGUF that llama.cpp runs like MLX."""
    pytest.importorskip("llama_cpp", reason="install the [verify] extra: pip install -e '.[verify]'")
    d = family_dir(name)
    model, tok = load(str(d))
    cfg = LoRAConfig(rank=4, alpha=8.0)
    apply_lora(model, cfg)
    perturb_adapters(model, scale=0.05, seed=2)
    save_adapter(model, "default", tmp_path / "ad", cfg)
    res = export_model(str(d), tmp_path / "out", to="gguf", adapters=[str(tmp_path / "ad")], quant="f32")
    fused, _ = load(str(d))
    load_adapter(fused, tmp_path / "ad")
    fuse(fused)
    v = verify_llama_cpp(fused, tok, res.out / "model.gguf", n_tokens=8)
    assert v["position_top1_agreement"] >= 0.98 and v["kl_max"] < 1e-4, v


# --- Ollama Modelfiles from each family's real chat template ---------------------------------------

TEMPLATES = {  # tests/data/chat_templates (copied from llama.cpp, see SOURCE.md) -> template family
    "microsoft-Phi-3.5-mini-instruct": "phi3",
    "Qwen-Qwen2.5-7B-Instruct": "chatml",
    "Qwen-Qwen3-0.6B": "chatml",
    "google-gemma-2-2b-it": "gemma",
    "meta-llama-Llama-3.2-3B-Instruct": "llama3",
    "mistralai-Mistral-Nemo-Instruct-2407": "mistral",
}


@pytest.mark.parametrize("stem,want", sorted(TEMPLATES.items()))
def test_modelfile_for_each_family_template(stem, want):
    src = (Path(__file__).parent / "data" / "chat_templates" / f"{stem}.jinja").read_text()
    fam = template_family_of(src)
    assert fam.name == want
    mf = modelfile("model.gguf", src, system="Be brief.")
    assert mf.startswith("FROM ./model.gguf\n") and 'SYSTEM """Be brief."""' in mf
    # the stop strings are the turn markers this very template emits (rendered by Jinja itself)
    msgs = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"},
            {"role": "user", "content": "Bye"}]
    env = jinja2.Environment(extensions=["jinja2.ext.loopcontrols"])
    env.globals["raise_exception"] = lambda m: (_ for _ in ()).throw(ValueError(m))
    env.globals["strftime_now"] = lambda fmt: "26 Jul 2024"
    text = env.from_string(src).render(messages=msgs, add_generation_prompt=True, bos_token="<s>",
                                       eos_token="</s>")
    end_of_turn = fam.stops[0]
    assert end_of_turn in text, (end_of_turn, text)
    for s in fam.stops:
        assert f'PARAMETER stop "{s}"' in mf


@pytest.mark.parametrize("name", ["gemma3", "llama"])
def test_gguf_vocabulary_kind(name, family_dir, tmp_path):
    """Gemma's SentencePiece-style vocabulary is written as llama.cpp's 'llama' (SPM) tokenizer with
    scores from the merge ranks and byte tokens; byte-level BPE stays 'gpt2' with merges."""
    model, tok = load(str(family_dir(name)))
    write_gguf(tmp_path / "m.gguf", model, tok, quant="f32")
    r = gguf.GGUFReader(str(tmp_path / "m.gguf"))
    kind = bytes(r.fields["tokenizer.ggml.model"].parts[-1]).decode()
    types = [int(r.fields["tokenizer.ggml.token_type"].parts[i][0]) for i in r.fields["tokenizer.ggml.token_type"].data]
    if name == "gemma3":
        assert kind == "llama" and "tokenizer.ggml.merges" not in r.fields
        assert types.count(int(gguf.TokenType.BYTE)) == 256
        scores = [float(r.fields["tokenizer.ggml.scores"].parts[i][0]) for i in r.fields["tokenizer.ggml.scores"].data]
        vocab = tok._tokenizer.get_vocab()
        assert scores[vocab["\u2581that"]] < 0 and scores[vocab["<0x41>"]] == 0.0
    else:
        assert kind == "gpt2" and "tokenizer.ggml.merges" in r.fields


@pytest.mark.slow
@pytest.mark.parametrize("name", ["gemma3", "llama", "qwen3"])
def test_llama_cpp_tokenizes_like_the_hf_tokenizer(name, family_dir, tmp_path):
    pytest.importorskip("llama_cpp", reason="install the [verify] extra: pip install -e '.[verify]'")
    from llama_cpp import Llama

    from notme_mlx.models.tiny import _corpus

    model, tok = load(str(family_dir(name)))
    write_gguf(tmp_path / "m.gguf", model, tok, quant="f32")
    llm = Llama(model_path=str(tmp_path / "m.gguf"), vocab_only=True, verbose=False)
    lines = list(_corpus(n_lines=200, seed=42))
    for text in lines:
        want = tok._tokenizer.encode(text, add_special_tokens=False)
        got = llm.tokenize(text.encode(), add_bos=False, special=False)
        assert got == want, (text, got, want)


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_llama_cpp_applies_the_gguf_lora_adapter_like_mlx(name, family_dir, tmp_path):
    """Adapter-only export: llama.cpp runs base GGUF + LoRA GGUF (not fused) with MLX's logits for
    base + adapter."""
    pytest.importorskip("llama_cpp", reason="install the [verify] extra: pip install -e '.[verify]'")
    from llama_cpp import Llama

    model, tok = load(str(family_dir(name)))
    write_gguf(tmp_path / "base.gguf", model, tok, quant="f32")
    cfg = LoRAConfig(rank=4, alpha=8.0)
    apply_lora(model, cfg)
    perturb_adapters(model, scale=0.1, seed=3)
    write_gguf_lora(tmp_path / "lora.gguf", model, adapter_parameters(model, "default"), 4, cfg.scale)
    ids = tok.encode("Does that make sense? I hope this helps")
    llm = Llama(model_path=str(tmp_path / "base.gguf"), lora_path=str(tmp_path / "lora.gguf"),
                n_ctx=128, logits_all=True, verbose=False, n_threads=2)
    llm.eval(ids)
    got = np.array(llm.scores[: len(ids)])
    ref = np.array(model(mx.array([ids]))[0].astype(mx.float32))
    base_ref = np.array(load(str(family_dir(name)))[0](mx.array([ids]))[0])
    assert np.abs(ref - base_ref).max() > 1e-2  # the adapter changes the logits
    assert (got.argmax(-1) == ref.argmax(-1)).mean() >= 0.9  # 10 positions; near-ties of a random model
    assert kl_divergence(ref, got).max() < 1e-4
