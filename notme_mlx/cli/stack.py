"""`notme stack`: show, edit, diff and fuse five-layer adapter stacks."""

from pathlib import Path

import click
from rich.table import Table
from rich.tree import Tree

from .. import ui
from ..errors import NotmeError
from ..export.fused import fuse_stack
from ..models import model_fingerprint
from ..stack import Stack, load_stack, save_stack
from ..stack.compose import check_stack
from ..stack.ops import add_layer, describe, diff, remove_layer, scale_layer, swap_layer


def _load(path):
    return load_stack(path)


@click.group("stack")
def stack_group():
    """Base → Domain → Use → Mode → Identity: list, compose, swap and fuse adapter layers.

    \b
    Examples:
      notme stack init stacks/me.yaml --base smollm2-135m
      notme stack add stacks/me.yaml identity alex runs/genesis-identity/adapters
      notme stack show stacks/genesis.yaml
      notme stack swap stacks/daughter-a.yaml identity runs/daughter-a-identity/adapters
      notme stack diff stacks/genesis.yaml stacks/daughter-a.yaml
      notme stack fuse stacks/genesis.yaml --out exports/genesis-fused
    """


@stack_group.command("init")
@click.argument("path", type=click.Path())
@click.option("--base", "base_spec", required=True, help="Base model spec.")
@click.option("--fingerprint/--no-fingerprint", default=True, help="Record the base weights' sha256.")
def init_cmd(path, base_spec, fingerprint):
    """Create an empty stack manifest on BASE."""
    if Path(path).exists():
        raise NotmeError(f"{path}: already exists")
    fp = model_fingerprint(base_spec) if fingerprint else None
    save_stack(Stack(base_spec, fp), path)
    ui.info(f"[green]wrote[/green] {path}")


@stack_group.command("show")
@click.argument("path", type=click.Path(exists=True))
@click.option("--check/--no-check", default=True, help="Check base fingerprint and training provenance.")
def show_cmd(path, check):
    """Tree of the stack with parameter counts and provenance."""
    st = _load(path)
    root = Tree(f"[bold]{path}[/bold]  base [cyan]{st.base_spec}[/cyan] "
                f"({(st.base_fingerprint or 'no fingerprint')[:12]})")
    node = root
    for d in describe(st):
        if not d["exists"]:
            label = f"[red]{d['layer']}[/red] {d['name']}  missing: {d['path']}"
        else:
            label = (f"[green]{d['layer']}[/green] [bold]{d['name']}[/bold] ×{d['scale']:g}  "
                     f"{d['params']:,} params, rank {d['rank']}, {d['modules']} modules  "
                     f"recipe={d['recipe'] or '?'} on [{', '.join(d['trained_on']) or 'base'}]  {d['sha256'][:10]}")
        node = node.add(label)
    ui.out.print(root)
    if check:
        problems = check_stack(st, st.base_fingerprint, force=True)
        for p in problems:
            ui.warn(p)
        if not problems:
            ui.info("[green]provenance ok[/green]: every layer was trained on this base and the layers below it")


def _edit(path, fn):
    st = fn(_load(path))
    save_stack(st, path)
    ui.info(f"[green]updated[/green] {path}: {' → '.join(['base'] + [f'{l.layer}:{l.name}' for l in st.layers])}")


@stack_group.command("add")
@click.argument("path", type=click.Path(exists=True))
@click.argument("layer", type=click.Choice(["domain", "use", "mode", "identity"]))
@click.argument("name")
@click.argument("adapter", type=click.Path(exists=True))
@click.option("--scale", default=1.0, type=float)
def add_cmd(path, layer, name, adapter, scale):
    """Add an adapter folder as LAYER named NAME."""
    _edit(path, lambda st: add_layer(st, layer, name, adapter, scale))


@stack_group.command("remove")
@click.argument("path", type=click.Path(exists=True))
@click.argument("name")
def remove_cmd(path, name):
    """Remove a layer (by name or kind)."""
    _edit(path, lambda st: remove_layer(st, name))


@stack_group.command("swap")
@click.argument("path", type=click.Path(exists=True))
@click.argument("name")
@click.argument("adapter", type=click.Path(exists=True))
@click.option("--rename", default=None, help="New layer name.")
def swap_cmd(path, name, adapter, rename):
    """Replace a layer's adapter (e.g. a Daughter's identity)."""
    _edit(path, lambda st: swap_layer(st, name, adapter, rename))


@stack_group.command("scale")
@click.argument("path", type=click.Path(exists=True))
@click.argument("name")
@click.argument("value", type=float)
def scale_cmd(path, name, value):
    """Set a layer's scale (0 turns it off)."""
    _edit(path, lambda st: scale_layer(st, name, value))


@stack_group.command("diff")
@click.argument("a", type=click.Path(exists=True))
@click.argument("b", type=click.Path(exists=True))
def diff_cmd(a, b):
    """Compare two stacks layer by layer."""
    t = Table(title=f"{a}  vs  {b}")
    for c in ("layer", "A", "B", "same"):
        t.add_column(c)
    for r in diff(_load(a), _load(b)):
        t.add_row(r["layer"], r["a"], r["b"], "[green]yes[/green]" if r["same"] else "[yellow]no[/yellow]")
    ui.out.print(t)


@stack_group.command("fuse")
@click.argument("path", type=click.Path(exists=True))
@click.option("--out", required=True, type=click.Path())
@click.option("--layers", default=None, help="Comma-separated names/kinds to fuse (default: all).")
@click.option("--dtype", type=click.Choice(["float16", "bfloat16", "float32"]), default="float16")
@click.option("--force", is_flag=True)
def fuse_cmd(path, out, layers, dtype, force):
    """Merge layers into the base weights (dense) and write an mlx-lm/HF directory."""
    fuse_stack(_load(path), out, layers.split(",") if layers else None, dtype, force)
    ui.info(f"[green]wrote[/green] {out}")


COMMANDS = [stack_group]
