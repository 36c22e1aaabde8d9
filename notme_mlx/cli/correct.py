"""`notme correct`: the correction loop.

Chat with the current model; when a reply slips into validation-seeking, type
`/fix WHAT IT SHOULD HAVE SAID`: the pair (prompt, chosen=fix, rejected=last reply) is
appended atomically to the corrections file (same format as data/pairs.jsonl), and the
conversation continues with the fixed reply in its history.
"""

import sys

import click
import mlx.core as mx

from .. import ui
from ..detect import detect
from ..errors import NotmeError
from ..eval.generation import load_target
from ..models.generate import COMMANDS as CHAT_COMMANDS
from ..models.generate import ChatState, repl
from ..synth.corrections import append_pairs, correction, import_corrections


def _cmd_fix(state, arg, out):
    msgs = state.messages
    if not arg.strip():
        raise ValueError("usage: /fix WHAT THE REPLY SHOULD HAVE BEEN")
    if not msgs or msgs[-1]["role"] != "assistant":
        raise ValueError("no reply to correct yet")
    prompt = ([{"role": "system", "content": state.system}] if state.system else []) + msgs[:-1]
    pair = correction(prompt, arg.strip(), msgs[-1]["content"], state.extra.get("model"))

    try:
        total = append_pairs(state.extra["corrections"], [pair])
    except NotmeError as e:
        raise ValueError(str(e)) from None
    msgs[-1] = {"role": "assistant", "content": arg.strip()}
    state.extra["fixes"] = state.extra.get("fixes", 0) + 1
    out.write(f"(saved correction #{total} to {state.extra['corrections']})\n")


def _cmd_check(state, arg, out):
    if not state.messages or state.messages[-1]["role"] != "assistant":
        raise ValueError("no reply to check yet")
    d = detect(state.messages[-1]["content"])
    cues = ", ".join(f"{s.category}: {s.cue!r}" for s in d.spans) or "none"
    out.write(f"(detector score {d.score:.2f}{' FLAGGED' if d.flagged else ''}; {cues})\n")


@click.command("correct")
@click.option("--model", "model_spec", default="smollm2-135m", show_default=True, help="Model spec.")
@click.option("--adapters", type=click.Path(), help="Adapter folder to load on top of the model.")
@click.option("--stack", type=click.Path(), help="A stack.yaml (its base replaces --model).")
@click.option("--out", "out_path", default="corrections.jsonl", show_default=True, type=click.Path(dir_okay=False),
              help="Corrections file (pairs JSONL) to append to.")
@click.option("--import", "import_path", type=click.Path(dir_okay=False),
              help="Validate a JSONL of corrections written elsewhere and append it to --out; no chat.")
@click.option("--system", default=None, help="System prompt.")
@click.option("--max-tokens", default=256, show_default=True, type=int)
@click.option("--temp", default=0.7, show_default=True, type=float)
@click.option("--seed", default=None, type=int, help="Seed the sampler once at the start (reproducible session).")
def correct_cmd(model_spec, adapters, stack, out_path, import_path, system, max_tokens, temp, seed):
    """Chat with the model and record your corrections as preference pairs.

    `/fix TEXT` stores (prompt, chosen=TEXT, rejected=the last reply); `/check` shows what the
    detector sees in the last reply; `/help` lists every command. The file feeds
    `notme data build` and the preference phase (same format as data/pairs.jsonl).

    \b
    Examples:
      notme correct --model smollm2-135m --adapters runs/genesis/adapters --out corrections.jsonl
      notme correct --import my_fixes.jsonl --out corrections.jsonl
    """
    if import_path:
        n = import_corrections(import_path, out_path)
        ui.info(f"[green]imported[/green] {n} corrections from {import_path} into {out_path}")
        return

    CHAT_COMMANDS.setdefault("fix", (_cmd_fix, "/fix TEXT records TEXT as what the last reply should have been"))
    CHAT_COMMANDS.setdefault("check", (_cmd_check, "run the detector on the last reply"))
    model, tok, meta = load_target(model_spec, adapters, stack)
    if seed is not None:
        mx.random.seed(seed)
    state = ChatState(model, tok, system=system, max_tokens=max_tokens, temp=temp,
                      extra={"corrections": out_path, "model": meta.get("model")})
    ui.info(f"chatting; /fix TEXT saves a correction to {out_path}, /quit ends")
    repl(state, sys.stdin, sys.stdout)
    ui.info(f"{state.extra.get('fixes', 0)} corrections saved this session")


COMMANDS = [correct_cmd]
