"""A Gemma-family model exported by notme to GGUF and imported back through notme's own loader:
the rebuilt tokenizer gives the original's ids (BOS included, runs of spaces, byte fallback,
special tokens) and the weights come back equal. A second export of the imported model writes
the same tokenizer metadata (a Gemma that came from a GGUF file stays stable)."""

from __future__ import annotations

import json

import gguf
import mlx.core as mx
import numpy as np
import pytest
from mlx.utils import tree_flatten
from mlx_lm import load
from transformers import AutoTokenizer

from notme_mlx.export.gguf_export import write_gguf
from notme_mlx.models.gguf_loader import convert_gguf
from notme_mlx.models.tiny import build_tiny_model

STRINGS = [
    "The capital of France is",
    "Them: are you coming climbing on saturday?\nMe: yes, 9 at the gym",
    "a  b   c    d  ",  # runs of spaces: Gemma's user-defined space tokens
    "  leading and trailing  ",
    "naïve café 🙂 日本語 \x1f",  # byte fallback
    "<start_of_turn>user\nhi<end_of_turn>\n<start_of_turn>model\n",
    "<unk> stays one token",
    "1234567 + 89 = ?\t\ttabs",
    "",
]


def _gemma_like_tokenizer(model_dir):
    """The tiny SentencePiece-style tokenizer made more like Gemma 3's tokenizer.json: BOS first
    (post-processor), its no-op pre-tokenizer (the text is one BPE word, so ▁ runs can merge), and
    the last two pieces replaced by runs of spaces (▁▁, ▁▁▁)."""
    p = model_dir / "tokenizer.json"
    tj = json.loads(p.read_text())
    m = tj["model"]
    inv = {i: t for t, i in m["vocab"].items()}
    n = max(inv) + 1
    last = {inv[n - 2], inv[n - 1]}
    merges = [x if isinstance(x, list) else x.split(" ", 1) for x in m["merges"]]
    merges = [x for x in merges if "".join(x) not in last and not set(x) & last]
    for t in last:
        del m["vocab"][t]
    m["vocab"]["\u2581\u2581"], m["vocab"]["\u2581\u2581\u2581"] = n - 2, n - 1
    m["merges"] = merges + [["\u2581", "\u2581"], ["\u2581\u2581", "\u2581"]]
    tj["pre_tokenizer"] = {"type": "Split", "pattern": {"String": " "}, "behavior": "MergedWithPrevious",
                           "invert": False}
    bos = next(a for a in tj["added_tokens"] if a["content"] == "<bos>")
    tj["post_processor"] = {"type": "TemplateProcessing",
                            "single": [{"SpecialToken": {"id": "<bos>", "type_id": 0}},
                                       {"Sequence": {"id": "A", "type_id": 0}}],
                            "pair": [{"SpecialToken": {"id": "<bos>", "type_id": 0}},
                                     {"Sequence": {"id": "A", "type_id": 0}},
                                     {"Sequence": {"id": "B", "type_id": 1}}],
                            "special_tokens": {"<bos>": {"id": "<bos>", "ids": [bos["id"]], "tokens": ["<bos>"]}}}
    p.write_text(json.dumps(tj))


def _ids(tok, s, special):
    return list(tok(s, add_special_tokens=special)["input_ids"])


def _tok_fields(path):
    r = gguf.GGUFReader(str(path))

    def field(k):
        f = r.fields[k]
        return [f.parts[i].tolist() for i in f.data]

    return {k: field(k) for k in r.fields if k.startswith("tokenizer.")}


@pytest.fixture(scope="module")
def gemma_dirs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("gguf_rt")
    # 6 layers, 5 local : 1 global, the pattern llama.cpp assumes for Gemma 3
    src = build_tiny_model(tmp / "src", "gemma3", 512, seed=3, num_hidden_layers=6, sliding_window_pattern=6)
    _gemma_like_tokenizer(src)
    model, tok = load(str(src))
    write_gguf(tmp / "a.gguf", model, tok, quant="f32")
    back = convert_gguf(tmp / "a.gguf", tmp / "back")
    return src, tmp, model, back


def test_exported_gemma_tokenizer_reimports_with_identical_ids(gemma_dirs):
    src, tmp, _, back = gemma_dirs
    orig = AutoTokenizer.from_pretrained(str(src))
    re_ = AutoTokenizer.from_pretrained(str(back))
    assert _ids(orig, "a  b", True)[0] == orig.bos_token_id  # the fixture adds BOS, as Gemma does
    assert any(t == orig.convert_tokens_to_ids("\u2581\u2581") for t in _ids(orig, "a  b   c", False))
    for s in STRINGS:
        for special in (True, False):
            assert _ids(re_, s, special) == _ids(orig, s, special), (s, special)
        assert re_.decode(_ids(re_, s, False)) == orig.decode(_ids(orig, s, False))
    # the file spells the space runs as Gemma's own GGUF does: spaces, user-defined; BOS is added
    f = _tok_fields(tmp / "a.gguf")
    toks = [bytes(t).decode() for t in f["tokenizer.ggml.tokens"]]
    types = [t[0] for t in f["tokenizer.ggml.token_type"]]
    n = len(toks)
    assert toks[n - 2:] == ["  ", "   "] and types[n - 2:] == [int(gguf.TokenType.USER_DEFINED)] * 2
    assert f["tokenizer.ggml.add_bos_token"] == [[True]]


def test_exported_gemma_weights_reimport_equal(gemma_dirs):
    _, _, model, back = gemma_dirs
    m2, _ = load(str(back))
    a, b = dict(tree_flatten(model.parameters())), dict(tree_flatten(m2.parameters()))
    assert sorted(a) == sorted(b)
    for k in a:  # f32 file: exact, but the norms went through w + 1 and back
        tol = 1e-6 if k.endswith("norm.weight") else 0.0
        np.testing.assert_allclose(np.array(b[k]), np.array(a[k]), rtol=0, atol=tol, err_msg=k)
    x = mx.array([[2, 40, 41, 300, 7, 9]])
    np.testing.assert_allclose(np.array(m2(x)), np.array(model(x)), rtol=1e-5, atol=1e-5)


def test_second_export_of_the_imported_gemma_writes_the_same_tokenizer(gemma_dirs):
    _, tmp, _, back = gemma_dirs
    m2, tok2 = load(str(back))
    write_gguf(tmp / "b.gguf", m2, tok2, quant="f32")
    first, second = _tok_fields(tmp / "a.gguf"), _tok_fields(tmp / "b.gguf")
    assert sorted(first) == sorted(second)
    for k in first:
        assert first[k] == second[k], k


@pytest.mark.slow
def test_real_gemma3_270m_gguf_round_trip(tmp_path):
    """The fetched registry Gemma 3 270M: our export (f32) imported back by our loader tokenizes like
    the original and has its weights."""
    from notme_mlx.models import load_model

    model, tok, _ = load_model("gemma3-270m", dequantize=True)
    write_gguf(tmp_path / "g.gguf", model, tok, quant="f32")
    back = convert_gguf(tmp_path / "g.gguf", tmp_path / "back")
    orig = AutoTokenizer.from_pretrained(str(_model_dir()))
    re_ = AutoTokenizer.from_pretrained(str(back))
    for s in STRINGS:
        for special in (True, False):
            assert _ids(re_, s, special) == _ids(orig, s, special), (s, special)
    m2, _ = load(str(back))
    a, b = dict(tree_flatten(model.parameters())), dict(tree_flatten(m2.parameters()))
    assert sorted(a) == sorted(b)
    for k in a:
        np.testing.assert_allclose(np.array(b[k]), np.array(a[k]), rtol=0, atol=1e-6, err_msg=k)


def _model_dir():
    from notme_mlx.models import resolve

    return resolve("gemma3-270m")


def test_byte_level_tokenizer_that_adds_bos_round_trips(tmp_path):
    """A byte-level BPE that puts BOS first (as Llama 3's does) keeps doing so after export -> import."""
    src = build_tiny_model(tmp_path / "src", "llama", 512, seed=5)
    p = src / "tokenizer.json"
    tj = json.loads(p.read_text())
    bos = next(a for a in tj["added_tokens"] if a["content"] == "<|im_start|>")
    tj["post_processor"] = {"type": "TemplateProcessing",
                            "single": [{"SpecialToken": {"id": bos["content"], "type_id": 0}},
                                       {"Sequence": {"id": "A", "type_id": 0}}],
                            "pair": [{"SpecialToken": {"id": bos["content"], "type_id": 0}},
                                     {"Sequence": {"id": "A", "type_id": 0}},
                                     {"Sequence": {"id": "B", "type_id": 1}}],
                            "special_tokens": {bos["content"]: {"id": bos["content"], "ids": [bos["id"]],
                                                                "tokens": [bos["content"]]}}}
    p.write_text(json.dumps(tj))
    model, tok = load(str(src))
    write_gguf(tmp_path / "m.gguf", model, tok, quant="f32")
    assert _tok_fields(tmp_path / "m.gguf")["tokenizer.ggml.add_bos_token"] == [[True]]
    back = convert_gguf(tmp_path / "m.gguf", tmp_path / "back")
    orig, re_ = AutoTokenizer.from_pretrained(str(src)), AutoTokenizer.from_pretrained(str(back))
    assert _ids(orig, "hi there", True)[0] == bos["id"]
    for s in STRINGS:
        for special in (True, False):
            assert _ids(re_, s, special) == _ids(orig, s, special), (s, special)
    # and one that does not add BOS (the tiny tokenizer as built) is written and read back without it
    plain = build_tiny_model(tmp_path / "plain", "llama", 512, seed=5)
    m2, t2 = load(str(plain))
    write_gguf(tmp_path / "p.gguf", m2, t2, quant="f32")
    assert _tok_fields(tmp_path / "p.gguf")["tokenizer.ggml.add_bos_token"] == [[False]]
    back2 = AutoTokenizer.from_pretrained(str(convert_gguf(tmp_path / "p.gguf", tmp_path / "back2")))
    assert _ids(back2, "hi there", True) == _ids(AutoTokenizer.from_pretrained(str(plain)), "hi there", True)
