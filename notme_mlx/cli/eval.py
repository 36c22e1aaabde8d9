"""`notme eval`: evaluation (issue #8)."""

import click


@click.command("eval", context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
def eval_cmd():
    """Not built yet: evaluation (issue #8).

    \b
    Example:
      notme eval --model smollm2-135m --adapters runs/quickstart/adapters --out report/
    """
    from . import not_implemented

    not_implemented("evaluation (issue #8)")


COMMANDS = [eval_cmd]
