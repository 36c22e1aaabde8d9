"""Claude.ai data export: `conversations.json` (array of {uuid, name, chat_messages}).

Messages have `sender` human/assistant, `text` and/or `content` blocks
(text, tool_use, tool_result, thinking), optional attachments/files and, in
newer exports, `parent_message_uuid`. When parents are present we keep the
branch ending at the newest message (edits create sibling branches). A malformed
conversation is one bad record; the others are kept.
"""

from __future__ import annotations

from pathlib import PurePath

from ..context import BadRecord
from ..jsonstream import iter_json_array
from ..record import message, parse_iso, iso_utc, stable_id

SOURCE = "claude"
_ROOT = "00000000-0000-4000-8000-000000000000"


def sniff(head: bytes, name: str) -> bool:
    h = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    return h.startswith(b"[") and b'"chat_messages"' in head


def _is_conversation(obj) -> bool:
    return isinstance(obj, dict) and "chat_messages" in obj


def parse(src, ctx):
    with src.open() as f:
        for i, conv in iter_json_array(f, src.name, on_bytes=ctx.advance, skip=ctx.skip, accept=_is_conversation):
            try:
                recs = list(conversation(conv, src.name, i, ctx))
            except BadRecord as e:
                ctx.skip(e)
                continue
            yield from recs


def _ts(value, where):
    if not value:
        return None
    try:
        return iso_utc(parse_iso(value))
    except (ValueError, TypeError):
        raise BadRecord(where, f"bad timestamp {value!r} (expected ISO-8601)") from None


def _text(m: dict) -> tuple[str, str]:
    """(text, kind) of one chat message; blocks win over the flat `text` when present."""
    blocks = m.get("content")
    parts, tool_parts = [], []
    if isinstance(blocks, list) and blocks:
        for b in blocks:
            if not isinstance(b, dict):
                continue
            t = b.get("type")
            if t == "text" and b.get("text"):
                parts.append(b["text"])
            elif t in ("tool_use", "tool_result"):
                tool_parts.append(str(b.get("name") or t))
    elif m.get("text"):
        parts.append(m["text"])
    for a in (m.get("attachments") or []) + (m.get("files") or []):
        if isinstance(a, dict):
            parts.append("<media:file>")
    text = "\n\n".join(p for p in parts if p)
    if text.strip():
        media_only = all(p.startswith("<media:") for p in parts)
        return text, "media" if media_only else "text"
    if tool_parts:
        return "\n".join(tool_parts), "tool"
    return "", "text"


def _active(msgs: list[dict]) -> list[dict]:
    if not msgs or not all(m.get("parent_message_uuid") for m in msgs):
        return msgs
    by_id = {m.get("uuid"): m for m in msgs}
    leaf = max(msgs, key=lambda m: (m.get("created_at") or "", msgs.index(m)))
    path, seen = [], set()
    node = leaf
    while node is not None and node.get("uuid") not in seen:
        seen.add(node.get("uuid"))
        path.append(node)
        p = node.get("parent_message_uuid")
        node = by_id.get(p) if p and p != _ROOT else None
    path.reverse()
    return path


def conversation(conv, name: str, index: int, ctx):
    where = f"{name}: record {index}" + (f" (conversation {conv['uuid']})" if isinstance(conv, dict) and conv.get("uuid") else "")
    if not isinstance(conv, dict) or not isinstance(conv.get("chat_messages"), list):
        raise BadRecord(where, "not a Claude conversation (no 'chat_messages' list)")
    if not all(isinstance(m, dict) for m in conv["chat_messages"]):
        j = next(j for j, m in enumerate(conv["chat_messages"]) if not isinstance(m, dict))
        raise BadRecord(where, f"chat_messages[{j}] is not an object")
    cid = conv.get("uuid") or stable_id(PurePath(name).name, index, conv.get("name"))
    prev, n = None, 0
    for j, m in enumerate(_active(conv["chat_messages"])):
        sender = (m.get("sender") or "").lower()
        if sender == "human":
            role, speaker = "me", ctx.identity.display
        elif sender == "assistant":
            role, speaker = "ai", "Claude"
        else:
            continue
        text, kind = _text(m)
        if not text.strip():
            continue
        if kind == "tool" and not ctx.tools:
            ctx.drop("tool")
            continue
        rec = message(SOURCE, cid, m.get("uuid"), text, speaker, role,
                      timestamp=_ts(m.get("created_at"), f"{where} message {j}"),
                      parent_id=prev, kind=kind, index=n)
        prev, n = rec["message_id"], n + 1
        yield rec
