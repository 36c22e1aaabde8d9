"""Preference phases (ORPO, SimPO, DPO) on the builder's pairs.jsonl.

A pair {"prompt": [messages], "chosen": str, "rejected": str} becomes two rows (prompt +
reply); only reply tokens count. Per pair, with mean reply log-probs c (chosen) and r
(rejected) from the fused `sequence_logprobs`:

    orpo:  NLL_chosen + beta * -log sigmoid(log_odds(c) - log_odds(r)),  log_odds(x) = x - log(1 - e^x)
    simpo: -log sigmoid(beta * (c - r) - gamma)
    dpo:   -log sigmoid(beta * ((C - C_ref) - (R - R_ref)))   summed log-probs; the reference
           log-probs are computed once at phase start and cached (`train.ref_cache`)

The loss is a sum over pairs divided by the GLOBAL pair count of the accumulated batch, so
accumulation is exact like the token loss. The per-pair formulas are those of
`notme_mlx.train.preference` (`orpo_terms`, `simpo_terms`, `dpo_terms`).
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import mlx.core as mx
import numpy as np

from ..data.labels import tokenize_example
from ..errors import InputError
from ..io import read_jsonl
from ..loss import output_head, sequence_logprobs
from .forward import hidden_states
from .phases import phase_optimizer, phase_total_steps, register, run_phase_loop
from .preference import dpo_terms, orpo_terms, simpo_terms
from .ref_cache import compute_reference_logprobs, load_reference_logprobs
from .stream import BatchStream, bucket_plan, round_up


def pair_terms(c, r, kind: str, beta: float, gamma: float, nll_chosen):
    """Per-pair (nll, preference) terms [P] from mean log-probs c, r [P]."""
    if kind == "orpo":
        return nll_chosen, beta * orpo_terms(c, r)[0]
    pref = simpo_terms(c, r, beta, gamma)[0]
    return mx.zeros_like(pref), pref


def preference_loss(model, batch, n_pairs, _unused=None, *, kind="orpo", beta=0.1, gamma=0.5,
                    chunk_size=8192, grad_checkpoint=False):
    """Rows [chosen_0..chosen_{P-1}, rejected_0..rejected_{P-1}] -> (loss, stats).

    batch: {"inputs", "targets", "labels": [2P, T]}; labels 1 on reply tokens.
    Returns stats with ce_sum = sum of chosen NLL, ul_sum = sum of preference terms, counts = P.
    """
    h = hidden_states(model, batch["inputs"], checkpoint=grad_checkpoint)  # [2P, T, H]
    mask = batch["labels"] == 1
    lp = sequence_logprobs(h, output_head(model), batch["targets"], mask, chunk_size, average=True)  # [2P]
    P = lp.shape[0] // 2
    c, r = lp[:P], lp[P:]
    nll, pref = pair_terms(c, r, kind, beta, gamma, -c)
    p = mask[:P].any(axis=1).sum().astype(mx.float32)  # pairs, derived from the inputs
    n = p if n_pairs is None else n_pairs
    # Build each sum once and reuse it: mx.compile merges duplicate subgraphs and then fails
    # on the duplicate output (`_Map_base::at` in mlx 0.32).
    nll_sum, pref_sum = nll.sum(), pref.sum()
    loss = (nll_sum + pref_sum) / mx.maximum(n, 1.0)
    return loss, {"ce_sum": nll_sum, "ul_sum": pref_sum, "n_learn": p, "n_penalize": p}


class PairStream(BatchStream):
    """BatchStream over tokenized pairs (each item: (chosen, rejected) TokenizedExample)."""

    def __init__(self, pairs, batch_size, seed, pad_multiple=32, pad_id=0, cursor=None, pool_size=64):
        self.pairs = pairs
        super().__init__([], batch_size, seed, "bucket", pad_multiple, pool_size, 0, pad_id, cursor)
        self.lengths = [max(len(a.tokens), len(b.tokens)) - 1 for a, b in pairs]

    def plan(self, epoch):
        if self._plan_epoch != epoch:
            rng = np.random.default_rng([self.seed, epoch])
            self._plan = bucket_plan(self.lengths, self.batch_size, rng, self.pool_size)
            self._plan_epoch = epoch
        return self._plan

    def next(self):
        plan = self.plan(self.epoch)
        if self.index >= max(len(plan) // self.world, 1):
            self.epoch, self.index = self.epoch + 1, 0
            plan = self.plan(self.epoch)
        idx = plan[(self.index * self.world + self.rank) % len(plan)]
        self.index += 1
        rows = [self.pairs[i][0] for i in idx] + [self.pairs[i][1] for i in idx]
        T = round_up(max(len(e.tokens) - 1 for e in rows), self.pad_multiple)
        inp = np.full((len(rows), T), self.pad_id, np.int32)
        tgt, lab = inp.copy(), np.zeros_like(inp)
        real = 0
        for b, e in enumerate(rows):
            n = len(e.tokens) - 1
            inp[b, :n], tgt[b, :n], lab[b, :n] = e.tokens[:-1], e.tokens[1:], e.labels[1:]
            real += n
        P = len(idx)
        return {"inputs": mx.array(inp), "targets": mx.array(tgt), "labels": mx.array(lab),
                "pair_idx": mx.array(np.asarray(idx, np.int32)), "tokens": real, "padded": inp.size - real, "n_learn": P, "n_penalize": P}


def load_pairs(run, path: str) -> list:
    """pairs.jsonl -> [(chosen, rejected)] tokenized with reply tokens labelled +1."""
    if not Path(path).exists():
        raise InputError(f"{path}: preference pairs not found; `notme data build` writes data/pairs.jsonl")
    out = []
    for i, p in enumerate(read_jsonl(path), 1):
        if not all(k in p for k in ("prompt", "chosen", "rejected")):
            raise InputError(f"{path}:{i}: a pair needs prompt, chosen and rejected")
        two = []
        for reply in (p["chosen"], p["rejected"]):
            ex = {"messages": [dict(m, train=False) for m in p["prompt"]]
                  + [{"role": "assistant", "content": reply, "train": True}], "meta": p.get("meta") or {}}
            two.append(tokenize_example(run.tokenizer, ex, run.recipe.data.max_seq_len))
        if all(1 in t.labels for t in two):
            out.append(tuple(two))
    if not out:
        raise InputError(f"{path}: no usable preference pairs")
    return out


def dpo_loss(model, batch, n_pairs=None, _unused=None, *, ref, beta: float = 0.1, chunk_size: int = 8192,
             grad_checkpoint: bool = False, nll_weight: float = 0.0):
    """DPO on pair batches with cached reference log-probs -> (loss, stats).

    Same contract as `preference_loss`: rows [chosen_0..chosen_{P-1}, rejected_0..rejected_{P-1}],
    labels 1 on reply tokens; plus batch["pair_idx"] [P] int32, the pairs' positions in the cache.
    `ref` = (chosen [N], rejected [N]) from `load_reference_logprobs`. The loss is the sum of
    per-pair terms over the GLOBAL pair count `n_pairs` (local when None); `nll_weight` adds
    that weight times each chosen reply's mean per-token NLL (RPO).
    """
    h = hidden_states(model, batch["inputs"], checkpoint=grad_checkpoint)
    mask = batch["labels"] == 1
    lp = sequence_logprobs(h, output_head(model), batch["targets"], mask, chunk_size)  # [2P] summed
    P = lp.shape[0] // 2
    idx = batch["pair_idx"]
    terms = dpo_terms(lp[:P], lp[P:], ref[0][idx], ref[1][idx], beta)[0]
    p = mask[:P].any(axis=1).sum().astype(mx.float32)
    n = p if n_pairs is None else n_pairs
    s = terms.sum()
    nll = mx.zeros_like(s)
    if nll_weight:
        n_tok = mx.maximum(mask[:P].astype(mx.float32).sum(axis=1), 1.0)
        nll = nll_weight * (-(lp[:P] / n_tok)).sum()
    return (s + nll) / mx.maximum(n, 1.0), {"ce_sum": nll, "ul_sum": s, "n_learn": p, "n_penalize": p}


def _dpo_loss_fn(run, idx, phase, pairs):
    """DPO against reference log-probs computed ONCE from the model as it enters the phase
    (the policy's starting point: the stack below plus this layer after any earlier phases),
    cached in the run folder (reused on resume; checked against the pairs' hash), so no
    second model is ever held in memory."""
    path = run.recipe.run_dir() / f"ref_logprobs-{idx}-{phase.name}.safetensors"
    if not path.exists():
        compute_reference_logprobs(run.model, pairs, path, chunk_size=run.recipe.loss.chunk_size,
                                   meta={"phase": phase.name})
    c, r, _ = load_reference_logprobs(path, pairs)
    return partial(dpo_loss, ref=(mx.array(c), mx.array(r)))


def preference_phase(run, idx, phase, state, resume_from, stop_at_step, kind: str) -> dict:
    """Run an orpo/simpo/dpo phase with the shared loop."""
    r = run.recipe
    pairs = load_pairs(run, phase.data or r.data.pairs)
    stream = PairStream(pairs, r.batch_size, r.seed + 7919 * idx, r.data.pad_multiple, run.pad_id,
                        state.cursor if resume_from is not None else None, r.data.pool_size)
    total = phase_total_steps(r, phase, stream.batches_per_epoch())
    opt = phase_optimizer(run, phase, total, resume_from)
    if kind == "dpo":
        loss_fn = partial(_dpo_loss_fn(run, idx, phase, pairs), beta=phase.beta, nll_weight=phase.nll_weight,
                          chunk_size=r.loss.chunk_size, grad_checkpoint=r.grad_checkpoint)
    else:
        loss_fn = partial(preference_loss, kind=kind, beta=phase.beta, gamma=phase.gamma,
                          chunk_size=r.loss.chunk_size, grad_checkpoint=r.grad_checkpoint)
    step = run.backend.step(run.model, loss_fn, r.compile, what=f"phase type {kind}")
    res = run_phase_loop(run, phase, stream, step, opt, total, state, stop_at_step)
    return {"name": phase.name, "type": kind, "steps": res.steps_done, "total": total, "last": res.last_metrics,
            "stopped_early": res.stopped_early}


for _kind in ("orpo", "simpo", "dpo"):
    register(_kind)(partial(preference_phase, kind=_kind))
