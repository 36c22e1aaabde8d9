"""`notme ingest`: exports -> messages.jsonl, and `--stats` on a messages.jsonl."""

from __future__ import annotations

import json
from pathlib import Path

import click
from rich.markup import escape
from rich.table import Table

from .. import ui
from ..errors import ConfigError
from ..ingest import FORMATS, IngestReport, compute_stats, ingest_to_file
from ..io import atomic_write_text

_FORMATS = ["auto", *FORMATS]
# Bad records printed under the summary table (all of them are in OUT.report.json).
_SHOW_BAD = 20


@click.command("ingest")
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
@click.option("-o", "--out", type=click.Path(path_type=Path), help="Output messages.jsonl (written atomically, 0600).")
@click.option("--format", "fmt", type=click.Choice(_FORMATS), default="auto", show_default=True,
              help="Force a format for the named files (auto = detect from content).")
@click.option("--me", multiple=True, help="Your name as it appears in chats (repeatable).")
@click.option("--identity", type=click.Path(path_type=Path),
              help="identity.yaml with names/handles/phones/emails (default ~/.config/notme/identity.yaml).")
@click.option("--skip-bad", is_flag=True,
              help="Skip malformed records (a JSON line, a conversation, an undatable chat line) and files of no "
                   "known format; keep the rest, list every skip with file:line in OUT.report.json.")
@click.option("--strict", is_flag=True, help="All or nothing per file: one bad record fails (or, with --skip-bad, "
                                             "skips) its whole file.")
@click.option("--allow-empty", is_flag=True, help="Do not fail when the inputs give zero messages.")
@click.option("--since", help="Keep messages on/after this date (2024-01-31 or ISO time, UTC).")
@click.option("--until", help="Keep messages up to this date (a date includes that whole day).")
@click.option("--sidechains", is_flag=True, help="Keep Claude Code sidechain (sub-agent) messages.")
@click.option("--tools", is_flag=True, help="Keep tool calls/results as kind=tool records.")
@click.option("--tz", default="UTC", show_default=True, help="Zone of zone-less local times (WhatsApp), e.g. Europe/Berlin.")
@click.option("--scrub", is_flag=True, help="Replace emails, phones, secret URLs, cards, IBANs; pseudonymize others.")
@click.option("--stats", "stats_path", type=click.Path(path_type=Path), help="Show a per-source/speaker table of a messages.jsonl.")
def ingest_cmd(paths, out, fmt, me, identity, skip_bad, strict, allow_empty, since, until, sidechains, tools, tz, scrub,
               stats_path):
    """Turn exports (ChatGPT, Claude, Claude Code, iMessage, WhatsApp, Telegram, JSONL, Markdown)
    into one messages.jsonl. PATH may be a file, a directory (walked) or a .zip (read in place).

    \b
    Examples:
      notme ingest ~/Downloads/chatgpt-export.zip ~/Downloads/WhatsApp\\ Chat.zip -o messages.jsonl --me "Alex Rivera"
      notme ingest ~/.claude/projects -o cc.jsonl
      notme ingest --stats messages.jsonl
    """
    if stats_path is not None:
        _show_stats(stats_path)
        return
    if not paths:
        raise ConfigError("give at least one PATH to ingest (or --stats FILE); see notme ingest --help")
    if out is None:
        raise ConfigError("missing -o/--out FILE (where to write messages.jsonl)")
    if out.is_dir():
        raise ConfigError(f"-o {out}: is a directory; give a file name like {out / 'messages.jsonl'}")
    report = ingest_to_file(paths, out, fmt=fmt, me=me, identity=identity, skip_bad=skip_bad, strict=strict,
                            allow_empty=allow_empty, since=since, until=until, sidechains=sidechains, tools=tools,
                            tz=tz, scrub=scrub)
    rep_path = Path(str(out) + ".report.json")
    atomic_write_text(rep_path, json.dumps(report.to_dict(), indent=2, ensure_ascii=False) + "\n")
    _summary(report)
    if report.duplicates:
        ui.info(f"  skipped {len(report.duplicates)} duplicate input(s) (same bytes as an earlier one, e.g. "
                f"{escape(report.duplicates[0])})")
    if report.unrecognized:
        ui.info(f"  ignored {len(report.unrecognized)} file(s) of no known format (e.g. {escape(report.unrecognized[0])})")
    bad = [b for f in report.files for b in f["bad"]]
    if report.records_skipped:
        ui.warn(f"skipped {report.records_skipped} bad record(s) (all listed in {rep_path}):")
        for b in bad[:_SHOW_BAD]:
            ui.console.print(f"  [red]x[/red] {escape(b['where'])}: {escape(b['reason'])}", soft_wrap=True)
        if report.records_skipped > _SHOW_BAD:
            ui.console.print(f"  ... and {report.records_skipped - _SHOW_BAD} more", soft_wrap=True)
    if report.skipped:
        ui.warn(f"skipped {len(report.skipped)} bad file(s) (details in {rep_path}):")
        for s in report.skipped:
            ui.console.print(f"  [red]x[/red] {escape(s['reason'])}", soft_wrap=True)
    ui.info(f"[green]wrote {report.messages} messages from {len(report.files)} file(s) to {escape(str(out))}[/green]")
    ui.out.print(str(out))


def _summary(report: IngestReport) -> None:
    """Per file: format, messages read, records skipped, why (stderr)."""
    if not ui.is_main() or not (report.files or report.skipped):
        return
    table = Table(box=None, pad_edge=False, show_edge=False)
    for col, just in [("format", "left"), ("messages", "right"), ("skipped", "right"), ("why", "left"),
                      ("file", "left")]:
        table.add_column(col, justify=just, no_wrap=col in ("format", "messages", "skipped"),
                         overflow="fold" if col == "file" else "ellipsis")
    for f in report.files:
        table.add_row(f["format"], f"{f['messages']:,}", f"{f['skipped_records']:,}", escape(f["why"] or "ok"),
                      escape(f["name"]))
    for s in report.skipped:
        table.add_row("-", f"{s.get('messages_kept', 0):,}", "file", "[red]not read (see below)[/red]",
                      escape(s["name"]))
    if not ui.console.is_terminal:
        ui.console.width = max(ui.console.width, 160)
    ui.console.print(table)


def _show_stats(path: Path) -> None:
    st = compute_stats(path)
    table = Table(title=f"{path}: {st.total} messages")
    for col, just in [("source", "left"), ("speaker", "left"), ("role", "left"), ("messages", "right"),
                      ("words", "right"), ("first", "left"), ("last", "left"), ("me share", "right")]:
        table.add_column(col, justify=just, no_wrap=col in ("source", "role", "first", "last", "messages"))
    for src in sorted(st.by_source):
        rows = sorted(st.by_source[src].items(), key=lambda kv: -kv[1].messages)
        share = f"{st.me_share(src):.0%}"
        for i, ((speaker, role), s) in enumerate(rows):
            table.add_row(src if i == 0 else "", speaker, role, f"{s.messages:,}", f"{s.words:,}",
                          (s.first or "")[:10], (s.last or "")[:10], share if i == 0 else "")
        table.add_section()
    if not ui.out.is_terminal:  # piped/captured output: don't squeeze names into 80 columns
        ui.out.width = max(ui.out.width, 120)
    ui.out.print(table)


COMMANDS = [ingest_cmd]
