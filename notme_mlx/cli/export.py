"""`notme export`: fused MLX/HF directory, GGUF for llama.cpp, Ollama Modelfile (every supported family)."""

import click
from rich.table import Table

from .. import ui
from ..export import export_model


@click.command("export")
@click.option("--model", "model_spec", required=True, help="Base model: mlx-lm dir, hub id, .gguf or registry name.")
@click.option("--adapters", "adapters", multiple=True, type=click.Path(), help="Adapter folder(s) to fuse, bottom first.")
@click.option("--stack", type=click.Path(), help="A stack.yaml whose layers are fused.")
@click.option("--to", "to", type=click.Choice(["mlx", "hf", "gguf", "ollama", "gguf-lora"]), default="mlx", show_default=True)
@click.option("--out", required=True, type=click.Path(), help="Output folder (refused if it exists, unless --force).")
@click.option("--dtype", type=click.Choice(["float16", "bfloat16", "float32"]), default="float16", show_default=True,
              help="Weight dtype for mlx/hf.")
@click.option("--quant", type=click.Choice(["f32", "f16", "q8_0", "q4_0", "q4_1"]), default="f16", show_default=True,
              help="Tensor type for gguf/ollama (norms stay F32).")
@click.option("--system", default=None, help="SYSTEM prompt for the Ollama Modelfile.")
@click.option("--force", is_flag=True, help="Replace an existing output folder; skip the stack base check.")
@click.option("--verify", is_flag=True, help="Reload the export and compare next-token logits.")
def export_cmd(model_spec, adapters, stack, to, out, dtype, quant, system, force, verify):
    """Fuse adapters into the base model and write it in a format people run.

    \b
    Examples:
      notme export --model smollm2-135m --adapters runs/quickstart/adapters --to hf --out exports/me-hf
      notme export --model smollm2-135m --stack stacks/genesis.yaml --to ollama --out exports/me --verify
      ollama create me -f exports/me/Modelfile
      notme export --model smollm2-135m --adapters runs/quickstart/adapters --to gguf-lora --out exports/lora
      llama-cli -m base.gguf --lora exports/lora/adapter.gguf
    """
    with ui.console.status(f"exporting to {to} ..."):
        res = export_model(model_spec, out, to=to, adapters=adapters, stack=stack, dtype=dtype,
                           quant=quant, system=system, force=force, verify=verify)
    ui.info(f"[green]wrote[/green] {res.out} ({', '.join(res.files)})")
    if res.verify:
        t = Table(title="round-trip verification")
        for k in ("loader", "n_prompts", "max_abs_diff", "top1_agreement", "tokenizer_ids_identical"):
            t.add_column(k)
        v = res.verify
        t.add_row(v["loader"], str(v["n_prompts"]), f"{v['max_abs_diff']:.3g}", f"{v['top1_agreement']:.2f}",
                  str(v["tokenizer_ids_identical"]))
        ui.out.print(t)
        lc = v.get("llama_cpp")
        if lc:
            ui.out.print(f"llama.cpp vs MLX: top-1 agreement {lc['position_top1_agreement']:.3f} at every prompt "
                         f"position, KL mean {lc['kl_mean']:.2e} / max {lc['kl_max']:.2e} nats, max |Δlogit| "
                         f"{lc['logits_max_abs_diff']:.3g}, greedy continuations identical: {lc['all_match']}")
    if to == "ollama":
        ui.out.print(f"next: cd {res.out} && ollama create NAME -f Modelfile && ollama run NAME")
    elif to == "gguf":
        ui.out.print(f"next: llama-cli -m {res.out}/model.gguf -cnv")
    else:
        ui.out.print(f"next: notme chat --model {res.out}")


COMMANDS = [export_cmd]
