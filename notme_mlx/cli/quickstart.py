"""`notme quickstart`: the whole pipeline on the bundled samples."""

from __future__ import annotations

from pathlib import Path

import click

from .. import ui
from ..pipelines import quickstart
from ..resources import bundled_dir


@click.command("quickstart")
@click.option("--workdir", type=click.Path(path_type=Path), default=Path("runs/quickstart"), show_default=True,
              help="Where messages.jsonl, data/, train/ (the run) and quickstart_report.json go.")
@click.option("--model", default=None, help="Base model (default: recipes/quickstart.yaml's, smollm2-135m).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a field of recipes/quickstart.yaml, e.g. --set phases.1.max_steps=40.")
@click.option("--prompts", "n_prompts", default=6, show_default=True, help="Prompts for the before/after rate.")
@click.option("--max-new-tokens", default=32, show_default=True, help="Tokens generated per prompt.")
@click.option("--no-eval", is_flag=True, help="Skip the before/after generation.")
@click.option("--force", is_flag=True, help="Use a --workdir that exists and was not made by quickstart.")
def quickstart_cmd(workdir, model, overrides, n_prompts, max_new_tokens, no_eval, force):
    """Ingest the bundled samples (fictional "Alex Rivera"), build the dataset, train two phases
    (learn, then penalize validation-seeking), and compare the validation-seeking rate of greedy
    replies to held-out prompts before and after. Sized for minutes on a laptop CPU; a Mac
    (Metal) uses longer sequences and more steps.

    \b
    Examples:
      notme quickstart
      notme quickstart --workdir /tmp/qs --set phases.1.max_steps=40 --force
      make quickstart
    """
    r = quickstart(workdir, model=model, overrides=list(overrides), force=force, n_prompts=n_prompts,
                   max_new_tokens=max_new_tokens, skip_eval=no_eval)
    ui.info("")
    if r.before and r.after:
        ui.info(f"validation-seeking rate on {r.after['n']} prompts ({r.after.get('prompt_set', '?')}): "
                f"[bold]{r.before['rate']:.0%}[/bold] before -> [bold]{r.after['rate']:.0%}[/bold] after")
    for p in r.train.get("phases", []):
        v = p.get("val") or {}
        ui.info(f"  phase {p['name']}: {p['steps']} steps, val CE {v.get('val_ce', float('nan')):.3f}, "
                f"val penalty {v.get('val_ul', float('nan')):.4f}")
    t = r.timings
    recipes = bundled_dir("recipes")
    ui.info(f"time: {t['total']:.0f} s (train {t['train']:.0f} s, eval {t['eval_before'] + t['eval_after']:.0f} s)")
    ui.console.print(f"""
[bold]where things are[/bold]
  messages   {r.messages}
  dataset    {r.data_dir}/  (build_report.json explains every filter)
  run        {r.run_dir}/  (metrics.jsonl, checkpoints/, phases/)
  adapters   {r.adapter_dir}/  (mlx-lm layout)
  report     {r.workdir}/quickstart_report.json
[bold]next[/bold]
  notme train {recipes / "default.yaml"}    # your own data: notme ingest + notme data build first
  notme train {recipes / "quickstart.yaml"} --set data.train={r.data_dir}/train.jsonl --set data.valid={r.data_dir}/valid.jsonl --set phases.0.max_steps=50
  mlx_lm.generate --model {r.model} --adapter-path {r.adapter_dir} --prompt "How's the parser going?"
""", soft_wrap=True)


COMMANDS = [quickstart_cmd]
