"""The detector settings every command that detects shares: `--engine` and `--recipe` (its
`detect:` section: engine, extra cues, extra lexicon), read through `notme_mlx.recipe`."""

from __future__ import annotations

import click

from ..detect import ENGINES, detector_from
from ..recipe import DetectConfig, load_recipe

def detector_options(fn):
    """Add --engine and --recipe to a click command."""
    fn = click.option("--recipe", "detect_recipe", type=click.Path(dir_okay=False),
                      help="Recipe YAML whose detect: section (engine, extra_cues, extra_yaml) sets the detector.")(fn)
    return click.option("--engine", type=click.Choice(list(ENGINES)), default=None,
                        help="Detector engine: lexicon (YAML cues), learned (sentence classifier) or both "
                             "(default: the recipe's detect.engine, else both).")(fn)


def command_detector(detect_recipe: str | None, engine: str | None):
    """The detector for a command's --recipe / --engine."""
    return detector_from(load_recipe(detect_recipe).detect if detect_recipe else DetectConfig(), engine)
