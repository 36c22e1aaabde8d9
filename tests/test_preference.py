"""Preference losses against plain float64 formulas, and gradients flow to the policy only."""

import math

import mlx.core as mx
import numpy as np

from notme_mlx.train.preference import dpo_loss, orpo_loss, pair_logprobs, simpo_loss


def _sig(x):
    return 1 / (1 + np.exp(-x))


C = np.array([-12.0, -30.5, -7.25, -50.0])
R = np.array([-15.0, -29.0, -9.0, -40.0])
RC = np.array([-13.0, -31.0, -8.0, -45.0])
RR = np.array([-14.0, -30.0, -8.5, -41.0])


def test_dpo():
    loss, st = dpo_loss(mx.array(C), mx.array(R), mx.array(RC), mx.array(RR), beta=0.2)
    m = 0.2 * ((C - RC) - (R - RR))
    assert math.isclose(loss.item(), -np.log(_sig(m)).mean(), rel_tol=1e-6)
    assert math.isclose(st["accuracy"].item(), (m > 0).mean())
    g = mx.grad(lambda r: dpo_loss(mx.array(C), mx.array(R), r, mx.array(RR))[0])(mx.array(RC))
    assert float(mx.abs(g).max()) == 0.0  # cached reference gets no gradient


def test_simpo():
    a, b = C / 10, R / 12
    loss, st = simpo_loss(mx.array(a), mx.array(b), beta=2.0, gamma=0.5)
    m = 2.0 * (a - b) - 0.5
    assert math.isclose(loss.item(), -np.log(_sig(m)).mean(), rel_tol=1e-6)
    assert math.isclose(st["margin"].item(), m.mean(), rel_tol=1e-6)


def test_orpo():
    a, b = C / 20, R / 15
    loss, st = orpo_loss(mx.array(a), mx.array(b), lam=0.1)
    lo = lambda x: np.log(np.exp(x) / (1 - np.exp(x)))  # noqa: E731
    ref = -a.mean() + 0.1 * (-np.log(_sig(lo(a) - lo(b)))).mean()
    assert math.isclose(loss.item(), ref, rel_tol=1e-5)
    # raising the chosen log-prob lowers the loss
    g = mx.grad(lambda x: orpo_loss(x, mx.array(b))[0])(mx.array(a))
    assert bool((g < 0).all())


def test_pair_logprobs_matches_full_softmax():
    k = mx.random.split(mx.random.key(0), 3)
    h = mx.random.normal((2, 5, 8), key=k[0])
    w = mx.random.normal((50, 8), key=k[1])
    y = mx.random.randint(0, 50, (2, 5), key=k[2]).astype(mx.int32)
    mask = mx.array([[0, 1, 1, 1, 0], [0, 0, 1, 1, 1]])
    s, m = pair_logprobs(h, w, y, mask, chunk_size=16)
    lg = np.array(h, np.float64) @ np.array(w, np.float64).T
    lp = lg - np.log(np.exp(lg).sum(-1, keepdims=True))
    tok = np.take_along_axis(lp, np.array(y)[..., None], -1)[..., 0] * np.array(mask)
    np.testing.assert_allclose(np.array(s), tok.sum(-1), rtol=1e-5)
    np.testing.assert_allclose(np.array(m), tok.sum(-1) / 3, rtol=1e-5)
