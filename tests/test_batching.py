"""BatchStream (the trainer's batches): shift, padding, counts, bucketing, the packed mask, packed == alone."""

from collections import namedtuple

import mlx.core as mx
import numpy as np
import pytest

from notme_mlx.errors import ConfigError
from notme_mlx.loss import naive_token_loss, output_head
from notme_mlx.recipe import recipe_from_dict
from notme_mlx.train.forward import hidden_states
from notme_mlx.train.stream import BatchStream, collate, pack_rows

Ex = namedtuple("Ex", "tokens labels")


def _examples(n=50, seed=0, vocab=500):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        L = int(rng.integers(3, 40))
        toks = rng.integers(3, vocab, L).tolist()
        labs = [0] + rng.choice([0, 1, -1], L - 1).tolist()
        out.append(Ex(toks, labs))
    return out


def _epoch(stream):
    return [stream.next() for _ in range(stream.batches_per_epoch())]


def test_shift_padding_and_counts():
    exs = _examples()
    seen, real = 0, 0
    by_input = {tuple(e.tokens[:-1]): e for e in exs}
    for b in _epoch(BatchStream(exs, 4, seed=1)):
        x, y, lab = (np.array(b[k]) for k in ("inputs", "targets", "labels"))
        assert x.shape[1] % 32 == 0 and b["mask"] is None
        for r in range(x.shape[0]):
            e = next(e for k, e in by_input.items() if tuple(x[r, :len(k)]) == k)
            L = len(e.tokens) - 1
            assert (y[r, :L] == e.tokens[1:]).all() and (lab[r, :L] == e.labels[1:]).all()
            assert (lab[r, L:] == 0).all()
            real += L
            seen += 1
        assert b["tokens"] + b["padded"] == x.size
        assert b["n_learn"] == int((lab == 1).sum()) and b["n_penalize"] == int((lab == -1).sum())
        # the loss rows: every non-zero label, in order, padded with label 0
        sel, sl = np.array(b["sel"]), np.array(b["sel_labels"])
        nz = np.nonzero(lab.reshape(-1))[0]
        assert (sel[:len(nz)] == nz).all() and (sl[len(nz):] == 0).all() and len(sel) % 64 == 0
    assert seen == len(exs) and real == sum(len(e.tokens) - 1 for e in exs)


def test_bucketing_reduces_padding():
    exs = _examples(400)
    pad = lambda s: sum(b["padded"] for b in _epoch(s)) / sum(b["tokens"] + b["padded"] for b in _epoch(s))  # noqa: E731
    bucket = BatchStream(exs, 8, seed=0, pad_multiple=1)
    rand = BatchStream(exs, 8, seed=0, pad_multiple=1, pool_size=1)
    assert pad(bucket) < 0.5 * pad(rand)


def test_packed_mask_blocks():
    exs = [Ex([5, 6, 7], [0, 1, 1]), Ex([8, 9, 10, 11], [0, 1, 1, 1])]
    b = collate(exs, [[0, 1]], 8)
    m = np.array(b["mask"])[0, 0]  # segments: positions 0-1 example 0, 2-4 example 1, 5-7 padding
    assert m[1, 0] and not m[2, 1] and m[4, 2] and not m[2, 3] and m[7, 7] and not m[7, 6] and not m[6, 4]


def test_packed_equals_unpacked(tiny_model):
    model = tiny_model[0]
    W = output_head(model)
    exs = _examples(6, seed=2, vocab=512)
    stream = BatchStream(exs, batch_size=8, seed=0, batching="pack", max_len=128)
    total, pads, size = 0, 0, 0
    for b in _epoch(stream):
        h = hidden_states(model, b["inputs"], mask=b["mask"])
        pads, size = pads + b["padded"], size + b["inputs"].size
        for row in stream.plan(0)[0]:
            start = 0
            r = stream.plan(0)[0].index(row)
            for i in row:
                L = len(exs[i].tokens) - 1
                x = b["inputs"][r, start:start + L]
                assert np.array(x).tolist() == exs[i].tokens[:-1]
                alone = hidden_states(model, x[None])[0]
                np.testing.assert_allclose(np.array(h[r, start:start + L]), np.array(alone), rtol=1e-4, atol=1e-4)
                lab = mx.ones((L,), dtype=mx.int32)
                y = b["targets"][r, start:start + L]
                lp, _ = naive_token_loss(h[r, start:start + L], W, y, lab)
                la, _ = naive_token_loss(alone, W, y, lab)
                assert abs(lp.item() - la.item()) <= 1e-5 * abs(la.item())
                start += L
                total += 1
    assert total == 6 and pads / size < 0.5


def _chat_like(n=300, seed=0):
    """Lengths like chat data: lognormal, capped at 256, labels mixed."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        L = int(min(256, max(3, rng.lognormal(4.2, 0.7))))
        toks = rng.integers(3, 500, L).tolist()
        out.append(Ex(toks, [0] + rng.choice([0, 1, -1], L - 1, p=[0.6, 0.35, 0.05]).tolist()))
    return out


def _cover_once(plan, n):
    seen = sorted(i for batch in plan for row in batch for i in row)
    assert seen == list(range(n))


def test_pack_rows_fit_and_cover():
    exs = _chat_like()
    lengths = [len(e.tokens) - 1 for e in exs]
    rows = pack_rows(lengths, np.random.default_rng(0), 256)
    _cover_once([rows], len(exs))
    assert all(sum(lengths[i] for i in r) <= 256 for r in rows)
    # best-fit decreasing: within 5% of the lower bound ceil(total / row)
    assert len(rows) <= 1.05 * -(-sum(lengths) // 256) + 1


def test_batch_tokens_packed_budget_padding_and_shapes():
    exs = _chat_like()
    s = BatchStream(exs, 4, seed=3, batching="pack", max_len=256, batch_tokens=1024)
    _cover_once(s.plan(0), len(exs))
    batches = _epoch(s)
    full = [b for b in batches if b["inputs"].shape[0] == 4]
    assert len(full) >= len(batches) - 1
    for b in batches:
        B, T = b["inputs"].shape
        assert B <= 4 and T <= 256
        assert b["tokens"] <= 1024
    # about the budget of real tokens per full batch, and little padding on chat-like data
    assert np.mean([b["tokens"] for b in full]) >= 0.95 * 1024
    pad = sum(b["padded"] for b in batches) / sum(b["tokens"] + b["padded"] for b in batches)
    assert pad <= 0.05
    # epoch_shapes counts the shapes the collated batches really have
    st = s.epoch_shapes(0)
    real = {}
    for b in batches:
        k = (*b["inputs"].shape, b["sel"].shape[0])
        real[k] = real.get(k, 0) + 1
    assert st["shapes"] == real and st["distinct"] == len(real) <= 8
    assert st["tokens"] == sum(b["tokens"] for b in batches) == sum(len(e.tokens) - 1 for e in exs)
    assert abs(st["padding_fraction"] - pad) < 1e-12


def test_batch_tokens_bucketed_budget():
    exs = _chat_like()
    s = BatchStream(exs, 4, seed=1, batching="bucket", max_len=256, batch_tokens=2048, pad_multiple=32)
    _cover_once(s.plan(0), len(exs))
    batches = _epoch(s)
    for b in batches:
        B, T = b["inputs"].shape
        assert B * T <= 2048 and b["mask"] is None and T % 32 == 0
    # more rows when rows are short: the batch size follows the width
    widths = {b["inputs"].shape[1]: b["inputs"].shape[0] for b in batches}
    assert widths[min(widths)] > widths[max(widths)]
    st = s.epoch_shapes(0)
    assert st["tokens"] == sum(b["tokens"] for b in batches)
    assert st["padded"] == sum(b["padded"] for b in batches)


def test_batch_tokens_resume_same_batches():
    exs = _chat_like(120, seed=4)
    a = BatchStream(exs, 4, seed=9, batching="pack", max_len=256, batch_tokens=512)
    first = [a.next() for _ in range(5)]
    cur = a.cursor()
    rest = [a.next() for _ in range(3)]
    b = BatchStream(exs, 4, seed=9, batching="pack", max_len=256, batch_tokens=512, cursor=cur)
    for x, y in zip(rest, [b.next() for _ in range(3)]):
        assert np.array_equal(np.array(x["inputs"]), np.array(y["inputs"]))
    assert len(first) == 5


def test_batch_tokens_rejects_nonpositive():
    with pytest.raises(ValueError):
        BatchStream(_chat_like(5), 4, seed=0, batch_tokens=0)


def test_recipe_batch_tokens():
    r = recipe_from_dict({"data": {"batch_tokens": 512, "batching": "pack"}})
    assert r.data.batch_tokens == 512 and recipe_from_dict({}).data.batch_tokens is None
    with pytest.raises(ConfigError, match="batch_tokens"):
        recipe_from_dict({"data": {"batch_tokens": 0}})
