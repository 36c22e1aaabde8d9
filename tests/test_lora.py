"""MultiLoRALinear against the plain formula, mlx-lm's adapter loader and fusing."""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from mlx.utils import tree_flatten
from mlx_lm import load
from mlx_lm.models import llama

from notme_mlx.errors import NotmeError
from notme_mlx.lora import (
    LoRAConfig, adapter_names, apply_lora, fuse, load_adapter, lora_modules,
    save_adapter, set_scale, trainable_parameters,
)
from notme_mlx.models.tiny import perturb_adapters


def _load(d):
    return load(str(d))


def _randomize(model, name, seed):
    """Give adapter `name` non-zero B so it changes the output."""
    perturb_adapters(model, [name], 0.05, seed)


def _ids(tok):
    return mx.array([tok.encode("Should I go ahead? I hope this helps, the parser is fixed.")])


def test_parameter_count_and_freezing(tiny_model_dir):
    model, _ = _load(tiny_model_dir)
    args = model.args
    H, I = args.hidden_size, args.intermediate_size
    kv = args.num_key_value_heads * (H // args.num_attention_heads)
    r = 8
    n = apply_lora(model, LoRAConfig(rank=r, alpha=16, num_layers=1))
    per_layer = r * ((H + H) * 2 + (H + kv) * 2 + (H + I) * 2 + (I + H))  # q,o ; k,v ; gate,up ; down
    assert n == per_layer
    tp = trainable_parameters(model)
    assert sum(v.size for v in tp.values()) == per_layer
    assert all(k.endswith(("lora_a", "lora_b")) and ".layers.1." in k for k in tp)


def test_zero_init_is_identity_and_formula_matches(tiny_model_dir):
    model, tok = _load(tiny_model_dir)
    ids = _ids(tok)
    ref = model(ids)
    apply_lora(model, LoRAConfig(rank=4, alpha=8))
    np.testing.assert_array_equal(np.array(model(ids)), np.array(ref))
    # one wrapped layer against y = Wx + s (x A) B, with two adapters
    apply_lora(model, LoRAConfig(rank=2, alpha=6, targets=("q_proj",)), name="upper")
    _randomize(model, "default", 1)
    _randomize(model, "upper", 2)
    m = model.model.layers[0].self_attn.q_proj
    x = mx.random.normal((3, model.args.hidden_size))
    a, b = m.adapters["default"], m.adapters["upper"]
    want = x @ m.base.weight.T + 2.0 * (x @ a.lora_a) @ a.lora_b + 3.0 * (x @ b.lora_a) @ b.lora_b
    np.testing.assert_allclose(np.array(m(x)), np.array(want), rtol=1e-5, atol=1e-6)
    # exactly one trainable: the last one added
    assert {k.split(".")[-2] for k in trainable_parameters(model)} == {"upper"}


def test_saved_adapter_loads_in_mlx_lm(tiny_model_dir, tmp_path):
    model, tok = _load(tiny_model_dir)
    cfg = LoRAConfig(rank=4, alpha=8, num_layers=1, targets=("q_proj", "v_proj", "down_proj"))
    apply_lora(model, cfg)
    _randomize(model, "default", 3)
    ids = _ids(tok)
    ours = np.array(model(ids))
    save_adapter(model, "default", tmp_path / "ad", cfg, extra_meta={"layer": "identity"})

    m2, _ = load(str(tiny_model_dir), adapter_path=str(tmp_path / "ad"))
    np.testing.assert_allclose(np.array(m2(ids)), ours, rtol=1e-5, atol=1e-5)
    # and back into ours
    m3, _ = _load(tiny_model_dir)
    assert load_adapter(m3, tmp_path / "ad") == "default"
    np.testing.assert_allclose(np.array(m3(ids)), ours, rtol=1e-5, atol=1e-5)


def test_stack_equals_fused_lower_plus_upper(tiny_model_dir):
    model, tok = _load(tiny_model_dir)
    ids = _ids(tok)
    apply_lora(model, LoRAConfig(rank=4, alpha=8), name="domain")
    apply_lora(model, LoRAConfig(rank=2, alpha=2, targets=("o_proj", "up_proj")), name="identity")
    _randomize(model, "domain", 4)
    _randomize(model, "identity", 5)
    stacked = np.array(model(ids))
    assert fuse(model, names=["domain"]) > 0
    assert adapter_names(model) == ["identity"]
    # the unfused trainable upper layer stays the only trainable thing: rank 2 on o_proj [64->64],
    # up_proj [64->ffn] in every block (independent count from the config)
    cfgd = model.args
    want = len(model.model.layers) * 2 * ((cfgd.hidden_size * 2) + (cfgd.hidden_size + cfgd.intermediate_size))
    tp = trainable_parameters(model)
    assert all(".adapters.identity." in k for k in tp) and sum(v.size for v in tp.values()) == want
    np.testing.assert_allclose(np.array(model(ids)), stacked, rtol=1e-4, atol=1e-4)
    fuse(model)
    assert not lora_modules(model)
    np.testing.assert_allclose(np.array(model(ids)), stacked, rtol=1e-4, atol=1e-4)


def test_scale_zero_turns_a_layer_off(tiny_model_dir):
    model, tok = _load(tiny_model_dir)
    ids = _ids(tok)
    base = np.array(model(ids))
    apply_lora(model, LoRAConfig(rank=4, alpha=8), name="mode")
    _randomize(model, "mode", 6)
    assert np.abs(np.array(model(ids)) - base).max() > 1e-4
    set_scale(model, "mode", 0.0)
    np.testing.assert_allclose(np.array(model(ids)), base, atol=1e-6)
    with pytest.raises(NotmeError, match="no adapter named 'nope'"):
        set_scale(model, "nope", 1.0)


def test_qlora_on_quantized_base_and_fuse_dequantizes(tiny_model_dir):
    model, tok = _load(tiny_model_dir)
    nn.quantize(model, group_size=32, bits=4, class_predicate=lambda p, m: isinstance(m, nn.Linear))
    ids = _ids(tok)
    apply_lora(model, LoRAConfig(rank=4, alpha=8))
    assert isinstance(model.model.layers[0].mlp.up_proj.base, nn.QuantizedLinear)
    _randomize(model, "default", 7)
    out = np.array(model(ids))
    # gradients flow to the adapter only
    def loss(m):
        return m(ids).astype(mx.float32).sum()
    g = nn.value_and_grad(model, loss)(model)[1]
    assert all(k.endswith(("lora_a", "lora_b")) for k, _ in tree_flatten(g))
    fuse(model)
    lin = model.model.layers[0].mlp.up_proj
    assert type(lin) is nn.Linear and lin.weight.dtype == mx.float32
    np.testing.assert_allclose(np.array(model(ids)), out, rtol=1e-3, atol=1e-3)


def test_load_adapter_for_other_base_is_refused(tiny_model_dir, tmp_path):
    model, _ = _load(tiny_model_dir)
    cfg = LoRAConfig(rank=4, alpha=8)
    apply_lora(model, cfg)
    save_adapter(model, "default", tmp_path / "ad", cfg)

    wide = llama.Model(llama.ModelArgs.from_dict({**model.args.__dict__, "hidden_size": 128}))
    with pytest.raises(NotmeError, match="do not fit the layer"):
        load_adapter(wide, tmp_path / "ad")
    with pytest.raises(NotmeError, match="no adapter_config.json"):
        load_adapter(model, tmp_path)
