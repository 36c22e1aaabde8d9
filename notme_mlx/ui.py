"""The one place that prints. Library code reports through here (rank 0 only).

`console` writes to stderr for status and progress so stdout stays clean for
data (JSONL, JSON). `progress()` gives a rich progress bar with rate and ETA
that degrades to plain log lines when stderr is not a TTY.
"""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

console = Console(stderr=True, highlight=False)
out = Console(highlight=False)  # stdout: tables and results the user asked for

_RANK = int(os.environ.get("MLX_RANK", os.environ.get("OMPI_COMM_WORLD_RANK", "0")) or 0)


def set_rank(rank: int) -> None:
    """Only rank 0 prints in distributed runs."""
    global _RANK
    _RANK = rank


def is_main() -> bool:
    return _RANK == 0


def info(msg: str) -> None:
    if is_main():
        console.print(msg)


def warn(msg: str) -> None:
    if is_main():
        console.print(f"[yellow]warning:[/yellow] {msg}")


def error(msg: str) -> None:
    console.print(f"[bold red]error:[/bold red] {msg}", soft_wrap=True)


def plain(line: str) -> None:
    """One progress line to stderr exactly as given (no markup, no wrapping, flushed): the log-line form
    of a live display when stderr is not a TTY."""
    if is_main():
        print(line, file=sys.stderr, flush=True)


class _PlainProgress:
    """Fallback progress: a log line every ~10% when not a TTY."""

    def __init__(self, description: str, total: float | None, unit: str):
        self.description, self.total, self.unit = description, total, unit
        self.done = 0.0
        self._next = 0.1

    def advance(self, n: float = 1) -> None:
        self.done += n
        if self.total and self.done / self.total >= self._next and is_main():
            plain(f"{self.description}: {self.done:.0f}/{self.total:.0f} {self.unit}")
            self._next += 0.1

    def update(self, **kw) -> None:
        if "total" in kw:
            self.total = kw["total"]
        if "completed" in kw:
            self.done = kw["completed"]


class _RichTask:
    def __init__(self, progress: Progress, task_id):
        self._p, self._id = progress, task_id

    def advance(self, n: float = 1) -> None:
        self._p.advance(self._id, n)

    def update(self, **kw) -> None:
        self._p.update(self._id, **kw)


class _RateColumn(ProgressColumn):
    def __init__(self, unit: str):
        super().__init__()
        self.unit = unit

    def render(self, task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("" if speed is None else f"{speed:,.1f} {self.unit}/s", style="cyan")


@contextmanager
def progress(description: str, total: float | None = None, unit: str = "items"):
    """Yield a task with `.advance(n)` and `.update(total=, completed=, description=)`."""
    if not is_main() or not console.is_terminal or os.environ.get("NOTME_PLAIN"):
        yield _PlainProgress(description, total, unit)
        return
    cols = [
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn() if unit == "items" else TaskProgressColumn(),
        _RateColumn(unit),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
    ]
    with Progress(*cols, console=console, transient=False) as p:
        tid = p.add_task(description, total=total)
        yield _RichTask(p, tid)
