"""Files notme ships: the recipes and stacks users read and copy.

The top-level `recipes/` and `stacks/` folders of the source tree are where users find them;
a wheel carries copies under `notme_mlx/bundled/` (setup.py copies them at build time). This
module is the one place that knows both: it returns the wheel's copy, found with
`importlib.resources`, and falls back to the source tree's folder when running from a checkout
(an editable install or `PYTHONPATH`).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from .errors import NotmeError

BUNDLED = ("recipes", "stacks")


def bundled_dir(kind: str) -> Path:
    """The folder of shipped `kind` files ("recipes" or "stacks")."""
    if kind not in BUNDLED:
        raise ValueError(f"unknown bundled folder {kind!r}; expected one of {BUNDLED}")
    wheel_copy = Path(str(resources.files("notme_mlx").joinpath("bundled", kind)))
    if wheel_copy.is_dir():
        return wheel_copy
    return Path(__file__).resolve().parents[1] / kind


def bundled_file(kind: str, name: str) -> Path:
    """One shipped file, e.g. `bundled_file("recipes", "quickstart.yaml")`; a missing one is a NotmeError."""
    path = bundled_dir(kind) / name
    if not path.is_file():
        raise NotmeError(f"{path}: shipped {kind[:-1]} {name!r} is missing (a broken install? reinstall notme-mlx)")
    return path
