"""Ingest orchestration: sources -> format parser -> role resolution -> filters -> scrub."""

from __future__ import annotations

import hashlib
import json
import tempfile
import zipfile
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path, PurePath
from typing import Callable, Iterable, Iterator
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ..errors import ConfigError, InputError, NotmeError
from .context import Context
from .identity import Identity, load_identity
from .record import UNRESOLVED, parse_iso
from .registry import FORMATS, detect_format, get_format
from .scrub import Scrubber
from .sources import Source, iter_sources

_TEXTLIKE = {".txt", ".json", ".jsonl", ".ndjson", ".md", ".markdown", ".db", ".sqlite"}
# Records of a file held back until its owner is found (person-to-person chats); past this many
# with no unresolved speaker the file is taken as an AI chat and streamed.
_HOLD = 2000
_OUT_OF_RANGE = "outside --since/--until"


@dataclass
class IngestReport:
    """What an ingest run did: per-file counts and skipped records, skipped files, ignored inputs.

    files: {name, format, messages, skipped_records, bad: [{where, reason}], left_out: {reason: n}, why}
    skipped: whole files not read ({name, reason}; `messages_kept` when it failed part-way).
    """

    files: list[dict] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)
    unrecognized: list[str] = field(default_factory=list)  # walked files of no known format
    duplicates: list[str] = field(default_factory=list)  # byte-identical to an earlier input, not read again
    messages: int = 0
    bytes_total: int = 0

    @property
    def records_skipped(self) -> int:
        return sum(f["skipped_records"] for f in self.files)

    def to_dict(self) -> dict:
        return asdict(self)


def explain(messages: int, n_bad: int, left_out: dict) -> str:
    """Why a file gave what it gave, in a few words ('' when every record became a message)."""
    other = {k: v for k, v in left_out.items() if k != "not a message line"}
    if messages == 0 and n_bad == 0:
        if other.get("sidechain") and set(other) <= {"sidechain", "tool"}:
            return f"all {other['sidechain']} message lines are subagent sidechains; pass --sidechains"
        if other and set(other) <= {"tool", "reasoning"} and other.get("tool"):
            return f"only tool calls/results ({other['tool']}); pass --tools"
        if set(other) == {_OUT_OF_RANGE}:
            return f"all {other[_OUT_OF_RANGE]} messages are {_OUT_OF_RANGE}"
    parts = []
    if messages == 0 and n_bad and not other:
        parts.append(f"every record skipped ({n_bad}): see report")
    elif n_bad:
        parts.append(f"{n_bad} bad record(s) skipped: see report")
    if other:
        parts.append("left out: " + ", ".join(f"{n} {k}" for k, n in sorted(other.items(), key=lambda kv: -kv[1])))
    if messages == 0 and not parts:
        parts.append("no messages in this file")
    return "; ".join(parts)


def parse_date_bound(value: str | None, *, end: bool) -> datetime | None:
    """--since/--until value -> aware datetime. A date-only --until includes that whole day."""
    if not value:
        return None
    try:
        dt = parse_iso(value)
    except ValueError:
        raise ConfigError(f"--{'until' if end else 'since'} {value!r}: expected a date like 2024-01-31 "
                          f"or 2024-01-31T18:00:00Z") from None
    if end and len(value.strip()) <= 10:
        dt += timedelta(days=1)
    return dt


def _tz(name: str | None):
    if not name or name.upper() == "UTC":
        return timezone.utc
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"--tz {name!r}: unknown time zone (use an IANA name like Europe/Berlin)") from None


def collect_sources(paths: Iterable) -> list[Source]:
    """All inputs under `paths` (files, walked directories, zip members), in a stable order."""
    return list(iter_sources(paths))


def ingest_paths(
    paths: Iterable,
    *,
    fmt: str = "auto",
    me: Iterable[str] = (),
    identity: Identity | str | Path | None = None,
    skip_bad: bool = False,
    strict: bool = False,
    allow_empty: bool = False,
    since: str | None = None,
    until: str | None = None,
    sidechains: bool = False,
    tools: bool = False,
    tz: str | None = None,
    scrub: bool | Scrubber = False,
    report: IngestReport | None = None,
    on_bytes: Callable[[int], None] | None = None,
    sources: list[Source] | None = None,
) -> Iterator[dict]:
    """Yield Message records from every export under `paths`.

    Args:
        paths: files, directories (walked) and .zip archives (read in place).
        fmt: "auto" (detect from content) or a name in FORMATS, forced for the named files.
        me: the owner's names (--me); merged with `identity` (an Identity or identity.yaml path;
            None reads the default ~/.config/notme/identity.yaml when it exists).
        skip_bad: a malformed record (JSON line, conversation, undatable WhatsApp line) is skipped and
            listed in `report.files[i]["bad"]`, the rest of its file kept; a file whose format is not
            recognised or that cannot be read is listed in `report.skipped`. Without it the first bad
            record raises InputError naming `file:line`.
        strict: all-or-nothing per file: with skip_bad one bad record skips its whole file.
        allow_empty: do not raise when non-empty inputs give zero messages.
        since, until: keep messages in [since, until] (ISO date/time; null timestamps are kept).
        sidechains, tools: keep Claude Code sidechains / tool traffic (kind="tool").
        tz: IANA zone for exports with zone-less local times (WhatsApp); default UTC.
        scrub: True or a Scrubber -> PII placeholders and pseudonyms for other people.
        report: filled with per-file counts, skipped, ignored and duplicate inputs.
        on_bytes: progress callback (bytes consumed).
    Returns:
        Iterator of dicts, ordered by file, then conversation, then thread order.
    """
    ident = _owner(identity, me)
    if fmt != "auto":
        get_format(fmt)
    lo, hi = parse_date_bound(since, end=False), parse_date_bound(until, end=True)
    ctx = Context(identity=ident, sidechains=sidechains, tools=tools, tz=_tz(tz), on_bytes=on_bytes,
                  recover=skip_bad and not strict)
    scrubber = scrub if isinstance(scrub, Scrubber) else Scrubber(keep=ident.names) if scrub else None
    run = _Run(fmt=fmt, ctx=ctx, lo=lo, hi=hi, scrubber=scrubber,
               report=report if report is not None else IngestReport(),
               skip_bad=skip_bad, strict=strict, on_bytes=on_bytes)
    srcs = sources if sources is not None else collect_sources(paths)
    run.report.bytes_total = sum(s.size for s in srcs)
    for src in srcs:
        yield from run.read(src)
    _check_found(srcs, run.report, allow_empty)


def _owner(identity: Identity | str | Path | None, me: Iterable[str]) -> Identity:
    """The owner: `identity` (an Identity, or read from its file) with the --me names first."""
    if not isinstance(identity, Identity):
        return load_identity(identity, list(me))
    if not me:
        return identity
    return Identity(names=list(me) + identity.names, handles=identity.handles, phones=identity.phones,
                    emails=identity.emails)


class _Progress:
    """The bytes of one input passed on to `on_bytes`; `finish` makes up the rest of its size."""

    def __init__(self, on_bytes: Callable[[int], None] | None):
        self.on_bytes, self.done = on_bytes, 0

    def count(self, n: int) -> None:
        self.done += n
        if self.on_bytes:
            self.on_bytes(n)

    def finish(self, size: int) -> None:
        if self.on_bytes and size > self.done:  # skipped/ignored/partly read: the bar still ends at 100%
            self.on_bytes(size - self.done)


@dataclass
class _Run:
    """One ingest run's settings and what it has seen so far; `read` takes one input."""

    fmt: str
    ctx: Context
    lo: datetime | None
    hi: datetime | None
    scrubber: Scrubber | None
    report: IngestReport
    skip_bad: bool
    strict: bool
    on_bytes: Callable[[int], None] | None
    seen: set[bytes] = field(default_factory=set)  # digests of the inputs read

    def read(self, src: Source) -> Iterator[dict]:
        """One input's records, then its entry in the report; a failure raises, or with skip_bad
        lists the input as skipped (what it gave before failing stays in the output)."""
        progress = _Progress(self.on_bytes)
        self.ctx.on_bytes = progress.count
        n = 0
        try:
            found = self._records(src)
            if found is None:
                return
            name, records = found
            for r in records:
                n += 1
                yield r
            self.report.files.append({"name": src.name, "format": name, "messages": n,
                                      "skipped_records": self.ctx.n_bad, "bad": self.ctx.bad,
                                      "left_out": dict(self.ctx.dropped),
                                      "why": explain(n, self.ctx.n_bad, self.ctx.dropped)})
            self.report.messages += n
        except (OSError, EOFError, NotImplementedError, RuntimeError, zipfile.BadZipFile) as e:
            # unreadable file, encrypted/unsupported zip member, ...: one line naming the file
            err = InputError(f"{src.name}: cannot read ({type(e).__name__}: {e})")
            if not self.skip_bad:
                raise err from None
            _skipped(self.report, src.name, str(err), n)
        except NotmeError as e:
            if not self.skip_bad or isinstance(e, ConfigError):
                raise
            _skipped(self.report, src.name, str(e), n)
        finally:
            progress.finish(src.size)

    def _records(self, src: Source) -> tuple[str, Iterator[dict]] | None:
        """(format name, records) of an input to read; None for one of no known format or seen before."""
        if src.error:
            raise InputError(src.error)
        name = _choose_format(src, self.fmt, self.report)
        if name is None:
            return None
        digest = _digest(src)
        if digest in self.seen:  # the same export given twice (e.g. the zip and its unpacked folder)
            self.report.duplicates.append(src.name)
            return None
        self.seen.add(digest)
        self.ctx.reset()
        records = _one_source(src, FORMATS[name], self.ctx, self.lo, self.hi, self.scrubber)
        if self.strict and self.skip_bad:  # all-or-nothing: nothing of a file is written until all of it parsed
            records = _spooled(records)
        return name, records


def _check_found(srcs: list[Source], report: IngestReport, allow_empty: bool) -> None:
    """InputError when inputs were given but none was an export, or (unless allow_empty) none gave a message."""
    if srcs and not (report.files or report.skipped or report.duplicates):
        raise InputError(f"no supported export found in {len(srcs)} input file(s) (e.g. {srcs[0].name}); "
                         f"{_format_hint(srcs)}")
    if not allow_empty and report.messages == 0 and (report.files or report.skipped):
        why = [f"{PurePath(f['name']).name}: {f['why']}" for f in report.files]
        why += [f"{PurePath(f['name']).name}: skipped ({f['reason']})" for f in report.skipped]
        if any(s.size for s in srcs):
            raise InputError(f"no messages from {len(why)} non-empty input file(s): {'; '.join(why[:10])}"
                             f"{' ...' if len(why) > 10 else ''} (pass --allow-empty to write an empty file)")


def _format_hint(srcs: list[Source]) -> str:
    """What to do when no input is a supported export (a known wrong file of a known export named)."""
    if any(PurePath(s.name).name == "messages.html" for s in srcs):
        return "this looks like a Telegram HTML export; export again with format 'Machine-readable JSON'"
    if any(PurePath(s.name).name == "chat.html" for s in srcs):
        return "ChatGPT's chat.html is not read; point notme at conversations.json (same export)"
    return "see `notme ingest --help` for the formats, or force one with --format"


def _spooled(records: Iterator[dict]) -> Iterator[dict]:
    """All of `records` parsed into a private temporary file first, then replayed."""
    with tempfile.TemporaryFile("w+", encoding="utf-8") as spool:  # 0600, deleted on close
        for r in records:
            spool.write(json.dumps(r, ensure_ascii=False) + "\n")
        spool.seek(0)
        for line in spool:
            yield json.loads(line)


def _skipped(report: IngestReport, name: str, reason: str, kept: int) -> None:
    entry = {"name": name, "reason": reason}
    if kept:  # failed part-way: what was read before the failure is already in the output
        entry["messages_kept"] = kept
        report.messages += kept
    report.skipped.append(entry)


def _digest(src: Source) -> bytes:
    h = hashlib.sha256()
    with src.open() as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.digest()


def _choose_format(src: Source, fmt: str, report: IngestReport) -> str | None:
    if fmt != "auto":
        if src.explicit or PurePath(src.name).suffix.lower() in _TEXTLIKE:
            if src.size == 0:
                raise InputError(f"{src.name}: empty file")
            return fmt
        report.unrecognized.append(src.name)
        return None
    name = detect_format(src)
    if name is not None:
        return name
    if src.explicit:
        if src.size == 0:
            raise InputError(f"{src.name}: empty file")
        raise InputError(f"{src.name}: unknown export format (not ChatGPT, Claude, Claude Code, iMessage, WhatsApp, "
                         f"Telegram or JSONL); pass --format one of {', '.join(FORMATS)}")
    report.unrecognized.append(src.name)
    return None


def _one_source(src, fmt, ctx, lo, hi, scrubber) -> Iterator[dict]:
    """The file's records with roles resolved, filtered and scrubbed.

    Records are held back until the owner is found among a person-to-person chat's speakers, so a
    chat that fails the identity check (raised at its end) has written nothing.
    """
    ident = ctx.identity
    unresolved: Counter = Counter()
    matched = False
    held: list[dict] | None = []
    for r in fmt.parse(src, ctx):
        if r["role"] == UNRESOLVED:
            unresolved[r["speaker"]] += 1
            if not ident.configured:
                continue  # collect every speaker, then fail below with the full list
            if ident.is_me(r["speaker"]):
                r["role"], r["speaker"], matched = "me", ident.display, True
            else:
                r["role"] = "other"
        if (lo or hi) and r["timestamp"]:
            t = parse_iso(r["timestamp"])
            if (lo and t < lo) or (hi and t >= hi):
                ctx.drop(_OUT_OF_RANGE)
                continue
        if scrubber is not None:
            if r["role"] == "other":
                r["speaker"] = scrubber.pseudonym(r["speaker"])
            r["text"] = scrubber.scrub(r["text"])
        if held is None:
            yield r
            continue
        held.append(r)
        if matched or (not unresolved and len(held) >= _HOLD):
            yield from held
            held = None
    if unresolved and not ident.configured:
        found = ", ".join(f"{s!r} ({n})" for s, n in unresolved.most_common(20))
        raise InputError(f"{src.name}: person-to-person chat and no owner given; speakers found: {found}. "
                         f"Say which one is you with --me NAME (or names in ~/.config/notme/identity.yaml)")
    if unresolved and not matched:
        raise InputError(f"{src.name}: none of the speakers {sorted(unresolved)[:20]} matches --me/identity "
                         f"{ident.names}; add your name as it appears in this chat with --me")
    if held:
        yield from held
