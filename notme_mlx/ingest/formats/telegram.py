"""Telegram Desktop export: `result.json` (machine-readable JSON export).

Either one chat ({name, type, id, messages}) or a full export ({personal_information,
chats: {list: [...]}}). `text` is a string or a list mixing strings and entity
objects ({type: bold|link|mention|..., text}); we flatten it to plain text.
Time comes from `date_unixtime` (UTC seconds; `date` is local time without a
zone, used only as a fallback). The owner is `personal_information.user_id`
(from_id "user<id>"); single-chat exports have no owner, so --me decides.
"""

from __future__ import annotations

import json
from datetime import datetime

from ...errors import InputError
from ..context import BadRecord
from ..record import UNRESOLVED, iso_utc, message, stable_id

SOURCE = "telegram"
_MEDIA_FIELDS = (("photo", "photo"), ("sticker_emoji", "sticker"), ("file", "file"), ("location_information", "location"),
                 ("contact_information", "contact"), ("poll", "poll"))


def sniff(head: bytes, name: str) -> bool:
    h = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    return h.startswith(b"{") and (
        b'"personal_information"' in head or b'"date_unixtime"' in head
        or (b'"messages"' in head and b'"from_id"' in head)
    )


def flatten(text) -> str:
    """Telegram `text`: str, or a list of str and {type, text} entities -> plain str."""
    if isinstance(text, str):
        return text
    if isinstance(text, list):
        out = []
        for part in text:
            if isinstance(part, str):
                out.append(part)
            elif isinstance(part, dict):
                out.append(str(part.get("text", "")))
        return "".join(out)
    return ""


def _media(m: dict) -> str | None:
    mt = m.get("media_type")
    if mt:
        return {"voice_message": "audio", "audio_file": "audio", "video_file": "video", "video_message": "video",
                "animation": "gif", "sticker": "sticker"}.get(mt, mt)
    for field, what in _MEDIA_FIELDS:
        if m.get(field):
            return what
    return None


def _time(m: dict, where: str) -> str | None:
    if m.get("date_unixtime") not in (None, ""):
        try:
            return iso_utc(int(m["date_unixtime"]))
        except (TypeError, ValueError):
            raise BadRecord(where, f"bad date_unixtime {m['date_unixtime']!r}") from None
    if m.get("date"):
        try:
            return iso_utc(datetime.fromisoformat(m["date"]))
        except ValueError:
            raise BadRecord(where, f"bad date {m['date']!r}") from None
    return None


def parse(src, ctx):
    try:
        data = src.read_json(ctx.advance)
    except json.JSONDecodeError as e:
        raise InputError(f"{src.name}:{e.lineno}: invalid JSON ({e.msg})") from None
    if not isinstance(data, dict):
        raise InputError(f"{src.name}: expected a Telegram export object with 'messages' or 'chats'")
    owner = None
    pi = data.get("personal_information") or {}
    if pi.get("user_id") is not None:
        owner = f"user{pi['user_id']}"
    if isinstance(data.get("chats"), dict):
        chats = data["chats"].get("list") or []
    elif isinstance(data.get("messages"), list):
        chats = [data]
    else:
        raise InputError(f"{src.name}: no 'messages' list and no 'chats.list' (is this a Telegram result.json?)")
    for ci, chat in enumerate(chats):
        if not isinstance(chat, dict):
            ctx.skip(BadRecord(f"{src.name}: chat {ci}", "not an object"))
            continue
        yield from _chat(chat, ci, owner, src.name, ctx)


def _chat(chat: dict, ci: int, owner: str | None, name: str, ctx):
    cid = f"telegram:{chat['id']}" if chat.get("id") is not None else stable_id(name, chat.get("name"))
    prev, n = None, 0
    for j, m in enumerate(chat.get("messages") or []):
        where = f"{name}: chat {ci} ({chat.get('name')!r}) message {j}"
        try:
            rec = _message(m, where, cid, owner, prev, n, ctx)
        except BadRecord as e:
            ctx.skip(e)
            continue
        if rec is not None:
            prev, n = rec["message_id"], n + 1
            yield rec


def _message(m, where: str, cid: str, owner: str | None, prev, n: int, ctx) -> dict | None:
    if not isinstance(m, dict):
        raise BadRecord(where, "not an object")
    text = flatten(m.get("text"))
    media = _media(m)
    if m.get("type") == "service":
        action = m.get("action") or "service"
        actor = m.get("actor") or ""
        text = text or f"{actor} {action.replace('_', ' ')}".strip()
        speaker, role, kind = "Telegram", "system", "system"
    else:
        speaker = m.get("from") or m.get("from_id") or "unknown"
        if owner is not None:
            role = "me" if m.get("from_id") == owner else "other"
            speaker = ctx.identity.display if role == "me" and ctx.identity.configured else speaker
        else:
            role = UNRESOLVED
        kind = "text"
        if media:
            placeholder = f"<media:{media}>"
            text = f"{placeholder}\n{text}" if text.strip() else placeholder
            kind = "media" if text == placeholder else "text"
    if not text.strip():
        return None
    return message(SOURCE, cid, f"{cid}:{m['id']}" if m.get("id") is not None else None, text, str(speaker), role,
                   timestamp=_time(m, where), parent_id=prev, kind=kind, index=n)
