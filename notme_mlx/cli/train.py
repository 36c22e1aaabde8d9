"""`notme train RECIPE [--resume] [--set key=value ...]`: the trainer."""

from __future__ import annotations

import click

from .. import stack  # noqa: F401  (registers the loader of recipes with `stack:`)
from .. import ui
from ..recipe import dump_recipe, load_recipe
from ..synth import phase  # noqa: F401  (registers the grpo phase type)
from ..train.trainer import train


@click.command("train")
@click.argument("recipe", type=click.Path(dir_okay=False))
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a recipe field (repeatable), e.g. --set lora.rank=32 --set phases.1.penalty_weight=5.")
@click.option("--resume", is_flag=True, help="Continue from the newest checkpoint in runs/<name>/checkpoints/.")
@click.option("--force", is_flag=True, help="Start over even if runs/<name>/ has checkpoints (deletes them).")
@click.option("--check", is_flag=True, help="Validate the recipe, print the resolved YAML and exit.")
def train_cmd(recipe, overrides, resume, force, check):
    """Train LoRA adapters as RECIPE says (YAML; see docs/train.md for every field).

    Precedence: --set > the recipe (and its `base:` chain) > defaults. Writes
    runs/<name>/ with recipe.yaml, metrics.jsonl, checkpoints/step-N/, phases/<phase>/
    and adapters/ (mlx-lm layout). Ctrl-C saves a checkpoint; --resume continues it.

    \b
    Examples:
      notme train recipes/default.yaml
      notme train recipes/quickstart.yaml --set lora.rank=32 --set max_steps=200
      notme train recipes/default.yaml --resume
      notme train recipes/mac.yaml --check
    """
    r = load_recipe(recipe, list(overrides))
    if check:
        ui.out.print(dump_recipe(r), end="", markup=False, highlight=False, soft_wrap=True)
        return

    res = train(r, resume=resume, force=force)
    ui.info(f"[green]done[/green]: {res.steps} steps ({res.skipped} skipped), "
            f"{res.trainable_params:,} trainable parameters")
    for p in res.phases:
        v = p.get("val")
        val = f", val ce {v['val_ce']:.4f} pen {v['val_ul']:.4f}" if v else ""
        ui.info(f"  phase {p['name']} ({p['type']}): {p['steps']} steps{val} -> {p.get('adapter_dir', '-')}")
    ui.info(f"  adapters: {res.adapter_dir}\n  metrics:  {res.run_dir}/metrics.jsonl\n"
            f"  try it:   mlx_lm.generate --model {r.model} --adapter-path {res.adapter_dir} --prompt 'hi'")


COMMANDS = [train_cmd]
