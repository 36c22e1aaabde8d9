"""Real sample exports written by others (LangChain, whatsapp-chat-parser, claude-code-log: MIT;
plaso: Apache-2.0). Sources and licenses: tests/ingest_fixtures/third_party/*/SOURCE.md."""

import gzip
import hashlib
from pathlib import Path

import pytest

from notme_mlx.errors import InputError
from notme_mlx.ingest import ingest_paths

LC = Path(__file__).parent / "ingest_fixtures" / "third_party" / "langchain"


def test_langchain_whatsapp_ios_12h():
    recs = list(ingest_paths([LC / "whatsapp_chat.txt"], me=["Jungle Jane"]))
    assert len(recs) == 12
    assert recs[0]["kind"] == "system" and recs[0]["role"] == "system"
    assert [r["kind"] for r in recs].count("media") == 3
    assert recs[1]["speaker"] == "Dr. Feather" and recs[1]["text"].startswith("I spotted a rare Hyacinth Macaw")
    assert recs[-1]["role"] == "me" and recs[-1]["text"] == "Looking forward to it! Keep up the great work."
    # "[8/15/23, 9:25:16 PM]" month-first 12h -> 21:25:16 (zone-less, taken as UTC)
    assert recs[-1]["timestamp"] == "2023-08-15T21:25:16Z"


def test_langchain_telegram_single_chat():
    recs = list(ingest_paths([LC / "telegram_chat_json" / "result.json"], me=["Jimmeny Marvelton"]))
    assert [(r["role"], r["text"]) for r in recs] == [
        ("me", "i refuse to converse with you"), ("other", "Hi nemesis"),
        ("me", "we meet again"), ("me", "you will not trick me this time")]
    assert recs[0]["timestamp"] == "2023-08-23T20:11:23Z"  # date_unixtime 1692821483


def test_langchain_chatgpt_shape_without_current_node():
    recs = list(ingest_paths([LC / "fake_conversations.json"]))
    assert [(r["speaker"], r["role"]) for r in recs] == [
        ("Hal 9000", "ai"), ("me", "me"), ("Ava", "ai"), ("me", "me")]
    assert recs[0]["timestamp"] == "2065-01-24T05:20:50Z"  # create_time 3000000050.0


def test_plaso_real_chat_db_old_schema(tmp_path):
    db = tmp_path / "chat.db"
    db.write_bytes(gzip.decompress((Path(__file__).parent / "ingest_fixtures/third_party/plaso/imessage_chat.db.gz").read_bytes()))
    assert hashlib.sha256(db.read_bytes()).hexdigest() == "2931db3b556e33728867726f5bfd56464c4c2955cbe2e795660bda2ad631127d"
    recs = list(ingest_paths([db], me=["Kenneth"]))
    assert len(recs) == 10  # plaso's own test expects 10 message events
    assert len({r["conversation_id"] for r in recs}) == 2
    assert [r["role"] for r in recs].count("me") == 5 and all(r["speaker"] == "Kenneth" for r in recs if r["role"] == "me")
    hit = [r for r in recs if r["text"] == "Did you try to send me a message?"]
    assert len(hit) == 1 and hit[0]["timestamp"] == "2015-11-30T10:48:40Z"  # plaso: 2015-11-30T10:48:40
    assert hit[0]["speaker"] == "xxxxxx2015@icloud.com" and hit[0]["role"] == "other"
    assert recs[-1]["text"] == "Yes, did you get it?"


def test_claude_code_log_representative_session():
    f = Path(__file__).parent / "ingest_fixtures/third_party/claude_code_log/representative_messages.jsonl"
    recs = list(ingest_paths([f]))
    # 11 user/assistant lines: 4 are tool_use/tool_result only -> dropped; summary line skipped
    assert [r["message_id"] for r in recs] == ["msg_001", "msg_002", "msg_003", "msg_006", "msg_007", "msg_010", "msg_011"]
    assert [r["role"] for r in recs] == ["me", "ai", "me", "ai", "me", "ai", "me"]
    assert recs[0]["text"] == "Hello Claude! Can you help me understand how Python decorators work?"
    assert recs[0]["timestamp"] == "2025-06-14T10:00:00Z" and recs[0]["conversation_id"] == "test_session"
    assert recs[3]["parent_id"] == "msg_003"  # tool turns removed from the thread
    with_tools = list(ingest_paths([f], tools=True))
    assert sum(r["kind"] == "tool" for r in with_tools) == 4


WCP = Path(__file__).parent / "ingest_fixtures" / "third_party" / "whatsapp_chat_parser"


def test_whatsapp_chat_parser_short_chat():
    recs = list(ingest_paths([WCP / "short-chat.txt"], me=["Sample User"]))
    assert len(recs) == 5  # upstream expects 5 entries (system lines included)
    assert [(r["role"], r["kind"]) for r in recs] == [
        ("system", "system"), ("system", "system"), ("me", "text"), ("other", "text"), ("other", "text")]
    assert recs[1]["text"] == 'You created group "ShortChat"'
    assert recs[4]["speaker"] == "+410123456789" and recs[4]["text"] == "How are you?\nIs everything alright?"
    # every date is ambiguous (fields <= 12): month-first is the reading that runs forward in time
    assert [r["timestamp"] for r in recs[2:]] == ["2017-06-03T00:45:00Z", "2017-08-05T01:48:00Z", "2017-09-04T01:50:00Z"]
    with pytest.raises(InputError, match=r"not-a-whatsapp-chat.txt: unknown export format"):
        list(ingest_paths([WCP / "not-a-whatsapp-chat.txt"], me=["x"]))
    with pytest.raises(InputError, match=r"not-a-whatsapp-chat.txt:1: no WhatsApp message header"):
        list(ingest_paths([WCP / "not-a-whatsapp-chat.txt"], fmt="whatsapp", me=["x"]))


@pytest.fixture(autouse=True)
def _no_user_identity(monkeypatch, tmp_path):
    """Hermetic: never read the developer's ~/.config/notme/identity.yaml."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg-config"))
