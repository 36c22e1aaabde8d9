"""Delete flagged spans from a text and repair what is left into clean sentences.

Rules at each cut (applied right to left, so earlier offsets stay valid):
  * spaces/tabs on both sides of the cut collapse to one space (line breaks are kept);
  * if the cut removed the end of a sentence (., !, ?) and the left part now ends in a
    word or a clause mark (, ; : —), that mark becomes a full stop;
  * a leading , ; : left dangling on the right is dropped;
  * the right part is capitalized when it now opens a sentence or a line.
Used for `pairs.jsonl` (chosen = original minus penalized spans) and `notme data revise`.
"""

from __future__ import annotations

import re
import unicodedata

_END = ".!?\u2026"
_CLAUSE = ",;:\u2014\u2013-"


def _trailer(ch: str) -> bool:
    return ch in "\ufe0f\u200d" or unicodedata.category(ch) in ("So", "Sk") or 0x1F000 <= ord(ch) <= 0x1FFFF


def _intervals(spans, n: int) -> list[tuple[int, int]]:
    iv = []
    for s in spans:
        if hasattr(s, "start"):
            a, b = s.start, s.end
        else:
            a, b = int(s[0]), int(s[1])
        a, b = max(0, a), min(n, b)
        if b > a:
            iv.append((a, b))
    iv.sort()
    merged: list[list[int]] = []
    for a, b in iv:
        if merged and a <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], b)
        else:
            merged.append([a, b])
    return [(a, b) for a, b in merged]


def _ends_sentence(removed: str) -> bool:
    r = removed.rstrip()
    while r and (_trailer(r[-1]) or r[-1] in "\"')]"):
        r = r[:-1].rstrip()
    return bool(r) and r[-1] in _END


def _cut(s: str, a: int, b: int) -> str:
    left, removed, right = s[:a], s[a:b], s[b:]
    left = left.rstrip(" \t")
    right = right.lstrip(" \t")
    if _ends_sentence(removed):
        if left and not left.endswith("\n"):
            core = left.rstrip(_CLAUSE + " \t")
            left = core + "." if core and core[-1] not in _END and not _trailer(core[-1]) else core
    if right[:1] in (",", ";", ":") and (not left or left.endswith("\n") or left.rstrip()[-1:] in _END):
        right = right[1:].lstrip(" \t")
    if right[:1] in ("\u2014", "\u2013", "-") and (not left or left.endswith("\n") or left.rstrip()[-1:] in _END):
        right = right[1:].lstrip(" \t")
    opens = not left or left.endswith("\n") or left.rstrip()[-1:] in _END or _trailer(left.rstrip()[-1:] or "a")
    if opens and re.match(r"(?:and|but|so) \w", right, re.I) and _ends_sentence(removed) is False and not left:
        right = right.split(" ", 1)[1]
    if opens and right[:1].islower():
        right = right[0].upper() + right[1:]
    if left.endswith("\n") and right.startswith("\n"):  # a removed line: keep the larger break
        nl = max(len(left) - len(left.rstrip("\n")), len(right) - len(right.lstrip("\n")))
        return left.rstrip("\n") + "\n" * nl + right.lstrip("\n")
    if left and right and not left.endswith("\n") and not right.startswith("\n") and right[0] not in ",.;:!?)":
        return left + " " + right
    return left + right


def remove_spans(text: str, spans) -> str:
    """Remove `spans` from `text` and repair punctuation, spacing and capitalization.

    Args:
      text: the original text.
      spans: iterable of `Span`, (start, end) or [start, end, label] char offsets into `text`.
    Returns:
      the repaired text (stripped; empty when everything was removed).
    """
    s = text
    for a, b in reversed(_intervals(spans, len(text))):
        s = _cut(s, a, b)
    s = "\n".join(line.rstrip() for line in s.split("\n"))
    s = re.sub(r"\n{3,}", "\n\n", s)
    return s.strip()
