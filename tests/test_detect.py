"""Detector: targets on our labelled set, span offsets, hard negatives, repair, extension, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from notme_mlx.detect import CATEGORIES, Detector, detect, remove_spans
from notme_mlx.detect.evaluate import evaluate, load_eval_set
from notme_mlx.errors import ConfigError

DATA = Path(__file__).parent / "data"


def test_eval_set_shape():
    rows = load_eval_set(DATA / "detector_eval.jsonl")
    assert len(rows) >= 300
    pos = [r for r in rows if r["categories"]]
    neg = [r for r in rows if not r["categories"]]
    assert abs(len(pos) - len(neg)) <= 0.1 * len(rows)
    for c in CATEGORIES:
        assert sum(c in r["categories"] for r in rows) >= 30
    assert sum(r["kind"] == "refusal" for r in rows) >= 25
    assert len({r["text"] for r in rows}) == len(rows)


def test_eval_targets():
    rows = load_eval_set(DATA / "detector_eval.jsonl")
    res = evaluate(Detector.from_config(), rows)
    assert res["flagged_refusals"] == 0
    assert res["overall"]["precision"] >= 0.95 and res["overall"]["recall"] >= 0.90, res["overall"]
    assert res["micro"]["precision"] >= 0.95 and res["micro"]["recall"] >= 0.90, res["micro"]
    # independent recount of the overall numbers
    tp = sum(1 for r in rows if r["categories"] and detect(r["text"]).flagged)
    fp = sum(1 for r in rows if not r["categories"] and detect(r["text"]).flagged)
    assert res["overall"]["tp"] == tp and res["overall"]["fp"] == fp


@pytest.mark.parametrize("name", ["detector_heldout.jsonl", "detector_samples.jsonl", "detector_fresh.jsonl"])
def test_other_sets_no_refusals_flagged(name):
    res = evaluate(Detector.from_config(), load_eval_set(DATA / name))
    assert res["flagged_refusals"] == 0
    assert res["overall"]["precision"] >= 0.9


def test_span_offsets_cover_cue():
    t = "Here is the plan. Does that make sense?"
    d = detect(t)
    assert d.flagged and d.score == pytest.approx(1.0)
    (s,) = d.spans
    assert (s.start, s.end, s.category) == (18, len(t), "confirmation_seeking")
    assert t[s.start:s.end] == "Does that make sense?"
    assert s.cue == "Does that make sense"


def test_case_linebreak_curly_emoji():
    assert detect("DOES THAT MAKE SENSE?").categories == ["confirmation_seeking"]
    t = "ok.\nDoes that\n  make sense? 🙂"
    (s,) = detect(t).spans
    assert t[s.start:s.end] == "Does that\n  make sense? 🙂"
    t = "You\u2019re absolutely right \U0001f64f, I missed it."
    (s,) = detect(t).spans
    assert s.category == "sycophancy" and t[s.start:s.end].startswith("You\u2019re absolutely right")


@pytest.mark.parametrize("text", [
    "I can't help with that.",
    "I won't help you make a weapon.",
    "Which file is failing?",
    "What time is the flight?",
    "She asked me whether she should go.",
    "He kept saying \u201cdoes that make sense?\u201d all day.",
    "We found an interesting bug in the parser.",
    "Is this mushroom edible?",
    "```\nprint('Does that make sense?')\n```",
    "Call `would_you_like_me_to()` first.",
    "Let me know when you land.",
])
def test_hard_negatives(text):
    d = detect(text)
    assert not d.flagged and d.spans == [] and d.score == 0.0


def test_score_combines_weights():
    det = Detector.from_config()
    w = {c.category: c.weight for c in det.cues}
    d = det.detect("I could be wrong, but it's Tuesday. Great question!")
    assert d.categories == ["hedging", "sycophancy"]
    assert d.score == pytest.approx(1 - (1 - w["hedging"]) * (1 - w["sycophancy"]))


@pytest.mark.parametrize("text,clean", [
    ("So the total comes to $412. Is this right?", "So the total comes to $412."),
    ("We split the bill evenly, right?", "We split the bill evenly."),
    ("I could be wrong, but the bus might leave at six.", "The bus might leave at six."),
    ("It might possibly be a caching issue.", "It might be a caching issue."),
    ("Great question! The capital of Australia is Canberra.", "The capital of Australia is Canberra."),
    ("I could also add caching here; would you like that?", "I could also add caching here."),
    ("The fix is in.\nShould I push it?\nTests pass.", "The fix is in.\nTests pass."),
    ("You're absolutely right, I missed the edge case.", "I missed the edge case."),
    ("Here is the draft; should I send it? Then we are done.", "Here is the draft. Then we are done."),
])
def test_remove_spans_repairs(text, clean):
    assert remove_spans(text, detect(text).spans) == clean


@pytest.mark.parametrize("name", ["detector_eval.jsonl", "detector_heldout.jsonl", "detector_samples.jsonl",
                                  "detector_fresh.jsonl"])
def test_remove_spans_gives_clean_text_on_whole_set(name):
    for r in load_eval_set(DATA / name):
        d = detect(r["text"])
        out = remove_spans(r["text"], d.spans)
        assert not detect(out).flagged, (r["text"], out)
        if not d.spans:
            assert out == r["text"].strip()


def test_remove_spans_accepts_tuples_and_overlaps():
    assert remove_spans("abc def ghi.", [(4, 8), [3, 6, "penalize"]]) == "abc ghi."


def test_extra_cues_and_yaml(tmp_path):
    t = "Per my humble reckoning, the bridge is closed."
    assert not detect(t).flagged
    det = Detector.from_config(extra_cues=[{"category": "hedging", "pattern": "per my humble reckoning,?"}])
    (s,) = det.detect(t).spans
    assert s.category == "hedging" and t[s.start:s.end] == "Per my humble reckoning,"
    y = tmp_path / "extra.yaml"
    y.write_text("categories:\n  sycophancy:\n    cues:\n      - {pattern: 'splendid query', anchor: start}\n")
    det = Detector.from_config(extra_yaml=y)
    assert det.detect("Splendid query! Yes.").categories == ["sycophancy"]
    assert det.detect("Does that make sense?").flagged  # base cues kept


def test_bad_lexicon_errors(tmp_path):
    with pytest.raises(ConfigError, match=r"detect.extra_cues\[0\]"):
        Detector.from_config(extra_cues=[{"pattern": "x"}])
    with pytest.raises(ConfigError, match=r"categories.hedging.cues\[0\].*bad regex"):
        Detector({"categories": {"hedging": {"cues": ["(unclosed"]}}})
    with pytest.raises(ConfigError, match="unknown macro"):
        Detector({"categories": {"hedging": {"cues": ["{NOPE}"]}}})


def test_cli_jsonl_and_eval(tmp_path):
    from click.testing import CliRunner

    from notme_mlx.cli import main

    f = tmp_path / "in.jsonl"
    f.write_text(json.dumps({"body": "Hope this helps!"}) + "\nplain line, no cue\n")
    r = CliRunner().invoke(main, ["detect", str(f), "--field", "body"])
    assert r.exit_code == 0, r.output
    lines = [json.loads(x) for x in r.stdout.splitlines() if x.startswith("{")]
    assert [x["flagged"] for x in lines] == [True, False]
    assert lines[0]["spans"] == [{"start": 0, "end": 16, "category": "approval_seeking", "cue": "Hope this helps"}]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\n{"text": \n')
    r = CliRunner().invoke(main, ["detect", str(bad)])
    assert r.exit_code == 1 and "bad.jsonl:2" in r.output
    r = CliRunner().invoke(main, ["detect", "--eval", str(DATA / "detector_eval.jsonl"), "--json"])
    assert r.exit_code == 0
    res = json.loads(r.stdout[r.stdout.index("{"):])
    assert res["flagged_refusals"] == 0 and res["n"] >= 300


def test_cli_stats(tmp_path):
    from click.testing import CliRunner

    from notme_mlx.cli import main

    msgs = tmp_path / "m.jsonl"
    rows = [{"source": "chatgpt", "speaker": "ChatGPT", "role": "ai", "kind": "text", "text": "Great question!"},
            {"source": "chatgpt", "speaker": "Alex", "role": "me", "kind": "text", "text": "Which file?"},
            {"source": "whatsapp", "speaker": "Alex", "role": "me", "kind": "text", "text": "Should I go ahead?"}]
    msgs.write_text("".join(json.dumps(r) + "\n" for r in rows))
    r = CliRunner().invoke(main, ["detect", "--stats", str(msgs), "--json"])
    assert r.exit_code == 0, r.output
    st = json.loads(r.stdout[r.stdout.index("{"):])
    assert st["n"] == 3 and st["flagged"] == 2
    assert st["by_speaker"]["Alex"] == [2, 1] and st["by_source"]["chatgpt"] == [2, 1]
    assert st["messages_with_category"] == {"sycophancy": 1, "permission_seeking": 1}


def test_prefilter_matches_unfiltered_reference():
    import dataclasses

    det = Detector.from_config()
    ref = Detector.from_config()
    ref.cues = [dataclasses.replace(c, needs=None) for c in ref.cues]
    assert sum(c.needs is not None for c in det.cues) > 0.8 * len(det.cues)
    for f in ("detector_eval.jsonl", "detector_heldout.jsonl", "detector_samples.jsonl"):
        for r in load_eval_set(DATA / f):
            assert det.detect(r["text"]) == ref.detect(r["text"]), r["text"]


def test_lexicon_has_no_unbounded_wildcards():
    """`[^.?!]*` / `.*` before another term backtracks quadratically on long texts; cues use {0,80}."""
    import re

    for c in Detector.from_config().cues:
        assert not re.search(r"\]\*|\.\*|\]\+|\.\+", c.rx.pattern), c.rx.pattern


def test_detect_many_parallel_equals_sequential():
    from notme_mlx.detect.parallel import detect_many

    texts = [r["text"] for r in load_eval_set(DATA / "detector_eval.jsonl")] * 4
    det = Detector.from_config(extra_cues=[{"category": "hedging", "pattern": "per my reckoning"}])
    seq = detect_many(det, texts + ["Per my reckoning it rains."], workers=1)
    par = detect_many(det, texts + ["Per my reckoning it rains."], workers=2, chunksize=100)
    assert par == seq and seq[-1].categories == ["hedging"]


def test_cli_eval_check_exit_codes(tmp_path):
    from click.testing import CliRunner

    from notme_mlx.cli import main

    r = CliRunner().invoke(main, ["detect", "--eval", str(DATA / "detector_eval.jsonl"), "--check"])
    assert r.exit_code == 0, r.output
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"text": "I can't help with that. Does that make sense?", "categories": [],
                               "kind": "refusal"}) + "\n" + json.dumps({"text": "Ok.", "categories": ["hedging"]}) + "\n")
    r = CliRunner().invoke(main, ["detect", "--eval", str(bad), "--check"])
    assert r.exit_code == 1 and "targets missed" in r.output
