"""The shipped Genesis and Daughter recipes + stacks, end to end on the bundled samples (slow).

Bundled samples -> ingest -> data build (assistant mode for Domain, mirror mode for Alex's
Use/Mode/Identity, mirror mode on Sam's 1:1 chat for the Daughter) -> train genesis-domain, -use, -mode, -identity, daughter-a-mode, daughter-a-identity
from `recipes/` (tiny model instead of SmolLM2, each phase capped at 2 steps) -> load the
shipped `stacks/genesis.yaml` and `stacks/daughter-a.yaml` (copied, base pointed at the tiny
model): provenance checks pass, Domain/Use are shared bit for bit, Mode/Identity differ.
"""

from __future__ import annotations

from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
ORDER = ["genesis-domain", "genesis-use", "genesis-mode", "genesis-identity", "daughter-a-mode",
         "daughter-a-identity"]


@pytest.mark.slow
def test_genesis_and_daughter_recipes_end_to_end(tiny_model_dir, tmp_path):
    from notme_mlx.data.builder import build_dataset
    from notme_mlx.recipe import BuildConfig
    from notme_mlx.ingest import ingest_to_file
    from notme_mlx.lora import adapter_names
    from notme_mlx.models import load_model
    from notme_mlx.samples import IDENTITY_FILE, OWNER, sample_paths
    from notme_mlx.stack import check_stack, load_stack, load_stack_into
    from notme_mlx.stack.manifest import adapter_hash
    from notme_mlx.recipe import load_raw, load_recipe
    from notme_mlx.train.trainer import train

    msgs = tmp_path / "messages.jsonl"
    ingest_to_file(sample_paths(), msgs, me=[OWNER], identity=IDENTITY_FILE, progress=False)
    data = {}
    for mode in ("assistant", "mirror"):
        build_dataset(msgs, tmp_path / mode, BuildConfig(mode=mode), force=True, max_seq_len=128)
        data[mode] = tmp_path / mode
    # the Daughter is another person: Sam Okafor, from the bundled 1:1 WhatsApp chat, mirror mode
    sam = [p for p in sample_paths() if "Sam Okafor" in p.name]
    ingest_to_file(sam, tmp_path / "sam.jsonl", me=["Sam Okafor"], progress=False)
    build_dataset(tmp_path / "sam.jsonl", tmp_path / "sam", BuildConfig(mode="mirror"), force=True, max_seq_len=128)
    data["daughter"] = tmp_path / "sam"
    (tmp_path / "stacks").mkdir()
    for s in ("genesis", "daughter-a"):  # the shipped manifests, base pointed at the tiny model
        m = yaml.safe_load((ROOT / "stacks" / f"{s}.yaml").read_text())
        m["base"] = {"spec": str(tiny_model_dir)}
        (tmp_path / "stacks" / f"{s}.yaml").write_text(yaml.safe_dump(m))

    for name in ORDER:
        path = ROOT / "recipes" / f"{name}.yaml"
        raw = load_raw(path)
        d = data["assistant" if name.endswith("domain") else "daughter" if name.startswith("daughter") else "mirror"]
        over = {"model": str(tiny_model_dir), "out_dir": str(tmp_path / "runs"),
                "stack": str(tmp_path / "stacks" / Path(raw["stack"]).name),
                "data.train": str(d / "train.jsonl"), "data.valid": None, "data.pairs": str(d / "pairs.jsonl"),
                "data.max_seq_len": 128, "eval_every": 0, "save_every": 0, "grad_accum": 1}
        for i, _ in enumerate(raw.get("phases") or []):
            over[f"phases.{i}.max_steps"] = 2
        recipe = load_recipe(path, over)
        assert recipe.train_layer == raw["train_layer"] and recipe.name == name
        res = train(recipe)
        assert (Path(res.adapter_dir) / "adapters.safetensors").exists()

    g, da = load_stack(tmp_path / "stacks/genesis.yaml"), load_stack(tmp_path / "stacks/daughter-a.yaml")
    model, tok, info = load_model(str(tiny_model_dir))
    assert check_stack(g, info["fingerprint"]) == [] and check_stack(da, info["fingerprint"]) == []
    for kind in ("domain", "use"):
        assert adapter_hash(g.get(kind).resolved(g.root)) == adapter_hash(da.get(kind).resolved(da.root))
    for kind in ("mode", "identity"):
        assert adapter_hash(g.get(kind).resolved(g.root)) != adapter_hash(da.get(kind).resolved(da.root))
    ids = mx.array([tok.encode("Hey, did the parser fix land?")])
    load_stack_into(model, g, info)
    assert adapter_names(model) == ["genesis-domain", "genesis-use", "genesis-mode", "genesis-identity"]
    lg = np.array(model(ids))
    m2, _, _ = load_model(str(tiny_model_dir))
    load_stack_into(m2, da, info)
    assert np.abs(np.array(m2(ids)) - lg).max() > 0  # a Daughter is a different model
