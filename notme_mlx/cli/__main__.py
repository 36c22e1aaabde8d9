"""`python -m notme_mlx.cli` runs the `notme` command (where no console script is installed)."""

from . import main

main(prog_name="notme")
