"""Core pieces: streaming JSON array splitter, identity matching, stats, record ids."""

import io
import json
import random

import pytest

from notme_mlx.errors import ConfigError, InputError
from notme_mlx.ingest import compute_stats, load_identity
from notme_mlx.ingest.jsonstream import iter_json_array
from notme_mlx.ingest.record import iso_utc, stable_id


def _items(n, seed=0):
    rng = random.Random(seed)
    return [{"i": i, "s": "é\"x\\" * rng.randint(0, 50), "nested": [{"a": [1, 2, {"b": "]},["}]}] * rng.randint(0, 3)}
            for i in range(n)]


@pytest.mark.parametrize("chunk", [1, 7, 64, 1 << 20])
def test_json_array_stream_matches_json_load(chunk):
    items = _items(40)
    data = ("\ufeff" + json.dumps(items, indent=1, ensure_ascii=False)).encode("utf-8")
    read = []
    got = list(iter_json_array(io.BytesIO(data), "x.json", chunk_size=chunk, on_bytes=read.append))
    assert [o for _, o in got] == items and [i for i, _ in got] == list(range(40))
    assert sum(read) == len(data)
    assert list(iter_json_array(io.BytesIO(b" [ ] "), "e.json")) == []


@pytest.mark.parametrize("chunk", [1, 5, 1 << 20])
def test_json_array_stream_yields_every_value_null_included(chunk):
    # Every valid element is handed to the reader to judge, whatever its type: `null` too (it used to
    # be taken for a decode failure and dropped without a word).
    items = [{"a": 1}, None, 3, "s", [None], {"b": None}, None]
    got = list(iter_json_array(io.BytesIO(json.dumps(items).encode()), "x.json", chunk_size=chunk))
    assert got == list(enumerate(items))


def test_json_array_stream_literals_and_numbers_split_by_a_read():
    # A read may end inside `null`/`false`/`true`/`-Infinity` or a number: the element is read on, not
    # judged invalid (or a number cut short). The real ChatGPT sample is full of nulls; every read size
    # puts its boundaries elsewhere.
    from notme_mlx.samples import SAMPLES_DIR
    text = (SAMPLES_DIR / "chatgpt_conversations.json").read_text(encoding="utf-8")
    tail = [12345, -123.5e3, 1.5e-7, None, True, False, {"x": float("-inf"), "y": [None, 10]}]
    data = (text.rstrip().removesuffix("]") + ", " + json.dumps(tail)[1:]).encode()
    want = json.loads(data)
    for chunk in list(range(1, 40)) + [97, 256, 1000]:
        got = list(iter_json_array(io.BytesIO(data), "c.json", chunk_size=chunk))
        assert got == list(enumerate(want)), chunk


@pytest.mark.parametrize("data,msg", [
    (b"", "e.json: empty file"),
    (b'{"a": 1}', "e.json:1: expected a JSON array"),
    (b'[{"a": 1},\n {"a": 2}\n {"a": 3}]', "e.json:3: record 2: invalid JSON (expected ',' or ']', found '{'"),
    (b'[{"a": 1},\n{"a": "unterminated', "e.json:2: record 1: truncated JSON"),
    (b'[{"a": 1}] trailing', "e.json:1: unexpected data after the top-level array"),
])
def test_json_array_stream_errors(data, msg):
    with pytest.raises(InputError) as e:
        list(iter_json_array(io.BytesIO(data), "e.json", chunk_size=4))
    assert str(e.value).startswith(msg), str(e.value)


def test_identity_matching(tmp_path):
    f = tmp_path / "identity.yaml"
    f.write_text('names: ["Alex Rivera"]\nhandles: ["@alexr"]\nphones: ["+1 (555) 010-0199"]\nemails: [a@x.org]\n')
    ident = load_identity(f, me=["Al"])
    assert ident.display == "Al"
    for s in ["alex  rivera", "\u200eAlex Rivera", "Al", "alexr", "@ALEXR", "+15550100199", "555 010 0199", "A@X.org"]:
        assert ident.is_me(s), s
    for s in ["Alex", "Rivera", "+15550100198", "b@x.org", ""]:
        assert not ident.is_me(s), s
    f.write_text("nams: [x]\n")
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['nams'\]"):
        load_identity(f)
    with pytest.raises(ConfigError, match="identity file not found"):
        load_identity(tmp_path / "nope.yaml")


def test_stats_counts(tmp_path):
    recs = [
        {"source": "s", "conversation_id": "c1", "speaker": "A", "role": "me", "text": "one two", "timestamp": "2024-01-02T00:00:00Z"},
        {"source": "s", "conversation_id": "c1", "speaker": "B", "role": "other", "text": "x", "timestamp": "2024-01-01T00:00:00Z"},
        {"source": "s", "conversation_id": "c2", "speaker": "A", "role": "me", "text": "a b c", "timestamp": None},
        {"source": "t", "conversation_id": "c3", "speaker": "B", "role": "other", "text": "", "timestamp": "2023-05-05T00:00:00Z"},
    ]
    p = tmp_path / "m.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in recs))
    st = compute_stats(p)
    a = st.by_source["s"][("A", "me")]
    assert (a.messages, a.words, a.first, a.last) == (2, 5, "2024-01-02T00:00:00Z", "2024-01-02T00:00:00Z")
    assert st.me_share("s") == pytest.approx(2 / 3) and st.me_share("t") == 0.0
    assert st.conversations == {"s": 2, "t": 1} and st.total == 4


def test_iso_and_ids():
    assert iso_utc(0) == "1970-01-01T00:00:00Z" and iso_utc(1.25) == "1970-01-01T00:00:01.250Z"
    assert stable_id("a", 1) == stable_id("a", 1) != stable_id("a1")


def test_json_array_stream_reads_ahead_boundedly():
    # Bounded memory: after yielding element i, the reader has consumed at most a few chunks
    # plus one element beyond element i's end (not the rest of the file).
    items = [{"i": i, "pad": "x" * 900} for i in range(300)]
    data = json.dumps(items).encode()
    ends = [len(json.dumps(items[: i + 1])) - 1 for i in range(len(items))]  # byte offset after element i
    stream = io.BytesIO(data)
    for i, _ in iter_json_array(stream, "big.json", chunk_size=256):
        assert stream.tell() - ends[i] <= 4 * 1024, (i, stream.tell() - ends[i])
