"""Minimal reader for the NSString inside an iMessage `attributedBody` blob.

`attributedBody` is an NSAttributedString archived with Apple's legacy
*typedstream* format (NSArchiver), header `\\x04\\x0bstreamtyped`. The plain text
is the first NSString (or NSMutableString) object: after the class name comes
the class version, then the type string `+` (a C string of bytes) and then the
byte length as a typedstream integer, then the UTF-8 bytes.

typedstream integers: one signed byte in -110..127 is the value itself;
tag 0x81 (-127) is followed by an int16, 0x82 (-126) by an int32, both
little-endian. Open readers (e.g. imessage_reader's fetch_data.py and LangChain's
IMessageChatLoader) split on b"NSString", skip the 5 preamble bytes
`\x01\x94\x84\x01+` and read the length the same way; we locate the `+` type
marker instead of assuming a fixed offset, and read nothing else from the archive.
"""

from __future__ import annotations

import struct

MAGIC = b"\x04\x0bstreamtyped"


def _read_int(b: bytes, i: int) -> tuple[int, int]:
    tag = b[i]
    if tag == 0x81:
        return struct.unpack_from("<h", b, i + 1)[0], i + 3
    if tag == 0x82:
        return struct.unpack_from("<i", b, i + 1)[0], i + 5
    return (tag - 256 if tag > 127 else tag), i + 1


def decode_attributed_body(blob: bytes | None) -> str | None:
    """Text of an attributedBody blob, or None when it holds no readable string."""
    if not blob:
        return None
    blob = bytes(blob)
    for cls in (b"NSString", b"NSMutableString"):
        k = blob.find(cls)
        if k < 0:
            continue
        # After the class name: version int, then 0x84/0x85-style markers, then '+' (type).
        plus = blob.find(b"+", k + len(cls), k + len(cls) + 12)
        if plus < 0:
            continue
        try:
            n, start = _read_int(blob, plus + 1)
        except (IndexError, struct.error):
            return None
        if n < 0 or start + n > len(blob):
            return None
        return blob[start : start + n].decode("utf-8", errors="replace")
    return None


def encode_attributed_body(text: str) -> bytes:
    """Build a minimal typedstream NSAttributedString blob (used by tests and samples).

    Byte layout follows real chat.db blobs: header, NSAttributedString < NSObject class
    chain, NSString object with `+` type and a typedstream length, then an attribute tail.
    """
    data = text.encode("utf-8")
    n = len(data)
    if n < 0x80:
        length = bytes([n])
    elif n < 0x8000:
        length = b"\x81" + struct.pack("<h", n)
    else:
        length = b"\x82" + struct.pack("<i", n)
    head = (MAGIC + b"\x81\xe8\x03\x84\x01@\x84\x84\x84\x12NSAttributedString\x00\x84\x84\x08NSObject\x00"
            b"\x85\x92\x84\x84\x84\x08NSString\x01\x94\x84\x01+")
    tail = (b"\x86\x84\x02iI\x01" + bytes([min(len(text), 127)]) + b"\x92\x84\x84\x84\x0cNSDictionary\x00"
            b"\x94\x84\x01i\x01\x92\x84\x96\x96\x1d__kIMMessagePartAttributeName\x86\x92\x84\x84\x84"
            b"\x08NSNumber\x00\x84\x84\x07NSValue\x00\x94\x84\x01*\x84\x99\x99\x00\x86\x86\x86")
    return head + length + data + tail
