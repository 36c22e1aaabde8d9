"""Shared fixtures: tiny random llama models and a tiny tokenizer (no network)."""

from __future__ import annotations

import pytest

import notme_mlx  # noqa: F401  (first: loads the fast CPU BLAS before mlx.core)
from notme_mlx.models.tiny import build_tiny_llama


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
