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


def test_refusal_pairs_hold_exactly_the_replay_prompts_with_the_refusal_chosen(tmp_path):
    from notme_mlx.data.safety import sample_safety

    replay = [json.loads(ln) for ln in (BENCH.parent / "notme_mlx" / "data" / "safety_replay.jsonl")
              .read_text().splitlines() if ln.strip()]
    refusal_of = {r["prompt"]: r["response"] for r in replay}
    mixed = sample_safety(60, 0)  # more than one pass: every replay prompt at least once, some twice
    style = {"messages": [{"role": "user", "content": "Plan my week?", "train": False},
                          {"role": "assistant", "content": "Sure. Does that help?", "train": True}],
             "meta": {"source": "synth", "conversation_id": "synth-0-0"}}
    train = tmp_path / "train.jsonl"
    train.write_text("".join(json.dumps(x) + "\n" for x in [style] + mixed))
    prompts = [r["prompt"] for r in replay]
    # the model's own replies: the first two refuse, one is missing, the rest comply
    own = {p: f"Sure! Step one for: {p[:20]}. Does that help?" for p in prompts[3:]}
    own[prompts[0]] = "I can't help with that."
    own[prompts[1]] = "I won't do that."
    pairs, left = B.refusal_pairs(train, own)
    assert sorted(left) == sorted(prompts[:3])
    assert len(pairs) == len(prompts) - 3  # one per distinct replay prompt, duplicates collapsed
    assert {p["prompt"][0]["content"] for p in pairs} == set(prompts[3:])
    for p in pairs:
        q = p["prompt"][0]["content"]
        assert p["chosen"] == refusal_of[q] and p["rejected"] == own[q]
        assert not B.is_refusal(p["rejected"])
    assert "Plan my week?" not in {p["prompt"][0]["content"] for p in pairs}
    # the replay prompt file asks exactly the distinct replay prompts
    n = B.replay_prompt_file(train, tmp_path / "rp.jsonl")
    asked = [json.loads(ln)["prompt"] for ln in (tmp_path / "rp.jsonl").read_text().splitlines()]
    assert n == len(prompts) and sorted(asked) == sorted(prompts)


def test_own_replies_take_the_reply_as_generated(tmp_path):
    s, p = _synth_files(tmp_path)
    assert B.own_replies(s, p) == {"Q one": "Great question! A one. Does that make sense?", "Q two": "A two."}


def test_options_share_the_step_budget_and_name_their_data():
    opts = B._options(40, 3.0)
    recipes = B.RECIPES
    for name, (recipe, sets, data, pairs) in opts.items():
        assert (recipes / recipe).exists()
        steps = [int(s.split("=")[1]) for s in sets if "max_steps" in s]
        assert sum(steps) == 40, name
    assert {n for n in opts if n.startswith("composite-l") and "-" not in n[11:]} == {f"composite-l{x}" for x in B.LAMBDAS}
    assert opts["composite-l3-lexicon"][2] == "mode-lexicon" and opts["composite-l3-learned"][2] == "mode-learned"
    assert "phases.0.penalty_weight=3.0" in opts["composite-l3-learned"][1]
    assert opts["dpo-nll"][3] == "pairs_keep.jsonl"
    # the two-phase-replay row differs from two-phase in its Mode data folder only
    assert opts["two-phase-replay"][2] == "mode-replay"
    assert opts["two-phase-replay"][:2] == opts["two-phase"][:2]
    others = {n for n in opts if "lexicon" not in n and "learned" not in n and n != "two-phase-replay"}
    assert {opts[n][2] for n in others} == {"mode"}


def test_lexicon_vsr_counts_replies_with_a_phrase_list_cue(tmp_path):
    seeking = [{"response": "a", "flagged": True, "cues": ["learned:I hope this helps."]},
               {"response": "b", "flagged": True, "cues": ["does that make sense", "learned:x"]},
               {"response": "c", "flagged": False, "cues": []},
               {"response": "d", "flagged": True, "cues": ["let me know"]}]
    (tmp_path / "report.json").write_text(json.dumps({"model": {"responses": {"seeking": seeking}}}))
    m = B.lexicon_vsr(tmp_path)
    assert m["value"] == 0.5 and m["n"] == 4 and 0.0 <= m["lo"] <= 0.5 <= m["hi"] <= 1.0
    (tmp_path / "report.json").write_text(json.dumps({"model": {"responses": {}}}))
    assert B.lexicon_vsr(tmp_path) is None


def test_results_rebuild_keeps_the_hand_written_reading(tmp_path):
    import types
    res = tmp_path / "five_layer.md"
    res.write_text("# old table\n\n" + B.HAND + " (by hand)\n\nDomain met its goals.\n")
    a = types.SimpleNamespace(model="m", domain_steps=1, mode_steps=2, samples=1, max_tokens=8, seed=0,
                              safety_fraction=0.1, mode_replay=0.3, engine_lambda=3.0)
    B.write_results(res, tmp_path, a, "| new table |", {}, {}, [], {})
    out = res.read_text()
    assert "| new table |" in out and "# old table" not in out
    assert out.endswith(B.HAND + " (by hand)\n\nDomain met its goals.\n")
    res.unlink()  # a first build has no reading to keep
    B.write_results(res, tmp_path, a, "| new table |", {}, {}, [], {})
    assert B.HAND not in res.read_text()
