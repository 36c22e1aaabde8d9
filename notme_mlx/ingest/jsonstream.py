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
_LONGEST_LITERAL = len("-Infinity")


def _raise(err: BadRecord) -> None:
    raise err


# What the reading steps return besides an element (an element may be any JSON value, None included).
_BAD = object()  # the element at the cursor is not valid JSON (already handed to `skip`)
_END = object()  # the file gave out (already handed to `skip` when that was an error)
_CLOSED = object()  # the array's closing ']' was read
_RETRY = object()  # a resynchronisation candidate needs more of the file to be judged
_REJECT = object()  # a resynchronisation candidate is not a whole accepted element


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
    reader = _ArrayReader(stream, name, chunk_size, on_bytes, skip, accept)
    reader.open_array()
    yield from reader.elements()


class _ArrayReader:
    """A cursor over the text of one top-level JSON array, read in chunks.

    `buf[pos:]` is the text not consumed yet; `line0` is the line number of `buf[0]`.
    """

    def __init__(self, stream, name, chunk_size, on_bytes, skip, accept):
        self.stream, self.name, self.chunk_size, self.on_bytes = stream, name, chunk_size, on_bytes
        self.skip, self.accept = skip, accept
        self.text = codecs.getincrementaldecoder("utf-8-sig")(errors="strict")
        self.decoder = json.JSONDecoder()
        self.buf, self.pos, self.eof, self.line0 = "", 0, False, 1

    # --- the text buffer

    def fill(self, want: int) -> bool:
        """Drop the consumed text and append at least `want` more bytes' worth; False at the end of the file."""
        if self.eof:
            return False
        self.line0 += self.buf.count("\n", 0, self.pos)
        # only the local holds the kept text, so `+=` can grow it in place instead of copying it
        buf, self.buf, self.pos = self.buf[self.pos:], "", 0
        data = self.stream.read(max(self.chunk_size, want))
        if self.on_bytes and data:
            self.on_bytes(len(data))
        try:
            buf += self.text.decode(data, final=not data)
        except UnicodeDecodeError as e:
            raise InputError(f"{self.name}:{self.line0}: not UTF-8 text ({e.reason}); "
                             f"is this really a JSON export?") from None
        self.buf = buf
        if not data:
            self.eof = True
        return True

    def skip_ws(self) -> bool:
        """Move the cursor past white space, reading on as needed; False when only white space is left."""
        while True:
            while self.pos < len(self.buf) and self.buf[self.pos] in _WS:
                self.pos += 1
            if self.pos < len(self.buf):
                return True
            if not self.fill(self.chunk_size):
                return False

    def at(self) -> str:
        """`name:line` of the cursor."""
        return f"{self.name}:{self.line0 + self.buf.count(chr(10), 0, self.pos)}"

    def where(self, i: int) -> str:
        return f"{self.at()}: record {i}"

    def runs_past_buffer(self, e: json.JSONDecodeError) -> bool:
        """The decode failed where the buffered text ends (the element may go on in the file)."""
        return e.pos >= len(self.buf) - 1 or e.msg.startswith("Unterminated")

    def needs_more(self, e: json.JSONDecodeError) -> bool:
        """More of the file could change the verdict: the failure is where the buffer ends, or so close to
        it that a literal (`null`, `false`, `-Infinity`) the read split in two may be what failed."""
        return not self.eof and (self.runs_past_buffer(e) or len(self.buf) - e.pos <= _LONGEST_LITERAL)

    # --- the array's structure

    def open_array(self) -> None:
        """Consume the opening '['; InputError when the file is empty or holds something else."""
        if not self.skip_ws():
            raise InputError(f"{self.name}: empty file (expected a JSON array)")
        if self.buf[self.pos] != "[":
            raise InputError(f"{self.at()}: expected a JSON array '[' at the top level, found {self.buf[self.pos]!r}")
        self.pos += 1

    def elements(self) -> Iterator[tuple[int, object]]:
        """(index, element) up to the closing ']', then a check that nothing follows it."""
        i, item = 0, self.first_item()
        while item is not _END and item is not _CLOSED:
            i, element = item
            yield i, element  # the reader judges its shape; `accept` only guides resynchronisation
            i += 1
            item = self.next_item(i)
        if item is _CLOSED and self.skip_ws():
            self.skip(BadRecord(self.at(), "unexpected data after the top-level array"))

    def first_item(self):
        """Right after '[': the first (index, element), or _CLOSED for an empty array, or _END."""
        if self.skip_ws() and self.buf[self.pos] == "]":
            self.pos += 1
            return _CLOSED
        return self.item(0)

    def next_item(self, i: int):
        """After element i-1: a ',' and element i, or _CLOSED at the ']', or _END; a bad separator resynchronises."""
        if not self.skip_ws():
            self.skip(BadRecord(self.where(i), "truncated JSON (missing ']' at the end)"))
            return _END
        c = self.buf[self.pos]
        self.pos += 1
        if c == "]":
            return _CLOSED
        if c != ",":
            self.skip(BadRecord(self.where(i), f"invalid JSON (expected ',' or ']', found {c!r})"))
            return self.resynced(i, self.pos - 1)
        return self.item(i)

    def item(self, i: int):
        """(i, element) decoded at the cursor; after a bad one, the next good element as (i + 1, element); or _END."""
        if not self.skip_ws():
            self.skip(BadRecord(self.where(i), "truncated JSON (file ends inside the array)"))
            return _END
        element = self.decode(i)
        if element is _BAD:
            return self.resynced(i + 1, self.pos + 1)
        return i, element

    def decode(self, i: int):
        """The element at the cursor (cursor moved past it), or _BAD after handing `skip` why not."""
        while True:
            try:
                element, end = self.decoder.raw_decode(self.buf, self.pos)
            except json.JSONDecodeError as e:
                if self.needs_more(e) and self.fill(2 * (len(self.buf) - self.pos)):  # grow with the element, not the file
                    continue
                kind = "truncated JSON" if self.eof and self.runs_past_buffer(e) else "invalid JSON"
                self.skip(BadRecord(self.where(i), f"{kind} ({e.msg})"))
                return _BAD
            if len(self.buf) - end <= _LONGEST_LITERAL and self.fill(2 * (len(self.buf) - self.pos)):
                continue  # a number may go on past the read (`12` or `1.5` read as `1`)
            self.pos = end
            return element

    # --- resynchronisation after a bad element or separator

    def resynced(self, i: int, start: int):
        """(i, the next element from `start` on that decodes and is accepted), or _END at the end of the file."""
        search = start
        while True:
            m = _NEXT.search(self.buf, search)
            if m is None:
                self.pos = max(search, len(self.buf) - 64)  # a ',' + spaces may straddle the read boundary
                if not self.fill(self.chunk_size):
                    self.pos = len(self.buf)
                    return _END
                search = 0
                continue
            found = self.candidate(m)
            if found is _RETRY:
                search = 0
            elif found is _REJECT:
                search = m.end()
            else:
                return i, found

    def candidate(self, m: re.Match):
        """The element opening at the `{` of the `,{` match `m` if it is whole, accepted and followed by
        ',' or ']' (cursor moved past it); else _REJECT, or _RETRY after reading more of the file."""
        at = m.end() - 1
        try:
            element, end = self.decoder.raw_decode(self.buf, at)
        except json.JSONDecodeError as e:
            if self.needs_more(e):  # the candidate runs past the buffer: read more and retry it
                self.pos = m.start()
                self.fill(2 * (len(self.buf) - self.pos))
                return _RETRY
            return _REJECT
        j = end
        while j < len(self.buf) and self.buf[j] in _WS:
            j += 1
        if j >= len(self.buf) and not self.eof:  # what follows it is not read yet
            self.pos = m.start()
            self.fill(self.chunk_size)
            return _RETRY
        if self.accept(element) and (j >= len(self.buf) or self.buf[j] in ",]"):
            self.pos = end
            return element
        return _REJECT
