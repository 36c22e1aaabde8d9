"""`notme chat` and `notme generate`: streaming generation with adapters."""

import sys

import click

from ..lora import load_adapter
from ..models import load_model
from ..models.frame import use_recorded_frame
from ..models.generate import ChatState, chat_prompt, repl, stream
from ..stack import load_stack_model


def _load(model_spec, adapters, dequantize=None, stack=None, force=False):
    if stack:
        model, tok, info, _ = load_stack_model(stack, force=force, dequantize=dequantize)
        for i, a in enumerate(adapters or ()):
            load_adapter(model, a, name=f"adapter{i}")
        model.eval()
        return model, tok, info
    model, tok, info = load_model(model_spec, dequantize=dequantize)
    for i, a in enumerate(adapters or ()):
        load_adapter(model, a, name=None if len(adapters) == 1 else f"adapter{i}")
    use_recorded_frame(tok, list(adapters or ()))  # a base model: the frame names its adapter was trained in
    model.eval()
    return model, tok, info


@click.command("generate")
@click.option("--model", "model_spec", default="smollm2-135m", show_default=True, help="Model spec.")
@click.option("--adapters", multiple=True, type=click.Path(exists=True), help="Adapter folder(s), bottom first.")
@click.option("--prompt", required=True, help="The user message.")
@click.option("--system", default=None, help="Optional system prompt.")
@click.option("--max-tokens", default=256, show_default=True, type=int)
@click.option("--temp", default=0.0, show_default=True, type=float, help="0 = greedy.")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--raw", is_flag=True, help="Do not apply the chat template.")
def generate_cmd(model_spec, adapters, prompt, system, max_tokens, temp, seed, raw):
    """Generate one reply, streamed to stdout.

    \b
    Example:
      notme generate --model smollm2-135m --prompt "What is the capital of France?"
    """
    model, tok, _ = _load(model_spec, adapters)
    msgs = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
    text = prompt if raw else chat_prompt(tok, msgs)
    for piece in stream(model, tok, text, max_tokens=max_tokens, temp=temp, seed=seed):
        sys.stdout.write(piece)
        sys.stdout.flush()
    sys.stdout.write("\n")


@click.command("chat")
@click.option("--model", "model_spec", default="smollm2-135m", show_default=True, help="Model spec.")
@click.option("--adapters", multiple=True, type=click.Path(exists=True), help="Adapter folder(s), bottom first.")
@click.option("--stack", type=click.Path(exists=True), help="A stack.yaml (its base replaces --model).")
@click.option("--force", is_flag=True, help="Load a stack despite provenance mismatches.")
@click.option("--system", default=None, help="System prompt.")
@click.option("--max-tokens", default=256, show_default=True, type=int)
@click.option("--temp", default=0.7, show_default=True, type=float)
def chat_cmd(model_spec, adapters, stack, force, system, max_tokens, temp):
    """Chat in the terminal with a model and its adapters (/help lists commands).

    With --stack, `/layers` lists the layers and `/layers NAME` toggles one;
    `/scale NAME X` scales it, so you can feel what each layer does.

    \b
    Examples:
      notme chat --model smollm2-135m --adapters runs/quickstart/adapters
      notme chat --stack stacks/genesis.yaml
    """
    model, tok, _ = _load(model_spec, adapters, stack=stack, force=force)
    state = ChatState(model, tok, system=system, max_tokens=max_tokens, temp=temp)
    repl(state, sys.stdin, sys.stdout)


COMMANDS = [chat_cmd, generate_cmd]
