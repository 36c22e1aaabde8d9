"""Safe file I/O: atomic writes (temp + rename), private modes, JSONL with line errors.

Personal data never leaves the machine and never lies around half-written:
every data file goes through `atomic_write_*` (mode 0600 by default), whole
output folders through `atomic_dir`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator

import yaml

from .errors import InputError, NotmeError

PRIVATE = 0o600


def atomic_write_bytes(path: str | Path, data: bytes, mode: int = PRIVATE) -> Path:
    """Write `data` to `path` via a temp file in the same folder and `os.replace`."""
    with atomic_open(path, mode, binary=True) as f:
        f.write(data)
    return Path(path)


def atomic_write_text(path: str | Path, text: str, mode: int = PRIVATE) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"), mode)


@contextmanager
def atomic_open(path: str | Path, mode: int = PRIVATE, binary: bool = False):
    """Stream into a temp file; rename onto `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb" if binary else "w", **({} if binary else {"encoding": "utf-8"})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_jsonl(path: str | Path, records: Iterable[dict], mode: int = PRIVATE) -> int:
    """Atomically write one JSON object per line (UTF-8, no ASCII escaping). Returns the count."""
    n = 0
    with atomic_open(path, mode) as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
            n += 1
    return n


def read_yaml(path: str | Path, what: str = "file"):
    """Parse a YAML file; a missing file or a syntax error is one InputError naming file:line."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: {what} not found")
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        raise InputError(f"{path}:{mark.line + 1 if mark else '?'}: invalid YAML ({getattr(e, 'problem', e)})") from None


def read_jsonl(path: str | Path, progress=None, numbered: bool = False, what: str = "") -> Iterator:
    """Yield objects from a JSONL file; a bad line raises InputError naming file:line.

    progress: advanced by one per line read (blank lines included, so it matches a line count).
    numbered: yield (line number, object) so callers can name the line in their own checks.
    what: names the expected record in the error, e.g. "a Message record".
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: file not found")
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            if progress is not None:
                progress.advance(1)
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise InputError(f"{path}:{i}: invalid JSON ({e.msg} at column {e.colno})") from None
            if not isinstance(obj, dict):
                raise InputError(f"{path}:{i}: expected a JSON object{f' ({what})' if what else ''}, "
                                 f"got {type(obj).__name__}")
            yield (i, obj) if numbered else obj


@contextmanager
def atomic_dir(path: str | Path, force: bool = False, mode: int = 0o700):
    """Build a folder in a temp sibling and rename it onto `path` on success.

    An existing `path` is refused unless `force` (then replaced only after the
    new one is complete). On failure nothing is left behind.
    """
    path = Path(path)
    if path.exists() and not force:
        raise NotmeError(f"{path}: already exists (use --force to replace it)")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    os.chmod(tmp, mode)
    try:
        yield tmp
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def notme_home() -> Path:
    """User cache root: $NOTME_HOME or ~/.cache/notme."""
    return Path(os.environ.get("NOTME_HOME") or Path.home() / ".cache" / "notme")
