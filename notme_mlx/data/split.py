"""Deterministic train/valid/test split by conversation (never by message)."""

from __future__ import annotations

import hashlib


def _rank(seed: int, conversation_id: str) -> str:
    return hashlib.sha256(f"{seed}\0{conversation_id}".encode()).hexdigest()


def split_conversations(conv_ids, valid_fraction: float, test_fraction: float, seed: int) -> dict[str, str]:
    """Map each conversation id to 'train' | 'valid' | 'test'.

    Conversations are ordered by sha256(seed, id); the first round(n*test) go to test, the
    next round(n*valid) to valid (at least one each when n >= 3 and the fraction > 0).
    Returns:
      {conversation_id: split}
    """
    ids = sorted(set(conv_ids), key=lambda c: _rank(seed, c))
    n = len(ids)

    def count(f: float) -> int:
        k = round(n * f)
        return max(k, 1) if f > 0 and n >= 3 else k

    n_test, n_valid = count(test_fraction), count(valid_fraction)
    if n_test + n_valid >= n:
        n_test, n_valid = (0, 0) if n < 3 else (min(n_test, 1), min(n_valid, 1))
    out = {}
    for i, c in enumerate(ids):
        out[c] = "test" if i < n_test else ("valid" if i < n_test + n_valid else "train")
    return out
