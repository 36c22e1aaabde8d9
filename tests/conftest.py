"""Shared fixtures: tiny random llama models and a tiny tokenizer (no network)."""

from __future__ import annotations

import pytest

import notme_mlx  # noqa: F401  (first: loads the fast CPU BLAS before mlx.core)
import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten

from notme_mlx.lora import MultiLoRALinear
from notme_mlx.models.tiny import build_tiny_llama


def _lora_stack_extra_peak(make, n: int, d: int, compiled: bool = True) -> int:
    """Peak memory of a value-and-grad through n LoRA-wrapped layers `make(d)`, minus the parameters."""
    mx.random.seed(2)
    net = nn.Sequential(*[MultiLoRALinear(make(d)) for _ in range(n)])
    for m in net.layers:
        m.add("default", rank=4, scale=2.0)
    mx.eval(net.parameters())
    x = mx.random.normal((16, d))
    vg = nn.value_and_grad(net, lambda model, v: (model(v) ** 2).mean())
    step = mx.compile(lambda v: vg(net, v)) if compiled else (lambda v: vg(net, v))
    mx.eval(step(x))
    mx.synchronize()
    mx.clear_cache()
    mx.reset_peak_memory()
    mx.eval(step(x))
    return mx.get_peak_memory() - sum(v.nbytes for _, v in tree_flatten(net.parameters()))


@pytest.fixture
def lora_stack_extra_peak():
    """`f(make, n, d, compiled=True)`: extra peak memory of training n LoRA layers on `make(d)` bases."""
    return _lora_stack_extra_peak


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A 2-layer, 64-dim random llama with tied embeddings and a 512-token BPE (mlx-lm layout)."""
    return build_tiny_llama(tmp_path_factory.mktemp("tiny_llama"), vocab_size=512, seed=0)


@pytest.fixture(scope="session")
def tiny_model_untied_dir(tmp_path_factory):
    """Same as tiny_model_dir but with a separate lm_head and 4 layers."""
    return build_tiny_llama(
        tmp_path_factory.mktemp("tiny_llama_untied"), vocab_size=512, seed=1,
        num_hidden_layers=4, tie_word_embeddings=False,
    )


@pytest.fixture(scope="session")
def tiny_model(tiny_model_dir):
    """(model, tokenizer) loaded through mlx_lm.load."""
    from mlx_lm import load

    return load(str(tiny_model_dir))
