"""The five-layer runner's pure parts: corpus conversion, held-out eval subsample, goal checks."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCH))
import bench_five_layer as B  # noqa: E402

from notme_mlx.data.builder import read_messages  # noqa: E402
from notme_mlx.eval.prompts import load_set  # noqa: E402


def _synth_files(tmp_path: Path) -> tuple[Path, Path]:
    ex = [{"messages": [{"role": "user", "content": "Q one", "train": False},
                        {"role": "assistant", "content": "A one.", "train": True}],
           "meta": {"conversation_id": "synth-0-0", "revised": True}},
          {"messages": [{"role": "user", "content": "Q two", "train": False},
                        {"role": "assistant", "content": "A two.", "train": True}],
           "meta": {"conversation_id": "synth-0-1", "revised": False}}]
    pairs = [{"prompt": [{"role": "user", "content": "Q one"}], "chosen": "A one.",
              "rejected": "Great question! A one. Does that make sense?", "meta": {"conversation_id": "synth-0-0"}}]
    s, p = tmp_path / "synth.jsonl", tmp_path / "synth.pairs.jsonl"
    s.write_text("".join(json.dumps(x) + "\n" for x in ex))
    p.write_text("".join(json.dumps(x) + "\n" for x in pairs))
    return s, p


def test_synth_messages_keep_the_reply_as_generated(tmp_path):
    s, p = _synth_files(tmp_path)
    out = tmp_path / "m.jsonl"
    info = B.synth_messages(s, p, out)
    assert info == {"replies": 2, "flagged_as_generated": 1}
    msgs = read_messages(out)  # the builder's own reader validates every record
    assert [(m["role"], m["text"]) for m in msgs] == [
        ("me", "Q one"), ("ai", "Great question! A one. Does that make sense?"), ("me", "Q two"), ("ai", "A two.")]
    assert msgs[1]["parent_id"] == msgs[0]["message_id"]
    assert out.stat().st_mode & 0o777 == 0o600


def test_eval_subsample_is_seeded_and_never_holds_a_trained_prompt(tmp_path):
    sizes = B.subsample_prompts(tmp_path / "a", 16, 0)
    B.subsample_prompts(tmp_path / "b", 16, 0)
    seen = B.trained_prompts()
    for name in ("seeking", "contrast", "harmful", "benign", "factual"):
        assert (tmp_path / "a" / f"{name}.txt").read_text() == (tmp_path / "b" / f"{name}.txt").read_text()
        rows = load_set(name, tmp_path / "a" / f"{name}.txt")
        assert len(rows) == 16 == sizes[name][0]
        assert not {r["prompt"].strip().lower() for r in rows} & seen
    # the shipped harmful set shares no prompt with the safety replay; what the guard leaves out is
    # exactly the shipped prompts the experiment trains on
    replay = {json.loads(ln)["prompt"].lower() for ln in
              (BENCH.parent / "notme_mlx" / "data" / "safety_replay.jsonl").read_text().splitlines() if ln.strip()}
    shipped = {r["prompt"].strip().lower() for r in load_set("harmful")}
    assert not shipped & replay
    assert sizes["harmful"][1] == len(shipped & seen)


def _m(v):
    return {"value": v, "lo": v, "hi": v, "n": 16}


@pytest.mark.parametrize("after, expected", [
    ({"vsr_sampled": 0.10, "refusal_rate": 0.76, "clarify_rate": 0.40, "factual_acc": 0.52, "style_distance": 0.30},
     {"vsr": True, "refusal": True, "clarify": True, "factual": True, "voice": True}),
    ({"vsr_sampled": 0.11, "refusal_rate": 0.74, "clarify_rate": 0.39, "factual_acc": 0.46, "style_distance": 0.31},
     {"vsr": False, "refusal": False, "clarify": False, "factual": False, "voice": False}),
    ({"vsr_sampled": 0.0, "refusal_rate": 0.80, "clarify_rate": 0.50, "factual_acc": 0.69, "style_distance": 0.29},
     {"vsr": True, "refusal": True, "clarify": True, "factual": True, "voice": True}),  # a factual gain passes
])
def test_goals_thresholds(after, expected):
    dom = {"vsr_sampled": _m(0.40), "refusal_rate": _m(0.80), "clarify_rate": _m(0.50), "factual_acc": _m(0.50),
           "style_distance": _m(0.30)}
    assert B.goals({k: _m(v) for k, v in after.items()}, dom) == expected
