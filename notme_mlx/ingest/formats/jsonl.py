"""Training-data JSON(L) formats: OpenAI chat fine-tuning, ShareGPT, mlx-lm, notme JSONL.

- openai_jsonl: one `{"messages": [{"role", "content"}]}` per line (also mlx-lm's
  "chat" format, which is the same shape). user -> me, assistant -> ai,
  system -> system, tool -> tool (dropped unless ctx.tools).
- sharegpt: JSON array or JSONL of `{"conversations": [{"from", "value"}]}`;
  human/user -> me, gpt/assistant/model -> ai, system -> system.
- mlx_jsonl: mlx-lm "completions" `{"prompt", "completion"}` (me, ai) and "text"
  `{"text"}` (one message by me: plain writing for continued pretraining).
- notme_jsonl: Message records (DESIGN §3) as written by `notme ingest`, or
  hand-written partial ones: `text` plus `role` (me|other|ai|system) or `speaker`;
  missing ids/conversation are filled in deterministically.

Each line (or array element) is one conversation; its id is the record's own
`id` when present, else a hash of file name and line number.
"""

from __future__ import annotations

import json
from pathlib import PurePath

from ...errors import InputError
from ..jsonstream import iter_json_array
from ..record import FIELDS, KINDS, ROLES, UNRESOLVED, message, parse_iso, iso_utc, stable_id

_ME = {"user", "human"}
_AI = {"assistant", "gpt", "model", "bot", "chatgpt", "ai"}


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


def _lines(src, ctx):
    """(lineno, obj) of a JSONL source; errors name file:line."""
    with src.open() as f:
        for lineno, raw in enumerate(f, 1):
            ctx.advance(len(raw))
            if not raw.strip():
                continue
            try:
                o = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                msg = e.msg if isinstance(e, json.JSONDecodeError) else "not UTF-8"
                raise InputError(f"{src.name}:{lineno}: invalid JSON ({msg})") from None
            if not isinstance(o, dict):
                raise InputError(f"{src.name}:{lineno}: expected a JSON object, got {type(o).__name__}")
            yield lineno, o


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
        elif rname in ("tool", "function", "observation", "function_response", "ipython"):
            if not ctx.tools:
                continue
            role, speaker, kind = "ai", rname, "tool"
        else:
            raise InputError(f"{where}: turn {j}: unknown role {rname!r} (expected user/assistant/system/tool)")
        if not text.strip():
            continue
        rec = message(source, cid, None, text, speaker, role, parent_id=prev, kind=kind, index=n)
        prev, n = rec["message_id"], n + 1
        yield rec


def parse_openai(src, ctx):
    base = PurePath(src.name).name
    for lineno, o in _lines(src, ctx):
        msgs = o.get("messages")
        if not isinstance(msgs, list):
            raise InputError(f"{src.name}:{lineno}: no 'messages' list (OpenAI chat format)")
        turns = []
        for j, m in enumerate(msgs):
            if not isinstance(m, dict) or "role" not in m:
                raise InputError(f"{src.name}:{lineno}: messages[{j}] has no 'role'")
            turns.append((m["role"], _content(m.get("content"))))
        cid = str(o.get("id") or stable_id("openai_jsonl", base, lineno))
        yield from _turns("openai_jsonl", cid, turns, ctx, f"{src.name}:{lineno}")


def _sharegpt_conv(o, where, cid, ctx):
    conv = o.get("conversations")
    if not isinstance(conv, list):
        raise InputError(f"{where}: no 'conversations' list (ShareGPT format)")
    turns = []
    for j, t in enumerate(conv):
        if not isinstance(t, dict) or "from" not in t:
            raise InputError(f"{where}: conversations[{j}] has no 'from'")
        turns.append((t["from"], _content(t.get("value"))))
    yield from _turns("sharegpt", cid, turns, ctx, where)


def parse_sharegpt(src, ctx):
    base = PurePath(src.name).name
    if src.head().lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"["):
        with src.open() as f:
            for i, o in iter_json_array(f, src.name, on_bytes=ctx.advance):
                if not isinstance(o, dict):
                    raise InputError(f"{src.name}: record {i}: expected an object")
                cid = str(o.get("id") or stable_id("sharegpt", base, i))
                yield from _sharegpt_conv(o, f"{src.name}: record {i}", cid, ctx)
        return
    for lineno, o in _lines(src, ctx):
        cid = str(o.get("id") or stable_id("sharegpt", base, lineno))
        yield from _sharegpt_conv(o, f"{src.name}:{lineno}", cid, ctx)


def parse_mlx(src, ctx):
    base = PurePath(src.name).name
    for lineno, o in _lines(src, ctx):
        cid = str(o.get("id") or stable_id("mlx_jsonl", base, lineno))
        if "prompt" in o and "completion" in o:
            turns = [("user", _content(o["prompt"])), ("assistant", _content(o["completion"]))]
        elif "text" in o:
            turns = [("user", _content(o["text"]))]
        elif "messages" in o:
            turns = [(m.get("role"), _content(m.get("content"))) for m in o["messages"] if isinstance(m, dict)]
        else:
            raise InputError(f"{src.name}:{lineno}: expected 'prompt'+'completion', 'text' or 'messages' (mlx-lm formats)")
        yield from _turns("mlx_jsonl", cid, turns, ctx, f"{src.name}:{lineno}")


def parse_notme(src, ctx):
    base = PurePath(src.name).name
    counters: dict[str, tuple[int, str | None]] = {}
    for lineno, o in _lines(src, ctx):
        where = f"{src.name}:{lineno}"
        unknown = sorted(set(o) - set(FIELDS))
        if unknown:
            raise InputError(f"{where}: unknown field(s) {unknown}; allowed: {', '.join(FIELDS)}")
        if not isinstance(o.get("text"), str):
            raise InputError(f"{where}: 'text' must be a string")
        role = o.get("role")
        speaker = o.get("speaker")
        if role is None and speaker is None:
            raise InputError(f"{where}: needs 'role' (me|other|ai|system) or 'speaker'")
        if role is not None and role not in ROLES:
            raise InputError(f"{where}: role {role!r} is not one of {', '.join(ROLES)}")
        kind = o.get("kind") or "text"
        if kind not in KINDS:
            raise InputError(f"{where}: kind {kind!r} is not one of {', '.join(KINDS)}")
        if role is None:
            role = "me" if ctx.identity.is_me(speaker) else UNRESOLVED
        if speaker is None:
            speaker = {"me": ctx.identity.display, "ai": "assistant", "system": "system"}.get(role, "other")
        ts = o.get("timestamp")
        if ts:
            try:
                ts = iso_utc(parse_iso(ts))
            except (ValueError, TypeError, AttributeError):
                raise InputError(f"{where}: bad timestamp {ts!r} (expected ISO-8601)") from None
        cid = str(o.get("conversation_id") or stable_id("notme_jsonl", base))
        n, prev = counters.get(cid, (0, None))
        rec = message(o.get("source") or "notme_jsonl", cid, o.get("message_id"), o["text"], speaker, role,
                      timestamp=ts, parent_id=o["parent_id"] if "parent_id" in o else prev, kind=kind, index=n)
        counters[cid] = (n + 1, rec["message_id"])
        yield rec
