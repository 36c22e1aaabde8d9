"""`notme data build`: Message records -> data/{train,valid,test}.jsonl, pairs.jsonl, build_report.json.

Order of work: read + validate -> (scrub) -> per conversation: role mapping, sessions,
windows -> target length filter -> detector spans -> exact/near dedupe -> split by
conversation -> safety replay mix + seeded shuffle of train -> pairs -> atomic write.
Every filter is counted in build_report.json; an empty result is an error naming them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import random
from collections import Counter, OrderedDict
from pathlib import Path

from ..detect import default_detector
from ..detect.parallel import detect_many
from ..errors import NotmeError
from ..ingest.scrub import Scrubber
from ..io import atomic_dir, read_jsonl, write_jsonl
from ..models.frame import data_frames
from ..recipe import BuildConfig, DataConfig
from .dedupe import dedupe
from .pairs import pairs_from_example
from .safety import safety_count, sample_safety
from .sessions import conversation_mode, estimate_tokens, sessions, validate_message, windows
from .split import split_conversations

SPLITS = ("train", "valid", "test")


def read_messages(path: str | Path, progress=None) -> list[dict]:
    """Read and validate Message records; raises InputError naming file:line."""
    out = []
    for i, m in read_jsonl(path, progress=progress, numbered=True, what="a Message record"):
        validate_message(m, f"{path}:{i}")
        out.append(m)
    return out


def _scrubber(msgs: list[dict]):
    others = sorted({m["speaker"] for m in msgs if m["role"] == "other"})
    me = sorted({m["speaker"] for m in msgs if m["role"] == "me"})
    return Scrubber(names=others, keep=me)


def _length_fn(tokenizer):
    if tokenizer is None:
        return estimate_tokens
    hf = getattr(tokenizer, "_tokenizer", None)
    hf = hf if hf is not None and hasattr(hf, "apply_chat_template") else tokenizer
    return lambda text: len(hf.encode(text, add_special_tokens=False)) + 4


def _conversations(msgs: list[dict], c: Counter | None = None) -> "OrderedDict[str, list[dict]]":
    """The text messages by conversation, in input order (counting what is dropped into `c`)."""
    c = Counter() if c is None else c
    convs: "OrderedDict[str, list[dict]]" = OrderedDict()
    for m in msgs:
        c["messages_read"] += 1
        if m.get("kind", "text") != "text":
            c["dropped_non_text_messages"] += 1
            continue
        if not m["text"].strip():
            c["dropped_empty_messages"] += 1
            continue
        convs.setdefault(m["conversation_id"], []).append(m)
    return convs


def conversation_frames(convs: "OrderedDict[str, list[dict]]", modes: dict, cfg: BuildConfig) -> tuple[dict, dict]:
    """(the dataset's frame names, {conversation_id: frame names}) from the speakers of the
    grouped conversations and their modes (`models.frame.data_frames`); every example's
    meta.frame, and build_report.json's frame."""
    data, per = data_frames([(modes[cid], cm) for cid, cm in convs.items()], scrubbed=cfg.scrub)
    return data, {cid: per[i] for i, cid in enumerate(convs)}


def build_examples(msgs: list[dict], cfg: BuildConfig, detector=None, tokenizer=None, progress=None,
                   workers: int | None = None, mark: bool = True, max_seq_len: int = DataConfig.max_seq_len):
    """Messages -> (examples in input order, Counter of filter counts, the dataset's frame names);
    with `mark`, detector spans are filled in (see `mark_penalties`). Each example's meta.frame
    names its speakers for a base model's plain-text frame (`conversation_frames`)."""
    c: Counter = Counter()
    convs = _conversations(msgs, c)
    c["conversations"] = len(convs)
    modes = {cid: conversation_mode(cm, cfg.mode, cfg.mode_by_source) for cid, cm in convs.items()}
    frame, frames = conversation_frames(convs, modes, cfg)
    length = _length_fn(tokenizer)
    gap = cfg.gap_seconds()
    examples = []
    for cid, cm in convs.items():
        if progress is not None:
            progress.advance(len(cm))
        mode = modes[cid]
        c[f"conversations_{mode}"] += 1
        if not any((m["role"] == "me") if mode == "mirror" else (m["role"] == "ai") for m in cm):
            c[f"dropped_conversations_no_{'me' if mode == 'mirror' else 'ai'}_turns"] += 1
            continue
        for si, sess in enumerate(sessions(cm, mode, gap, cfg.group_names)):
            c["sessions"] += 1
            for t in sess:
                if t.target and not cfg.min_target_chars <= len(t.content.strip()) <= cfg.max_target_chars:
                    t.target = False
                    c["target_turns_too_short" if len(t.content.strip()) < cfg.min_target_chars
                      else "target_turns_too_long"] += 1
            if not any(t.target for t in sess):
                c["dropped_sessions_without_targets"] += 1
                continue
            budget = max_seq_len - (length(cfg.system_prompt) if cfg.system_prompt else 0)
            for wi, win in enumerate(windows(sess, budget, length)):
                examples.append(_example(win, cfg, c, {
                    "source": cm[0]["source"], "conversation_id": cid, "session": si, "window": wi, "mode": mode,
                    "frame": frames[cid]}))
    c["examples_built"] = len(examples)
    if mark and cfg.penalize:
        mark_penalties(examples, detector, c, workers)
    return examples, c, frame


def target_turns(examples: list[dict]) -> list[dict]:
    return [m for e in examples for m in e["messages"] if m["role"] == "assistant" and m["train"] is True]


def mark_penalties(examples: list[dict], detector, c: Counter, workers: int | None = None, progress=None) -> None:
    """Run the detector over every target turn (one batch, `workers` processes) and mark its
    spans `penalize`; a turn covered end to end becomes `train: "penalize"`. Updates `c`."""
    det = detector or default_detector()
    targets = target_turns(examples)
    dets = detect_many(det, [m["content"] for m in targets], workers=workers, progress=progress)
    for m, d in zip(targets, dets):
        if not d.flagged:
            continue
        m["spans"] = [[s.start, s.end, "penalize"] for s in d.spans]
        c["target_turns_with_penalize_spans"] += 1
        c["penalize_spans"] += len(d.spans)
        for s in d.spans:
            c[f"penalize_spans_{s.category}"] += 1
        if _fully_covered(m["content"], d.spans):
            m["train"] = "penalize"
            c["target_turns_fully_penalized"] += 1


def _example(win, cfg: BuildConfig, c: Counter, meta: dict) -> dict:
    msgs = []
    if cfg.system_prompt and not (win and win[0].role == "system"):
        msgs.append({"role": "system", "content": cfg.system_prompt, "train": False, "spans": []})
    for t in win:
        if t.role == "assistant" and not any(m["role"] in ("user", "assistant") for m in msgs):
            msgs.append({"role": "user", "content": cfg.opener, "train": False, "spans": []})
            c["openers_inserted"] += 1
        m = {"role": t.role, "content": t.content, "train": bool(t.target), "spans": []}
        if t.target:
            c["target_turns"] += 1
        msgs.append(m)
    key = hashlib.sha256(f"{meta['conversation_id']}\0{meta['session']}\0{meta['window']}".encode()).hexdigest()[:16]
    return {"messages": msgs, "meta": {"id": key, **meta}}


def _fully_covered(text: str, spans) -> bool:
    covered = [False] * len(text)
    for s in spans:
        for k in range(s.start, s.end):
            covered[k] = True
    return all(covered[k] or ch.isspace() for k, ch in enumerate(text))


def build_dataset(messages_path, out_dir, cfg: BuildConfig, detector=None, tokenizer=None, force: bool = False,
                  progress_factory=None, workers: int | None = None,
                  max_seq_len: int = DataConfig.max_seq_len) -> dict:
    """Run the whole build and write the output folder atomically. Returns the report dict.

    Args:
      messages_path: Message records, one per line (docs/ingest.md).
      out_dir: destination folder (refused if it exists unless `force`).
      cfg: the recipe's `build:` section.
      detector: a notme_mlx.detect.Detector (default: bundled lexicon).
      tokenizer: optional HF/mlx-lm tokenizer for token-exact lengths.
      progress_factory: callable(desc, total, unit) -> context manager yielding a task.
      workers: detector processes (None: auto, 1 below 20k target turns).
      max_seq_len: tokens per example (the recipe's data.max_seq_len, which the trainer uses too).
    """
    pf = progress_factory or (lambda *a, **k: contextlib.nullcontext(None))
    n_lines = sum(1 for _ in open(messages_path, "rb")) if Path(messages_path).exists() else 0
    with pf("read", n_lines, "msg") as task:
        msgs = read_messages(messages_path, task)
    if cfg.scrub:
        sc = _scrubber(msgs)
        msgs = [dict(m, text=sc.scrub(m["text"])) for m in msgs]
    with pf("sessions", len(msgs), "msg") as task:
        examples, c, frame = build_examples(msgs, cfg, detector, tokenizer, task, mark=False,
                                           max_seq_len=max_seq_len)
    if cfg.penalize:
        n_t = len(target_turns(examples))
        with pf("detect", n_t, "turn") as task:
            mark_penalties(examples, detector, c, workers, task)
    if cfg.dedupe:
        with pf("dedupe", len(examples), "ex") as task:
            examples, n_exact, n_near = dedupe(examples, cfg.near_dup_threshold, progress=task)
        c["dropped_exact_duplicates"] = n_exact
        c["dropped_near_duplicates"] = n_near
    if not examples:
        raise NotmeError(_empty_message(messages_path, c, cfg))
    assign = _split(examples, cfg)
    splits = {s: [e for e in examples if assign[e["meta"]["conversation_id"]] == s] for s in SPLITS}
    n_safety = safety_count(len(splits["train"]), cfg.safety_fraction)
    # refusals are kept in the frame the model is asked in
    safety = [dict(e, meta={**e["meta"], "frame": frame}) for e in sample_safety(n_safety, cfg.seed)]
    train = splits["train"] + safety
    random.Random(cfg.seed).shuffle(train)
    splits["train"] = train
    pairs = [p for s in SPLITS for e in splits[s] for p in pairs_from_example(e, s)]
    report = _report(messages_path, cfg, c, splits, n_safety, len(pairs), assign, max_seq_len)
    report["frame"] = frame  # a base model's plain-text frame: train, generate, chat, eval and export use it
    with atomic_dir(out_dir, force=force) as tmp:
        for s in SPLITS:
            write_jsonl(tmp / f"{s}.jsonl", splits[s])
        write_jsonl(tmp / "pairs.jsonl", pairs)
        (tmp / "build_report.json").write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
        (tmp / "build_report.json").chmod(0o600)
    return report


def _split(examples, cfg: BuildConfig) -> dict:
    return split_conversations([e["meta"]["conversation_id"] for e in examples],
                               cfg.valid_fraction, cfg.test_fraction, cfg.seed)


def _report(path, cfg: BuildConfig, c: Counter, splits, n_safety, n_pairs, assign, max_seq_len: int) -> dict:
    per = {}
    for s, exs in splits.items():
        per[s] = {
            "examples": len(exs),
            "conversations": len({e["meta"]["conversation_id"] for e in exs if e["meta"]["source"] != "safety_replay"}),
            "target_turns": sum(1 for e in exs for m in e["messages"] if m["role"] == "assistant" and m["train"] is not False),
            "chars": sum(len(m["content"]) for e in exs for m in e["messages"]),
        }
    sources = Counter(e["meta"]["source"] for exs in splits.values() for e in exs)
    return {
        "input": str(path),
        "config": {**dataclasses.asdict(cfg), "max_seq_len": max_seq_len},
        "counts": dict(sorted(c.items())),
        "splits": per,
        "safety_replay_examples": n_safety,
        "pairs": n_pairs,
        "examples_by_source": dict(sorted(sources.items())),
        "sessions_by_source": dict(sorted(Counter(src for src, _, _ in {
            (e["meta"]["source"], e["meta"]["conversation_id"], e["meta"].get("session", 0))
            for exs in splits.values() for e in exs}).items())),
    }


def _empty_message(path, c: Counter, cfg: BuildConfig) -> str:
    parts = [f"{c['messages_read']} messages read"]
    for key, why in [
        ("dropped_non_text_messages", "non-text (kind media/tool/system)"),
        ("dropped_empty_messages", "empty text"),
        ("dropped_conversations_no_me_turns", "conversations dropped in mirror mode: no role 'me' messages "
                                              "(set your name with `notme ingest --me NAME`)"),
        ("dropped_conversations_no_ai_turns", "conversations dropped in assistant mode: no role 'ai' messages"),
        ("target_turns_too_short", f"target turns shorter than min_target_chars={cfg.min_target_chars}"),
        ("target_turns_too_long", f"target turns longer than max_target_chars={cfg.max_target_chars}"),
        ("dropped_sessions_without_targets", "sessions without a target turn"),
        ("dropped_exact_duplicates", "exact duplicates"),
        ("dropped_near_duplicates", "near duplicates"),
    ]:
        if c.get(key):
            parts.append(f"{c[key]} {why}")
    return f"{path}: no examples left after filtering: " + "; ".join(parts)
