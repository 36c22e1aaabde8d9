"""`notme ingest`: exports -> messages.jsonl (issue #4), and `--stats` on a messages.jsonl."""

from __future__ import annotations

import json
from pathlib import Path

import click

from ..ingest.registry import FORMATS as _REGISTRY

_FORMATS = ["auto", *_REGISTRY]


@click.command("ingest")
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
@click.option("-o", "--out", type=click.Path(path_type=Path), help="Output messages.jsonl (written atomically, 0600).")
@click.option("--format", "fmt", type=click.Choice(_FORMATS), default="auto", show_default=True,
              help="Force a format for the named files (auto = detect from content).")
@click.option("--me", multiple=True, help="Your name as it appears in chats (repeatable).")
@click.option("--identity", type=click.Path(path_type=Path),
              help="identity.yaml with names/handles/phones/emails (default ~/.config/notme/identity.yaml).")
@click.option("--skip-bad", is_flag=True, help="Skip files that fail to parse; list them in a summary.")
@click.option("--since", help="Keep messages on/after this date (2024-01-31 or ISO time, UTC).")
@click.option("--until", help="Keep messages up to this date (a date includes that whole day).")
@click.option("--sidechains", is_flag=True, help="Keep Claude Code sidechain (sub-agent) messages.")
@click.option("--tools", is_flag=True, help="Keep tool calls/results as kind=tool records.")
@click.option("--tz", default="UTC", show_default=True, help="Zone of zone-less local times (WhatsApp), e.g. Europe/Berlin.")
@click.option("--scrub", is_flag=True, help="Replace emails, phones, secret URLs, cards, IBANs; pseudonymize others.")
@click.option("--stats", "stats_path", type=click.Path(path_type=Path), help="Show a per-source/speaker table of a messages.jsonl.")
def ingest_cmd(paths, out, fmt, me, identity, skip_bad, since, until, sidechains, tools, tz, scrub, stats_path):
    """Turn exports (ChatGPT, Claude, Claude Code, iMessage, WhatsApp, Telegram, JSONL, Markdown)
    into one messages.jsonl. PATH may be a file, a directory (walked) or a .zip (read in place).

    \b
    Examples:
      notme ingest ~/Downloads/chatgpt-export.zip ~/Downloads/WhatsApp\\ Chat.zip -o messages.jsonl --me "Alex Rivera"
      notme ingest ~/.claude/projects -o cc.jsonl
      notme ingest --stats messages.jsonl
    """
    from .. import ui
    from ..errors import ConfigError

    if stats_path is not None:
        _show_stats(stats_path)
        return
    if not paths:
        raise ConfigError("give at least one PATH to ingest (or --stats FILE); see notme ingest --help")
    if out is None:
        raise ConfigError("missing -o/--out FILE (where to write messages.jsonl)")
    if out.is_dir():
        raise ConfigError(f"-o {out}: is a directory; give a file name like {out / 'messages.jsonl'}")
    from ..ingest import ingest_to_file
    from ..io import atomic_write_text

    report = ingest_to_file(paths, out, fmt=fmt, me=me, identity=identity, skip_bad=skip_bad, since=since,
                            until=until, sidechains=sidechains, tools=tools, tz=tz, scrub=scrub)
    for f in report.files:
        ui.info(f"  {f['format']:<12} {f['messages']:>7} messages  {f['name']}")
    if report.duplicates:
        ui.info(f"  skipped {len(report.duplicates)} duplicate input(s) (same bytes as an earlier one, e.g. "
                f"{report.duplicates[0]})")
    if report.unrecognized:
        ui.info(f"  ignored {len(report.unrecognized)} file(s) of no known format (e.g. {report.unrecognized[0]})")
    if report.skipped:
        rep_path = Path(str(out) + ".report.json")
        atomic_write_text(rep_path, json.dumps(report.to_dict(), indent=2, ensure_ascii=False) + "\n")
        ui.warn(f"skipped {len(report.skipped)} bad file(s) (details in {rep_path}):")
        for s in report.skipped:
            ui.console.print(f"  [red]x[/red] {s['reason']}", soft_wrap=True)
    ui.info(f"[green]wrote {report.messages} messages from {len(report.files)} file(s) to {out}[/green]")
    ui.out.print(str(out))


def _show_stats(path: Path) -> None:
    from rich.table import Table

    from .. import ui
    from ..ingest import compute_stats

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
