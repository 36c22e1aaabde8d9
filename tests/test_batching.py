"""Batcher: shift, padding, determinism, resume, packing isolation."""

from collections import namedtuple

import mlx.core as mx
import numpy as np

from notme_mlx.loss import naive_token_loss, output_head
from notme_mlx.train.batching import Batcher, packed_mask
from notme_mlx.train.forward import hidden_states

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


def _key(b):
    return np.array(b["inputs"]).tobytes() + np.array(b["labels"]).tobytes()


def test_shift_padding_and_counts():
    exs = _examples()
    bat = Batcher(exs, batch_size=4, seed=1, epochs=1)
    seen, real = 0, 0
    by_input = {tuple(e.tokens[:-1]): e for e in exs}
    for b in bat:
        x, y, lab = (np.array(b[k]) for k in ("inputs", "targets", "labels"))
        assert x.shape[1] % 32 == 0 and b["mask"] is None
        for r in range(x.shape[0]):
            n = int((lab[r] != 0).sum())  # not all non-pad, but pads must be 0
            e = next(e for k, e in by_input.items() if tuple(x[r, :len(k)]) == k)
            L = len(e.tokens) - 1
            assert (y[r, :L] == e.tokens[1:]).all() and (lab[r, :L] == e.labels[1:]).all()
            assert (lab[r, L:] == 0).all() and n <= L
            real += L
            seen += 1
        assert b["n_real_tokens"] + b["n_pad"] == x.size
    assert seen == len(exs) and real == sum(len(e.tokens) - 1 for e in exs)
    assert 0 < bat.padding_fraction < 1


def test_deterministic_and_resumable():
    exs = _examples()
    a = [_key(b) for b in Batcher(exs, 4, seed=3, epochs=2)]
    b = [_key(b) for b in Batcher(exs, 4, seed=3, epochs=2)]
    c = [_key(b) for b in Batcher(exs, 4, seed=4, epochs=2)]
    assert a == b and a != c
    it = Batcher(exs, 4, seed=3, epochs=2)
    first = [_key(next(it)) for _ in range(17)]
    state = it.state_dict()
    it2 = Batcher(exs, 4, seed=3, epochs=2)
    it2.load_state_dict(state)
    assert first + [_key(x) for x in it2] == a


def test_bucketing_reduces_padding():
    exs = _examples(400)
    bucket = Batcher(exs, 8, seed=0, epochs=1, pad_multiple=1)
    rand = Batcher(exs, 8, seed=0, epochs=1, pad_multiple=1, pool_batches=1)
    list(bucket), list(rand)
    assert bucket.padding_fraction < rand.padding_fraction


def test_packed_mask_blocks():
    seg = np.array([[1, 1, 2, 2, 2, 0]])
    m = np.array(packed_mask(seg))[0, 0]
    assert m[1, 0] and not m[2, 1] and m[4, 2] and not m[2, 3] and m[5, 5] and not m[5, 4]


def test_packed_equals_unpacked(tiny_model):
    model = tiny_model[0]
    W = output_head(model)
    exs = _examples(6, seed=2, vocab=512)
    packed = Batcher(exs, batch_size=8, max_seq_len=128, pack=True, seed=0, epochs=1)
    total = 0
    for b in packed:
        h = hidden_states(model, b["inputs"], mask=b["mask"])
        seg = np.array(b["segments"])
        for r in range(seg.shape[0]):
            for s in range(1, seg[r].max() + 1):
                pos = np.nonzero(seg[r] == s)[0]
                x = b["inputs"][r, pos[0]:pos[-1] + 1]
                alone = hidden_states(model, x[None])[0]
                np.testing.assert_allclose(np.array(h[r, pos[0]:pos[-1] + 1]), np.array(alone),
                                           rtol=1e-4, atol=1e-4)
                lab = mx.ones((len(pos),), dtype=mx.int32)
                y = b["targets"][r, pos[0]:pos[-1] + 1]
                lp, _ = naive_token_loss(h[r, pos[0]:pos[-1] + 1], W, y, lab)
                la, _ = naive_token_loss(alone, W, y, lab)
                assert abs(lp.item() - la.item()) <= 1e-5 * abs(la.item())
                total += 1
    assert total == 6 and packed.padding_fraction < 0.5
