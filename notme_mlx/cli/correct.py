"""`notme correct`: the correction loop (issue #12)."""

import click


@click.command("correct", context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
def correct_cmd():
    """Not built yet: the correction loop (issue #12).

    \b
    Example:
      notme correct --model smollm2-135m --stack stacks/genesis.yaml
    """
    from . import not_implemented

    not_implemented("the correction loop (issue #12)")


COMMANDS = [correct_cmd]
