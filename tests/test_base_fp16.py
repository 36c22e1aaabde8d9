"""A base stored in float16 and computed in float32 (`models.HalfStoredLinear`): the same numbers as
a float32 model holding the same (rounded) weights, and no float32 weight copy outliving its GEMM."""

from __future__ import annotations

import json
import shutil

import mlx.core as mx
import mlx_lm
import numpy as np
import pytest
from mlx import nn
from mlx.utils import tree_flatten, tree_unflatten

from notme_mlx.errors import NotmeError
from notme_mlx.lora import (
    LoRAConfig,
    apply_lora,
    fuse,
    lora_modules,
    trainable_parameters,
)
from notme_mlx.models import (
    HalfStoredLinear,
    dequantize_model,
    dequantized_matmul,
    load_model,
)
from notme_mlx.models.tiny import build_tiny_family_model, perturb_adapters
from notme_mlx.train.loop import default_loss


def _stored_f16(w: mx.array) -> mx.array:
    """What float16 storage holds, computed in numpy: float16 rounding, subnormals (|w| < 2^-14) 0."""
    h = np.array(w.astype(mx.float32)).astype(np.float16)
    h[np.abs(h) < np.float16(2.0 ** -14)] = 0
    return mx.array(h)


def _pair(family="llama", quantize=False, dtype="float16"):
    """(half, ref): the tiny model with its block linears stored in `dtype` (16 bits), and a float32
    model whose weights are exactly those values upcast (every other parameter identical)."""
    half, _ = build_tiny_family_model(family, vocab_size=256, seed=3)
    ref, _ = build_tiny_family_model(family, vocab_size=256, seed=3)
    if quantize:  # the block linears only (the embedding/head stays dense in both)
        nn.quantize(half, group_size=32, bits=4, class_predicate=lambda p, m: isinstance(m, nn.Linear) and ".layers." in p)
    dequantize_model(half, dtype)
    ref.update(tree_unflatten([(k, v.astype(mx.float32)) for k, v in tree_flatten(half.parameters())]))
    mx.eval(half.parameters(), ref.parameters())
    return half, ref


def _batch(vocab, B=2, T=12, seed=0):
    rng = np.random.default_rng(seed)
    toks = rng.integers(0, vocab, (B, T + 1))
    labels = rng.choice([0, 1, 1, 2], (B, T))  # 0 context, 1 learn, 2 penalize
    return {"inputs": mx.array(toks[:, :-1], mx.int32), "targets": mx.array(toks[:, 1:], mx.int32),
            "labels": mx.array(labels, mx.int32)}, int((labels == 1).sum()), int((labels == 2).sum())


def test_only_block_linears_are_half_stored():
    half, ref = _pair()
    flat = dict(tree_flatten(half.parameters()))
    wrapped = {p for p, m in half.named_modules() if isinstance(m, HalfStoredLinear)}
    block_linears = {p for p, m in ref.named_modules() if isinstance(m, nn.Linear) and ".layers." in p}
    assert wrapped == block_linears and len(wrapped) == 2 * 7  # 2 layers x q k v o gate up down
    for k, v in flat.items():
        want = mx.float16 if k.rsplit(".", 1)[0] in wrapped and k.endswith(".weight") else mx.float32
        assert v.dtype == want, k
    assert sum(v.nbytes for v in flat.values()) < sum(v.nbytes for v in dict(tree_flatten(ref.parameters())).values())


@pytest.mark.parametrize("family,quantize,dtype", [("llama", False, "float16"), ("llama", True, "float16"),
                                                   ("llama", True, "bfloat16"), ("qwen2", False, "float16"),
                                                   ("phi3", False, "bfloat16")])
def test_forward_and_lora_grads_equal_float32_model_with_same_weights(family, quantize, dtype):
    """Logits of mlx-lm's own forward, and the training loss + LoRA gradients through notme's
    trainer loss (compiled too), equal those of the float32 model holding the same values."""
    half, ref = _pair(family, quantize, dtype)
    vocab = half.args.vocab_size
    batch, n_learn, n_pen = _batch(vocab)
    np.testing.assert_allclose(np.array(half(batch["inputs"])), np.array(ref(batch["inputs"])), rtol=1e-5, atol=1e-5)
    for m in (half, ref):
        mx.random.seed(7)
        apply_lora(m, LoRAConfig(rank=4, alpha=8.0))
        perturb_adapters(m, seed=1)
    assert all(isinstance(mod.base, HalfStoredLinear) for _, mod in lora_modules(half))

    def loss(model):
        return default_loss(model, batch, n_learn, n_pen)[0]

    got = nn.value_and_grad(half, loss)(half)
    want = nn.value_and_grad(ref, loss)(ref)
    got_c = mx.compile(lambda: nn.value_and_grad(half, loss)(half), inputs=half.state)()
    for lv, g in (got, got_c):
        assert lv.item() == pytest.approx(want[0].item(), rel=1e-5)
        gf, wf = dict(tree_flatten(g)), dict(tree_flatten(want[1]))
        assert set(gf) == set(wf) == set(trainable_parameters(half))
        for k, w in wf.items():
            np.testing.assert_allclose(np.array(gf[k]), np.array(w), rtol=1e-4, atol=1e-6, err_msg=k)


def test_half_stored_matmul_equals_float32_gemm_and_its_input_gradient():
    mx.random.seed(0)
    lin = nn.Linear(96, 80, bias=True)
    half = HalfStoredLinear(96, 80, bias=True)
    half.weight, half.bias = _stored_f16(lin.weight), lin.bias
    w32 = half.weight.astype(mx.float32)
    x = mx.random.normal((3, 5, 96))
    ref = x @ w32.T + lin.bias
    np.testing.assert_allclose(np.array(half(x)), np.array(ref), rtol=1e-6, atol=1e-6)
    assert half(x).dtype == mx.float32
    g = mx.grad(lambda v: (dequantized_matmul(v, half) ** 2).sum())(x)
    g_ref = mx.grad(lambda v: ((v @ w32.T + lin.bias) ** 2).sum())(x)
    np.testing.assert_allclose(np.array(g), np.array(g_ref), rtol=1e-5, atol=1e-5)


def test_float16_bits_to_float32_every_value():
    """All 65,536 float16 bit patterns: normal values and zeros as MLX's astype gives them, bit for
    bit; subnormals 0; the weights stored in float16 (`to_half`) hold no subnormals."""
    from notme_mlx import cpu_kernels
    from notme_mlx.models import to_half

    bits = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16)
    h = bits.view(np.float16)
    got = np.array(cpu_kernels.float16_to_float32(mx.array(h).reshape(256, 256))).reshape(-1)
    want = h.astype(np.float32)
    exp = bits & 0x7C00
    normal = (exp != 0) & (exp != 0x7C00)
    assert np.array_equal(got[normal].view(np.uint32), want[normal].view(np.uint32))
    assert np.all(got[(exp == 0)] == 0.0) and normal.sum() == 61_440
    w = mx.array(np.concatenate([want[normal | (exp == 0)], np.float32([1e-7, -5e-5, 0.25])]))
    stored = np.array(to_half(w, mx.float16))
    assert np.all((stored == 0) | (np.abs(stored) >= 2.0 ** -14)) and np.count_nonzero(stored) == 61_440 + 1


def _half(d):
    lin = HalfStoredLinear(d, d, bias=False)
    lin.weight = lin.weight.astype(mx.float16)
    return lin


def _plain_fp16(d):  # an nn.Linear holding a float16 weight: MLX promotes it in the GEMM
    lin = nn.Linear(d, d, bias=False)
    lin.weight = lin.weight.astype(mx.float16)
    return lin


def test_float32_weight_copies_do_not_accumulate_over_layers(lora_stack_extra_peak):
    """Going from 8 to 32 half-stored layers adds less than 3 layers' float32 weights to the peak
    above the (float16) parameters (measured: 1.4); a plain nn.Linear holding the same float16
    weight keeps each layer's promoted float32 copy for the backward pass and adds about all 24."""
    d = 512
    grow = lora_stack_extra_peak(_half, 32, d) - lora_stack_extra_peak(_half, 8, d)
    assert grow < 3 * d * d * 4
    grow_plain = lora_stack_extra_peak(_plain_fp16, 32, d) - lora_stack_extra_peak(_plain_fp16, 8, d)
    assert grow_plain > 20 * d * d * 4


def test_fuse_gives_float32_dense_layers():
    half, ref = _pair()
    x = mx.array([[1, 5, 9, 42, 7]], mx.int32)
    for m in (half, ref):
        mx.random.seed(7)
        apply_lora(m, LoRAConfig(rank=4, alpha=8.0))
        perturb_adapters(m, seed=1)
    before = np.array(half(x))
    assert fuse(half) == 14
    lins = [m for p, m in half.named_modules() if ".layers." in f".{p}." and isinstance(m, nn.Linear)]
    assert lins and all(type(m) is nn.Linear and m.weight.dtype == mx.float32 for m in lins)
    np.testing.assert_allclose(np.array(half(x)), before, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(np.array(half(x)), np.array(ref(x)), rtol=1e-4, atol=1e-5)


def test_load_model_base_dtype_round_trip(tiny_model_dir):
    m16, _, info16 = load_model(str(tiny_model_dir), dequantize=True, base_dtype="float16")
    m32, _, info32 = load_model(str(tiny_model_dir), dequantize=True, base_dtype="float32")
    assert (info16["base_dtype"], info32["base_dtype"]) == ("float16", "float32")
    f16, f32 = dict(tree_flatten(m16.parameters())), dict(tree_flatten(m32.parameters()))
    assert f16.keys() == f32.keys()
    n_half = 0
    for k, v in f32.items():
        assert v.dtype == mx.float32, k
        if f16[k].dtype == mx.float16:
            n_half += 1
            assert ".layers." in k and k.endswith("proj.weight")
            assert mx.array_equal(f16[k], _stored_f16(v)).item(), k
        else:
            assert mx.array_equal(f16[k], v).item(), k
    assert n_half == 2 * 7
    with pytest.raises(NotmeError, match="base dtype .bfloat8.: expected auto, float32, float16, bfloat16"):
        load_model(str(tiny_model_dir), dequantize=True, base_dtype="bfloat8")


def test_auto_storage_follows_the_checkpoint(tiny_model_dir, tmp_path):
    """base_dtype="auto" (training): a float32 checkpoint stays float32 (exact); a quantized one
    gets 16-bit block linears equal to its dequantized values rounded to float16, and the same
    logits as a float32 model holding those values. The default stays float32."""
    _, _, info = load_model(str(tiny_model_dir), dequantize=True, base_dtype="auto")
    assert info["base_dtype"] == "float32"
    qdir = tmp_path / "q4"
    shutil.copytree(tiny_model_dir, qdir)
    model, _ = mlx_lm.load(str(tiny_model_dir))
    nn.quantize(model, group_size=32, bits=4, class_predicate=lambda p, m: isinstance(m, nn.Linear) and ".layers." in p)
    mx.save_safetensors(str(qdir / "model.safetensors"), dict(tree_flatten(model.parameters())))
    cfg = json.loads((qdir / "config.json").read_text())
    (qdir / "config.json").write_text(json.dumps({**cfg, "quantization": {"group_size": 32, "bits": 4}}))
    _, _, info = load_model(str(qdir), dequantize=True)
    assert info["base_dtype"] == "float32"
    half, _, info = load_model(str(qdir), dequantize=True, base_dtype="auto")
    assert info["base_dtype"] == "float16" and info["dequantized_layers"] == 2 * 7
    q = dict(model.named_modules())
    for p, m in half.named_modules():
        if isinstance(m, HalfStoredLinear):
            w = mx.dequantize(q[p].weight, q[p].scales, q[p].biases, 32, 4)
            assert m.weight.dtype == mx.float16 and mx.array_equal(m.weight, _stored_f16(w)).item(), p
    ref, _ = mlx_lm.load(str(tiny_model_dir))
    ref.update(tree_unflatten([(k, v.astype(mx.float32)) for k, v in tree_flatten(half.parameters())]))
    x = mx.array([[3, 17, 200, 5, 64, 9]], mx.int32)
    np.testing.assert_allclose(np.array(half(x)), np.array(ref(x)), rtol=1e-5, atol=1e-5)



@pytest.mark.slow
def test_default_model_trains_on_a_float16_stored_base():
    """SmolLM2-135M Q4 as `notme train` loads it: 210 half-stored block matrices (202 MiB instead
    of 405), and the trainer's loss and LoRA gradients on a real batch close to the float32 base's
    (the only difference is the weights' rounding to float16)."""
    half, tok, info = load_model("smollm2-135m", dequantize=True, base_dtype="auto")
    full, _, _ = load_model("smollm2-135m", dequantize=True)
    assert info["base_dtype"] == "float16"
    blocks = [m for _, m in half.named_modules() if isinstance(m, HalfStoredLinear)]
    assert len(blocks) == 30 * 7 and sum(m.weight.nbytes for m in blocks) == 106_168_320 * 2
    ids = tok.encode("Does that make sense? I hope this helps! The parser is fixed, run the tests again.")
    T = len(ids) - 1
    labels = np.array([0] * (T // 2) + [1] * (T - T // 2 - 3) + [2] * 3)[None]
    batch = {"inputs": mx.array([ids[:-1]], mx.int32), "targets": mx.array([ids[1:]], mx.int32),
             "labels": mx.array(labels, mx.int32)}
    out = []
    for m in (half, full):
        mx.random.seed(0)
        apply_lora(m, LoRAConfig(rank=8, alpha=16.0))
        perturb_adapters(m, seed=2)
        out.append(nn.value_and_grad(m, lambda mm: default_loss(mm, batch, int((labels == 1).sum()), 3)[0])(m))
    (l16, g16), (l32, g32) = out
    assert l16.item() == pytest.approx(l32.item(), rel=5e-4)  # measured 5e-5 (bfloat16 storage: 5.6e-4)
    a, b = dict(tree_flatten(g16)), dict(tree_flatten(g32))
    rel = max(float(mx.linalg.norm(a[k] - b[k]) / mx.maximum(mx.linalg.norm(b[k]), 1e-12)) for k in b)
    assert rel < 1e-2  # measured 3.6e-3 (bfloat16 storage: 1.9e-2)
