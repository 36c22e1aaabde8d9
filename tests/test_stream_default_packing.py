"""Packing as the recipe default: without a token budget a packed micro-batch holds about
batch_size examples (stream.auto_budget), so an epoch keeps about the steps bucketing gives."""

from collections import namedtuple

import numpy as np
import pytest

from notme_mlx.recipe import Recipe
from notme_mlx.train.stream import BatchStream, auto_budget

Ex = namedtuple("Ex", "tokens labels")


def _chat_like(n=240, seed=0, cap=256):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        L = int(min(cap, max(3, rng.lognormal(4.2, 0.7))))
        out.append(Ex(rng.integers(3, 500, L).tolist(), [0] + [1] * (L - 1)))
    return out


def test_recipe_default_is_packing():
    assert Recipe().data.batching == "pack" and Recipe().data.batch_tokens is None


def test_auto_budget_arithmetic():
    # mean 100 (lengths capped at max_len first), 4 examples: 400 -> 416 (pad multiple 32)
    assert auto_budget([50, 150, 100, 100], 4, 1024, 32) == 416
    assert auto_budget([50, 400], 4, 128, 32) == 384   # mean of (50, 128) = 89 -> 356 -> 384: 3 rows of 128
    assert auto_budget([80, 80], 4, 256, 32) == 256    # 320 is 1.25 rows of 256: the nearest, one row
    assert auto_budget([100, 100], 7, 256, 32) == 768  # 704 is 2.75 rows: three
    assert auto_budget([10, 30], 2, 128, 32) == 64


@pytest.mark.parametrize("batch_size,max_len", [(4, 1024), (4, 256), (8, 512)])
def test_default_packing_keeps_examples_per_step_and_cuts_padding(batch_size, max_len):
    exs = _chat_like(cap=max_len)
    pack = BatchStream(exs, batch_size, seed=1, batching="pack", max_len=max_len)
    bucket = BatchStream(exs, batch_size, seed=1, batching="bucket", max_len=max_len)
    plan = pack.plan(0)
    assert sorted(i for b in plan for r in b for i in r) == list(range(len(exs)))  # each example once
    per_batch = len(exs) / len(plan)
    assert 0.7 * batch_size <= per_batch <= 1.3 * batch_size
    assert 0.75 <= len(plan) / len(bucket.plan(0)) <= 1.45
    sp, sb = pack.epoch_shapes(0), bucket.epoch_shapes(0)
    assert sp["tokens"] == sb["tokens"] == sum(len(e.tokens) - 1 for e in exs)
    assert sp["padding_fraction"] < sb["padding_fraction"] and sp["distinct"] <= sb["distinct"]
    for b in plan:  # every row fits its width
        assert all(sum(len(exs[i].tokens) - 1 for i in r) <= pack._row_cap() for r in b if len(r) > 1)
