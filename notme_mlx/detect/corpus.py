"""Compositional training corpus for the learned detector stage.

Families (corpus/families.yaml) are ways of building one validation-seeking sentence, or one
kind of hard negative; slots (corpus/slots.yaml) fill their templates. `generate(seed)` expands
every family into messages: a filled template, a register (formal, lower case, texting, no
punctuation, emoji/interjections), a position (alone, after or before a statement). Each
message records the char span of its cue, so `sentence_examples` can label every sentence and
clause the engine will later classify. `split_families(seed)` assigns whole families to
train / valid / test, so test measures constructions the model never saw.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from importlib import resources

import yaml

from ..errors import ConfigError
from .detector import CATEGORIES

LABELS = ("none",) + CATEGORIES
SPLITS = ("train", "valid", "test")
_SLOT = re.compile(r"\{([A-Z]+)\}")

# texting rewrites, applied word-wise (lower case, apostrophes dropped afterwards)
_TEXTING = [(r"\byou're\b", "ur"), (r"\byou\b", "u"), (r"\byour\b", "ur"), (r"\bdon't\b", "dont"),
            (r"\bi'm\b", "im"), (r"\bthat's\b", "thats"), (r"\bokay\b", "ok"), (r"\blet me know\b", "lmk"),
            (r"\bwant to\b", "wanna"), (r"\bgoing to\b", "gonna"), (r"\bthough\b", "tho"), (r"\bplease\b", "pls"),
            (r"\bbecause\b", "bc"), (r"\bi don't know\b", "idk"), (r"\bright now\b", "rn"), (r"\bthanks\b", "thx"),
            (r"\bwhat's\b", "whats"), (r"\bit's\b", "its"), (r"\bcan't\b", "cant"), (r"\bi'll\b", "ill")]
_TEXTING = [(re.compile(a), b) for a, b in _TEXTING]
_TAILS = [" lol", " haha", " 🙂", " :)", " 👍", "!!", " 😅", " x", " tbh"]
_HEADS = ["ok ", "ok so ", "so ", "also ", "btw ", "oh and ", "hey ", "anyway ", "alright, ", "Okay. ", "Also, "]
_JOIN = [". ", "! ", "\n", " ", ", ", " - ", "; "]


@dataclass(frozen=True)
class Family:
    id: str
    category: str          # one of CATEGORIES or "none"
    templates: tuple
    kind: str = ""         # for negatives: refusal, clarifying, question, reported, code, ...


def _load(name: str):
    ref = resources.files("notme_mlx.detect").joinpath("corpus", name)
    try:
        return yaml.safe_load(ref.read_text(encoding="utf-8"))
    except (FileNotFoundError, yaml.YAMLError) as e:
        raise ConfigError(f"notme_mlx/detect/corpus/{name}: cannot read ({e})") from None


def load_families() -> list[Family]:
    doc = _load("families.yaml")
    out = []
    for i, f in enumerate(doc.get("families") or []):
        cat = f.get("category")
        if cat not in LABELS or not f.get("templates"):
            raise ConfigError(f"corpus/families.yaml: families[{i}]: bad category {cat!r} or no templates")
        out.append(Family(f["id"], cat, tuple(f["templates"]), f.get("kind", "positive" if cat != "none" else "")))
    return out


def load_slots() -> dict:
    doc = _load("slots.yaml")
    return {k: list(v) for k, v in doc.items()}


def split_families(families: list[Family], seed: int = 0) -> dict[str, str]:
    """family id -> split; per label, a seeded shuffle puts ~20% in test, ~15% in valid (≥1 each)."""
    rng = random.Random(seed)
    out = {}
    for lab in LABELS:
        ids = sorted(f.id for f in families if f.category == lab)
        rng.shuffle(ids)
        n_test = max(1, round(0.2 * len(ids)))
        n_valid = max(1, round(0.15 * len(ids)))
        for j, fid in enumerate(ids):
            out[fid] = "test" if j < n_test else "valid" if j < n_test + n_valid else "train"
    return out


def fill(template: str, slots: dict, rng: random.Random) -> tuple[str, list[tuple[int, int]]]:
    """Fill {SLOT}s; return the text and the char ranges that came from the {C} statement slot."""
    out, content, pos = [], [], 0
    for m in _SLOT.finditer(template):
        out.append(template[pos:m.start()])
        name = m.group(1)
        if name not in slots:
            raise ConfigError(f"corpus template {template!r}: unknown slot {{{name}}}")
        val = rng.choice(slots[name])
        start = sum(map(len, out))
        out.append(val)
        if name == "C":
            content.append((start, start + len(val)))
        pos = m.end()
    out.append(template[pos:])
    return "".join(out), content


def _texting(s: str) -> str:
    s = s.lower()
    for rx, rep in _TEXTING:
        s = rx.sub(rep, s)
    return s.replace("'", "")


def _case(s: str, rng: random.Random) -> str:
    return s[:1].upper() + s[1:] if rng.random() < 0.5 else s


def make_message(fam: Family, template: str, slots: dict, rng: random.Random) -> dict:
    """One message: context + the family's sentence, with the cue span (char offsets)."""
    body, content = fill(template, slots, rng)
    # register per piece, so the cue offsets stay known
    reg = rng.random()
    style = "formal" if reg < 0.3 else "lower" if reg < 0.5 else "texting" if reg < 0.8 else "bare"
    strip = rng.random() < 0.35

    def tf(s: str) -> str:
        if style == "formal":
            s = s[:1].upper() + s[1:]
        elif style == "texting":
            s = _texting(s)
        else:
            s = s.lower()
        if strip:
            s = re.sub(r"[.!?,;]+(?=\s|$)", "", s)
        return s

    # the cue part of the sentence: everything except a leading/trailing {C} statement
    cue_a, cue_b = 0, len(body)
    for a, b in content:
        if a == 0 and b < len(body):
            cue_a = b
        elif b >= len(body.rstrip(".!?")) and a > 0:
            cue_b = a
    pre, cue, post = body[:cue_a], body[cue_a:cue_b], body[cue_b:]
    pre, cue, post = tf(pre), tf(cue), tf(post)
    if rng.random() < 0.15 and style != "formal":  # an interjection opens the sentence, outside the cue
        pre = rng.choice(_HEADS).lower() + pre
    sentence = pre + cue + post
    ca, cb = len(pre), len(pre) + len(cue)
    if rng.random() < 0.15:
        sentence += rng.choice(_TAILS)
    text, shift = sentence, 0
    r = rng.random()
    if r < 0.45:  # a statement before
        ctx = tf(rng.choice(slots["C"]))
        ctx = _case(ctx, rng) if style != "formal" else ctx[:1].upper() + ctx[1:]
        j = rng.choice(_JOIN) if not strip else rng.choice([" ", "\n", " ", ", "])
        text = ctx + j + sentence
        shift = len(ctx) + len(j)
    if rng.random() < 0.3:  # and/or one after
        ctx = tf(rng.choice(slots["C"]))
        j = rng.choice(_JOIN) if not strip else rng.choice([" ", "\n"])
        if text[-1:] not in ".!?\n " and j in (" ", ", "):
            j = ". " if not strip else "\n"
        text = text + j + ctx
    spans = [] if fam.category == "none" or cb <= ca else [(ca + shift, cb + shift, fam.category)]
    return {"text": text, "spans": spans, "family": fam.id, "kind": fam.kind, "category": fam.category}


def generate(seed: int = 0, per_family: int = 240, families: list[Family] | None = None,
             slots: dict | None = None) -> list[dict]:
    """Messages for every family (`per_family` each, templates round-robin), with a `split` key."""
    families = families if families is not None else load_families()
    slots = slots if slots is not None else load_slots()
    split = split_families(families, seed)
    rng = random.Random(seed)
    out = []
    for fam in families:
        for k in range(per_family):
            m = make_message(fam, fam.templates[k % len(fam.templates)], slots, rng)
            m["split"] = split[fam.id]
            out.append(m)
    return out
