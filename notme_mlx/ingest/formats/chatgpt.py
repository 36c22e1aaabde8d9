"""ChatGPT data export: `conversations.json` (a top-level array of conversations), or one
conversation object saved on its own (browser exporters, the conversation API).

Each conversation has a `mapping` tree {node_id: {message, parent, children}}
and a `current_node` (the leaf of the branch the user last saw). We walk from
`current_node` to the root, so regenerated/edited branches are dropped, and skip
system, hidden and `user_editable_context` nodes, and the model's reasoning
(`thoughts`, `reasoning_recap`). Tool traffic (role `tool` such as `internal_tool`
or `web.run`, `execution_output`, assistant `code` addressed to a tool) becomes
kind="tool" and is dropped unless `ctx.tools`. Image parts (`image_asset_pointer`,
`sediment://` or `file-service://` pointers) become `<media:image>`. Timestamps
are epoch floats. A malformed conversation is one bad record; the others are kept.
"""

from __future__ import annotations

import json
import re
from pathlib import PurePath

from ..context import BadRecord
from ..jsonstream import iter_json_array
from ..record import iso_utc, message, stable_id

SOURCE = "chatgpt"
_ME = {"user", "human"}
_AI = {"assistant", "ai", "model"}
_REASONING = {"thoughts", "reasoning_recap"}
_SKIP_CONTENT = {"user_editable_context", "model_editable_context"}
_MEDIA_TAG = re.compile(r"<media:\w+>")


def sniff(head: bytes, name: str) -> bool:
    h = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    if h[:1] == b"{" and b'"sessionId"' in head:  # a Claude Code line whose tool input has these keys
        return False
    return h[:1] in (b"[", b"{") and b'"mapping"' in head and (b'"children"' in head or b'"current_node"' in head)


def _is_conversation(obj) -> bool:
    return isinstance(obj, dict) and "mapping" in obj


def parse(src, ctx):
    if src.head().lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"{"):  # one conversation on its own
        try:
            conv = src.read_json(ctx.advance)
        except json.JSONDecodeError as e:
            ctx.skip(BadRecord(f"{src.name}:{e.lineno}: record 0", f"invalid JSON ({e.msg})"))
            return
        yield from _kept(conv, src.name, 0, ctx)
        return
    with src.open() as f:
        for i, conv in iter_json_array(f, src.name, on_bytes=ctx.advance, skip=ctx.skip, accept=_is_conversation):
            yield from _kept(conv, src.name, i, ctx)


def _kept(conv, name: str, index: int, ctx):
    """One conversation's records, or none and a bad record when it is malformed."""
    try:
        recs = list(conversation(conv, name, index, ctx))
    except BadRecord as e:
        ctx.skip(e)
        return
    yield from recs


def _part_text(part) -> str:
    if isinstance(part, str):
        return part
    if isinstance(part, dict):
        ct = part.get("content_type", "")
        if ct == "audio_transcription" and isinstance(part.get("text"), str):
            return part["text"]
        if "image" in ct:
            return "<media:image>"
        if "audio" in ct:
            return "<media:audio>"
        if "video" in ct:
            return "<media:video>"
        if isinstance(part.get("text"), str):
            return part["text"]
        return "<media:file>"
    return ""


def _content_text(content: dict) -> tuple[str, bool]:
    """(text, has_media) of a message content object."""
    ct = content.get("content_type", "text")
    if ct in ("code", "execution_output", "tether_quote", "tether_browsing_display"):
        return str(content.get("text") or content.get("result") or ""), False
    parts = content.get("parts") or []
    texts = [_part_text(p) for p in parts]
    media = any(t.startswith("<media:") for t in texts)
    text = "\n".join(t for t in texts if t)
    if not text and isinstance(content.get("text"), str):
        text = content["text"]
    return text, media


def _branch(mapping: dict, current: str | None, where: str) -> list[dict]:
    if not all(isinstance(n, dict) for n in mapping.values()):
        raise BadRecord(where, "a 'mapping' node is not an object")
    if current is None or current not in mapping:
        # No current_node: take the newest leaf (no children), ties by order.
        leaves = [k for k, n in mapping.items() if not (n or {}).get("children")]
        if not leaves:
            return []
        def t(k):
            m = (mapping[k] or {}).get("message") or {}
            return m.get("create_time") or 0
        current = max(leaves, key=t)
    path, seen, node_id = [], set(), current
    while node_id is not None:
        if node_id in seen:
            raise BadRecord(where, f"mapping has a parent cycle at node {node_id!r}")
        seen.add(node_id)
        node = mapping.get(node_id)
        if node is None:
            break
        path.append(node)
        node_id = node.get("parent")
    path.reverse()
    return path


def conversation(conv, name: str, index: int, ctx):
    """Message records of one conversation object (active branch only)."""
    cid = conv.get("conversation_id") or conv.get("id") if isinstance(conv, dict) else None
    where = f"{name}: record {index}" + (f" (conversation {cid})" if cid else "")
    if isinstance(conv, dict) and "mapping" in conv and conv["mapping"] is None:
        return  # placeholder entries (e.g. unfinished async chats) carry no messages
    if not isinstance(conv, dict) or not isinstance(conv.get("mapping"), dict):
        raise BadRecord(where, "not a ChatGPT conversation (no 'mapping' object)")
    cid = cid or stable_id(PurePath(name).name, index, conv.get("title"), conv.get("create_time"))
    prev, n = None, 0
    for node in _branch(conv["mapping"], conv.get("current_node"), where):
        m = node.get("message")
        if not m:
            continue
        if not isinstance(m, dict):
            raise BadRecord(where, f"node {node.get('id')!r}: 'message' is not an object")
        author = m.get("author") or {}
        role = (author.get("role") or "").lower()
        meta = m.get("metadata") or {}
        content = m.get("content") or {}
        if not isinstance(content, dict):
            raise BadRecord(where, f"message {m.get('id')!r}: 'content' is not an object")
        if role == "system" or meta.get("is_visually_hidden_from_conversation") or meta.get("is_user_system_message"):
            continue
        ctype = content.get("content_type")
        if ctype in _REASONING:
            ctx.drop("reasoning")
            continue
        if ctype in _SKIP_CONTENT:
            continue
        text, media = _content_text(content)
        if not text.strip():
            continue
        recipient = m.get("recipient") or "all"
        if role == "tool" or (role in _AI and recipient != "all"):
            if not ctx.tools:
                ctx.drop("tool")
                continue
            r, kind, speaker = "ai", "tool", author.get("name") or recipient or "tool"
        elif role in _ME:
            r, kind, speaker = "me", "media" if media and not _MEDIA_TAG.sub("", text).strip() else "text", ctx.identity.display
        elif role in _AI:
            r, kind, speaker = "ai", "text", author.get("name") or "ChatGPT"
        else:
            ctx.drop(f"author {role or '?'}")
            continue
        mid = m.get("id") or node.get("id")
        rec = message(SOURCE, cid, mid, text, speaker, r, timestamp=iso_utc(m.get("create_time")),
                      parent_id=prev, kind=kind, index=n)
        prev, n = rec["message_id"], n + 1
        yield rec
