"""Stream the elements of a top-level JSON array with bounded memory, resynchronising after a bad one.

ChatGPT and Claude exports are one big `[{...}, {...}, ...]`. Instead of
`json.load` (whole file + whole object tree in memory) we decode one element
at a time with `json.JSONDecoder.raw_decode` over a sliding text buffer: memory
is bounded by the largest single element (one conversation), not the file.

A malformed element is handed to `skip` as a BadRecord (which raises unless the
run recovers); the stream then resumes at the next `,{` / `[{` where an object
decodes and `accept`s (a conversation, not one of the broken one's inner objects).
"""

from __future__ import annotations

import codecs
import json
import re
from typing import Callable, Iterator

from ..errors import InputError
from .context import BadRecord

_WS = " \t\r\n"
_NEXT = re.compile(r",\s*\{")


def _raise(err: BadRecord) -> None:
    raise err


def iter_json_array(
    stream,
    name: str,
    chunk_size: int = 1 << 20,
    on_bytes: Callable[[int], None] | None = None,
    skip: Callable[[BadRecord], None] = _raise,
    accept: Callable[[object], bool] = lambda o: isinstance(o, dict),
) -> Iterator[tuple[int, object]]:
    """Yield `(index, element)` for each element of the top-level array in a binary stream.

    Args:
        stream: binary file object.
        name: shown in errors (`name:line: record i: ...`).
        chunk_size: bytes per read; the read grows when one element is larger.
        on_bytes: called with the number of bytes read after every read (progress).
        skip: called with a BadRecord for an element that is not valid JSON (Context.skip: raise or
            record); when it returns, reading resumes at the next element that decodes and `accept`s.
            Valid elements of any shape are yielded: the reader judges them.
    Raises:
        InputError: not an array (the file's format is wrong); BadRecord from `skip`.
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

    def needs_more_at_eof(e: json.JSONDecodeError) -> bool:
        return e.pos >= len(buf) - 1 or e.msg.startswith("Unterminated")

    def where(i: int) -> str:
        return f"{name}:{line0 + buf.count(chr(10), 0, pos)}: record {i}"

    def needs_more(e: json.JSONDecodeError) -> bool:
        return not eof and (e.pos >= len(buf) - 1 or e.msg.startswith("Unterminated"))

    def resync(start: int):
        """The next element that decodes and is accepted (pos set after it), or None at the end of the file."""
        nonlocal pos
        search = start
        while True:
            m = _NEXT.search(buf, search)
            if m is None:
                pos = max(search, len(buf) - 64)  # a ',' + spaces may straddle the read boundary
                if not fill(chunk_size):
                    pos = len(buf)
                    return None
                search = 0
                continue
            at = m.end() - 1
            try:
                obj, end = decoder.raw_decode(buf, at)
            except json.JSONDecodeError as e:
                if needs_more(e):  # the candidate runs past the buffer: read more and retry it
                    pos = m.start()
                    fill(2 * (len(buf) - pos))
                    search = 0
                    continue
                search = at + 1
                continue
            j = end
            while j < len(buf) and buf[j] in _WS:
                j += 1
            if j >= len(buf) and not eof:
                pos = m.start()
                fill(chunk_size)
                search = 0
                continue
            if accept(obj) and (j >= len(buf) or buf[j] in ",]"):
                pos = end
                return obj
            search = at + 1

    if not skip_ws():
        raise InputError(f"{name}: empty file (expected a JSON array)")
    if buf[pos] != "[":
        raise InputError(f"{name}:{line0 + buf.count(chr(10), 0, pos)}: expected a JSON array '[' at the top level, "
                         f"found {buf[pos]!r}")
    pos += 1
    if skip_ws() and buf[pos] == "]":
        pos += 1
        if skip_ws():
            skip(BadRecord(where(0).rsplit(": record", 1)[0], "unexpected data after the top-level array"))
        return
    i = 0
    pending = None  # an element found by resync, already decoded
    while True:
        if pending is not None:
            obj, pending = pending, None
            yield i, obj
        else:
            if not skip_ws():
                skip(BadRecord(where(i), "truncated JSON (file ends inside the array)"))
                return
            while True:
                try:
                    obj, end = decoder.raw_decode(buf, pos)
                    break
                except json.JSONDecodeError as e:
                    if needs_more(e) and fill(2 * (len(buf) - pos)):  # grow with the pending element, not the file
                        continue
                    kind = "truncated JSON" if eof and needs_more_at_eof(e) else "invalid JSON"
                    skip(BadRecord(where(i), f"{kind} ({e.msg})"))
                    obj = None
                    break
            if obj is None:
                pending = resync(pos + 1)
                if pending is None:
                    return
                i += 1
                continue
            pos = end
            yield i, obj  # the reader judges its shape; `accept` only guides resynchronisation
        i += 1
        if not skip_ws():
            skip(BadRecord(where(i), "truncated JSON (missing ']' at the end)"))
            return
        c = buf[pos]
        pos += 1
        if c == "]":
            break
        if c != ",":
            skip(BadRecord(where(i), f"invalid JSON (expected ',' or ']', found {c!r})"))
            pending = resync(pos - 1)
            if pending is None:
                return
    if skip_ws():
        skip(BadRecord(where(i).rsplit(": record", 1)[0], "unexpected data after the top-level array"))
