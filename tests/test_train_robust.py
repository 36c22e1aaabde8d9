"""Non-finite steps are skipped and counted (and stop the run after N in a row, keeping the
last good checkpoint); SIGINT saves a checkpoint and exits cleanly; schedules match a
plain-Python reference; checkpoints round-trip the optimizer state."""

from __future__ import annotations

import math
import os
import signal
from functools import partial

import mlx.core as mx
import mlx.optimizers as optim
import numpy as np
import pytest
from mlx.utils import tree_flatten

from notme_mlx.data.labels import tokenize_example
from notme_mlx.lora import apply_lora, trainable_parameters
from notme_mlx.train.trainer import lora_config
from notme_mlx.train import checkpoint as ckpt
from notme_mlx.recipe import ScheduleConfig, load_recipe
from notme_mlx.train.schedule import build_optimizer, build_schedule, lr_at
from notme_mlx.train.stream import BatchStream
from notme_mlx.train.loop import Interrupted, TrainingStopped, default_loss, local_step, train_loop
from test_train import make_examples


class ListStream:
    """Batches from a list, each with a 'poison' multiplier (1.0 or nan)."""

    def __init__(self, batches, poison, on_next=None):
        self.batches, self.poison, self.i, self.on_next = batches, poison, 0, on_next

    def next(self):
        b = dict(self.batches[self.i % len(self.batches)])
        b["poison"] = mx.array(self.poison[self.i % len(self.poison)], mx.float32)
        self.i += 1
        if self.on_next:
            self.on_next(self.i)
        return b

    def cursor(self):
        return {"i": self.i}


def poisoned_loss(model, batch, nl, npn):
    loss, stats = default_loss(model, batch, nl, npn, penalty_weight=1.0, chunk_size=128)
    return loss * batch["poison"], stats


@pytest.fixture()
def setup(tiny_model_dir):
    from mlx_lm import load

    model, tok = load(str(tiny_model_dir))
    mx.random.seed(0)
    apply_lora(model, lora_config(load_recipe(None, {"lora.rank": 2}).lora))
    exs = [tokenize_example(tok, e, 64) for e in make_examples(8)]
    batches = [BatchStream(exs, 4, 0).next() for _ in range(1)]
    return model, batches


def _loop(model, stream, saves, **kw):
    opt = optim.AdamW(1e-2)
    snap = lambda st: saves.append((st.step, {k: np.array(v) for k, v in  # noqa: E731
                                              tree_flatten(model.trainable_parameters())}, int(opt.state.get("step", mx.array(0)).item())))
    args = dict(total_steps=4, state=ckpt.TrainState(), grad_accum=1, grad_clip=1.0, seed=0, max_bad_steps=3,
                save=snap, save_every=1)
    args.update(kw)
    return train_loop(model, opt, stream, local_step(model, poisoned_loss), **args)


def test_nonfinite_step_skipped_and_counted(setup):
    model, batches = setup
    saves = []
    res = _loop(model, ListStream(batches, [1.0, math.nan, 1.0, 1.0]), saves, save_every=0,
                save=None, log=lambda m: saves.append(m))
    # save=None is never called (save_every=0); log records per step
    recs = [m for m in saves if isinstance(m, dict)]
    assert res.skipped == 1 and [r["skipped"] for r in recs] == [0, 1, 1, 1]
    assert math.isnan(recs[1]["loss"])


def test_skip_leaves_params_and_optimizer_untouched(setup):
    model, batches = setup
    opt = optim.AdamW(1e-2)
    snaps = {}

    def snap(i):  # called as batch i is fetched: the state after step i - 1
        snaps[i] = ({k: np.array(v) for k, v in tree_flatten(model.trainable_parameters())},
                    int(opt.state["step"].item()) if "step" in opt.state else 0)

    stream = ListStream(batches, [1.0, math.nan, 1.0, 1.0], on_next=snap)
    train_loop(model, opt, stream, local_step(model, poisoned_loss), total_steps=4, state=ckpt.TrainState(), grad_accum=1,
               grad_clip=1.0, seed=0, max_bad_steps=3, save=lambda st: None)
    (p2, o2), (p3, o3), (p4, o4) = snaps[2], snaps[3], snaps[4]
    assert all(np.array_equal(p2[k], p3[k]) for k in p2) and o2 == o3 == 1  # step 2 skipped
    assert any(not np.array_equal(p3[k], p4[k]) for k in p3) and o4 == 2


def test_stop_after_n_bad_in_a_row_keeps_last_good(setup):
    model, batches = setup
    saves = []
    with pytest.raises(TrainingStopped, match="3 non-finite steps in a row at step 4"):
        _loop(model, ListStream(batches, [1.0, math.nan, math.nan, math.nan]), saves, save_every=1,
              total_steps=10)
    # steps 2 and 3 were bad but changed nothing; the checkpoint after step 1 is the last good state
    assert all(np.array_equal(saves[0][1][k], saves[-1][1][k]) for k in saves[0][1])


def test_sigint_saves_and_exits(setup):
    model, batches = setup
    saves = []
    before = signal.getsignal(signal.SIGINT)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # a background job may start with SIG_IGN
    stream = ListStream(batches, [1.0], on_next=lambda i: i == 2 and os.kill(os.getpid(), signal.SIGINT))
    with pytest.raises(Interrupted, match="SIGINT at step 2: checkpoint saved"):
        _loop(model, stream, saves, save_every=0, total_steps=10)
    assert [s[0] for s in saves] == [2]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handler restored
    signal.signal(signal.SIGINT, before)


@pytest.mark.parametrize("kind", ["constant", "linear", "cosine"])
def test_schedule_matches_reference(kind):
    sc = ScheduleConfig(type=kind, warmup_steps=3, min_lr_ratio=0.1)
    f = build_schedule(1e-3, 20, sc)
    for s in [0, 1, 3, 4, 10, 19, 20, 25]:
        assert abs(f(mx.array(s)).item() - lr_at(s, 1e-3, 20, sc)) < 1e-9
    assert abs(lr_at(0, 1e-3, 20, sc) - 2.5e-4) < 1e-12 and abs(lr_at(3, 1e-3, 20, sc) - 1e-3) < 1e-12


def test_optimizer_state_roundtrip(tmp_path, setup):
    model, batches = setup
    r = load_recipe(None)
    opt = build_optimizer(r.optimizer, r.schedule, 10)
    params = model.trainable_parameters()
    opt.init(params)
    grads = {k: mx.ones_like(v) for k, v in tree_flatten(params)}
    from mlx.utils import tree_unflatten

    opt.update(model, tree_unflatten(list(grads.items())))
    st = ckpt.TrainState(step=1, cursor={"epoch": 0, "index": 1})
    st.rng = ckpt.capture_rng()
    path = ckpt.save(tmp_path, st, trainable_parameters(model), opt.state, "x: 1\n")
    fresh = build_optimizer(r.optimizer, r.schedule, 10)
    ckpt.restore_optimizer(fresh, params, path)
    a, b = dict(tree_flatten(opt.state)), dict(tree_flatten(fresh.state))
    assert set(a) == set(b) and all(np.array_equal(np.array(a[k]), np.array(b[k])) for k in a)
    assert ckpt.load_state(path).cursor == {"epoch": 0, "index": 1}
    assert oct(os.stat(path / "adapter.safetensors").st_mode & 0o777) == "0o600"


def test_stream_cursor_resume_and_rank_shards():
    from types import SimpleNamespace

    exs = [SimpleNamespace(tokens=[100 + i] + list(range(2 + i % 7)), labels=[0] + [1] * (2 + i % 7))
           for i in range(40)]  # first token = example id
    a = BatchStream(exs, 4, seed=3)
    seq = [np.array(a.next()["inputs"]).tolist() for _ in range(15)]  # crosses into epoch 1
    b = BatchStream(exs, 4, seed=3)
    for _ in range(7):
        b.next()
    c = BatchStream(exs, 4, seed=3, cursor=b.cursor())
    assert [np.array(c.next()["inputs"]).tolist() for _ in range(8)] == seq[7:]
    # two data-parallel ranks split each epoch's batches disjointly and completely
    full = BatchStream(exs, 4, seed=3).plan(0)
    r0, r1 = (BatchStream(exs, 4, seed=3, rank=r, world=2) for r in (0, 1))
    n = r0.batches_per_epoch()
    assert n == len(full) // 2
    ids = lambda s: {int(x) for _ in range(n) for x in np.array(s.next()["inputs"])[:, 0]}  # noqa: E731
    i0, i1 = ids(r0), ids(r1)
    assert i0.isdisjoint(i1) and i0 | i1 == set(range(100, 140))


def test_memory_estimate_arithmetic():
    from types import SimpleNamespace

    from notme_mlx.train.metrics import estimate_memory

    args = SimpleNamespace(hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4,
                           vocab_size=512)
    r = load_recipe(None, {"batch_size": 2, "data.max_seq_len": 32, "lora.num_layers": 2, "loss.chunk_size": 256})
    e = estimate_memory(1000, 10, args, r)
    per_layer = 2 * 32 * (10 * 64 + 3 * 128) * 4 + 2 * 4 * 32 * 32 * 4
    assert e["activations"] == 2 * per_layer  # only the 2 LoRA blocks keep activations
    assert e["lora"] == 160 and e["loss"] == 2 * 32 * 256 * 8
    assert e["total"] == 1000 + 160 + 2 * per_layer + 2 * 32 * 256 * 8
    g = estimate_memory(1000, 10, args, load_recipe(None, {"batch_size": 2, "data.max_seq_len": 32,
                                                           "grad_checkpoint": True, "loss.chunk_size": 256}))
    assert g["activations"] == per_layer + 2 * 32 * 64 * 4 * 4


def test_packed_rows_do_not_attend_across_examples(tiny_model_dir):
    """Two examples packed in one row (block-diagonal causal mask) give the same summed CE as
    each alone (RoPE is relative, so the row offset does not matter up to float error)."""
    from mlx_lm import load

    from notme_mlx.train.stream import collate

    model, tok = load(str(tiny_model_dir))
    exs = [tokenize_example(tok, e, 64) for e in make_examples(2, seed=5)]
    packed = collate(exs, [[0, 1]], 32)
    alone = collate(exs, [[0], [1]], 32)
    assert packed["mask"] is not None and packed["inputs"].shape[0] == 1 and alone["mask"] is None
    keys = ("inputs", "targets", "labels", "mask", "sel", "sel_targets", "sel_labels")
    _, sp = default_loss(model, {k: packed[k] for k in keys}, None, None, penalty_weight=1.0)
    _, sa = default_loss(model, {k: alone[k] for k in keys if alone[k] is not None}, None, None, penalty_weight=1.0)
    assert sp["n_learn"].item() == sa["n_learn"].item() > 0
    assert abs(sp["ce_sum"].item() - sa["ce_sum"].item()) < 1e-3 * abs(sa["ce_sum"].item())
    # without the block mask the second example would see the first: the loss changes
    nomask = {k: packed[k] for k in keys if k != "mask"}
    _, sn = default_loss(model, nomask, None, None, penalty_weight=1.0)
    assert abs(sn["ce_sum"].item() - sa["ce_sum"].item()) > 1e-3 * abs(sa["ce_sum"].item())


def test_group_of_one_matches_no_group(tiny_model_dir):
    """The data-parallel path (counts and grads all-summed over `group`) on a size-1 group is
    the single-process step."""
    from mlx_lm import load

    out = []
    for group in (None, mx.distributed.init()):
        model, tok = load(str(tiny_model_dir))
        mx.random.seed(0)
        apply_lora(model, lora_config(load_recipe(None, {"lora.rank": 2}).lora))
        exs = [tokenize_example(tok, e, 64) for e in make_examples(8)]
        logs = []
        train_loop(model, optim.AdamW(1e-2), BatchStream(exs, 4, 0),
                   local_step(model, partial(default_loss, chunk_size=128), group),
                   total_steps=3, state=ckpt.TrainState(), grad_accum=1, grad_clip=1.0, seed=0, max_bad_steps=3,
                   save=lambda st: None, log=logs.append)
        out.append([m["loss"] for m in logs])
    assert out[0] == out[1]
