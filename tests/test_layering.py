"""The package's layers, checked from the source: every module's imports (parsed with `ast`).

Layers, lowest first (docs/architecture.md explains each):

    base (io, errors, ui, cpu_blas, cpu_kernels, models, lora, loss, recipe, resources) -> ingest
    -> samples -> detect -> data -> train -> cluster -> stack -> eval -> export -> synth -> pipelines
    -> bench -> cli

A module may import its own layer and the layers below it, never one above. It may not import
a private name (`_name`, or a `_module`) of another area (an area is a top-level module or
subpackage of notme_mlx). Imports sit at module level; a function-local import is allowed only
for a heavy optional dependency (ALLOWED_LOCAL).
"""

from __future__ import annotations

import ast
from functools import lru_cache
from pathlib import Path

import pytest

import notme_mlx

PKG = Path(notme_mlx.__file__).resolve().parent
ROOT = PKG.parent

LAYERS = [
    ("base", {"", "io", "errors", "ui", "cpu_blas", "cpu_kernels", "models", "lora", "loss", "recipe", "resources"}),
    ("ingest", {"ingest"}),
    ("samples", {"samples"}),
    ("detect", {"detect"}),
    ("data", {"data"}),
    ("train", {"train"}),
    ("cluster", {"cluster"}),
    ("stack", {"stack"}),
    ("eval", {"eval"}),
    ("export", {"export"}),
    ("synth", {"synth"}),
    ("pipelines", {"pipelines"}),
    ("bench", {"bench"}),
    ("cli", {"cli"}),
]
LEVEL = {area: i for i, (_, areas) in enumerate(LAYERS) for area in areas}
LAYER_NAME = {area: name for name, areas in LAYERS for area in areas}

# Function-local imports allowed: heavy modules only some commands need.
ALLOWED_LOCAL = {
    "matplotlib",  # about a second to import; only the eval report's plots use it
    "transformers",  # seconds to import; only GGUF tokenizers and a token-count fallback use it
    "llama_cpp",  # the optional [verify] extra (builds llama.cpp)
    "tokenizers",  # transformers' tokenizer backend; only SentencePiece GGUF vocabularies need it
}



def modules() -> list[Path]:
    return sorted(p for p in PKG.rglob("*.py") if "__pycache__" not in p.parts)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def area(module: str) -> str | None:
    """notme_mlx.train.loop -> "train"; notme_mlx.io -> "io"; notme_mlx -> ""; others -> None."""
    parts = module.split(".")
    if parts[0] != "notme_mlx":
        return None
    return parts[1] if len(parts) > 1 else ""


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _is_module(dotted: str) -> bool:
    """True when `dotted` names a module or package file under ROOT (not a name inside a module)."""
    base = ROOT.joinpath(*dotted.split("."))
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


@lru_cache(maxsize=None)
def imports(path: Path) -> list[dict]:
    """Each import in `path`: {"line", "module" (absolute), "names", "local" (inside a function)}."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    me = module_name(path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    parents = {}
    for node in ast.walk(tree):
        for child in ast.iter_child_nodes(node):
            parents[child] = node
    out = []
    for node in ast.walk(tree):
        if not isinstance(node, (ast.Import, ast.ImportFrom)):
            continue
        up, local = parents.get(node), False
        while up is not None:
            if isinstance(up, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                local = True
                break
            up = parents.get(up)
        if isinstance(node, ast.Import):
            for alias in node.names:
                out.append({"line": node.lineno, "module": alias.name, "names": [], "local": local})
            continue
        if node.level:
            base = package.split(".")
            base = base[: len(base) - (node.level - 1)]
            mod = ".".join(base + ([node.module] if node.module else []))
        else:
            mod = node.module or ""
        names = [a.name for a in node.names]
        if node.module is None or _is_module(f"{mod}.{names[0]}"):  # `from . import x` of submodules
            for name in names:
                if _is_module(f"{mod}.{name}"):
                    out.append({"line": node.lineno, "module": f"{mod}.{name}", "names": [], "local": local})
                else:
                    out.append({"line": node.lineno, "module": mod, "names": [name], "local": local})
        else:
            out.append({"line": node.lineno, "module": mod, "names": names, "local": local})
    return out


def violations(path: Path) -> dict[str, list[str]]:
    me = module_name(path)
    mine = area(me)
    rel = path.relative_to(ROOT).as_posix()
    found = {"layer": [], "private": [], "local": []}
    for imp in imports(path):
        target, where = imp["module"], f"{rel}:{imp['line']}"
        other = area(target)
        if other is not None and other not in LEVEL:
            found["layer"].append(f"{where}: {target} is in no layer (add its area to LAYERS)")
        elif other is not None and mine in LEVEL and LEVEL[other] > LEVEL[mine]:
            found["layer"].append(f"{where}: {LAYER_NAME[mine]} imports {target} ({LAYER_NAME[other]}, a higher layer)")
        if other is not None and other != mine:
            private = [p for p in target.split(".")[1:] if _is_private(p)]
            private += [n for n in imp["names"] if _is_private(n)]
            if private:
                found["private"].append(f"{where}: imports private {', '.join(private)} from {target}")
        if imp["local"] and target.split(".")[0] not in ALLOWED_LOCAL:
            found["local"].append(f"{where}: function-local import of {target}")
    return found


FILES = modules()
IDS = [p.relative_to(ROOT).as_posix() for p in FILES]


def _check(path: Path, rule: str):
    bad = violations(path)[rule]
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("path", FILES, ids=IDS)
def test_imports_go_down_the_layers(path):
    _check(path, "layer")


@pytest.mark.parametrize("path", FILES, ids=IDS)
def test_no_private_names_across_areas(path):
    _check(path, "private")


@pytest.mark.parametrize("path", FILES, ids=IDS)
def test_imports_at_module_level(path):
    _check(path, "local")


def test_every_area_has_a_layer():
    areas = {area(module_name(p)) for p in FILES}
    assert areas <= set(LEVEL), sorted(areas - set(LEVEL))


def test_checker_catches_what_it_should(tmp_path, monkeypatch):
    """The checker itself, on a throwaway package laid out like notme_mlx."""
    pkg = tmp_path / "notme_mlx"
    for d in ("train", "eval"):
        (pkg / d).mkdir(parents=True)
        (pkg / d / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "train" / "bad.py").write_text(
        "from ..eval import run_eval\n"            # train -> eval: up a layer
        "from ..eval.report import _private\n"     # and a private name of another area
        "def f():\n    import json\n    import matplotlib\n")  # a local import (json), an allowed one
    (pkg / "eval" / "good.py").write_text("from ..train import loop\nfrom . import _helpers\n")
    monkeypatch.setattr(__import__(__name__), "ROOT", tmp_path)
    imports.cache_clear()
    try:
        bad = violations(pkg / "train" / "bad.py")
        assert [len(bad[k]) for k in ("layer", "private", "local")] == [2, 1, 1], bad
        assert "train imports notme_mlx.eval (eval, a higher layer)" in bad["layer"][0]
        assert "private _private from notme_mlx.eval.report" in bad["private"][0]
        assert bad["local"] == ["notme_mlx/train/bad.py:4: function-local import of json"]
        good = violations(pkg / "eval" / "good.py")
        assert good == {"layer": [], "private": [], "local": []}
    finally:
        imports.cache_clear()


def count_local_imports() -> int:
    """Function-local imports in the whole package (reported in docs/architecture.md)."""
    return sum(imp["local"] for p in FILES for imp in imports(p))
