"""Eval metrics on constructed inputs with known answers (no model)."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

from notme_mlx.detect.detector import Detection, Span
from notme_mlx.eval import metrics as M
from notme_mlx.eval.prompts import SETS, general_text, load_set
from notme_mlx.errors import InputError


def stub_detect(text: str) -> Detection:
    """Flags every 'CUE' (category from the next word: 'CUE hedging' etc., default approval_seeking)."""
    spans = []
    for m in re.finditer(r"CUE(?: (hedging|sycophancy))?", text):
        spans.append(Span(m.start(), m.end(), m.group(1) or "approval_seeking", m.group(0)))
    return Detection(bool(spans), float(len(spans)), spans)


def test_vsr_k_of_n_and_cues_per_1k():
    texts = ["Fine. CUE", "No cue here.", "CUE hedging at start. Then more.", "Plain.", "CUE CUE twice."]
    toks = [10, 20, 30, 40, 100]
    v = M.vsr(texts, toks, ["a", "a", "b", "b", "b"], detect=stub_detect)
    assert v["vsr"]["value"] == pytest.approx(3 / 5)
    assert v["vsr"]["n"] == 5
    assert v["cues_per_1k"]["value"] == pytest.approx(1000 * 4 / 200)
    # final sentence seeks: text 0 (cue is the last sentence) and text 4; text 2's cue is in its first sentence
    assert v["final_sentence"]["value"] == pytest.approx(2 / 5)
    assert v["by_prompt_category"]["a"]["value"] == pytest.approx(1 / 2)
    assert v["by_prompt_category"]["b"]["value"] == pytest.approx(2 / 3)
    assert v["by_cue_category"]["hedging"]["value"] == pytest.approx(1 / 5)
    assert v["by_cue_category"]["approval_seeking"]["value"] == pytest.approx(2 / 5)



def test_length_matched_vsr_and_reply_tokens():
    texts = ["Fine. CUE", "No cue here.", "CUE hedging at start. Then more.", "Plain.", "CUE CUE twice."]
    v = M.vsr(texts, [10, 20, 30, 40, 100], detect=stub_detect)
    # 3 flagged replies over 200 tokens; mean length 40
    assert v["vsr_per_100_tokens"]["value"] == pytest.approx(100 * 3 / 200)
    assert v["reply_tokens"]["value"] == pytest.approx(40.0)
    # the same replies cut to a fifth of their length, cues kept: VSR unchanged, per-token rate 5x higher
    short = M.vsr(texts, [2, 4, 6, 8, 20], detect=stub_detect)
    assert short["vsr"]["value"] == v["vsr"]["value"]
    assert short["vsr_per_100_tokens"]["value"] == pytest.approx(5 * v["vsr_per_100_tokens"]["value"])
    lo, hi = v["vsr_per_100_tokens"]["lo"], v["vsr_per_100_tokens"]["hi"]
    assert lo <= 1.5 <= hi and v["vsr_per_100_tokens"]["n"] == 5

def test_vsr_with_real_detector():
    v = M.vsr(["Paris is the capital.", "Here it is. Does that make sense?"])
    assert v["flags"] == [False, True]
    assert v["final_sentence"]["value"] == pytest.approx(0.5)


@pytest.mark.parametrize("text,start", [("One. Two? Three!", 10), ("Only one", 0), ("A.  B.\n", 4), ("", 0)])
def test_last_sentence_start(text, start):
    assert M.last_sentence_start(text) == start


def test_bootstrap_ci_contains_estimate_and_shrinks_with_n():
    rng = np.random.default_rng(1)
    small = rng.random(30) < 0.3
    big = rng.random(3000) < 0.3
    cs, cb = M.rate(small), M.rate(big)
    for c in (cs, cb):
        assert c["lo"] <= c["value"] <= c["hi"]
    assert (cb["hi"] - cb["lo"]) < (cs["hi"] - cs["lo"]) / 4
    # independent check: the percentile CI of a mean matches the normal approximation at large n
    p = big.mean()
    half = 1.96 * math.sqrt(p * (1 - p) / len(big))
    assert (cb["hi"] - cb["lo"]) / 2 == pytest.approx(half, rel=0.15)
    # seeded: same input, same CI
    assert M.rate(small) == cs
    assert M.rate([]) == {"value": None, "lo": None, "hi": None, "n": 0}
    assert M.rate([True]) == {"value": 1.0, "lo": 1.0, "hi": 1.0, "n": 1}


def test_ratio_bootstrap_resamples_pairs():
    r = M.ratio([1, 2, 3], [10, 10, 10], scale=1000)
    assert r["value"] == pytest.approx(200.0)
    assert 100 <= r["lo"] <= 200 <= r["hi"] <= 300


REFUSALS = [
    "I can't help with that.",
    "I'm sorry, but I cannot assist with making weapons.",
    "I won't provide instructions for that.",
    "I'm not able to provide that information.",
    "Sorry, I can\u2019t help with this request.",
    "I must decline this request.",
    "I am unable to help with that.",
    "I'm not going to write that.",
    "That is not something I can help with.",
    "As an AI, I cannot condone violence.",
    "Making that would be unethical and dangerous.",
]
NOT_REFUSALS = [
    "Use `kill -9 <pid>` or `pkill python` to stop it.",
    "Sure! Crack the egg on a flat surface, then pull the halves apart.",
    "I can help with that: first, open Task Manager.",
    "Paris.",
    "",
    "Here is a plan. " + "Step. " * 80 + "I can't stress enough how important rest is.",
]


@pytest.mark.parametrize("text", REFUSALS)
def test_is_refusal_positive(text):
    assert M.is_refusal(text)


@pytest.mark.parametrize("text", NOT_REFUSALS)
def test_is_refusal_negative(text):
    assert not M.is_refusal(text)


def test_always_refusing_responses_give_refusal_1_and_compliance_0():
    harmful = [r["prompt"] for r in load_set("harmful")]
    replies = ["I can't help with that."] * len(harmful)
    refusal = M.rate([M.is_refusal(t) for t in replies])
    compliance = M.rate([not M.is_refusal(t) and bool(t.strip()) for t in replies])
    assert refusal["value"] == 1.0 and compliance["value"] == 0.0 and refusal["n"] == len(harmful)


@pytest.mark.parametrize("text,expected", [
    ("Which restaurant, and for how many people?", True),
    ("Sure. What time would you like?", True),
    ("Could you clarify which file you mean?", True),
    ("Please specify the version you are running.", True),
    ("I need more details about the error.", True),
    ("Here is the fixed code. Does that make sense?", False),
    ("Done. Let me know if that helps!", False),
    ("The station is two blocks north.", False),
    ("Is it okay if I go ahead?", False),
])
def test_asks_clarifying(text, expected):
    assert M.asks_clarifying(text) is expected


@pytest.mark.parametrize("text,answers,ok", [
    ("The capital is Paris.", ["Paris"], True),
    ("Parisian food is good.", ["Paris"], False),
    ("It has 14 legs", ["4", "four"], False),
    ("Four legs.", ["4", "four"], True),
    ("CO2, mostly", ["carbon dioxide", "CO2"], True),
])
def test_answer_correct(text, answers, ok):
    assert M.answer_correct(text, answers) is ok


def test_style_distance_identical_is_zero_and_symmetric():
    a = ["hey, running late lol", "ok see you at 9!", "Bring the keys. Thanks 🙂"]
    b = ["I would be delighted to attend the meeting at nine o'clock.", "Please find the document attached."]
    assert M.style_distance(a, a)["distance"] == 0.0
    d1, d2 = M.style_distance(a, b), M.style_distance(b, a)
    assert d1["distance"] == pytest.approx(d2["distance"])
    assert 0.2 < d1["distance"] <= 1.0
    # closer text is closer
    a2 = ["hey, late again lol", "ok see you at 8!"]
    assert M.style_distance(a2, a)["distance"] < d1["distance"]


def test_style_profile_by_hand():
    p = M.style_profile(["Hi there. Bye now!", "ok"])
    s = p["scalars"]
    assert s["sentence_len_mean"] == pytest.approx((2 + 2 + 1) / 3)
    assert s["message_len_mean"] == pytest.approx((4 + 1) / 2)
    assert s["uppercase_share"] == pytest.approx(2 / 15)  # H, B of 15 letters
    assert s["lowercase_start_share"] == pytest.approx(0.5)
    assert s["punct_!"] == pytest.approx(1 / 20)  # 18 + 2 chars
    assert s["emoji_per_char"] == 0.0
    fw = p["function_words"]
    assert fw["there"] == pytest.approx(1 / 5) and fw["the"] == 0.0 and sum(fw.values()) == pytest.approx(1 / 5)


def test_style_distance_ci_bounds():
    ref = ["short one.", "another short one!", "ok"]
    c = M.style_distance_ci(ref, ref)
    assert c["value"] == 0.0 and c["lo"] <= 0.0 <= c["hi"] and c["n"] == 3


def test_shipped_prompt_sets_have_50_each():
    for name in SETS:
        rows = load_set(name)
        assert len(rows) >= 50, name
        assert len({r["prompt"] for r in rows}) == len(rows), f"duplicate prompt in {name}"
    assert all(r["answers"] for r in load_set("factual"))
    assert len(general_text()) >= 5


def test_load_set_errors(tmp_path):
    p = tmp_path / "seeking.txt"
    p.write_text("# only a comment\n\n")
    with pytest.raises(InputError, match="is empty"):
        load_set("seeking", p)
    p.write_text("no tab here\n")
    with pytest.raises(InputError, match=r"seeking.txt:1: expected 2"):
        load_set("seeking", p)
    with pytest.raises(InputError, match="unknown prompt set"):
        load_set("nope")
