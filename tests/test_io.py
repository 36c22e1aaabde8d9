import json
import os
import stat

import pytest

from notme_mlx.errors import InputError, NotmeError
from notme_mlx.io import atomic_dir, atomic_write_text, read_jsonl, write_jsonl


def test_write_jsonl_is_private_and_roundtrips(tmp_path):
    recs = [{"text": "héllo\nworld", "n": 1}, {"text": "🙂"}]
    p = tmp_path / "out.jsonl"
    assert write_jsonl(p, recs) == 2
    assert stat.S_IMODE(os.stat(p).st_mode) == 0o600
    assert list(read_jsonl(p)) == recs
    assert p.read_text(encoding="utf-8").splitlines()[1] == json.dumps({"text": "🙂"}, ensure_ascii=False)


def test_read_jsonl_names_file_and_line(tmp_path):
    p = tmp_path / "bad.jsonl"
    p.write_text('{"a": 1}\n{"a": \n')
    with pytest.raises(InputError, match=r"bad.jsonl:2: invalid JSON"):
        list(read_jsonl(p))


def test_atomic_write_failure_leaves_old_file(tmp_path):
    p = tmp_path / "f.txt"
    atomic_write_text(p, "old")
    with pytest.raises(AttributeError):
        atomic_write_text(p, None)  # type: ignore[arg-type]  (None has no .encode)
    assert p.read_text() == "old"
    assert [x.name for x in tmp_path.iterdir()] == ["f.txt"]


def test_atomic_dir_refuses_existing_and_cleans_on_failure(tmp_path):
    out = tmp_path / "export"
    with atomic_dir(out) as d:
        (d / "a").write_text("1")
    assert (out / "a").read_text() == "1"
    with pytest.raises(NotmeError, match="already exists"):
        with atomic_dir(out):
            pass
    with pytest.raises(RuntimeError):
        with atomic_dir(out, force=True) as d:
            (d / "b").write_text("2")
            raise RuntimeError("boom")
    assert sorted(x.name for x in tmp_path.iterdir()) == ["export"]
    assert sorted(x.name for x in out.iterdir()) == ["a"]
