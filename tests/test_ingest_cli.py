"""`notme ingest` end to end: outputs, bad inputs, --skip-bad, zips, filters, stats, no input modified."""

import hashlib
import json
import os
import re
import stat
import zipfile

import pytest
from click.testing import CliRunner

from notme_mlx.cli import main
from notme_mlx.ingest import collect_sources, ingest_paths
from notme_mlx.samples import OWNER, SAMPLES_DIR, sample_paths

WA_SAMPLES = [SAMPLES_DIR / "WhatsApp Chat with Sam Okafor.txt", SAMPLES_DIR / "WhatsApp Chat - Climbing crew.zip"]
GOOD_WA = "15/01/2024, 09:00 - Alex Rivera: hi\n15/01/2024, 09:01 - Sam: yo\n"


def run(*args):
    r = CliRunner().invoke(main, ["ingest", *map(str, args)], catch_exceptions=False)
    return r.exit_code, r.output


def _snapshot(paths):
    out = {}
    for p in paths:
        for f in ([p] if p.is_file() else sorted(x for x in p.rglob("*") if x.is_file())):
            out[str(f)] = (f.stat().st_mtime_ns, hashlib.sha256(f.read_bytes()).hexdigest())
    return out


def _read(p):
    return [json.loads(x) for x in p.read_text().splitlines()]


def test_samples_end_to_end_inputs_untouched(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    paths = sample_paths()
    before = _snapshot(paths)
    out = tmp_path / "messages.jsonl"
    code, text = run(*paths, "-o", out, "--me", OWNER)
    assert code == 0, text
    recs = _read(out)
    assert len(recs) == len(list(ingest_paths(paths, me=[OWNER])))
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert _snapshot(paths) == before
    assert {r["source"] for r in recs} == {"chatgpt", "claude", "claude_code", "imessage", "whatsapp", "telegram",
                                           "openai_jsonl", "sharegpt", "mlx_jsonl", "notme_md"}
    code, table = run("--stats", out)
    assert code == 0 and "chatgpt" in table and OWNER.split()[0] in table


def test_identity_file_replaces_me(tmp_path):
    out = tmp_path / "m.jsonl"
    code, text = run(*WA_SAMPLES, "-o", out, "--identity", SAMPLES_DIR / "identity.yaml")
    assert code == 0, text
    recs = _read(out)
    assert {r["speaker"] for r in recs if r["role"] == "me"} == {"Alex Rivera"}


def test_missing_me_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    code, text = run(SAMPLES_DIR / "WhatsApp Chat with Sam Okafor.txt", "-o", tmp_path / "m.jsonl")
    assert code == 1 and "speakers found" in text and "'Alex Rivera'" in text and "'Sam Okafor'" in text
    assert not (tmp_path / "m.jsonl").exists()


@pytest.mark.parametrize("name,data,fmt,expect", [
    ("trunc.json", b'[{"title": "x", "mapping": {"a": {"id": "a", "children": [', "auto", r"trunc.json:1: record 0: truncated JSON"),
    ("conversations.json", b'[{"mapping": {}}, {"mapping": {}, }]', "chatgpt", r"conversations.json:1: record 1: invalid JSON"),
    ("wrong.txt", GOOD_WA.encode(), "chatgpt", r"wrong.txt:1: expected a JSON array"),
    ("garbage.bin", bytes(range(256)) * 8, "auto", r"garbage.bin: unknown export format"),
    ("empty.json", b"", "auto", r"empty.json: empty file"),
    ("empty2.json", b"", "claude", r"empty2.json: empty file"),
    ("bad.jsonl", b'{"messages": [{"role": "user", "content": "a"}]}\n{"messages": [\n', "auto", r"bad.jsonl:2: invalid JSON"),
    ("chat.db", b"SQLite format 3\x00" + b"\x00" * 100, "auto", r"chat.db: cannot read as an iMessage chat.db"),
    ("notutf8.txt", b"15/01/2024, 09:00 - A: \xff\xfe\n15/01/2024, 09:01 - A: x\n", "whatsapp", r"notutf8.txt:1: not UTF-8"),
])
def test_bad_inputs_one_line_error(tmp_path, name, data, fmt, expect):
    f = tmp_path / name
    f.write_bytes(data)
    before = _snapshot([f])
    code, text = run(f, "-o", tmp_path / "out.jsonl", "--format", fmt, "--me", "A")
    assert code == 1
    line = [x for x in text.splitlines() if x.startswith("error:")]
    assert len(line) == 1 and re.search(expect, line[0]), text
    assert not (tmp_path / "out.jsonl").exists()
    assert _snapshot([f]) == before


def test_zip_with_dotdot_member_refused(tmp_path):
    z = tmp_path / "evil.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("_chat.txt", GOOD_WA)
        zf.writestr("../../etc/evil.txt", GOOD_WA)
    code, text = run(z, "-o", tmp_path / "o.jsonl", "--me", "Alex Rivera")
    assert code == 1 and "member '../../etc/evil.txt' is an absolute or '..' path" in text
    z2 = tmp_path / "abs.zip"
    with zipfile.ZipFile(z2, "w") as zf:
        zf.writestr("/abs/chat.txt", GOOD_WA)
    code, text = run(z2, "-o", tmp_path / "o.jsonl", "--me", "Alex Rivera")
    assert code == 1 and "absolute or '..' path" in text
    assert not (tmp_path / "etc").exists() and not (tmp_path / "o.jsonl").exists()


def test_skip_bad_keeps_good_files_and_reports(tmp_path):
    d = tmp_path / "exports"
    d.mkdir()
    (d / "a_chat.txt").write_text(GOOD_WA)
    (d / "b_trunc.json").write_bytes(b'[{"chat_messages": [')
    with zipfile.ZipFile(d / "c_evil.zip", "w") as zf:
        zf.writestr("../x.txt", GOOD_WA)
    (d / "d_bad.jsonl").write_bytes(b'{"messages": [{"role": "user", "content": "ok"}]}\nnot json\n')
    (d / "photo.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"\x00" * 50)
    before = _snapshot([d])
    out = tmp_path / "m.jsonl"
    code, text = run(d, "-o", out, "--me", "Alex Rivera", "--skip-bad")
    assert code == 0, text
    recs = _read(out)
    # the good line 1 of d_bad.jsonl is kept; only its bad line 2 is skipped
    assert [(r["speaker"], r["text"]) for r in recs] == [("Alex Rivera", "hi"), ("Sam", "yo"), ("Alex Rivera", "ok")]
    rep = json.loads((tmp_path / "m.jsonl.report.json").read_text())
    reasons = {os.path.basename(s["name"]): s["reason"] for s in rep["skipped"]}
    assert sorted(reasons) == ["c_evil.zip"]  # a whole file is skipped only when it cannot be read at all
    files = {os.path.basename(f["name"]): f for f in rep["files"]}
    assert [(b["where"].split("/")[-1], b["reason"]) for b in files["b_trunc.json"]["bad"]] == [
        ("b_trunc.json:1: record 0", "truncated JSON (Expecting value)")]
    assert files["b_trunc.json"]["messages"] == 0 and files["b_trunc.json"]["why"] == "every record skipped (1): see report"
    assert [(b["where"].split("/")[-1], b["reason"]) for b in files["d_bad.jsonl"]["bad"]] == [
        ("d_bad.jsonl:2", "invalid JSON (Expecting value)")]
    assert (files["d_bad.jsonl"]["messages"], files["d_bad.jsonl"]["skipped_records"]) == (1, 1)
    assert [os.path.basename(u) for u in rep["unrecognized"]] == ["photo.jpg"]
    assert "skipped 2 bad record(s)" in text and "d_bad.jsonl:2: invalid JSON" in text and "skipped 1 bad file(s)" in text
    assert _snapshot([d]) == before
    # without --skip-bad the first bad record stops the run, naming file:line
    code, text = run(d, "-o", tmp_path / "m2.jsonl", "--me", "Alex Rivera")
    assert code == 1 and "b_trunc.json:1: record 0: truncated JSON" in text and not (tmp_path / "m2.jsonl").exists()
    # --strict --skip-bad: all or nothing per file, so d_bad.jsonl is skipped whole (its good line too)
    code, text = run(d, "-o", tmp_path / "m3.jsonl", "--me", "Alex Rivera", "--skip-bad", "--strict")
    assert code == 0, text
    assert [r["text"] for r in _read(tmp_path / "m3.jsonl")] == ["hi", "yo"]
    rep = json.loads((tmp_path / "m3.jsonl.report.json").read_text())
    assert sorted(os.path.basename(s["name"]) for s in rep["skipped"]) == ["b_trunc.json", "c_evil.zip", "d_bad.jsonl"]


def test_since_until_filter(tmp_path):
    out = tmp_path / "m.jsonl"
    code, text = run(SAMPLES_DIR / "chatgpt_conversations.json", "-o", out, "--since", "2024-03-02", "--until", "2024-03-03")
    assert code == 0, text
    days = sorted({r["timestamp"][:10] for r in _read(out)})
    assert days == ["2024-03-02", "2024-03-03"]
    code, text = run(SAMPLES_DIR / "chatgpt_conversations.json", "-o", out, "--since", "March")
    assert code == 1 and "--since 'March'" in text


def test_whatsapp_zip_read_in_place(tmp_path):
    out = tmp_path / "m.jsonl"
    code, _ = run(SAMPLES_DIR / "WhatsApp Chat - Climbing crew.zip", "-o", out, "--me", OWNER)
    recs = _read(out)
    assert code == 0 and len(recs) == 11
    assert recs[0]["kind"] == "system" and recs[-1]["text"] == "Fine. Coffee for three"
    assert {r["speaker"] for r in recs if r["role"] == "other"} == {"Jordan Lee", "Priya Nair"}


def test_output_not_an_input_and_help(tmp_path):
    f = tmp_path / "x.jsonl"
    f.write_text('{"text": "a", "role": "me"}\n')
    code, text = run(f, "-o", f)
    assert code == 1 and "also an input" in text
    code, text = run("--help")
    assert code == 0 and "Example" in text and "--skip-bad" in text


def test_scrub_flag(tmp_path):
    f = tmp_path / "chat.txt"
    f.write_text("15/01/2024, 09:00 - Alex Rivera: mail me at alex@example.com or call +1 555 010 0199\n"
                 "15/01/2024, 09:01 - Sam Okafor: ok Alex, card 4111 1111 1111 1111\n"
                 "15/01/2024, 09:02 - Alex Rivera: thanks Sam\n")
    out = tmp_path / "m.jsonl"
    code, text = run(f, "-o", out, "--me", "Alex Rivera", "--scrub")
    assert code == 0, text
    recs = _read(out)
    assert recs[0]["text"] == "mail me at <EMAIL> or call <PHONE>"
    pseudo = recs[1]["speaker"]
    assert pseudo != "Sam Okafor" and recs[1]["text"] == "ok Alex, card <CARD>"
    assert recs[2]["text"] == f"thanks {pseudo.split()[0]}"


def test_same_export_twice_is_read_once(tmp_path):
    d = tmp_path / "unpacked"
    d.mkdir()
    (d / "_chat.txt").write_text(GOOD_WA)
    z = tmp_path / "WhatsApp Chat - Sam.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("_chat.txt", GOOD_WA)
    out = tmp_path / "m.jsonl"
    code, text = run(z, d, "-o", out, "--me", "Alex Rivera")
    assert code == 0 and len(_read(out)) == 2 and "skipped 1 duplicate input" in text


def test_progress_counts_every_input_byte(tmp_path):
    d = tmp_path / "mixed"
    d.mkdir()
    (d / "a.txt").write_text(GOOD_WA)
    (d / "b.json").write_bytes(b'[{"chat_messages": [')  # bad
    (d / "c.jpg").write_bytes(b"\xff\xd8" * 100)  # ignored
    paths = sample_paths() + [d]
    seen = []
    list(ingest_paths(paths, me=[OWNER, "Alex Rivera"], skip_bad=True, on_bytes=seen.append))
    assert sum(seen) == sum(s.size for s in collect_sources(paths))


@pytest.fixture(autouse=True)
def _no_user_identity(monkeypatch, tmp_path):
    """Hermetic: never read the developer's ~/.config/notme/identity.yaml."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg-config"))


def test_chatgpt_export_zip_layout(tmp_path):
    # The ChatGPT export zip holds conversations.json next to chat.html, user.json, images...
    z = tmp_path / "chatgpt-export.zip"
    with zipfile.ZipFile(z, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.write(SAMPLES_DIR / "chatgpt_conversations.json", "conversations.json")
        zf.writestr("chat.html", "<html><script>var jsonData = [];</script></html>")
        zf.writestr("user.json", '{"id": "user-1", "email": "alex@example.com"}')
        zf.writestr("shared_conversations.json", '[{"id": "s", "conversation_id": "c", "title": "t"}]')
        zf.writestr("file-abc.png", b"\x89PNG\r\n\x1a\n" + b"\x00" * 64)
        zf.writestr("__MACOSX/._conversations.json", b"\x00\x05\x16\x07")
    out = tmp_path / "m.jsonl"
    code, text = run(z, "-o", out)
    assert code == 0, text
    recs = _read(out)
    assert {r["source"] for r in recs} == {"chatgpt"} and len({r["conversation_id"] for r in recs}) == 10
    assert "ignored 4 file(s)" in text


def test_nothing_recognized_is_an_error(tmp_path):
    z = tmp_path / "photos.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("a.png", b"\x89PNG\r\n\x1a\n")
    code, text = run(z, "-o", tmp_path / "m.jsonl")
    assert code == 1 and "no supported export found in 1 input file(s)" in text


def test_telegram_html_export_hint(tmp_path):
    d = tmp_path / "ChatExport_2024-05-01"
    d.mkdir()
    (d / "messages.html").write_text("<html><body><div class='message'>hi</div></body></html>")
    code, text = run(d, "-o", tmp_path / "m.jsonl")
    assert code == 1 and "Telegram HTML export" in text and "Machine-readable JSON" in text


def test_no_silent_empty_run(tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    bad = json.dumps({"conversations": [{"from": "narrator", "value": "x"}]})
    (d / "all_bad.jsonl").write_text(bad + "\n" + bad[:20] + "\n")  # unknown role; truncated line
    (d / "tools_only.jsonl").write_text(json.dumps({"conversations": [
        {"from": "function_call", "value": "{}"}, {"from": "observation", "value": "{}"}]}) + "\n")
    out = tmp_path / "m.jsonl"
    code, text = run(d, "-o", out, "--skip-bad")
    assert code == 1 and not out.exists()
    line = [x for x in text.splitlines() if x.startswith("error:")][0]
    assert "no messages from 2 non-empty input file(s)" in line
    assert "all_bad.jsonl: every record skipped (2): see report" in line
    assert "tools_only.jsonl: only tool calls/results (2); pass --tools" in line
    code, text = run(d, "-o", out, "--skip-bad", "--allow-empty")
    assert code == 0 and out.read_text() == "" and "wrote 0 messages" in text
    rep = json.loads((tmp_path / "m.jsonl.report.json").read_text())
    assert [(os.path.basename(f["name"]), f["messages"], f["skipped_records"]) for f in rep["files"]] == [
        ("all_bad.jsonl", 0, 2), ("tools_only.jsonl", 0, 0)]
    assert stat.S_IMODE((tmp_path / "m.jsonl.report.json").stat().st_mode) == 0o600
    code, text = run(d / "tools_only.jsonl", "-o", out, "--tools")
    assert code == 0 and len(_read(out)) == 2


def test_summary_table_per_file(tmp_path):
    (tmp_path / "chat.txt").write_text(GOOD_WA + "15/13/2024, 09:02 - Sam: month 13\n")
    out = tmp_path / "m.jsonl"
    code, text = run(tmp_path / "chat.txt", "-o", out, "--me", "Alex Rivera", "--skip-bad")
    assert code == 0, text
    row = [x for x in text.splitlines() if x.startswith("whatsapp")][0].split()
    assert row[:3] == ["whatsapp", "2", "1"] and "1 bad record(s) skipped: see report" in text
    assert "chat.txt:3: impossible date/time '15/13/2024' '09:02'" in text
