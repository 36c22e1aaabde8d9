"""`notme correct`: /fix appends well-formed pairs (scripted through the CLI); --import validates."""

import json

from click.testing import CliRunner

from notme_mlx.cli import main as cli_main
from notme_mlx.synth.corrections import validate_pair


def _run(args, inp=None):
    return CliRunner().invoke(cli_main, args, input=inp)


def test_fix_appends_pairs(tiny_model_dir, tmp_path):
    out = tmp_path / "corrections.jsonl"
    base = ["correct", "--model", str(tiny_model_dir), "--out", str(out), "--temp", "1.0", "--seed", "0", "--max-tokens", "8"]
    r = _run(base, "/fix too early\nhello\n/fix Hi.\nand now?\n/fix Now this.\n/quit\n")
    assert r.exit_code == 0, r.output
    assert "no reply to correct yet" in r.output
    assert r.output.count("me> ") == 2
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(rows) == 2 and (out.stat().st_mode & 0o777) == 0o600
    assert rows[0]["prompt"] == [{"role": "user", "content": "hello"}]
    assert rows[0]["chosen"] == "Hi." and ("me> " + rows[0]["rejected"] + "\n") in r.output
    # the fixed reply replaced the model's in the history the second pair is conditioned on
    assert rows[1]["prompt"] == [{"role": "user", "content": "hello"}, {"role": "assistant", "content": "Hi."},
                                 {"role": "user", "content": "and now?"}]
    assert rows[1]["chosen"] == "Now this." and ("me> " + rows[1]["rejected"] + "\n") in r.output
    assert rows[0]["rejected"].strip() and rows[0]["rejected"] != rows[1]["rejected"]
    for i, row in enumerate(rows):
        assert validate_pair(row, f"row {i}")["meta"]["source"] == "correction"
        assert set(row) == {"prompt", "chosen", "rejected", "meta"}
    # a second session appends
    r = _run(base, "again\n/fix Again.\n/quit\n")
    assert r.exit_code == 0, r.output
    assert len(out.read_text().splitlines()) == 3


def test_import_validates_all_or_nothing(tmp_path):
    out = tmp_path / "c.jsonl"
    good = tmp_path / "good.jsonl"
    good.write_text(json.dumps({"prompt": "q?", "chosen": "A.", "rejected": "A, I think? Does that help?"}) + "\n")
    r = _run(["correct", "--import", str(good), "--out", str(out)])
    assert r.exit_code == 0, r.output
    (row,) = [json.loads(x) for x in out.read_text().splitlines()]
    assert row["prompt"] == [{"role": "user", "content": "q?"}] and row["meta"] == {"source": "correction"}
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": "q", "chosen": "x", "rejected": "y"}) + "\n"
                   + json.dumps({"prompt": "q", "chosen": "x"}) + "\n")
    before = out.read_bytes()
    r = _run(["correct", "--import", str(bad), "--out", str(out)])
    assert r.exit_code != 0 and "record 2" in r.output and 'missing "rejected"' in r.output
    assert out.read_bytes() == before
