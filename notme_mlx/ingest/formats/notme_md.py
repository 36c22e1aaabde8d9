"""Hand-written conversations in Markdown (`notme_md`), for data a person writes themselves.

    # My conversations            <- optional file title, ignored
    ## Weekend plans              <- starts a conversation (its title)
    date: 2024-05-04 10:00        <- optional, right under the heading (ISO; UTC unless an offset is given)

    **me:** Saturday works. I'll book the 9am court.
    **Jordan:** Great.
    A second line of Jordan's message.
    **ai:** An AI turn, if the conversation is with an assistant.

Speaker `me` (or any --me/identity name) -> role me; `ai`/`assistant`/`model` -> ai;
`system` -> system; any other name -> other. Lines after a speaker line belong
to that message until the next speaker line or heading (blank lines kept inside,
trimmed at the end). Every message of a conversation gets its `date:` (or null).
"""

from __future__ import annotations

import re
from pathlib import PurePath

from ..context import BadRecord
from ..record import iso_utc, message, parse_iso, stable_id

SOURCE = "notme_md"
_SPEAKER = re.compile(r"^\*\*(?P<name>[^*\n]{1,60}?)(?::\*\*|\*\*:)[ \t]?(?P<text>.*)$")
_HEAD = re.compile(r"^##[ \t]+(?P<title>.+?)\s*$")
_DATE = re.compile(r"^date:\s*(?P<date>\S.*?)\s*$", re.I)
_AI = {"ai", "assistant", "model", "chatgpt", "claude"}


def sniff(head: bytes, name: str) -> bool:
    text = head.decode("utf-8", errors="ignore")
    speaker = re.search(r"^\*\*[^*\n]{1,60}?(?::\*\*|\*\*:)", text, re.M)
    return bool(speaker) and (bool(re.search(r"^##[ \t]+\S", text, re.M)) or name.lower().endswith(".md"))


def parse(src, ctx):
    base = PurePath(src.name).name
    conv = {"title": PurePath(src.name).stem, "index": 0, "date": None, "started": False}
    cur: dict | None = None
    state = {"prev": None, "n": 0}

    def cid():
        return stable_id(SOURCE, base, conv["index"], conv["title"])

    def flush():
        nonlocal cur
        if cur is None:
            return
        text = "\n".join(cur["lines"]).strip("\n").rstrip()
        name = cur["name"]
        cur = None
        if not text:
            return
        low = name.strip().lower()
        if low == "me" or ctx.identity.is_me(name):
            role, speaker = "me", ctx.identity.display if low == "me" else name
        elif low in _AI:
            role, speaker = "ai", name
        elif low == "system":
            role, speaker = "system", "system"
        else:
            role, speaker = "other", name
        rec = message(SOURCE, cid(), None, text, speaker, role, timestamp=conv["date"], parent_id=state["prev"],
                      kind="system" if role == "system" else "text", index=state["n"])
        state["prev"], state["n"] = rec["message_id"], state["n"] + 1
        yield rec

    for lineno, line in src.text_lines(ctx.advance):
        h = _HEAD.match(line)
        if h:
            yield from flush()
            if conv["started"]:
                conv["index"] += 1
            conv.update(title=h["title"], date=None, started=True)
            state["prev"], state["n"] = None, 0
            continue
        d = _DATE.match(line)
        if d and cur is None and state["n"] == 0:
            try:
                conv["date"] = iso_utc(parse_iso(d["date"].replace(" ", "T", 1)))
            except ValueError:
                ctx.skip(BadRecord(f"{src.name}:{lineno}", f"bad date {d['date']!r} (expected e.g. 2024-05-04 10:00)"))
            continue
        s = _SPEAKER.match(line)
        if s:
            yield from flush()
            conv["started"] = True
            cur = {"name": s["name"].strip(), "lines": [s["text"]]}
            continue
        if cur is not None:
            cur["lines"].append(line)
        elif line.strip() and not line.startswith("# ") and not line.startswith("<!--"):
            ctx.skip(BadRecord(f"{src.name}:{lineno}", f"text before the first '**speaker:**' line: {line[:60]!r}"))
    yield from flush()
