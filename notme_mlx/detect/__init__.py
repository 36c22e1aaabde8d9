"""Validation-seeking detector: a YAML lexicon engine and a learned sentence classifier.

    from notme_mlx.detect import detect, get_detector
    d = detect("Great question! Does that make sense?")        # the lexicon engine
    d.flagged, d.score, d.spans   # spans: Span(start, end, category, cue), char offsets
    det = get_detector("both")    # lexicon + learned stage (the CLI default); "learned"; "lexicon"
    det.detect("want me to book it for u")

`Detector.from_config(extra_yaml=..., extra_cues=...)` builds a lexicon engine with user cues;
`remove_spans(text, spans)` deletes flagged spans and repairs the sentence.
"""

from __future__ import annotations

from functools import lru_cache

from ..errors import ConfigError
from .detector import CATEGORIES, Detection, Detector, Span, merge_lexicons
from .learned import CombinedDetector, LearnedDetector
from .repair import remove_spans

ENGINES = ("lexicon", "learned", "both")
DEFAULT_ENGINE = "both"

__all__ = ["CATEGORIES", "DEFAULT_ENGINE", "ENGINES", "CombinedDetector", "Detection", "Detector",
           "LearnedDetector", "Span", "default_detector", "detect", "detector_from", "get_detector", "merge_lexicons",
           "remove_spans"]


@lru_cache(maxsize=1)
def default_detector() -> Detector:
    """The detector built from the bundled lexicon (cached)."""
    return Detector.from_config()


@lru_cache(maxsize=4)
def _shipped_learned(weights) -> LearnedDetector:
    return LearnedDetector.load(weights)


def get_detector(engine: str = DEFAULT_ENGINE, extra_yaml=None, extra_cues=None, weights=None):
    """A detector for `engine`: "lexicon" (the YAML cues), "learned" (the sentence classifier)
    or "both" (lexicon spans plus learned spans where the lexicon has none).

    Args:
      extra_yaml, extra_cues: user lexicon additions (see `Detector.from_config`); the learned
        stage uses its own weights and the bundled lexicon's refusal patterns.
      weights: a folder with learned.json + learned.safetensors (`notme detect train -o DIR`);
        None = the weights shipped in the package.
    Every returned object has `.detect(text) -> Detection`; the learned ones also `.detect_batch`.
    """
    if engine not in ENGINES:
        raise ConfigError(f"detector engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    lex = None
    if engine != "learned":
        lex = (Detector.from_config(extra_yaml=extra_yaml, extra_cues=extra_cues)
               if extra_yaml or extra_cues else default_detector())
        if engine == "lexicon":
            return lex
    lrn = _shipped_learned(str(weights) if weights is not None else None)
    return lrn if engine == "learned" else CombinedDetector(lex, lrn)


def detector_from(section, engine: str | None = None):
    """The detector a recipe's `detect:` section describes (`notme_mlx.recipe.DetectConfig`:
    engine, extra_cues, extra_yaml); `engine` overrides its engine."""
    return get_detector(engine or section.engine, extra_yaml=section.extra_yaml,
                        extra_cues=[c.to_lexicon() for c in section.extra_cues])


def detect(text: str) -> Detection:
    """Detect validation-seeking in `text` with the bundled lexicon. See `Detector.detect`."""
    return default_detector().detect(text)
