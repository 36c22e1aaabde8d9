"""Peak extra memory of fused vs naive loss+grad (memory ratios, never wall-clock)."""

import sys
from pathlib import Path

import mlx.core as mx
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from bench_loss import inputs, measure  # noqa: E402

from notme_mlx.loss import fused_token_loss, naive_token_loss  # noqa: E402


def _ratio(n, h, v, chunk):
    x, w, y, lab = inputs(n, h, v)
    naive, _, l0, g0 = measure(naive_token_loss, x, w, y, lab, None)
    fused, _, l1, g1 = measure(fused_token_loss, x, w, y, lab, chunk)
    assert abs(l1.item() - l0.item()) <= 1e-5 * abs(l0.item())
    return naive / fused


def test_fused_memory_ratio_small():
    # [N, V] fp32 logits = 96 MiB; measured naive ~480 MiB, fused (chunk 2048) ~48 MiB.
    assert _ratio(512, 64, 49152, 2048) >= 3.0


@pytest.mark.slow
def test_fused_memory_ratio_h576():
    assert _ratio(1024, 576, 49152, 2048) >= 3.0
