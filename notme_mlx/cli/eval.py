"""`notme eval`: evaluation report."""

from __future__ import annotations

import click
from rich.table import Table

from .. import ui
from ..errors import InputError
from ..eval.report import compare, summary_rows, write_report
from ..eval.runner import generation_count, is_report_dir, prompt_sets, run_eval
from .detector_options import command_detector, detector_options


def _render(report: dict, title: str) -> None:
    t = Table(title=title)
    for c in ("metric", "before", "after", "change"):
        t.add_column(c)
    for r in summary_rows(report):
        style = {True: "green", False: "red", None: ""}[r["better"]]
        t.add_row(r["label"], r["before"], r["after"], f"[{style}]{r['change']}[/{style}]" if style else r["change"])
    ui.out.print(t)
    for w in report.get("warnings", []):
        ui.console.print(f"[bold red]WARNING:[/bold red] [red]{w}[/red]")


@click.command("eval")
@click.option("--model", "model", help="Model spec: registry name, mlx-lm dir, .gguf (optional with --stack).")
@click.option("--stack", type=click.Path(), help="Stack YAML: base + adapter layers to evaluate.")
@click.option("--adapters", type=click.Path(), help="Adapter folder (adapters.safetensors + adapter_config.json).")
@click.option("--baseline", help="Baseline: model spec, stack YAML or a report folder (default: the base alone).")
@click.option("--no-baseline", is_flag=True, help="Evaluate only the model, no before/after.")
@click.option("--data", "data_dir", type=click.Path(), help="Folder with test.jsonl (voice fidelity on held-out messages).")
@click.option("--prompts", "prompts_dir", type=click.Path(), help="Folder of <set>.txt files replacing shipped prompt sets.")
@click.option("--out", "out_dir", type=click.Path(), help="Write report.json/.md/.html and plots/ here.")
@click.option("--max-tokens", type=int, default=None, help="Tokens per reply (default 128; 48 with --quick).")
@click.option("--samples", type=int, default=1, show_default=True, help="Sampled replies per seeking prompt (temp 0.7).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--quick", is_flag=True, help="8 prompts per set, 48 tokens.")
@click.option("--force", is_flag=True, help="Load a stack whose base fingerprint does not match.")
@detector_options
@click.option("--compare", "compare_dirs", nargs=2, type=click.Path(), default=None,
              help="Compare two report folders side by side (A = before, B = after).")
def eval_cmd(model, stack, adapters, baseline, no_baseline, data_dir, prompts_dir, out_dir, max_tokens, samples, seed, quick, force,
             engine, detect_recipe, compare_dirs):
    """Evaluate validation-seeking, over-correction, voice, forgetting and safety; before → after.

    \b
    Examples:
      notme eval --model smollm2-135m --adapters runs/quickstart/adapters --data data/ --out report/
      notme eval --stack stacks/genesis.yaml --quick --out report-quick/
      notme eval --compare report_a/ report_b/
    """
    if compare_dirs:
        rep = compare(*compare_dirs)
        _render(rep, f"{compare_dirs[0]} → {compare_dirs[1]}")
        if out_dir:
            write_report(rep, out_dir)
            ui.info(f"wrote {out_dir}/report.html")
        return
    if model is None and stack is None:
        raise InputError("give --model SPEC (and optionally --adapters DIR or --stack STACK), or --compare A B")
    if adapters is not None and stack is not None:
        raise InputError("--adapters and --stack are exclusive; add the adapter to the stack instead")
    if max_tokens is not None and max_tokens < 1:
        raise InputError(f"--max-tokens {max_tokens}: must be ≥ 1")
    if samples < 0:
        raise InputError(f"--samples {samples}: must be ≥ 0")

    total = generation_count(quick, samples, data_dir, prompt_sets(prompts_dir))
    if (adapters is not None or stack is not None or baseline is not None) and not no_baseline \
            and not is_report_dir(baseline):  # a report folder as baseline is read, not generated
        total *= 2
    with ui.progress("generating", total=total, unit="replies") as bar:
        rep = run_eval(model, adapters=adapters, stack=stack, baseline=baseline, no_baseline=no_baseline,
                       data_dir=data_dir, out_dir=out_dir, prompts_dir=prompts_dir, max_tokens=max_tokens, samples=samples, seed=seed,
                       quick=quick, force=force, progress=bar, detect=command_detector(detect_recipe, engine).detect)
    _render(rep, "notme eval")
    if out_dir:
        ui.info(f"wrote {out_dir}/report.json, report.md, report.html, plots/")


COMMANDS = [eval_cmd]
