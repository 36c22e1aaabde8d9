"""Preference losses on sequence log-probs: ORPO, SimPO (reference-free), DPO (cached reference).

Each is a pure function over per-sequence log-probs from
`notme_mlx.loss.sequence_logprobs` (summed, or `average=True` for the
per-token mean) and returns (loss scalar, stats). Chosen and rejected are
paired row by row ([B] each). The per-pair terms (`*_terms`, unreduced [B]) are the one
place the formulas live: the trainer's preference phases (`train.pref_phase`) sum
them over a global pair count; the `*_loss` functions here take their mean.
"""

from __future__ import annotations

import mlx.core as mx

from notme_mlx.loss import log1mexp, sequence_logprobs


def _stats(margin, chosen, rejected):
    return {
        "margin": margin.mean(),
        "accuracy": (margin > 0).astype(mx.float32).mean(),
        "chosen_logp": chosen.mean(),
        "rejected_logp": rejected.mean(),
    }


def log_odds(avg_logp):
    """log(P / (1 - P)) with P = exp(avg_logp), P clamped below 1."""
    a = mx.minimum(avg_logp, -1e-6)
    return a - log1mexp(a)


def dpo_terms(chosen_logp, rejected_logp, ref_chosen_logp, ref_rejected_logp, beta: float = 0.1):
    """Per-pair DPO loss -log sigmoid(beta * ((c - ref_c) - (r - ref_r))) [B]; reference without grad."""
    margin = beta * ((chosen_logp - mx.stop_gradient(ref_chosen_logp))
                     - (rejected_logp - mx.stop_gradient(ref_rejected_logp)))
    return mx.logaddexp(0.0, -margin), margin


def simpo_terms(chosen_avg_logp, rejected_avg_logp, beta: float = 2.0, gamma: float = 0.5):
    """Per-pair SimPO loss -log sigmoid(beta * (avg_c - avg_r) - gamma) [B]."""
    margin = beta * (chosen_avg_logp - rejected_avg_logp) - gamma
    return mx.logaddexp(0.0, -margin), margin


def orpo_terms(chosen_avg_logp, rejected_avg_logp):
    """Per-pair ORPO odds-ratio term -log sigmoid(log odds_c - log odds_r) [B] (unweighted)."""
    ratio = log_odds(chosen_avg_logp) - log_odds(rejected_avg_logp)
    return mx.logaddexp(0.0, -ratio), ratio


def dpo_loss(chosen_logp, rejected_logp, ref_chosen_logp, ref_rejected_logp, beta: float = 0.1):
    """DPO: -log sigmoid(beta * ((pi_c - ref_c) - (pi_r - ref_r))), mean over pairs.

    Args:
        chosen_logp, rejected_logp: [B] summed log-probs under the policy.
        ref_chosen_logp, ref_rejected_logp: [B] cached reference log-probs (no grad).
    Returns:
        (loss, stats) with stats margin (the beta-scaled reward margin), accuracy, ...
    """
    terms, margin = dpo_terms(chosen_logp, rejected_logp, ref_chosen_logp, ref_rejected_logp, beta)
    return terms.mean(), _stats(margin, chosen_logp, rejected_logp)


def simpo_loss(chosen_avg_logp, rejected_avg_logp, beta: float = 2.0, gamma: float = 0.5):
    """SimPO: -log sigmoid(beta * (avg_c - avg_r) - gamma), mean over pairs.

    Args:
        chosen_avg_logp, rejected_avg_logp: [B] per-token mean log-probs (length-normalized).
        beta: reward scale; gamma: target reward margin.
    """
    terms, margin = simpo_terms(chosen_avg_logp, rejected_avg_logp, beta, gamma)
    return terms.mean(), _stats(margin, chosen_avg_logp, rejected_avg_logp)


def orpo_loss(chosen_avg_logp, rejected_avg_logp, lam: float = 0.1, chosen_nll=None):
    """ORPO: NLL(chosen) + lam * -log sigmoid(log odds_c - log odds_r), mean over pairs.

    log odds(y) = log(P / (1 - P)) with P = exp(avg log-prob) (per-token mean, as in the paper).

    Args:
        chosen_avg_logp, rejected_avg_logp: [B] per-token mean log-probs (< 0).
        lam: weight of the odds-ratio term.
        chosen_nll: the SFT term; default -mean(chosen_avg_logp).
    """
    terms, ratio = orpo_terms(chosen_avg_logp, rejected_avg_logp)
    or_term = terms.mean()
    nll = -chosen_avg_logp.mean() if chosen_nll is None else chosen_nll
    loss = nll + lam * or_term
    stats = _stats(ratio, chosen_avg_logp, rejected_avg_logp)
    stats.update({"nll": nll, "or_term": or_term})
    return loss, stats


def pair_logprobs(hidden, weight, targets, mask, chunk_size: int = 8192):
    """Summed and mean log-probs for a batch of sequences (chosen and rejected rows alike).

    Args:
        hidden: [B, T, H]; targets, mask: [B, T] (mask 1 on response tokens).
    Returns:
        (sum [B], mean [B]).
    """
    total = sequence_logprobs(hidden, weight, targets, mask, chunk_size)
    return total, total / mx.maximum(mask.astype(mx.float32).sum(-1), 1.0)
