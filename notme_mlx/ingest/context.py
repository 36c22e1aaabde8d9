"""Options every format parser receives, and the per-file record of what was skipped or dropped."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import timezone, tzinfo
from typing import Callable

from ..errors import InputError
from .identity import Identity

# Bad records listed per file in the report (all are counted; the list stops here to bound memory).
MAX_LISTED = 1000


class BadRecord(InputError):
    """One malformed record: `where` is `file:line` (or `file: record i`, a conversation id), `reason` says why."""

    def __init__(self, where: str, reason: str):
        super().__init__(f"{where}: {reason}")
        self.where, self.reason = where, reason


@dataclass
class Context:
    """Per-run parse options and the current file's tallies.

    identity: who is "me" (display name for the me side in AI chats too).
    sidechains: keep Claude Code sidechain (sub-agent) messages.
    tools: keep tool calls/results as kind="tool" records (dropped by default).
    tz: zone of exports with local, zone-less times (WhatsApp); default UTC.
    recover: a malformed record is skipped and listed (`bad`) instead of stopping the file.
    on_bytes: progress callback, called with bytes consumed.
    bad, n_bad: the current file's skipped records ({where, reason}, the first MAX_LISTED) and their count.
    dropped: the current file's records left out by design, by reason ("sidechain", "tool", ...).
    """

    identity: Identity = field(default_factory=Identity)
    sidechains: bool = False
    tools: bool = False
    tz: tzinfo = timezone.utc
    recover: bool = False
    on_bytes: Callable[[int], None] | None = None
    bad: list = field(default_factory=list)
    n_bad: int = 0
    dropped: Counter = field(default_factory=Counter)

    def advance(self, n: int) -> None:
        if self.on_bytes and n:
            self.on_bytes(n)

    def skip(self, err: BadRecord) -> None:
        """Record a malformed record and carry on (recover), or stop with it as the error."""
        if not self.recover:
            raise err
        self.n_bad += 1
        if len(self.bad) < MAX_LISTED:
            self.bad.append({"where": err.where, "reason": err.reason})

    def drop(self, reason: str, n: int = 1) -> None:
        """Count a record left out on purpose (sidechain, tool traffic, meta line, ...)."""
        self.dropped[reason] += n

    def reset(self) -> None:
        self.bad, self.n_bad, self.dropped = [], 0, Counter()
