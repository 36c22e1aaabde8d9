"""Streaming generation and a small chat REPL over mlx-lm's generator.

Prompts go through the model's chat template, or, for a base model without one, the
plain-text conversation frame (models/frame.py); then a reply ends where the frame's next
speaker line starts, and `stream` stops there.

The REPL reads from and writes to streams passed in, so tests drive it with
scripted input; its slash commands live in one table (`COMMANDS`) that other
areas extend (the stack adds `/layers` and `/scale`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, TextIO

import mlx.core as mx
from mlx_lm import stream_generate
from mlx_lm.sample_utils import make_sampler

from ..lora import adapter_names, lora_modules
from .frame import bos_prefix, frame_for


def chat_prompt(tokenizer, messages: list[dict]) -> str:
    """Render `messages` for a reply: the chat template, or the plain-text frame when there is none."""
    frame = frame_for(tokenizer)
    if frame is None:
        return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return frame.render(messages, add_generation_prompt=True, bos=bos_prefix(tokenizer))


def stream(model, tokenizer, prompt: str, max_tokens: int = 256, temp: float = 0.0, seed: int | None = 0,
           top_p: float = 1.0, stops: tuple[str, ...] | None = None):
    """Yield text pieces of a continuation of `prompt` (greedy when temp == 0).

    `stops` (default: the plain frame's speaker lines for a template-less tokenizer, else none):
    generation ends before the first of them; the text yielded never contains one. The leading
    space after the frame's "Me:" is not yielded either.
    """
    if seed is not None:
        mx.random.seed(seed)
    frame = frame_for(tokenizer)
    if stops is None:
        stops = frame.stops if frame is not None else ()
    sampler = make_sampler(temp=temp, top_p=top_p)
    if not stops:
        for resp in stream_generate(model, tokenizer, prompt, max_tokens=max_tokens, sampler=sampler):
            yield resp.text
        return
    held, sent, first = "", 0, True
    keep = max(len(s) for s in stops)
    for resp in stream_generate(model, tokenizer, prompt, max_tokens=max_tokens, sampler=sampler):
        held += resp.text
        if first and held and frame is not None and prompt.endswith(f"{frame.me}:"):
            if held.startswith(" "):
                held = held[1:]
            first = False
        cut = [i for i in (held.find(s) for s in stops) if i >= 0]
        if cut:
            yield held[sent:min(cut)]
            return
        if len(held) - keep > sent:  # emit what can no longer start a stop string
            yield held[sent:len(held) - keep]
            sent = len(held) - keep
    out = held[sent:]
    if frame is not None and out.endswith("\n"):
        out = out.rstrip("\n")
    yield out


def generate_text(model, tokenizer, prompt: str, **kw) -> str:
    return "".join(stream(model, tokenizer, prompt, **kw))


@dataclass
class ChatState:
    model: object
    tokenizer: object
    messages: list = field(default_factory=list)
    system: str | None = None
    max_tokens: int = 256
    temp: float = 0.7
    extra: dict = field(default_factory=dict)


def _cmd_reset(state: ChatState, arg: str, out: TextIO) -> None:
    state.messages.clear()
    out.write("(conversation cleared)\n")


def _cmd_system(state: ChatState, arg: str, out: TextIO) -> None:
    state.system = arg or None
    out.write(f"(system prompt {'set' if arg else 'cleared'})\n")


def _cmd_temp(state: ChatState, arg: str, out: TextIO) -> None:
    state.temp = float(arg)
    out.write(f"(temperature {state.temp})\n")


def _cmd_help(state: ChatState, arg: str, out: TextIO) -> None:
    for name, (_, help_) in sorted(COMMANDS.items()):
        out.write(f"  /{name:<8} {help_}\n")


def _cmd_layers(state: ChatState, arg: str, out: TextIO) -> None:
    """/layers lists adapters with scales; /layers NAME toggles one off (scale 0) or back on (as trained)."""
    names = adapter_names(state.model)
    if arg:
        ads = [m.adapters[arg] for _, m in lora_modules(state.model) if arg in m.adapters]
        if not ads:
            raise KeyError(f"no layer {arg!r}; have {', '.join(names) or 'none'}")
        on = ads[0].scale == 0.0
        for a in ads:
            a.scale = a.base_scale if on else 0.0
    for n in names:
        a = next(m.adapters[n] for _, m in lora_modules(state.model) if n in m.adapters)
        out.write(f"  {n:<12} {'on ' if a.scale else 'off'}  scale {a.scale:g} (trained {a.base_scale:g})\n")


def _cmd_scale(state: ChatState, arg: str, out: TextIO) -> None:
    """/scale NAME X sets layer NAME to X times its trained scale (1 = as trained, 0 = off)."""
    name, _, val = arg.partition(" ")
    ads = [m.adapters[name] for _, m in lora_modules(state.model) if name in m.adapters]
    if not ads:
        raise KeyError(f"no layer {name!r}")
    for a in ads:
        a.scale = a.base_scale * float(val)
    out.write(f"({name} scale x{float(val):g})\n")


# name -> (handler(state, arg, out), help)
COMMANDS: dict[str, tuple[Callable, str]] = {
    "reset": (_cmd_reset, "forget the conversation so far"),
    "system": (_cmd_system, "/system TEXT sets the system prompt (empty clears it)"),
    "temp": (_cmd_temp, "/temp X sets the sampling temperature"),
    "help": (_cmd_help, "list commands"),
    "layers": (_cmd_layers, "/layers lists adapter layers; /layers NAME toggles one on/off"),
    "scale": (_cmd_scale, "/scale NAME X scales a layer (1 = as trained, 0 = off)"),
}


def repl(state: ChatState, inp: TextIO, out: TextIO, prompt: str = "you> ") -> int:
    """Run the chat loop until EOF, /quit or /exit. Returns the number of replies."""
    n = 0
    while True:
        out.write(prompt)
        out.flush()
        line = inp.readline()
        if not line:
            break
        line = line.rstrip("\n")
        if not line.strip():
            continue
        if line.startswith("/"):
            name, _, arg = line[1:].partition(" ")
            if name in ("quit", "exit"):
                break
            if name not in COMMANDS:
                out.write(f"(unknown command /{name}; /help lists them)\n")
                continue
            try:
                COMMANDS[name][0](state, arg.strip(), out)
            except (ValueError, KeyError) as e:
                out.write(f"(/{name}: {e})\n")
            continue
        state.messages.append({"role": "user", "content": line})
        msgs = ([{"role": "system", "content": state.system}] if state.system else []) + state.messages
        text = []
        out.write("me> ")
        for piece in stream(state.model, state.tokenizer, chat_prompt(state.tokenizer, msgs),
                            max_tokens=state.max_tokens, temp=state.temp, seed=None):
            out.write(piece)
            out.flush()
            text.append(piece)
        out.write("\n")
        state.messages.append({"role": "assistant", "content": "".join(text)})
        n += 1
    return n
