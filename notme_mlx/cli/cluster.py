"""`notme cluster`: the cluster (issue #10)."""

import click


@click.command("cluster", context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
def cluster_cmd():
    """Not built yet: the cluster (issue #10).

    \b
    Example:
      notme cluster plan --layers 80 --exo-state cluster/fixtures/exo_state_4x_studio.json
    """
    from . import not_implemented

    not_implemented("the cluster (issue #10)")


COMMANDS = [cluster_cmd]
