"""notme as an installed tool: the wheel carries the recipes, stacks, prompt sets and samples.

The fast tests read the built wheel's file list; the slow one installs it into a fresh venv
outside the checkout and runs `notme quickstart` there, in an empty folder.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _shipped(folder: str) -> list[str]:
    return sorted(p.relative_to(ROOT / folder).as_posix() for p in (ROOT / folder).rglob("*")
                  if p.is_file() and "__pycache__" not in p.parts)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out, src = tmp_path_factory.mktemp("wheel"), tmp_path_factory.mktemp("src")
    # build from a copy: setuptools writes build/ and *.egg-info next to the sources
    for name in ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    for name in ("notme_mlx", "recipes", "stacks"):
        shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(src)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    (whl,) = out.glob("notme_mlx-*.whl")
    return whl


@pytest.mark.slow
def test_wheel_carries_recipes_stacks_prompts_and_samples(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for folder in ("recipes", "stacks"):
        files = _shipped(folder)
        assert files and {f"notme_mlx/bundled/{folder}/{f}" for f in files} <= names, folder
    for folder in ("notme_mlx/eval/prompts", "notme_mlx/samples"):
        files = [f for f in _shipped(folder) if not f.endswith(".pyc")]
        assert files and {f"{folder}/{f}" for f in files} <= names, folder
    meta = next(n for n in names if n.endswith(".dist-info/METADATA"))
    text = zipfile.ZipFile(wheel).read(meta).decode()
    assert "License-Expression: Apache-2.0" in text


@pytest.mark.slow
def test_fresh_venv_quickstart_in_empty_folder(wheel, tmp_path, tiny_model_dir):
    """pip install the wheel into a new venv, then `notme quickstart` in an empty folder (tiny model, 2+2 steps)."""
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    py = env_dir / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    r = subprocess.run([str(py), "-m", "pip", "install", "-q", str(wheel)], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    work = tmp_path / "empty"
    work.mkdir()
    where = subprocess.run([str(py), "-c", "from notme_mlx.resources import bundled_file; "
                            "print(bundled_file('recipes', 'quickstart.yaml'))"],
                           capture_output=True, text=True, env=env, cwd=work)
    assert where.returncode == 0, where.stderr
    recipe = Path(where.stdout.strip())
    assert recipe.is_relative_to(env_dir) and not recipe.is_relative_to(ROOT)  # the wheel's copy, not the checkout
    assert recipe.read_text() == (ROOT / "recipes" / "quickstart.yaml").read_text()
    r = subprocess.run([str(env_dir / "bin" / "notme"), "quickstart", "--model", str(tiny_model_dir), "--prompts", "2",
                        "--max-new-tokens", "4", "--set", "phases.0.max_steps=2", "--set", "phases.1.max_steps=2"],
                       capture_output=True, text=True, env=env, cwd=work)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    rep = json.loads((work / "runs" / "quickstart" / "quickstart_report.json").read_text())
    assert rep["train"]["steps"] == 4 and [p["name"] for p in rep["train"]["phases"]] == ["learn", "penalize"]
    assert rep["before"]["n"] == rep["after"]["n"] == 2
    assert (work / "runs" / "quickstart" / "train" / "adapters" / "adapters.safetensors").is_file()
    assert str(recipe.parent / "default.yaml") in r.stdout + r.stderr  # the next-steps hint names the installed recipes
