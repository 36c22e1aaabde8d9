"""Validation-seeking detector (issue #5).

    from notme_mlx.detect import detect
    d = detect("Great question! Does that make sense?")
    d.flagged, d.score, d.spans   # spans: Span(start, end, category, cue), char offsets

`Detector.from_config(extra_yaml=..., extra_cues=...)` builds one with user cues;
`remove_spans(text, spans)` deletes flagged spans and repairs the sentence.
"""

from __future__ import annotations

from functools import lru_cache

from .detector import CATEGORIES, Detection, Detector, Span, merge_lexicons
from .repair import remove_spans

__all__ = ["CATEGORIES", "Detection", "Detector", "Span", "default_detector", "detect", "merge_lexicons",
           "remove_spans"]


@lru_cache(maxsize=1)
def default_detector() -> Detector:
    """The detector built from the bundled lexicon (cached)."""
    return Detector.from_config()


def detect(text: str) -> Detection:
    """Detect validation-seeking in `text` with the bundled lexicon. See `Detector.detect`."""
    return default_detector().detect(text)
