"""`notme ingest --stats`: per source and speaker counts of a messages.jsonl."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..io import read_jsonl


@dataclass
class SpeakerStats:
    messages: int = 0
    words: int = 0
    first: str | None = None
    last: str | None = None
    role: str = ""

    def add(self, rec: dict) -> None:
        self.messages += 1
        self.words += len(rec.get("text", "").split())
        ts = rec.get("timestamp")
        if ts:
            self.first = ts if self.first is None or ts < self.first else self.first
            self.last = ts if self.last is None or ts > self.last else self.last


@dataclass
class Stats:
    """by_source[source][(speaker, role)] -> SpeakerStats; conversations per source."""

    by_source: dict = field(default_factory=dict)
    conversations: dict = field(default_factory=dict)
    total: int = 0

    def me_share(self, source: str) -> float:
        rows = self.by_source.get(source, {})
        n = sum(s.messages for s in rows.values())
        me = sum(s.messages for (sp, role), s in rows.items() if role == "me")
        return me / n if n else 0.0


def compute_stats(path: str | Path) -> Stats:
    """Stream a messages.jsonl and aggregate counts (memory: one entry per speaker/conversation)."""
    st = Stats()
    convs: dict[str, set] = {}
    for rec in read_jsonl(path):
        src = rec.get("source", "?")
        key = (rec.get("speaker", "?"), rec.get("role", "?"))
        row = st.by_source.setdefault(src, {}).setdefault(key, SpeakerStats(role=key[1]))
        row.add(rec)
        convs.setdefault(src, set()).add(rec.get("conversation_id"))
        st.total += 1
    st.conversations = {k: len(v) for k, v in convs.items()}
    return st
