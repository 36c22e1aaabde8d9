"""`notme ingest`: ingest (issue #4)."""

import click


@click.command("ingest", context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
def ingest_cmd():
    """Not built yet: ingest (issue #4).

    \b
    Example:
      notme ingest ~/Downloads/chatgpt-export.zip -o messages.jsonl --me Alex
    """
    from . import not_implemented

    not_implemented("ingest (issue #4)")


COMMANDS = [ingest_cmd]
