"""Model-side pieces of the eval: loading a target, batched generation, teacher-forced scoring.

Generation uses mlx-lm's `batch_generate` (one batched decode for a whole prompt set)
and falls back to `generate` one prompt at a time. Scoring runs the model on
right-padded batches and sums log-probabilities of chosen continuation tokens.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import mlx.core as mx
import numpy as np
from mlx_lm import generate
from mlx_lm.generate import batch_generate
from mlx_lm.sample_utils import make_sampler

from ..errors import InputError, NotmeError
from ..lora import load_adapter, read_adapter_config
from ..models import load_model
from ..models.frame import describe_frame, frame_for, use_recorded_frame
from ..models.generate import chat_prompt
from ..stack.compose import load_stack_into
from ..stack.manifest import load_stack

MAX_SCORE_LEN = 512


def load_target(model_spec: str | None = None, adapters: str | Path | None = None, stack: str | Path | None = None,
                force: bool = False, data_dir=None, frame_adapters=None):
    """Load a model to evaluate: `model_spec` alone, plus an adapter dir, or a stack.

    A base model's plain-text frame takes the names `data_dir`'s build report or the adapter
    recorded (`frame_adapters`, default `adapters`: a baseline is asked in its adapter's frame).
    Returns (model, tokenizer, meta) with meta = {"model", "adapters", "stack", "fingerprint", "layers", "frame"}.
    """
    meta = {"model": model_spec, "adapters": None, "stack": None, "fingerprint": None, "layers": []}
    if adapters is not None and not Path(adapters).is_dir():
        raise InputError(f"{adapters}: adapter folder not found (expected adapters.safetensors + adapter_config.json)")
    if stack is not None:
        st = load_stack(stack)
        spec = model_spec or st.base_spec
        model, tok, info = load_model(spec)
        loaded = load_stack_into(model, st, info, force=force)
        meta.update(model=spec, stack=str(stack), fingerprint=info.get("fingerprint"), layers=loaded)
    else:
        if model_spec is None:
            raise InputError("--model is required unless --stack names the base")

        model, tok, info = load_model(model_spec)
        meta["fingerprint"] = info.get("fingerprint")
    if adapters is not None:
        fp = read_adapter_config(adapters).get("notme", {}).get("base_fingerprint")
        if fp and meta["fingerprint"] and fp != meta["fingerprint"] and not force:
            raise NotmeError(f"{adapters}: adapter was trained on base {fp[:12]}…, not on {meta['model']} "
                             f"({meta['fingerprint'][:12]}…) — pass the model it was trained on, or --force")
        name = load_adapter(model, adapters)
        meta["adapters"] = str(adapters)
        meta["layers"].append({"name": name, "path": str(adapters)})
    use_recorded_frame(tok, [a for a in ([adapters] if frame_adapters is None else frame_adapters) if a], data_dir)
    meta["frame"] = describe_frame(tok)  # how every prompt set is put to the model
    return model, tok, meta


def render(tokenizer, messages: list[dict]) -> str:
    """A prompt for a reply: the chat template, or the plain-text frame for a base model."""
    return chat_prompt(tokenizer, messages)


def _finish(tokenizer, text: str) -> str:
    """A generated reply as the person would see it: cut at the frame's next speaker line."""
    frame = frame_for(tokenizer)
    return frame.cut(text) if frame is not None else text


def _encode(tokenizer, text: str) -> list[int]:
    # the chat template already carries any BOS; do not add another
    return list(tokenizer.encode(text, add_special_tokens=False))


def generate_batch(model, tokenizer, conversations: Sequence[list[dict]], max_tokens: int = 128,
                   temp: float = 0.0, seed: int = 0, batch_size: int = 16, progress=None) -> list[dict]:
    """Replies to each conversation (chat template, generation prompt appended).

    Returns [{"text": str, "n_tokens": int}] in input order. Greedy when temp == 0;
    sampled runs seed `mx.random` with `seed` first, so a run is reproducible.
    """
    sampler = make_sampler(temp=temp)
    prompts = [_encode(tokenizer, render(tokenizer, c)) for c in conversations]
    out: list[dict] = []
    mx.random.seed(seed)
    for i in range(0, len(prompts), batch_size):
        chunk = prompts[i:i + batch_size]
        try:
            res = batch_generate(model, tokenizer, chunk, max_tokens=max_tokens, sampler=sampler,
                                 return_token_ids=True)
            for text, ids in zip(res.texts, res.token_ids):
                out.append({"text": _finish(tokenizer, text), "n_tokens": len(ids)})
        except (TypeError, AttributeError):  # a model mlx-lm cannot batch: one prompt at a time
            for p in chunk:
                text = _finish(tokenizer, generate(model, tokenizer, p, max_tokens=max_tokens, sampler=sampler,
                                                   verbose=False))
                out.append({"text": text, "n_tokens": max(len(_encode(tokenizer, text)), 1) if text else 0})
        if progress is not None:
            progress.advance(len(chunk))
    return out


def score_pairs(model, pairs: Sequence[tuple[list[int], list[int]]], batch_size: int = 8) -> list[tuple[float, int]]:
    """Teacher-forced Σ log p(continuation | prefix) for each (prefix_ids, cont_ids).

    Returns [(sum_logp, n_cont_tokens)]. Sequences are truncated from the left to
    MAX_SCORE_LEN tokens; batches are right-padded (causal attention never sees padding).
    """
    res: list[tuple[float, int]] = []
    for i in range(0, len(pairs), batch_size):
        chunk = pairs[i:i + batch_size]
        seqs, starts = [], []
        for pre, cont in chunk:
            seq = (list(pre) + list(cont))[-MAX_SCORE_LEN:]
            seqs.append(seq)
            starts.append(max(len(seq) - len(cont), 1))  # first scored position in seq
        T = max(len(s) for s in seqs)
        arr = np.zeros((len(seqs), T), dtype=np.int32)
        for j, s in enumerate(seqs):
            arr[j, :len(s)] = s
        x = mx.array(arr)
        logits = model(x[:, :-1]).astype(mx.float32)  # [B, T-1, V]
        logp = logits - mx.logsumexp(logits, axis=-1, keepdims=True)
        tgt = mx.take_along_axis(logp, x[:, 1:, None], axis=-1)[..., 0]  # [B, T-1]
        tgt = np.array(tgt)
        for j, s in enumerate(seqs):
            a, b = starts[j] - 1, len(s) - 1  # target index t predicts token t+1
            res.append((float(tgt[j, a:b].sum()), b - a))
    return res


def continuation_pairs(tokenizer, prefix: str, conts: Sequence[str]) -> list[tuple[list[int], list[int]]]:
    """Token (prefix, continuation) pairs so that prefix+cont tokenizes as the joined text when possible."""
    pre = _encode(tokenizer, prefix)
    out = []
    for c in conts:
        full = _encode(tokenizer, prefix + c)
        if full[:len(pre)] == pre and len(full) > len(pre):
            out.append((pre, full[len(pre):]))
        else:
            out.append((pre, _encode(tokenizer, c)))
    return out


def text_nll(model, tokenizer, texts: Sequence[str], batch_size: int = 4) -> list[tuple[float, int]]:
    """Σ NLL (nats) and token count of each plain text, scored from its second token
    (the first is context; a BOS is prepended when the tokenizer has one)."""
    bos = getattr(tokenizer, "bos_token_id", None)
    pairs = []
    for t in texts:
        ids = _encode(tokenizer, t)
        if bos is not None:
            pairs.append(([bos], ids))
        else:
            pairs.append((ids[:1], ids[1:]))
    return [(-s, n) for s, n in score_pairs(model, pairs, batch_size)]


def reply_nll(model, tokenizer, examples: Sequence[tuple[list[dict], str]], batch_size: int = 4) -> list[tuple[float, int]]:
    """Σ NLL of each reply text after its chat context (the person's held-out messages)."""
    pairs = []
    sep = " " if frame_for(tokenizer) is not None else ""  # the frame writes "Me: reply"
    for ctx, reply in examples:
        pairs.extend(continuation_pairs(tokenizer, render(tokenizer, ctx), [sep + reply]))
    return [(-s, n) for s, n in score_pairs(model, pairs, batch_size)]


def check_nonempty(name: str, rows: Sequence) -> None:
    if not rows:
        raise NotmeError(f"prompt set {name!r} is empty; nothing to evaluate")
