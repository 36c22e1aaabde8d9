"""WhatsApp "Export chat" text (`_chat.txt` / `WhatsApp Chat with X.txt`, or the zip).

Header variants handled (each line starting a message):
  iOS      `[15/01/2024, 09:05:12] Name: text`   `[1/15/24, 9:05:12 AM] Name: text`
  Android  `15/01/2024, 09:05 - Name: text`      `1/15/24, 9:05 PM - Name: text`
  dotted   `15.01.24, 09:05 - Name: text`        ISO-ish `2024-01-15, 09:05 - ...`
  older    `13.06.18 21.25.15: Name: text`       `21/8/19, 11:28:51 PM: Name: text`
with 2- or 4-digit years, 12-hour clocks (`PM`, `p.m.`, `p. m.`, `00:08 a. m.`; a
narrow no-break space U+202F before it on newer phones), a BOM, CR CR LF record
ends, and LRM (U+200E) marks before media/system lines. Day-first vs
month-first is resolved from the whole file (a first pass reads only the
headers). Lines that do not start with a header continue the previous message.
Messages stay in file order even where the phone's clock ran backwards.
Times are local to the exporting phone; `ctx.tz` (default UTC) says which zone.
A header whose date/time cannot be real (month 13, 25:61) makes that message a
bad record (`file:line`); the rest of the chat is kept.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import PurePath

from ...errors import InputError
from ..context import BadRecord
from ..record import UNRESOLVED, iso_utc, message, stable_id

SOURCE = "whatsapp"
_DATE = r"\d{1,4}[./-]\d{1,2}[./-]\d{1,4}"
_TIME = r"\d{1,2}[:.]\d{2}(?:[:.]\d{2})?(?:\s?[AaPp]\.?\s?[Mm]\.?)?"
_HDR = re.compile(
    rf"^[\u200e\u200f\ufeff]*(?:\[(?P<d1>{_DATE}),?\s(?P<t1>{_TIME})\]\s?|(?P<d2>{_DATE}),?\s(?P<t2>{_TIME})\s[-\u2013]\s)(?P<rest>.*)$",
    re.S,
)
# Older exports: `date[,] time: Name: text` (no brackets, no dash). Same group names as _HDR.
# The year comes last there (`13.06.18`, `21/8/19`), which keeps ISO-dated log lines out.
_HDR_COLON = re.compile(
    r"^[\u200e\u200f\ufeff]*(?P<d1>\d{1,2}[./-]\d{1,2}[./-]\d{2,4}),?\s"
    rf"(?P<t1>{_TIME}):\s(?P<d2>(?!))?(?P<t2>(?!))?(?P<rest>.*)$", re.S)
# First pass (bytes, headers only): day/month fields, an AM/PM marker and the header style.
_BHDR = re.compile(
    rb"^(?:\xe2\x80[\x8e\x8f]|\xef\xbb\xbf)*\[?(\d{1,4})[./-](\d{1,2})[./-](\d{1,4}),?\s"
    rb"\d{1,2}[:.]\d{2}(?:[:.]\d{2})?(?:\s|\xe2\x80\xaf|\xc2\xa0)?([AaPp]\.?\s?[Mm]\.?)?(\]|\s[-\xe2]|:\s)")
_NAME = re.compile(r"^(?P<name>[^:\n]{1,100}?): (?P<text>.*)$", re.S)
_INVIS = dict.fromkeys(map(ord, "\u200e\u200f\u202a\u202b\u202c\u202d\u202e\ufeff"), None)
_SPACES = str.maketrans({"\u202f": " ", "\u00a0": " ", "\u2009": " "})
_MEDIA = [
    (re.compile(r"^<Media omitted>$|^<Medien ausgeschlossen>$|^<Multimedia omitido>$|^<Médias omis>$", re.I), "media"),
    (re.compile(r"^(image|photo) omitted$|^<attached: [^>]*\.(jpe?g|png|heic|webp)>$", re.I), "image"),
    (re.compile(r"^video omitted$|^<attached: [^>]*\.(mp4|mov)>$", re.I), "video"),
    (re.compile(r"^audio omitted$|^<attached: [^>]*\.(opus|m4a|mp3|aac)>$", re.I), "audio"),
    (re.compile(r"^sticker omitted$|^<attached: [^>]*\.webp>$", re.I), "sticker"),
    (re.compile(r"^GIF omitted$", re.I), "gif"),
    (re.compile(r"^(immagine|foto) omessa$|^imagen omitida$|^Bild weggelassen$|^image absente$", re.I), "image"),
    (re.compile(r"^video omesso$|^v[ií]deo omitido$|^Video weggelassen$", re.I), "video"),
    (re.compile(r"^audio omesso$|^audio omitido$|^Audio weggelassen$", re.I), "audio"),
    (re.compile(r"^sticker omesso$|^sticker omitido$|^Sticker weggelassen$", re.I), "sticker"),
    (re.compile(r"^(document|Contact card) omitted$|^.* • \d+ pages? document omitted$|^<attached: [^>]*>$|"
                r"^\S.*\.\w{2,4} \(file attached\)$", re.I), "file"),
]
_SYSTEM = re.compile(
    r"end-to-end encrypted|created (the )?group|changed (the subject|this group's|the group)|"
    r" added |^added | left$| joined using|changed their phone number|security code (with|changed)|"
    r"removed |You're now an admin|disappearing messages|Missed (voice|video) call",
    re.I,
)
_SYSTEM_NAME = re.compile(
    r" (changed (the subject|the group|this group's|their phone number)|added|removed|created group|left|joined using)\b",
    re.I)
_E2E = re.compile(r"^Messages (and calls )?(to this (group|chat) )?are (now )?(secured with )?end-to-end encrypt", re.I)
_DELETED = re.compile(r"^(This message was deleted|You deleted this message)\.?$", re.I)
_EDITED = re.compile(r"\s*<This message was edited>$")


def sniff(head: bytes, name: str) -> bool:
    try:
        text = head.decode("utf-8", errors="ignore")
    except Exception:  # pragma: no cover
        return False
    lines = [ln for ln in text.splitlines()[:20] if ln.strip()]
    hits = sum(bool(_HDR.match(ln) or _HDR_COLON.match(ln)) for ln in (x.translate(_SPACES) for x in lines[:5]))
    return bool(lines) and hits >= min(2, len(lines))


_SEP = re.compile(r"[./-]")


def _split_date(d: str) -> tuple[int, int, int, bool]:
    parts = _SEP.split(d)
    if len(parts) != 3:
        raise ValueError(d)
    return int(parts[0]), int(parts[1]), int(parts[2]), len(parts[0]) == 4


def _resolve_order(src, ctx) -> tuple[str, bool]:
    """('dmy' | 'mdy' | 'ymd', colon style?) from all header dates of the file (first pass).

    A field above 12 decides (dates that fit no reading, like 0 or both fields above 12, do not
    vote; when both orders get votes the majority wins and the others become bad records).
    When every date is ambiguous (both fields <= 12), the reading under which the dates run
    forward in time (fewer backwards steps) wins, since exports are mostly chronological; a tie
    falls back to month-first for 12-hour (AM/PM) files, else day-first. The header style with
    the most lines wins (`date, time: Name` vs bracket/dash).
    """
    day_first = month_first = ymd = 0
    ampm = False
    n = colon = 0
    prev_dmy = prev_mdy = None
    back_dmy = back_mdy = 0
    with src.open() as f:
        for raw in f:
            m = _BHDR.match(raw)
            if not m:
                continue
            n += 1
            colon += m[5] == b": "
            a, b, y = int(m[1]), int(m[2]), int(m[3])
            ampm = ampm or m[4] is not None
            if len(m[1]) == 4:
                ymd += 1
                continue
            if a == 0 or b == 0 or a > 31 or b > 31 or (a > 12 and b > 12):
                continue  # fits no reading: a bad record later, no vote
            if a > 12:
                day_first += 1
            elif b > 12:
                month_first += 1
            dmy, mdy = (y, b, a), (y, a, b)
            back_dmy += prev_dmy is not None and dmy < prev_dmy
            back_mdy += prev_mdy is not None and mdy < prev_mdy
            prev_dmy, prev_mdy = dmy, mdy
    if n == 0:
        raise InputError(f"{src.name}:1: no WhatsApp message header found (expected e.g. "
                         f"'[15/01/2024, 09:05:12] Name: text' or '15/01/2024, 09:05 - Name: text')")
    style = 2 * colon > n
    if 2 * ymd > n:
        return "ymd", style
    if day_first or month_first:
        return ("dmy" if day_first >= month_first else "mdy"), style
    if back_dmy != back_mdy:
        return ("dmy" if back_dmy < back_mdy else "mdy"), style
    return ("mdy" if ampm else "dmy"), style


@lru_cache(maxsize=4096)
def _date(d: str, order: str) -> tuple[int, int, int]:
    a, b, c, _ = _split_date(d)
    y, mo, da = (a, b, c) if order == "ymd" else (c, b, a) if order == "dmy" else (c, a, b)
    if y < 100:
        y += 2000
    datetime(y, mo, da)  # validates (ValueError on 31/02)
    return y, mo, da


_AMPM = re.compile(r"\s?([AaPp])\.?\s?[Mm]\.?$")


@lru_cache(maxsize=8192)
def _clock(t: str) -> tuple[int, int, int]:
    """'9:05:12 PM' / '21:05' / '21.05' -> (h, m, s) in 24 h."""
    pm = _AMPM.search(t)
    hms = [int(x) for x in re.split(r"[:.]", t[: pm.start()] if pm else t)]
    h, mi, s = hms[0], hms[1], hms[2] if len(hms) > 2 else 0
    if pm:
        if not 0 <= h <= 12:  # '00:08 a. m.' is written by some phones for 12:08 AM
            raise ValueError(t)
        h = h % 12 + (12 if pm.group(1).lower() == "p" else 0)
    if h > 23 or mi > 59 or s > 59:
        raise ValueError(t)
    return h, mi, s


def _timestamp(d: str, t: str, order: str, tz) -> str:
    y, mo, da = _date(d, order)
    h, mi, s = _clock(t)
    if tz is timezone.utc:
        return f"{y:04d}-{mo:02d}-{da:02d}T{h:02d}:{mi:02d}:{s:02d}Z"
    return iso_utc(datetime(y, mo, da, h, mi, s, tzinfo=tz))


def _chat_name(src) -> str:
    name = PurePath(src.name.split("!")[0]).stem if src.name.endswith("_chat.txt") else PurePath(src.name).stem
    return re.sub(r"^WhatsApp Chat (with|-) ", "", name)


def _classify(name: str | None, text: str, raw_text: str) -> tuple[str, str]:
    """(text, kind) for a message body."""
    body = text.strip()
    if body.endswith(">"):
        body = _EDITED.sub("", body)
    if len(body) < 160 and ("omitted" in body or body.startswith("<") or "attached" in body or "ausgeschlossen" in body):
        inner = body[1:-1] if body.startswith("<") and body.endswith(">") else body
        for pat, what in _MEDIA:
            if pat.match(body) or (inner is not body and pat.match(inner)):
                return f"<media:{what}>", "media"
        if raw_text.startswith("\u200e") and inner is not body and "<" not in inner and len(inner) < 60:
            return "<media:media>", "media"  # `\u200e<...>`: a placeholder in a language not listed above
    if name is None or (raw_text.startswith("\u200e") and _SYSTEM.search(body)):
        return body, "system"
    if body[:1] in "MmTtY" and (_E2E.match(body) or _DELETED.match(body)):
        return body, "system"
    text = text.strip("\n")
    return (_EDITED.sub("", text) if text.endswith(">") else text), "text"


class _Swallow(list):
    """The open record is bad: its continuation lines are read and dropped."""

    def append(self, item) -> None:
        pass


_BAD = {"lines": _Swallow()}


def parse(src, ctx):
    order, colon = _resolve_order(src, ctx)
    cid = stable_id(SOURCE, PurePath(src.name).name, _chat_name(src))
    state = {"prev": None}
    n_hdr = 0  # every header line, bad ones too: ids stay the same when a bad record is skipped
    cur: dict | None = None

    def flush(c):
        body = "\n".join(c["lines"])
        text, kind = _classify(c["name"], body, c["raw"])
        if not text.strip():
            return
        if kind == "system" and (c["name"] is None or c["raw"].startswith("\u200e") or _E2E.match(text)):
            speaker, role = "WhatsApp", "system"
        else:
            speaker, role = c["name"], UNRESOLVED
        rec = message(SOURCE, cid, None, text, speaker, role, timestamp=c["ts"], parent_id=state["prev"],
                      kind=kind, index=c["i"])
        state["prev"] = rec["message_id"]
        yield rec

    hdr = _HDR_COLON if colon else _HDR
    for lineno, line in src.text_lines(ctx.advance, undecodable=True):
        if line is None:  # bytes that are not UTF-8: the message they belong to is unreadable
            ctx.skip(BadRecord(f"{src.name}:{lineno}", "not UTF-8 text; the message containing it is skipped"))
            cur = _BAD
            continue
        if "\u202f" in line or "\u00a0" in line or "\u2009" in line:
            line = line.translate(_SPACES)
        m = hdr.match(line) if line[:1].isdigit() or line[:1] in "[\u200e\ufeff" else None
        if m is None:
            if cur is None:
                if not line.strip():
                    continue
                ctx.skip(BadRecord(f"{src.name}:{lineno}", f"expected a WhatsApp message header, got {line[:60]!r}"))
                cur = _BAD  # the lines up to the next header belong to this bad record
                continue
            cur["lines"].append(line)
            continue
        if cur is not None and cur is not _BAD:
            yield from flush(cur)
        n_hdr += 1
        try:
            ts = _timestamp(m["d1"] or m["d2"], m["t1"] or m["t2"], order, ctx.tz)
        except ValueError:
            ctx.skip(BadRecord(f"{src.name}:{lineno}", f"impossible date/time {(m['d1'] or m['d2'])!r} "
                               f"{(m['t1'] or m['t2'])!r} (resolved order {order})"))
            cur = _BAD
            continue
        rest = m["rest"]
        nm = _NAME.match(rest)
        if nm and _SYSTEM_NAME.search(nm["name"]):
            nm = None  # "Ann changed the subject to "Trip: Lisbon"": a system line with a colon inside
        if nm:
            name, raw_text = nm["name"].translate(_INVIS).strip(), nm["text"]
        else:
            name, raw_text = None, rest.lstrip("\u200e")
        text = raw_text.lstrip("\u200e\u200f")
        cur = {"name": name, "lines": [text], "raw": raw_text, "ts": ts, "i": n_hdr - 1}
    if cur is not None and cur is not _BAD:
        yield from flush(cur)
