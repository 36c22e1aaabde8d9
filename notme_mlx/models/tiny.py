"""Tiny random llama models and a tiny BPE tokenizer, built locally (no network).

Used by tests, benchmarks and `notme cluster selftest`. The tokenizer is a
byte-level BPE trained with the `tokenizers` library on generated chat-like
text, with ChatML special tokens and the SmolLM2 chat template, so the same
code paths run as for the real default model.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant.<|im_end|>\n' }}"
    "{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

_WORDS = (
    "the a to of and in is it you that for on with this be are have i we was not but what "
    "can do will so if my your me just about how they all there get like one time would "
    "should could does make sense right great question hope helps let know think want "
    "go ahead okay sure maybe might possibly worth noting absolutely fascinating idea "
    "file code test run train model data python error fix bug parser flight mushroom "
    "tomorrow meeting lunch coffee yes no thanks sorry can't help with that which when where"
).split()


def _corpus(n_lines: int = 3000, seed: int = 0):
    rng = random.Random(seed)
    for _ in range(n_lines):
        k = rng.randint(3, 16)
        words = [rng.choice(_WORDS) for _ in range(k)]
        s = " ".join(words).capitalize() + rng.choice([".", "?", "!", "...", " :)", "\n"])
        yield s
    yield "Does that make sense? I hope this helps! Should I go ahead? Great question!"
    yield "0123456789 ,.;:'\"!?()[]{}<>/\\|@#$%^&*-_=+~` \t\n émoji 🙂 naïve “curly” ‘quotes’"


def build_tiny_tokenizer(out_dir: str | Path, vocab_size: int = 512, seed: int = 0):
    """Train a byte-level BPE of `vocab_size` and save it HF-style into `out_dir`.

    Returns the `transformers.PreTrainedTokenizerFast`.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(seed=seed), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        unk_token="<|endoftext|>",
        pad_token="<|endoftext|>",
    )
    fast.chat_template = CHATML_TEMPLATE
    fast.save_pretrained(str(out_dir))
    return fast


def tiny_llama_config(vocab_size: int, **overrides) -> dict:
    cfg = {
        "model_type": "llama",
        "architectures": ["LlamaForCausalLM"],
        "hidden_size": 64,
        "num_hidden_layers": 2,
        "intermediate_size": 128,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "rms_norm_eps": 1e-5,
        "vocab_size": vocab_size,
        "max_position_embeddings": 512,
        "rope_theta": 10000.0,
        "rope_traditional": False,
        "tie_word_embeddings": True,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "torch_dtype": "float32",
    }
    cfg.update(overrides)
    return cfg


def build_tiny_llama(out_dir: str | Path, vocab_size: int = 512, seed: int = 0, **config_overrides) -> Path:
    """Write a random tiny llama + tokenizer as an mlx-lm directory.

    Args:
      out_dir: destination directory (created).
      vocab_size: tokenizer and embedding size (≤ 1024 for unit tests).
      seed: seeds both the tokenizer corpus and the weights.
      config_overrides: e.g. num_hidden_layers=4, hidden_size=128, tie_word_embeddings=False.
    Returns:
      the directory, loadable with `mlx_lm.load` and `notme_mlx.models.load_model`.
    """
    import mlx.core as mx
    from mlx.utils import tree_flatten
    from mlx_lm.models import llama

    out_dir = Path(out_dir)
    tok = build_tiny_tokenizer(out_dir, vocab_size=vocab_size, seed=seed)
    vocab = len(tok)
    cfg = tiny_llama_config(vocab, **config_overrides)
    cfg["bos_token_id"] = tok.convert_tokens_to_ids("<|im_start|>")
    cfg["eos_token_id"] = tok.convert_tokens_to_ids("<|im_end|>")
    mx.random.seed(seed)
    model = llama.Model(llama.ModelArgs.from_dict(cfg))
    # Scale up the init a little so logits are not uniform (more realistic tests).
    params = dict(tree_flatten(model.parameters()))
    mx.eval(params)
    mx.save_safetensors(str(out_dir / "model.safetensors"), params, metadata={"format": "mlx"})
    (out_dir / "config.json").write_text(json.dumps(cfg, indent=2))
    return out_dir


def perturb_adapters(model, names=None, scale: float = 0.05, seed: int = 0) -> None:
    """Give LoRA adapters a random non-zero B (fresh adapters are the identity), as after training.

    For tests and benchmarks. names: adapter names to touch (None = all).
    """
    import mlx.core as mx

    from ..lora import lora_modules

    mx.random.seed(seed)
    for _, m in lora_modules(model):
        for n, a in m.adapters.items():
            if names is None or n in names:
                a.lora_b = mx.random.normal(a.lora_b.shape) * scale
