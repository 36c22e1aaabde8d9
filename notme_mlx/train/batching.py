"""Length-bucketed or packed training batches, deterministic and resumable.

Input: TokenizedExample-like objects with `.tokens` and `.labels` (same length,
labels[i] is token i's label as a target). The shift happens here:
inputs = tokens[:-1], targets = tokens[1:], labels = labels[1:].

Bucketing (default): each epoch, the example order is a seeded permutation;
it is cut into pools of `pool_batches * batch_size` examples, each pool is
sorted by length and cut into batches, and the batch order is shuffled. Rows
are right-padded to a multiple of `pad_multiple`; the causal mask suffices
(pads sit after every real token), so `mask` is None.

Packing (`pack=True`): examples are placed first-fit into rows of
`max_seq_len - 1` positions; `mask` is a boolean [B, 1, T, T] block-diagonal
causal mask built from segment ids, so no example attends to another. RoPE
positions are NOT reset per segment: RoPE scores depend only on the relative
offset q - k, and cross-segment pairs are masked, so a packed example gives
the same outputs as alone up to float rounding (tested).
"""

from __future__ import annotations

from typing import Optional, Sequence

import mlx.core as mx
import numpy as np


def _round_up(n: int, m: int) -> int:
    return -(-n // m) * m


def packed_mask(segments: np.ndarray) -> mx.array:
    """Block-diagonal causal mask from segment ids.

    Args:
        segments: [B, T] int, 1.. for examples, 0 for padding.
    Returns:
        bool [B, 1, T, T]; True = may attend. Pad queries attend only to themselves.
    """
    seg = np.asarray(segments)
    T = seg.shape[1]
    causal = np.tril(np.ones((T, T), dtype=bool))
    same = (seg[:, :, None] == seg[:, None, :]) & (seg[:, None, :] > 0)
    allowed = (same & causal) | np.eye(T, dtype=bool)[None]
    return mx.array(allowed[:, None])


class Batcher:
    """Iterator of training batches with `state_dict()` / `load_state_dict()`.

    Yields dicts: inputs [B, T] int32, targets [B, T] int32, labels [B, T] int32
    (0 on pad), mask (None or bool [B, 1, T, T]), segments [B, T] int32 (pack
    only, else None), n_real_tokens, n_pad, n_learn, n_penalize (ints).
    """

    def __init__(self, examples: Sequence, batch_size: int, max_seq_len: Optional[int] = None,
                 pack: bool = False, seed: int = 0, pad_multiple: int = 32, pad_id: int = 0,
                 pool_batches: int = 64, epochs: Optional[int] = None, shuffle: bool = True):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if pack and not max_seq_len:
            raise ValueError("pack=True needs max_seq_len (the row length)")
        self.batch_size, self.pack, self.seed = batch_size, pack, seed
        self.pad_multiple, self.pad_id, self.pool_batches = pad_multiple, pad_id, pool_batches
        self.epochs, self.shuffle = epochs, shuffle
        self.cap = (max_seq_len - 1) if max_seq_len else None
        self._ex = []
        for i, e in enumerate(examples):
            toks, labs = list(e.tokens), list(e.labels)
            if len(toks) != len(labs):
                raise ValueError(f"example {i}: {len(toks)} tokens but {len(labs)} labels")
            if len(toks) < 2:
                continue
            if self.cap and len(toks) - 1 > self.cap:
                toks, labs = toks[: self.cap + 1], labs[: self.cap + 1]
            self._ex.append((np.array(toks, np.int32), np.array(labs, np.int32)))
        if not self._ex:
            raise ValueError("no examples with at least 2 tokens")
        self.epoch, self.cursor = 0, 0
        self.real_tokens = self.pad_tokens = 0
        self._plan_epoch = None
        self._plan = None

    # ---- planning -------------------------------------------------------------
    def _epoch_plan(self, epoch: int) -> list:
        """List of batches (each a list of rows, each a list of example indices)."""
        rng = np.random.default_rng([self.seed, epoch])
        n = len(self._ex)
        order = rng.permutation(n) if self.shuffle else np.arange(n)
        lens = np.array([len(t) - 1 for t, _ in self._ex])
        if self.pack:
            rows, fill = [], []
            for i in order:  # first fit
                for r in range(max(0, len(rows) - 8), len(rows)):
                    if fill[r] + lens[i] <= self.cap:
                        rows[r].append(int(i))
                        fill[r] += lens[i]
                        break
                else:
                    rows.append([int(i)])
                    fill.append(lens[i])
            batches = [rows[s:s + self.batch_size] for s in range(0, len(rows), self.batch_size)]
        else:
            pool = self.pool_batches * self.batch_size
            batches = []
            for s in range(0, n, pool):
                chunk = sorted(order[s:s + pool], key=lambda i: lens[i])
                batches += [[[int(i)] for i in chunk[b:b + self.batch_size]]
                            for b in range(0, len(chunk), self.batch_size)]
        if self.shuffle:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        return batches

    def _current_plan(self):
        if self._plan_epoch != self.epoch:
            self._plan, self._plan_epoch = self._epoch_plan(self.epoch), self.epoch
        return self._plan

    def batches_per_epoch(self) -> int:
        return len(self._epoch_plan(0))

    # ---- iteration ------------------------------------------------------------
    def __iter__(self):
        return self

    def __next__(self) -> dict:
        plan = self._current_plan()
        if self.cursor >= len(plan):
            if self.epochs is not None and self.epoch + 1 >= self.epochs:
                raise StopIteration
            self.epoch, self.cursor = self.epoch + 1, 0
            plan = self._current_plan()
        rows = plan[self.cursor]
        self.cursor += 1
        return self._collate(rows)

    def _collate(self, rows) -> dict:
        lengths = [sum(len(self._ex[i][0]) - 1 for i in row) for row in rows]
        T = _round_up(max(lengths), self.pad_multiple)
        B = len(rows)
        inputs = np.full((B, T), self.pad_id, np.int32)
        targets = np.full((B, T), self.pad_id, np.int32)
        labels = np.zeros((B, T), np.int32)
        segments = np.zeros((B, T), np.int32)
        for b, row in enumerate(rows):
            p = 0
            for k, i in enumerate(row):
                toks, labs = self._ex[i]
                L = len(toks) - 1
                inputs[b, p:p + L], targets[b, p:p + L] = toks[:-1], toks[1:]
                labels[b, p:p + L], segments[b, p:p + L] = labs[1:], k + 1
                p += L
        n_real = int(sum(lengths))
        n_pad = B * T - n_real
        self.real_tokens += n_real
        self.pad_tokens += n_pad
        return {
            "inputs": mx.array(inputs), "targets": mx.array(targets), "labels": mx.array(labels),
            "mask": packed_mask(segments) if self.pack else None,
            "segments": mx.array(segments) if self.pack else None,
            "n_real_tokens": n_real, "n_pad": n_pad,
            "n_learn": int((labels == 1).sum()), "n_penalize": int((labels == -1).sum()),
        }

    @property
    def padding_fraction(self) -> float:
        """Pad positions / all positions over every batch yielded so far."""
        total = self.real_tokens + self.pad_tokens
        return self.pad_tokens / total if total else 0.0

    # ---- resume ---------------------------------------------------------------
    def state_dict(self) -> dict:
        """JSON-able position: resume yields exactly the batches that would have come next."""
        return {"seed": self.seed, "epoch": self.epoch, "cursor": self.cursor,
                "n_examples": len(self._ex), "pack": self.pack, "batch_size": self.batch_size,
                "real_tokens": self.real_tokens, "pad_tokens": self.pad_tokens}

    def load_state_dict(self, state: dict) -> None:
        for k in ("seed", "n_examples", "pack", "batch_size"):
            mine = self.seed if k == "seed" else self.state_dict()[k]
            if state.get(k) != mine:
                raise ValueError(f"batcher state mismatch on {k!r}: saved {state.get(k)!r}, now {mine!r}")
        self.epoch, self.cursor = int(state["epoch"]), int(state["cursor"])
        self.real_tokens = int(state.get("real_tokens", 0))
        self.pad_tokens = int(state.get("pad_tokens", 0))
