"""Label alignment: for every template family, +1 tokens decode to the targets (+ end-of-turn),
-1 tokens decode to the penalized spans, everything else is 0."""

from __future__ import annotations

import pytest

from notme_mlx.data.labels import render, tokenize_example
from notme_mlx.models.tiny import build_tiny_tokenizer

LLAMA3 = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'"
    "+ message['content'] | trim + '<|eot_id|>' %}"
    "{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)
MISTRAL = (
    "{{ bos_token }}{% for message in messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token}}"
    "{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}"
)
GEMMA = (
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
    "{% endif %}{% for message in messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if (message['role'] == 'assistant') %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}"
    "{% endif %}{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{'<start_of_turn>model\n'}}{% endif %}"
)
# mistral v0.3 style: the system prompt goes into the LAST user turn (dropped if the chat ends
# with the assistant)
MISTRAL_V3 = (
    "{%- if messages[0]['role'] == 'system' %}{%- set system_message = messages[0]['content'] %}"
    "{%- set loop_messages = messages[1:] %}{%- else %}{%- set loop_messages = messages %}{%- endif %}"
    "{{- bos_token }}{%- for message in loop_messages %}{%- if message['role'] == 'user' %}"
    "{%- if loop.last and system_message is defined %}{{- '[INST] ' + system_message + '\n\n' + message['content']"
    " + '[/INST]' }}{%- else %}{{- '[INST] ' + message['content'] + '[/INST]' }}{%- endif %}"
    "{%- elif message['role'] == 'assistant' %}{{- ' ' + message['content']|trim + eos_token }}{%- endif %}"
    "{%- endfor %}"
)
# contrived: the system prompt rendered after everything else (content out of message order)
SYSTEM_LAST = (
    "{% for m in messages %}{% if m['role'] != 'system' %}{{ '<|im_start|>' + m['role'] + '\n' + m['content']"
    " + '<|im_end|>\n' }}{% endif %}{% endfor %}{% for m in messages %}{% if m['role'] == 'system' %}"
    "{{ '<|im_start|>system\n' + m['content'] + '<|im_end|>\n' }}{% endif %}{% endfor %}"
)
FAMILIES = {
    "chatml": (None, {}, "<|im_end|>"),
    "llama3": (LLAMA3, {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>",
                        "extra": ["<|start_header_id|>", "<|end_header_id|>"]}, "<|eot_id|>"),
    "mistral": (MISTRAL, {"bos_token": "<s>", "eos_token": "</s>", "extra": ["[INST]", "[/INST]"]}, "</s>"),
    "gemma": (GEMMA, {"bos_token": "<bos>", "eos_token": "<eos>", "extra": ["<start_of_turn>", "<end_of_turn>"]},
              "<end_of_turn>"),
    "plain": ("", {"eos_token": "<|im_end|>"}, "\n"),  # no template: the plain-text frame, a turn ends with "\n"
    "mistral_v3": (MISTRAL_V3, {"bos_token": "<s>", "eos_token": "</s>", "extra": ["[INST]", "[/INST]"]}, "</s>"),
    "system_last": (SYSTEM_LAST, {}, "<|im_end|>"),
}


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("tok")
    build_tiny_tokenizer(d, vocab_size=512, seed=0)
    return d


def make_tokenizer(base_dir, family):
    from transformers import AutoTokenizer

    template, spec, _ = FAMILIES[family]
    tok = AutoTokenizer.from_pretrained(str(base_dir))
    new = [t for t in [spec.get("bos_token"), spec.get("eos_token"), *spec.get("extra", [])] if t]
    if new:
        tok.add_special_tokens({"additional_special_tokens": new})
    for k in ("bos_token", "eos_token"):
        if k in spec:
            setattr(tok, k, spec[k])
    if template is not None:
        tok.chat_template = template or None
    return tok


PEN = "Does that make sense?"
A1 = "Use a set for the lookups; it is O(1). " + PEN
A2 = "Great question! The parser fails on “curly” quotes 🙂\nFix: normalize first."


def example():
    return {"messages": [
        {"role": "system", "content": "You are Alex.", "train": False, "spans": []},
        {"role": "user", "content": "Why is the loop slow?", "train": False, "spans": []},
        {"role": "assistant", "content": A1, "train": True, "spans": [[A1.index(PEN), len(A1), "penalize"]]},
        {"role": "user", "content": "And the parser bug?", "train": False, "spans": []},
        {"role": "assistant", "content": A2, "train": True, "spans": [[0, 15, "penalize"]]},
        {"role": "user", "content": "ok", "train": False, "spans": []},
        {"role": "assistant", "content": "Done.", "train": False, "spans": []},
    ]}


def runs(labels, want):
    out, cur = [], []
    for i, l in enumerate(labels):
        if l in want:
            cur.append(i)
        elif cur:
            out.append(cur)
            cur = []
    if cur:
        out.append(cur)
    return out


@pytest.mark.parametrize("family", list(FAMILIES))
def test_labels_decode_to_targets_and_spans(base_dir, family):
    tok = make_tokenizer(base_dir, family)
    eot = FAMILIES[family][2]
    ex = example()
    te = tokenize_example(tok, ex)
    assert len(te.tokens) == len(te.labels) and te.labels[0] == 0
    assert set(te.labels) <= {-1, 0, 1}
    dec = lambda ids: tok.decode([te.tokens[i] for i in ids], skip_special_tokens=False)  # noqa: E731
    # +1 and -1 together: each trainable target's content followed by its end-of-turn token
    assert [dec(r) for r in runs(te.labels, {1, -1})] == [A1 + eot, A2 + eot]
    # -1 alone: exactly the penalized spans (a leading space glued to the first token aside)
    got = [dec(r) for r in runs(te.labels, {-1})]
    assert [g.lstrip() for g in got] == [PEN, "Great question!"]
    assert all(g[:len(g) - len(g.lstrip())].isspace() or g == g.lstrip() for g in got)
    # +1 alone: the targets with the spans cut out, then end-of-turn
    plus = dec([i for i, l in enumerate(te.labels) if l == 1])
    want = A1[:A1.index(PEN)] + eot + A2[15:] + eot
    assert plus.replace(" ", "") == want.replace(" ", "")
    # the context assistant turn ("Done.") and everything else is 0
    text, _ = render(tok, [{"role": m["role"], "content": m["content"]} for m in ex["messages"]])
    assert text.count("Done.") == 1
    zero = tok.decode([t for t, l in zip(te.tokens, te.labels) if l == 0], skip_special_tokens=False)
    assert "Done." in zero and "Why is the loop slow?" in zero


@pytest.mark.parametrize("family", ["chatml", "gemma"])
def test_whole_message_penalize_and_trim(base_dir, family):
    tok = make_tokenizer(base_dir, family)
    eot = FAMILIES[family][2]
    ex = example()
    ex["messages"][2]["train"] = "penalize"
    te = tokenize_example(tok, ex)
    dec = lambda ids: tok.decode([te.tokens[i] for i in ids], skip_special_tokens=False)  # noqa: E731
    assert [dec(r).strip() for r in runs(te.labels, {-1})] == [A1, "Great question!"]
    # left trim: keep the last target and its end-of-turn, drop the front
    full = tokenize_example(tok, ex)
    last = max(i for i, l in enumerate(full.labels) if l != 0)
    n_last = len(runs(full.labels, {1, -1})[-1])
    L = n_last + 5
    tr = tokenize_example(tok, ex, max_seq_len=L)
    assert len(tr.tokens) == L and tr.labels[0] == 0
    assert tr.tokens == full.tokens[last + 1 - L:last + 1]
    assert tr.labels[1:] == full.labels[last + 2 - L:last + 1]
    last_run = runs(tr.labels, {1, -1})[-1]
    assert tok.decode([tr.tokens[i] for i in last_run], skip_special_tokens=False) == A2 + eot


def test_mlx_tokenizer_wrapper(tiny_model_dir):
    from mlx_lm import load

    _, wrapper = load(str(tiny_model_dir))
    ex = {"messages": [{"role": "user", "content": "hi", "train": False, "spans": []},
                       {"role": "assistant", "content": "Hello there.", "train": True, "spans": []}]}
    te = tokenize_example(wrapper, ex)
    ids = [t for t, l in zip(te.tokens, te.labels) if l == 1]
    assert wrapper._tokenizer.decode(ids, skip_special_tokens=False) == "Hello there.<|im_end|>"


def test_ignore_spans_are_zero(base_dir):
    tok = make_tokenizer(base_dir, "chatml")
    content = "Keep this. Skip this part. Keep that."
    a = content.index("Skip this part.")
    ex = {"messages": [{"role": "user", "content": "q", "train": False, "spans": []},
                       {"role": "assistant", "content": content, "train": True,
                        "spans": [[a, a + len("Skip this part."), "ignore"]]}]}
    te = tokenize_example(tok, ex)
    plus = tok.decode([t for t, l in zip(te.tokens, te.labels) if l == 1], skip_special_tokens=False)
    assert plus.replace(" ", "") == "Keepthis.Keepthat.<|im_end|>" and -1 not in te.labels


@pytest.mark.parametrize("family", ["chatml", "llama3"])
def test_content_equal_to_header_words(base_dir, family):
    tok = make_tokenizer(base_dir, family)
    eot = FAMILIES[family][2]
    ex = {"messages": [{"role": "user", "content": "user", "train": False, "spans": []},
                       {"role": "assistant", "content": "assistant", "train": True, "spans": []},
                       {"role": "user", "content": "\nassistant\n", "train": False, "spans": []},
                       {"role": "assistant", "content": "user", "train": True, "spans": [[0, 4, "penalize"]]}]}
    te = tokenize_example(tok, ex)
    dec = [tok.decode([te.tokens[i] for i in r], skip_special_tokens=False) for r in runs(te.labels, {1, -1})]
    assert dec == ["assistant" + eot, "user" + eot]
    assert tok.decode([t for t, l in zip(te.tokens, te.labels) if l == -1]).strip() == "user"


@pytest.mark.parametrize("family", list(FAMILIES))
def test_built_examples_align_in_every_family(base_dir, tmp_path, family):
    """End to end: `data build` output tokenizes with exact target/penalty alignment."""
    import json

    from test_data_build import corpus, write

    from notme_mlx.data.builder import build_dataset
    from notme_mlx.recipe import BuildConfig

    src = write(tmp_path / "m.jsonl", corpus(4))
    build_dataset(src, tmp_path / "d", BuildConfig(system_prompt="You are Alex."))
    tok = make_tokenizer(base_dir, family)
    eot = FAMILIES[family][2]
    n = 0
    for split in ("train", "valid", "test"):
        for line in (tmp_path / "d" / f"{split}.jsonl").read_text().splitlines():
            ex = json.loads(line)
            te = tokenize_example(tok, ex)
            want = [m["content"] + (eot if m["train"] is True else "") for m in ex["messages"]
                    if m["role"] == "assistant" and m["train"] is not False]
            got = [tok.decode([te.tokens[i] for i in r], skip_special_tokens=False) for r in runs(te.labels, {1, -1})]
            assert got == want
            pen = [m["content"][a:b] for m in ex["messages"] for a, b, _ in m["spans"]]
            pgot = [tok.decode([te.tokens[i] for i in r]).strip() for r in runs(te.labels, {-1})]
            assert pgot == [p.strip() for p in pen]
            n += 1
    assert n > 8
