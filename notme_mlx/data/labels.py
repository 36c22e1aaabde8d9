"""Tokenize an Example with one label per token: +1 learn, 0 context, -1 penalize.

The chat template is rendered ONCE to text; each message's content is located in the
rendered string (char offsets) and the string is tokenized with offsets, so every token
gets a label from the characters it covers:

  * region labels per char: target content (+1), penalize spans and whole messages with
    `train: "penalize"` (-1, wins over +1), `ignore` spans and everything else 0 (headers,
    context, system);
  * a token takes -1 if more than half of its non-whitespace chars are -1, else +1 if more
    than half are +1, else 0 (whitespace-only tokens: the same over all their chars). So a
    token " Does" whose word lies in a span is -1: the -1 tokens decode to the span plus at
    most the whitespace that BPE glues to a token's front;
  * the end-of-turn token(s) closing a trainable target (from the end of its content up to
    and including the first special token, e.g. <|im_end|>, <|eot_id|>, </s>,
    <end_of_turn>) are +1, so the model learns to stop;
  * labels[0] is 0 (the first token is never a target).

Templates that reject a system turn (gemma, mistral) get it folded into the first user
turn. Tokenizers without a chat template (base models) use the plain-text conversation frame
(models/frame.py: "Them: ...\\nMe: ...\\n" lines, BOS first when the tokenizer adds one); there the
end-of-turn is the newline closing a learned reply. The frame's names come from the example's
`meta.frame` ({"me", "other"}) or the tokenizer's frame (`set_frame`). Over-long examples are
left-trimmed so the last target (and its end-of-turn) is kept.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import NotmeError
from ..models.frame import Frame, bos_prefix, frame_for


@dataclass
class TokenizedExample:
    tokens: list
    labels: list


def hf_tokenizer(tokenizer):
    """The HF fast tokenizer inside an mlx-lm TokenizerWrapper (or the tokenizer itself)."""
    inner = getattr(tokenizer, "_tokenizer", None)
    return inner if inner is not None and hasattr(inner, "apply_chat_template") else tokenizer


def _messages_for_template(example: dict) -> list[dict]:
    return [{"role": m["role"], "content": m["content"]} for m in example["messages"]]


def example_frame(tokenizer, example: dict | None = None) -> Frame | None:
    """The plain frame for this tokenizer (None: it has a chat template), with the example's names."""
    frame = frame_for(tokenizer)
    names = ((example or {}).get("meta") or {}).get("frame")
    if frame is not None and isinstance(names, dict):
        frame = Frame(**{**frame.to_dict(), **{k: v for k, v in names.items() if k in ("me", "other", "intro")}})
    return frame


def render(tokenizer, messages: list[dict], frame: Frame | None = None) -> tuple[str, list[dict]]:
    """Render `messages` with the chat template (or the plain-text frame when there is none).

    Returns:
      (text, messages actually rendered) — the second differs when a system turn was folded
      into the first user turn.
    """
    hf = hf_tokenizer(tokenizer)
    if frame is None:
        frame = frame_for(tokenizer)
    if frame is None and getattr(hf, "chat_template", None):
        try:
            return hf.apply_chat_template(messages, tokenize=False), messages
        except Exception as e:  # jinja raise_exception, e.g. "System role not supported"
            if messages and messages[0]["role"] == "system" and len(messages) > 1 and messages[1]["role"] == "user":
                folded = [{"role": "user", "content": messages[0]["content"] + "\n\n" + messages[1]["content"]}]
                folded += messages[2:]
                try:
                    return hf.apply_chat_template(folded, tokenize=False), folded
                except Exception as e2:
                    raise NotmeError(f"chat template failed: {e2}") from None
            raise NotmeError(f"chat template failed: {e} (roles must usually alternate user/assistant, "
                             "starting with user)") from None
    return frame.render(messages, bos=bos_prefix(tokenizer)), messages


def _sentinel(i: int) -> str:
    return f"\u2063NOTME{i}\u2063"


def _locate(tokenizer, rendered: str, msgs: list[dict], frame: Frame | None = None) -> list[tuple[int, int, int]]:
    """(start, end, shift) of each message's content inside `rendered`.

    The template is rendered a second time with a unique sentinel in place of each content;
    the text between sentinels is the template's own text, so each content is found exactly
    where the template put it (never inside a header that happens to contain the same words).
    `shift` = leading chars of the original content the template stripped (e.g. `| trim`).
    """
    probe, _ = render(tokenizer, [{"role": m["role"], "content": _sentinel(i)} for i, m in enumerate(msgs)], frame)
    pos = []
    for i, m in enumerate(msgs):
        p = probe.find(_sentinel(i))
        if p < 0 and m["role"] == "assistant" and m.get("train", True) is not False:
            raise NotmeError(f"chat template dropped message {i} ({m['role']}); cannot align labels")
        pos.append(p)  # -1: a context turn the template leaves out (e.g. a system prompt) needs no labels
    order = sorted((i for i in range(len(msgs)) if pos[i] >= 0), key=lambda i: pos[i])  # rendered order (mistral v3 moves system last)
    pieces, cur = [], 0
    for i in order:
        pieces.append(probe[cur:pos[i]])
        cur = pos[i] + len(_sentinel(i))
    pieces.append(probe[cur:])
    out: list = [(0, 0, 0)] * len(msgs)
    cur = 0
    for k, i in enumerate(order):
        if not rendered.startswith(pieces[k], cur):
            raise NotmeError("chat template output is not stable between renders; cannot align labels")
        cur += len(pieces[k])
        c = msgs[i]["content"]
        for cand in (c, c.strip(), c.rstrip(), c.lstrip()):
            if rendered.startswith(cand, cur) and rendered.startswith(pieces[k + 1], cur + len(cand)):
                break
        else:
            raise NotmeError("chat template changes message text; cannot align labels "
                             f"(content starting {c[:40]!r})")
        out[i] = (cur, cur + len(cand), c.find(cand) if cand else 0)
        cur += len(cand)
    return out


def _special_ids(hf) -> set[int]:
    ids = set(getattr(hf, "all_special_ids", []) or [])
    for i, t in (getattr(hf, "added_tokens_decoder", None) or {}).items():
        if getattr(t, "special", False):
            ids.add(int(i))
    return ids


def tokenize_example(tokenizer, example: dict, max_seq_len: int | None = None) -> TokenizedExample:
    """Tokens and per-token labels for one Example (docs/data.md).

    Args:
      tokenizer: HF fast tokenizer or mlx-lm TokenizerWrapper.
      example: {"messages": [{"role","content","train","spans"}], ...}.
      max_seq_len: left-trim to this many tokens, keeping the last target (None: no limit).
    Returns:
      TokenizedExample(tokens [T] ints, labels [T] in {+1, 0, -1}); labels[i] is token i's
      label as a prediction target.
    """
    hf = hf_tokenizer(tokenizer)
    msgs = example["messages"]
    frame = example_frame(tokenizer, example)
    text, rendered_msgs = render(tokenizer, _messages_for_template(example), frame)
    folded = len(rendered_msgs) != len(msgs)
    locs = _locate(tokenizer, text, rendered_msgs if folded else msgs, frame)
    if folded:  # system + first user became one user turn: both are context
        locs = [locs[0], locs[0]] + locs[1:]
    n = len(text)
    tgt = np.zeros(n, dtype=np.int8)
    pen = np.zeros(n, dtype=np.int8)
    trainable_ends = []
    for m, (a, b, shift) in zip(msgs, locs):
        if m["role"] != "assistant" or m.get("train", False) is False:
            continue
        if m.get("train") == "penalize":
            pen[a:b] = 1
            continue
        tgt[a:b] = 1
        trainable_ends.append(b)
        for s in m.get("spans", []):
            sa, sb = max(a, a + s[0] - shift), min(b, a + s[1] - shift)
            if sb <= sa:
                continue
            if len(s) < 3 or s[2] == "penalize":
                pen[sa:sb] = 1
            elif s[2] == "ignore":  # neither learned nor penalized
                tgt[sa:sb] = 0
    enc = hf(text, add_special_tokens=False, return_offsets_mapping=True)
    ids = list(enc["input_ids"])
    offs = enc["offset_mapping"]
    nonws = np.fromiter((not ch.isspace() for ch in text), dtype=np.int8, count=n)
    cs = lambda arr: np.concatenate([[0], np.cumsum(arr, dtype=np.int64)])  # noqa: E731
    P_nw, T_nw, N_nw = cs(pen & nonws), cs(tgt & nonws), cs(nonws)
    P_all, T_all = cs(pen), cs(tgt)
    labels = [0] * len(ids)
    for i, (s, e) in enumerate(offs):
        if e <= s:
            continue
        k = N_nw[e] - N_nw[s]
        if k > 0:
            p, t = P_nw[e] - P_nw[s], T_nw[e] - T_nw[s]
        else:
            k, p, t = e - s, P_all[e] - P_all[s], T_all[e] - T_all[s]
        labels[i] = -1 if 2 * p > k else (1 if 2 * t > k else 0)
    special = _special_ids(hf)
    starts = [s for s, _ in offs]
    for end in (trainable_ends if frame is not None else []):  # plain frame: the newline closing the reply
        i = next((j for j, (s, e) in enumerate(offs) if s <= end < e), None)
        if i is not None and labels[i] == 0 and text[end:end + 1] == "\n":
            labels[i] = 1
    for end in (trainable_ends if frame is None else []):  # end-of-turn: content end through the first special token
        i = next((j for j, (s, e) in enumerate(offs) if s >= end), None)
        while i is not None and i < len(ids) and labels[i] == 0:
            if ids[i] in special:
                labels[i] = 1
                break
            if text[offs[i][0]:offs[i][1]].strip():
                break  # non-special text before any special token: no end-of-turn marker
            i += 1
    del starts
    if labels:
        labels[0] = 0
    if max_seq_len is not None and len(ids) > max_seq_len:
        ids, labels = _trim(ids, labels, max_seq_len)
    return TokenizedExample(ids, labels)


def _trim(ids: list, labels: list, L: int) -> tuple[list, list]:
    nz = [i for i, l in enumerate(labels) if l != 0]
    if not nz:
        return ids[:L], labels[:L]
    last = nz[-1]
    # the first token of the last target turn: walk back over its contiguous labelled run
    first = last
    while first > 0 and labels[first - 1] != 0:
        first -= 1
    if last + 1 - first <= L - 1:
        a = max(0, last + 1 - L)
        b = last + 1
    else:  # the last target alone is too long: keep its start, cut its end
        a = max(0, first - 1)
        b = a + L
    ids, labels = ids[a:b], labels[a:b]
    labels[0] = 0
    return ids, labels
