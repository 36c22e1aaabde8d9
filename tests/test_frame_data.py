"""The frame's names flow from the data: data build names the person and the other speaker
(meta.frame per example, build_report.json's frame), train saves them with the adapter, and
eval / chat / export ask the base model in the same frame. Token labels decode to exactly the
person's turns through it."""

from __future__ import annotations

import json

import pytest
from transformers import AutoTokenizer

from notme_mlx.data.builder import build_dataset
from notme_mlx.data.labels import tokenize_example
from notme_mlx.models.frame import (DEFAULT_FRAME, Frame, data_frames, describe_frame, frame_for, recorded_frame,
                                    speaker_name, use_recorded_frame)
from notme_mlx.recipe import BuildConfig
from test_data_build import corpus, msg, read, ts, write
from test_data_labels import runs as _runs


@pytest.fixture
def base_tok(tiny_model_dir):
    tok = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    tok.chat_template = None  # a base model: no chat template
    return tok


def test_data_frames_names_from_speakers():
    mirror = [msg("wa", "a", 0, "other", "hi", speaker="Sam Okafor"),
              msg("wa", "a", 1, "me", "yo", speaker="Alex Rivera")]
    mirror2 = [msg("wa", "b", 0, "other", "hey", speaker="Priya"), msg("wa", "b", 1, "me", "hey", speaker="Alex Rivera")]
    gpt = [msg("chatgpt", "c", 0, "me", "q", speaker="Alex Rivera"), msg("chatgpt", "c", 1, "ai", "a", speaker="ChatGPT")]
    generic = [msg("sharegpt", "d", 0, "me", "q", speaker="Alex Rivera"),
               msg("sharegpt", "d", 1, "ai", "a", speaker="assistant")]
    data, per = data_frames([("mirror", mirror), ("assistant", gpt), ("assistant", generic)])
    # one other speaker in the mirror conversations: their name; the person is the role-me speaker
    assert data == per[0] == {"me": "Alex Rivera", "other": "Sam Okafor"}
    assert per[1] == {"me": "ChatGPT", "other": "Alex Rivera"}  # the AI's turns are learned there
    assert per[2] == {"me": "Assistant", "other": "Alex Rivera"}  # generic AI names read as "Assistant"
    # two other speakers: "Them"; scrubbed data never brings a name back through the frame
    assert data_frames([("mirror", mirror), ("mirror", mirror2)])[0] == {"me": "Alex Rivera", "other": "Them"}
    assert data_frames([("mirror", mirror)], scrubbed=True)[0] == {"me": "Alex Rivera", "other": "Them"}
    # only assistant conversations: the dataset's frame is the most common assistant frame
    assert data_frames([("assistant", gpt), ("assistant", gpt), ("assistant", generic)])[0] == per[1]
    assert speaker_name(" Dr:\nWho ", "Me") == "Dr Who" and speaker_name("", "Them") == "Them"


def test_build_records_the_frame_and_labels_decode_to_the_persons_turns(tmp_path, base_tok):
    rows = corpus(12)
    for r in rows:  # the person and the friend by their real names
        r["speaker"] = {"me": "Alex Rivera", "other": "Sam Okafor"}.get(r["role"], r["speaker"])
    src = write(tmp_path / "m.jsonl", rows)
    rep = build_dataset(src, tmp_path / "d", BuildConfig(safety_fraction=0.1))
    assert rep["frame"] == {"me": "Alex Rivera", "other": "Sam Okafor"}
    assert recorded_frame(data_dir=tmp_path / "d") == rep["frame"]
    train = read(tmp_path / "d" / "train.jsonl")
    by_mode = {}
    for ex in train:
        by_mode.setdefault(ex["meta"]["mode"], ex["meta"]["frame"])
    assert by_mode == {"mirror": rep["frame"], "assistant": {"me": "ChatGPT", "other": "Alex Rivera"},
                       "safety": rep["frame"]}  # refusals in the frame the model is asked in
    assert all(p["meta"]["frame"] for p in read(tmp_path / "d" / "pairs.jsonl"))

    n_checked = 0
    for ex in train:
        te = tokenize_example(base_tok, ex)
        f = ex["meta"]["frame"]
        want_text = "".join((m["content"] + "\n\n") if m["role"] == "system" else
                            f"{f['me'] if m['role'] == 'assistant' else f['other']}: {m['content']}\n"
                            for m in ex["messages"])
        assert base_tok.decode(te.tokens) == want_text  # the example is the named frame, token for token
        learned = [base_tok.decode([te.tokens[i] for i in r]).removeprefix(" ") for r in _runs(te.labels, {1, -1})]
        targets = [m["content"] + "\n" for m in ex["messages"] if m["role"] == "assistant" and m["train"]]
        assert learned == targets  # exactly the learned speaker's turns, each with the newline ending it
        zero = base_tok.decode([te.tokens[i] for i, lab in enumerate(te.labels) if lab == 0])
        assert f"{f['me']}:" in zero and all(m["content"] in zero for m in ex["messages"] if m["role"] == "user")
        n_checked += 1
    assert n_checked == len(train) > 10


def test_group_and_scrubbed_data_fall_back_to_them(tmp_path):
    rows = [msg("wa", f"c{i}", k, role, text, ts(k), speaker=sp)
            for i in range(4) for k, (role, sp, text) in enumerate([
                ("other", "Sam Okafor", f"climbing on day {i}?"), ("other", "Priya Nair", "me too"),
                ("me", "Alex Rivera", f"yes, gym at {i + 6} pm, bring chalk")])]
    src = write(tmp_path / "m.jsonl", rows)
    rep = build_dataset(src, tmp_path / "d", BuildConfig(safety_fraction=0.0, dedupe=False))
    assert rep["frame"] == {"me": "Alex Rivera", "other": "Them"}
    rows2 = [r for r in rows if r["speaker"] != "Priya Nair"]
    rep2 = build_dataset(write(tmp_path / "m2.jsonl", rows2), tmp_path / "s",
                         BuildConfig(safety_fraction=0.0, dedupe=False, scrub=True))
    assert rep2["frame"] == {"me": "Alex Rivera", "other": "Them"}
    assert "Sam" not in (tmp_path / "s" / "train.jsonl").read_text() + (tmp_path / "s" / "build_report.json").read_text()


def test_recorded_frame_reaches_generate_eval_and_export(tmp_path, tiny_model_dir, base_tok):
    from mlx_lm import load

    from notme_mlx.eval.generation import load_target
    from notme_mlx.lora import LoRAConfig, apply_lora, save_adapter
    from notme_mlx.models import generate as gen

    names = {"me": "Alex Rivera", "other": "Sam Okafor"}
    model, tok = load(str(tiny_model_dir))
    apply_lora(model, LoRAConfig(rank=2, num_layers=1, targets=("q_proj",)), name="default", trainable=True)
    ad = save_adapter(model, "default", tmp_path / "ad", LoRAConfig(rank=2, num_layers=1, targets=("q_proj",)),
                      extra_meta={"frame": names})
    assert recorded_frame([ad]) == names and recorded_frame([]) is None
    # a template-less tokenizer takes the names; one with a chat template keeps its template
    assert use_recorded_frame(base_tok, [ad]) == Frame(**names)
    assert gen.chat_prompt(base_tok, [{"role": "user", "content": "hi"}]) == "Sam Okafor: hi\nAlex Rivera:"
    templ = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    assert use_recorded_frame(templ, [ad]) is None and frame_for(templ) is None

    # eval: the adapted model and its baseline (no adapter) are asked in the same frame
    tiny_base = tmp_path / "base"
    tiny_base.mkdir()
    for p in tiny_model_dir.iterdir():
        (tiny_base / p.name).write_bytes(p.read_bytes())
    cfg = json.loads((tiny_base / "tokenizer_config.json").read_text())
    cfg.pop("chat_template", None)
    (tiny_base / "tokenizer_config.json").write_text(json.dumps(cfg))
    for extra in ("chat_template.jinja", "chat_template.json"):
        (tiny_base / extra).unlink(missing_ok=True)
    _, t1, m1 = load_target(str(tiny_base), adapters=ad, force=True)
    _, t2, m2 = load_target(str(tiny_base), force=True, frame_adapters=[ad])
    _, t3, m3 = load_target(str(tiny_base), force=True)
    assert m1["frame"] == m2["frame"] == "plain (Sam Okafor: / Alex Rivera: lines)"
    assert m3["frame"] == DEFAULT_FRAME.name and describe_frame(t3) == DEFAULT_FRAME.name


def test_train_saves_the_data_frame_with_the_adapter(tmp_path, tiny_model_dir):
    from mlx_lm import load

    from notme_mlx.recipe import load_recipe
    from notme_mlx.train.trainer import train

    rows = corpus(6)
    for r in rows:
        r["speaker"] = {"me": "Alex Rivera", "other": "Sam Okafor"}.get(r["role"], r["speaker"])
    d = tmp_path / "d"
    rep = build_dataset(write(tmp_path / "m.jsonl", rows), d, BuildConfig(safety_fraction=0.1))
    model, tok = load(str(tiny_model_dir))
    tok._tokenizer.chat_template = None
    r = load_recipe(None, {"model": str(tiny_model_dir), "data.train": str(d / "train.jsonl"), "data.valid": None,
                           "data.max_seq_len": 64, "out_dir": str(tmp_path / "runs"), "name": "t", "lora.rank": 2,
                           "batch_size": 2, "max_steps": 1, "eval_every": 0, "save_every": 0})
    res = train(r, model=model, tokenizer=tok)
    cfg = json.loads((res.adapter_dir / "adapter_config.json").read_text())
    # the dataset's frame (the person's), not the first shuffled example's (which may be an assistant one)
    assert cfg["notme"]["frame"] == rep["frame"] == {"me": "Alex Rivera", "other": "Sam Okafor"}
    assert recorded_frame([res.adapter_dir]) == rep["frame"]
