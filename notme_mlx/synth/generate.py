"""`notme data synth`: generate replies with a local model, screen them with the detector.

Prompts file: `.jsonl` with {"prompt": str} or {"messages": [{"role","content"}...]} per line
(optional "safety": true), or any other text file with one prompt per line. `n` replies are
generated, cycling through the prompts in order. Three frames:

  system      a system prompt (`--system FILE` or rendered from `--principles FILE`) + chat template
  base        a plain-text conversation frame for a base model (no chat template), cut at the
              next "User:" line

Every reply goes through the detector. Clean replies become Examples (docs/data.md; the system
prompt is NOT kept in the example, so training distills its effect). Flagged replies are
dropped (`on_flag="drop"`) or revised by span removal (`on_flag="revise"`): the revision is
kept as the example and (prompt, chosen=revision, rejected=original) goes to the pairs file.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Sequence

import mlx.core as mx
from mlx_lm import generate
from mlx_lm.generate import batch_generate
from mlx_lm.sample_utils import make_sampler

from ..detect import default_detector
from ..detect.repair import remove_spans
from ..errors import InputError, NotmeError
from ..io import read_jsonl
from ..models.frame import Frame, bos_prefix
from ..models.generate import chat_prompt

# the plain-text frame (models/frame.py) with an intro that asks for direct, complete answers
SYNTH_FRAME = Frame(me="Assistant", other="User",
                    intro="The following is a conversation between a user and an assistant who answers directly "
                          "and completely.\n\n")


STARTER_PROMPTS = Path(__file__).parent / "prompts" / "starter.txt"


def read_prompts(path: str | Path) -> list[dict]:
    """Read a prompts file into [{"messages": [...], "safety": bool}] (InputError on empty/bad records).

    `.jsonl`: {"prompt": str} or {"messages": [...]} records. Otherwise one prompt per line; `#` lines
    are comments and a `category<TAB>` prefix is dropped (the format of the eval prompt sets).
    `starter` names the shipped starter set (notme_mlx/synth/prompts/starter.txt).
    """
    if str(path) == "starter" and not Path(path).exists():
        path = STARTER_PROMPTS
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: prompts file not found")
    out = []
    if path.suffix == ".jsonl":
        for i, r in enumerate(read_jsonl(path), 1):
            if isinstance(r.get("messages"), list) and r["messages"]:
                msgs = r["messages"]
                if not all(isinstance(m, dict) and isinstance(m.get("content"), str) and m.get("role") in
                           ("system", "user", "assistant") for m in msgs):
                    raise InputError(f"{path}: record {i}: messages need role system|user|assistant and content")
            elif isinstance(r.get("prompt"), str) and r["prompt"].strip():
                msgs = [{"role": "user", "content": r["prompt"]}]
            else:
                raise InputError(f"{path}: record {i}: expected a non-empty \"prompt\" string or \"messages\" list")
            out.append({"messages": [{"role": m["role"], "content": m["content"]} for m in msgs],
                        "safety": bool(r.get("safety", False))})
    else:
        for line in path.read_text(encoding="utf-8").splitlines():
            text = line.split("\t", 1)[-1].strip()
            if text and not line.lstrip().startswith("#"):
                out.append({"messages": [{"role": "user", "content": text}], "safety": False})
    if not out:
        raise InputError(f"{path}: no prompts (empty file); write one prompt per line or JSONL "
                         "{\"prompt\": ...} records")
    return out


def base_frame(messages: Sequence[dict]) -> str:
    """Render a conversation as plain text for a base model, ending in 'Assistant:'."""
    return SYNTH_FRAME.render(messages, add_generation_prompt=True)


def _cut_base(text: str) -> str:
    return SYNTH_FRAME.cut(text).strip()


def generate_texts(model, tokenizer, prompts: Sequence[str], max_tokens: int, temp: float, seed: int,
                   batch_size: int = 8, progress=None) -> list[str]:
    """Continuations of rendered prompt strings (batched `batch_generate`, else one at a time).

    Seeded: `mx.random.seed(seed)` before the first batch, so a run is reproducible.
    """
    sampler = make_sampler(temp=temp)
    enc = [list(tokenizer.encode(p, add_special_tokens=False)) for p in prompts]
    mx.random.seed(seed)
    out: list[str] = []
    for i in range(0, len(enc), batch_size):
        chunk = enc[i:i + batch_size]
        try:
            res = batch_generate(model, tokenizer, chunk, max_tokens=max_tokens, sampler=sampler)
            out.extend(res.texts)
        except (TypeError, AttributeError):  # a model mlx-lm cannot batch: one prompt at a time
            out.extend(generate(model, tokenizer, p, max_tokens=max_tokens, sampler=sampler, verbose=False)
                       for p in chunk)
        if progress is not None:
            progress.advance(len(chunk))
    return out


def synth(model, tokenizer, prompts: list[dict], n: int, system: str | None = None, frame: str = "system",
          on_flag: str = "drop", seed: int = 0, max_tokens: int = 128, temp: float = 0.7, detector=None,
          batch_size: int = 8, progress=None, model_name: str | None = None) -> dict:
    """Generate `n` replies and screen them.

    Returns:
      {"examples": [Example], "pairs": [pair], "counts": {...}}. Raises NotmeError when every
      reply is empty (nothing is written by the caller then).
    """
    if n < 1:
        raise InputError(f"-n must be >= 1, got {n}")
    if on_flag not in ("drop", "revise"):
        raise InputError(f"--on-flag must be drop or revise, got {on_flag!r}")
    det = detector or default_detector()
    picked = [prompts[i % len(prompts)] for i in range(n)]
    if frame == "base":
        rendered = [bos_prefix(tokenizer) + base_frame(p["messages"]) for p in picked]
    else:
        sys_msg = [{"role": "system", "content": system}] if system else []
        rendered = [chat_prompt(tokenizer, sys_msg + [m for m in p["messages"] if m["role"] != "system"])
                    for p in picked]
    texts = generate_texts(model, tokenizer, rendered, max_tokens, temp, seed, batch_size, progress)
    if frame == "base":
        texts = [_cut_base(t) for t in texts]
    texts = [t.strip() for t in texts]
    if not any(texts):
        raise NotmeError(f"the model produced only empty replies for all {n} prompts; nothing written "
                         "(check the model/adapters, raise --max-tokens, or try --base-frame for a base model)")
    sys_hash = hashlib.sha256(system.encode()).hexdigest()[:12] if system else None
    examples, pairs = [], []
    c = {"generated": n, "empty": 0, "flagged": 0, "dropped": 0, "revised": 0, "clean": 0}
    for i, (p, text) in enumerate(zip(picked, texts)):
        if not text:
            c["empty"] += 1
            continue
        convo = [m for m in p["messages"] if m["role"] != "system"]
        meta = {"source": "synth", "conversation_id": f"synth-{seed}-{i}", "model": model_name, "frame": frame,
                "system_sha": sys_hash, "seed": seed, "index": i}
        d = det.detect(text)
        reply = text
        if d.flagged:
            c["flagged"] += 1
            spans = [[s.start, s.end, "penalize"] for s in d.spans]
            fixed = remove_spans(text, d.spans) if on_flag == "revise" else ""
            if not fixed or det.detect(fixed).flagged:
                c["dropped"] += 1
                continue
            c["revised"] += 1
            pairs.append({"prompt": convo, "chosen": fixed, "rejected": text,
                          "meta": {**meta, "spans": spans, "score": round(d.score, 4)}})
            reply = fixed
        else:
            c["clean"] += 1
        examples.append({"messages": [{**m, "train": False} for m in convo]
                         + [{"role": "assistant", "content": reply, "train": True}],
                         "meta": {**meta, "revised": reply is not text}})
    return {"examples": examples, "pairs": pairs, "counts": c}
