"""GRPO: group-relative policy optimization of the trainable LoRA adapter.

Per step, for each of `prompts_per_step` prompts, sample k completions with the current
adapter; score each with `reward_fn`; advantages are normalized within the prompt's group,
A_i = (r_i - mean(r)) / (std(r) + eps). The loss over completion tokens t (mask m) is

    ratio_t = exp(lp_t - old_lp_t)
    pg_t    = -min(ratio_t * A, clip(ratio_t, 1 - eps, 1 + eps) * A)
    kl_t    = exp(ref_lp_t - lp_t) - (ref_lp_t - lp_t) - 1          (k3 estimator, >= 0)
    loss    = sum_t m_t (pg_t + kl_coef * kl_t) / sum_t m_t

where old_lp are the sampling-time log-probs and ref_lp the log-probs of the adapter the phase
started from. Each sampled batch gets one optimizer step, so the ratio is 1 at the update
(its gradient is the policy gradient) and the clip does not bind; it is kept so the loss is the
standard clipped objective. Log-probs come from the fused `notme_mlx.loss.token_logprobs` (no
[N, V] logits); `policy_loss_reference` is the plain logits/log_softmax version the tests
compare against.

Training runs through the trainer's one loop (`notme_mlx.train.loop.train_loop`): `GRPOStream`
samples and scores a batch per micro-step (its cursor holds the prompt position and the PRNG
key, so a checkpoint resumes the exact sample sequence), `grpo_loss` is the step's loss.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import partial
from typing import Callable, Sequence

import mlx.core as mx
import numpy as np
from mlx.utils import tree_flatten
from mlx_lm.models.cache import make_prompt_cache

from ..detect import detect
from ..errors import InputError
from ..eval.metrics import is_refusal as default_is_refusal
from ..loss import output_head, token_logprobs
from ..models.generate import chat_prompt
from ..recipe import OptimizerConfig, PhaseConfig, ScheduleConfig
from ..train import checkpoint as ckpt
from ..train.forward import hidden_states
from ..train.loop import local_step, train_loop
from ..train.schedule import build_optimizer


@dataclass(frozen=True)
class GRPOConfig:
    """GRPO settings; the sampling defaults are the recipe's (`notme_mlx.recipe.PhaseConfig`)."""

    steps: int = 20
    k: int = PhaseConfig.k                              # completions per prompt (the group)
    prompts_per_step: int = PhaseConfig.prompts_per_step
    max_tokens: int = PhaseConfig.max_tokens
    temp: float = PhaseConfig.temp
    lr: float = 1e-4
    clip_eps: float = PhaseConfig.clip_eps
    kl_coef: float = 0.05
    adv_eps: float = 1e-4
    seed: int = 0
    grad_clip: float | None = 1.0
    probe_max_tokens: int = 48


def token_logprobs_fused(model, seqs: mx.array) -> mx.array:
    """log p(seqs[:, t+1] | seqs[:, :t+1]) via the fused head. seqs [B, T] -> [B, T-1] float32."""
    h = hidden_states(model, seqs[:, :-1])  # [B, T-1, H]
    return token_logprobs(h, output_head(model), seqs[:, 1:])


def token_logprobs_plain(model, seqs: mx.array) -> mx.array:
    """Same as `token_logprobs_fused` from full logits and log_softmax (reference)."""
    logits = model(seqs[:, :-1]).astype(mx.float32)  # [B, T-1, V]
    lp = logits - mx.logsumexp(logits, axis=-1, keepdims=True)
    return mx.take_along_axis(lp, seqs[:, 1:, None], axis=-1)[..., 0]


def policy_loss(model, seqs, old_lp, ref_lp, adv, mask, clip_eps=0.2, kl_coef=0.05):
    """Clipped GRPO loss with the fused log-probs.

    Args:
      seqs: [B, T] int32 prompt+completion tokens; old_lp, ref_lp, mask: [B, T-1] (mask 1 on
        completion targets); adv: [B] group-normalized advantages.
    Returns:
      (loss scalar, mean per-token KL to the reference).
    """
    batch = {"seqs": seqs, "old_lp": old_lp, "ref_lp": ref_lp, "adv": adv, "mask": mask}
    loss, stats = grpo_loss(model, batch, None, clip_eps=clip_eps, kl_coef=kl_coef)
    return loss, stats["ul_sum"] / mx.maximum(mask.astype(mx.float32).sum(), 1.0)


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


def grpo_loss(model, batch, n_tokens, _n_same=None, *, clip_eps=0.2, kl_coef=0.05):
    """The policy loss of one sampled micro-batch over the step's completion-token count.

    batch: {"seqs" [B, T], "old_lp", "ref_lp", "mask" [B, T-1], "adv" [B]}. Returns (loss, stats)
    in the trainer's contract: ce_sum = sum of the policy-gradient terms, ul_sum = sum of the
    KL terms (the metrics' `ce` and `ul` are their per-token means).
    """
    lp = token_logprobs_fused(model, batch["seqs"])
    m = batch["mask"].astype(mx.float32)
    ratio = mx.exp(lp - batch["old_lp"])
    a = batch["adv"][:, None]
    pg = -mx.minimum(ratio * a, mx.clip(ratio, 1 - clip_eps, 1 + clip_eps) * a)
    d = batch["ref_lp"] - lp
    kl = mx.exp(d) - d - 1
    n = m.sum() if n_tokens is None else n_tokens
    pg_sum, kl_sum = (pg * m).sum(), (kl * m).sum()
    return (pg_sum + kl_coef * kl_sum) / mx.maximum(n, 1.0), {"ce_sum": pg_sum, "ul_sum": kl_sum}


class GRPOStream:
    """Sampled, scored micro-batches for `train_loop`: each `next()` takes the next
    `prompts_per_step` prompts (cycled in order), samples k completions of each with the current
    adapter, scores them and returns the tensors of `grpo_loss`.

    Args:
      prompts: [{"messages": [...], "safety"?: bool}] (or {"prompt": str}); reward_fn: fn(prompt
        record, text, token ids) -> float; ref_params: [(key, array)] of the adapter the phase
        started from; cursor: a saved `cursor()`.
    """

    def __init__(self, model, tokenizer, prompts: Sequence[dict], reward_fn: Callable, cfg: GRPOConfig,
                 ref_params, cursor: dict | None = None, render: Callable | None = None):
        if not prompts:
            raise InputError("grpo: no prompts to train on")
        self.model, self.tokenizer, self.prompts, self.reward_fn, self.cfg = model, tokenizer, prompts, reward_fn, cfg
        self.ref_params = ref_params
        render = render or default_render(tokenizer)
        self.enc = [list(tokenizer.encode(render(p), add_special_tokens=False)) for p in prompts]
        self.eos_ids = eos_ids(tokenizer)
        cursor = cursor or {}
        self.position = cursor.get("prompt", 0)
        self.key = mx.array(cursor["key"], dtype=mx.uint32) if "key" in cursor else mx.random.key(cfg.seed)
        self._rewards, self._flags, self._lengths = [], [], []

    def cursor(self) -> dict:
        return {"prompt": self.position, "key": np.array(self.key).tolist()}

    def next(self) -> dict:
        cfg, model = self.cfg, self.model
        rows, masks, rewards = [], [], []
        for _ in range(cfg.prompts_per_step):
            j = self.position % len(self.prompts)
            self.position += 1
            self.key, sub = mx.random.split(self.key)
            toks, lens, _ = sample_group(model, self.enc[j], cfg.k, cfg.max_tokens, cfg.temp, sub, self.eos_ids)
            P = len(self.enc[j])
            for i in range(cfg.k):
                ids = toks[i, :lens[i]].tolist()
                text = self.tokenizer.decode(strip_eos(ids, self.eos_ids))
                rewards.append(float(self.reward_fn(self.prompts[j], text, ids)))
                self._flags.append(float(detect(text).flagged))
                rows.append(self.enc[j] + toks[i].tolist())
                m = np.zeros(P + cfg.max_tokens - 1, dtype=np.float32)
                m[P - 1:P - 1 + lens[i]] = 1.0  # targets at positions P-1 .. P-2+len
                masks.append(m)
                self._lengths.append(float(lens[i]))
        self._rewards += rewards
        W = max(len(s) for s in rows)  # groups of different prompt lengths: right-pad to one width
        seqs = mx.array([s + [0] * (W - len(s)) for s in rows], dtype=mx.int32)
        mask = np.stack([np.pad(m, (0, W - 1 - len(m))) for m in masks])
        adv = mx.array(group_advantages(np.array(rewards), cfg.k, cfg.adv_eps).astype(np.float32))
        old_lp = _lp_eval(model, seqs)
        current = snapshot_trainable(model)
        model.load_weights(self.ref_params, strict=False)
        ref_lp = _lp_eval(model, seqs)
        model.load_weights(current, strict=False)
        n = int(mask.sum())
        return {"seqs": seqs, "old_lp": old_lp, "ref_lp": ref_lp, "adv": adv, "mask": mx.array(mask),
                "n_learn": n, "n_penalize": n, "tokens": n, "padded": int(mask.size) - n}

    def step_metrics(self) -> dict:
        """Reward, detector flag rate and completion length of the samples since the last call."""
        out = {"reward_mean": float(np.mean(self._rewards)), "reward_std": float(np.std(self._rewards)),
               "vsr": float(np.mean(self._flags)), "completion_tokens": float(np.mean(self._lengths))}
        self._rewards, self._flags, self._lengths = [], [], []
        return out


def snapshot_trainable(model) -> list:
    """[(key, copy)] of the trainable parameters (a snapshot that later updates do not change)."""
    return [(k, mx.array(v)) for k, v in tree_flatten(model.trainable_parameters())]


def default_render(tokenizer) -> Callable:
    """A prompt record as the prompt string: chat template for {"messages"}, else {"prompt"} as is."""
    return lambda r: chat_prompt(tokenizer, r["messages"]) if "messages" in r else r["prompt"]


def eos_ids(tokenizer) -> set:
    return set(getattr(tokenizer, "eos_token_ids", None) or [tokenizer.eos_token_id])


def refusal_rate(model, tokenizer, prompts: Sequence[dict], max_tokens: int, is_refusal: Callable,
                 render: Callable | None = None) -> float | None:
    """Share of greedy replies to `prompts` that refuse (None without prompts)."""
    if not prompts:
        return None
    render = render or default_render(tokenizer)
    eos, hits = eos_ids(tokenizer), 0
    for sp in prompts:
        ids = list(tokenizer.encode(render(sp), add_special_tokens=False))
        toks, lens, _ = sample_group(model, ids, 1, max_tokens, 0.0, mx.random.key(0), eos)
        hits += bool(is_refusal(tokenizer.decode(strip_eos(toks[0, :lens[0]], eos))))
    return hits / len(prompts)


def grpo_train(model, tokenizer, prompts: Sequence[dict], reward_fn: Callable, config: GRPOConfig,
               log: Callable[[dict], None] | None = None, safety_prompts: Sequence[dict] = (),
               is_refusal: Callable[[str], bool] | None = None, render: Callable | None = None) -> list[dict]:
    """Train the model's trainable (LoRA) parameters with GRPO for `config.steps` steps, no
    checkpoints (the `grpo` recipe phase, `notme_mlx.synth.phase`, is the resumable form).

    Args:
      prompts: [{"messages": [...], "safety"?: bool}] (or {"prompt": str}); cycled in order.
      reward_fn: fn(prompt_record, text, token_ids list[int]) -> float.
      safety_prompts: probe set for the refusal rate (greedy, at start and end).
      log: called with one metrics dict per step (e.g. a metrics.jsonl writer).
      render: fn(record) -> prompt string (default: the tokenizer's chat template).
    Returns:
      the per-step metrics dicts.
    """
    cfg = config
    is_refusal = is_refusal or default_is_refusal
    refusal0 = refusal_rate(model, tokenizer, safety_prompts, cfg.probe_max_tokens, is_refusal, render)
    stream = GRPOStream(model, tokenizer, prompts, reward_fn, cfg, snapshot_trainable(model), render=render)
    opt = build_optimizer(OptimizerConfig(lr=cfg.lr), ScheduleConfig(type="constant"), cfg.steps)
    step = local_step(model, partial(grpo_loss, clip_eps=cfg.clip_eps, kl_coef=cfg.kl_coef), compile=False)
    history = []

    def record(rec):
        rec = dict(rec, phase="grpo", kl=rec["ul"])
        history.append(rec)
        if log is not None:
            log(rec)

    train_loop(model, opt, stream, step, total_steps=cfg.steps, state=ckpt.TrainState(), grad_accum=1,
               grad_clip=cfg.grad_clip, seed=cfg.seed, max_bad_steps=5, save=lambda st: None, log=record,
               phase_name="grpo", compile=False)
    if history and safety_prompts:
        history[-1]["refusal_rate"] = refusal_rate(model, tokenizer, safety_prompts, cfg.probe_max_tokens,
                                                   is_refusal, render)
        history[-1]["refusal_rate_start"] = refusal0
    return history


def strip_eos(ids, eos_ids):
    ids = list(ids)
    while ids and ids[-1] in eos_ids:
        ids.pop()
    return ids


def detector_reward(detect_fn=None, length_min_tokens: int = 1, length_coef: float = 1.0,
                    refusal_coef: float = 1.0, is_refusal_fn=None) -> Callable:
    """reward = -detector score - length_coef * [fewer than length_min_tokens tokens]
    + refusal_coef * [reply refuses] on prompts marked {"safety": true}."""
    detect_fn = detect_fn or detect
    is_refusal_fn = is_refusal_fn or default_is_refusal

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
