"""`notme model`: model loading (issue #3)."""

import click


@click.command("model", context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
def model_cmd():
    """Not built yet: model loading (issue #3).

    \b
    Example:
      notme model info smollm2-135m
    """
    from . import not_implemented

    not_implemented("model loading (issue #3)")


COMMANDS = [model_cmd]
