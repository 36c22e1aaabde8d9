"""Message records -> sessions of chat turns (role mapping, merging, time gaps) -> windows.

Role mapping (docs/data.md), decided per conversation:
  mirror     the person's own turns (role `me`) are `assistant` targets; everyone else
             (`other`, `ai`) is `user` context.
  assistant  the AI's turns (role `ai`) are `assistant` targets; the person's own turns and
             anyone else's are `user` context.
  auto       assistant when the conversation has an `ai` message, else mirror.
Consecutive messages mapping to the same role merge into one turn (joined by a newline; in
group chats user turns carry "Name: " prefixes). A gap longer than `session_gap` between two
timestamped messages starts a new session.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timezone

from ..errors import InputError

ROLES = ("me", "other", "ai", "system")
KINDS = ("text", "media", "system", "tool")
REQUIRED = ("source", "conversation_id", "speaker", "role", "text")


@dataclass
class Turn:
    role: str                 # system | user | assistant
    content: str
    target: bool              # an assistant turn of the trained voice
    speakers: list = field(default_factory=list)


def validate_message(m: dict, where: str) -> None:
    """Raise InputError naming `where` (file:line) when `m` is not a Message record (docs/ingest.md)."""
    for k in REQUIRED:
        if k not in m:
            raise InputError(f"{where}: missing field {k!r} (is this a notme messages.jsonl from `notme ingest`?)")
    if m["role"] not in ROLES:
        raise InputError(f"{where}: role {m['role']!r} is not one of {ROLES}")
    if m.get("kind", "text") not in KINDS:
        raise InputError(f"{where}: kind {m.get('kind')!r} is not one of {KINDS}")
    if not isinstance(m["text"], str):
        raise InputError(f"{where}: text must be a string, got {type(m['text']).__name__}")
    ts = m.get("timestamp")
    if ts is not None:
        if not isinstance(ts, str):
            raise InputError(f"{where}: timestamp must be an ISO-8601 string or null")
        try:
            _parse_ts(ts)
        except ValueError:
            raise InputError(f"{where}: bad timestamp {ts!r} (expected ISO-8601 like 2024-05-01T12:00:00Z)") from None


def _parse_ts(ts: str) -> float:
    dt = datetime.fromisoformat(ts.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.timestamp()


def conversation_mode(msgs: list[dict], mode: str, mode_by_source: dict) -> str:
    src = msgs[0]["source"] if msgs else ""
    if src in mode_by_source:
        return mode_by_source[src]
    if mode != "auto":
        return mode
    return "assistant" if any(m["role"] == "ai" for m in msgs) else "mirror"


def map_role(role: str, mode: str) -> tuple[str, bool]:
    """Message role -> (chat role, is_target) under `mode`."""
    if role == "system":
        return "system", False
    if mode == "mirror":
        return ("assistant", True) if role == "me" else ("user", False)
    return ("assistant", True) if role == "ai" else ("user", False)


def sessions(msgs: list[dict], mode: str, gap_s: float, group_names: bool = True) -> list[list[Turn]]:
    """Split one conversation's text messages into sessions of merged turns."""
    out: list[list[Turn]] = []
    cur: list[Turn] = []
    last_t = None
    others = {m["speaker"] for m in msgs if map_role(m["role"], mode) == ("user", False)}
    prefix = group_names and len(others) > 1
    for m in msgs:
        ts = m.get("timestamp")
        t = _parse_ts(ts) if ts else None
        if cur and t is not None and last_t is not None and t - last_t > gap_s:
            out.append(cur)
            cur = []
        if t is not None:
            last_t = t
        text = m["text"]
        if not text.strip():
            continue
        role, target = map_role(m["role"], mode)
        if role == "system" and cur:  # templates accept a system turn only first
            continue
        if prefix and role == "user":
            text = f"{m['speaker']}: {text}"
        if cur and cur[-1].role == role and cur[-1].target == target:
            cur[-1].content += "\n" + text
            if m["speaker"] not in cur[-1].speakers:
                cur[-1].speakers.append(m["speaker"])
        else:
            cur.append(Turn(role, text, target, [m["speaker"]]))
    if cur:
        out.append(cur)
    return out


def estimate_tokens(text: str) -> int:
    """Rough token count without a tokenizer: ceil(chars / 4) + 4 template tokens per turn."""
    return math.ceil(len(text) / 4) + 4


def windows(turns: list[Turn], max_len: int, length) -> list[list[Turn]]:
    """Cut a session into examples of at most ~`max_len` (by `length(text)` per turn), each
    ending with a target turn; turns carried over as context are never targets twice.

    A window closes when the next turn would not fit; the next one starts with as many of the
    preceding turns as fit in half the budget (and leave room for the next turn). A single
    turn longer than `max_len` forms its own window (tokenization trims it later).
    """
    lens = [length(t.content) for t in turns]
    out: list[list[Turn]] = []
    emitted: set[int] = set()
    start, i, total, n = 0, 0, 0, len(turns)
    while i < n:
        if i == start or total + lens[i] <= max_len:
            total += lens[i]
            i += 1
            continue
        _emit(out, turns, start, i, emitted)
        j, ctx = i, 0
        while j > start and ctx + lens[j - 1] <= max_len // 2 and ctx + lens[j - 1] + lens[i] <= max_len:
            j -= 1
            ctx += lens[j]
        start, total = j, ctx
    _emit(out, turns, start, n, emitted)
    return out


def _emit(out: list, turns: list[Turn], a: int, b: int, emitted: set) -> None:
    fresh = [k for k in range(a, b) if turns[k].target and k not in emitted]
    if not fresh:
        return
    last = fresh[-1]
    out.append([Turn(t.role, t.content, t.target and k not in emitted, t.speakers)
                for k, t in ((k, turns[k]) for k in range(a, last + 1))])
    emitted.update(fresh)
