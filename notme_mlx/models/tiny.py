"""Tiny random models of every supported family and a tiny BPE tokenizer, built locally (no network).

The models are mlx-lm's own classes (`mlx_lm.models.<module>.Model(ModelArgs)`)
with 2 layers and 64 dims; `TINY_CONFIGS` holds each family's config quirks
(Gemma soft-caps, sliding windows, Qwen 3 q/k norms, Phi-3 fused projections).
Used by tests, benchmarks and `notme cluster selftest`. The tokenizer is a
byte-level BPE trained with the `tokenizers` library on generated chat-like
text, with ChatML special tokens and the SmolLM2 chat template, so the same
code paths run as for the real default model.
"""

from __future__ import annotations

import importlib
import json
import random
from pathlib import Path

import mlx.core as mx
from mlx.utils import tree_flatten, tree_unflatten
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from ..lora import lora_modules
from .families import family_of

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

WORDS = (
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
        words = [rng.choice(WORDS) for _ in range(k)]
        s = " ".join(words).capitalize() + rng.choice([".", "?", "!", "...", " :)", "\n"])
        yield s
    yield "Does that make sense? I hope this helps! Should I go ahead? Great question!"
    yield "0123456789 ,.;:'\"!?()[]{}<>/\\|@#$%^&*-_=+~` \t\n émoji 🙂 naïve “curly” ‘quotes’"


def build_tiny_tokenizer(out_dir: str | Path, vocab_size: int = 512, seed: int = 0):
    """Train a byte-level BPE of `vocab_size` and save it HF-style into `out_dir`.

    Returns the `transformers.PreTrainedTokenizerFast`.
    """
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


GEMMA_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{% set role = 'model' if message['role'] == 'assistant' else message['role'] %}"
    "{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}"
)
SPM_SPECIAL_TOKENS = ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>"]


def build_tiny_spm_tokenizer(out_dir: str | Path, vocab_size: int = 512, seed: int = 0):
    """A SentencePiece-style vocabulary in tokenizer.json form, as Gemma ships it: BPE pieces with ▁ for
    spaces (no dummy prefix), the 256 `<0xXX>` byte-fallback tokens, Gemma's special tokens and turn
    template. Saved HF-style into `out_dir`; returns the `PreTrainedTokenizerFast`."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    meta = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="never", split=True)
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.Replace(" ", "\u2581")
    tok.pre_tokenizer = meta
    trainer = trainers.BpeTrainer(vocab_size=vocab_size - 256, special_tokens=SPM_SPECIAL_TOKENS,
                                  show_progress=False)
    tok.train_from_iterator(_corpus(seed=seed), trainer=trainer)
    trained = json.loads(tok.to_str())["model"]
    pieces = sorted(trained["vocab"].items(), key=lambda kv: kv[1])
    vocab = {t: i for i, t in enumerate(SPM_SPECIAL_TOKENS)}
    for b in range(256):
        vocab[f"<0x{b:02X}>"] = len(vocab)
    for t, _ in pieces:
        if t not in vocab:
            vocab[t] = len(vocab)
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ", 1)) for m in trained["merges"]]
    spm = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    spm.normalizer = normalizers.Replace(" ", "\u2581")
    spm.pre_tokenizer = meta
    spm.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse()])
    spm.add_special_tokens(SPM_SPECIAL_TOKENS)
    fast = PreTrainedTokenizerFast(tokenizer_object=spm, bos_token="<bos>", eos_token="<eos>",
                                   unk_token="<unk>", pad_token="<pad>")
    fast.chat_template = GEMMA_TEMPLATE
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


# Per family: config.json overrides on top of the llama base config (model_type first).
# Gemma's attention scale is query_pre_attn_scalar**-0.5 with query_pre_attn_scalar = head_dim,
# which is what llama.cpp derives for every Gemma size but 27B. Soft-caps and windows are small
# so that they change the numbers of a tiny model.
TINY_CONFIGS = {
    "llama": {},
    "mistral": {"model_type": "mistral", "architectures": ["MistralForCausalLM"], "tie_word_embeddings": False},
    "qwen2": {"model_type": "qwen2", "architectures": ["Qwen2ForCausalLM"], "rope_theta": 1000000.0},
    "qwen3": {"model_type": "qwen3", "architectures": ["Qwen3ForCausalLM"], "head_dim": 16,
              "rope_theta": 1000000.0},
    "gemma": {"model_type": "gemma", "architectures": ["GemmaForCausalLM"], "head_dim": 16},
    "gemma2": {"model_type": "gemma2", "architectures": ["Gemma2ForCausalLM"], "head_dim": 16,
               "query_pre_attn_scalar": 16, "attn_logit_softcapping": 5.0, "final_logit_softcapping": 3.0},
    "gemma3": {"model_type": "gemma3_text", "architectures": ["Gemma3ForCausalLM"], "head_dim": 16,
               "query_pre_attn_scalar": 16, "sliding_window": 8, "sliding_window_pattern": 2,
               "rope_theta": 1000000.0, "rope_local_base_freq": 10000.0},
    "phi3": {"model_type": "phi3", "architectures": ["Phi3ForCausalLM"], "tie_word_embeddings": False,
             "original_max_position_embeddings": 512},
    "smollm3": {"model_type": "smollm3", "architectures": ["SmolLM3ForCausalLM"], "no_rope_layer_interval": 4},
}


def tiny_config(family: str, vocab_size: int, **overrides) -> dict:
    """config.json of a 2-layer, 64-dim model of `family` (a `families.FAMILIES` name)."""
    if family not in TINY_CONFIGS:
        raise ValueError(f"no tiny config for family {family!r} (have: {', '.join(TINY_CONFIGS)})")
    return tiny_llama_config(vocab_size, **{**TINY_CONFIGS[family], **overrides})


def build_tiny_family_model(family: str, vocab_size: int = 512, seed: int = 0, **config_overrides):
    """(model, config) in memory: mlx-lm's own Model class for `family`, random weights.

    Norm weights and biases are perturbed away from their constant init so that
    offsets such as Gemma's (1 + w) matter in comparisons.
    """
    cfg = tiny_config(family, vocab_size, **config_overrides)
    fam = family_of(cfg["model_type"])
    module = importlib.import_module(f"mlx_lm.models.{fam.mlx_module}")
    mx.random.seed(seed)
    model = module.Model(module.ModelArgs.from_dict(cfg))
    if fam.name == "gemma3" and cfg.get("tie_word_embeddings", True):
        model.sanitize({})  # tied: mlx-lm drops lm_head when the weights have none
    flat = dict(tree_flatten(model.parameters()))
    bump = {k: v + 0.1 * mx.random.normal(v.shape) for k, v in flat.items() if v.ndim == 1}
    model.update(tree_unflatten(list(bump.items())))
    mx.eval(model.parameters())
    return model, cfg


def build_tiny_model(out_dir: str | Path, family: str = "llama", vocab_size: int = 512, seed: int = 0,
                     tokenizer: str | None = None, **config_overrides) -> Path:
    """Write a random tiny model of `family` + the tiny tokenizer as an mlx-lm directory.

    Args:
      out_dir: destination directory (created).
      family: a `families.FAMILIES` name (llama, mistral, qwen2, qwen3, gemma, gemma2, gemma3, phi3).
      vocab_size: tokenizer and embedding size (≤ 1024 for unit tests).
      seed: seeds both the tokenizer corpus and the weights.
      tokenizer: "bpe" (byte-level, ChatML) or "spm" (SentencePiece-style, Gemma turns);
        default: "spm" for the Gemma families, else "bpe".
      config_overrides: e.g. num_hidden_layers=4, hidden_size=128, tie_word_embeddings=False.
    Returns:
      the directory, loadable with `mlx_lm.load` and `notme_mlx.models.load_model`.
    """
    out_dir = Path(out_dir)
    kind = tokenizer or ("spm" if family.startswith("gemma") else "bpe")
    build = {"bpe": build_tiny_tokenizer, "spm": build_tiny_spm_tokenizer}[kind]
    tok = build(out_dir, vocab_size=vocab_size, seed=seed)
    overrides = dict(config_overrides)
    overrides.setdefault("bos_token_id", tok.bos_token_id)
    overrides.setdefault("eos_token_id", tok.eos_token_id)
    model, cfg = build_tiny_family_model(family, len(tok), seed=seed, **overrides)
    params = dict(tree_flatten(model.parameters()))
    mx.save_safetensors(str(out_dir / "model.safetensors"), params, metadata={"format": "mlx"})
    (out_dir / "config.json").write_text(json.dumps(cfg, indent=2))
    return out_dir


def build_tiny_llama(out_dir: str | Path, vocab_size: int = 512, seed: int = 0, **config_overrides) -> Path:
    """A random tiny llama + tokenizer as an mlx-lm directory (`build_tiny_model` for llama)."""
    return build_tiny_model(out_dir, "llama", vocab_size, seed, **config_overrides)


def perturb_adapters(model, names=None, scale: float = 0.05, seed: int = 0) -> None:
    """Give LoRA adapters a random non-zero B (fresh adapters are the identity), as after training.

    For tests and benchmarks. names: adapter names to touch (None = all).
    """
    mx.random.seed(seed)
    for _, m in lora_modules(model):
        for n, a in m.adapters.items():
            if names is None or n in names:
                a.lora_b = mx.random.normal(a.lora_b.shape) * scale
