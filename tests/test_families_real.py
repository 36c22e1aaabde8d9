"""The gemma3 family on the real Gemma 3 270M base model (registry `gemma3-270m`, fetched from
PyPI once): our forward + fused loss equal mlx-lm's, and (with the [verify] extra) its GGUF export
runs in llama.cpp with MLX's next-token distribution and the original file's tokenization."""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest

from notme_mlx.export import verify_llama_cpp
from notme_mlx.export.gguf_export import write_gguf
from notme_mlx.loss import fused_token_loss, output_head
from notme_mlx.models import load_model
from notme_mlx.models.tiny import _corpus
from notme_mlx.train.forward import hidden_states

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def gemma3():
    return load_model("gemma3-270m", dequantize=True)


def test_gemma3_270m_forward_and_loss_equal_mlx_lm(gemma3):
    model, tok, info = gemma3
    assert info["family"] == "gemma3"
    ids = tok.encode("The capital of France is Paris, and the capital of Italy is Rome.")
    x = mx.array([ids])
    ref = model(x)[0]
    h = hidden_states(model, x)[0]
    ours = h @ output_head(model).T
    np.testing.assert_allclose(np.array(ours), np.array(ref), rtol=1e-4, atol=1e-4 * float(mx.abs(ref).max()))
    ce_ref = nn.losses.cross_entropy(ref[:-1], x[0, 1:]).mean()
    loss, _ = fused_token_loss(h[:-1], output_head(model), x[0, 1:], mx.ones((len(ids) - 1,), mx.int32),
                               penalty_weight=0.0)
    # float32 over a 262k vocabulary: the chunked logsumexp and mlx-lm's full one agree to ~1e-4 relative
    assert abs(loss.item() - ce_ref.item()) < 5e-4 * ce_ref.item()


@pytest.fixture(scope="module")
def exported(gemma3, tmp_path_factory):
    pytest.importorskip("llama_cpp", reason="install the [verify] extra: pip install -e '.[verify]'")
    model, tok, _ = gemma3
    path = tmp_path_factory.mktemp("g3") / "gemma3-270m.f16.gguf"
    write_gguf(path, model, tok, quant="f16")
    return path


def test_gemma3_270m_gguf_tokenizes_like_the_original_gguf(gemma3, exported):
    """Our SentencePiece vocabulary (scores from merge ranks) tokenizes as the original file does."""
    from llama_cpp import Llama

    _, tok, info = gemma3
    ours = Llama(model_path=str(exported), vocab_only=True, verbose=False)
    orig = Llama(model_path=str(info["path"] + "/source.gguf"), vocab_only=True, verbose=False)
    texts = list(_corpus(n_lines=300, seed=7)) + [
        "Grüße aus München! Ça va? ¿Qué tal? 日本語のテキスト。 Привет, мир. 🙂🚀 x=1; y = x**2\n\tdone"]
    for t in texts:
        assert ours.tokenize(t.encode(), add_bos=False) == orig.tokenize(t.encode(), add_bos=False), t


def test_gemma3_270m_gguf_logits_agree_with_mlx_in_llama_cpp(gemma3, exported):
    model, tok, _ = gemma3
    res = verify_llama_cpp(model, tok, exported, n_tokens=8)
    print(res)
    assert res["position_top1_agreement"] >= 0.95, res
    assert res["kl_mean"] < 5e-3, res
