"""The `notme` command: one click group; each area registers its commands.

The CLI is thin: a command parses, calls one library function and renders the
result through `notme_mlx.ui`. A `NotmeError` becomes one red line and a
non-zero exit code.
"""

from __future__ import annotations

import sys

import click

from .. import __version__
from ..errors import NotmeError
from ..ui import error
from . import bench, chat, cluster, correct, data, detect, eval, export, ingest, model, quickstart, stack, train

# One module per area; each defines COMMANDS, a list of click commands/groups (listed in `notme -h` order).
AREAS = [quickstart, ingest, data, detect, train, eval, export, stack, chat, model, cluster, bench, correct]


class _Group(click.Group):
    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except NotmeError as e:
            error(str(e))
            sys.exit(e.exit_code)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="notme")
def main():
    """notme: train a model to write and think like you; validation-seeking is the only error.

    \b
    Typical flow:
      notme ingest ~/exports -o messages.jsonl --me "Alex"
      notme data build messages.jsonl -o data/
      notme train recipes/quickstart.yaml
      notme eval --model smollm2-135m --adapters runs/quickstart/adapters --out report/
    """


for _area in AREAS:
    for _cmd in _area.COMMANDS:
        main.add_command(_cmd)
