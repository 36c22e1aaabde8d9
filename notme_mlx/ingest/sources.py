"""Input discovery: files, walked directories and `.zip` archives read in place.

A `Source` is one readable input (a plain file or a zip member). Nothing is
extracted to disk and nothing is ever opened for writing.
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Callable, Iterator

from ..errors import InputError

HEAD_BYTES = 64 * 1024
_SKIP_NAMES = {".DS_Store", "Thumbs.db", "desktop.ini"}


@dataclass
class Source:
    """One input stream. `name` is what errors show: `path` or `archive.zip!member`."""

    name: str
    size: int
    opener: Callable[[], io.BufferedIOBase]
    path: Path | None = None  # a real file on disk (None for zip members)
    explicit: bool = False  # named on the command line (not found by walking)
    error: str | None = None  # set when the input could not even be opened (bad zip)
    _head: bytes | None = field(default=None, repr=False)

    def open(self):
        """A fresh binary stream positioned at the start."""
        return self.opener()

    def head(self, n: int = HEAD_BYTES) -> bytes:
        """First `n` bytes (cached), for content sniffing."""
        if self._head is None:
            with self.open() as f:
                self._head = f.read(HEAD_BYTES)
        return self._head[:n]

    def read_bytes(self) -> bytes:
        with self.open() as f:
            return f.read()

    def read_json(self, advance: Callable[[int], None] | None = None):
        """The whole input parsed as one JSON document (a BOM dropped).

        Non-UTF-8 bytes raise InputError naming the input; invalid JSON raises
        json.JSONDecodeError, which the reader turns into a bad record or an error.
        """
        raw = self.read_bytes()
        if advance is not None:
            advance(len(raw))
        try:
            return json.loads(raw.decode("utf-8-sig"))
        except UnicodeDecodeError as e:
            raise InputError(f"{self.name}: not UTF-8 text ({e.reason})") from None

    def text_lines(self, advance: Callable[[int], None] | None = None,
                   undecodable: bool = False) -> Iterator[tuple[int, str | None]]:
        """(line number, line without its newline and trailing CRs), UTF-8 (a BOM on line 1 dropped), streamed.

        `advance(n_bytes)` is called per line (progress). A line that is not UTF-8 raises
        InputError naming `name:line`, or with `undecodable` is yielded as None (the reader
        decides what it costs).
        """
        with self.open() as f:
            for lineno, raw in enumerate(f, 1):
                if advance is not None:
                    advance(len(raw))
                try:
                    yield lineno, raw.decode("utf-8-sig" if lineno == 1 else "utf-8").rstrip("\r\n")
                except UnicodeDecodeError as e:
                    if undecodable:
                        yield lineno, None
                        continue
                    raise InputError(f"{self.name}:{lineno}: not UTF-8 text ({e.reason})") from None


def file_source(path: Path, explicit: bool = False) -> Source:
    return Source(str(path), path.stat().st_size, lambda: open(path, "rb"), path=path, explicit=explicit)


def check_member_name(zip_name: str, member: str) -> None:
    """Refuse absolute paths, drive letters and `..` components in a zip member name."""
    norm = member.replace("\\", "/")
    parts = PurePosixPath(norm).parts
    if norm.startswith("/") or (len(norm) > 1 and norm[1] == ":") or ".." in parts:
        raise InputError(
            f"{zip_name}: member {member!r} is an absolute or '..' path; refusing to read this "
            f"archive (re-create it from the original export)"
        )


def zip_sources(path: Path, explicit: bool = False) -> list[Source]:
    """One Source per regular member of a zip archive (read in place, never extracted)."""
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as e:
        raise InputError(f"{path}: not a readable zip archive ({e})") from None
    with zf:
        infos = zf.infolist()
        for info in infos:
            check_member_name(str(path), info.filename)
    out = []
    for info in sorted(infos, key=lambda i: i.filename):
        if info.is_dir() or PurePosixPath(info.filename).name in _SKIP_NAMES or "__MACOSX" in info.filename:
            continue

        def opener(member=info.filename):
            z = zipfile.ZipFile(path)
            return _ZipMember(z, z.open(member))

        # Members are discovered, not named: unknown ones (chat.html, images) are ignored like walked files.
        out.append(Source(f"{path}!{info.filename}", info.file_size, opener, explicit=False))
    return out


class _ZipMember(io.RawIOBase):
    """A zip member stream that closes its ZipFile too."""

    def __init__(self, z: zipfile.ZipFile, f):
        self._z, self._f = z, f

    def readable(self):
        return True

    def read(self, n=-1):
        return self._f.read(n)

    def readinto(self, b):
        data = self._f.read(len(b))
        b[: len(data)] = data
        return len(data)

    def close(self):
        try:
            self._f.close()
            self._z.close()
        finally:
            super().close()


def iter_sources(paths) -> Iterator[Source]:
    """Expand PATHs: files as they are, directories walked (sorted), zips opened in place."""
    for p in paths:
        p = Path(p)
        if not p.exists():
            raise InputError(f"{p}: no such file or directory")
        if p.is_dir():
            for root, dirs, files in os.walk(p):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                for fn in sorted(files):
                    if fn.startswith(".") or fn in _SKIP_NAMES:
                        continue
                    yield from _one(Path(root) / fn, explicit=False)
        else:
            yield from _one(p, explicit=True)


def _one(path: Path, explicit: bool) -> Iterator[Source]:
    if path.suffix.lower() == ".zip":
        try:
            members = zip_sources(path, explicit=explicit)
        except InputError as e:
            yield Source(str(path), 0, lambda: open(path, "rb"), path=path, explicit=explicit, error=str(e))
            return
        yield from members
    else:
        yield file_source(path, explicit=explicit)
