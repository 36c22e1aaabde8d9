"""iMessage `chat.db` (macOS ~/Library/Messages/chat.db), SQLite, opened read-only.

Tables used: message (text, attributedBody, handle_id, date, is_from_me,
associated_message_type, cache_has_attachments, item_type), handle (id =
phone/email), chat (guid, chat_identifier, display_name), chat_message_join.
`date` counts from 2001-01-01 UTC, in nanoseconds on modern macOS (seconds in
old databases). Tapbacks/reactions (associated_message_type 2000-3006) are
dropped; attachments become `<media:attachment>`; item_type != 0 rows (renames,
member changes) become kind="system".
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from ...errors import InputError
from ..context import BadRecord
from ..record import iso_utc, message
from .typedstream import decode_attributed_body

SOURCE = "imessage"
APPLE_EPOCH = 978307200  # 2001-01-01T00:00:00Z in Unix seconds
SQLITE_MAGIC = b"SQLite format 3\x00"
_OBJ = "\ufffc"  # object replacement char marks an inline attachment


def sniff(head: bytes, name: str) -> bool:
    return head.startswith(SQLITE_MAGIC)


def apple_time(value) -> str | None:
    """chat.db `date` -> ISO UTC. Values above 1e11 are nanoseconds, else seconds."""
    if not value:
        return None
    v = float(value)
    secs = v / 1e9 if abs(v) > 1e11 else v
    return iso_utc(APPLE_EPOCH + secs)


def _connect(src) -> sqlite3.Connection:
    try:
        if src.path is not None:
            uri = Path(src.path).resolve().as_uri() + "?mode=ro"
            try:
                con = sqlite3.connect(uri, uri=True)
                con.execute("SELECT 1 FROM sqlite_master LIMIT 1")
            except sqlite3.OperationalError:
                # WAL database in a read-only folder: open as immutable (skips the -wal file).
                con = sqlite3.connect(uri + "&immutable=1", uri=True)
        else:  # a zip member: load the bytes into an in-memory database, never to disk
            con = sqlite3.connect(":memory:")
            if not hasattr(con, "deserialize"):
                raise InputError(f"{src.name}: reading a chat.db inside a zip needs Python 3.11+; unzip it first")
            con.deserialize(src.read_bytes())
        con.execute("SELECT 1 FROM message LIMIT 1")
        return con
    except sqlite3.DatabaseError as e:
        raise InputError(f"{src.name}: cannot read as an iMessage chat.db ({e}); "
                         f"copy ~/Library/Messages/chat.db after granting Full Disk Access") from None


def _row(row, me: str, prev: str | None, n: int) -> dict | None:
    """One message row -> record (None for tapbacks and empty rows)."""
    (chat_id, chat_guid, chat_ident, _name, rowid, guid, text, body, from_me, date,
     assoc, has_att, item_type, handle) = row
    if assoc and 2000 <= int(assoc) <= 3006:
        return None  # tapback / reaction
    if text is None:
        text = decode_attributed_body(body)
    text = (text or "").replace(_OBJ, "<media:attachment>")
    if not text.strip():
        text = ""
    kind = "text"
    if item_type:
        kind = "system"
        if not text:
            return None
    elif not text:
        if not has_att:
            return None
        text = "<media:attachment>"
    if kind == "text" and not text.replace("<media:attachment>", "").strip():
        kind = "media"
    if from_me:
        role, speaker = "me", me
    else:
        role, speaker = ("system" if kind == "system" else "other"), handle or chat_ident or "unknown"
    return message(SOURCE, chat_guid or chat_ident or str(chat_id), guid or f"rowid:{rowid}", text,
                   speaker, role, timestamp=apple_time(date), parent_id=prev, kind=kind, index=n)


def _columns(con, table) -> set[str]:
    return {r[1] for r in con.execute(f"PRAGMA table_info({table})")}


def parse(src, ctx):
    con = _connect(src)
    try:
        cols = _columns(con, "message")
        opt = lambda c, default="NULL": f"m.{c}" if c in cols else default  # noqa: E731
        sql = f"""
            SELECT c.ROWID, c.guid, c.chat_identifier, c.display_name,
                   m.ROWID, m.guid, m.text, {opt('attributedBody')}, m.is_from_me, m.date,
                   {opt('associated_message_type', '0')}, {opt('cache_has_attachments', '0')},
                   {opt('item_type', '0')}, h.id
            FROM chat_message_join j
            JOIN chat c ON c.ROWID = j.chat_id
            JOIN message m ON m.ROWID = j.message_id
            LEFT JOIN handle h ON h.ROWID = m.handle_id
            ORDER BY c.ROWID, m.date, m.ROWID"""
        try:
            rows = con.execute(sql)
        except sqlite3.DatabaseError as e:
            raise InputError(f"{src.name}: unexpected chat.db schema ({e})") from None
        me = ctx.identity.display
        prev_chat, prev, n = None, None, 0
        for row in rows:
            chat_id, rowid = row[0], row[4]
            if chat_id != prev_chat:
                prev_chat, prev, n = chat_id, None, 0
            try:
                rec = _row(row, me, prev, n)
            except (ValueError, TypeError, OverflowError) as e:  # a row with values of the wrong type
                ctx.skip(BadRecord(f"{src.name}: message ROWID {rowid}", f"unreadable row ({type(e).__name__}: {e})"))
                continue
            if rec is not None:
                prev, n = rec["message_id"], n + 1
                yield rec
    finally:
        con.close()
        ctx.advance(src.size)
