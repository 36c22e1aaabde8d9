"""Exact and near-duplicate removal of examples (MinHash + LSH over word 3-gram shingles).

Exact: identical (role, content) sequences. Near: Jaccard similarity of the word-3-gram
shingle sets >= threshold, found with MinHash signatures (64 hashes, 16 bands x 4 rows)
and verified with the exact Jaccard of the two sets. The first occurrence (input order) is
kept, so results are deterministic. Texts with fewer than `min_shingles` shingles are only
checked for exact duplicates.
"""

from __future__ import annotations

import hashlib
import json
import re
import zlib

import numpy as np

_WORD = re.compile(r"\w+")
_MASK32 = np.uint64(0xFFFFFFFF)
NUM_PERM, BANDS = 64, 16
_rng = np.random.default_rng(20240501)
_A = (_rng.integers(1, 2**32, NUM_PERM, dtype=np.uint64) | np.uint64(1))[:, None]
_B = _rng.integers(0, 2**32, NUM_PERM, dtype=np.uint64)[:, None]


def example_key(ex: dict) -> str:
    return hashlib.sha256(json.dumps([(m["role"], m["content"]) for m in ex["messages"]],
                                     ensure_ascii=False).encode()).hexdigest()


def shingles(text: str, n: int = 3) -> set[str]:
    w = _WORD.findall(text.lower())
    return {" ".join(w[i:i + n]) for i in range(len(w) - n + 1)}


def minhash(sh: set[str]) -> np.ndarray:
    """[NUM_PERM] uint64 MinHash signature of a shingle set."""
    x = np.fromiter((zlib.crc32(s.encode()) for s in sh), dtype=np.uint64, count=len(sh))[None, :]
    return (((_A * x) + _B) & _MASK32).min(axis=1)


def jaccard(a: set, b: set) -> float:
    return len(a & b) / len(a | b) if a or b else 1.0


def dedupe(examples: list[dict], threshold: float = 0.85, min_shingles: int = 8, progress=None):
    """Drop exact and near duplicates. Returns (kept, n_exact, n_near)."""
    seen: set[str] = set()
    buckets: dict = {}
    sets: list[set] = []
    kept, n_exact, n_near = [], 0, 0
    rows = NUM_PERM // BANDS
    for ex in examples:
        if progress is not None:
            progress.advance(1)
        k = example_key(ex)
        if k in seen:
            n_exact += 1
            continue
        seen.add(k)
        sh = shingles("\n".join(m["content"] for m in ex["messages"]))
        if len(sh) >= min_shingles:
            sig = minhash(sh)
            keys = [(b, sig[b * rows:(b + 1) * rows].tobytes()) for b in range(BANDS)]
            cands = {buckets[key] for key in keys if key in buckets}
            if any(jaccard(sh, sets[c]) >= threshold for c in sorted(cands)):
                n_near += 1
                continue
            idx = len(sets)
            sets.append(sh)
            for key in keys:
                buckets.setdefault(key, idx)
        kept.append(ex)
    return kept, n_exact, n_near
