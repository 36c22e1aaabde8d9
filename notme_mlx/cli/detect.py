"""`notme detect`: the detector (issue #5)."""

import click


@click.command("detect", context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
def detect_cmd():
    """Not built yet: the detector (issue #5).

    \b
    Example:
      notme detect --text 'Does that make sense?'
    """
    from . import not_implemented

    not_implemented("the detector (issue #5)")


COMMANDS = [detect_cmd]
