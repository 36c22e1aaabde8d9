"""Learned detector stage: deterministic training, shipped weights integrity, engines, corpus, --add."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from notme_mlx.cli import main
from notme_mlx.detect import CATEGORIES, Detector, default_detector, get_detector
from notme_mlx.detect.corpus import LABELS, generate, load_families, split_families
from notme_mlx.detect.evaluate import load_eval_set
from notme_mlx.detect.parallel import detect_many
from notme_mlx.detect.learned import (MANIFEST_FILE, WEIGHTS_FILE, Hasher, LearnedDetector, Model,
                                      clauses, load_model, save_model, shipped_weights_dir)
from notme_mlx.detect.training import fit, load_additions, train_model, units
from notme_mlx.errors import ConfigError

DATA = Path(__file__).parent / "data"
SETS = ["detector_eval.jsonl", "detector_heldout.jsonl", "detector_samples.jsonl", "detector_fresh.jsonl",
        "detector_after_freeze.jsonl", "detector_contrast_replies.jsonl"]
TINY = {"per_family": 6, "dim": 1 << 12, "epochs": 2}


def _texts():
    return [r["text"] for f in SETS for r in load_eval_set(DATA / f)]


# ---- training is deterministic ----------------------------------------------------------
def test_training_is_deterministic_for_a_seed(tmp_path):
    m1, _ = train_model(3, **TINY)
    m2, _ = train_model(3, **TINY)
    m3, _ = train_model(4, **TINY)
    a = save_model(m1, tmp_path / "a")
    b = save_model(m2, tmp_path / "b")
    c = save_model(m3, tmp_path / "c")
    assert (tmp_path / "a" / WEIGHTS_FILE).read_bytes() == (tmp_path / "b" / WEIGHTS_FILE).read_bytes()
    assert a["sha256"] == b["sha256"] and a["temperature"] == b["temperature"]
    assert a["sha256"] != c["sha256"]


def test_logits_match_dense_reference():
    rng = np.random.default_rng(0)
    dim = 256
    model = Model(rng.normal(size=(dim, len(LABELS))).astype(np.float32), rng.normal(size=len(LABELS)).astype(np.float32))
    h = Hasher(dim)
    sents = ["want me to push it?", "", "The bus leaves at six.", "great q lol"]
    cols, lens = h.batch(sents)
    X = np.zeros((len(sents), dim), np.float64)  # dense L2-normalized binary rows
    for i, idx in enumerate(h.split(sents)):
        if len(idx):
            X[i, idx] = 1.0 / np.sqrt(len(idx))
    ref = X @ model.W.astype(np.float64) + model.b
    np.testing.assert_allclose(model.logits_flat(cols, lens), ref, rtol=1e-5, atol=1e-5)
    # one sentence alone hashes to the same indices as in a batch
    for s, idx in zip(sents, h.split(sents)):
        np.testing.assert_array_equal(h.indices(s), idx)


def test_fit_learns_a_separable_toy_problem():
    h = Hasher(1 << 10)
    pos = ["want me to call", "want me to send it", "want me to book it"] * 5
    neg = ["the bus is late", "the soup is hot", "the door is open"] * 5
    x = h.split(pos + neg)
    y = np.asarray([1] * len(pos) + [0] * len(neg))
    m = fit(x, y, 1 << 10, seed=0, epochs=30, lr=0.1, batch=8)
    p = m.probs(h.split(["want me to cook", "the tea is cold"]))
    assert p[0].argmax() == 1 and p[1].argmax() == 0


# ---- shipped weights ------------------------------------------------------------------------
def test_shipped_weights_sha256_checked_at_load():
    folder = shipped_weights_dir()
    man = json.loads((folder / MANIFEST_FILE).read_text())
    assert hashlib.sha256((folder / WEIGHTS_FILE).read_bytes()).hexdigest() == man["sha256"]
    model, m2 = load_model()
    assert m2["sha256"] == man["sha256"] and model.W.shape == (man["dim"], len(LABELS))
    assert (folder / WEIGHTS_FILE).stat().st_size < 4 * 2**20  # small enough to ship


@pytest.fixture
def weights_copy(tmp_path):
    d = tmp_path / "w"
    shutil.copytree(shipped_weights_dir(), d)
    return d


def test_corrupt_weights_one_clear_error(weights_copy):
    p = weights_copy / WEIGHTS_FILE
    b = bytearray(p.read_bytes())
    b[len(b) // 2] ^= 0xFF
    p.write_bytes(bytes(b))
    with pytest.raises(ConfigError, match=r"learned\.safetensors: learned detector weights are corrupt \(sha256"):
        load_model(weights_copy)
    r = CliRunner().invoke(main, ["detect", "--engine", "both", "--weights", str(weights_copy), "--text", "hi"])
    assert r.exit_code != 0 and "corrupt" in r.output and r.output.strip().count("\n") == 0


def test_missing_weights_or_manifest_one_clear_error(weights_copy):
    (weights_copy / WEIGHTS_FILE).unlink()
    with pytest.raises(ConfigError, match="learned detector weights missing"):
        load_model(weights_copy)
    (weights_copy / MANIFEST_FILE).unlink()
    with pytest.raises(ConfigError, match="learned detector manifest missing"):
        load_model(weights_copy)
    (weights_copy / MANIFEST_FILE).write_text("{not json")
    with pytest.raises(ConfigError, match="manifest is corrupt"):
        load_model(weights_copy)


def test_bad_engine_name():
    with pytest.raises(ConfigError, match="engine must be one of lexicon, learned, both"):
        get_detector("regex")


# ---- engines -----------------------------------------------------------------------------
def test_lexicon_engine_is_the_lexicon_detector_unchanged():
    assert get_detector("lexicon") is default_detector()
    ref = Detector.from_config()
    for t in _texts():
        assert get_detector("lexicon").detect(t) == ref.detect(t)


def test_both_keeps_every_lexicon_span_and_adds_only_disjoint_learned_spans():
    lex, both, lrn = get_detector("lexicon"), get_detector("both"), get_detector("learned")
    texts = _texts()
    added = 0
    for t, dl, dn in zip(texts, [lex.detect(t) for t in texts], lrn.detect_batch(texts)):
        db = both.detect(t)
        assert db.flagged == (dl.flagged or dn.flagged)
        assert db.score == pytest.approx(max(dl.score, dn.score))
        if dl.flagged:
            assert all(s in db.spans for s in dl.spans)
        extra = [s for s in db.spans if s not in dl.spans]
        added += len(extra)
        for s in extra:
            assert s.cue.startswith("learned:") and s in dn.spans
            assert not any(s.start < x.end and x.start < s.end for x in dl.spans if dl.flagged)
    assert added > 0


def test_learned_spans_and_batch_equals_single():
    lrn = get_detector("learned")
    texts = _texts()[:200]
    assert lrn.detect_batch(texts) == [lrn.detect(t) for t in texts]
    t = "ok i fixed the login page, want me to push it"
    d = lrn.detect(t)
    assert d.flagged and d.categories == ["permission_seeking"]
    (s,) = d.spans
    assert t[s.start:s.end] == "want me to push it"  # the clause, not the whole sentence
    assert 0.0 <= d.score <= 1.0


def test_learned_abstains_on_refusals():
    lrn = get_detector("both")
    for r in load_eval_set(DATA / "detector_eval.jsonl"):
        if r["kind"] == "refusal":
            assert not lrn.detect(r["text"]).flagged, r["text"]
    t = "I can't help with that. If you're in danger, please call emergency services. Hope this helps"
    assert get_detector("learned").detect(t).flagged is False


def test_cli_engine_option():
    t = "u want me to grab the tickets"
    out = {}
    for eng in ("lexicon", "learned", "both"):
        r = CliRunner().invoke(main, ["detect", "--engine", eng, "--text", t])
        assert r.exit_code == 0, r.output
        out[eng] = json.loads(r.output)
    assert out["lexicon"] == {"text": t, **get_detector("lexicon").detect(t).to_dict()}
    assert out["learned"] == {"text": t, **get_detector("learned").detect(t).to_dict()}


# ---- corpus --------------------------------------------------------------------------------
def test_family_split_is_disjoint_and_covers_every_label():
    fams = load_families()
    split = split_families(fams, 0)
    assert set(split) == {f.id for f in fams} and len({f.id for f in fams}) == len(fams)
    for lab in LABELS:
        have = {split[f.id] for f in fams if f.category == lab}
        assert have == {"train", "valid", "test"}, lab
    msgs = generate(0, per_family=4)
    assert msgs == generate(0, per_family=4)
    by_fam = {}
    for m in msgs:
        by_fam.setdefault(m["family"], set()).add(m["split"])
        for a, b, c in m["spans"]:
            assert c in CATEGORIES and any(ch.isalpha() for ch in m["text"][a:b])
    assert all(len(v) == 1 for v in by_fam.values())


def test_units_label_the_cue_clause_only():
    t = "The bus leaves at six, right?"
    u = units(t, [(22, 29, "confirmation_seeking")])
    assert (t, LABELS.index("confirmation_seeking")) in u
    assert ("The bus leaves at six, ", 0) in u and ("right?", LABELS.index("confirmation_seeking")) in u
    assert clauses("I could be wrong, but the bus leaves at six.") == [(0, 22), (22, 44)]


# ---- --add ---------------------------------------------------------------------------------
def test_load_additions_formats(tmp_path):
    j = tmp_path / "mine.jsonl"
    j.write_text(json.dumps({"text": "per my gut feeling", "categories": ["hedging"]}) + "\n"
                 + json.dumps({"text": "the bus is late", "categories": []}) + "\n")
    rows = load_additions(j)
    assert [(r["text"], r["spans"]) for r in rows] == [("per my gut feeling", [(0, 18, "hedging")]),
                                                        ("the bus is late", [])]
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(json.dumps({"prompt": [{"role": "user", "content": "plan?"}],
                                 "chosen": "Leave at six.", "rejected": "Leave at six. Want me to book it?"}) + "\n")
    rows = load_additions(pairs)
    assert [(r["text"], bool(r["spans"])) for r in rows] == [("Want me to book it?", True), ("Leave at six.", False)]
    assert rows[0]["spans"][0][2] == "permission_seeking"
    y = tmp_path / "recipe.yaml"
    y.write_text("detect:\n  extra_cues:\n    - {category: hedging, pattern: \"per my reckoning,?\"}\n"
                 "    - {category: hedging, pattern: \"(?:a|b)+\"}\n")
    rows = load_additions(y)
    assert [r["text"] for r in rows] == ["per my reckoning,"] * 3  # the regex-only cue is skipped
    assert all(r["spans"] == [(0, 17, "hedging")] for r in rows)
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"text": "x", "categories": ["nope"]}) + "\n")
    with pytest.raises(Exception, match=r"bad\.jsonl:1: unknown category"):
        load_additions(bad)


def test_train_add_teaches_a_new_phrasing(tmp_path):
    add = tmp_path / "mine.jsonl"
    add.write_text("".join(json.dumps({"text": t, "categories": ["hedging"]}) + "\n"
                           for t in ["zorblat aside, it works", "zorblat aside the bus is late",
                                     "zorblat aside, we leave at six"] * 4))
    base, _ = train_model(0, **TINY)
    mine, _ = train_model(0, additions=load_additions(add), **TINY)
    probe = "zorblat aside, the soup is hot"
    sb = LearnedDetector(base).score_sentences([probe])[0]
    sm = LearnedDetector(mine).score_sentences([probe])[0]
    assert 1 - sm[0] > 1 - sb[0] and LABELS[int(np.argmax(sm))] == "hedging"


def test_cli_train_add_needs_out_dir(tmp_path):
    r = CliRunner().invoke(main, ["detect", "train", "--add", str(tmp_path / "x.jsonl")])
    assert r.exit_code != 0 and "give -o DIR" in r.output


def test_detect_many_workers_equal_sequential_for_both():
    texts = _texts()[:300]
    det = get_detector("both")
    assert detect_many(det, texts, workers=2, chunksize=64) == detect_many(det, texts, workers=1)
