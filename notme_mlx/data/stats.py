"""`notme data stats` numbers, and the colored per-token label dump of `notme data build --debug`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from rich.text import Text

from ..errors import InputError
from ..io import read_jsonl
from ..models import load_model
from .labels import hf_tokenizer, tokenize_example

SPLITS = ("train", "valid", "test")
STYLE = {1: "bold green", 0: "dim", -1: "bold red"}


def load_tokenizer(spec: str):
    """A tokenizer for token-exact lengths and label dumps: an HF/mlx-lm model dir, or any spec
    `notme_mlx.models.load_model` understands."""
    p = Path(spec).expanduser()
    if p.is_dir() and ((p / "tokenizer_config.json").exists() or (p / "tokenizer.json").exists()):
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(str(p))
    _, tok, _ = load_model(spec)
    return tok


def _char_labels(example: dict) -> tuple[int, int, int]:
    """(learn, context, penalize) character counts of one example (no tokenizer needed)."""
    learn = ctx = pen = 0
    for m in example["messages"]:
        n = len(m["content"])
        if m["role"] != "assistant" or m.get("train") is False:
            ctx += n
        elif m.get("train") == "penalize":
            pen += n
        else:
            covered = np.zeros(n, dtype=bool)
            for s in m.get("spans", []):
                if s[2] == "penalize":
                    covered[max(0, s[0]):min(n, s[1])] = True
            p = int(covered.sum())
            pen += p
            learn += n - p
    return learn, ctx, pen


def data_stats(data_dir: str | Path, tokenizer=None, max_seq_len: int | None = None) -> dict:
    """Examples, tokens (or chars) per split, label shares, length histogram, build report counts.

    Returns:
      {"unit": "tokens"|"chars", "splits": {split: {examples, total, learn, context, penalize,
       lengths: [..]}}, "report": build_report.json or {}}
    """
    d = Path(data_dir)
    if not d.is_dir():
        raise InputError(f"{d}: not a folder (expected the output of `notme data build`)")
    present = [s for s in SPLITS if (d / f"{s}.jsonl").exists()]
    if not present:
        raise InputError(f"{d}: no train/valid/test.jsonl found (run `notme data build` first)")
    out: dict = {"unit": "tokens" if tokenizer is not None else "chars", "splits": {}}
    for s in present:
        row = {"examples": 0, "total": 0, "learn": 0, "context": 0, "penalize": 0, "lengths": []}
        for ex in read_jsonl(d / f"{s}.jsonl"):
            row["examples"] += 1
            if tokenizer is not None:
                te = tokenize_example(tokenizer, ex, max_seq_len)
                lab = np.asarray(te.labels)
                l, c, p = int((lab == 1).sum()), int((lab == 0).sum()), int((lab == -1).sum())
            else:
                l, c, p = _char_labels(ex)
            row["learn"] += l
            row["context"] += c
            row["penalize"] += p
            row["total"] += l + c + p
            row["lengths"].append(l + c + p)
        out["splits"][s] = row
    rp = d / "build_report.json"
    out["report"] = json.loads(rp.read_text()) if rp.exists() else {}
    return out


def histogram(lengths: list[int], bins: int = 10) -> list[tuple[int, int, int]]:
    """[(lo, hi, count)] over `bins` equal-width bins (hi exclusive except the last)."""
    if not lengths:
        return []
    counts, edges = np.histogram(np.asarray(lengths), bins=bins)
    return [(int(edges[i]), int(edges[i + 1]), int(counts[i])) for i in range(len(counts))]


def token_dump(tokenizer, example: dict, max_seq_len: int | None = None):
    """A rich Text of the example's tokens colored by label (green learn, dim context, red
    penalize); token boundaries alternate underline so they can be counted."""
    te = tokenize_example(tokenizer, example, max_seq_len)
    hf = hf_tokenizer(tokenizer)
    t = Text()
    for i, (tok, lab) in enumerate(zip(te.tokens, te.labels)):
        piece = hf.decode([tok], skip_special_tokens=False)
        t.append(piece, style=STYLE[lab] + (" underline" if i % 2 else ""))
    return t


def char_dump(example: dict):
    """The same colors at character level, for builds without a tokenizer."""
    t = Text()
    for m in example["messages"]:
        t.append(f"[{m['role']}] ", style="italic cyan")
        if m["role"] != "assistant" or m.get("train") is False:
            t.append(m["content"], style=STYLE[0])
        elif m.get("train") == "penalize":
            t.append(m["content"], style=STYLE[-1])
        else:
            start = len(t)
            t.append(m["content"], style=STYLE[1])
            for s in m.get("spans", []):
                if s[2] == "penalize":
                    t.stylize(STYLE[-1], start + s[0], start + s[1])
        t.append("\n")
    return t
