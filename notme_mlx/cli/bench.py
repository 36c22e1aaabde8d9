"""`notme bench`: tokens/s and peak memory vs mlx-lm's LoRA trainer on the same data, one process per run."""

from __future__ import annotations

import json

import click

from .. import ui
from ..bench.compare import SIDES, compare, model_args
from ..bench.data import equal_length_examples
from ..bench.report import compare_table, machine_line
from ..bench.runners import Settings
from ..bench.suite import DEFAULT_MODEL, load_examples, resolve_model, tokenizer
from ..errors import InputError
from ..io import atomic_write_text
from ..models import default_dequantize


@click.command("bench")
@click.option("--model", "model", default=None,
              help=f"model spec (registry name, mlx-lm dir, .gguf) or preset bench-s / bench-xs [{DEFAULT_MODEL}]")
@click.option("--data", "data", default=None, type=click.Path(), help="folder with train.jsonl (notme data build)")
@click.option("--synthetic", is_flag=True, help="synthetic chat-like data (the default when --data is not given)")
@click.option("--compare", "compare_with", default="mlx-lm", type=click.Choice(["mlx-lm", "none"]),
              help="the other trainer [mlx-lm]")
@click.option("--steps", default=None, type=int, help="measured steps per run [6; --quick 3]")
@click.option("--warmup", default=None, type=int, help="unmeasured first steps per run (compilation) [2; --quick 1]")
@click.option("--batch", default=4, show_default=True, help="rows per step (mlx-lm; ours too without --batch-tokens)")
@click.option("--batch-tokens", default=None, type=int, help="ours: about this many token positions per step")
@click.option("--batching", default="pack", show_default=True, type=click.Choice(["pack", "bucket"]),
              help="ours: packed rows (block-diagonal mask) or length buckets")
@click.option("--seq", default=256, show_default=True, help="sequence cap (tokens per example)")
@click.option("--rank", default=8, show_default=True, help="LoRA rank (alpha = 2 x rank), all 7 projections, all layers")
@click.option("--grad-checkpoint", is_flag=True, help="per-layer gradient checkpointing on both sides")
@click.option("--repeat", default=None, type=int, help="runs per side, alternating, each in a fresh process [5; --quick 3]")
@click.option("--parallel", default=1, show_default=True,
              help="run up to this many sides of a repeat at once (same load on each; see docs/bench.md)")
@click.option("--examples", "n_examples", default=400, show_default=True)
@click.option("--dequantize/--no-dequantize", default=None,
              help="load quantized weights as float32 dense (default: as `notme train`, dense on CPU)")
@click.option("--base-dtype", type=click.Choice(["auto", "float32", "float16", "bfloat16"]), default="auto",
              show_default=True, help="ours: how the dequantized base's block linears are stored (auto: as `notme "
              "train`; computed in float32 either way; mlx-lm's side loads float32)")
@click.option("--equal-length", is_flag=True, help="rows of exactly --seq tokens, all learned (core-step check)")
@click.option("--no-penalty-off", is_flag=True, help="skip the penalty-off run of our trainer")
@click.option("--json", "json_path", default=None, type=click.Path(), help="write the full result (every run) here")
@click.option("--quick", is_flag=True, help="fewer steps and repeats")
def bench_cmd(model, data, synthetic, compare_with, steps, warmup, batch, batch_tokens, batching, seq, rank,
              grad_checkpoint, repeat, parallel, n_examples, dequantize, base_dtype, equal_length, no_penalty_off,
              json_path, quick):
    """Train a few steps with notme's trainer and mlx-lm's on the same model and examples.

    Every run is a fresh process (model loaded as `notme train` loads it); sides alternate
    --repeat times. Same LoRA (rank, targets, layers), AdamW, learning rate, sequence cap and
    examples. Reports median and spread of real (non-pad) tokens/s and tokens per CPU second,
    per-process MLX peak memory and max RSS, padding, MFU against a GEMM measured in this run,
    ours/mlx-lm ratios and the penalty's cost.

    \b
    Example:
      notme bench --quick --json bench.json
      notme bench --data data/ --batch-tokens 1024 --json bench.json
    """
    if data and synthetic:
        raise InputError("--data and --synthetic: pick one")
    steps = steps if steps is not None else (3 if quick else 6)
    warmup = warmup if warmup is not None else (1 if quick else 2)
    repeat = repeat if repeat is not None else (3 if quick else 5)
    path = resolve_model(model)
    if equal_length:
        examples = equal_length_examples(max(n_examples // 4, batch * (steps + warmup)), seq,
                                         model_args(path).vocab_size)
    else:
        examples = load_examples(tokenizer(path), data, seq, n_examples)
    sides = tuple(x for x in SIDES if not (x == "mlx-lm" and compare_with == "none")
                  and not (x == "ours_penalty_off" and (no_penalty_off or equal_length)))
    s = Settings(batch=batch, seq=seq, rank=rank, alpha=2.0 * rank, steps=steps, warmup=warmup,
                 batching=batching, batch_tokens=batch_tokens, grad_checkpoint=grad_checkpoint)
    if dequantize is False and default_dequantize():  # a CPU (on Metal the quantized kernels are the fast path)
        ui.warn("--no-dequantize on the CPU: our adapted layers run as BLAS GEMMs on weights dequantized on the "
                "fly, but layers without an adapter and all of mlx-lm's side use MLX's CPU quantized matmul "
                "(~14x slower per layer); `notme train` dequantizes here")
    ui.info(f"model {path}; {len(examples)} examples; {repeat} x {len(sides)} runs of {warmup}+{steps} steps, "
            "one process each")
    with ui.progress("bench runs", total=repeat * len(sides), unit="runs") as bar:
        def on_run(side, r, summ):
            ui.info(f"repeat {r + 1} {side}: {summ['tokens_per_sec']:.1f} tok/s, "
                    f"{summ['tokens_per_cpu_sec']:.1f} tok/CPU-s, step {summ['median_step_s']:.2f} s, "
                    f"MLX peak {summ['peak_memory'] / 2**20:.0f} MiB, max RSS {summ['max_rss'] / 2**20:.0f} MiB")
            bar.advance(1)

        res = compare(path, examples, s, repeat=repeat, sides=sides, on_run=on_run, dequantize=dequantize,
                      parallel=parallel, base_dtype=base_dtype)
    res["data"]["kind"] = "equal-length" if equal_length else (f"file {data}" if data else "synthetic chat-like")
    ui.out.print(machine_line(res["machine"]), soft_wrap=True, markup=False)
    ui.out.print(compare_table(res), soft_wrap=True, markup=False)
    if json_path:
        atomic_write_text(json_path, json.dumps(res, indent=2, default=str))
        ui.info(f"wrote {json_path}")


COMMANDS = [bench_cmd]
