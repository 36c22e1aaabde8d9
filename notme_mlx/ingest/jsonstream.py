"""Stream the elements of a top-level JSON array with bounded memory.

ChatGPT and Claude exports are one big `[{...}, {...}, ...]`. Instead of
`json.load` (whole file + whole object tree in memory) we decode one element
at a time with `json.JSONDecoder.raw_decode` over a sliding text buffer: memory
is bounded by the largest single element (one conversation), not the file.
"""

from __future__ import annotations

import codecs
import json
from typing import Callable, Iterator

from ..errors import InputError

_WS = " \t\r\n"


def iter_json_array(
    stream, name: str, chunk_size: int = 1 << 20, on_bytes: Callable[[int], None] | None = None
) -> Iterator[tuple[int, object]]:
    """Yield `(index, element)` for each element of the top-level array in a binary stream.

    Args:
        stream: binary file object.
        name: shown in errors (`name:line: record i: ...`).
        chunk_size: bytes per read; the read grows when one element is larger.
        on_bytes: called with the number of bytes read after every read (progress).
    Raises:
        InputError: not an array, invalid or truncated JSON (names line and record index).
    """
    dec = codecs.getincrementaldecoder("utf-8-sig")(errors="strict")
    decoder = json.JSONDecoder()
    buf, pos, eof, line0 = "", 0, False, 1

    def fill(want: int) -> bool:
        nonlocal buf, pos, eof, line0
        if eof:
            return False
        line0 += buf.count("\n", 0, pos)
        buf = buf[pos:]
        pos = 0
        data = stream.read(max(chunk_size, want))
        if on_bytes and data:
            on_bytes(len(data))
        try:
            buf += dec.decode(data, final=not data)
        except UnicodeDecodeError as e:
            raise InputError(f"{name}:{line0}: not UTF-8 text ({e.reason}); is this really a JSON export?") from None
        if not data:
            eof = True
        return True

    def skip_ws() -> bool:
        nonlocal pos
        while True:
            while pos < len(buf) and buf[pos] in _WS:
                pos += 1
            if pos < len(buf):
                return True
            if not fill(chunk_size):
                return False

    def where() -> str:
        return f"{name}:{line0 + buf.count(chr(10), 0, pos)}"

    if not skip_ws():
        raise InputError(f"{name}: empty file (expected a JSON array)")
    if buf[pos] != "[":
        raise InputError(f"{where()}: expected a JSON array '[' at the top level, found {buf[pos]!r}")
    pos += 1
    i = 0
    while True:
        if not skip_ws():
            raise InputError(f"{where()}: record {i}: truncated JSON (file ends inside the array)")
        if buf[pos] == "]" and i == 0:
            pos += 1
            break
        while True:
            try:
                obj, end = decoder.raw_decode(buf, pos)
                break
            except json.JSONDecodeError as e:
                if not fill(2 * (len(buf) - pos)):  # grow with the pending element, not the file
                    kind = "truncated JSON" if e.pos >= len(buf) - 1 or "Unterminated" in e.msg else "invalid JSON"
                    raise InputError(f"{where()}: record {i}: {kind} ({e.msg})") from None
        pos = end
        yield i, obj
        i += 1
        if not skip_ws():
            raise InputError(f"{where()}: record {i}: truncated JSON (missing ']' at the end)")
        c = buf[pos]
        pos += 1
        if c == "]":
            break
        if c != ",":
            raise InputError(f"{where()}: record {i}: invalid JSON (expected ',' or ']', found {c!r})")
    if skip_ws():
        raise InputError(f"{where()}: unexpected data after the top-level array")
