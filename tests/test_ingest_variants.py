"""Format variants real tools write, read from third-party samples with exact counts and speakers.

Samples and licenses: tests/ingest_fixtures/third_party/*/SOURCE.md (chatgpt-exporter, chat-miner,
whatsapp-chat-parser, whatsapp-converter, claude-code-log: MIT; LLaMA-Factory: Apache-2.0).
"""

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from notme_mlx.cli import main
from notme_mlx.errors import InputError
from notme_mlx.ingest import IngestReport, detect_format, ingest_paths, parse_bytes
from notme_mlx.ingest.sources import file_source
from notme_mlx.samples import SAMPLES_DIR

TP = Path(__file__).parent / "ingest_fixtures" / "third_party"


def _run(*args):
    r = CliRunner().invoke(main, ["ingest", *map(str, args)], catch_exceptions=False)
    return r.exit_code, r.output


# ---- ChatGPT: one conversation object (not a list), newer content types -------------------------

def test_chatgpt_single_conversation_with_thoughts_and_recaps():
    f = TP / "chatgpt_exporter" / "thinking-summaries.json"
    assert detect_format(file_source(f)) == "chatgpt"
    rep = IngestReport()
    recs = list(ingest_paths([f], report=rep))
    # 14 nodes: 2 user turns, 2 final answers; 4 thoughts + 2 reasoning_recap (the model's reasoning),
    # 2 empty assistant calls to web.run and 2 empty web.run results are not messages
    assert [(r["role"], r["speaker"], r["text"]) for r in recs] == [
        ("me", "me", "question 1"), ("ai", "ChatGPT", "answer 1"),
        ("me", "me", "question 2"), ("ai", "ChatGPT", "answer 2")]
    assert [r["message_id"] for r in recs] == ["m-n1", "m-n10", "m-n11", "m-n14"]
    assert {r["conversation_id"] for r in recs} == {"fixture"}
    assert [r["parent_id"] for r in recs] == [None, "m-n1", "m-n10", "m-n11"]
    assert rep.files[0]["left_out"] == {"reasoning": 6} and rep.files[0]["skipped_records"] == 0


def test_chatgpt_sediment_images_internal_tool_and_code():
    f = TP / "chatgpt_exporter" / "image-generation.json"
    recs = list(ingest_paths([f]))
    # active branch n0..n24 (n6 and n12 are abandoned siblings); user turns n1, n7, n13, n19
    assert [(r["role"], r["kind"], r["text"]) for r in recs] == [
        ("me", "text", "<media:image>\nquestion 1"), ("me", "text", "question 2"),
        ("me", "text", "question 3"), ("me", "text", "question 4")]
    tools = [r for r in ingest_paths([f], tools=True) if r["kind"] == "tool"]
    # visible tool traffic: 4 internal_tool images (n2, n8, n16, n20) and 2 code calls to it (n14, n15);
    # the hidden commentary nodes (n3, n4, n9, n10, n21, n22) stay out
    assert [(r["message_id"], r["speaker"], r["text"]) for r in tools] == [
        ("m-n2", "internal_tool", "<media:image>"), ("m-n8", "internal_tool", "<media:image>"),
        ("m-n14", "internal_tool", "code 1"), ("m-n15", "internal_tool", "code 2"),
        ("m-n16", "internal_tool", "<media:image>"), ("m-n20", "internal_tool", "<media:image>")]
    assert all(r["role"] == "ai" for r in tools)


def test_chatgpt_without_current_node_takes_newest_leaf(tmp_path):
    # the exporter's object with current_node removed: the newest leaf decides the branch; all
    # create_time are missing there, so ties go to the first leaf in file order (n14, the only leaf)
    doc = json.loads((TP / "chatgpt_exporter" / "thinking-summaries.json").read_text())
    del doc["current_node"]
    f = tmp_path / "conv.json"
    f.write_text(json.dumps(doc))
    assert [r["text"] for r in ingest_paths([f])] == ["question 1", "answer 1", "question 2", "answer 2"]


def test_chatgpt_single_object_bad_json_is_one_bad_record(tmp_path):
    f = tmp_path / "conv.json"
    text = (TP / "chatgpt_exporter" / "thinking-summaries.json").read_text()
    f.write_text(text.replace('"answer 2"', '"answer 2'))
    with pytest.raises(InputError, match=r"conv.json:\d+: record 0: invalid JSON"):
        list(ingest_paths([f]))


# ---- WhatsApp: older layouts, 12-hour variants, BOM + CR CR LF, LRM placeholders, clock running back --

def test_whatsapp_a_m_p_m_with_spaces_and_midnight_00_08():
    f = TP / "chat_miner" / "test_mmddyyyy_12hrs.txt"
    recs = list(ingest_paths([f], me=["John Doe"]))
    people = [r for r in recs if r["role"] != "system"]
    # chat-miner's own test/whatsapp/target.json for this file (author, time, text of its 6 person
    # messages; it joins continuation lines with a space)
    expect = [("2019-01-01T11:25:00Z", "John Doe", "Lorem ipsum dolor sit amet."),
              ("2019-01-30T20:49:00Z", "Jahn Doe", "Lorem ipsum dolor sit amet, consectetur adipiscing elit. Duis libero."),
              ("2020-06-10T15:55:00Z", "John-John Doe", "Lorem ipsum : dolor sit amet."),
              ("2021-12-10T10:10:00Z", "John Doe 🤓", "Lorem ipsum 🤓"),
              ("2021-12-20T12:10:00Z", "🤓", "Lorem ipsum 🤓"),
              ("2021-12-30T22:01:00Z", "John Doe", "Lorem ipsum dolor sit amet, consectetur adipiscing elit. Duis libero.")]
    assert [(r["timestamp"], r["speaker"], r["text"].replace("\n", " ")) for r in people] == expect
    assert [r["role"] for r in people] == ["me", "other", "other", "other", "other", "me"]
    system = [(r["timestamp"], r["text"]) for r in recs if r["role"] == "system"]
    # '00:08 a. m.' is 00:08 (was refused as an impossible 12-hour time); 'John Doe:.' has no ': '
    assert system == [("2019-01-20T11:23:00Z", "John Doe:."),
                      ("2020-06-20T00:08:00Z", '+12 345 578 created group "Groupname"'),
                      ("2020-06-30T09:10:00Z", "You were added")]


def test_whatsapp_timestamps_running_backwards_keep_file_order():
    f = TP / "chat_miner" / "test_dateformat2.txt"
    recs = list(ingest_paths([f], me=["John Doe"]))
    # chat-miner's test_dateformat2_target.csv lists the same 4 (in reverse); 11/27 comes before 11/17
    assert [(r["timestamp"], r["speaker"], r["role"]) for r in recs] == [
        ("2019-09-24T23:30:00Z", "John Doe", "me"), ("2019-11-27T21:30:00Z", "John Doe", "me"),
        ("2019-11-17T21:34:00Z", "John-John Doe", "other"), ("2019-12-24T11:30:00Z", "Jahn Doe", "other")]
    assert [r["parent_id"] for r in recs[1:]] == [r["message_id"] for r in recs[:-1]]


@pytest.mark.parametrize("path,me,ts,speaker,text", [
    # D/M/YY, H:MM:SS PM: Name: text (whatsapp-converter's README example; it reads 2019-08-21 23:28)
    ("whatsapp_converter/readme-line.txt", "Jon Doe", "2019-08-21T23:28:51Z", "Jon Doe", "Waste out of wealth 😂"),
    # DD.MM.YY HH.MM.SS: Name: text (whatsapp-chat-parser's format3, expected 2018-06-13 21:25:15)
    ("whatsapp_chat_parser/format3-line.txt", "a", "2018-06-13T21:25:15Z", "a", "m"),
])
def test_whatsapp_older_colon_layout(path, me, ts, speaker, text):
    f = TP / path
    assert detect_format(file_source(f)) == "whatsapp"
    recs = list(ingest_paths([f], me=[me]))
    assert [(r["timestamp"], r["speaker"], r["role"], r["text"]) for r in recs] == [(ts, speaker, "me", text)]


def _bom_cr_cr_lf(raw: bytes) -> bytes:
    """The byte layout some exports have: a BOM, records ending CR CR LF, breaks inside a message CRLF."""
    lines = raw.decode("utf-8").split("\n")
    out = []
    for i, line in enumerate(lines):
        nxt = lines[i + 1] if i + 1 < len(lines) else None
        out.append(line + ("\r\r\n" if nxt is None or re.match(r"\d", nxt) else "\r\n"))
    return b"\xef\xbb\xbf" + "".join(out).encode("utf-8")


def test_whatsapp_bom_cr_cr_lf_same_messages_as_lf():
    raw = (TP / "chat_miner" / "test_mmddyyyy_12hrs.txt").read_bytes()
    data = _bom_cr_cr_lf(raw)
    assert data.startswith(b"\xef\xbb\xbf01/01/2019") and b"amet,\r\nconsectetur" in data and b".\r\r\n" in data
    plain = parse_bytes("auto", raw, name="chat.txt", me=["John Doe"])
    crlf = parse_bytes("auto", data, name="chat.txt", me=["John Doe"])
    assert len(crlf) == 9 and crlf == plain  # same ids, texts (CRs gone, inner break kept as \n), speakers


def test_whatsapp_lrm_placeholder_in_italian_is_media():
    # The short-chat sample's message lines with the body replaced by what an Italian phone writes for a
    # photo: U+200E then `<immagine omessa>` (text built here; the header lines are upstream's).
    raw = (TP / "whatsapp_chat_parser" / "short-chat.txt").read_text(encoding="utf-8")
    lines = raw.splitlines()
    head = [ln for ln in lines if ln.startswith("06/03/2017, 00:45 - Sample User:")][0]
    data = (raw.rstrip("\n") + "\n" + head.split(": ", 1)[0] + ": \u200e<immagine omessa>\n").encode()
    recs = parse_bytes("auto", data, name="chat.txt", me=["Sample User"])
    assert (recs[-1]["role"], recs[-1]["kind"], recs[-1]["text"]) == ("me", "media", "<media:image>")
    assert len(recs) == 6  # upstream's 5 + the placeholder


def test_whatsapp_undatable_line_is_one_bad_record():
    raw = (TP / "chat_miner" / "test_mmddyyyy_12hrs.txt").read_text(encoding="utf-8")
    bad = raw.replace("06/10/2020, 03:55 p. m.", "06/10/2020, 03:75 p. m.")  # minute 75
    with pytest.raises(InputError, match=r"chat.txt:5: impossible date/time '06/10/2020' '03:75 p. m.'"):
        parse_bytes("auto", bad.encode(), name="chat.txt", me=["John Doe"])
    recs = parse_bytes("auto", bad.encode(), name="chat.txt", me=["John Doe"], skip_bad=True)
    good = parse_bytes("auto", raw.encode(), name="chat.txt", me=["John Doe"])
    lost = [r for r in good if r["text"] == "Lorem ipsum : dolor sit amet."]
    assert len(lost) == 1 and len(recs) == 8
    # everything else identical; the next message's parent is re-linked past the skipped one
    relinked = [dict(r, parent_id=lost[0]["parent_id"]) if r["parent_id"] == lost[0]["message_id"] else r
                for r in good if r is not lost[0]]
    assert recs == relinked


# ---- ShareGPT with tool calling ---------------------------------------------------------------------

def test_sharegpt_function_call_and_observation_are_tool_turns():
    f = TP / "llama_factory" / "glaive_toolcall_en_demo_first8.json"
    assert detect_format(file_source(f)) == "sharegpt"
    rep = IngestReport()
    recs = list(ingest_paths([f], report=rep))
    assert len(recs) == 46 and len({r["conversation_id"] for r in recs}) == 8
    assert [r["role"] for r in recs].count("me") == 23 and [r["role"] for r in recs].count("ai") == 23
    assert {r["speaker"] for r in recs} == {"me", "assistant"} and rep.files[0]["left_out"] == {"tool": 12}
    upstream = json.loads(f.read_text())
    assert recs[0]["text"] == upstream[0]["conversations"][0]["value"]
    with_tools = list(ingest_paths([f], tools=True))
    tools = [r for r in with_tools if r["kind"] == "tool"]
    assert len(with_tools) == 58 and len(tools) == 12
    assert [r["speaker"] for r in tools] == ["function_call", "observation"] * 6
    conv3 = [r for r in with_tools if r["conversation_id"] == with_tools[0]["conversation_id"]]
    assert [r["speaker"] for r in conv3][:6] == ["me", "assistant", "me", "function_call", "observation", "assistant"]


# ---- Claude Code ------------------------------------------------------------------------------------

CCL = TP / "claude_code_log"


def test_claude_code_malformed_lines_cost_only_themselves():
    f = CCL / "edge_cases.jsonl"
    with pytest.raises(InputError, match=r"edge_cases.jsonl:10: 'message' has no 'content'"):
        list(ingest_paths([f]))
    rep = IngestReport()
    recs = list(ingest_paths([f], skip_bad=True, report=rep))
    assert [(r["role"], r["message_id"]) for r in recs] == [
        ("me", "edge_001"), ("ai", "edge_002"), ("me", "edge_003"), ("ai", "edge_009"), ("me", "edge_011"),
        ("me", "edge_010")]
    assert recs[-1]["text"] == "wow error"  # the good copy (line 18) of the uuid whose line 10 was broken
    assert recs[4]["text"].startswith("Testing special characters: café")
    bad = [(b["where"].rsplit(":", 1)[1], b["reason"]) for b in rep.files[0]["bad"]]
    assert bad == [("10", "'message' has no 'content' (keys: contenst, role)"),
                   ("11", "'message' is not an object (got \"error\")"),
                   ("13", "expected a JSON object, got str"), ("14", "no 'type' (not a Claude Code log line)"),
                   ("15", "expected a JSON object, got int"), ("16", "expected a JSON object, got list")]
    assert rep.files[0]["left_out"] == {"tool": 4, "not a message line": 1}


def test_claude_code_subagent_transcript_explains_itself(tmp_path):
    f = CCL / "agent-showcol2.jsonl"
    out = tmp_path / "m.jsonl"
    code, text = _run(f, "-o", out)
    assert code == 1 and not out.exists()
    assert "agent-showcol2.jsonl: all 4 message lines are subagent sidechains; pass --sidechains" in text
    code, text = _run(f, "-o", out, "--allow-empty")
    assert code == 0 and out.read_text() == ""
    recs = list(ingest_paths([f], sidechains=True))
    # 4 lines: the prompt (plain string content), a tool_use, a tool_result, the answer
    assert [(r["role"], r["text"][:30]) for r in recs] == [
        ("me", "Survey src/jobs and list its s"), ("ai", "Three scheduled jobs:\n\n| Job |")]
    assert len(list(ingest_paths([f], sidechains=True, tools=True))) == 4


def test_claude_code_injected_and_non_message_lines(tmp_path):
    # claude-code-log's representative session plus lines of the kinds Claude Code writes besides
    # messages (field shapes as seen in public Claude Code logs; text here is ours): a system line,
    # an attachment line, a user-role task notification and a user-role line from another session.
    base = (CCL / "representative_messages.jsonl").read_text().rstrip("\n") + "\n"
    extra = [
        {"type": "system", "subtype": "turn_duration", "durationMs": 1200, "uuid": "x-sys", "sessionId": "test_session",
         "timestamp": "2025-06-14T10:09:00Z"},
        {"type": "attachment", "uuid": "x-att", "sessionId": "test_session", "timestamp": "2025-06-14T10:09:01Z",
         "attachment": {"type": "queued_command", "prompt": "also run the linter"}},
        {"type": "user", "uuid": "x-tn", "sessionId": "test_session", "timestamp": "2025-06-14T10:09:02Z",
         "origin": {"kind": "task-notification"}, "message": {"role": "user", "content":
                                                             "<task-notification><status>completed</status></task-notification>"}},
        {"type": "user", "uuid": "x-peer", "sessionId": "test_session", "timestamp": "2025-06-14T10:09:03Z",
         "origin": {"kind": "peer"}, "message": {"role": "user", "content": "Another Claude session sent a message"}},
        {"type": "user", "uuid": "x-human", "sessionId": "test_session", "timestamp": "2025-06-14T10:09:04Z",
         "origin": {"kind": "human"}, "message": {"role": "user", "content": "thanks, that was it"}},
        {"type": "assistant", "uuid": "x-str", "sessionId": "test_session", "timestamp": "2025-06-14T10:09:05Z",
         "message": {"id": "msg_x", "role": "assistant", "content": "Glad it helped."}},
    ]
    f = tmp_path / "session.jsonl"
    f.write_text(base + "".join(json.dumps(o) + "\n" for o in extra))
    rep = IngestReport()
    recs = list(ingest_paths([f], report=rep))
    before = list(ingest_paths([CCL / "representative_messages.jsonl"]))
    assert len(before) == 7 and recs[:7] == before
    assert [(r["role"], r["text"]) for r in recs[7:]] == [("me", "thanks, that was it"), ("ai", "Glad it helped.")]
    assert rep.files[0]["left_out"] == {"tool": 4, "not a message line": 3, "injected (task-notification)": 1,
                                        "injected (peer)": 1}


def test_detection_guards_for_the_new_variants(tmp_path):
    # a log with ISO dates and 'HH:MM:SS: ' is not the older WhatsApp layout (its year comes last)
    log = tmp_path / "server.log"
    log.write_text("2024-01-15 10:00:01: INFO: started\n2024-01-15 10:00:02: INFO: ready\n")
    assert detect_format(file_source(log)) is None
    # a Claude Code line whose tool input happens to have ChatGPT's keys stays Claude Code
    line = json.loads((CCL / "agent-showcol2.jsonl").read_text().splitlines()[1])
    line["message"]["content"][0]["input"] = {"mapping": {}, "children": [], "current_node": None}
    f = tmp_path / "s.jsonl"
    f.write_text(json.dumps(line) + "\n")
    assert detect_format(file_source(f)) == "claude_code"


def test_whatsapp_order_by_majority_minority_dates_are_bad_records():
    # 10 day-first dates (14/04, 20/04) against one month-first date: the majority decides, the other
    # line cannot be a date under it and is one bad record (before: the whole chat was refused)
    raw = (SAMPLES_DIR / "WhatsApp Chat with Sam Okafor.txt").read_text(encoding="utf-8")
    lines = raw.split("\n")
    i = next(k for k, ln in enumerate(lines) if ln.startswith("10/05/2024"))
    lines[i] = "05/13/2024" + lines[i][10:]
    data = "\n".join(lines).encode()
    with pytest.raises(InputError, match=rf"chat.txt:{i + 1}: impossible date/time '05/13/2024'.*resolved order dmy"):
        parse_bytes("auto", data, name="chat.txt", me=["Alex Rivera"])
    got = parse_bytes("auto", data, name="chat.txt", me=["Alex Rivera"], skip_bad=True)
    clean = parse_bytes("auto", raw.encode(), name="chat.txt", me=["Alex Rivera"])
    assert len(got) == len(clean) - 1 == 23
    assert {r["timestamp"][:10] for r in got} == {"2024-04-10", "2024-04-14", "2024-04-20", "2024-05-10"}


def test_notme_md_bad_date_line_costs_only_the_date(tmp_path):
    raw = (SAMPLES_DIR / "handwritten.md").read_text(encoding="utf-8")
    bad = raw.replace("date: 2024-05-02 18:00", "date: the second of May", 1)
    with pytest.raises(InputError, match=r"notes.md:9: bad date 'the second of May'"):
        parse_bytes("notme_md", bad.encode(), name="notes.md")
    got = parse_bytes("notme_md", bad.encode(), name="notes.md", skip_bad=True)
    clean = parse_bytes("notme_md", raw.encode(), name="notes.md")
    assert [r["text"] for r in got] == [r["text"] for r in clean]  # every message kept
    changed = [r for r, c in zip(got, clean) if r != c]
    assert changed and all(r["timestamp"] is None for r in changed)  # that conversation is undated
    assert all(c["timestamp"].startswith("2024-05-02") for r, c in zip(got, clean) if r != c)


def test_telegram_bad_message_is_one_bad_record():
    raw = json.loads((TP / "langchain" / "telegram_chat_json" / "result.json").read_text())
    raw["messages"][1]["date_unixtime"] = "yesterday"
    data = json.dumps(raw).encode()
    with pytest.raises(InputError, match=r"result.json: chat 0 \('Jimmeny'\) message 1: bad date_unixtime 'yesterday'"):
        parse_bytes("telegram", data, name="result.json", me=["Jimmeny Marvelton"])
    got = parse_bytes("telegram", data, name="result.json", me=["Jimmeny Marvelton"], skip_bad=True)
    assert [(r["role"], r["text"]) for r in got] == [
        ("me", "i refuse to converse with you"), ("me", "we meet again"), ("me", "you will not trick me this time")]


@pytest.mark.parametrize("fmt,lines,reasons", [
    ("openai_jsonl",
     ['{"messages": "x"}', '{"messages": [{"role": "user", "content": "hi"}, {"content": "no role"}]}',
      '{"messages": [3]}', '{"id": 1}'],
     ["no 'messages' list (OpenAI chat format)", "messages[1] has no 'role'", "messages[0] has no 'role'",
      "no 'messages' list (OpenAI chat format)"]),
    ("sharegpt",
     ['{"conversations": {}}', '{"conversations": [{"from": "human", "value": "hi"}, {"value": "x"}]}',
      '{"conversations": ["s"]}'],
     ["no 'conversations' list (ShareGPT format)", "conversations[1] has no 'from'",
      "conversations[0] has no 'from'"]),
])
def test_turn_list_errors_name_line_list_and_item(fmt, lines, reasons):
    rep = IngestReport()
    recs = parse_bytes(fmt, ("\n".join(lines) + "\n").encode(), name="t.jsonl", skip_bad=True, report=rep,
                       allow_empty=True)
    assert recs == []
    assert rep.files[0]["bad"] == [{"where": f"t.jsonl:{i}", "reason": r} for i, r in enumerate(reasons, 1)]
