"""Options every format parser receives."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timezone, tzinfo
from typing import Callable

from .identity import Identity


@dataclass
class Context:
    """Per-run parse options.

    identity: who is "me" (display name for the me side in AI chats too).
    sidechains: keep Claude Code sidechain (sub-agent) messages.
    tools: keep tool calls/results as kind="tool" records (dropped by default).
    tz: zone of exports with local, zone-less times (WhatsApp); default UTC.
    on_bytes: progress callback, called with bytes consumed.
    """

    identity: Identity = field(default_factory=Identity)
    sidechains: bool = False
    tools: bool = False
    tz: tzinfo = timezone.utc
    on_bytes: Callable[[int], None] | None = None

    def advance(self, n: int) -> None:
        if self.on_bytes and n:
            self.on_bytes(n)
