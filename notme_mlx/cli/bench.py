"""`notme bench`: benchmarks (issue #11)."""

import click


@click.command("bench", context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
def bench_cmd():
    """Not built yet: benchmarks (issue #11).

    \b
    Example:
      notme bench --quick
    """
    from . import not_implemented

    not_implemented("benchmarks (issue #11)")


COMMANDS = [bench_cmd]
