"""Training-data JSON(L) formats: OpenAI chat fine-tuning, ShareGPT, mlx-lm, notme JSONL.

- openai_jsonl: one `{"messages": [{"role", "content"}]}` per line (also mlx-lm's
  "chat" format, which is the same shape). user -> me, assistant -> ai,
  system -> system, tool -> tool (dropped unless ctx.tools).
- sharegpt: JSON array or JSONL of `{"conversations": [{"from", "value"}]}`;
  human/user -> me, gpt/assistant/model -> ai, system -> system; tool-calling
  turns (`function_call`, `observation`, `tool`, ...) -> kind="tool" (dropped unless ctx.tools).
- mlx_jsonl: mlx-lm "completions" `{"prompt", "completion"}` (me, ai) and "text"
  `{"text"}` (one message by me: plain writing for continued pretraining).
- notme_jsonl: Message records as written by `notme ingest`, or
  hand-written partial ones: `text` plus `role` (me|other|ai|system) or `speaker`;
  missing ids/conversation are filled in deterministically.

Each line (or array element) is one conversation; its id is the record's own
`id` when present, else a hash of file name and line number. A malformed line or
conversation is one bad record (BadRecord, `file:line`); the rest of the file is kept.
"""

from __future__ import annotations

import json
from pathlib import PurePath
from typing import Iterator

from ..context import BadRecord
from ..jsonstream import iter_json_array
from ..record import FIELDS, KINDS, ROLES, UNRESOLVED, message, parse_iso, iso_utc, stable_id

_ME = {"user", "human"}
_AI = {"assistant", "gpt", "model", "bot", "chatgpt", "ai"}
_TOOL = {"tool", "function", "observation", "function_response", "ipython", "function_call", "tool_call",
         "tool_response", "tool_calls"}


def _first_obj(head: bytes) -> dict | None:
    h = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    if not h.startswith(b"{"):
        return None
    line = h.split(b"\n", 1)[0]
    try:
        o = json.loads(line.decode("utf-8", errors="strict"))
    except (ValueError, UnicodeDecodeError):
        return None
    return o if isinstance(o, dict) else None


def sniff_openai(head: bytes, name: str) -> bool:
    o = _first_obj(head)
    return o is not None and isinstance(o.get("messages"), list) and "sessionId" not in o


def sniff_sharegpt(head: bytes, name: str) -> bool:
    o = _first_obj(head)
    if o is not None:
        return isinstance(o.get("conversations"), list)
    h = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    return h.startswith(b"[") and b'"conversations"' in head and b'"from"' in head


def sniff_mlx(head: bytes, name: str) -> bool:
    o = _first_obj(head)
    return o is not None and ("prompt" in o and "completion" in o or set(o) == {"text"})


def sniff_notme(head: bytes, name: str) -> bool:
    o = _first_obj(head)
    return o is not None and "text" in o and ("role" in o or "speaker" in o) and "messages" not in o


def json_lines(src, ctx):
    """(lineno, obj) of a JSONL source; a line that is not a JSON object is a bad record (ctx.skip)."""
    with src.open() as f:
        for lineno, raw in enumerate(f, 1):
            ctx.advance(len(raw))
            if not raw.strip():
                continue
            try:
                o = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                msg = e.msg if isinstance(e, json.JSONDecodeError) else "not UTF-8"
                ctx.skip(BadRecord(f"{src.name}:{lineno}", f"invalid JSON ({msg})"))
                continue
            if not isinstance(o, dict):
                ctx.skip(BadRecord(f"{src.name}:{lineno}", f"expected a JSON object, got {type(o).__name__}"))
                continue
            yield lineno, o


def _each(records, ctx):
    """The records of one line/conversation (a list), or none and a bad record when it is malformed."""
    try:
        return list(records)
    except BadRecord as e:
        ctx.skip(e)
        return []


def _content(c) -> str:
    if isinstance(c, str):
        return c
    if isinstance(c, list):
        out = []
        for p in c:
            if isinstance(p, str):
                out.append(p)
            elif isinstance(p, dict):
                if p.get("type") in ("text", "input_text", "output_text"):
                    out.append(p.get("text", ""))
                elif "image" in str(p.get("type")):
                    out.append("<media:image>")
        return "\n".join(out)
    return "" if c is None else str(c)


def _turns(source, cid, turns, ctx, where):
    """Records for a list of (role_name, text) turns."""
    prev, n = None, 0
    for j, (rname, text) in enumerate(turns):
        rname = (rname or "").lower()
        if rname in _ME:
            role, speaker, kind = "me", ctx.identity.display, "text"
        elif rname in _AI:
            role, speaker, kind = "ai", "assistant", "text"
        elif rname == "system":
            role, speaker, kind = "system", "system", "system"
        elif rname in _TOOL:
            role, speaker, kind = "ai", rname, "tool"
        else:
            raise BadRecord(where, f"turn {j}: unknown role {rname!r} (expected user/assistant/system/tool)")
        if not text.strip():
            continue
        if kind == "tool" and not ctx.tools:
            ctx.drop("tool")
            continue
        rec = message(source, cid, None, text, speaker, role, parent_id=prev, kind=kind, index=n)
        prev, n = rec["message_id"], n + 1
        yield rec


def _turn_list(o: dict, where: str, key: str, who: str, what: str, fmt: str) -> list[tuple]:
    """(speaker, text) of each turn in the list `o[key]`, whose items name the speaker under `who` and
    hold the text under `what`; BadRecord when the list or a speaker is missing."""
    items = o.get(key)
    if not isinstance(items, list):
        raise BadRecord(where, f"no '{key}' list ({fmt} format)")
    turns = []
    for j, t in enumerate(items):
        if not isinstance(t, dict) or who not in t:
            raise BadRecord(where, f"{key}[{j}] has no '{who}'")
        turns.append((t[who], _content(t.get(what))))
    return turns


def _openai_line(o, where, cid, ctx):
    turns = _turn_list(o, where, "messages", "role", "content", "OpenAI chat")
    yield from _turns("openai_jsonl", cid, turns, ctx, where)


def _conversation_lines(src, ctx, source: str, read) -> Iterator[dict]:
    """The records of a file of one conversation a line: `read(o, where, cid, ctx)` turns a line's object
    into records; the conversation id is the line's 'id', else one derived from file name and line."""
    base = PurePath(src.name).name
    for lineno, o in json_lines(src, ctx):
        cid = str(o.get("id") or stable_id(source, base, lineno))
        yield from _each(read(o, f"{src.name}:{lineno}", cid, ctx), ctx)


def parse_openai(src, ctx):
    yield from _conversation_lines(src, ctx, "openai_jsonl", _openai_line)


def _sharegpt_conv(o, where, cid, ctx):
    if not isinstance(o, dict):
        raise BadRecord(where, f"expected an object, got {type(o).__name__}")
    turns = _turn_list(o, where, "conversations", "from", "value", "ShareGPT")
    yield from _turns("sharegpt", cid, turns, ctx, where)


def _is_sharegpt(o) -> bool:
    return isinstance(o, dict) and "conversations" in o


def parse_sharegpt(src, ctx):
    base = PurePath(src.name).name
    if src.head().lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"["):
        with src.open() as f:
            for i, o in iter_json_array(f, src.name, on_bytes=ctx.advance, skip=ctx.skip, accept=_is_sharegpt):
                cid = str(isinstance(o, dict) and o.get("id") or stable_id("sharegpt", base, i))
                yield from _each(_sharegpt_conv(o, f"{src.name}: record {i}", cid, ctx), ctx)
        return
    yield from _conversation_lines(src, ctx, "sharegpt", _sharegpt_conv)


def _mlx_line(o, where, cid, ctx):
    if "prompt" in o and "completion" in o:
        turns = [("user", _content(o["prompt"])), ("assistant", _content(o["completion"]))]
    elif "text" in o:
        turns = [("user", _content(o["text"]))]
    elif "messages" in o and isinstance(o["messages"], list):
        turns = [(m.get("role"), _content(m.get("content"))) for m in o["messages"] if isinstance(m, dict)]
    else:
        raise BadRecord(where, "expected 'prompt'+'completion', 'text' or 'messages' (mlx-lm formats)")
    yield from _turns("mlx_jsonl", cid, turns, ctx, where)


def parse_mlx(src, ctx):
    yield from _conversation_lines(src, ctx, "mlx_jsonl", _mlx_line)


def parse_notme(src, ctx):
    base = PurePath(src.name).name
    counters: dict[str, tuple[int, str | None]] = {}
    for lineno, o in json_lines(src, ctx):
        try:
            rec = _notme_record(o, f"{src.name}:{lineno}", base, counters, ctx)
        except BadRecord as e:
            ctx.skip(e)
            continue
        yield rec


def _notme_record(o, where, base, counters, ctx):
    unknown = sorted(set(o) - set(FIELDS))
    if unknown:
        raise BadRecord(where, f"unknown field(s) {unknown}; allowed: {', '.join(FIELDS)}")
    if not isinstance(o.get("text"), str):
        raise BadRecord(where, "'text' must be a string")
    role = o.get("role")
    speaker = o.get("speaker")
    if role is None and speaker is None:
        raise BadRecord(where, "needs 'role' (me|other|ai|system) or 'speaker'")
    if speaker is not None and not isinstance(speaker, str):
        raise BadRecord(where, "'speaker' must be a string")
    if role is not None and role not in ROLES:
        raise BadRecord(where, f"role {role!r} is not one of {', '.join(ROLES)}")
    kind = o.get("kind") or "text"
    if kind not in KINDS:
        raise BadRecord(where, f"kind {kind!r} is not one of {', '.join(KINDS)}")
    if role is None:
        role = "me" if ctx.identity.is_me(speaker) else UNRESOLVED
    if speaker is None:
        speaker = {"me": ctx.identity.display, "ai": "assistant", "system": "system"}.get(role, "other")
    ts = o.get("timestamp")
    if ts:
        try:
            ts = iso_utc(parse_iso(ts))
        except (ValueError, TypeError, AttributeError):
            raise BadRecord(where, f"bad timestamp {ts!r} (expected ISO-8601)") from None
    cid = str(o.get("conversation_id") or stable_id("notme_jsonl", base))
    n, prev = counters.get(cid, (0, None))
    rec = message(o.get("source") or "notme_jsonl", cid, o.get("message_id"), o["text"], speaker, role,
                  timestamp=ts, parent_id=o["parent_id"] if "parent_id" in o else prev, kind=kind, index=n)
    counters[cid] = (n + 1, rec["message_id"])
    return rec
