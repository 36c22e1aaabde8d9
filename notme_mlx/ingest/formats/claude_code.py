"""Claude Code session logs: `~/.claude/projects/<dir>/<session>.jsonl`.

One JSON object per line: `type` user/assistant (plus summary, system,
attachment, file-history-snapshot, progress, ... which we skip), `uuid`,
`parentUuid`, `sessionId`, `timestamp`, `isSidechain`, `isMeta`,
`isCompactSummary`, `origin`, and `message` with string or block content.
Streamed assistant replies are written as several lines sharing one `message.id`
(one content block each, sometimes repeated); we merge them into one record and
dedupe lines by `uuid`. tool_use / tool_result blocks become kind="tool"
(dropped unless ctx.tools); meta lines, compact summaries, command-wrapper lines,
interrupt notices and user-role lines the harness injected (`origin.kind` other
than "human", e.g. "task-notification") are dropped; sidechain (sub-agent) lines
only with ctx.sidechains (a subagent transcript is all sidechain lines). A
malformed line is one bad record (`file:line`); the rest of the session is kept.
"""

from __future__ import annotations

import json
import re

from ..context import BadRecord
from ..record import iso_utc, message, parse_iso, stable_id
from .jsonl import json_lines

SOURCE = "claude_code"
_WRAPPER = re.compile(
    r"^\s*<(command-name|command-message|command-args|local-command-stdout|local-command-stderr|"
    r"local-command-caveat|bash-input|bash-stdout|bash-stderr|user-memory-input)>"
)
_REMINDER = re.compile(r"<system-reminder>.*?</system-reminder>\s*", re.S)
_INTERRUPT = re.compile(r"^\[Request interrupted by user")


def sniff(head: bytes, name: str) -> bool:
    first = head.lstrip(b"\xef\xbb\xbf \t\r\n").split(b"\n", 1)[0]
    if not first.startswith(b"{"):
        return False
    return (b'"sessionId"' in head and b'"uuid"' in head) or (
        b'"type":"summary"' in first.replace(b" ", b"") and b'"leafUuid"' in first
    )


def _blocks(content, role: str) -> tuple[list[str], list[str]]:
    """(text parts, tool parts) of string or block content."""
    if isinstance(content, str):
        return [content], []
    if content is not None and not isinstance(content, list):
        raise ValueError(f"'message.content' is a {type(content).__name__}, not text or a list of blocks")
    texts, tools = [], []
    for b in content or []:
        if isinstance(b, str):
            texts.append(b)
            continue
        if not isinstance(b, dict):
            continue
        t = b.get("type")
        if t == "text" and isinstance(b.get("text"), str):
            texts.append(b["text"])
        elif t == "image":
            texts.append("<media:image>")
        elif t == "tool_use":
            tools.append(f"tool_use {b.get('name', '')}: {json.dumps(b.get('input', {}), ensure_ascii=False)[:2000]}")
        elif t == "tool_result":
            c = b.get("content")
            if isinstance(c, list):
                c = "\n".join(x.get("text", "") for x in c if isinstance(x, dict))
            tools.append(f"tool_result: {str(c or '')[:2000]}")
    return texts, tools


def _clean_user(text: str) -> str:
    if _WRAPPER.match(text) or _INTERRUPT.match(text.strip()):
        return ""
    return _REMINDER.sub("", text).strip("\n")


class _Pending:
    def __init__(self, key, obj, lineno, ts):
        self.key, self.obj, self.lineno, self.ts = key, obj, lineno, ts
        self.texts: list[str] = []
        self.tools: list[str] = []


def parse(src, ctx):
    seen: set[str] = set()
    state = {"prev": None, "n": 0}
    cid_default = stable_id(src.name)
    pending: _Pending | None = None

    def emit(p: _Pending):
        o = p.obj
        role = "me" if o["type"] == "user" else "ai"
        speaker = ctx.identity.display if role == "me" else "Claude Code"
        cid = o.get("sessionId") or cid_default
        ts = p.ts
        mid = p.key if role == "ai" else o.get("uuid")
        text = "\n\n".join(t for t in p.texts if t.strip())
        out = []
        if text.strip():
            out.append((text, "text" if text.replace("<media:image>", "").strip() else "media", mid))
        if ctx.tools and p.tools:
            out.append(("\n".join(p.tools), "tool", f"{mid}:tool" if mid else None))
        elif p.tools:
            ctx.drop("tool", len(p.tools))
        for t, kind, m in out:
            rec = message(SOURCE, cid, m, t, speaker, role, timestamp=ts, parent_id=state["prev"],
                          kind=kind, index=state["n"])
            state["prev"], state["n"] = rec["message_id"], state["n"] + 1
            yield rec

    for lineno, o in json_lines(src, ctx):
        if o.get("type") not in ("user", "assistant"):
            ctx.drop("not a message line")
            continue
        uid = o.get("uuid")
        if uid is not None:
            if uid in seen:
                continue
            seen.add(uid)
        if o.get("isSidechain") and not ctx.sidechains:
            ctx.drop("sidechain")
            continue
        if o.get("isMeta") or o.get("isCompactSummary") or o.get("isVisibleInTranscriptOnly"):
            ctx.drop("meta")
            continue
        origin = o.get("origin")
        if o["type"] == "user" and isinstance(origin, dict) and origin.get("kind") not in (None, "human"):
            ctx.drop(f"injected ({origin.get('kind')})")  # harness notifications, not the person's words
            continue
        msg = o.get("message") or {}
        try:
            if not isinstance(msg, dict):
                raise ValueError(f"'message' is not an object (got {json.dumps(msg)[:40]})")
            texts, tools = _blocks(msg.get("content"), o["type"])
            ts = o.get("timestamp")
            try:
                ts = iso_utc(parse_iso(ts)) if ts else None
            except (ValueError, TypeError, AttributeError):
                raise ValueError(f"bad timestamp {ts!r} (expected ISO-8601)") from None
        except ValueError as e:
            ctx.skip(BadRecord(f"{src.name}:{lineno}", str(e)))
            continue
        if o["type"] == "user":
            texts = [t for t in (_clean_user(t) for t in texts) if t]
            key = uid
        else:
            key = msg.get("id") or uid
        if pending is not None and (o["type"] == "user" or pending.key != key):
            yield from emit(pending)
            pending = None
        if pending is None:
            pending = _Pending(key, o, lineno, ts)
        for t in texts:
            if t not in pending.texts:
                pending.texts.append(t)
        pending.tools.extend(tools)
    if pending is not None:
        yield from emit(pending)
