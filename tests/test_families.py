"""Every supported family, on tiny random models built from mlx-lm's own classes:

- our hidden-state path + fused loss head equal mlx-lm's own `model(x)` logits and cross-entropy;
- a packed row (block-diagonal mask from `stream.collate`) gives each document the logits it gets alone,
  sliding windows included;
- LoRA targets (fused projections included), training gradients, stacks and fuse;
- pipeline stages compose to the whole model.
"""

import json
import re
from types import SimpleNamespace

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from click.testing import CliRunner
from mlx.utils import tree_flatten
from mlx_lm import load as mlx_lm_load
from mlx_lm.models import olmo2

from notme_mlx.cli import main

from notme_mlx.cluster.stage import apply_stage_lora, global_lora_weights, load_stage
from notme_mlx.errors import NotmeError
from notme_mlx.lora import (LoRAConfig, adapter_names, apply_lora, fuse, lora_modules,
                            save_adapter, set_trainable)
from notme_mlx.loss import fused_token_loss, naive_token_loss, output_head
from notme_mlx.models import load_model
from notme_mlx.models.families import FAMILIES, FUSED, family_of, family_of_model, layer_window
from notme_mlx.models.tiny import TINY_CONFIGS, build_tiny_family_model, build_tiny_model, perturb_adapters
from notme_mlx.recipe import load_recipe
from notme_mlx.stack import Stack, StackLayer, load_stack, load_stack_model, save_stack
from notme_mlx.train.metrics import read_metrics
from notme_mlx.train.trainer import train
from notme_mlx.train.forward import hidden_states
from notme_mlx.train.stream import collate

NAMES = [f.name for f in FAMILIES]
V = 512


def test_every_family_has_a_tiny_model():
    assert set(TINY_CONFIGS) == set(NAMES)


@pytest.fixture(scope="module", params=NAMES)
def tiny(request):
    model, cfg = build_tiny_family_model(request.param, V, seed=3)
    return request.param, model, cfg


def _ids(B, T, seed):
    return mx.random.randint(0, V, (B, T), key=mx.random.key(seed)).astype(mx.int32)


def _our_logits(model, x, mask=None):
    h = hidden_states(model, x, mask=mask)
    w = output_head(model)
    flat = h.reshape(-1, h.shape[-1])
    # the fused loss's own head: logits = lse - (-log p) is not exposed, so use naive_token_loss's
    # definition through a one-hot check below; here the plain product (soft-capped where the family is)
    cap = getattr(w, "cap", None)
    dense = getattr(w, "weight", w)
    z = flat @ dense.T
    if cap:
        z = cap * mx.tanh(z / cap)
    return z.reshape(*h.shape[:2], -1)


def test_hidden_states_and_head_equal_mlx_lm_logits(tiny):
    name, model, _ = tiny
    x = _ids(2, 20, 0)
    ref = model(x)
    np.testing.assert_allclose(np.array(_our_logits(model, x)), np.array(ref), rtol=1e-5, atol=1e-5)


def test_fused_loss_equals_mlx_lm_cross_entropy(tiny):
    name, model, _ = tiny
    x = _ids(2, 20, 1)
    inputs, targets = x[:, :-1], x[:, 1:]
    ref = nn.losses.cross_entropy(model(inputs).astype(mx.float32), targets).mean()
    h = hidden_states(model, inputs)
    labels = mx.ones(targets.shape, mx.int32).reshape(-1)
    loss, _ = fused_token_loss(h.reshape(-1, h.shape[-1]), output_head(model), targets.reshape(-1), labels,
                               penalty_weight=0.0, chunk_size=100)
    assert abs(loss.item() - ref.item()) <= 1e-5 * max(1.0, abs(ref.item()))


def _packed_batch(lengths, seed):
    rng = np.random.default_rng(seed)
    exs = [SimpleNamespace(tokens=rng.integers(3, V, n + 1).tolist(), labels=[1] * (n + 1)) for n in lengths]
    return exs, collate(exs, [list(range(len(exs)))], pad_multiple=1)


def test_packed_rows_equal_separate_documents(tiny):
    """Each packed document's logits equal mlx-lm's logits for that document alone (RoPE is relative;
    Gemma 3's window of 8 is shorter than the documents, so window and packing are both in play)."""
    name, model, _ = tiny
    lengths = (13, 6, 11)
    exs, batch = _packed_batch(lengths, seed=5)
    assert batch["mask"] is not None
    ours = _our_logits(model, batch["inputs"], mask=batch["mask"])[0]
    start = 0
    for ex, n in zip(exs, lengths):
        alone = model(mx.array([ex.tokens[:-1]]))[0]
        np.testing.assert_allclose(np.array(ours[start:start + n]), np.array(alone), rtol=1e-4, atol=2e-5)
        start += n
    # and the fused loss of the packed row is the token-weighted mean of the documents' own losses
    h = hidden_states(model, batch["inputs"], mask=batch["mask"])
    loss, _ = fused_token_loss(h.reshape(-1, h.shape[-1]), output_head(model), batch["targets"].reshape(-1),
                               batch["labels"].reshape(-1), penalty_weight=0.0)
    ce = [nn.losses.cross_entropy(model(mx.array([e.tokens[:-1]]))[0], mx.array(e.tokens[1:]), reduction="sum")
          for e in exs]
    assert abs(loss.item() - sum(c.item() for c in ce) / sum(lengths)) < 1e-5


def test_sliding_window_layers():
    fam = family_of("gemma3_text")
    _, cfg = build_tiny_family_model("gemma3", V)
    args = SimpleNamespace(**cfg)
    assert [layer_window(fam, args, i) for i in range(4)] == [8, None, 8, None]
    llama = family_of("llama")
    args = SimpleNamespace(layer_types=["sliding_attention", "full_attention"], sliding_window=16)
    assert [layer_window(llama, args, i) for i in range(2)] == [16, None]


def test_unsupported_architecture_is_one_line_listing_the_supported():
    with pytest.raises(NotmeError) as e:
        family_of("olmo2", "some/config.json")
    msg = str(e.value)
    assert "\n" not in msg and "olmo2" in msg and "some/config.json" in msg
    for f in FAMILIES:
        assert f.name in msg


def _expected_leaves(name):
    return set(family_of(TINY_CONFIGS[name].get("model_type", "llama")).targets)


def test_lora_targets_cover_every_projection_and_fuse_is_exact(tiny):
    name, model, cfg = tiny
    model, _ = build_tiny_family_model(name, V, seed=3)  # a fresh copy: this test changes weights
    n = apply_lora(model, LoRAConfig(rank=4, alpha=8.0))
    wrapped = lora_modules(model)
    leaves = {p.split(".")[-1] for p, _ in wrapped}
    assert leaves == _expected_leaves(name)
    assert len(wrapped) == cfg["num_hidden_layers"] * len(leaves)
    assert n == sum(4 * sum(m.dims) for _, m in wrapped)
    if name == "phi3":  # the fused projections are the 3- and 2-way outputs
        m = dict(wrapped)["model.layers.0.self_attn.qkv_proj"]
        assert m.dims == (64, 64 + 2 * 2 * 16)
    perturb_adapters(model, scale=0.05, seed=1)
    x = _ids(1, 12, 2)
    before = model(x)
    assert fuse(model) == len(wrapped)
    assert adapter_names(model) == []
    np.testing.assert_allclose(np.array(model(x)), np.array(before), rtol=1e-5, atol=1e-5)


def test_partial_fused_targets_refused():
    model, _ = build_tiny_family_model("phi3", V)
    with pytest.raises(NotmeError, match="qkv_proj"):
        apply_lora(model, LoRAConfig(rank=4, targets=("q_proj", "v_proj")))
    assert apply_lora(model, LoRAConfig(rank=4, targets=("qkv_proj",))) > 0
    assert FUSED["gate_up_proj"] == ("gate_proj", "up_proj")


def test_training_gradients_equal_autograd_through_mlx_lm(tiny):
    """The trainer's loss (hidden states + fused head) has the same LoRA gradients as mlx-lm's own
    forward + cross-entropy, so training any family optimizes the right objective."""
    name, _, _ = tiny
    model, _ = build_tiny_family_model(name, V, seed=4)
    apply_lora(model, LoRAConfig(rank=4, alpha=8.0))
    perturb_adapters(model, scale=0.05, seed=2)
    x = _ids(2, 16, 3)
    inputs, targets = x[:, :-1], x[:, 1:]
    labels = mx.ones(targets.shape, mx.int32).reshape(-1)

    def ours(m):
        h = hidden_states(m, inputs, checkpoint=True)
        return fused_token_loss(h.reshape(-1, h.shape[-1]), output_head(m), targets.reshape(-1), labels,
                                penalty_weight=0.0, chunk_size=128)[0]

    def ref(m):
        return nn.losses.cross_entropy(m(inputs), targets).mean()

    l1, g1 = nn.value_and_grad(model, ours)(model)
    l2, g2 = nn.value_and_grad(model, ref)(model)
    assert abs(l1.item() - l2.item()) < 1e-5
    f1, f2 = dict(tree_flatten(g1)), dict(tree_flatten(g2))
    assert set(f1) == set(f2) and len(f1) == 2 * len(lora_modules(model))
    for k in f1:
        np.testing.assert_allclose(np.array(f1[k]), np.array(f2[k]), rtol=1e-4, atol=1e-6)
    assert max(float(mx.abs(v).max()) for v in f1.values()) > 0


@pytest.mark.parametrize("name", NAMES)
def test_stack_of_saved_adapters_equals_fused_lower_plus_upper(name, family_dirs, tmp_path):
    """Two adapters saved, written as a stack.yaml and composed onto a freshly loaded base by the
    stack loader give the in-memory stack's logits; fusing the lower one keeps them."""
    d = family_dirs(name)
    cfg = LoRAConfig(rank=4, alpha=8.0)
    model, _, info = load_model(str(d), dequantize=True)
    apply_lora(model, cfg, name="lower")
    apply_lora(model, cfg, name="upper")
    perturb_adapters(model, scale=0.05, seed=3)
    save_adapter(model, "lower", tmp_path / "lower", cfg)
    save_adapter(model, "upper", tmp_path / "upper", cfg)
    x = _ids(1, 12, 4)
    stacked = model(x)
    st = Stack(str(d), info["fingerprint"], (StackLayer("domain", "lower", str(tmp_path / "lower")),
                                               StackLayer("identity", "upper", str(tmp_path / "upper"))))
    save_stack(st, tmp_path / "stack.yaml")
    fresh, _, _, loaded = load_stack_model(load_stack(tmp_path / "stack.yaml"), dequantize=True)
    assert [l["name"] for l in loaded] == ["lower", "upper"]
    np.testing.assert_allclose(np.array(fresh(x)), np.array(stacked), rtol=1e-5, atol=1e-5)
    set_trainable(fresh, "upper")
    fuse(fresh, names=["lower"])
    assert adapter_names(fresh) == ["upper"]
    np.testing.assert_allclose(np.array(fresh(x)), np.array(stacked), rtol=1e-5, atol=1e-5)


@pytest.fixture(scope="module")
def family_dirs(tmp_path_factory):
    cache = {}

    def get(name, **over):
        key = (name, tuple(sorted(over.items())))
        if key not in cache:
            cache[key] = build_tiny_model(tmp_path_factory.mktemp(f"tiny_{name}"), name, V, seed=6, **over)
        return cache[key]

    return get


@pytest.mark.parametrize("name", NAMES)
def test_load_model_names_the_family(name, family_dirs):
    model, tok, info = load_model(str(family_dirs(name)), dequantize=True)
    assert info["family"] == name
    assert family_of_model(model).name == name
    x = mx.array([tok.encode("Does that make sense?")])
    assert model(x).shape == (1, x.shape[1], model.args.vocab_size)


@pytest.mark.parametrize("name", NAMES)
def test_pipeline_stages_compose_to_the_whole_model(name, family_dirs):
    """Two stages (each loading only its layers; the first owns the embedding and its scale, the
    last the norm and head) give mlx-lm's logits and loss; LoRA on the stages equals LoRA on the model."""
    d = family_dirs(name, num_hidden_layers=4)
    model, _, _ = load_model(str(d), dequantize=True)
    s1 = load_stage(d, 0, 2, first=True, last=False)
    s2 = load_stage(d, 2, 4, first=False, last=True)
    assert not any(k.startswith("layers.2") for k, _ in tree_flatten(s1.parameters()))
    assert ("embed_tokens" in s2) == ("lm_head" not in s2)  # tied heads live on the last stage too
    cfg = LoRAConfig(rank=4, alpha=8.0)
    apply_stage_lora(model.model.layers, 0, 4, cfg, seed=7)
    apply_stage_lora(s1.layers, 0, 4, cfg, seed=7)
    apply_stage_lora(s2.layers, 2, 4, cfg, seed=7)
    w = {**global_lora_weights(s1), **global_lora_weights(s2)}
    mods = lora_modules(model)
    assert {f"{p}.lora_a" for p, _ in mods} == {k for k in w if k.endswith(".lora_a")}
    for p, m in mods:  # the stages' A init (keyed by seed, layer, module) is the single-process one
        np.testing.assert_array_equal(np.array(m.adapters["default"].lora_a), np.array(w[f"{p}.lora_a"]))
    perturb_adapters(s1, scale=0.05, seed=4)
    perturb_adapters(s2, scale=0.05, seed=5)
    w = {**global_lora_weights(s1), **global_lora_weights(s2)}
    for p, m in mods:  # the trained stages' adapters on the whole model
        m.adapters["default"].lora_b = w[f"{p}.lora_b"]
    x = _ids(2, 20, 5)
    h = s2(s1(x))
    ref = model(x)
    head = s2.head()
    cap = getattr(head, "cap", None)
    z = h @ getattr(head, "weight", head).T
    if cap:
        z = cap * mx.tanh(z / cap)
    np.testing.assert_allclose(np.array(z), np.array(ref), rtol=1e-5, atol=1e-5)
    inputs, targets = x[:, :-1], x[:, 1:]
    hh = s2(s1(inputs))
    loss, _ = fused_token_loss(hh.reshape(-1, hh.shape[-1]), head, targets.reshape(-1),
                               mx.ones((targets.size,), mx.int32), penalty_weight=0.0)
    assert abs(loss.item() - nn.losses.cross_entropy(model(inputs), targets).mean().item()) < 1e-5


def test_naive_reference_agrees_with_fused_under_softcap():
    model, _ = build_tiny_family_model("gemma2", V)
    h = hidden_states(model, _ids(1, 10, 6))[0]
    y = _ids(1, 10, 7)[0]
    lab = mx.array([1, 1, -1, 0, 1, -1, 1, 1, 0, 1], mx.int32)
    a, _ = fused_token_loss(h, output_head(model), y, lab, penalty_weight=2.0, chunk_size=100)
    b, _ = naive_token_loss(h, output_head(model), y, lab, penalty_weight=2.0)
    assert abs(a.item() - b.item()) < 1e-5


def test_model_info_names_family_and_refuses_unsupported_in_one_line(family_dirs, tmp_path):
    d = family_dirs("qwen3")
    r = CliRunner().invoke(main, ["model", "info", str(d)])
    assert r.exit_code == 0, r.output
    assert re.search(r"family\s+│?\s*qwen3", r.output)
    assert "llama.cpp verified" in r.output
    # an architecture mlx-lm runs but notme does not support (OLMo 2), from mlx-lm's own class
    other = tmp_path / "olmo2"
    build_tiny_model(other, "llama", V, seed=1)
    cfg = json.loads((other / "config.json").read_text())
    cfg.update(model_type="olmo2", architectures=["Olmo2ForCausalLM"])
    model = olmo2.Model(olmo2.ModelArgs.from_dict(cfg))
    mx.save_safetensors(str(other / "model.safetensors"), dict(tree_flatten(model.parameters())))
    (other / "config.json").write_text(json.dumps(cfg))
    r = CliRunner().invoke(main, ["model", "info", str(other)])
    assert r.exit_code == 0
    lines = [l for l in r.output.splitlines() if "is not supported" in l]
    assert len(lines) == 1 and "'olmo2'" in lines[0]
    assert all(f.name in lines[0] for f in FAMILIES)


# ~15 s each here: the quirkiest two in the fast suite, the rest in the slow step (the trainer's
# family-specific parts are the forward, loss and LoRA targets tested above for every family).
QUICK_TRAIN = ("gemma3", "phi3")


@pytest.mark.parametrize("name", [n if n in QUICK_TRAIN else pytest.param(n, marks=pytest.mark.slow) for n in NAMES])
def test_trainer_runs_every_family_and_mlx_lm_loads_the_adapter(name, family_dirs, tmp_path):
    """`notme train`'s trainer on each family: loss goes down, the adapter loads in mlx-lm itself
    (`mlx_lm.load(..., adapter_path=...)`) with the trained model's logits."""
    d = family_dirs(name)
    data = tmp_path / "data"
    data.mkdir()
    rng = np.random.default_rng(0)
    words = "the parser file code test run model data fix bug flight meeting lunch coffee".split()
    rows = [{"messages": [{"role": "user", "content": "status?"},
                          {"role": "assistant", "content": " ".join(rng.choice(words, 6)) + ". Does that make sense?",
                           "train": True}]}
            for _ in range(16)]
    (data / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    model, tok = mlx_lm_load(str(d))
    r = load_recipe(None, {"model": str(d), "data.train": str(data / "train.jsonl"), "data.valid": None, "data.max_seq_len": 64,
                           "out_dir": str(tmp_path / "runs"), "name": name, "lora.rank": 4, "lora.alpha": 8,
                           "batch_size": 4, "max_steps": 8, "eval_every": 0, "save_every": 0,
                           "optimizer.lr": 2e-2, "schedule.type": "constant"})
    res = train(r, model=model, tokenizer=tok)
    ls = [m["loss"] for m in read_metrics(res.run_dir / "metrics.jsonl") if "loss" in m]
    assert len(ls) == 8 and ls[-1] < ls[0], ls
    leaves = {k.split(".")[-2] for k in mx.load(str(res.adapter_dir / "adapters.safetensors"))}
    assert leaves == set(family_of_model(model).targets)
    ref, _ = mlx_lm_load(str(d), adapter_path=str(res.adapter_dir))
    x = mx.array([tok.encode("Does that make sense?")])
    model.eval()
    np.testing.assert_allclose(np.array(ref(x)), np.array(model(x)), rtol=1e-4, atol=1e-4)
