"""`notme bench`: tokens/s and peak memory vs mlx-lm's LoRA trainer on the same data (issue #11)."""

from __future__ import annotations

import click


@click.command("bench")
@click.option("--model", "model", default=None, help="preset (bench-s, bench-xs), mlx-lm dir or model spec [bench-s]")
@click.option("--data", "data", default=None, type=click.Path(), help="folder with train.jsonl (notme data build)")
@click.option("--synthetic", is_flag=True, help="synthetic chat-like data (the default when --data is not given)")
@click.option("--compare", "compare_with", default="mlx-lm", type=click.Choice(["mlx-lm", "none"]),
              help="the other trainer [mlx-lm]")
@click.option("--steps", default=None, type=int, help="measured steps per run [8; --quick 4]")
@click.option("--warmup", default=None, type=int, help="unmeasured first steps per run (compilation) [2; --quick 1]")
@click.option("--batch", default=4, show_default=True)
@click.option("--seq", default=256, show_default=True, help="sequence cap (tokens per example)")
@click.option("--rank", default=8, show_default=True, help="LoRA rank (alpha = 2 x rank), all 7 projections, all layers")
@click.option("--repeat", default=3, show_default=True, help="runs per side, alternating")
@click.option("--examples", "n_examples", default=400, show_default=True)
@click.option("--equal-length", is_flag=True, help="rows of exactly --seq tokens, all learned (core-step check)")
@click.option("--no-penalty-off", is_flag=True, help="skip the penalty-off run of our trainer")
@click.option("--json", "json_path", default=None, type=click.Path(), help="write the full result here")
@click.option("--quick", is_flag=True, help="fewer steps: the default comparison in a few minutes")
def bench_cmd(model, data, synthetic, compare_with, steps, warmup, batch, seq, rank, repeat, n_examples,
              equal_length, no_penalty_off, json_path, quick):
    """Train a few steps with notme's trainer and mlx-lm's on the same model and examples.

    Same LoRA (rank, targets, layers), AdamW, learning rate and sequence cap; the sides
    alternate --repeat times. Reports real (non-pad) tokens/s, supervised tokens/s, median
    step time, peak memory, padding, and ours/mlx-lm ratios; the penalty's cost.

    \b
    Example:
      notme bench --quick
      notme bench --data data/ --seq 512 --json bench.json
    """
    import json

    from .. import ui
    from ..bench.compare import SIDES, compare
    from ..bench.data import equal_length_examples
    from ..bench.report import compare_table, machine_line
    from ..bench.runners import Settings, load
    from ..bench.suite import load_examples, resolve_model
    from ..errors import InputError
    from ..io import atomic_write_text

    if data and synthetic:
        raise InputError("--data and --synthetic: pick one")
    steps = steps if steps is not None else (4 if quick else 8)
    warmup = warmup if warmup is not None else (1 if quick else 2)
    path = resolve_model(model)
    m, tok = load(path)
    if equal_length:
        examples = equal_length_examples(max(n_examples // 4, batch * (steps + warmup)), seq, m.args.vocab_size)
    else:
        examples = load_examples(tok, data, seq, n_examples)
    del m
    sides = tuple(x for x in SIDES if not (x == "mlx-lm" and compare_with == "none")
                  and not (x == "ours_penalty_off" and (no_penalty_off or equal_length)))
    s = Settings(batch=batch, seq=seq, rank=rank, alpha=2.0 * rank, steps=steps, warmup=warmup)
    ui.info(f"model {path}; {len(examples)} examples; {repeat} x {len(sides)} runs of {warmup}+{steps} steps")
    with ui.progress("bench runs", total=repeat * len(sides), unit="runs") as bar:
        def on_run(side, r, summ):
            ui.info(f"repeat {r + 1} {side}: {summ['tokens_per_sec']:.1f} tok/s, step {summ['median_step_s']:.2f} s, "
                    f"peak {summ['peak_memory'] / 2**20:.0f} MiB")
            bar.advance(1)

        res = compare(path, examples, s, repeat=repeat, sides=sides, on_run=on_run)
    res["data"]["kind"] = "equal-length" if equal_length else ("file" if data else "synthetic chat-like")
    ui.out.print(machine_line(res["machine"]), soft_wrap=True, markup=False)
    ui.out.print(compare_table(res), soft_wrap=True, markup=False)
    if json_path:
        atomic_write_text(json_path, json.dumps(res, indent=2, default=str))
        ui.info(f"wrote {json_path}")


COMMANDS = [bench_cmd]
