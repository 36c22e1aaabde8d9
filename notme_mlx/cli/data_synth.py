"""`notme data synth` and `notme data revise`, registered into the `data` group."""

from __future__ import annotations

from pathlib import Path

import click

from .. import ui
from ..errors import InputError
from ..eval.generation import load_target
from ..io import read_jsonl, write_jsonl
from ..synth.generate import read_prompts, synth
from ..synth.principles import load_principles, system_prompt
from ..synth.revise import model_rewriter, revise_records
from .detector_options import command_detector, detector_options


def _system_text(system, principles, base_frame):
    if sum(bool(x) for x in (system, principles, base_frame)) > 1:
        raise InputError("give at most one of --system FILE, --principles FILE or --base-frame "
                         "(none: the model's chat template without a system message)")
    if system:
        p = Path(system)
        if not p.exists():
            raise InputError(f"{system}: system prompt file not found")
        text = p.read_text(encoding="utf-8").strip()
        if not text:
            raise InputError(f"{system}: system prompt file is empty")
        return text
    if principles:
        return system_prompt(load_principles(principles))
    return None


@click.command("synth")
@click.option("--model", "model_spec", help="Model spec (registry name, mlx-lm dir, .gguf, hub id).")
@click.option("--adapters", type=click.Path(), help="Adapter folder to load on top of the model.")
@click.option("--stack", type=click.Path(), help="A stack.yaml (its base replaces --model).")
@click.option("--prompts", "prompts_path", required=True, type=click.Path(dir_okay=False),
              help="Prompts: .jsonl ({prompt} or {messages}) or one prompt per line.")
@click.option("--system", type=click.Path(dir_okay=False), help="System prompt file.")
@click.option("--principles", type=click.Path(dir_okay=False), help="principles.yaml rendered as the system prompt.")
@click.option("--base-frame", is_flag=True, help="Plain-text conversation frame for a base model (no template). "
              "Without --system/--principles/--base-frame: the chat template, no system message.")
@click.option("-n", "n", type=int, required=True, help="Replies to generate (prompts are cycled).")
@click.option("-o", "--out", required=True, type=click.Path(dir_okay=False), help="Examples JSONL to write.")
@click.option("--pairs", "pairs_out", type=click.Path(dir_okay=False),
              help="Pairs JSONL for revised replies (default: OUT with .pairs.jsonl).")
@click.option("--on-flag", type=click.Choice(["drop", "revise"]), default="revise", show_default=True,
              help="What to do with a reply the detector flags.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--max-tokens", type=int, default=128, show_default=True)
@click.option("--temp", type=float, default=0.7, show_default=True)
@click.option("--batch-size", type=int, default=8, show_default=True)
@detector_options
def synth_cmd(model_spec, adapters, stack, prompts_path, system, principles, base_frame, n, out, pairs_out, on_flag,
              seed, max_tokens, temp, batch_size, engine, detect_recipe):
    """Generate replies with a local model; detector-flagged ones are dropped or revised into pairs.

    Writes OUT (Examples as in docs/data.md, without the system prompt) and, for revised replies,
    a pairs file (prompt, chosen=revision, rejected=original). Same seed, same output.

    \b
    Examples:
      notme data synth --model smollm2-135m --prompts prompts.txt --principles principles.yaml -n 200 -o synth.jsonl
      notme data synth --model base-model/ --prompts prompts.jsonl --base-frame -n 50 -o synth.jsonl --on-flag drop
      notme data synth --model smollm2-135m --prompts starter -n 480 --temp 0.9 -o synth/synth.jsonl
    """
    sys_text = _system_text(system, principles, base_frame)
    prompts = read_prompts(prompts_path)
    if not model_spec and not stack:
        raise InputError("--model is required (or --stack)")
    model, tok, meta = load_target(model_spec, adapters, stack)
    with ui.progress("generating", total=n, unit="replies") as bar:
        res = synth(model, tok, prompts, n, system=sys_text, frame="base" if base_frame else "system",
                    on_flag=on_flag, seed=seed, max_tokens=max_tokens, temp=temp, batch_size=batch_size,
                    progress=bar, model_name=meta.get("model"), detector=command_detector(detect_recipe, engine))
    if not res["examples"] and not res["pairs"]:
        raise InputError(f"no usable replies out of {n} ({res['counts']}); nothing written")
    pairs_out = pairs_out or str(Path(out).with_suffix("")) + ".pairs.jsonl"
    write_jsonl(out, res["examples"])
    if res["pairs"]:
        write_jsonl(pairs_out, res["pairs"])
    c = res["counts"]
    ui.info(f"[green]wrote[/green] {out}: {len(res['examples'])} examples"
            + (f", {pairs_out}: {len(res['pairs'])} pairs" if res["pairs"] else "")
            + f" (generated {c['generated']}, clean {c['clean']}, flagged {c['flagged']}, revised {c['revised']}, "
              f"dropped {c['dropped']}, empty {c['empty']})")


@click.command("revise")
@click.argument("inp", metavar="IN.jsonl", type=click.Path(dir_okay=False))
@click.option("-o", "--out", required=True, type=click.Path(dir_okay=False), help="Pairs JSONL to write.")
@click.option("--model", "model_spec", help="Optional model that rewrites each reply (else rule-based only).")
@click.option("--adapters", type=click.Path(), help="Adapter folder for --model.")
@click.option("--principles", type=click.Path(dir_okay=False), help="principles.yaml guiding the model rewrite.")
@click.option("--max-tokens", type=int, default=256, show_default=True)
@detector_options
def revise_cmd(inp, out, model_spec, adapters, principles, max_tokens, engine, detect_recipe):
    """Turn detector-flagged replies into (prompt, chosen, rejected) pairs.

    Rule-based span removal and sentence repair first; with --model, a rewrite guided by the
    principles replaces it when it passes the detector. Every chosen passes the detector.

    \b
    Examples:
      notme data revise synth.jsonl -o revised.pairs.jsonl
      notme data revise data/train.jsonl -o pairs.jsonl --model smollm2-135m --principles principles.yaml
    """
    rewrite = None
    if model_spec:
        ptext = None
        if principles:
            ptext = system_prompt(load_principles(principles))
        model, tok, _ = load_target(model_spec, adapters)
        rewrite = model_rewriter(model, tok, ptext, max_tokens)
    recs = list(read_jsonl(inp))

    if not recs:
        raise InputError(f"{inp}: no records (empty file); nothing written")
    with ui.progress("revising", total=len(recs), unit="records") as bar:
        def it():
            for r in recs:
                yield r
                bar.advance(1)
        res = revise_records(it(), detector=command_detector(detect_recipe, engine), rewrite_fn=rewrite, where=str(inp))
    n = write_jsonl(out, res["pairs"])
    c = res["counts"]
    ui.info(f"[green]wrote[/green] {out}: {n} pairs from {c['records']} records (flagged {c['flagged']}, "
            f"rule-based {c['rule']}, model {c['model']}, unfixable {c['unfixable']})")


SYNTH_COMMANDS = [synth_cmd, revise_cmd]
