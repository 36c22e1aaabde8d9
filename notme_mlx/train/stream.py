"""A resumable, epoch-seeded batch stream over tokenized examples.

The order of epoch e is a pure function of (seed, e), so the stream's whole state is
its cursor {"epoch", "index"}: a resumed run rebuilds the epoch's plan and skips to
the saved batch. Plans come from `bucket_plan` (length-bucketed: shuffle, cut into
pools of `pool_size` batches, sort each pool by length, shuffle the batches) or
`budget_plan` (batches of about `batch_tokens` positions: packed rows of several examples
under a block-diagonal causal mask, or length buckets). Packing without a budget gets one of
batch_size times the mean example length (`auto_budget`), so a packed micro-batch holds
about as many examples as a bucketed one and an epoch has about as many steps.
"""

from __future__ import annotations

import bisect

import numpy as np
import mlx.core as mx


def bucket_plan(lengths: list[int], batch_size: int, rng: np.random.Generator, pool_size: int = 64) -> list[list[int]]:
    """Batches of example indices, similar lengths together. Returns [[i, ...], ...]."""
    order = rng.permutation(len(lengths))
    pool = batch_size * pool_size
    batches = []
    for s in range(0, len(order), pool):
        chunk = sorted(order[s:s + pool].tolist(), key=lambda i: lengths[i])
        batches += [chunk[j:j + batch_size] for j in range(0, len(chunk), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def pack_rows(lengths: list[int], rng: np.random.Generator, max_len: int) -> list[list[int]]:
    """Rows of example indices whose lengths sum to <= max_len, packed best-fit decreasing.

    Examples are shuffled, then stably sorted longest first (equal lengths stay in random
    order), and each goes into the row with the least room that still fits it; an example
    longer than max_len gets a row of its own. Rows come back in random order.
    """
    order = rng.permutation(len(lengths)).tolist()
    order.sort(key=lambda i: -min(lengths[i], max_len))
    rows: list[list[int]] = []
    free: list[tuple[int, int]] = []  # (room, row), sorted
    for i in order:
        n = min(lengths[i], max_len)
        k = bisect.bisect_left(free, (n, -1))
        if k < len(free):
            room, r = free.pop(k)
            rows[r].append(i)
        else:
            room, r = max_len, len(rows)
            rows.append([i])
        if room - n > 0:
            bisect.insort(free, (room - n, r))
    return [rows[i] for i in rng.permutation(len(rows))]


def budget_plan(lengths: list[int], batch_tokens: int, rng: np.random.Generator, max_len: int,
                pad_multiple: int = 32, pack: bool = True, pool_size: int = 64) -> list[list[list[int]]]:
    """Batches that each hold about `batch_tokens` token positions instead of a fixed number of rows.

    pack: rows of `row = min(max_len, batch_tokens)` (rounded up to pad_multiple) are packed
        first-fit (`pack_rows`), and each batch takes batch_tokens // row of them, so every full
        batch has the same [B, row] shape and almost no padding.
    not pack: one example per row; within random pools of about pool_size batches, examples are
        sorted by length and cut from the longest down, each batch taking
        batch_tokens // T rows where T is its longest row rounded up to pad_multiple (so the
        batch shape takes one of max_len / pad_multiple values).
    Returns [[row, ...], ...] with row = [example index, ...]; batches in random order.
    """
    if batch_tokens < 1:
        raise ValueError(f"batch_tokens must be >= 1, got {batch_tokens}")
    if pack:
        row = round_up(min(max_len, batch_tokens), pad_multiple)
        rows = pack_rows(lengths, rng, row)
        per = max(1, batch_tokens // row)
        return [rows[j:j + per] for j in range(0, len(rows), per)]
    order = rng.permutation(len(lengths)).tolist()
    mean = max(float(np.mean(lengths)) if lengths else 1.0, 1.0)
    pool = max(1, int(pool_size * batch_tokens / mean))
    batches = []
    for s in range(0, len(order), pool):
        chunk = sorted(order[s:s + pool], key=lambda i: lengths[i])
        while chunk:
            T = round_up(min(lengths[chunk[-1]], max_len), pad_multiple)
            take = max(1, batch_tokens // max(T, 1))
            batches.append([[i] for i in chunk[-take:][::-1]])
            del chunk[-take:]
    return [batches[i] for i in rng.permutation(len(batches))]


def auto_budget(lengths: list[int], batch_size: int, max_len: int, pad_multiple: int = 32) -> int:
    """Token budget of a packed micro-batch that holds about `batch_size` examples: batch_size x
    the mean example length (capped at max_len), rounded up to pad_multiple; when that is longer
    than a row of max_len, the nearest whole number of rows (`budget_plan` takes budget // row)."""
    mean = float(np.mean([min(n, max_len) for n in lengths])) if len(lengths) else 1.0
    budget = round_up(max(1, batch_size * int(np.ceil(mean))), pad_multiple)
    row = round_up(max_len, pad_multiple)
    return budget if budget <= row else row * max(1, round(budget / row))


def round_up(n: int, m: int) -> int:
    return -(-n // m) * m


def collate(examples, rows: list[list[int]], pad_multiple: int, pad_id: int = 0, max_len: int | None = None) -> dict:
    """Rows of example indices -> training arrays.

    Each example gives inputs = tokens[:-1], targets = tokens[1:], labels = labels[1:].
    Returns {"inputs", "targets", "labels": int32 [B, T], "mask": bool [B, 1, T, T] or None,
    "tokens": real tokens, "padded": pad positions, "n_learn", "n_penalize"} (counts are ints).
    """
    seqs = []
    for row in rows:
        toks, tgts, labs, seg = [], [], [], []
        for k, i in enumerate(row):
            ex = examples[i]
            toks += ex.tokens[:-1]
            tgts += ex.tokens[1:]
            labs += ex.labels[1:]
            seg += [k] * (len(ex.tokens) - 1)
        seqs.append((toks, tgts, labs, seg))
    T = round_up(max(len(s[0]) for s in seqs), pad_multiple)
    if max_len is not None:
        T = min(T, max(max_len, max(len(s[0]) for s in seqs)))
    B = len(seqs)
    inp = np.full((B, T), pad_id, np.int32)
    tgt = np.full((B, T), pad_id, np.int32)
    lab = np.zeros((B, T), np.int32)
    segs = np.full((B, T), -1, np.int32)
    for b, (t, y, l, s) in enumerate(seqs):
        n = len(t)
        inp[b, :n], tgt[b, :n], lab[b, :n], segs[b, :n] = t, y, l, s
    packed = any(len(r) > 1 for r in rows)
    mask = None
    if packed:
        causal = np.tril(np.ones((T, T), bool))
        same = (segs[:, :, None] == segs[:, None, :]) & (segs[:, :, None] >= 0)
        mask = mx.array((same | np.eye(T, dtype=bool)[None]) & causal[None])[:, None]  # [B, 1, T, T]
    real = int((segs >= 0).sum())
    out = {"inputs": mx.array(inp), "targets": mx.array(tgt), "labels": mx.array(lab), "mask": mask,
           "tokens": real, "padded": B * T - real,
           "n_learn": int((lab == 1).sum()), "n_penalize": int((lab == -1).sum())}
    out.update(supervised(tgt, lab, max(pad_multiple, 64)))
    return out


def supervised(targets: np.ndarray, labels: np.ndarray, multiple: int = 64) -> dict:
    """Flat positions with a non-zero label, padded to a multiple (padding: position 0, label 0).

    The loss runs on these rows only, so context and padding cost no vocabulary pass.
    Returns {"sel": [M] int32 indices into the flattened [B*T], "sel_targets", "sel_labels": [M]}.
    """
    flat = labels.reshape(-1)
    idx = np.nonzero(flat)[0]
    M = round_up(max(len(idx), 1), multiple)
    sel, st, sl = (np.zeros(M, np.int32) for _ in range(3))
    sel[: len(idx)] = idx
    st[: len(idx)] = targets.reshape(-1)[idx]
    sl[: len(idx)] = flat[idx]
    return {"sel": mx.array(sel), "sel_targets": mx.array(st), "sel_labels": mx.array(sl)}


class BatchStream:
    """Endless micro-batches over epochs with a saveable cursor.

    Args:
        examples: tokenized examples (`.tokens`, `.labels`); batch_size: rows per batch;
        seed: order seed; batching: "bucket" | "pack"; max_len: longest row (and example).
        batch_tokens: when set, batches hold about this many token positions instead of
            batch_size rows (`budget_plan`; batch_size is then unused). Packing without it
            uses `auto_budget` (about batch_size examples' tokens per batch).
        rank, world: data-parallel shard: rank r takes batches r, r + world, ... of every epoch
            (all ranks share the seed, so together they cover the epoch once).
    """

    def __init__(self, examples, batch_size: int, seed: int, batching: str = "bucket", pad_multiple: int = 32,
                 pool_size: int = 64, max_len: int = 1024, pad_id: int = 0, cursor: dict | None = None,
                 rank: int = 0, world: int = 1, batch_tokens: int | None = None):
        if batch_tokens is not None and batch_tokens < 1:
            raise ValueError(f"batch_tokens must be >= 1, got {batch_tokens}")
        self.examples, self.batch_size, self.seed = examples, batch_size, seed
        self.rank, self.world = rank, world
        self.batching, self.pad_multiple, self.pool_size = batching, pad_multiple, pool_size
        self.max_len, self.pad_id = max_len, pad_id
        self.lengths = [len(e.tokens) - 1 for e in examples]
        if batch_tokens is None and batching == "pack":
            batch_tokens = auto_budget(self.lengths, batch_size, max_len, pad_multiple)
        self.batch_tokens = batch_tokens
        self.epoch, self.index = (cursor or {}).get("epoch", 0), (cursor or {}).get("index", 0)
        self._plan_epoch, self._plan = None, None

    def plan(self, epoch: int) -> list[list[list[int]]]:
        """The epoch's batches, each a list of rows of example indices."""
        if self._plan_epoch != epoch:
            rng = np.random.default_rng([self.seed, epoch])
            if self.batch_tokens:
                self._plan = budget_plan(self.lengths, self.batch_tokens, rng, self.max_len, self.pad_multiple,
                                         self.batching == "pack", self.pool_size)
            else:
                self._plan = [[[i] for i in b] for b in bucket_plan(self.lengths, self.batch_size, rng, self.pool_size)]
            self._plan_epoch = epoch
        return self._plan

    def batches_per_epoch(self) -> int:
        """Batches this rank takes per epoch."""
        return max(len(self.plan(0)) // self.world, 1)

    def cursor(self) -> dict:
        """State to checkpoint: the next batch is batch `index` of epoch `epoch`."""
        return {"epoch": self.epoch, "index": self.index}

    def next(self) -> dict:
        plan = self.plan(self.epoch)
        if self.index >= max(len(plan) // self.world, 1):
            self.epoch, self.index = self.epoch + 1, 0
            plan = self.plan(self.epoch)
        rows = plan[(self.index * self.world + self.rank) % len(plan)]
        self.index += 1
        return collate(self.examples, rows, self.pad_multiple, self.pad_id, self._row_cap())

    def _row_cap(self) -> int | None:
        """Longest row length packing aims at (caps the padded width); None when not packing."""
        if self.batching != "pack":
            return None
        return round_up(min(self.max_len, self.batch_tokens), self.pad_multiple) if self.batch_tokens else self.max_len

    def epoch_shapes(self, epoch: int = 0) -> dict:
        """The step shapes of an epoch, counted from the plan without building arrays.

        Returns {"shapes": {(B, T, M): batches}, "distinct": n, "tokens": real positions,
        "padded": pad positions, "padding_fraction"}; (B, T) is the [rows, width] of the inputs and
        M the padded number of loss rows (`supervised`), the shapes a compiled step sees.
        """
        if not hasattr(self, "_sup"):
            self._sup = [sum(1 for v in e.labels[1:] if v != 0) for e in self.examples]
        cap, lm = self._row_cap(), max(self.pad_multiple, 64)
        shapes: dict = {}
        real = size = 0
        for rows in self.plan(epoch):
            fill = [sum(self.lengths[i] for i in r) for r in rows]
            T = round_up(max(fill), self.pad_multiple)
            if cap is not None:
                T = min(T, max(cap, max(fill)))
            M = round_up(max(sum(self._sup[i] for r in rows for i in r), 1), lm)
            key = (len(rows), T, M)
            shapes[key] = shapes.get(key, 0) + 1
            real, size = real + sum(fill), size + len(rows) * T
        return {"shapes": shapes, "distinct": len(shapes), "tokens": real, "padded": size - real,
                "padding_fraction": (size - real) / max(size, 1)}
