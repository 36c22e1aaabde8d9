"""Per-format parsing against fixtures whose content is known (bundled samples + inline)."""

import json

import pytest

from notme_mlx.errors import InputError
from notme_mlx.ingest import FIELDS, detect_format, ingest_paths, parse_bytes
from notme_mlx.ingest.sources import file_source
from notme_mlx.samples import SAMPLES_DIR, sample_paths
from notme_mlx.samples._build import build
from notme_mlx.samples._content import AI_CHATS, CODE_SESSIONS, MD_CHATS, P2P_CHATS

ME = ["Alex Rivera"]


def _ingest(rel, **kw):
    paths = sorted(SAMPLES_DIR.glob("claude_code_*.jsonl")) if rel == "claude_code" else [SAMPLES_DIR / rel]
    return list(ingest_paths(paths, me=ME, **kw))


def _convs(recs):
    out = {}
    for r in recs:
        out.setdefault(r["conversation_id"], []).append(r)
    return list(out.values())


def test_every_record_has_exactly_the_design_fields():
    recs = list(ingest_paths(sample_paths(), me=ME))
    assert len(recs) >= 180
    for r in recs:
        assert tuple(r) == FIELDS
        assert r["role"] in ("me", "other", "ai", "system") and r["kind"] in ("text", "media", "system", "tool")
        assert r["timestamp"] is None or (r["timestamp"].endswith("Z") and r["timestamp"][10] == "T")
    assert len({(r["source"], r["message_id"]) for r in recs}) == len(recs)


@pytest.mark.parametrize("path,fmt", [
    ("chatgpt_conversations.json", "chatgpt"), ("claude_conversations.json", "claude"),
    ("imessage_chat.db", "imessage"), ("WhatsApp Chat with Sam Okafor.txt", "whatsapp"),
    ("telegram_result.json", "telegram"), ("openai_chats.jsonl", "openai_jsonl"),
    ("sharegpt.json", "sharegpt"), ("mlx_completions.jsonl", "mlx_jsonl"),
    ("handwritten.md", "notme_md"),
])
def test_detection_by_content_not_name(path, fmt, tmp_path):
    renamed = tmp_path / "export.bin"
    renamed.write_bytes((SAMPLES_DIR / path).read_bytes())
    assert detect_format(file_source(renamed)) == fmt


def test_chatgpt_active_branch_only_and_skips():
    recs = _ingest("chatgpt_conversations.json")
    convs = _convs(recs)
    assert len(convs) == 10 and len(recs) == sum(len(t) for _, t in AI_CHATS[:10])
    first = convs[0]
    assert [r["text"] for r in first] == [t for _, t in AI_CHATS[0][1]]
    assert all("(regenerated)" not in r["text"] for r in recs)  # abandoned branch dropped
    assert all("Port Calder." != r["text"] for r in recs)  # user_editable_context skipped
    assert all("print(25" not in r["text"] and r["text"] != "32.5" for r in recs)  # tool traffic dropped
    assert [r["role"] for r in first] == ["me", "ai", "me", "ai"]
    assert first[0]["speaker"] == "Alex Rivera" and first[1]["speaker"] == "ChatGPT"
    assert first[0]["timestamp"] == "2024-03-01T09:00:00Z"
    assert "\n\n" in first[1]["text"]  # multiline body kept
    with_tools = _ingest("chatgpt_conversations.json", tools=True)
    tool = [r for r in with_tools if r["kind"] == "tool"]
    assert [r["text"] for r in tool] == ["print(25 * 1.3)", "32.5"]


def test_chatgpt_without_current_node_takes_newest_leaf():
    conv = [{"id": "c1", "title": "t", "mapping": {
        "r": {"id": "r", "message": None, "parent": None, "children": ["u"]},
        "u": {"id": "u", "parent": "r", "children": ["a1", "a2"], "message": {
            "id": "u", "author": {"role": "user"}, "create_time": 1700000000.0,
            "content": {"content_type": "text", "parts": ["q"]}}},
        "a1": {"id": "a1", "parent": "u", "children": [], "message": {
            "id": "a1", "author": {"role": "assistant"}, "create_time": 1700000001.0,
            "content": {"content_type": "text", "parts": ["old"]}}},
        "a2": {"id": "a2", "parent": "u", "children": [], "message": {
            "id": "a2", "author": {"role": "assistant"}, "create_time": 1700000005.5,
            "content": {"content_type": "multimodal_text", "parts": [
                {"content_type": "image_asset_pointer", "asset_pointer": "file-1"}, "new"]}}},
    }}]
    recs = parse_bytes("chatgpt", json.dumps(conv).encode())
    assert [(r["message_id"], r["text"]) for r in recs] == [("u", "q"), ("a2", "<media:image>\nnew")]
    assert recs[1]["timestamp"] == "2023-11-14T22:13:25.500Z" and recs[1]["parent_id"] == "u"


def test_claude_export():
    recs = _ingest("claude_conversations.json")
    convs = _convs(recs)
    assert len(convs) == 7
    assert [r["text"] for r in convs[0]] == [t for _, t in AI_CHATS[10][1]]
    assert [(r["speaker"], r["role"]) for r in convs[0][:2]] == [("Alex Rivera", "me"), ("Claude", "ai")]
    assert convs[0][0]["timestamp"] == "2024-03-13T14:00:00Z"


def test_claude_branches_keep_newest_path():
    root = "00000000-0000-4000-8000-000000000000"
    conv = [{"uuid": "c", "name": "n", "chat_messages": [
        {"uuid": "1", "sender": "human", "text": "hi", "created_at": "2024-01-01T00:00:00Z", "parent_message_uuid": root},
        {"uuid": "2", "sender": "assistant", "text": "first try", "created_at": "2024-01-01T00:00:01Z",
         "parent_message_uuid": "1"},
        {"uuid": "3", "sender": "assistant", "text": "", "content": [{"type": "text", "text": "second try"},
         {"type": "tool_use", "name": "web_search"}], "created_at": "2024-01-01T00:00:05Z", "parent_message_uuid": "1"},
    ]}]
    recs = parse_bytes("claude", json.dumps(conv).encode())
    assert [r["text"] for r in recs] == ["hi", "second try"]


def test_claude_code_drops_noise_and_dedupes():
    recs = _ingest("claude_code")
    convs = _convs(recs)
    assert len(convs) == 3
    by_proj = {c[0]["text"]: c for c in convs}
    garden = by_proj[CODE_SESSIONS[0][1][0][1]]
    expected = [(w, t) for w, t in CODE_SESSIONS[0][1] if w != "tool"]
    assert [(r["role"], r["text"]) for r in garden] == [("me" if w == "me" else "ai", t) for w, t in expected]
    texts = [r["text"] for r in recs]
    assert not any("command-name" in t or "Caveat:" in t or "Sub-agent" in t or "tool_result" in t for t in texts)
    assert all(r["kind"] == "text" for r in recs)
    # streamed chunks share message.id -> one record whose id is that message.id
    assert all(r["message_id"].startswith("msg_") for r in recs if r["role"] == "ai")
    with_side = _ingest("claude_code", sidechains=True, tools=True)
    assert sum("Sub-agent" in r["text"] for r in with_side) == 3
    assert sum(r["kind"] == "tool" for r in with_side) == 4  # 2 tool_use + 2 tool_result in garden-sensors


def test_claude_code_chunk_merge_inline():
    lines = [
        {"type": "user", "uuid": "u1", "sessionId": "s", "timestamp": "2024-01-01T00:00:00Z",
         "message": {"role": "user", "content": "go"}},
        {"type": "assistant", "uuid": "a1", "sessionId": "s", "timestamp": "2024-01-01T00:00:01Z",
         "message": {"id": "m1", "role": "assistant", "content": [{"type": "text", "text": "part one"}]}},
        {"type": "assistant", "uuid": "a2", "sessionId": "s", "timestamp": "2024-01-01T00:00:02Z",
         "message": {"id": "m1", "role": "assistant", "content": [{"type": "text", "text": "part two"}]}},
        {"type": "assistant", "uuid": "a3", "sessionId": "s", "timestamp": "2024-01-01T00:00:02Z",
         "message": {"id": "m1", "role": "assistant", "content": [{"type": "text", "text": "part two"}]}},
        {"type": "user", "uuid": "u2", "sessionId": "s", "timestamp": "2024-01-01T00:00:03Z",
         "message": {"role": "user", "content": "[Request interrupted by user]"}},
        {"type": "user", "uuid": "u3", "sessionId": "s", "timestamp": "2024-01-01T00:00:04Z", "isCompactSummary": True,
         "message": {"role": "user", "content": "This session is being continued..."}},
    ]
    data = "".join(json.dumps(x) + "\n" for x in lines).encode()
    recs = parse_bytes("claude_code", data)
    assert [(r["message_id"], r["text"]) for r in recs] == [("u1", "go"), ("m1", "part one\n\npart two")]
    assert recs[1]["parent_id"] == "u1" and recs[1]["conversation_id"] == "s"


def test_telegram_full_export_owner_and_entities():
    recs = _ingest("telegram_result.json")
    turns = P2P_CHATS[2][1] + P2P_CHATS[7][1] + P2P_CHATS[11][1] + P2P_CHATS[15][1]
    assert len(recs) == len(turns) + 1  # + one service message
    msgs = [r for r in recs if r["kind"] != "system"]
    assert [r["text"] for r in msgs] == [t for _, t in turns]  # bold entity flattened back to plain text
    assert [r["role"] for r in msgs] == ["me" if w == "me" else "other" for w, _ in turns]
    assert {r["speaker"] for r in msgs if r["role"] == "other"} == {"Priya Nair"}
    assert msgs[0]["timestamp"] == "2024-04-30T12:00:00Z"  # from date_unixtime, not the local `date`
    sysm = [r for r in recs if r["kind"] == "system"]
    assert [(r["role"], r["text"]) for r in sysm] == [("system", "Priya Nair pin message")]


def test_telegram_entity_list_and_media_inline():
    chat = {"name": "X", "type": "personal_chat", "id": 9, "messages": [
        {"id": 1, "type": "message", "date_unixtime": "1700000000", "from": "Bo", "from_id": "user2",
         "text": ["see ", {"type": "link", "text": "https://example.org"}, " and ", {"type": "bold", "text": "this"}]},
        {"id": 2, "type": "message", "date_unixtime": "1700000060", "from": "Al", "from_id": "user1", "text": "",
         "photo": "photos/p.jpg"},
        {"id": 3, "type": "message", "date_unixtime": "1700000120", "from": "Al", "from_id": "user1",
         "text": "caption", "media_type": "video_file"},
    ]}
    recs = parse_bytes("telegram", json.dumps(chat).encode(), me=["Al"])
    assert [(r["role"], r["kind"], r["text"]) for r in recs] == [
        ("other", "text", "see https://example.org and this"),
        ("me", "media", "<media:photo>"),
        ("me", "text", "<media:video>\ncaption"),
    ]
    assert recs[0]["message_id"] == "telegram:9:1"


def test_jsonl_formats():
    oa = _ingest("openai_chats.jsonl")
    assert len(_convs(oa)) == 5 and [r["role"] for r in oa[:3]] == ["system", "me", "ai"]
    assert oa[1]["text"] == AI_CHATS[17][1][0][1]
    sg = _ingest("sharegpt.json")
    assert [c[0]["conversation_id"] for c in _convs(sg)] == ["sg-0", "sg-1", "sg-2", "sg-3"]
    assert sg[0]["text"] == AI_CHATS[22][1][0][1] and sg[1]["role"] == "ai"
    mx = _ingest("mlx_completions.jsonl")
    assert len(_convs(mx)) == 7 and [r["role"] for r in mx[:2]] == ["me", "ai"]
    assert mx[0]["text"] == AI_CHATS[26][1][0][1] and mx[1]["text"] == AI_CHATS[26][1][1][1]
    assert mx[-1]["text"].startswith("I'd rather ship") and mx[-1]["role"] == "me"


def test_sharegpt_jsonl_and_unknown_role():
    line = json.dumps({"conversations": [{"from": "human", "value": "a"}, {"from": "gpt", "value": "b"}]})
    assert [r["role"] for r in parse_bytes("auto", (line + "\n").encode())] == ["me", "ai"]
    bad = json.dumps({"conversations": [{"from": "narrator", "value": "a"}]})
    with pytest.raises(InputError, match=r"x.jsonl:1: turn 0: unknown role 'narrator'"):
        parse_bytes("sharegpt", (bad + "\n").encode(), name="x.jsonl")


def test_notme_md_handwritten():
    recs = _ingest("handwritten.md")
    convs = _convs(recs)
    assert len(convs) == len(MD_CHATS) == 9
    assert [(r["speaker"], r["text"]) for r in convs[1]] == [
        ("Ines Marlowe" if w != "me" else "Alex Rivera", t) for w, t in MD_CHATS[1][1]]
    assert [r["role"] for r in convs[2]] == ["ai", "me"]
    assert convs[4][0]["text"] == MD_CHATS[4][1][0][1] and "\n" in convs[4][0]["text"]
    assert all(r["timestamp"] == "2024-05-02T18:00:00Z" for r in convs[1])


def test_notme_md_inline_rules():
    md = "## One\n**me:** first line\n\nsecond para\n**Kim:** hi\n## Two\ndate: 2024-01-02T03:04:05+02:00\n**ai:** x\n"
    recs = parse_bytes("notme_md", md.encode(), name="h.md", me=["Alex"])
    assert [(r["role"], r["speaker"], r["text"]) for r in recs] == [
        ("me", "Alex", "first line\n\nsecond para"), ("other", "Kim", "hi"), ("ai", "ai", "x")]
    assert recs[2]["timestamp"] == "2024-01-02T01:04:05Z" and recs[0]["conversation_id"] != recs[2]["conversation_id"]
    with pytest.raises(InputError, match=r"h.md:2: text before the first"):
        parse_bytes("notme_md", b"## T\nloose text\n", name="h.md")


def test_notme_jsonl_roundtrip(tmp_path):
    recs = _ingest("handwritten.md")
    p = tmp_path / "m.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in recs))
    again = list(ingest_paths([p], me=ME))
    assert again == recs


def test_claude_code_system_reminder_stripped():
    line = {"type": "user", "uuid": "u", "sessionId": "s", "timestamp": "2025-06-14T12:00:00Z", "message": {
        "role": "user", "content": [{"type": "text", "text":
            "Please review.\n<system-reminder>\ncwd changed.\n</system-reminder>\n# Notes\ntail"}]}}
    only = {**line, "uuid": "u2", "message": {"role": "user", "content": "<system-reminder>x</system-reminder>"}}
    recs = parse_bytes("claude_code", (json.dumps(line) + "\n" + json.dumps(only) + "\n").encode())
    assert [r["text"] for r in recs] == ["Please review.\n# Notes\ntail"]


def test_chatgpt_null_mapping_skipped_and_bad_record_named():
    data = json.dumps([{"id": "a", "mapping": None, "current_node": None}, {"id": "b", "title": "no mapping"}]).encode()
    with pytest.raises(InputError, match=r"x.json: record 1 \(conversation b\): not a ChatGPT conversation"):
        parse_bytes("chatgpt", data, name="x.json")
    assert parse_bytes("chatgpt", data, name="x.json", skip_bad=True) == []  # the bad one skipped, not the file
    assert parse_bytes("chatgpt", json.dumps([{"id": "a", "mapping": None}]).encode()) == []


def test_samples_are_reproducible_from_content(tmp_path):
    build(tmp_path)
    for p in sample_paths() + [SAMPLES_DIR / "identity.yaml"]:
        assert (tmp_path / p.name).read_bytes() == p.read_bytes(), p.name


@pytest.fixture(autouse=True)
def _no_user_identity(monkeypatch, tmp_path):
    """Hermetic: never read the developer's ~/.config/notme/identity.yaml."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg-config"))
