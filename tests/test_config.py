"""Recipes: validation (every error at once, nearest key), precedence, base overlays."""

from __future__ import annotations

import pytest
import yaml

from notme_mlx.errors import ConfigError
from notme_mlx.recipe import (
    Recipe, apply_overrides, dump_recipe, field_docs, load_recipe, parse_override, recipe_from_dict,
)


def _write(path, data):
    path.write_text(yaml.safe_dump(data))
    return path


def test_defaults_from_source_material():
    r = load_recipe(None)
    assert (r.optimizer.lr, r.lora.rank, r.lora.alpha, r.batch_size) == (2e-4, 16, 32.0, 4)
    assert 1 <= r.epochs <= 3
    assert r.lora.alpha / r.lora.rank == 2.0


def test_precedence_set_over_recipe_over_defaults(tmp_path):
    p = _write(tmp_path / "r.yaml", {"lora": {"rank": 8}, "batch_size": 2, "seed": 5})
    r = load_recipe(p, ["lora.rank=32", "optimizer.lr=1e-3"])
    assert r.lora.rank == 32            # --set beats the recipe
    assert r.batch_size == 2            # recipe beats the default (4)
    assert r.optimizer.lr == 1e-3       # --set beats the default
    assert r.lora.alpha == 32.0         # untouched default
    assert r.seed == 5 and r.name == "r"  # name defaults to the file stem


def test_unknown_keys_suggest_nearest_and_all_errors_reported(tmp_path):
    p = _write(tmp_path / "bad.yaml", {
        "lora": {"rnak": 8, "alpha": "big"},
        "optimzer": {"lr": 1e-3},
        "data": {"batching": "bukcet"},
        "batch_size": 2.5,
        "grad_clip": True,
    })
    with pytest.raises(ConfigError) as e:
        load_recipe(p)
    msg = str(e.value)
    assert "\n" not in msg and "6 problems" in msg
    assert "lora.rnak: unknown key (did you mean 'lora.rank'?)" in msg
    assert "optimzer: unknown key (did you mean 'optimizer'?)" in msg
    assert "lora.alpha: expected number, got str 'big'" in msg
    assert "data.batching: expected one of 'bucket', 'pack'" in msg and "did you mean 'bucket'" in msg
    assert "batch_size: expected integer, got float 2.5" in msg
    assert msg.startswith(str(p))


def test_bool_is_not_a_number_and_value_checks(tmp_path):
    with pytest.raises(ConfigError, match=r"grad_clip: expected number or null, got bool"):
        recipe_from_dict({"grad_clip": True})
    with pytest.raises(ConfigError, match=r"lora.rank: must be >= 1, got 0"):
        recipe_from_dict({"lora": {"rank": 0}})
    with pytest.raises(ConfigError, match=r"phases\[0\].type: unknown phase type 'sfft'.*did you mean 'sft'"):
        recipe_from_dict({"phases": [{"name": "a", "type": "sfft"}]})


def test_base_overlay_merges_dicts_and_replaces_lists(tmp_path):
    _write(tmp_path / "base.yaml", {"lora": {"rank": 8, "alpha": 16}, "batch_size": 3,
                                    "phases": [{"name": "a"}, {"name": "b"}]})
    (tmp_path / "sub").mkdir()
    p = _write(tmp_path / "sub" / "over.yaml", {"base": "../base.yaml", "lora": {"rank": 4},
                                                "phases": [{"name": "only"}]})
    r = load_recipe(p)
    assert (r.lora.rank, r.lora.alpha, r.batch_size) == (4, 16.0, 3)
    assert [ph.name for ph in r.phases] == ["only"]


def test_base_cycle_is_an_error(tmp_path):
    _write(tmp_path / "a.yaml", {"base": "b.yaml"})
    _write(tmp_path / "b.yaml", {"base": "a.yaml"})
    with pytest.raises(ConfigError, match="loops back"):
        load_recipe(tmp_path / "a.yaml")


def test_set_parsing_lists_and_indexes():
    assert parse_override("lora.targets=[q_proj, v_proj]") == (["lora", "targets"], ["q_proj", "v_proj"])
    assert parse_override("grad_clip=null") == (["grad_clip"], None)
    data = {"phases": [{"name": "a", "penalty_weight": 0.0}, {"name": "b"}]}
    out = apply_overrides(data, ["phases.1.penalty_weight=5"])
    assert out["phases"][1]["penalty_weight"] == 5 and "penalty_weight" not in data["phases"][1]
    with pytest.raises(ConfigError, match="key=value"):
        parse_override("lora.rank")
    with pytest.raises(ConfigError, match="index 7 out of range"):
        apply_overrides(data, ["phases.7.name=x"])


def test_missing_and_invalid_yaml(tmp_path):
    with pytest.raises(ConfigError, match="recipe not found"):
        load_recipe(tmp_path / "nope.yaml")
    (tmp_path / "x.yaml").write_text("lora: [unclosed\n")
    with pytest.raises(ConfigError, match=r"x.yaml:\d+: invalid YAML"):
        load_recipe(tmp_path / "x.yaml")


def test_frozen_roundtrip_and_docs():
    r = load_recipe(None, {"lora.rank": 4, "phases": [{"name": "learn", "penalty_weight": 0}]})
    with pytest.raises(Exception):
        r.lora.rank = 5  # frozen
    again = recipe_from_dict(yaml.safe_load(dump_recipe(r)))
    assert again == r
    keys = {row[0] for row in field_docs()}
    assert {"lora.rank", "optimizer.betas", "schedule.warmup_steps", "phases[].penalty_weight",
            "detect.extra_cues"} <= keys
    assert all(row[3] for row in field_docs()), "every field has help text"
    assert isinstance(Recipe(), Recipe)


def test_builder_options_live_in_the_build_section():
    r = load_recipe(None, {"build.session_gap": "45m", "build.mode": "mirror", "data.max_seq_len": 512})
    assert (r.build.session_gap, r.build.mode, r.data.max_seq_len) == ("45m", "mirror", 512)
    assert r.build.gap_seconds() == 2700.0
    assert recipe_from_dict(yaml.safe_load(dump_recipe(r))) == r
    with pytest.raises(ConfigError, match=r"build.mode: expected one of .*did you mean 'mirror'"):
        load_recipe(None, {"build.mode": "mirorr"})
    with pytest.raises(ConfigError, match=r"build.sesion_gap: unknown key \(did you mean 'build.session_gap'\?\)"):
        load_recipe(None, {"build.sesion_gap": "1h"})
    # a builder key in the data section names the section it belongs to; every problem at once
    with pytest.raises(ConfigError, match=r"2 problems: data.session_gap: unknown key \(did you mean "
                                          r"'build.session_gap'\?\); build.seed: expected integer, got str 'x'"):
        load_recipe(None, {"data.session_gap": "1h", "build.seed": "x"})
    with pytest.raises(ConfigError, match="build.safety_fraction: expected 0 <= value < 1"):
        load_recipe(None, {"build.safety_fraction": 1.5})
    with pytest.raises(ConfigError, match="build.session_gap: expected e.g."):
        load_recipe(None, {"build.session_gap": "soon"})


def test_base_chain_reaches_the_builder(tmp_path):
    """`notme data build` and `notme train` read the same max_seq_len through a base: chain."""
    _write(tmp_path / "base.yaml", {"data": {"max_seq_len": 640}, "build": {"seed": 4}})
    p = _write(tmp_path / "r.yaml", {"base": "base.yaml", "build": {"mode": "mirror"}})
    r = load_recipe(p)
    assert (r.data.max_seq_len, r.build.seed, r.build.mode) == (640, 4, "mirror")


def test_extra_cues_mappings_and_plain_phrases(tmp_path):
    from notme_mlx.detect import Detector

    (tmp_path / "lex.yaml").write_text("categories: {}\n")
    p = _write(tmp_path / "r.yaml", {"detect": {"extra_yaml": "lex.yaml", "extra_cues": [
        {"category": "hedging", "pattern": "per my reckoning"}, "if that works (for you)"]}})
    r = load_recipe(p)
    assert r.detect.extra_yaml == str((tmp_path / "lex.yaml").resolve())  # relative to the recipe file
    a, b = r.detect.extra_cues
    assert (a.category, a.pattern) == ("hedging", "per my reckoning")
    assert b.category == "custom" and b.pattern == r"if that works \(for you\)"  # a phrase is matched literally
    det = Detector.from_config(extra_cues=[c.to_lexicon() for c in r.detect.extra_cues])
    assert det.detect("Per my reckoning it is fine.").flagged
    hit = det.detect("Ship it on Monday, if that works (for you).")
    assert hit.flagged and "custom" in hit.categories
    assert not det.detect("Ship it on Monday, if that works for you.").categories or \
        "custom" not in det.detect("Ship it on Monday, if that works for you.").categories
    with pytest.raises(ConfigError, match=r"detect.extra_cues\[0\].categroy: unknown key \(did you mean "
                                          r"'detect.extra_cues\[0\].category'\?\)"):
        load_recipe(None, {"detect.extra_cues": [{"categroy": "x", "pattern": "y"}]})
    assert recipe_from_dict(yaml.safe_load(dump_recipe(r))) == r


def test_docs_list_every_field():
    from notme_mlx.recipe import RECIPES_DIR

    doc = (RECIPES_DIR.parent / "docs" / "train.md").read_text()
    missing = [k for k, *_ in field_docs() if f"`{k}`" not in doc]
    assert not missing, f"docs/train.md lacks {missing}"


def test_revise_and_eval_take_the_recipes_detect_section(tmp_path):
    """`notme data revise` (like data build, synth and eval) builds its detector from the recipe's
    detect: section: a cue only the recipe adds flags the reply, and the recipe's engine is used."""
    import json

    from click.testing import CliRunner

    from notme_mlx.cli import main

    inp = tmp_path / "in.jsonl"
    inp.write_text(json.dumps({"prompt": "What is it?", "rejected": "The answer is 42, per my reckoning."}) + "\n")
    r = _write(tmp_path / "r.yaml", {"detect": {"engine": "lexicon",
                                                "extra_cues": [{"category": "hedging", "pattern": "per my reckoning"}]}})
    plain = CliRunner().invoke(main, ["data", "revise", str(inp), "-o", str(tmp_path / "a.jsonl"), "--engine", "lexicon"])
    assert plain.exit_code == 0, plain.output
    assert (tmp_path / "a.jsonl").read_text() == ""  # the bundled lexicon does not flag it
    res = CliRunner().invoke(main, ["data", "revise", str(inp), "-o", str(tmp_path / "b.jsonl"), "--recipe", str(r)])
    assert res.exit_code == 0, res.output
    rows = [json.loads(x) for x in (tmp_path / "b.jsonl").read_text().splitlines()]
    assert len(rows) == 1 and "reckoning" not in rows[0]["chosen"] and "42" in rows[0]["chosen"]
    for cmd in (["eval"], ["data", "synth"]):
        help_text = CliRunner().invoke(main, [*cmd, "--help"]).output
        assert "--recipe" in help_text and "detect.engine" in help_text
