"""`notme train`: the trainer (issue #6)."""

import click


@click.command("train", context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
def train_cmd():
    """Not built yet: the trainer (issue #6).

    \b
    Example:
      notme train recipes/quickstart.yaml --set lora.rank=32
    """
    from . import not_implemented

    not_implemented("the trainer (issue #6)")


COMMANDS = [train_cmd]
