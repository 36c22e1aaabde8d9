"""The plain-text conversation frame for base models: token labels decode through it, generation
stops at its speaker lines, eval cuts and scores replies with it, and its export templates
(Jinja for HF/GGUF, Go for Ollama) render the same text."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from notme_mlx.data.labels import render, tokenize_example
from notme_mlx.eval import generation as evalgen
from notme_mlx.models import generate as gen
from notme_mlx.models.frame import DEFAULT_FRAME, Frame, describe_frame, frame_for, set_frame
from test_data_labels import runs as _runs

PEN = "Does that make sense?"
A1 = "Use a set for the lookups; it is O(1). " + PEN
A2 = "the parser fails on “curly” quotes 🙂\nfix: normalize first."


def _example(names=None):
    ex = {"messages": [
        {"role": "system", "content": "Chat between climbing friends.", "train": False, "spans": []},
        {"role": "user", "content": "Why is the loop slow?", "train": False, "spans": []},
        {"role": "assistant", "content": A1, "train": True, "spans": [[A1.index(PEN), len(A1), "penalize"]]},
        {"role": "user", "content": "And the parser bug?", "train": False, "spans": []},
        {"role": "assistant", "content": A2, "train": True, "spans": []},
        {"role": "user", "content": "ok", "train": False, "spans": []},
        {"role": "assistant", "content": "Done.", "train": False, "spans": []},
    ], "meta": {"id": "x"}}
    if names:
        ex["meta"]["frame"] = names
    return ex


@pytest.fixture
def base_tok(tiny_model_dir):
    tok = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    tok.chat_template = None  # a base model: no chat template
    return tok


def test_framed_labels_decode_to_replies_and_newline(base_tok):
    ex = _example({"me": "Alex", "other": "Sam"})
    te = tokenize_example(base_tok, ex)
    dec = lambda ids: base_tok.decode([te.tokens[i] for i in ids])  # noqa: E731
    text = ("Chat between climbing friends.\n\nSam: Why is the loop slow?\nAlex: " + A1 + "\nSam: And the parser bug?\n"
            "Alex: " + A2 + "\nSam: ok\nAlex: Done.\n")
    assert base_tok.decode(te.tokens) == text  # the whole example is the frame, token for token
    # learned: each target reply and the newline that ends its turn (the model learns to stop)
    # (at most the space after "Alex:" that BPE glues to the reply's first word comes along)
    assert [dec(r).removeprefix(" ") for r in _runs(te.labels, {1, -1})] == [A1 + "\n", A2 + "\n"]
    assert [dec(r).strip() for r in _runs(te.labels, {-1})] == [PEN]
    # context: names, the other speaker's lines, the system line, the untrained reply
    zero = dec([i for i, l in enumerate(te.labels) if l == 0])
    for part in ("Chat between climbing friends.", "Sam: Why is the loop slow?", "Alex:", "Sam: ok", "Done."):
        assert part in zero
    assert "Use a set" not in zero and "normalize" not in zero


def test_frame_names_default_and_set(base_tok):
    assert frame_for(base_tok) == DEFAULT_FRAME and describe_frame(base_tok).startswith("plain (Them: / Me:")
    text, _ = render(base_tok, [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}])
    assert text == "Them: hi\nMe: yo\n"
    set_frame(base_tok, {"me": "Alex", "other": "Sam"})
    assert gen.chat_prompt(base_tok, [{"role": "user", "content": "hi"}]) == "Sam: hi\nAlex:"
    tmpl = AutoTokenizer.from_pretrained(str(Path(base_tok.name_or_path)))
    assert frame_for(tmpl) is None and describe_frame(tmpl) == "chat template"


def test_generation_stops_at_the_next_speaker_line(tiny_model_dir, monkeypatch):
    from mlx_lm import load

    model, tok = load(str(tiny_model_dir))
    tok._tokenizer.chat_template = None
    pieces = [" we", "ll, 9", " at the gym\nbring", " rope\n", "Them", ": ok?\nMe: more"]

    class R:
        def __init__(self, t):
            self.text = t

    monkeypatch.setattr(gen, "stream_generate", lambda *a, **k: (R(p) for p in pieces))
    prompt = gen.chat_prompt(tok, [{"role": "user", "content": "when?"}])
    assert prompt == "Them: when?\nMe:"
    out = list(gen.stream(model, tok, prompt))
    assert "".join(out) == "well, 9 at the gym\nbring rope"  # multi-line reply kept, next turn cut
    assert not any("Them" in p for p in out)
    # no stop reached: the trailing newline goes, the text stays
    pieces[:] = [" short", " reply\n"]
    assert gen.generate_text(model, tok, prompt) == "short reply"
    # eval cuts batch-generated text the same way, and scores replies after "Me:" with the space
    assert evalgen._finish(tok, " fine\nThem: and you?") == "fine"
    assert evalgen.render(tok, [{"role": "user", "content": "q"}]) == "Them: q\nMe:"


def test_reply_nll_scores_the_reply_tokens_after_the_frame(tiny_model_dir):
    from mlx_lm import load

    model, tok = load(str(tiny_model_dir))
    tok._tokenizer.chat_template = None
    ctx = [{"role": "user", "content": "when?"}]
    (nll, n), = evalgen.reply_nll(model, tok, [(ctx, "at nine")])
    ids = tok.encode("Them: when?\nMe: at nine", add_special_tokens=False)
    pre = tok.encode("Them: when?\nMe:", add_special_tokens=False)
    assert ids[:len(pre)] == pre and n == len(ids) - len(pre)
    import mlx.core as mx

    logits = model(mx.array([ids[:-1]]))[0].astype(mx.float32)
    logp = logits - mx.logsumexp(logits, axis=-1, keepdims=True)
    want = -sum(float(logp[t - 1, ids[t]]) for t in range(len(pre), len(ids)))
    assert nll == pytest.approx(want, rel=1e-4)


MSGS = [
    [{"role": "user", "content": "hi"}],
    [{"role": "system", "content": "Two friends."}, {"role": "user", "content": "it's \"fine\"\nreally"},
     {"role": "assistant", "content": "ok {{ not a var }}"}, {"role": "user", "content": "sure?"}],
]


@pytest.mark.parametrize("frame", [DEFAULT_FRAME, Frame("Alex", "Sam"),
                                   Frame("A", "B", intro="Alex's chat log, it's \"raw\".\n")])
def test_export_templates_render_the_frame(frame, base_tok):
    base_tok.chat_template = frame.jinja_template()
    for msgs in MSGS:
        for gp in (True, False):
            got = base_tok.apply_chat_template(msgs, add_generation_prompt=gp, tokenize=False)
            assert got == frame.render(msgs, add_generation_prompt=gp), (msgs, gp)
    t = frame.ollama_template()
    assert t.endswith(f"{frame.me}:") and f"{frame.other}: {{{{ .Content }}}}" in t
    json.dumps(frame.to_dict())


@pytest.mark.slow
def test_gemma3_framed_labels_start_with_bos_and_decode():
    """The real Gemma 3 base tokenizer (fetched registry model): BOS first, replies + newline learned."""
    from notme_mlx.models import resolve

    tok = AutoTokenizer.from_pretrained(str(resolve("gemma3-270m")))
    assert frame_for(tok) is not None
    te = tokenize_example(tok, _example({"me": "Alex", "other": "Sam"}))
    assert te.tokens[0] == tok.bos_token_id and tok.decode(te.tokens[1:]).startswith("Chat between")
    runs = [tok.decode([te.tokens[i] for i in r]) for r in _runs(te.labels, {1, -1})]
    assert [r.strip() for r in runs] == [A1, A2] and all(r.endswith("\n") for r in runs)


def test_frame_template_names_itself():
    from notme_mlx.models.frame import frame_from_template

    f = Frame("Alex", "Sam", intro="A log.\n")
    assert frame_from_template(f.jinja_template()) == f
    assert frame_from_template("{{ messages }}") is None and frame_from_template(None) is None


def test_ollama_modelfile_for_a_framed_base_model():
    from notme_mlx.export.templates import modelfile

    f = Frame("Alex", "Sam")
    mf = modelfile("model.gguf", f.jinja_template())
    assert f'TEMPLATE """{f.ollama_template()}"""' in mf
    assert 'PARAMETER stop "Sam:"' in mf and 'PARAMETER stop "Alex:"' in mf
