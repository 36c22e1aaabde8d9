"""`notme detect`: flag validation-seeking in text, evaluate the detector, rates over messages."""

from __future__ import annotations

import contextlib
import json
import sys

import click
from rich.table import Table
from rich.text import Text

from .. import ui
from ..detect import DEFAULT_ENGINE, ENGINES, get_detector
from ..detect.evaluate import detection_stats, evaluate, load_eval_set
from ..detect.learned import save_model, shipped_weights_dir
from ..detect.parallel import detect_many
from ..detect.training import load_additions, train_model
from ..errors import InputError, NotmeError
from ..io import read_jsonl


def _records(path: str | None, texts: tuple, field: str):
    """Yield (text, n_total_or_None) from --text values, a file or stdin (plain lines or JSONL)."""
    if texts:
        for t in texts:
            yield t
        return
    f = sys.stdin if path in (None, "-") else open(path, encoding="utf-8")
    try:
        for i, line in enumerate(f, 1):
            line = line.rstrip("\n")
            if not line.strip():
                continue
            if line.lstrip().startswith("{"):
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as e:
                    raise InputError(f"{path or '<stdin>'}:{i}: invalid JSON ({e.msg}); "
                                     "give plain text lines or one JSON object per line") from None
                if not isinstance(obj.get(field), str):
                    raise InputError(f"{path or '<stdin>'}:{i}: no string field {field!r} (use --field NAME)")
                yield obj[field]
            else:
                yield line
    finally:
        if f is not sys.stdin:
            f.close()


def _count_lines(path: str) -> int:
    with open(path, "rb") as f:
        return sum(1 for line in f if line.strip())


def _highlight(text: str, spans):
    colors = {"permission_seeking": "bold magenta", "confirmation_seeking": "bold yellow",
              "approval_seeking": "bold cyan", "hedging": "bold blue", "sycophancy": "bold red"}
    t = Text(text)
    for s in spans:
        t.stylize(colors.get(s.category, "bold red") + " underline", s.start, s.end)
    return t


def _print_eval(res: dict, show_errors: int) -> None:
    tab = Table(title=f"detector eval: {res['n']} texts")
    for col in ("category", "precision", "recall", "f1", "support", "tp", "fp", "fn"):
        tab.add_column(col, justify="left" if col == "category" else "right")
    rows = list(res["categories"].items()) + [("micro (categories)", res["micro"]), ("overall (flagged)", res["overall"])]
    for name, m in rows:
        tab.add_row(name, f"{m['precision']:.3f}", f"{m['recall']:.3f}", f"{m['f1']:.3f}", str(m["support"]),
                    str(m["tp"]), str(m["fp"]), str(m["fn"]))
    ui.out.print(tab)
    color = "green" if res["flagged_refusals"] == 0 else "red"
    ui.out.print(f"flagged refusals: [{color}]{res['flagged_refusals']}[/{color}] of {res['n_refusals']}")
    for e in res["errors"][:show_errors]:
        ui.out.print(f"[dim]miss:[/dim] expected {e['expected']} got {e['predicted']}: {e['text']!r}", markup=True,
                     highlight=False)


def _print_stats(st: dict) -> None:
    ui.out.print(f"{st['n']} text messages, {st['flagged']} flagged ({st['flagged'] / max(st['n'], 1):.1%})")
    for key, title in (("by_source", "source"), ("by_speaker", "speaker"), ("by_role", "role")):
        tab = Table(title=f"rate by {title}")
        tab.add_column(title)
        tab.add_column("messages", justify="right")
        tab.add_column("flagged", justify="right")
        tab.add_column("rate", justify="right")
        for k, (n, f) in sorted(st[key].items(), key=lambda kv: -kv[1][0])[:30]:
            tab.add_row(k, str(n), str(f), f"{f / max(n, 1):.1%}")
        ui.out.print(tab)
    tab = Table(title="by category")
    for c in ("category", "messages", "rate", "spans"):
        tab.add_column(c, justify="left" if c == "category" else "right")
    for c, n in sorted(st["messages_with_category"].items(), key=lambda kv: -kv[1]):
        tab.add_row(c, str(n), f"{n / max(st['n'], 1):.1%}", str(st["by_category"].get(c, 0)))
    ui.out.print(tab)


class _DetectCommand(click.Command):
    """`notme detect ...`, with `notme detect train ...` dispatched to the training command."""

    def make_context(self, info_name, args, parent=None, **extra):
        if args and args[0] == "train":
            return train_cmd.make_context(f"{info_name} train", list(args[1:]), parent=parent, **extra)
        return super().make_context(info_name, args, parent=parent, **extra)


engine_option = click.option("--engine", type=click.Choice(ENGINES), default=DEFAULT_ENGINE, show_default=True,
                       help="lexicon (YAML cues), learned (sentence classifier) or both.")


@click.command("train")
@click.option("-o", "--out", "out_dir", default=None, metavar="DIR",
              help="Write learned.json + learned.safetensors here (default: the package's shipped weights).")
@click.option("--seed", default=0, show_default=True, help="Corpus, split and training seed.")
@click.option("--add", "add_paths", multiple=True, metavar="FILE",
              help="Your own phrasings (repeatable): JSONL {text, categories}, correction pairs "
                   "{prompt, chosen, rejected}, or a YAML with detect.extra_cues.")
@click.option("--holdout", is_flag=True, help="Fit on the train families only (the family-held-out evaluation).")
def train_cmd(out_dir, seed, add_paths, holdout):
    """Train the learned detector stage from the bundled corpus (seeded, deterministic).

    \b
    Examples:
      notme detect train -o my_detector --add my_phrasings.jsonl --add corrections.jsonl
      notme detect --engine both --weights my_detector messages.jsonl
    """
    if out_dir is None and (add_paths or holdout):
        raise InputError("--add/--holdout train a model of your own: give -o DIR (the shipped model stays the default)")
    adds = [r for p in add_paths for r in load_additions(p)]
    ui.info(f"training the learned detector (seed {seed}{', train families only' if holdout else ''}, "
            f"{len(adds)} added rows)")
    model, info = train_model(seed, holdout=holdout, additions=adds)
    folder = out_dir or shipped_weights_dir()
    man = save_model(model, folder, meta={"seed": seed, "holdout": holdout, "additions": len(adds),
                                          "train_units": info["train_units"]})
    ui.info(f"[green]wrote[/green] {folder}: {info['train_units']} training units ({len(adds)} added rows), "
            f"temperature {model.temperature:.3f}, threshold {model.threshold:.2f}, sha256 {man['sha256'][:12]}")


@click.command("detect", cls=_DetectCommand)
@click.argument("input", required=False, metavar="[FILE|-]")
@click.option("--text", "texts", multiple=True, help="Text to check (repeatable) instead of FILE.")
@click.option("--field", default="text", show_default=True, help="Field holding the text in JSONL input.")
@click.option("--format", "fmt", type=click.Choice(["jsonl", "table"]), default="jsonl", show_default=True)
@click.option("--stats", "stats_path", metavar="MESSAGES.jsonl", help="Rates per source/speaker/role/category.")
@click.option("--eval", "eval_path", metavar="FILE", help="Precision/recall on a labelled JSONL set.")
@click.option("--extra", "extra_yaml", metavar="YAML", help="Extra lexicon merged into the bundled one.")
@click.option("--show-errors", default=0, show_default=True, help="With --eval: print this many misses.")
@click.option("--json", "as_json", is_flag=True, help="With --eval/--stats: print the result as JSON.")
@click.option("--workers", type=int, default=1, show_default=True, help="Detector processes for FILE input.")
@engine_option
@click.option("--weights", metavar="DIR", default=None, help="Learned-stage weights from `notme detect train -o DIR`.")
@click.option("--check", is_flag=True, help="With --eval: exit 1 unless overall precision >= 0.95, recall >= 0.90 "
                                            "and no refusal is flagged.")
def detect_cmd(input, texts, field, fmt, stats_path, eval_path, extra_yaml, show_errors, as_json, workers, engine, weights,
               check):
    """Flag validation-seeking (permission/confirmation/approval seeking, hedging, sycophancy).

    Reads plain text lines or JSONL records (text in --field) from FILE or stdin and prints one
    JSON object per input line: {"text", "flagged", "score", "spans": [{"start","end","category","cue"}]}.

    \b
    Examples:
      notme detect --text 'Great question! Does that make sense?'
      notme detect messages.jsonl --format table
      notme detect --eval tests/data/detector_eval.jsonl
      notme detect --stats messages.jsonl
      notme detect --engine lexicon --text 'hope this helps'
      notme detect train -o my_detector --add my_phrasings.jsonl    (see `notme detect train --help`)
    """
    det = get_detector(engine, extra_yaml=extra_yaml, weights=weights)
    if eval_path:
        res = evaluate(det, load_eval_set(eval_path))
        if as_json:
            ui.out.file.write(json.dumps({k: v for k, v in res.items() if k != "errors"}, indent=2) + "\n")
        else:
            _print_eval(res, show_errors)
        ov = res["overall"]
        if check and not (ov["precision"] >= 0.95 and ov["recall"] >= 0.90 and res["flagged_refusals"] == 0):
            raise NotmeError(f"{eval_path}: targets missed: precision {ov['precision']:.3f} (>= 0.95), recall "
                             f"{ov['recall']:.3f} (>= 0.90), flagged refusals {res['flagged_refusals']} (0)")
        return
    if stats_path:
        with ui.progress("detect", total=_count_lines(stats_path), unit="msg") as task:
            st = detection_stats(det, read_jsonl(stats_path), progress=task)
        if as_json:
            ui.out.file.write(json.dumps(st, indent=2) + "\n")
        else:
            _print_stats(st)
        return
    if not texts and input is None and sys.stdin.isatty():
        raise InputError("no input: give FILE, '-' for stdin, or --text TEXT")
    total = _count_lines(input) if input not in (None, "-") and not texts else (len(texts) or None)
    table = None
    if fmt == "table":
        table = Table(show_lines=True)
        for c in ("#", "score", "categories", "text"):
            table.add_column(c, justify="right" if c in ("#", "score") else "left")
    w = ui.out.file
    bar = ui.progress("detect", total=total, unit="msg") if not texts else contextlib.nullcontext(None)
    def batches(it, n=8192):
        buf = []
        for x in it:
            buf.append(x)
            if len(buf) == n:
                yield buf
                buf = []
        if buf:
            yield buf

    i = 0
    with bar as task:
        for batch in batches(_records(input, texts, field)):
            for t, d in zip(batch, detect_many(det, batch, workers=workers)):
                i += 1
                if table is not None:
                    table.add_row(str(i), f"{d.score:.2f}", ", ".join(d.categories) if d.flagged else "",
                                  _highlight(t, d.spans))
                else:
                    w.write(json.dumps({"text": t, **d.to_dict()}, ensure_ascii=False) + "\n")
            if task is not None:
                task.advance(len(batch))
    if table is not None:
        ui.out.print(table)


COMMANDS = [detect_cmd]
