"""`notme data`: build the training set from messages, inspect it.

Subcommands are listed in SUBCOMMANDS at the bottom: adding one is a one-line change.
"""

from __future__ import annotations

import time

import click
from rich.table import Table

from .. import ui
from ..data.builder import build_dataset
from ..data.stats import char_dump, data_stats, histogram, load_tokenizer, token_dump
from ..detect import ENGINES, detector_from
from ..io import read_jsonl
from ..recipe import load_recipe
from .data_synth import SYNTH_COMMANDS


@click.group("data")
def data_group():
    """Turn messages.jsonl into labelled training examples, and inspect them.

    \b
    Examples:
      notme data build messages.jsonl -o data/
      notme data build messages.jsonl -o data/ --debug 3 --model ~/models/smollm2
      notme data stats data/
    """


@click.command("build")
@click.argument("messages", type=click.Path(dir_okay=False))
@click.option("-o", "--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Output folder.")
@click.option("--recipe", type=click.Path(dir_okay=False),
              help="Recipe YAML (its build:, data.max_seq_len and detect: settings, base: chain included).")
@click.option("--seed", type=int, help="Split / safety / shuffle seed (default 0).")
@click.option("--max-seq-len", type=int, help="Tokens per example (default 1024, as the trainer; estimated without --model).")
@click.option("--session-gap", help="Silence that starts a new session, e.g. 30m, 2h (default 30m).")
@click.option("--mode", type=click.Choice(["auto", "mirror", "assistant"]), help="Role mapping (default auto).")
@click.option("--safety-fraction", type=float, help="Share of train made of safety replay (default 0.05).")
@click.option("--scrub/--no-scrub", default=None, help="Replace PII with placeholders/pseudonyms first.")
@click.option("--no-penalize", is_flag=True, default=False, help="Do not mark detector spans as penalize.")
@click.option("--model", "model_spec", help="Model dir/spec whose tokenizer gives exact token lengths.")
@click.option("--debug", "debug_n", type=int, default=0, help="Print N train examples as colored tokens.")
@click.option("--workers", type=int, default=None, help="Detector processes (default: auto, 1 for small inputs).")
@click.option("--engine", type=click.Choice(list(ENGINES)), default=None,
              help="Detector engine (default: the recipe's detect.engine, both).")
@click.option("--force", is_flag=True, help="Replace an existing output folder.")
def build_cmd(messages, out_dir, recipe, seed, max_seq_len, session_gap, mode, safety_fraction, scrub, no_penalize,
              model_spec, debug_n, workers, engine, force):
    """Build data/{train,valid,test}.jsonl, pairs.jsonl and build_report.json from Message records.

    Role mapping per conversation (mirror: your turns are the targets; assistant: the AI's turns
    are, with validation-seeking spans marked penalize), sessions split by time gap, context
    left-trimmed, exact + near duplicates removed, split by conversation, safety replay mixed in.

    \b
    Example:
      notme data build messages.jsonl -o data/ --session-gap 45m --seed 1
    """
    flags = {"build.seed": seed, "data.max_seq_len": max_seq_len, "build.session_gap": session_gap,
             "build.mode": mode, "build.safety_fraction": safety_fraction, "build.scrub": scrub,
             "build.penalize": False if no_penalize else None}
    r = load_recipe(recipe, {k: v for k, v in flags.items() if v is not None})
    cfg, det_cfg = r.build, r.detect
    det = detector_from(det_cfg, engine)
    tok = None
    if model_spec:
        tok = load_tokenizer(model_spec)
    t0 = time.perf_counter()
    rep = build_dataset(messages, out_dir, cfg, detector=det, tokenizer=tok, force=force,
                        progress_factory=ui.progress, workers=workers, max_seq_len=r.data.max_seq_len)
    dt = time.perf_counter() - t0
    c = rep["counts"]
    sp = rep["splits"]
    ui.info(f"[green]wrote[/green] {out_dir}: train {sp['train']['examples']} (incl. {rep['safety_replay_examples']} "
            f"safety replay), valid {sp['valid']['examples']}, test {sp['test']['examples']}, "
            f"pairs {rep['pairs']}")
    ui.info(f"{c.get('messages_read', 0)} messages in {dt:.1f}s ({c.get('messages_read', 0) / max(dt, 1e-9):,.0f} msg/s); "
            f"penalize spans {c.get('penalize_spans', 0)}; duplicates removed: exact "
            f"{c.get('dropped_exact_duplicates', 0)}, near {c.get('dropped_near_duplicates', 0)}")
    if debug_n:
        for i, ex in enumerate(read_jsonl(f"{out_dir}/train.jsonl")):
            if i >= debug_n:
                break
            ui.out.rule(f"train[{i}] {ex['meta'].get('source')} {ex['meta'].get('conversation_id', '')}")
            ui.out.print(token_dump(tok, ex, r.data.max_seq_len) if tok is not None else char_dump(ex))
        ui.out.print("[bold green]learn (+1)[/] [dim]context (0)[/] [bold red]penalize (-1)[/]"
                     + ("" if tok is not None else "  (characters; pass --model for tokens)"))


@click.command("stats")
@click.argument("data_dir", type=click.Path(file_okay=False))
@click.option("--model", "model_spec", help="Count tokens with this model's tokenizer (else characters).")
@click.option("--max-seq-len", type=int, default=None, help="Trim like training does (with --model).")
def stats_cmd(data_dir, model_spec, max_seq_len):
    """Examples, tokens per split, label shares, length histogram, sessions per source, filter counts.

    \b
    Example:
      notme data stats data/ --model ~/models/smollm2
    """
    tok = load_tokenizer(model_spec) if model_spec else None
    st = data_stats(data_dir, tok, max_seq_len)
    unit = st["unit"]
    tab = Table(title=f"{data_dir} ({unit})")
    for c in ("split", "examples", unit, "learn", "context", "penalize"):
        tab.add_column(c, justify="left" if c == "split" else "right")
    for s, r in st["splits"].items():
        tot = max(r["total"], 1)
        tab.add_row(s, str(r["examples"]), f"{r['total']:,}", f"{r['learn'] / tot:.1%}", f"{r['context'] / tot:.1%}",
                    f"{r['penalize'] / tot:.2%}")
    ui.out.print(tab)
    lengths = [x for r in st["splits"].values() for x in r["lengths"]]
    hist = histogram(lengths)
    if hist:
        top = max(c for _, _, c in hist) or 1
        h = Table(title=f"example length ({unit})")
        h.add_column("range")
        h.add_column("count", justify="right")
        h.add_column("")
        for lo, hi, c in hist:
            h.add_row(f"{lo:,}-{hi:,}", str(c), "[cyan]" + "█" * round(30 * c / top) + "[/cyan]")
        ui.out.print(h)
    rep = st["report"]
    if rep:
        t = Table(title="sessions per source")
        t.add_column("source")
        t.add_column("sessions", justify="right")
        for k, v in rep.get("sessions_by_source", {}).items():
            t.add_row(k, str(v))
        ui.out.print(t)
        t = Table(title="build counts (filters, dedupe)")
        t.add_column("count")
        t.add_column("value", justify="right")
        for k, v in rep.get("counts", {}).items():
            t.add_row(k, str(v))
        ui.out.print(t)


SUBCOMMANDS = [
    build_cmd,
    stats_cmd,
    *SYNTH_COMMANDS,
]
for _c in SUBCOMMANDS:
    data_group.add_command(_c)

COMMANDS = [data_group]
