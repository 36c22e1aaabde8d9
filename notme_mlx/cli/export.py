"""`notme export`: export (issue #9)."""

import click


@click.command("export", context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
def export_cmd():
    """Not built yet: export (issue #9).

    \b
    Example:
      notme export --model smollm2-135m --adapters runs/quickstart/adapters --to gguf --out exports/me
    """
    from . import not_implemented

    not_implemented("export (issue #9)")


COMMANDS = [export_cmd]
