"""notme_mlx.bench: token counts vs independent counts, JSON ratios, deterministic data, FLOP formula."""

from __future__ import annotations

import json

import mlx_lm
import numpy as np
import pytest

from notme_mlx.bench import compare as cmp
from notme_mlx.bench.data import equal_length_examples, label_stats, synthetic_chats, tokenize
from notme_mlx.bench.features import batching_padding
from notme_mlx.bench.machine import step_flops
from notme_mlx.bench.runners import Settings, run_mlxlm, run_ours
from notme_mlx.bench.worker import run_spec, write_examples
from notme_mlx.train.stream import BatchStream


@pytest.fixture(scope="module")
def examples(tiny_model_dir):
    _, tok = mlx_lm.load(str(tiny_model_dir))
    ex = tokenize(tok, synthetic_chats(8, seed=1, mu=1.5), 96)
    assert len(ex) == 8
    return ex


def test_synthetic_deterministic_and_chat_like():
    a, b, c = synthetic_chats(200, seed=3), synthetic_chats(200, seed=3), synthetic_chats(200, seed=4)
    assert json.dumps(a) == json.dumps(b)
    assert json.dumps(a) != json.dumps(c)
    words = np.array([len(m["content"].split()) for ex in a for m in ex["messages"] if m["role"] != "system"])
    assert np.median(words) < 12 and words.max() > 5 * np.median(words)  # many short turns, a long tail
    for ex in a:  # spans point at the cue text
        for m in ex["messages"]:
            for s, e, kind in m.get("spans", []):
                assert kind == "penalize" and m["content"][s:e].endswith(("?", "!", "."))


def test_label_stats_independent(examples):
    st = label_stats(examples)
    lab = np.concatenate([np.array(e.labels[1:]) for e in examples])
    assert (st["learn"], st["penalize"], st["context"]) == ((lab == 1).sum(), (lab == -1).sum(), (lab == 0).sum())
    assert st["tokens"] == sum(len(e.tokens) - 1 for e in examples)


@pytest.mark.parametrize("batching,batch_tokens", [("bucket", None), ("pack", None), ("pack", 128)])
def test_ours_counts_every_real_token_once(tiny_model_dir, examples, batching, batch_tokens):
    model, _ = mlx_lm.load(str(tiny_model_dir))
    n_batches = len(BatchStream(examples, 4, 0, batching=batching, max_len=96, batch_tokens=batch_tokens).plan(0))
    s = Settings(batch=4, seq=96, rank=2, alpha=4, steps=n_batches, warmup=0, batching=batching, compile=False,
                 batch_tokens=batch_tokens)
    r = run_ours(model, examples, s)
    # one epoch exactly: every example once
    assert sum(r.tokens) == sum(len(e.tokens) - 1 for e in examples)
    assert sum(r.supervised) == sum(sum(1 for v in e.labels[1:] if v != 0) for e in examples)
    summ = r.summary()
    assert summ["padding_fraction"] == pytest.approx(sum(r.padded) / (sum(r.tokens) + sum(r.padded)))
    assert np.isfinite(summ["final_loss"])


def test_mlxlm_counts_every_real_token_once(tiny_model_dir, examples):
    model, _ = mlx_lm.load(str(tiny_model_dir))
    r = run_mlxlm(model, examples, Settings(batch=4, seq=96, rank=2, alpha=4, steps=2, warmup=0))
    assert len(r.step_s) == 2
    assert sum(r.tokens) == sum(len(e.tokens) - 1 for e in examples)
    first = [next(j for j, v in enumerate(e.labels) if v != 0) for e in examples]
    assert sum(r.supervised) == sum(len(e.tokens) - f for e, f in zip(examples, first))
    widths = [-(-max(len(e.tokens) for e in examples) // 32) * 32]  # upper bound of a row width
    assert all(p >= 0 for p in r.padded) and sum(r.padded) <= 8 * widths[0]


def test_compare_json_ratios(tiny_model_dir, examples, tmp_path):
    s = Settings(batch=4, seq=96, rank=2, alpha=4, steps=1, warmup=0)
    res = cmp.compare(tiny_model_dir, examples, s, repeat=1)
    res = json.loads(json.dumps(res, default=str))  # what --json writes
    for k in ("ratio_tokens_per_sec", "ratio_peak_memory", "penalty_overhead", "sides", "machine", "settings"):
        assert k in res
    for k in ("cpu", "cores", "memory_bytes", "os", "versions"):
        assert k in res["machine"]
    o, t, off = res["sides"]["ours"], res["sides"]["mlx-lm"], res["sides"]["ours_penalty_off"]
    assert res["ratio_tokens_per_sec"] == pytest.approx(o["tokens_per_sec"] / t["tokens_per_sec"])
    assert res["ratio_peak_memory"] == pytest.approx(o["peak_memory"] / t["peak_memory"])
    assert res["penalty_overhead"] == pytest.approx(off["tokens_per_sec"] / o["tokens_per_sec"] - 1)
    assert res["ratio_tokens_per_cpu_sec"] == pytest.approx(o["tokens_per_cpu_sec"] / t["tokens_per_cpu_sec"])
    r = o["repeats"][0]
    assert o["tokens_per_sec"] == pytest.approx(r["tokens"] / r["time_s"])
    # each run was its own process: per-process memory and CPU figures came back
    for side in ("ours", "mlx-lm", "ours_penalty_off"):
        rr = res["sides"][side]["repeats"][0]
        assert rr["side"] == side and rr["max_rss"] > rr["peak_memory"] > 0 and rr["process_cpu_s"] > 0
    assert 0 < res["mfu"]["ours"] < 1 and 0 < res["mfu_cpu"]["ours"] < 1 and res["gemm_peak_flops"]["used"] > 0


def test_worker_runs_one_side_like_compare(tiny_model_dir, examples, tmp_path):
    f = tmp_path / "ex.jsonl"
    write_examples(f, examples)
    s = Settings(batch=4, seq=96, rank=2, alpha=4, steps=2, warmup=0, compile=False)
    out = run_spec({"side": "ours", "model": str(tiny_model_dir), "dequantize": None, "examples": str(f),
                    "settings": json.loads(json.dumps(cmp.dataclasses.asdict(s)))})
    model, _ = mlx_lm.load(str(tiny_model_dir))
    direct = run_ours(model, examples, s).summary()
    assert out["tokens"] == direct["tokens"] and out["padded"] == direct["padded"]
    assert out["final_loss"] == pytest.approx(direct["final_loss"], rel=1e-5)
    assert out["quantized"] is False and out["max_rss"] > 0


def test_aggregate_is_median_and_spread():
    runs = [{"median_step_s": x, "tokens_per_sec": 10 * x, "supervised_tokens_per_sec": x, "padding_fraction": 0.1,
             "tokens_per_cpu_sec": 5 * x, "peak_memory": int(100 * x), "max_rss": int(1000 * x), "tokens": 5}
            for x in (1.0, 3.0, 2.0)]
    a = cmp.aggregate(runs)
    assert a["tokens_per_sec"] == 20.0 and a["tokens_per_sec_min"] == 10.0 and a["tokens_per_sec_max"] == 30.0
    assert a["median_step_s"] == 2.0 and a["tokens_per_cpu_sec"] == 10.0
    assert a["peak_memory"] == 200 and a["peak_memory_max"] == 300 and a["max_rss"] == 2000
    assert a["tokens"] == 15 and a["repeats"] is runs


def test_penalty_off_only_changes_penalize_labels(examples):
    off = cmp.penalty_off(examples)
    for a, b in zip(examples, off):
        assert a.tokens == b.tokens
        assert [1 if v == -1 else v for v in a.labels] == b.labels


def test_batching_padding_counts(examples):
    rows = {r["variant"]: r for r in batching_padding(examples, 4, 96)}
    total = sum(len(e.tokens) - 1 for e in examples)
    assert rows["notme bucket"]["tokens"] == total and rows["notme pack"]["tokens"] == total
    assert rows["mlx-lm iterate_batches"]["tokens"] == total  # 8 examples = 2 full batches
    assert rows["notme pack"]["rows"] <= rows["notme bucket"]["rows"]


def test_equal_length_rows():
    ex = equal_length_examples(5, 33, 100, seed=0)
    assert all(len(e.tokens) == 33 and e.labels == [0] + [1] * 32 for e in ex)
    assert max(max(e.tokens) for e in ex) < 100


def test_step_flops_counts_matmul_params(tiny_model_dir):
    from mlx.utils import tree_flatten

    model, _ = mlx_lm.load(str(tiny_model_dir))
    a = model.args
    blocks = sum(v.size for k, v in tree_flatten(model.parameters()) if k.startswith("model.layers.") and "norm" not in k)
    f = step_flops(a, 10, 4.0, lora_params=7)
    assert f["n_matmul_params"] == blocks + a.vocab_size * a.hidden_size
    attn = 12 * a.num_hidden_layers * a.hidden_size * 4.0 * 10
    assert f["flops"] == pytest.approx(6 * f["n_matmul_params"] * 10 + attn)
    assert f["flops_lora"] == pytest.approx(4 * f["n_matmul_params"] * 10 + 6 * 7 * 10 + attn)
