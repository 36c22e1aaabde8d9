"""Benchmark inputs: a chat-like synthetic dataset and a cached random llama.

The synthetic chats follow the shape of real messaging data: most turns are a few
words, a lognormal tail reaches hundreds; conversations have 1-8 exchanges; ~10% of
the assistant (target) tokens are validation-seeking cue sentences marked `penalize`.
Everything is a pure function of the seed.
"""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

import mlx.core as mx
import numpy as np
from mlx.utils import tree_flatten
from mlx_lm.models import llama

from ..data.labels import TokenizedExample, tokenize_example
from ..io import atomic_dir, notme_home
from ..models.tiny import WORDS, build_tiny_tokenizer, tiny_llama_config

CUES = ["Does that make sense?", "I hope this helps!", "Should I go ahead?", "Great question!",
        "Let me know if that works for you.", "Would you like me to continue?"]

# Architecture presets sized for a 2-core CPU running MLX's reference BLAS (~6 GFLOP/s).
PRESETS = {
    "bench-s": dict(vocab_size=8192, hidden_size=256, num_hidden_layers=4, intermediate_size=704,
                    num_attention_heads=4, num_key_value_heads=2),   # ~6.3M params (2.1M embeddings)
    "bench-xs": dict(vocab_size=4096, hidden_size=128, num_hidden_layers=2, intermediate_size=352,
                     num_attention_heads=4, num_key_value_heads=2),  # ~0.9M params, for --quick/tests
    # SmolLM2-135M's architecture (the registry default's config.json) with random float32
    # weights: the default model's step cost where its checkpoint cannot travel (an accelerator box).
    "smollm2-135m-arch": dict(vocab_size=49152, hidden_size=576, num_hidden_layers=30,
                              intermediate_size=1536, num_attention_heads=9, num_key_value_heads=3,
                              rms_norm_eps=1e-5, rope_theta=100000.0, rope_traditional=True,
                              max_position_embeddings=8192),
}


def _n_words(rng: random.Random, mu: float, sigma: float, cap: int) -> int:
    return max(1, min(cap, int(rng.lognormvariate(mu, sigma))))


def _sentence(rng: random.Random, n: int) -> str:
    words = [rng.choice(WORDS) for _ in range(n)]
    return " ".join(words).capitalize() + rng.choice([".", "?", "!", ""])


def synthetic_chats(n: int, seed: int = 0, penalize_prob: float = 0.25, mu: float = 2.0, sigma: float = 1.0,
                    cap_words: int = 300) -> list[dict]:
    """`n` chat examples (the `notme data build` train.jsonl format) with a chat-like length distribution.

    Args:
        n: number of examples; seed: the only source of randomness.
        penalize_prob: chance that an assistant turn ends with a cue sentence marked as a
            `penalize` span (0.25 gives ~10% of target tokens penalized).
        mu, sigma: lognormal words per turn (median e^mu ≈ 7 words, long tail), capped.
    Returns:
        [{"messages": [{"role", "content", "train", "spans"}], "meta": {"synthetic": seed}}].
    """
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        msgs = []
        if rng.random() < 0.2:
            msgs.append({"role": "system", "content": "You are me.", "train": False})
        for _ in range(min(8, 1 + int(rng.expovariate(0.6)))):
            msgs.append({"role": "user", "content": _sentence(rng, _n_words(rng, mu, sigma, cap_words)),
                         "train": False})
            text = _sentence(rng, _n_words(rng, mu, sigma, cap_words))
            spans = []
            if rng.random() < penalize_prob:
                cue = rng.choice(CUES)
                spans.append([len(text) + 1, len(text) + 1 + len(cue), "penalize"])
                text = f"{text} {cue}"
            msgs.append({"role": "assistant", "content": text, "train": True, "spans": spans})
        out.append({"messages": msgs, "meta": {"synthetic": seed}})
    return out


def equal_length_examples(n: int, length: int, vocab: int, seed: int = 0):
    """`n` rows of exactly `length` random tokens, every target learned (labels +1 after the first).

    Returns [TokenizedExample]; where batching cannot help, only the core step is compared.
    """
    rng = np.random.default_rng(seed)
    return [TokenizedExample(tokens=rng.integers(3, vocab, length).tolist(), labels=[0] + [1] * (length - 1))
            for _ in range(n)]


def tokenize(tokenizer, chats: list[dict], max_seq_len: int) -> list:
    """Chats -> [TokenizedExample] with the trainer's labelling (examples < 2 tokens dropped)."""
    out = [tokenize_example(tokenizer, c, max_seq_len) for c in chats]
    return [t for t in out if len(t.tokens) >= 2]


def label_stats(examples) -> dict:
    """Independent counts over target positions (labels[1:]): learn, penalize, context, tokens."""
    learn = pen = ctx = 0
    for e in examples:
        for v in e.labels[1:]:
            learn, pen, ctx = learn + (v == 1), pen + (v == -1), ctx + (v == 0)
    tok = learn + pen + ctx
    return {"examples": len(examples), "tokens": tok, "learn": learn, "penalize": pen, "context": ctx,
            "penalize_share_of_supervised": pen / max(learn + pen, 1),
            "mean_len": tok / max(len(examples), 1)}


def model_dir(preset: str | dict = "bench-s", seed: int = 0, root: str | Path | None = None) -> Path:
    """A random llama (mlx-lm dir) for `preset`, built once and cached under $NOTME_HOME/bench/.

    The tokenizer is the tiny BPE of `notme_mlx.models.tiny`; the embedding has the preset's
    vocab_size (rows beyond the tokenizer are never hit, as in real models' padded vocabularies).
    """
    cfg = dict(PRESETS[preset]) if isinstance(preset, str) else dict(preset)
    key = hashlib.sha256(json.dumps([cfg, seed], sort_keys=True).encode()).hexdigest()[:12]
    out = Path(root or notme_home() / "bench" / "models") / f"llama-{key}"
    if (out / "model.safetensors").exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    vocab = cfg.pop("vocab_size")
    with atomic_dir(out, force=True) as tmp:
        tok = build_tiny_tokenizer(tmp, vocab_size=min(vocab, 1024), seed=seed)
        full = tiny_llama_config(max(vocab, len(tok)), **cfg)
        full["bos_token_id"] = tok.convert_tokens_to_ids("<|im_start|>")
        full["eos_token_id"] = tok.convert_tokens_to_ids("<|im_end|>")
        mx.random.seed(seed)
        model = llama.Model(llama.ModelArgs.from_dict(full))
        params = dict(tree_flatten(model.parameters()))
        mx.eval(params)
        mx.save_safetensors(str(Path(tmp) / "model.safetensors"), params, metadata={"format": "mlx"})
        (Path(tmp) / "config.json").write_text(json.dumps(full, indent=2))
    return out
