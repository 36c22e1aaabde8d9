"""The plain-text conversation frame: how a base model (no chat template) sees a conversation.

A base model was pretrained on plain text, so a conversation is written the way transcripts are:
one turn per line, each starting with the speaker's name,

    Them: are you coming climbing on saturday?
    Me: yes, 9 at the gym. bringing the new rope
    Them:

`me` names the person whose replies are learned (the assistant role), `other` the other speaker
(the user role); a system message, if any, is a first line without a name. A turn ends with a
newline; the newline after a learned reply is a target (the model learns to stop), and generation
stops at the next line that starts with either name. The same frame is used by data build / train
(token labels), generate and chat, eval, `data synth --base-frame`, and export (as a chat template
for llama.cpp and Ollama), so what the model is trained on is what it is asked with.

A tokenizer WITH a chat template uses its template everywhere instead; `frame_for(tokenizer)`
says which applies.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, Sequence

FRAME_MARKER = "notme plain-text frame"


@dataclass(frozen=True)
class Frame:
    me: str = "Me"
    other: str = "Them"
    intro: str = ""  # an optional first paragraph, e.g. "The following is a conversation ..."

    @property
    def name(self) -> str:
        return f"plain ({self.other}: / {self.me}: lines)"

    def speaker(self, role: str) -> str:
        return self.me if role == "assistant" else self.other

    def render(self, messages: Sequence[dict], add_generation_prompt: bool = False, bos: str = "") -> str:
        """The conversation as text; with `add_generation_prompt`, ends with "<me>:" for the reply."""
        parts = [bos, self.intro + ("\n\n" if self.intro and not self.intro.endswith("\n") else "")]
        for m in messages:
            if m["role"] == "system":
                parts.append(m["content"] + "\n\n")
            else:
                parts.append(f"{self.speaker(m['role'])}: {m['content']}\n")
        if add_generation_prompt:
            parts.append(f"{self.me}:")
        return "".join(parts)

    @property
    def stops(self) -> tuple[str, ...]:
        """Text that ends a generated reply: a new line opened by either speaker."""
        return (f"\n{self.other}:", f"\n{self.me}:")

    def cut(self, text: str) -> str:
        """A generated continuation cut at the first stop, without its leading space or trailing newline."""
        ends = [i for i in (text.find(s) for s in self.stops) if i >= 0]
        if ends:
            text = text[: min(ends)]
        text = text[1:] if text.startswith(" ") else text
        return text.rstrip("\n")

    def to_dict(self) -> dict:
        return asdict(self)

    # --- export: the same frame as a chat template -------------------------------------------

    def jinja_template(self) -> str:
        """A Hugging Face / GGUF chat template that renders exactly `render(..., add_generation_prompt)`
        (bos included by the runtime, as for the base model)."""
        intro = self.intro + ("\n\n" if self.intro and not self.intro.endswith("\n") else "")
        me, other = _jinja_str(self.me + ": "), _jinja_str(self.other + ": ")
        return (
            "{#- " + FRAME_MARKER + " " + json.dumps(self.to_dict()).replace("#}", "# }") + " -#}"
            + ("{{- " + _jinja_str(intro) + " -}}" if intro else "")
            + "{%- for m in messages -%}"
            + "{%- if m['role'] == 'system' -%}{{ m['content'] + '\\n\\n' }}"
            + "{%- elif m['role'] == 'assistant' -%}{{ " + me + " + m['content'] + '\\n' }}"
            + "{%- else -%}{{ " + other + " + m['content'] + '\\n' }}"
            + "{%- endif -%}{%- endfor -%}"
            + "{%- if add_generation_prompt -%}{{ " + _jinja_str(self.me + ":") + " }}{%- endif -%}"
        )

    @property
    def ollama_stops(self) -> tuple[str, ...]:
        """Ollama stop strings (a Modelfile's quoted parameters hold no newline): the speaker names."""
        return (f"{self.other}:", f"{self.me}:")

    def ollama_template(self) -> str:
        """An Ollama Modelfile TEMPLATE (Go template) with the same layout."""
        intro = self.intro + ("\n\n" if self.intro and not self.intro.endswith("\n") else "")
        return (intro + "{{- if .System }}{{ .System }}\n\n{{ end }}"
                "{{- range .Messages }}"
                "{{- if eq .Role \"assistant\" }}" + self.me + ": {{ .Content }}\n"
                "{{- else if eq .Role \"user\" }}" + self.other + ": {{ .Content }}\n"
                "{{- end }}{{- end }}" + self.me + ":")


def _jinja_str(s: str) -> str:
    return "'" + s.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n") + "'"


DEFAULT_FRAME = Frame()


def frame_from_template(chat_template: str | None) -> Frame | None:
    """The Frame a `Frame.jinja_template()` was made from (None for any other template)."""
    m = re.search(r"\{#- " + re.escape(FRAME_MARKER) + r" (\{.*?\}) -#\}", chat_template or "")
    if not m:
        return None
    d = json.loads(m.group(1))
    return Frame(**{k: d[k] for k in ("me", "other", "intro") if k in d})


def has_chat_template(tokenizer) -> bool:
    inner = getattr(tokenizer, "_tokenizer", None)
    return bool(getattr(tokenizer, "chat_template", None) or getattr(inner, "chat_template", None))


def frame_for(tokenizer) -> Frame | None:
    """The plain-text frame when `tokenizer` has no chat template (its names: `set_frame`), else None."""
    if has_chat_template(tokenizer):
        return None
    return getattr(tokenizer, "notme_frame", None) or DEFAULT_FRAME


def set_frame(tokenizer, frame: Frame | dict | None):
    """Give a template-less tokenizer its frame names (e.g. the person's and the other speaker's)."""
    if isinstance(frame, dict):
        frame = Frame(**{k: v for k, v in frame.items() if k in ("me", "other", "intro")})
    tokenizer.notme_frame = frame
    inner = getattr(tokenizer, "_tokenizer", None)
    if inner is not None and hasattr(inner, "apply_chat_template"):
        try:
            inner.notme_frame = frame
        except AttributeError:
            pass
    return tokenizer


def bos_prefix(tokenizer) -> str:
    """The BOS token text when the tokenizer adds one by default (Gemma), else ""."""
    inner = getattr(tokenizer, "_tokenizer", None)  # mlx-lm's wrapper holds the HF tokenizer here
    hf = inner if inner is not None and hasattr(inner, "apply_chat_template") else tokenizer
    bos = getattr(hf, "bos_token", None)
    if not bos:
        return ""
    try:
        with_special = hf("a", add_special_tokens=True)["input_ids"]
        without = hf("a", add_special_tokens=False)["input_ids"]
    except Exception:
        return ""
    return bos if len(with_special) > len(without) and with_special[0] == hf.bos_token_id else ""


def speaker_name(name, default: str) -> str:
    """A speaker name usable in the frame: one line, no colon (it would read as a turn start)."""
    s = " ".join(str(name or "").replace(":", " ").split())
    return s or default


GENERIC_AI = {"assistant", "ai", "model", "bot", "gpt"}


def _ai_name(speakers: Iterable[str]) -> str:
    s = Counter(speakers).most_common(1)
    name = speaker_name(s[0][0], "Assistant") if s else "Assistant"
    return "Assistant" if name.lower() in GENERIC_AI else name


def data_frames(conversations: Iterable[tuple[str, list[dict]]], scrubbed: bool = False) -> tuple[dict, dict]:
    """The frame names of a built dataset, from its Message records (speaker and role).

    `conversations`: (mode, messages) with mode "mirror" (the person's own turns, role `me`, are
    learned) or "assistant" (the AI's turns are learned). Returns (the dataset's frame,
    {conversation index: frame}) as {"me", "other"} dicts:

    - mirror: `me` is the person (the most frequent role-`me` speaker of the whole data), `other`
      the one other speaker when the mirror conversations have exactly one (else "Them"; always
      "Them" when the data was scrubbed, so no scrubbed name comes back through the frame);
    - assistant: `me` is that conversation's AI speaker ("Assistant" for generic names such as
      "assistant"), `other` the person.

    The dataset's frame is the mirror frame (the person's voice) when there are mirror
    conversations, else the most common assistant frame; it is the one that train, generate,
    chat, eval and export use, and safety replay examples are written in it.
    """
    convs = list(conversations)
    me_counts = Counter(m["speaker"] for _, ms in convs for m in ms if m["role"] == "me")
    person = speaker_name(me_counts.most_common(1)[0][0], "Me") if me_counts else "Me"
    others = {m["speaker"] for mode, ms in convs if mode == "mirror" for m in ms if m["role"] == "other"}
    other = speaker_name(next(iter(others)), "Them") if len(others) == 1 and not scrubbed else "Them"
    mirror = {"me": person, "other": other}
    per, assistant = {}, Counter()
    for i, (mode, ms) in enumerate(convs):
        if mode == "mirror":
            per[i] = mirror
        else:
            f = {"me": _ai_name(m["speaker"] for m in ms if m["role"] == "ai"), "other": person}
            if f["me"] == person:
                f["me"] = "Assistant" if person != "Assistant" else "AI"
            per[i] = f
            assistant[(f["me"], f["other"])] += 1
    if any(mode == "mirror" for mode, _ in convs) or not assistant:
        data = mirror
    else:
        me, oth = assistant.most_common(1)[0][0]
        data = {"me": me, "other": oth}
    return data, per


def recorded_frame(adapters: Sequence = (), data_dir=None) -> dict | None:
    """The frame names a built dataset (`data_dir/build_report.json`) or a trained adapter
    (`adapter_config.json`, notme.frame) recorded; the data's first, then the top adapter's."""
    if data_dir is not None:
        p = Path(data_dir) / "build_report.json"
        if p.is_file():
            f = json.loads(p.read_text()).get("frame")
            if isinstance(f, dict):
                return f
    for a in reversed([a for a in adapters if a is not None]):
        p = Path(a) / "adapter_config.json"
        if p.is_file():
            f = json.loads(p.read_text()).get("notme", {}).get("frame")
            if isinstance(f, dict):
                return f
    return None


def use_recorded_frame(tokenizer, adapters: Sequence = (), data_dir=None) -> Frame | None:
    """Give a template-less tokenizer the frame its data or adapter recorded (nothing recorded,
    or a chat template: unchanged). Returns the frame prompts now go through (None: template)."""
    f = recorded_frame(adapters, data_dir)
    if f is not None and not has_chat_template(tokenizer):
        set_frame(tokenizer, f)
    return frame_for(tokenizer)


def describe_frame(tokenizer) -> str:
    """Which frame prompts go through: 'chat template' or the plain frame's name."""
    f = frame_for(tokenizer)
    return "chat template" if f is None else f.name
