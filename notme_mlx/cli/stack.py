"""`notme stack`: the layer stack (issue #7)."""

import click


@click.command("stack", context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
def stack_cmd():
    """Not built yet: the layer stack (issue #7).

    \b
    Example:
      notme stack show stacks/genesis.yaml
    """
    from . import not_implemented

    not_implemented("the layer stack (issue #7)")


COMMANDS = [stack_cmd]
