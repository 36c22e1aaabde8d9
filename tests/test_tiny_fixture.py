"""The tiny fixture model is a real mlx-lm model: loadable, deterministic, templated."""

import mlx.core as mx
import numpy as np

from notme_mlx.models.tiny import build_tiny_llama


def test_tiny_model_loads_and_is_deterministic(tiny_model_dir, tmp_path):
    from mlx_lm import load

    model, tok = load(str(tiny_model_dir))
    ids = tok.encode("Does that make sense?")
    assert tok.decode(ids) == "Does that make sense?"
    logits = model(mx.array([ids]))
    assert logits.shape == (1, len(ids), len(tok.vocab))
    # Same seed -> byte-identical weights.
    again = build_tiny_llama(tmp_path / "again", vocab_size=512, seed=0)
    w1 = mx.load(str(tiny_model_dir / "model.safetensors"))
    w2 = mx.load(str(again / "model.safetensors"))
    assert set(w1) == set(w2)
    for k in w1:
        np.testing.assert_array_equal(np.array(w1[k]), np.array(w2[k]))


def test_tiny_chat_template_is_chatml(tiny_model):
    _, tok = tiny_model
    text = tok.apply_chat_template(
        [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}], tokenize=False
    )
    assert text == (
        "<|im_start|>system\nYou are a helpful AI assistant.<|im_end|>\n"
        "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\nyo<|im_end|>\n"
    )
