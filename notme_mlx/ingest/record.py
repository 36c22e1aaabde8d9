"""Message records: construction, stable ids, timestamps.

Every format module builds its output through `message()` so the field set,
types and allowed values are identical for all sources.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timezone

FIELDS = (
    "source", "conversation_id", "message_id", "parent_id", "timestamp",
    "speaker", "role", "text", "kind",
)
ROLES = ("me", "other", "ai", "system")
KINDS = ("text", "media", "system", "tool")
# Placeholder role for person-to-person chats until identity resolves it to me/other.
UNRESOLVED = "?"


def stable_id(*parts: object, n: int = 16) -> str:
    """Deterministic short id: sha256 of the parts joined by NUL, hex, first `n` chars."""
    h = hashlib.sha256()
    for p in parts:
        h.update(str(p).encode("utf-8", "surrogatepass"))
        h.update(b"\0")
    return h.hexdigest()[:n]


def iso_utc(value: float | int | datetime | None) -> str | None:
    """Epoch seconds or a datetime -> 'YYYY-MM-DDTHH:MM:SS[.mmm]Z' (UTC), None stays None.

    Naive datetimes are taken as UTC (callers localize first when they know the zone).
    """
    if value is None:
        return None
    if isinstance(value, datetime):
        dt = value if value.tzinfo else value.replace(tzinfo=timezone.utc)
        dt = dt.astimezone(timezone.utc)
    else:
        dt = datetime.fromtimestamp(float(value), tz=timezone.utc)
    ms = dt.microsecond // 1000
    base = dt.strftime("%Y-%m-%dT%H:%M:%S")
    return f"{base}.{ms:03d}Z" if ms else f"{base}Z"


def parse_iso(text: str) -> datetime:
    """ISO-8601 ('Z' allowed) -> aware UTC datetime (naive input taken as UTC)."""
    dt = datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    return dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)


def message(
    source: str,
    conversation_id: str,
    message_id: str | None,
    text: str,
    speaker: str,
    role: str,
    *,
    timestamp: str | None = None,
    parent_id: str | None = None,
    kind: str = "text",
    index: int = 0,
) -> dict:
    """Build one Message record with exactly the FIELDS.

    `message_id` None -> synthesized from (conversation_id, index, text), so re-ingesting the
    same export gives the same ids.
    """
    assert role in ROLES or role == UNRESOLVED, role
    assert kind in KINDS, kind
    if message_id is None or message_id == "":
        message_id = stable_id(conversation_id, index, text)
    return {
        "source": source,
        "conversation_id": str(conversation_id),
        "message_id": str(message_id),
        "parent_id": None if parent_id is None else str(parent_id),
        "timestamp": timestamp,
        "speaker": speaker,
        "role": role,
        "text": text,
        "kind": kind,
    }

