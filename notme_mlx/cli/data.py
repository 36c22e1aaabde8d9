"""`notme data`: the dataset builder (issue #5)."""

import click


@click.command("data", context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
def data_cmd():
    """Not built yet: the dataset builder (issue #5).

    \b
    Example:
      notme data build messages.jsonl -o data/
    """
    from . import not_implemented

    not_implemented("the dataset builder (issue #5)")


COMMANDS = [data_cmd]
