"""TEMPORARY stand-ins for sibling modules that have not landed yet.

Each function here is replaced by the real one (notme_mlx.data.labels,
notme_mlx.train.forward, notme_mlx.lora, notme_mlx.models) as soon as it
exists; `resolve()` picks the real module when importable. Delete this file
when all of them are in.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import mlx.core as mx


# ---------------------------------------------------------------- labels (BRIEF §6)
def tokenize_example(tokenizer, example: dict, max_seq_len: int):
    """Chat -> tokens + per-token labels (+1 learn, 0 context, -1 penalize), left-trimmed."""
    msgs = example["messages"]
    chat = [{"role": m["role"], "content": m["content"]} for m in msgs]
    text = tokenizer.apply_chat_template(chat, tokenize=False)
    hf = getattr(tokenizer, "_tokenizer", tokenizer)
    enc = hf(text, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = enc["input_ids"], enc["offset_mapping"]
    char_label = [0] * (len(text) + 1)
    pos = 0
    for i, m in enumerate(msgs):
        prefix = tokenizer.apply_chat_template(chat[: i + 1], tokenize=False)
        seg_start = text.find(m["content"], pos) if m["content"] else -1
        seg_end = len(prefix)
        if seg_start >= 0 and m["role"] == "assistant":
            train = m.get("train", True)
            lab = 1 if train is True else (-1 if train == "penalize" else 0)
            for c in range(seg_start, seg_end):  # content + end-of-turn marker
                char_label[c] = lab
            for s, e, kind in m.get("spans", []) or []:
                for c in range(seg_start + s, min(seg_start + e, seg_end)):
                    char_label[c] = -1 if kind == "penalize" else 0
        pos = seg_end
    labels = [char_label[s] if e > s else 0 for s, e in offsets]
    if len(ids) > max_seq_len:
        ids, labels = ids[-max_seq_len:], labels[-max_seq_len:]
    labels[0] = 0
    return SimpleNamespace(tokens=list(ids), labels=list(labels))


# ---------------------------------------------------------------- forward (BRIEF §7)
def hidden_states(model, inputs, mask=None, checkpoint=False, layers=None):
    """Final-norm hidden states [B, T, H]; `mask` bool [B, 1, T, T] (True = attend) or None (causal)."""
    inner = model.model
    h = inner.embed_tokens(inputs)
    m = "causal" if mask is None else mask
    for layer in inner.layers:
        if checkpoint:
            h = mx.checkpoint(lambda x, lay=layer: lay(x, m))(h)
        else:
            h = layer(h, m)
    return inner.norm(h)


# ---------------------------------------------------------------- LoRA (BRIEF §9)
def apply_lora(model, config, name="default", trainable=True) -> int:
    from mlx.utils import tree_flatten
    from mlx_lm.tuner.utils import linear_to_lora_layers

    model.freeze()
    n = config.num_layers or len(model.model.layers)
    linear_to_lora_layers(model, n, {"rank": config.rank, "scale": config.alpha / config.rank,
                                     "dropout": config.dropout, "keys": [_key(k) for k in config.targets]})
    return sum(v.size for _, v in tree_flatten(model.trainable_parameters()))


def _key(name: str) -> str:
    return ("self_attn." if name.endswith(("q_proj", "k_proj", "v_proj", "o_proj")) else "mlp.") + name


def trainable_parameters(model) -> dict:
    from mlx.utils import tree_flatten

    return dict(tree_flatten(model.trainable_parameters()))


def save_adapter(model, name, out_dir, config, extra_meta=None):
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    mx.save_safetensors(str(out / "adapters.safetensors"), trainable_parameters(model))
    cfg = {"fine_tune_type": "lora", "num_layers": config.num_layers or len(model.model.layers),
           "lora_parameters": {"rank": config.rank, "scale": config.alpha / config.rank,
                               "dropout": config.dropout, "keys": [_key(k) for k in config.targets]},
           "notme": dict(extra_meta or {})}
    (out / "adapter_config.json").write_text(json.dumps(cfg, indent=2))
    return out


# ---------------------------------------------------------------- models (BRIEF §2)
def load_model(spec, dequantize=None):
    from mlx_lm import load

    model, tok = load(str(spec))
    return model, tok, {"path": str(spec), "architecture": getattr(model.args, "model_type", "?")}


# ---------------------------------------------------------------- pick the real module when present
def pick(module: str, attr: str):
    """`module.attr` when that sibling module has landed, else the stand-in above."""
    import importlib

    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError):
        return globals()[attr]
