"""GRPO: group-relative policy optimization of the trainable LoRA adapter.

Per step, for each of `prompts_per_step` prompts, sample k completions with the current
adapter; score each with `reward_fn`; advantages are normalized within the prompt's group,
A_i = (r_i - mean(r)) / (std(r) + eps). The loss over completion tokens t (mask m) is

    ratio_t = exp(lp_t - old_lp_t)
    pg_t    = -min(ratio_t * A, clip(ratio_t, 1 - eps, 1 + eps) * A)
    kl_t    = exp(ref_lp_t - lp_t) - (ref_lp_t - lp_t) - 1          (k3 estimator, >= 0)
    loss    = sum_t m_t (pg_t + kl_coef * kl_t) / sum_t m_t

where old_lp are the sampling-time log-probs (ratio = 1 on the first inner step, so the
clip only matters for `inner_steps` > 1) and ref_lp the starting adapter's log-probs.
Log-probs come from the fused `notme_mlx.loss.token_logprobs` (no [N, V] logits);
`policy_loss_reference` is the plain logits/log_softmax version the tests compare against.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import mlx.core as mx
import mlx.nn as nn
import numpy as np
from mlx.utils import tree_flatten


@dataclass(frozen=True)
class GRPOConfig:
    steps: int = 20
    k: int = 4                      # completions per prompt (the group)
    prompts_per_step: int = 2
    max_tokens: int = 32
    temp: float = 1.0
    lr: float = 1e-4
    clip_eps: float = 0.2
    kl_coef: float = 0.05
    inner_steps: int = 1            # optimizer steps per sampled batch
    adv_eps: float = 1e-4
    seed: int = 0
    probe_every: int = 0            # refusal-rate probe on safety prompts every N steps (0 = start + end only)
    probe_max_tokens: int = 48


def _head(model):
    from ..loss import output_head

    return output_head(model)


def _hidden(model, inputs):
    from ..train import _resolve

    return _resolve.hidden_states(model, inputs)


def token_logprobs_fused(model, seqs: mx.array) -> mx.array:
    """log p(seqs[:, t+1] | seqs[:, :t+1]) via the fused head. seqs [B, T] -> [B, T-1] float32."""
    from ..loss import token_logprobs

    h = _hidden(model, seqs[:, :-1])  # [B, T-1, H]
    return token_logprobs(h, _head(model), seqs[:, 1:])


def token_logprobs_plain(model, seqs: mx.array) -> mx.array:
    """Same as `token_logprobs_fused` from full logits and log_softmax (reference)."""
    logits = model(seqs[:, :-1]).astype(mx.float32)  # [B, T-1, V]
    lp = logits - mx.logsumexp(logits, axis=-1, keepdims=True)
    return mx.take_along_axis(lp, seqs[:, 1:, None], axis=-1)[..., 0]


def _combine(lp, old_lp, ref_lp, adv, mask, clip_eps, kl_coef):
    m = mask.astype(mx.float32)
    ratio = mx.exp(lp - old_lp)
    a = adv[:, None]
    pg = -mx.minimum(ratio * a, mx.clip(ratio, 1 - clip_eps, 1 + clip_eps) * a)
    d = ref_lp - lp
    kl = mx.exp(d) - d - 1
    n = mx.maximum(m.sum(), 1.0)
    return ((pg + kl_coef * kl) * m).sum() / n, (kl * m).sum() / n


def policy_loss(model, seqs, old_lp, ref_lp, adv, mask, clip_eps=0.2, kl_coef=0.05):
    """Clipped GRPO loss with the fused log-probs.

    Args:
      seqs: [B, T] int32 prompt+completion tokens; old_lp, ref_lp, mask: [B, T-1] (mask 1 on
        completion targets); adv: [B] group-normalized advantages.
    Returns:
      (loss scalar, mean per-token KL to the reference).
    """
    return _combine(token_logprobs_fused(model, seqs), old_lp, ref_lp, adv, mask, clip_eps, kl_coef)


def policy_loss_reference(model, seqs, old_lp, ref_lp, adv, mask, clip_eps=0.2, kl_coef=0.05):
    """`policy_loss` from full logits, written out plainly (for tests)."""
    lp = token_logprobs_plain(model, seqs)
    m = mask.astype(mx.float32)
    ratio = mx.exp(lp - old_lp)
    unclipped = ratio * adv[:, None]
    clipped = mx.clip(ratio, 1 - clip_eps, 1 + clip_eps) * adv[:, None]
    kl = mx.exp(ref_lp - lp) - (ref_lp - lp) - 1
    per_tok = -mx.minimum(unclipped, clipped) + kl_coef * kl
    return (per_tok * m).sum() / m.sum(), (kl * m).sum() / m.sum()


def group_advantages(rewards: np.ndarray, k: int, eps: float = 1e-4) -> np.ndarray:
    """rewards [G*k] (groups contiguous) -> (r - group mean) / (group std + eps)."""
    r = rewards.reshape(-1, k)
    return ((r - r.mean(axis=1, keepdims=True)) / (r.std(axis=1, keepdims=True) + eps)).reshape(-1)


def sample_group(model, prompt_ids: Sequence[int], k: int, max_tokens: int, temp: float, key, eos_ids=()):
    """Sample k completions of one prompt with a KV cache (explicit PRNG key: reproducible).

    Returns:
      (tokens [k, max_tokens] int32 numpy, lengths [k] incl. a final eos, reached_eos [k]).
    """
    from mlx_lm.models.cache import make_prompt_cache

    cache = make_prompt_cache(model)
    x = mx.array([list(prompt_ids)] * k, dtype=mx.int32)  # [k, Tp]
    out = np.zeros((k, max_tokens), dtype=np.int32)
    done = np.zeros(k, dtype=bool)
    lengths = np.full(k, max_tokens)
    eos = set(int(e) for e in eos_ids)
    for t in range(max_tokens):
        logits = model(x, cache=cache)[:, -1, :].astype(mx.float32)  # [k, V]
        key, sub = mx.random.split(key)
        tok = mx.argmax(logits, axis=-1) if temp == 0 else mx.random.categorical(logits / temp, key=sub)
        tok_np = np.array(tok).astype(np.int32)
        for i in range(k):
            if not done[i]:
                out[i, t] = tok_np[i]
                if tok_np[i] in eos:
                    done[i], lengths[i] = True, t + 1
        if done.all():
            break
        x = tok[:, None].astype(mx.int32)
    return out, lengths, done


def _lp_eval(model, seqs):
    lp = token_logprobs_fused(model, seqs)
    mx.eval(lp)
    return lp


def grpo_train(model, tokenizer, prompts: Sequence[dict], reward_fn: Callable, config: GRPOConfig,
               log: Callable[[dict], None] | None = None, safety_prompts: Sequence[dict] = (), progress=None,
               is_refusal: Callable[[str], bool] | None = None, render: Callable | None = None) -> list[dict]:
    """Train the model's trainable (LoRA) parameters with GRPO.

    Args:
      prompts: [{"messages": [...], "safety"?: bool}] (or {"prompt": str}); cycled in order.
      reward_fn: fn(prompt_record, text, token_ids list[int]) -> float.
      safety_prompts: probe set for the refusal rate (greedy, at start, every probe_every, end).
      log: called with one metrics dict per step (e.g. a metrics.jsonl writer).
      render: fn(record) -> prompt string (default: the tokenizer's chat template).
    Returns:
      the per-step metrics dicts.
    """
    import mlx.optimizers as optim

    from ..models.generate import chat_prompt

    if not prompts:
        from ..errors import InputError

        raise InputError("grpo: no prompts to train on")
    cfg = config
    render = render or (lambda r: chat_prompt(tokenizer, r["messages"]) if "messages" in r else r["prompt"])
    enc = [list(tokenizer.encode(render(p), add_special_tokens=False)) for p in prompts]
    eos_ids = set(getattr(tokenizer, "eos_token_ids", None) or [tokenizer.eos_token_id])
    ref_params = [(k, mx.array(v)) for k, v in tree_flatten(model.trainable_parameters())]
    opt = optim.Adam(learning_rate=cfg.lr)
    key = mx.random.key(cfg.seed)
    loss_and_grad = nn.value_and_grad(model, lambda *a: policy_loss(model, *a, cfg.clip_eps, cfg.kl_coef)[0])
    history, cursor = [], 0

    def probe():
        if not safety_prompts or is_refusal is None:
            return None
        hits = 0
        for sp in safety_prompts:
            ids = list(tokenizer.encode(render(sp), add_special_tokens=False))
            toks, lens, _ = sample_group(model, ids, 1, cfg.probe_max_tokens, 0.0, key, eos_ids)
            hits += bool(is_refusal(tokenizer.decode(_strip(toks[0, :lens[0]], eos_ids))))
        return hits / len(safety_prompts)

    refusal0 = probe()
    for step in range(1, cfg.steps + 1):
        t0 = time.perf_counter()
        seq_rows, masks, rewards, texts = [], [], [], []
        for _ in range(cfg.prompts_per_step):
            j = cursor % len(prompts)
            cursor += 1
            key, sub = mx.random.split(key)
            toks, lens, _ = sample_group(model, enc[j], cfg.k, cfg.max_tokens, cfg.temp, sub, eos_ids)
            P = len(enc[j])
            for i in range(cfg.k):
                ids = toks[i, :lens[i]].tolist()
                text = tokenizer.decode(_strip(ids, eos_ids))
                rewards.append(float(reward_fn(prompts[j], text, ids)))
                texts.append(text)
                seq_rows.append(enc[j] + toks[i].tolist())
                m = np.zeros(P + cfg.max_tokens - 1, dtype=np.float32)
                m[P - 1:P - 1 + lens[i]] = 1.0  # targets at positions P-1 .. P-2+len
                masks.append(m)
        # groups of different prompt lengths: right-pad to one width
        W = max(len(s) for s in seq_rows)
        seqs = mx.array([s + [0] * (W - len(s)) for s in seq_rows], dtype=mx.int32)
        mask = mx.array(np.stack([np.pad(m, (0, W - 1 - len(m))) for m in masks]))
        adv = mx.array(group_advantages(np.array(rewards), cfg.k, cfg.adv_eps).astype(np.float32))
        old_lp = _lp_eval(model, seqs)
        cur = [(k, v) for k, v in tree_flatten(model.trainable_parameters())]
        model.load_weights(ref_params, strict=False)
        ref_lp = _lp_eval(model, seqs)
        model.load_weights(cur, strict=False)
        for _ in range(cfg.inner_steps):
            loss, grads = loss_and_grad(seqs, old_lp, ref_lp, adv, mask)
            opt.update(model, grads)
            mx.eval(model.trainable_parameters(), opt.state, loss)
        _, kl = policy_loss(model, seqs, old_lp, ref_lp, adv, mask, cfg.clip_eps, cfg.kl_coef)
        rec = {"phase": "grpo", "step": step, "loss": float(loss), "reward_mean": float(np.mean(rewards)),
               "reward_std": float(np.std(rewards)), "kl": float(kl),
               "completion_tokens": float(np.mean([float(m.sum()) for m in masks])),
               "step_s": time.perf_counter() - t0}
        try:
            from ..detect import detect

            rec["vsr"] = float(np.mean([detect(t).flagged for t in texts]))
        except ImportError:
            pass
        if safety_prompts and is_refusal is not None and (
                step == cfg.steps or (cfg.probe_every and step % cfg.probe_every == 0)):
            rec["refusal_rate"] = probe()
            rec["refusal_rate_start"] = refusal0
        history.append(rec)
        if log is not None:
            log(rec)
        if progress is not None:
            if hasattr(progress, "update"):
                progress.update(description=f"grpo reward {rec['reward_mean']:+.3f} vsr {rec.get('vsr', 0):.2f} "
                                            f"kl {rec['kl']:.4f}")
            progress.advance(1)
    return history


def _strip(ids, eos_ids):
    ids = list(ids)
    while ids and ids[-1] in eos_ids:
        ids.pop()
    return ids


def detector_reward(detect_fn=None, length_min_tokens: int = 1, length_coef: float = 1.0,
                    refusal_coef: float = 1.0, is_refusal_fn=None) -> Callable:
    """reward = -detector score - length_coef * [fewer than length_min_tokens tokens]
    + refusal_coef * [reply refuses] on prompts marked {"safety": true}."""
    if detect_fn is None:
        from ..detect import detect as detect_fn
    if is_refusal_fn is None:
        from ..eval.metrics import is_refusal as is_refusal_fn

    def reward(prompt: dict, text: str, ids) -> float:
        r = -float(detect_fn(text).score)
        if len(ids) < length_min_tokens or not text.strip():
            r -= length_coef
        if prompt.get("safety"):
            r += refusal_coef * (1.0 if is_refusal_fn(text) else -1.0)
        return r

    return reward


def jsonl_logger(path):
    """A `log` callback appending one JSON line per step."""
    def log(rec):
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(rec) + "\n")
    return log
