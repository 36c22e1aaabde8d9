"""Every shipped recipe in recipes/ loads and validates."""

from __future__ import annotations

from pathlib import Path

import pytest

from notme_mlx.recipe import RECIPES_DIR, load_recipe

ALL = sorted(Path(RECIPES_DIR).rglob("*.yaml"))


def test_recipes_exist():
    names = {p.relative_to(RECIPES_DIR).as_posix() for p in ALL}
    assert {"default.yaml", "quickstart.yaml", "mac.yaml", "overlays/two-phase.yaml"} <= names


@pytest.mark.parametrize("path", ALL, ids=lambda p: p.relative_to(RECIPES_DIR).as_posix())
def test_shipped_recipe_validates(path):
    r = load_recipe(path)
    assert r.name
    assert r.lora.rank >= 1 and r.optimizer.lr > 0


def test_two_phase_default_and_quickstart_shapes():
    d = load_recipe(RECIPES_DIR / "default.yaml")
    assert [p.penalty_weight for p in d.phases][:1] == [0.0] and len(d.phases) == 2
    q = load_recipe(RECIPES_DIR / "quickstart.yaml")
    assert q.data.max_seq_len <= 256 and q.lora.num_layers is not None  # CPU-sized
    assert all(p.max_steps for p in q.phases)
