"""iMessage chat.db: built here with sqlite3 (subset of the real schema)."""

import hashlib
import os
import sqlite3
import zipfile
from datetime import datetime, timedelta, timezone

import pytest

from notme_mlx.errors import InputError
from notme_mlx.ingest import ingest_paths
from notme_mlx.ingest.formats.imessage import apple_time
from notme_mlx.ingest.formats.typedstream import decode_attributed_body, encode_attributed_body

SCHEMA = """
CREATE TABLE handle (ROWID INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL, service TEXT);
CREATE TABLE chat (ROWID INTEGER PRIMARY KEY AUTOINCREMENT, guid TEXT, chat_identifier TEXT, display_name TEXT);
CREATE TABLE message (ROWID INTEGER PRIMARY KEY AUTOINCREMENT, guid TEXT, text TEXT, attributedBody BLOB,
  handle_id INTEGER, date INTEGER, is_from_me INTEGER, associated_message_type INTEGER DEFAULT 0,
  cache_has_attachments INTEGER DEFAULT 0, item_type INTEGER DEFAULT 0);
CREATE TABLE chat_message_join (chat_id INTEGER, message_id INTEGER);
"""
LONG = "Long message with ünïcödé and an emoji 🌧️. " * 5  # > 127 bytes -> 0x81 int16 length


def _db(path, rows, seconds=False):
    con = sqlite3.connect(path)
    con.executescript(SCHEMA)
    con.execute("INSERT INTO handle (id) VALUES ('+15550100001')")
    con.execute("INSERT INTO chat (guid, chat_identifier) VALUES ('iMessage;-;+15550100001', '+15550100001')")
    for i, (text, body, from_me, secs, assoc, att, item) in enumerate(rows):
        date = secs if seconds else secs * 10**9
        con.execute("INSERT INTO message (guid, text, attributedBody, handle_id, date, is_from_me, "
                    "associated_message_type, cache_has_attachments, item_type) VALUES (?,?,?,?,?,?,?,?,?)",
                    (f"G{i}", text, body, 1, date, from_me, assoc, att, item))
        con.execute("INSERT INTO chat_message_join VALUES (1, ?)", (i + 1,))
    con.commit()
    con.close()
    return path


ROWS = [
    # text, attributedBody, is_from_me, seconds since 2001, associated_message_type, attachments, item_type
    ("Are you up?", None, 0, 700000000, 0, 0, 0),
    (None, encode_attributed_body("Yes, just made coffee"), 1, 700000060, 0, 0, 0),
    ("Loved “Yes, just made coffee”", None, 0, 700000061, 2000, 0, 0),  # tapback: dropped
    ("Removed a like from “Are you up?”", None, 1, 700000062, 3001, 0, 0),  # removed tapback: dropped
    ("\ufffc", None, 0, 700000120, 0, 1, 0),  # photo only
    (None, encode_attributed_body(LONG), 1, 700000180, 0, 0, 0),
    ("Line one\nLine two", None, 0, 700000240, 0, 0, 0),
]


def test_chat_db_parse(tmp_path):
    db = _db(tmp_path / "chat.db", ROWS)
    before = (db.stat().st_mtime_ns, hashlib.sha256(db.read_bytes()).hexdigest())
    recs = list(ingest_paths([db], me=["Alex Rivera"]))
    assert [(r["role"], r["speaker"], r["kind"], r["text"]) for r in recs] == [
        ("other", "+15550100001", "text", "Are you up?"),
        ("me", "Alex Rivera", "text", "Yes, just made coffee"),
        ("other", "+15550100001", "media", "<media:attachment>"),
        ("me", "Alex Rivera", "text", LONG),
        ("other", "+15550100001", "text", "Line one\nLine two"),
    ]
    # independent: 2001-01-01 UTC + 700000000 s
    want = (datetime(2001, 1, 1, tzinfo=timezone.utc) + timedelta(seconds=700000000)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert want == "2023-03-08T20:26:40Z" and recs[0]["timestamp"] == want
    assert recs[0]["conversation_id"] == "iMessage;-;+15550100001" and recs[0]["message_id"] == "G0"
    assert recs[1]["parent_id"] == "G0"
    after = (db.stat().st_mtime_ns, hashlib.sha256(db.read_bytes()).hexdigest())
    assert after == before
    assert sorted(os.listdir(tmp_path)) == ["chat.db"]  # no -wal/-journal created (read-only open)


def test_old_db_seconds_dates(tmp_path):
    recs = list(ingest_paths([_db(tmp_path / "chat.db", ROWS[:1], seconds=True)], me=["A"]))
    assert recs[0]["timestamp"] == "2023-03-08T20:26:40Z"
    assert apple_time(0) is None


# An NSArchiver (typedstream) attributedBody of "Hello, world" as macOS writes it, as published in
# open-source iMessage readers' test data: header, class chain, NSString with '+' type and length
# 0x0c, the UTF-8 bytes, then the attribute run (NSDictionary ...).
REAL_HELLO = bytes.fromhex(
    "040b73747265616d747970656481e803840140848484124e5341747472696275746564537472696e67008484"
    "084e534f626a656374008592848484084e53537472696e67019484012b0c48656c6c6f2c20776f726c6486"
    "84026949010c928484840c4e5344696374696f6e6172790094840169008686")


def test_typedstream_real_blob_and_fixture_layout():
    assert decode_attributed_body(REAL_HELLO) == "Hello, world"
    # the blobs our fixtures synthesize share the real layout up to the attribute dictionary
    mine = encode_attributed_body("Hello, world")
    assert mine[:115] == REAL_HELLO[:115]


def test_typedstream_roundtrip_and_garbage():
    for s in ["", "hi", "x" * 127, "y" * 128, LONG, "z" * 40000]:
        assert decode_attributed_body(encode_attributed_body(s)) == s
    assert decode_attributed_body(b"\x04\x0bstreamtyped garbage") is None
    assert decode_attributed_body(None) is None


def test_unreadable_chat_db(tmp_path):
    bad = tmp_path / "chat.db"
    bad.write_bytes(b"SQLite format 3\x00" + os.urandom(2000))
    with pytest.raises(InputError, match=r"chat.db: cannot read as an iMessage chat.db"):
        list(ingest_paths([bad], me=["A"]))
    other = tmp_path / "other.db"
    con = sqlite3.connect(other)
    con.execute("CREATE TABLE t (x)")
    con.commit()
    con.close()
    with pytest.raises(InputError, match=r"other.db: cannot read as an iMessage chat.db \(no such table: message\)"):
        list(ingest_paths([other], me=["A"]))


def test_chat_db_inside_zip_read_in_memory(tmp_path):
    db = _db(tmp_path / "chat.db", ROWS)
    z = tmp_path / "backup.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.write(db, "Messages/chat.db")
    recs = list(ingest_paths([z], me=["A"]))
    assert len(recs) == 5 and recs[1]["text"] == "Yes, just made coffee"


@pytest.fixture(autouse=True)
def _no_user_identity(monkeypatch, tmp_path):
    """Hermetic: never read the developer's ~/.config/notme/identity.yaml."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg-config"))


def test_chat_db_row_of_the_wrong_type_is_one_bad_record(tmp_path):
    # SQLite stores whatever it is given: a blob in `text` (ROWID 3) cannot be read as a message
    rows = [ROWS[0], ROWS[1], (b"\xff\xfe", None, 0, 700000100, 0, 0, 0), ROWS[6]]
    db = _db(tmp_path / "chat.db", rows)
    with pytest.raises(InputError, match=r"chat.db: message ROWID 3: unreadable row \(TypeError"):
        list(ingest_paths([db], me=["A"]))
    recs = list(ingest_paths([db], me=["A"], skip_bad=True))
    assert [r["message_id"] for r in recs] == ["G0", "G1", "G3"]
    assert recs[2]["parent_id"] == "G1"
