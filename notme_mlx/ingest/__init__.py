"""notme ingest: every export a person has -> Message records.

Public API:
    ingest_paths(paths, me=[...], ...) -> Iterator[dict]       records, streamed
    ingest_to_file(paths, out, ...) -> IngestReport             atomic 0600 JSONL + progress
    parse_bytes(fmt, data, name=..., me=[...]) -> list[dict]    one export in memory (tests, tools)
    FORMATS, detect_format(source), Scrubber, load_identity, Identity, compute_stats
"""

from __future__ import annotations

import io
from pathlib import Path

from .. import ui
from ..errors import InputError
from ..io import write_jsonl
from .context import BadRecord, Context
from .identity import Identity, load_identity
from .pipeline import IngestReport, collect_sources, explain, ingest_paths
from .record import FIELDS, KINDS, ROLES, message, stable_id
from .registry import FORMATS, Format, detect_format, get_format
from .scrub import Scrubber
from .sources import Source
from .stats import compute_stats

__all__ = [
    "FIELDS", "FORMATS", "KINDS", "ROLES", "BadRecord", "Context", "Format", "Identity", "IngestReport", "Scrubber",
    "Source", "collect_sources", "compute_stats", "detect_format", "explain", "get_format", "ingest_paths",
    "ingest_to_file", "load_identity", "message", "parse_bytes", "stable_id",
]


def parse_bytes(fmt: str, data: bytes, name: str = "<bytes>", me=(), **kw) -> list[dict]:
    """Parse one in-memory export with format `fmt` ("auto" detects); returns resolved records (maybe none)."""
    kw.setdefault("allow_empty", True)
    src = Source(name, len(data), lambda: io.BytesIO(data), explicit=True)
    ident = kw.pop("identity", None) or Identity(names=list(me))
    return list(ingest_paths([], fmt=fmt, identity=ident, sources=[src], **kw))


def ingest_to_file(paths, out: str | Path, *, progress: bool = True, **kw) -> IngestReport:
    """Ingest `paths` into `out` (JSONL, written atomically, mode 0600).

    Args:
        paths: files/dirs/zips; kw: as ingest_paths. progress: show a byte progress bar.
    Returns:
        IngestReport (per-file counts, skipped records and files).
    """
    out = Path(out).resolve()
    srcs = collect_sources(paths)
    for s in srcs:
        if s.path is not None and s.path.resolve() == out:
            raise InputError(f"{out}: the output file is also an input; choose another -o")
    report = kw.pop("report", None) or IngestReport()
    total = sum(s.size for s in srcs)
    if progress:
        with ui.progress("ingest", total=total / 1e6, unit="MB") as bar:
            write_jsonl(out, ingest_paths(paths, sources=srcs, report=report,
                                          on_bytes=lambda n: bar.advance(n / 1e6), **kw))
    else:
        write_jsonl(out, ingest_paths(paths, sources=srcs, report=report, **kw))
    return report
