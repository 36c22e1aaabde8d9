"""Principles file, `notme data synth` and `notme data revise`."""

import json

import mlx.core as mx
import mlx.nn as nn
import pytest
from click.testing import CliRunner

from notme_mlx.cli import main as cli_main
from notme_mlx.detect import detect
from notme_mlx.errors import ConfigError, InputError, NotmeError
from notme_mlx.synth.generate import read_prompts, synth
from notme_mlx.synth.principles import example_path, load_principles, parse_principles, system_prompt
from notme_mlx.synth.revise import revise_records


def test_example_principles_load_and_render():
    ps = load_principles(example_path())
    assert [p.name for p in ps][:2] == ["directness over caution", "completion over assistance"]
    text = system_prompt(ps)
    assert text.splitlines()[1] == ("1. directness over caution: State the answer or the recommendation first, "
                                    "without preamble or hedging.")
    assert "   Avoid: Would you like me to write the script for you?" in text.splitlines()


@pytest.mark.parametrize("data,needle", [
    ({"principles": [{"name": "a", "description": "b", "goood": ["x"]}]}, "unknown key 'goood' (did you mean 'good'?)"),
    ({"principle": []}, "unknown key 'principle' (did you mean 'principles'?)"),
    ({"principles": [{"name": "a"}]}, "principles[0].description: required"),
    ({"principles": [{"name": "a", "description": "b", "bad": [1]}]}, "principles[0].bad: expected a list of strings"),
])
def test_principles_errors(data, needle):
    with pytest.raises(ConfigError) as e:
        parse_principles(data, "p.yaml")
    assert needle in str(e.value) and str(e.value).startswith("p.yaml: ")


def test_principles_reports_all_errors_at_once():
    with pytest.raises(ConfigError) as e:
        parse_principles({"principles": [{"nam": "a", "description": "b"}, {"name": "c", "descripton": "d"}]})
    msg = str(e.value)
    assert "'nam' (did you mean 'name'?)" in msg and "'descripton' (did you mean 'description'?)" in msg


def test_read_prompts(tmp_path):
    (tmp_path / "p.txt").write_text("one\n\n two \n")
    assert [p["messages"][0]["content"] for p in read_prompts(tmp_path / "p.txt")] == ["one", "two"]
    (tmp_path / "p.jsonl").write_text('{"prompt": "hi", "safety": true}\n{"messages": [{"role": "user", "content": "x"}]}\n')
    ps = read_prompts(tmp_path / "p.jsonl")
    assert ps[0] == {"messages": [{"role": "user", "content": "hi"}], "safety": True} and ps[1]["safety"] is False
    (tmp_path / "e.txt").write_text("\n  \n")
    with pytest.raises(InputError, match="no prompts"):
        read_prompts(tmp_path / "e.txt")
    (tmp_path / "b.jsonl").write_text('{"prompt": ""}\n')
    with pytest.raises(InputError, match="record 1"):
        read_prompts(tmp_path / "b.jsonl")
    (tmp_path / "c.txt").write_text("# a comment\nadvice\tShould I?\nplain one\n")
    assert [p["messages"][0]["content"] for p in read_prompts(tmp_path / "c.txt")] == ["Should I?", "plain one"]


def test_starter_prompts_are_120_and_disjoint_from_eval_sets():
    from notme_mlx.eval.prompts import SETS, load_set

    starter = [p["messages"][0]["content"] for p in read_prompts("starter")]
    assert len(starter) == 120 and len(set(starter)) == 120
    eval_prompts = {r["prompt"] for name in SETS for r in load_set(name)}
    assert len(eval_prompts) > 250  # every set read (56 + 53 + 51 + 51 + 52 prompts)
    assert not set(starter) & eval_prompts


FLAGGED = "Great question! The answer is 42. Does that make sense?"


def test_revise_removes_exactly_the_flagged_spans():
    d = detect(FLAGGED)
    assert d.flagged
    cut = [FLAGGED[s.start:s.end] for s in d.spans]
    res = revise_records([{"prompt": "What is it?", "rejected": FLAGGED},
                          {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "It is 42."}]}])
    assert res["counts"] == {"records": 2, "flagged": 1, "rule": 1, "model": 0, "unfixable": 0}
    (p,) = res["pairs"]
    assert p["chosen"] == "The answer is 42."
    assert p["rejected"] == FLAGGED and p["prompt"] == [{"role": "user", "content": "What is it?"}]
    assert not detect(p["chosen"]).flagged
    # the chosen text is the original with exactly the span characters taken out (modulo spacing)
    rest = FLAGGED
    for c in cut:
        assert c.strip() and c not in p["chosen"]
        rest = rest.replace(c, " ")
    assert " ".join(rest.split()) == p["chosen"]
    assert p["meta"]["spans"] == [[s.start, s.end, "penalize"] for s in d.spans]


def test_revise_model_rewrite_used_only_when_clean():
    res = revise_records([{"prompt": "q", "rejected": FLAGGED}], rewrite_fn=lambda p, r, rule: "It's 42, I hope this helps!")
    assert res["pairs"][0]["chosen"] == "The answer is 42." and res["counts"]["rule"] == 1
    res = revise_records([{"prompt": "q", "rejected": FLAGGED}], rewrite_fn=lambda p, r, rule: "42.")
    assert res["pairs"][0]["chosen"] == "42." and res["pairs"][0]["meta"]["revised_by"] == "model"


def test_revise_cli(tmp_path):
    inp = tmp_path / "in.jsonl"
    inp.write_text(json.dumps({"prompt": "What is it?", "rejected": FLAGGED}) + "\n")
    r = CliRunner().invoke(cli_main, ["data", "revise", str(inp), "-o", str(tmp_path / "out.jsonl")])
    assert r.exit_code == 0, r.output
    rows = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [x["chosen"] for x in rows] == ["The answer is 42."]
    (tmp_path / "empty.jsonl").write_text("")
    r = CliRunner().invoke(cli_main, ["data", "revise", str(tmp_path / "empty.jsonl"), "-o", str(tmp_path / "o2.jsonl")])
    assert r.exit_code != 0 and "no records" in r.output and not (tmp_path / "o2.jsonl").exists()


def _prompts(tmp_path):
    p = tmp_path / "prompts.txt"
    p.write_text("What is a hash map?\nName a prime number.\nHow do I boil an egg?\n")
    return p


def test_synth_reproducible_with_seed(tiny_model, tmp_path):
    model, tok = tiny_model
    ps = read_prompts(_prompts(tmp_path))
    a = synth(model, tok, ps, 5, system="Be direct.", seed=3, max_tokens=8, temp=1.0)
    b = synth(model, tok, ps, 5, system="Be direct.", seed=3, max_tokens=8, temp=1.0)
    c = synth(model, tok, ps, 5, system="Be direct.", seed=4, max_tokens=8, temp=1.0)
    assert a == b
    assert [e["messages"][-1]["content"] for e in a["examples"]] != [e["messages"][-1]["content"] for e in c["examples"]]
    ex = a["examples"][0]
    assert ex["messages"][0] == {"role": "user", "content": "What is a hash map?", "train": False}
    assert ex["messages"][-1]["role"] == "assistant" and ex["messages"][-1]["train"] is True
    assert a["counts"]["generated"] == 5 and sum(a["counts"][k] for k in ("clean", "revised", "dropped", "empty")) == 5


def test_synth_cli_writes_and_reproduces(tiny_model_dir, tmp_path):
    p = _prompts(tmp_path)
    outs = []
    for name in ("a", "b"):
        o = tmp_path / f"{name}.jsonl"
        r = CliRunner().invoke(cli_main, ["data", "synth", "--model", str(tiny_model_dir), "--prompts", str(p),
                                          "--principles", str(example_path()), "-n", "4", "-o", str(o),
                                          "--seed", "1", "--max-tokens", "6", "--temp", "1.0"])
        assert r.exit_code == 0, r.output
        outs.append(o.read_bytes())
        assert (o.stat().st_mode & 0o777) == 0o600
    assert outs[0] == outs[1] and len(outs[0].splitlines()) >= 1


def test_synth_cli_bad_inputs_write_nothing(tiny_model_dir, tmp_path):
    (tmp_path / "empty.txt").write_text("")
    o = tmp_path / "o.jsonl"
    base = ["data", "synth", "--model", str(tiny_model_dir), "-n", "2", "-o", str(o), "--max-tokens", "4"]
    r = CliRunner().invoke(cli_main, base + ["--prompts", str(tmp_path / "empty.txt"), "--base-frame"])
    assert r.exit_code != 0 and "no prompts" in r.output
    bad = tmp_path / "p.yaml"
    bad.write_text("principles:\n  - name: a\n    description: b\n    goods: [x]\n")
    r = CliRunner().invoke(cli_main, base + ["--prompts", str(_prompts(tmp_path)), "--principles", str(bad)])
    assert r.exit_code != 0 and "did you mean 'good'" in r.output
    r = CliRunner().invoke(cli_main, base + ["--prompts", str(_prompts(tmp_path)), "--base-frame",
                                             "--principles", str(bad)])
    assert r.exit_code != 0 and "at most one of" in r.output
    assert not o.exists() and list(tmp_path.glob(".o.jsonl*")) == []


class _EosOnly(nn.Module):
    """Wraps a model so that end-of-turn is always the likeliest token: only empty replies."""

    def __init__(self, m, eos):
        super().__init__()
        self.m, self.eos = m, eos

    @property
    def layers(self):
        return self.m.layers

    def __call__(self, x, cache=None, **kw):
        logits = self.m(x, cache=cache, **kw)
        bias = mx.zeros((logits.shape[-1],)).at[self.eos].add(1e4)
        return logits + bias


def test_synth_only_empty_replies_is_an_error(tiny_model, tmp_path):
    model, tok = tiny_model
    with pytest.raises(NotmeError, match="only empty replies"):
        synth(_EosOnly(model, tok.eos_token_id), tok, read_prompts(_prompts(tmp_path)), 3, max_tokens=4, temp=0.0)


@pytest.mark.parametrize("on_flag", ["revise", "drop"])
def test_synth_flagged_replies_become_pairs_or_are_dropped(tiny_model, tmp_path, monkeypatch, on_flag):
    import notme_mlx.synth.generate as g

    replies = ["It is 42.", FLAGGED, "I hope this helps!", ""]
    monkeypatch.setattr(g, "generate_texts", lambda *a, **k: list(replies))
    model, tok = tiny_model
    res = synth(model, tok, read_prompts(_prompts(tmp_path)), 4, on_flag=on_flag)
    got = [e["messages"][-1]["content"] for e in res["examples"]]
    if on_flag == "revise":
        # the all-validation-seeking reply revises to nothing and is dropped
        assert got == ["It is 42.", "The answer is 42."]
        (p,) = res["pairs"]
        assert (p["chosen"], p["rejected"]) == ("The answer is 42.", FLAGGED)
        assert p["prompt"] == [{"role": "user", "content": "Name a prime number."}]
        assert res["counts"] == {"generated": 4, "empty": 1, "flagged": 2, "dropped": 1, "revised": 1, "clean": 1}
    else:
        assert got == ["It is 42."] and res["pairs"] == []
        assert res["counts"] == {"generated": 4, "empty": 1, "flagged": 2, "dropped": 2, "revised": 0, "clean": 1}
