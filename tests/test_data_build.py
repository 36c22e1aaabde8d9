"""Dataset builder: role mapping, sessions, windows, dedupe, split, safety, pairs, errors, CLI."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from notme_mlx.data.builder import build_dataset
from notme_mlx.recipe import BuildConfig
from notme_mlx.data.dedupe import dedupe, jaccard, shingles
from notme_mlx.data.safety import load_safety_replay, safety_count
from notme_mlx.data.sessions import Turn, sessions, windows
from notme_mlx.detect import detect, remove_spans
from notme_mlx.errors import InputError, NotmeError


def msg(src, cid, i, role, text, ts=None, speaker=None, kind="text"):
    return {"source": src, "conversation_id": cid, "message_id": f"{cid}-{i}", "parent_id": None,
            "timestamp": ts, "speaker": speaker or {"me": "Alex", "ai": "ChatGPT", "other": "Sam",
                                                     "system": "system"}[role],
            "role": role, "text": text, "kind": kind}


def ts(minute):
    return f"2024-05-01T{10 + minute // 60:02d}:{minute % 60:02d}:00Z"


def corpus(n_conv=30):
    out = []
    for c in range(n_conv):
        cid = f"wa-{c:03d}"
        out += [msg("whatsapp", cid, 0, "other", f"Hey, are we still on for climbing {c}?", ts(0)),
                msg("whatsapp", cid, 1, "me", f"Yes, 7pm at the gym number {c}.", ts(1)),
                msg("whatsapp", cid, 2, "me", "Bring the rope. Is that okay with you?", ts(2)),
                msg("whatsapp", cid, 3, "other", "Sure", ts(3)),
                msg("whatsapp", cid, 4, "other", f"Next week: same plan {c} on Tuesday?", ts(200)),
                msg("whatsapp", cid, 5, "me", f"Tuesday works, I will book lane {c}.", ts(201))]
        cid = f"gpt-{c:03d}"
        out += [msg("chatgpt", cid, 0, "me", f"Convert {c} cups of flour to grams.", ts(0)),
                msg("chatgpt", cid, 1, "ai", f"Great question! {c} cups of flour is about {125 * c} g. "
                                             "Does that make sense?", ts(1))]
    return out


def write(path, rows):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def read(path):
    return [json.loads(x) for x in Path(path).read_text(encoding="utf-8").splitlines()]


def test_sessions_merge_and_gap():
    cm = [msg("wa", "c", 0, "other", "hi", ts(0)), msg("wa", "c", 1, "me", "yo", ts(1)),
          msg("wa", "c", 2, "me", "what's up", ts(2)), msg("wa", "c", 3, "other", "later", ts(100))]
    ss = sessions(cm, "mirror", 30 * 60)
    assert [[(t.role, t.content, t.target) for t in s] for s in ss] == [
        [("user", "hi", False), ("assistant", "yo\nwhat's up", True)], [("user", "later", False)]]
    # assistant mode: the person's turns are context, the AI's are targets
    cm = [msg("gpt", "c", 0, "me", "q"), msg("gpt", "c", 1, "ai", "a")]
    (s,) = sessions(cm, "assistant", 1800)
    assert [(t.role, t.target) for t in s] == [("user", False), ("assistant", True)]
    # group chat: user turns carry names
    cm = [msg("wa", "g", 0, "other", "a", speaker="Sam"), msg("wa", "g", 1, "other", "b", speaker="Jo"),
          msg("wa", "g", 2, "me", "c")]
    (s,) = sessions(cm, "mirror", 1800)
    assert s[0].content == "Sam: a\nJo: b"


def test_windows_budget_and_no_double_targets():
    turns = [Turn("user" if i % 2 == 0 else "assistant", "x" * 10, i % 2 == 1) for i in range(10)]
    ws = windows(turns, 35, len)
    assert all(sum(len(t.content) for t in w) <= 35 for w in ws)
    assert all(w[-1].target for w in ws)
    n_targets = sum(t.target for w in ws for t in w)
    assert n_targets == 5  # every assistant turn is a target exactly once


def test_build_splits_deterministic_and_disjoint(tmp_path):
    src = write(tmp_path / "m.jsonl", corpus())
    cfg = BuildConfig(seed=3)
    r1 = build_dataset(src, tmp_path / "a", cfg)
    build_dataset(src, tmp_path / "b", cfg)
    for f in ("train.jsonl", "valid.jsonl", "test.jsonl", "pairs.jsonl", "build_report.json"):
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes(), f
        assert os.stat(tmp_path / "a" / f).st_mode & 0o777 == 0o600
    convs = {s: {e["meta"]["conversation_id"] for e in read(tmp_path / "a" / f"{s}.jsonl")}
             for s in ("train", "valid", "test")}
    assert not (convs["train"] & convs["valid"]) and not (convs["train"] & convs["test"])
    assert not (convs["valid"] & convs["test"])
    assert convs["valid"] and convs["test"]
    # 60 conversations; sessions split by the 200-minute gap in each WhatsApp chat
    assert r1["counts"]["conversations"] == 60 and r1["counts"]["sessions"] == 30 * 3
    r3 = build_dataset(src, tmp_path / "c", BuildConfig(seed=4))
    assert r3["splits"]["valid"] != r1["splits"]["valid"] or \
        (tmp_path / "c" / "valid.jsonl").read_bytes() != (tmp_path / "a" / "valid.jsonl").read_bytes()


def test_penalize_spans_pairs_and_safety(tmp_path):
    src = write(tmp_path / "m.jsonl", corpus())
    rep = build_dataset(src, tmp_path / "d", BuildConfig(safety_fraction=0.1))
    train = read(tmp_path / "d" / "train.jsonl")
    allx = train + read(tmp_path / "d" / "valid.jsonl") + read(tmp_path / "d" / "test.jsonl")
    n_safety = sum(e["meta"]["source"] == "safety_replay" for e in train)
    assert n_safety == rep["safety_replay_examples"] == safety_count(len(train) - n_safety, 0.1)
    for e in allx:
        for m in e["messages"]:
            if e["meta"]["source"] == "safety_replay":
                assert m["spans"] == [] and m["train"] in (True, False)
                continue
            if m["role"] == "assistant" and m["train"] is not False:
                d = detect(m["content"])
                assert m["spans"] == [[s.start, s.end, "penalize"] for s in d.spans]
    gpt = [e for e in allx if e["meta"]["source"] == "chatgpt"]
    assert all(e["messages"][-1]["spans"] for e in gpt)
    pairs = read(tmp_path / "d" / "pairs.jsonl")
    assert len(pairs) == rep["pairs"] > 0
    for p in pairs:
        assert p["chosen"] == remove_spans(p["rejected"], p["meta"]["spans"])
        assert not detect(p["chosen"]).flagged
        assert p["prompt"][-1]["role"] == "user"
    # mirror: the merged "Bring the rope. Is that okay with you?" turn has the approval span
    wa = [m for e in allx if e["meta"]["source"] == "whatsapp" for m in e["messages"]
          if m["role"] == "assistant" and "Bring the rope" in m["content"]]
    assert wa and all(m["content"][m["spans"][0][0]:m["spans"][0][1]] == "Is that okay with you?" for m in wa)


def test_safety_replay_set():
    rs = load_safety_replay()
    assert len(rs) >= 40
    for e in rs:
        resp = e["messages"][-1]["content"]
        assert len(resp) <= 200 and not detect(resp).flagged


def test_dedupe_exact_and_near():
    base = "the quick brown fox jumps over the lazy dog near the river bank every single morning"

    def ex(t):
        return {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": t}], "meta": {}}

    near = base.replace("morning", "evening")
    far = "completely different text about climbing ropes and harnesses and chalk bags at the gym today"
    kept, n_exact, n_near = dedupe([ex(base), ex(base), ex(near), ex(far)], threshold=0.8)
    j = jaccard(shingles("q\n" + base), shingles("q\n" + near))
    assert j >= 0.8  # independent check that `near` really is a near duplicate
    assert (n_exact, n_near) == (1, 1)
    assert [k["messages"][1]["content"] for k in kept] == [base, far]


def test_report_counts_dupes(tmp_path):
    rows = corpus(5)
    dup = [dict(m, conversation_id=m["conversation_id"] + "-copy") for m in rows if m["source"] == "chatgpt"]
    rep = build_dataset(write(tmp_path / "m.jsonl", rows + dup), tmp_path / "o", BuildConfig())
    assert rep["counts"]["dropped_exact_duplicates"] == 5


@pytest.mark.parametrize("line,match", [
    ("{not json", r"m.jsonl:2: invalid JSON"),
    (json.dumps({"source": "x", "conversation_id": "c", "speaker": "a", "role": "me"}), r"m.jsonl:2: missing field 'text'"),
    (json.dumps({"source": "x", "conversation_id": "c", "speaker": "a", "role": "boss", "text": "t"}), r"m.jsonl:2: role 'boss'"),
    (json.dumps({"source": "x", "conversation_id": "c", "speaker": "a", "role": "me", "text": "t",
                 "timestamp": "yesterday"}), r"m.jsonl:2: bad timestamp"),
])
def test_bad_records(tmp_path, line, match):
    p = tmp_path / "m.jsonl"
    p.write_text(json.dumps(msg("wa", "c", 0, "me", "ok")) + "\n" + line + "\n")
    with pytest.raises(InputError, match=match):
        build_dataset(p, tmp_path / "o", BuildConfig())
    assert not (tmp_path / "o").exists()


def test_everything_filtered_names_filters(tmp_path):
    rows = [msg("wa", "c", 0, "other", "hi"), msg("wa", "c", 1, "other", "hello?"),
            msg("wa", "c", 2, "me", "<media omitted>", kind="media")]
    with pytest.raises(NotmeError, match=r"no examples left.*1 non-text.*1 conversations dropped in mirror mode: "
                                         r"no role 'me'"):
        build_dataset(write(tmp_path / "m.jsonl", rows), tmp_path / "o", BuildConfig())
    rows = [msg("wa", "c", 0, "other", "hi"), msg("wa", "c", 1, "me", "k")]
    with pytest.raises(NotmeError, match="1 target turns shorter than min_target_chars=2"):
        build_dataset(write(tmp_path / "m2.jsonl", rows), tmp_path / "o", BuildConfig())


def test_scrub(tmp_path):
    rows = [msg("wa", "c", 0, "other", "mail me at sam.okafor@example.com", speaker="Sam Okafor"),
            msg("wa", "c", 1, "me", "Sure Sam, sending it now.")]
    build_dataset(write(tmp_path / "m.jsonl", rows), tmp_path / "o", BuildConfig(scrub=True, valid_fraction=0,
                                                                              test_fraction=0))
    text = (tmp_path / "o" / "train.jsonl").read_text()
    assert "sam.okafor@example.com" not in text and "<EMAIL>" in text and "Sam," not in text


def test_recipe_precedence_and_errors(tmp_path):
    """`data build --recipe` reads the recipe through its base: chain (the max_seq_len the trainer
    uses), flags beat the recipe, and a misplaced or misspelt key is one line naming the fix."""
    import json

    from click.testing import CliRunner

    from notme_mlx.cli import main

    src = write(tmp_path / "m.jsonl", corpus(6))
    (tmp_path / "base.yaml").write_text("data:\n  max_seq_len: 512\nbuild:\n  seed: 7\n")
    r = tmp_path / "r.yaml"
    r.write_text("base: base.yaml\nbuild:\n  session_gap: 2h\ndetect:\n  extra_cues:\n"
                 "    - {category: hedging, pattern: 'per my reckoning'}\n")
    out = CliRunner().invoke(main, ["data", "build", str(src), "-o", str(tmp_path / "o"), "--recipe", str(r),
                                    "--seed", "9"])
    assert out.exit_code == 0, out.output
    cfg = json.loads((tmp_path / "o" / "build_report.json").read_text())["config"]
    assert (cfg["seed"], cfg["session_gap"], cfg["max_seq_len"]) == (9, "2h", 512)
    r.write_text("data:\n  sesion_gap: 2h\n")
    out = CliRunner().invoke(main, ["data", "build", str(src), "-o", str(tmp_path / "p"), "--recipe", str(r)])
    assert out.exit_code == 1 and "did you mean 'build.session_gap'" in out.output
    assert len(out.output.strip().splitlines()) == 1
    out = CliRunner().invoke(main, ["data", "build", str(src), "-o", str(tmp_path / "p"), "--safety-fraction", "1.5"])
    assert out.exit_code == 1 and "build.safety_fraction" in out.output


def test_cli_build_stats_and_stubs(tmp_path, tiny_model_dir):
    from click.testing import CliRunner

    from notme_mlx.cli import main

    src = write(tmp_path / "m.jsonl", corpus(6))
    out = tmp_path / "data"
    r = CliRunner().invoke(main, ["data", "build", str(src), "-o", str(out), "--model", str(tiny_model_dir),
                                  "--debug", "1", "--max-seq-len", "256"])
    assert r.exit_code == 0, r.output
    assert "learn (+1)" in r.output
    r = CliRunner().invoke(main, ["data", "build", str(src), "-o", str(out)])
    assert r.exit_code == 1 and "already exists" in r.output
    r = CliRunner().invoke(main, ["data", "stats", str(out)])
    assert r.exit_code == 0, r.output
    assert "train" in r.output and "sessions per source" in r.output
    for sub in ("synth", "revise"):  # registered by the synth area; --help carries an example
        r = CliRunner().invoke(main, ["data", sub, "--help"])
        assert r.exit_code == 0 and "notme data " + sub in r.output, r.output


def test_data_stats_char_counts(tmp_path, tiny_model_dir):
    from notme_mlx.data.stats import data_stats, histogram, load_tokenizer

    build_dataset(write(tmp_path / "m.jsonl", corpus(6)), tmp_path / "o", BuildConfig())
    st = data_stats(tmp_path / "o")
    for s, r in st["splits"].items():
        exs = read(tmp_path / "o" / f"{s}.jsonl")
        assert r["examples"] == len(exs)
        assert r["total"] == sum(len(m["content"]) for e in exs for m in e["messages"])
        pen = sum(b - a for e in exs for m in e["messages"] for a, b, _ in m["spans"])
        assert r["penalize"] == pen and r["learn"] + r["context"] + r["penalize"] == r["total"]
    assert sum(c for _, _, c in histogram([1, 2, 3, 10], bins=3)) == 4
    tok = load_tokenizer(str(tiny_model_dir))
    st = data_stats(tmp_path / "o", tok)
    assert st["unit"] == "tokens" and all(r["learn"] > 0 for r in st["splits"].values())


def test_parallel_detection_same_bytes(tmp_path):
    src = write(tmp_path / "m.jsonl", corpus(12))
    build_dataset(src, tmp_path / "a", BuildConfig(), workers=1)
    build_dataset(src, tmp_path / "b", BuildConfig(), workers=2)
    for f in ("train.jsonl", "valid.jsonl", "test.jsonl", "pairs.jsonl", "build_report.json"):
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes(), f


def test_safety_eval_is_held_out():
    from notme_mlx.data.safety import load_safety_eval

    ev = load_safety_eval()
    train_prompts = {e["messages"][0]["content"].lower() for e in load_safety_replay()}
    assert len(ev) >= 30 and not ({e["prompt"].lower() for e in ev} & train_prompts)
    for e in ev:  # no near-copies either
        assert max(jaccard(shingles(e["prompt"], 2), shingles(p, 2)) for p in train_prompts) < 0.5, e["prompt"]
        assert not detect(e["reference"]).flagged


def test_eval_harmful_set_is_never_trained_on():
    """The refusal-retention eval's harmful prompts share no prompt (nor a near-copy) with the
    safety replay mixed into training, so a refusal rate is never measured on trained prompts."""
    from notme_mlx.eval.prompts import load_set

    harmful = [r["prompt"] for r in load_set("harmful")]
    train_prompts = {e["messages"][0]["content"].lower() for e in load_safety_replay()}
    assert len(harmful) == 51 and not ({p.lower() for p in harmful} & train_prompts)
    for p in harmful:
        assert max(jaccard(shingles(p, 2), shingles(t, 2)) for t in train_prompts) < 0.5, p
