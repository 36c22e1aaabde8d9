"""`notme quickstart`: the trainer (issue #6)."""

import click


@click.command("quickstart", context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
def quickstart_cmd():
    """Not built yet: the trainer (issue #6).

    \b
    Example:
      notme quickstart
    """
    from . import not_implemented

    not_implemented("the trainer (issue #6)")


COMMANDS = [quickstart_cmd]
