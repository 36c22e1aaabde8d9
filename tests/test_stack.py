"""The five-layer stack: training on frozen lower layers, composing, swapping, provenance."""

from __future__ import annotations

import io
import shutil

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np
import pytest
from click.testing import CliRunner
from mlx.utils import tree_flatten

from notme_mlx.cli import main
from notme_mlx.errors import NotmeError
from notme_mlx.lora import (
    LoRAConfig, adapter_names, adapter_parameters, apply_lora, fuse, get_meta, load_adapter, lora_modules,
    read_adapter_config,
)
from notme_mlx.models import load_model, model_fingerprint
from notme_mlx.models.generate import ChatState, repl
from notme_mlx.recipe import load_recipe
from notme_mlx.stack import (
    Stack, StackLayer, load_for_training, load_stack, load_stack_into, load_stack_model, parse_stack,
    save_stack,
)
from notme_mlx.stack.manifest import adapter_hash
from notme_mlx.train.metrics import read_metrics
from notme_mlx.train.trainer import train
from test_train import make_examples, write_jsonl


PROMPT = "status? I hope this helps, the parser is fixed. Does that make sense?"


@pytest.fixture(scope="module")
def trained(tiny_model_dir, tmp_path_factory):
    """Train domain on the bare base, then two identity layers on top of it (Genesis, Daughter)."""
    tmp = tmp_path_factory.mktemp("stack")
    d = tmp / "data"
    d.mkdir()
    write_jsonl(d / "train.jsonl", make_examples(16, seed=0))
    write_jsonl(d / "other.jsonl", make_examples(16, seed=5, cue=" Want me to go ahead?"))

    def run(name, stack=None, layer=None, data="train.jsonl", seed=0):
        over = {"model": str(tiny_model_dir), "data.train": str(d / data), "data.valid": None, "data.max_seq_len": 64,
                "out_dir": str(tmp / "runs"), "name": name, "lora.rank": 4, "lora.alpha": 8, "batch_size": 4,
                "max_steps": 3, "eval_every": 0, "save_every": 0, "optimizer.lr": 1e-2, "seed": seed,
                "schedule.type": "constant"}
        if stack:
            over.update({"stack": str(stack), "train_layer": layer})
        return train(load_recipe(None, over)).adapter_dir

    domain = run("domain", stack=_write(tmp / "s0.yaml", tiny_model_dir, []), layer="domain")
    base_stack = _write(tmp / "genesis-base.yaml", tiny_model_dir, [("domain", "law", domain)])
    ident_a = run("ident-a", stack=base_stack, layer="identity")
    ident_b = run("ident-b", stack=base_stack, layer="identity", data="other.jsonl", seed=1)
    genesis = _write(tmp / "genesis.yaml", tiny_model_dir, [("domain", "law", domain), ("identity", "alex", ident_a)])
    return {"tmp": tmp, "domain": domain, "a": ident_a, "b": ident_b, "genesis": genesis, "base": base_stack}


def _write(path, model_dir, layers):
    st = Stack(str(model_dir), model_fingerprint(str(model_dir)),
               tuple(StackLayer(k, n, str(p)) for k, n, p in layers))
    save_stack(st, path)
    return path


def _logits(model, tok):
    return np.array(model(mx.array([tok.encode(PROMPT)]))[0])


def test_upper_layer_training_leaves_lower_bit_identical(trained, tiny_model_dir):
    before = mx.load(str(trained["domain"] / "adapters.safetensors"))
    # the identity runs loaded `law` and trained on top; its file and the in-memory copy are untouched

    cfg = read_adapter_config(trained["a"])["notme"]
    assert cfg["trained_on"] == [{"name": "law", "layer": "domain", "sha256": adapter_hash(trained["domain"])}]
    model, tok, info = load_model(str(tiny_model_dir))
    load_stack_into(model, trained["genesis"], info)

    for k, v in adapter_parameters(model, "law").items():
        np.testing.assert_array_equal(np.array(v), np.array(before[k]))
    assert cfg["base_fingerprint"] == info["fingerprint"]


def test_stack_equals_fused_lower_plus_upper(trained, tiny_model_dir):
    model, tok, info = load_model(str(tiny_model_dir))
    load_stack_into(model, trained["genesis"], info)
    stacked = _logits(model, tok)
    m2, _, _ = load_model(str(tiny_model_dir))
    load_stack_into(m2, trained["genesis"], info, layers=["law"])
    fuse(m2)  # lower layer merged into the base weights

    load_adapter(m2, trained["a"], name="alex")
    np.testing.assert_allclose(_logits(m2, tok), stacked, rtol=1e-4, atol=1e-4)
    # and the identity layer matters
    bare, _, _ = load_model(str(tiny_model_dir))
    assert np.abs(_logits(bare, tok) - stacked).max() > 1e-3


def test_daughter_swap_equals_fresh_load(trained, tiny_model_dir, tmp_path):
    dpath = tmp_path / "daughter.yaml"
    shutil.copy(trained["genesis"], dpath)
    r = CliRunner().invoke(main, ["stack", "swap", str(dpath), "identity", str(trained["b"]), "--rename", "sam"])
    assert r.exit_code == 0, r.output
    st = load_stack(dpath)
    assert [l.name for l in st.layers] == ["law", "sam"]
    model, tok, info = load_model(str(tiny_model_dir))
    load_stack_into(model, st, info)
    fresh, _, _ = load_model(str(tiny_model_dir))

    load_adapter(fresh, trained["domain"], name="x")
    load_adapter(fresh, trained["b"], name="y")
    np.testing.assert_allclose(_logits(model, tok), _logits(fresh, tok), rtol=1e-5, atol=1e-5)
    r = CliRunner().invoke(main, ["stack", "diff", str(trained["genesis"]), str(dpath)])
    assert r.exit_code == 0 and "identity" in r.output


def test_mismatched_base_or_lower_layers_refused(trained, tiny_model_untied_dir, tiny_model_dir, tmp_path):
    st = load_stack(trained["genesis"])
    other, _, oinfo = load_model(str(tiny_model_untied_dir))
    with pytest.raises(NotmeError, match="different base model"):
        load_stack_into(other, st, oinfo)
    # identity trained on top of `law` placed on the bare base -> refused; --force loads it
    bad = _write(tmp_path / "bad.yaml", tiny_model_dir, [("identity", "alex", trained["a"])])
    model, tok, info = load_model(str(tiny_model_dir))
    with pytest.raises(NotmeError, match="was trained on top of \\[law\\]"):
        load_stack_into(model, bad, info)
    assert load_stack_into(model, bad, info, force=True)[0]["name"] == "alex"


def test_manifest_validation_reports_everything():
    with pytest.raises(Exception) as e:
        parse_stack({"base": {"spec": "x", "fingerprnt": "y"}, "layers": [
            {"layer": "identity", "name": "a", "path": "p"}, {"layer": "domain", "name": "a", "path": "q"},
            {"layer": "vibe", "path": "r"}, {"layer": "use", "name": "u", "path": "s", "scael": 1}]})
    msg = str(e.value)
    for part in ("did you mean 'fingerprint'", "domain comes after a higher layer", "duplicate layer name 'a'",
                 "layer 'vibe' must be one of", "did you mean 'scale'"):
        assert part in msg, part


def test_show_and_fuse_cli(trained, tiny_model_dir, tmp_path):
    r = CliRunner().invoke(main, ["stack", "show", str(trained["genesis"])])
    assert r.exit_code == 0, r.output
    assert "law" in r.output and "alex" in r.output and "provenance ok" in r.output
    out = tmp_path / "fused"
    r = CliRunner().invoke(main, ["stack", "fuse", str(trained["genesis"]), "--out", str(out), "--dtype", "float32"])
    assert r.exit_code == 0, r.output
    model, tok, info = load_model(str(tiny_model_dir))
    load_stack_into(model, trained["genesis"], info)
    m2, _, _ = load_model(str(out))
    np.testing.assert_allclose(_logits(m2, tok), _logits(model, tok), rtol=1e-4, atol=1e-4)


def test_chat_layers_toggle_and_scale(trained, tiny_model_dir):
    model, tok, info, _ = load_stack_model(trained["genesis"])
    full = _logits(model, tok)
    out = io.StringIO()
    repl(ChatState(model, tok, max_tokens=2, temp=0.0), io.StringIO("/layers alex\n"), out)
    assert "alex         off" in out.getvalue()
    only_law, _, _, _ = load_stack_model(trained["genesis"], layers=["law"])
    np.testing.assert_allclose(_logits(model, tok), _logits(only_law, tok), rtol=1e-5, atol=1e-5)
    repl(ChatState(model, tok, max_tokens=2, temp=0.0), io.StringIO("/layers alex\n/scale law 0\n"), out)
    scales = {n: m.adapters[n].scale for _, m in lora_modules(model) for n in m.adapters}
    assert scales["law"] == 0.0 and scales["alex"] > 0
    repl(ChatState(model, tok, max_tokens=2, temp=0.0), io.StringIO("/scale law 1\n"), io.StringIO())
    np.testing.assert_allclose(_logits(model, tok), full, rtol=1e-5, atol=1e-5)


def test_optimizer_steps_on_upper_leave_lower_and_base_bit_identical(trained, tiny_model_dir):
    """In memory: AdamW (with weight decay, which would touch any parameter it sees) on the upper
    adapter for 3 steps; the lower adapter and base weights are bit-identical, the upper moved."""


    model, tok, info = load_model(str(tiny_model_dir))
    load_stack_into(model, trained["base"], info)
    apply_lora(model, LoRAConfig(rank=4, alpha=8), name="identity", trainable=True)
    snap = {k: np.array(v) for k, v in tree_flatten(model.parameters())}
    opt = optim.AdamW(learning_rate=1e-2, weight_decay=0.1)
    ids = mx.array([tok.encode(PROMPT)])

    def loss_fn(m):
        return nn.losses.cross_entropy(m(ids[:, :-1]), ids[:, 1:], reduction="mean")

    vg = nn.value_and_grad(model, loss_fn)
    for _ in range(3):
        _, g = vg(model)
        opt.update(model, g)
        mx.eval(model.parameters(), opt.state)
    after = dict(tree_flatten(model.parameters()))
    moved = [k for k in snap if not np.array_equal(snap[k], np.array(after[k]))]
    assert moved and all(".adapters.identity.lora_" in k for k in moved)
    assert any(k.endswith("identity.lora_b") for k in moved)


def test_fuse_lower_for_training_matches_unfused(trained, tiny_model_dir):
    m1, tok, _ = load_model(str(tiny_model_dir))
    load_for_training(trained["genesis"], "identity", model=m1, tokenizer=tok)
    m2, _, _ = load_model(str(tiny_model_dir))
    load_for_training(trained["genesis"], "identity", model=m2, tokenizer=tok, fuse_lower=True)
    assert adapter_names(m1) == ["law"] and not lora_modules(m2)
    np.testing.assert_allclose(_logits(m2, tok), _logits(m1, tok), rtol=1e-5, atol=1e-5)

    assert get_meta(m2)["trained_on"] == get_meta(m1)["trained_on"]


def test_recipe_fuse_lower_trains_same_upper_layer(trained, tiny_model_dir, tmp_path):
    """`fuse_lower: true` merges the frozen lower layers into the base before training the upper
    one; the first-step loss equals the unfused stacked run's."""

    d = trained["tmp"] / "data"
    losses = []
    for fl in (False, True):
        over = {"model": str(tiny_model_dir), "data.train": str(d / "train.jsonl"), "data.valid": None,
                "data.max_seq_len": 64, "out_dir": str(tmp_path / "runs"), "name": f"fl-{fl}", "lora.rank": 4,
                "lora.alpha": 8, "batch_size": 4, "max_steps": 2, "eval_every": 0, "save_every": 0,
                "optimizer.lr": 1e-2, "schedule.type": "constant", "stack": str(trained["base"]),
                "train_layer": "identity", "fuse_lower": fl}
        res = train(load_recipe(None, over))
        losses.append([m["loss"] for m in read_metrics(res.run_dir / "metrics.jsonl") if "loss" in m])
    assert abs(losses[0][0] - losses[1][0]) < 1e-4 * abs(losses[0][0]), losses
