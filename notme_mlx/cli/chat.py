"""`notme chat`: model loading and generation (issue #3)."""

import click


@click.command("chat", context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
def chat_cmd():
    """Not built yet: model loading and generation (issue #3).

    \b
    Example:
      notme chat --model smollm2-135m
    """
    from . import not_implemented

    not_implemented("model loading and generation (issue #3)")


COMMANDS = [chat_cmd]
