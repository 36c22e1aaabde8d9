"""QLoRA on the CPU: the quantized base as a dequantize-on-the-fly BLAS GEMM, equal to MLX's quantized matmul."""

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest

from notme_mlx.lora import MultiLoRALinear, dequantized_matmul


@pytest.mark.parametrize("bits,group_size,bias", [(4, 32, False), (8, 64, True)])
def test_dequantized_matmul_equals_quantized_layer(bits, group_size, bias):
    mx.random.seed(0)
    q = nn.QuantizedLinear.from_linear(nn.Linear(128, 96, bias=bias), group_size=group_size, bits=bits)
    x = mx.random.normal((2, 7, 128))
    np.testing.assert_allclose(np.array(dequantized_matmul(x, q)), np.array(q(x)), rtol=1e-5, atol=1e-5)
    g_ref = mx.grad(lambda v: (q(v) ** 2).sum())(x)
    g = mx.grad(lambda v: (dequantized_matmul(v, q) ** 2).sum())(x)
    np.testing.assert_allclose(np.array(g), np.array(g_ref), rtol=1e-4, atol=1e-4)


def test_multilora_on_quantized_base_grads_match_quantized_matmul():
    """LoRA grads through the CPU path equal those through MLX's quantized matmul (compiled too)."""
    mx.random.seed(1)
    q = nn.QuantizedLinear.from_linear(nn.Linear(64, 64, bias=False), group_size=32, bits=4)
    layer = MultiLoRALinear(q)
    a = layer.add("default", rank=4, scale=2.0)
    a.lora_b = mx.random.normal(a.lora_b.shape) * 0.1
    x = mx.random.normal((3, 5, 64))

    def loss_cpu_path(v):
        return (layer(v) ** 2).mean()

    def loss_reference(v):  # the quantized layer itself, plus the same adapter
        return ((layer.base(v) + layer.adapters["default"](v)) ** 2).mean()

    assert mx.default_device() == mx.cpu  # the path under test is the CPU one
    l1, g1 = nn.value_and_grad(layer, loss_cpu_path)(x)
    l0, g0 = nn.value_and_grad(layer, loss_reference)(x)
    lc, gc = mx.compile(nn.value_and_grad(layer, loss_cpu_path), inputs=layer.state)(x)
    assert l1.item() == pytest.approx(l0.item(), rel=1e-5) and lc.item() == pytest.approx(l0.item(), rel=1e-5)
    for g in (g1, gc):
        for k in ("lora_a", "lora_b"):
            np.testing.assert_allclose(np.array(g["adapters"]["default"][k]), np.array(g0["adapters"]["default"][k]),
                                       rtol=1e-4, atol=1e-5)


def _q4(d):
    return nn.QuantizedLinear.from_linear(nn.Linear(d, d, bias=False), group_size=32, bits=4)


@pytest.mark.parametrize("compiled", [True, False])
def test_dense_weights_do_not_accumulate_over_layers(compiled, lora_stack_extra_peak):
    """The dense copies are temporaries: going from 4 to 16 layers adds less than 3 layers' dense
    weights to the peak (a path whose forward dequantizations outlive their GEMM, e.g. merged by
    `mx.compile` with the backward ones, adds all 12)."""
    d = 512
    grow = lora_stack_extra_peak(_q4, 16, d, compiled) - lora_stack_extra_peak(_q4, 4, d, compiled)
    assert grow < 3 * d * d * 4
