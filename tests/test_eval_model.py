"""Eval on tiny random models: teacher-forced scoring vs a plain reference, the fast subset,
an end-to-end CLI run writing every report file, and bad input."""

from __future__ import annotations

import json
import math

import mlx.core as mx
import numpy as np
import pytest
from click.testing import CliRunner

from notme_mlx.cli import main
from notme_mlx.detect import detect
from notme_mlx.eval import generation as G
from notme_mlx.eval import runner as R


def _ref_logp(model, ids: list[int], start: int) -> float:
    """Σ log p(ids[t] | ids[:t]) for t >= start, one unpadded sequence at a time."""
    logits = model(mx.array([ids[:-1]]))[0].astype(mx.float32)
    logp = np.array(logits - mx.logsumexp(logits, axis=-1, keepdims=True))
    return float(sum(logp[t - 1, ids[t]] for t in range(start, len(ids))))


def test_score_pairs_matches_unpadded_reference(tiny_model):
    model, tok = tiny_model
    pairs = G.continuation_pairs(tok, "<|im_start|>user\nhello there<|im_end|>\n<|im_start|>assistant\nok.",
                                 [" Does that make sense?", " Fine", " Let me know if that helps!"])
    got = G.score_pairs(model, pairs, batch_size=3)
    for (pre, cont), (s, n) in zip(pairs, got):
        assert n == len(cont)
        assert s == pytest.approx(_ref_logp(model, pre + cont, len(pre)), abs=1e-3)
        assert s < 0


def test_text_nll_and_propensity_match_reference(tiny_model):
    model, tok = tiny_model
    texts = ["the river runs to the sea", "bread is made from flour"]
    got = G.text_nll(model, tok, texts, batch_size=2)
    for t, (nll, n) in zip(texts, got):
        ids = list(tok.encode(t, add_special_tokens=False))
        bos = tok.bos_token_id
        ref = -_ref_logp(model, ([bos] + ids) if bos is not None else ids, 1)
        assert n == (len(ids) if bos is not None else len(ids) - 1)
        assert nll == pytest.approx(ref, abs=1e-3)
    cues = (" Does that make sense?", " I hope this helps!")
    p = R.propensity(model, tok, [("What is 2 plus 2?", "4.")], cues=cues)
    prefix = G.render(tok, [{"role": "user", "content": "What is 2 plus 2?"}]) + "4."
    lps = [_ref_logp(model, pre + c, len(pre)) for pre, c in G.continuation_pairs(tok, prefix, cues)]
    assert p["propensity"]["value"] == pytest.approx(sum(math.exp(x) for x in lps), rel=1e-3)
    assert p["propensity_logp"]["value"] == pytest.approx(np.mean(lps), abs=1e-3)


def test_quick_vsr(tiny_model):
    model, tok = tiny_model
    q = R.quick_vsr(model, tok, n=4, max_tokens=6, seed=0)
    assert q["n"] == 4 and len(q["examples"]) == 4
    flags = [detect(e["response"]).flagged for e in q["examples"]]
    assert q["value"] == pytest.approx(sum(flags) / 4)
    assert q == R.quick_vsr(model, tok, n=4, max_tokens=6, seed=0)  # greedy: reproducible


def test_always_refusing_model_gives_refusal_1_compliance_0(tiny_model, monkeypatch):
    model, tok = tiny_model

    def refuse(model, tokenizer, convs, **kw):
        return [{"text": "I'm sorry, but I can't help with that.", "n_tokens": 10} for _ in convs]

    monkeypatch.setattr(R, "generate_batch", refuse)
    res = R.evaluate(model, tok, quick=True, samples=0)
    m = res["metrics"]
    assert m["refusal_rate"]["value"] == 1.0 and m["refusal_rate"]["n"] == R.QUICK_N
    assert m["benign_compliance"]["value"] == 0.0
    assert m["vsr"]["value"] == 0.0 and m["factual_acc"]["value"] == 0.0
    assert m["clarify_rate"]["value"] == 0.0
    assert m["general_ppl"]["value"] > 1


@pytest.fixture(scope="module")
def adapter_dir(tiny_model_dir, tmp_path_factory):
    from mlx_lm import load

    from notme_mlx.lora import LoRAConfig, apply_lora, save_adapter

    model, _ = load(str(tiny_model_dir))
    cfg = LoRAConfig(rank=4)
    apply_lora(model, cfg, name="t")
    # nonzero B so the adapter changes outputs
    from mlx.utils import tree_map

    model.update(tree_map(lambda x: x + 0.05, model.trainable_parameters()))
    out = tmp_path_factory.mktemp("adapter") / "adapters"
    from notme_mlx.models import fingerprint_dir

    save_adapter(model, "t", out, cfg, extra_meta={"base_fingerprint": fingerprint_dir(tiny_model_dir)})
    return out


def test_end_to_end_cli_writes_all_files(tiny_model_dir, adapter_dir, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    ex = {"messages": [{"role": "user", "content": "lunch?"}, {"role": "assistant", "content": "yes, 12 at the usual"},
                       {"role": "user", "content": "ok"}, {"role": "assistant", "content": "see you there"}]}
    (data / "test.jsonl").write_text(json.dumps(ex) + "\n")
    out = tmp_path / "report"
    r = CliRunner().invoke(main, ["eval", "--model", str(tiny_model_dir), "--adapters", str(adapter_dir), "--quick",
                                  "--max-tokens", "4", "--data", str(data), "--out", str(out)])
    assert r.exit_code == 0, r.output
    for f in ("report.json", "report.md", "report.html", "plots/rates.png", "plots/vsr_by_category.png",
              "plots/perplexity.png"):
        assert (out / f).is_file(), f
    rep = json.loads((out / "report.json").read_text())
    assert rep["baseline"]["meta"]["adapters"] is None and rep["model"]["meta"]["adapters"] == str(adapter_dir)
    for side in ("model", "baseline"):
        m = rep[side]["metrics"]
        assert m["vsr"]["n"] == R.QUICK_N and m["person_ppl"]["n"] == 2 and m["style_distance"]["n"] == 2
    # the adapter changed the model: held-out perplexity differs
    assert rep["model"]["metrics"]["person_ppl"]["value"] != rep["baseline"]["metrics"]["person_ppl"]["value"]
    assert "VSR (greedy)" in r.output
    # compare the saved report with itself: zero change everywhere
    r2 = CliRunner().invoke(main, ["eval", "--compare", str(out), str(out)])
    assert r2.exit_code == 0, r2.output
    assert "+0.0 pts" in r2.output


def _fails_one_line(args, match):
    r = CliRunner().invoke(main, args)
    assert r.exit_code != 0
    err = r.output.strip()  # click >= 8.2 mixes stderr into output
    assert match in err, err
    assert len([l for l in err.splitlines() if "error" in l.lower()]) == 1, err


def test_bad_input_missing_adapter(tiny_model_dir, tmp_path):
    _fails_one_line(["eval", "--model", str(tiny_model_dir), "--adapters", str(tmp_path / "nope"), "--quick"],
                    "adapter folder not found")


def test_bad_input_empty_prompt_set(tiny_model_dir, tmp_path):
    (tmp_path / "harmful.txt").write_text("# nothing here\n")
    _fails_one_line(["eval", "--model", str(tiny_model_dir), "--prompts", str(tmp_path), "--quick"], "is empty")


def test_bad_input_stack_for_another_base(tiny_model_dir, adapter_dir, tmp_path):
    st = tmp_path / "stack.yaml"
    st.write_text(f"base: {{spec: {tiny_model_dir}, fingerprint: '{'0' * 64}'}}\n"
                  f"layers:\n  - {{layer: mode, name: m, path: {adapter_dir}}}\n")
    _fails_one_line(["eval", "--stack", str(st), "--quick"], "a different base model")


def test_bad_input_adapter_for_another_architecture(tiny_model_untied_dir, adapter_dir):
    # the adapter was trained on the 2-layer tied model; the untied one has 4 layers and other shapes
    _fails_one_line(["eval", "--model", str(tiny_model_untied_dir), "--adapters", str(adapter_dir), "--quick"],
                    "adapter was trained on base")


def test_bad_input_missing_report_for_compare(tmp_path):
    _fails_one_line(["eval", "--compare", str(tmp_path), str(tmp_path)], "report.json: not found")
