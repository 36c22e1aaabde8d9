"""`notme model`, `notme generate` and the chat REPL, driven with scripted input."""

from __future__ import annotations

import io
import json

import mlx.core as mx
from click.testing import CliRunner

from notme_mlx.cli import main
from notme_mlx.models import load_model
from notme_mlx.models.generate import ChatState, chat_prompt, generate_text, repl


def test_model_info_json_counts_parameters(tiny_model_dir):
    r = CliRunner().invoke(main, ["model", "info", str(tiny_model_dir), "--json"])
    assert r.exit_code == 0, r.output
    info = json.loads(r.output)
    cfg = json.loads((tiny_model_dir / "config.json").read_text())
    H, L, I, V = cfg["hidden_size"], cfg["num_hidden_layers"], cfg["intermediate_size"], cfg["vocab_size"]
    kv = cfg["num_key_value_heads"] * H // cfg["num_attention_heads"]
    per_layer = 2 * H * H + 2 * H * kv + 3 * H * I + 2 * H
    assert info["n_params"] == V * H + L * per_layer + H
    assert info["has_chat_template"] is True and info["architecture"] == "llama"


def test_convert_gguf_then_load(tiny_model_dir, tmp_path):
    from notme_mlx.export.gguf_export import write_gguf

    m, t, _ = load_model(str(tiny_model_dir))
    write_gguf(tmp_path / "m.gguf", m, t, quant="f32")
    r = CliRunner().invoke(main, ["model", "convert", str(tmp_path / "m.gguf"), str(tmp_path / "out")])
    assert r.exit_code == 0, r.output
    m2, _, _ = load_model(str(tmp_path / "out"))
    ids = mx.array([t.encode("hello there")])
    assert float(mx.abs(m2(ids) - m(ids)).max()) < 1e-4
    r = CliRunner().invoke(main, ["model", "convert", str(tmp_path / "m.gguf"), str(tmp_path / "out")])
    assert r.exit_code != 0 and "already exists" in r.output


def test_generate_is_greedy_and_matches_library(tiny_model_dir):
    m, t, _ = load_model(str(tiny_model_dir))
    want = generate_text(m, t, chat_prompt(t, [{"role": "user", "content": "hi"}]), max_tokens=8)
    r = CliRunner().invoke(main, ["generate", "--model", str(tiny_model_dir), "--prompt", "hi", "--max-tokens", "8"])
    assert r.exit_code == 0, r.output
    assert r.output == want + "\n"
    assert want  # the random tiny model does emit tokens


def test_repl_scripted(tiny_model):
    model, tok = tiny_model
    out = io.StringIO()
    script = "/system be brief\nhello\n/nope\n/temp 0\nsecond\n/reset\n/quit\nnever\n"
    n = repl(ChatState(model, tok, max_tokens=4, temp=0.0), io.StringIO(script), out)
    text = out.getvalue()
    assert n == 2
    assert "(system prompt set)" in text and "(unknown command /nope" in text and "(conversation cleared)" in text


def test_missing_model_is_one_line_exit_1(tmp_path):
    r = CliRunner().invoke(main, ["generate", "--model", str(tmp_path / "nope"), "--prompt", "x"])
    assert r.exit_code == 1
    assert "no such file or directory" in r.output and len(r.output.strip().splitlines()) == 1


def test_model_info_table_and_bad_inputs(tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("NOTME_HOME", str(tmp_path / "home"))
    r = CliRunner().invoke(main, ["model", "info", str(tiny_model_dir)])
    assert r.exit_code == 0, r.output
    cfg = json.loads((tiny_model_dir / "config.json").read_text())
    assert "llama" in r.output and f"{cfg['vocab_size']:,}" in r.output and "chat template" in r.output
    bad = tmp_path / "notes.gguf"
    bad.write_text("hello")
    for args in (["model", "info", str(bad)], ["model", "fetch", "no-such-model"],
                 ["model", "convert", str(bad), str(tmp_path / "out")]):
        r = CliRunner().invoke(main, args)
        assert r.exit_code != 0, (args, r.output)
        assert len(r.output.strip().splitlines()) == 1, (args, r.output)
    assert not (tmp_path / "out").exists()
    assert not list((tmp_path / "home").rglob("*.safetensors")) if (tmp_path / "home").exists() else True


def test_convert_quantized_dir_to_dense(tiny_model_dir, tmp_path, monkeypatch):
    from notme_mlx.export.gguf_export import write_gguf

    monkeypatch.setenv("NOTME_HOME", str(tmp_path / "home"))
    m, t, _ = load_model(str(tiny_model_dir))
    write_gguf(tmp_path / "q.gguf", m, t, quant="q4_1")
    assert CliRunner().invoke(main, ["model", "convert", str(tmp_path / "q.gguf"), str(tmp_path / "q")]).exit_code == 0
    r = CliRunner().invoke(main, ["model", "convert", str(tmp_path / "q"), str(tmp_path / "dense"), "--dequantize"])
    assert r.exit_code == 0, r.output
    cfg = json.loads((tmp_path / "dense" / "config.json").read_text())
    assert "quantization" not in cfg and cfg["rope_traditional"] is True
    _, _, iq = load_model(str(tmp_path / "q"), dequantize=False)
    mq, _, _ = load_model(str(tmp_path / "q"), dequantize=True)  # same float32 weights, dequantized at load
    md, _, idn = load_model(str(tmp_path / "dense"), dequantize=False)
    assert iq["quantization"]["bits"] == 4 and idn["quantization"] is None
    assert idn["n_params"] == iq["n_params"]
    ids = mx.array([t.encode("hello there")])
    assert float(mx.abs(mq(ids) - md(ids)).max()) < 1e-5


def test_generate_with_adapters_matches_mlx_lm(tiny_model_dir, tmp_path):
    """`generate --adapters` equals mlx-lm's own adapter loading (an independent implementation)."""
    import mlx_lm
    from mlx.utils import tree_flatten

    from notme_mlx.lora import LoRAConfig, apply_lora, save_adapter

    m, t, _ = load_model(str(tiny_model_dir))
    cfg = LoRAConfig(rank=4, alpha=32.0)
    apply_lora(m, cfg)
    mx.random.seed(1)
    m.update(__import__("mlx.utils").utils.tree_unflatten(
        [(k, mx.random.normal(v.shape) * 0.5) for k, v in tree_flatten(m.trainable_parameters()) if k.endswith("lora_b")]))
    save_adapter(m, "default", tmp_path / "ad", cfg)
    ref_model, ref_tok = mlx_lm.load(str(tiny_model_dir), adapter_path=str(tmp_path / "ad"))
    base_model, _ = mlx_lm.load(str(tiny_model_dir))
    prompt = chat_prompt(ref_tok, [{"role": "user", "content": "hello there"}])
    want = generate_text(ref_model, ref_tok, prompt, max_tokens=12)
    assert want != generate_text(base_model, ref_tok, prompt, max_tokens=12)  # the adapter matters
    r = CliRunner().invoke(main, ["generate", "--model", str(tiny_model_dir), "--prompt", "hello there",
                                  "--max-tokens", "12", "--adapters", str(tmp_path / "ad")])
    assert r.exit_code == 0, r.output
    assert r.output == want + "\n"


def test_chat_cli_scripted_greedy_reply_matches_library(tiny_model_dir):
    m, t, _ = load_model(str(tiny_model_dir))
    want = generate_text(m, t, chat_prompt(t, [{"role": "user", "content": "hi"}]), max_tokens=6)
    r = CliRunner().invoke(main, ["chat", "--model", str(tiny_model_dir), "--temp", "0", "--max-tokens", "6"],
                           input="hi\n/quit\n")
    assert r.exit_code == 0, r.output
    assert f"me> {want}\n" in r.output
