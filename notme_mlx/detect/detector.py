"""Rule engine for validation-seeking: one YAML lexicon, regex cues, char-offset spans.

Pipeline per text (all offsets refer to the original string):
  1. fold curly quotes/apostrophes to ASCII (same length, so offsets stay valid);
  2. mask code (``` fences, `inline`) and quoted passages ("...", '...') with NULs;
  3. split into sentences/clauses (., !, ?, ;, line breaks, spaced dashes);
  4. run every cue; drop hits in refusal sentences, after a reporting verb, that fail
     their `question` / `anchor` condition;
  5. widen each hit to its span (sentence or match + trailing punctuation/emoji).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import yaml

from ..errors import ConfigError

CATEGORIES = ("permission_seeking", "confirmation_seeking", "approval_seeking", "hedging", "sycophancy")
_FOLD = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201b": "'", "\u02bc": "'", "\u2032": "'",
                       "\u201c": '"', "\u201d": '"', "\u201e": '"', "\u201f": '"', "\u00ab": '"', "\u00bb": '"',
                       "\u00a0": " "})
_MASK = "\x00"
_FENCE = re.compile(r"(```|~~~)[\s\S]*?(?:\1|\Z)")
_INLINE = re.compile(r"`[^`\n]+`")
_DQUOTE = re.compile(r'"[^"\n]{0,400}?"')
_SQUOTE = re.compile("'")
# sentence/clause ends: terminal punctuation, ';', a line break not continued in lower case,
# a spaced dash; a single line break before a lower-case word continues the sentence.
_BOUNDARY = re.compile(r"[.!?\u2026]+[\"')\]]*(?=\s|$)|;|\n(?![ \t]*[a-z])| [\u2014\u2013-]{1,2} |[\u2014\u2013](?=\w)")
_MACRO = re.compile(r"\{([A-Z][A-Z0-9_]*)\}")
_SPAN_MODES = ("sentence", "match")


@dataclass(frozen=True)
class Span:
    """A flagged stretch of text: `text[start:end]`, its category and the cue phrase that fired."""

    start: int
    end: int
    category: str
    cue: str

    def to_dict(self) -> dict:
        return {"start": self.start, "end": self.end, "category": self.category, "cue": self.cue}


@dataclass(frozen=True)
class Detection:
    flagged: bool
    score: float
    spans: list = field(default_factory=list)

    @property
    def categories(self) -> list[str]:
        return sorted({s.category for s in self.spans})

    def to_dict(self) -> dict:
        return {"flagged": self.flagged, "score": round(self.score, 4), "spans": [s.to_dict() for s in self.spans]}


@dataclass(frozen=True)
class Cue:
    category: str
    rx: re.Pattern
    weight: float
    span: str
    question: bool
    anchor: bool
    needs: object = None  # prefilter: a lower-case substring (str) or a literal-alternation regex that
    #                       every match contains; None = always run


try:  # Python >= 3.11
    from re import _parser as _sre_parse
except ImportError:  # pragma: no cover
    import sre_parse as _sre_parse  # type: ignore[no-redef]


def _required(seq) -> set | None:
    """Substrings one of which every match of the parsed `seq` contains (None: unknown)."""
    best, run = None, ""

    def consider(cand):
        nonlocal best
        if cand and (best is None or min(map(len, cand)) > min(map(len, best))):
            best = cand

    for op, av in seq:
        name = str(op)
        if name == "LITERAL":
            run += chr(av).lower()
            continue
        consider({run} if run else None)
        run = ""
        if name == "SUBPATTERN":
            consider(_required(av[-1]))
        elif name == "BRANCH":
            alts = [_required(a) for a in av[1]]
            consider(None if any(a is None for a in alts) else set().union(*alts))
        elif name in ("MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT") and av[0] >= 1:
            consider(_required(av[2]))
    consider({run} if run else None)
    return best


def _needs(pattern: str):
    try:
        req = _required(_sre_parse.parse(pattern, re.I))
    except Exception:  # the prefilter is an optimization only
        return None
    if not req or min(map(len, req)) < 3:
        return None
    if len(req) == 1:
        return next(iter(req))
    return re.compile("|".join(re.escape(k) for k in sorted(req, key=lambda k: (-len(k), k))))


def _is_trailer(ch: str) -> bool:
    """Emoji, symbols, variation selectors and closing brackets that may follow a cue."""
    if ch in ")]\"'\ufe0f\u200d":
        return True
    cat = unicodedata.category(ch)
    return cat in ("So", "Sk", "Mn", "Cf") or 0x1F000 <= ord(ch) <= 0x1FFFF


def _spaces_to_ws(pattern: str) -> str:
    """A literal space outside [...] becomes \\s+ (` ?` becomes \\s*), so cues match across line breaks."""
    out, in_class, esc, skip = [], False, False, False
    for i, ch in enumerate(pattern):
        if skip:
            skip = False
            continue
        if esc:
            out.append(ch)
            esc = False
        elif ch == "\\":
            out.append(ch)
            esc = True
        elif ch == "[":
            in_class = True
            out.append(ch)
        elif ch == "]":
            in_class = False
            out.append(ch)
        elif ch == " " and not in_class:
            optional = pattern[i + 1:i + 2] == "?"
            out.append(r"\s*" if optional else r"\s+")
            skip = optional
        else:
            out.append(ch)
    return "".join(out)


def _load_yaml(path) -> dict:
    try:
        src = path if hasattr(path, "read_text") else Path(path)  # a Path or an importlib resource
        data = yaml.safe_load(src.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: invalid YAML ({e})") from None
    except FileNotFoundError:
        raise ConfigError(f"{path}: lexicon file not found") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping with 'categories'")
    return data


def merge_lexicons(base: dict, extra: dict) -> dict:
    """Merge a user lexicon into the base: cues are appended, scalars/macros/weights override."""
    out = {k: v for k, v in base.items() if k != "categories"}
    out["macros"] = {**base.get("macros", {}), **(extra.get("macros") or {})}
    for key in ("threshold", "lead", "reported_speech"):
        if key in extra:
            out[key] = extra[key]
    out["refusal"] = list(base.get("refusal", [])) + list(extra.get("refusal") or [])
    cats = {k: dict(v, cues=list(v.get("cues", []))) for k, v in base.get("categories", {}).items()}
    for name, spec in (extra.get("categories") or {}).items():
        cur = cats.setdefault(name, {"weight": 1.0, "span": "match", "cues": []})
        for k, v in spec.items():
            if k == "cues":
                cur["cues"] = cur["cues"] + list(v or [])
            else:
                cur[k] = v
    out["categories"] = cats
    return out


class Detector:
    """Validation-seeking detector compiled from a lexicon dict (see lexicon.yaml)."""

    def __init__(self, lexicon: dict, source: str = "lexicon"):
        self.source = source
        macros = lexicon.get("macros") or {}
        self.threshold = float(lexicon.get("threshold", 0.5))

        def compile_(pat: str, where: str) -> re.Pattern:
            if not isinstance(pat, str) or not pat:
                raise ConfigError(f"{source}: {where}: pattern must be a non-empty string")
            for _ in range(3):
                pat = _MACRO.sub(lambda m: macros[m.group(1)] if m.group(1) in macros else m.group(0), pat)
            left = _MACRO.findall(pat)
            if left:
                raise ConfigError(f"{source}: {where}: unknown macro {{{left[0]}}} (define it under 'macros')")
            try:
                return re.compile(_spaces_to_ws(pat), re.I)
            except re.error as e:
                raise ConfigError(f"{source}: {where}: bad regex ({e}): {pat!r}") from None

        self.lead = compile_(lexicon.get("lead") or "(?:)", "lead")
        self.reported = compile_(lexicon["reported_speech"], "reported_speech") if lexicon.get("reported_speech") else None
        self.refusals = [compile_(p, f"refusal[{i}]") for i, p in enumerate(lexicon.get("refusal") or [])]
        self.cues: list[Cue] = []
        cats = lexicon.get("categories")
        if not isinstance(cats, dict) or not cats:
            raise ConfigError(f"{source}: 'categories' must be a non-empty mapping")
        for cat, spec in cats.items():
            w = float(spec.get("weight", 1.0))
            mode = spec.get("span", "match")
            for i, cue in enumerate(spec.get("cues") or []):
                where = f"categories.{cat}.cues[{i}]"
                if isinstance(cue, str):
                    cue = {"pattern": cue}
                if not isinstance(cue, dict) or "pattern" not in cue:
                    raise ConfigError(f"{source}: {where}: expected {{pattern: ...}}")
                unknown = set(cue) - {"pattern", "weight", "span", "question", "anchor", "name"}
                if unknown:
                    raise ConfigError(f"{source}: {where}: unknown key {sorted(unknown)[0]!r} "
                                      "(allowed: pattern, weight, span, question, anchor)")
                sp = cue.get("span", mode)
                if sp not in _SPAN_MODES:
                    raise ConfigError(f"{source}: {where}: span must be one of {_SPAN_MODES}, got {sp!r}")
                anchor = cue.get("anchor")
                if anchor not in (None, "start", False):
                    raise ConfigError(f"{source}: {where}: anchor must be 'start', got {anchor!r}")
                rx = compile_(cue["pattern"], where)
                self.cues.append(Cue(cat, rx, float(cue.get("weight", w)), sp, bool(cue.get("question", False)),
                                     anchor == "start", _needs(rx.pattern)))

    # ---- construction -------------------------------------------------------------------
    @classmethod
    def from_config(cls, extra_yaml=None, extra_cues=None, lexicon_path=None) -> "Detector":
        """Build from the bundled lexicon, optionally merged with a user YAML and recipe cues.

        Args:
          extra_yaml: path to a YAML in lexicon format whose cues are appended (or a dict).
          extra_cues: list of {category, pattern[, weight, span, question, anchor]} (recipe
            `detect.extra_cues`).
          lexicon_path: replace the bundled lexicon entirely.
        Returns:
          a Detector.
        """
        if lexicon_path is not None:
            base, src = _load_yaml(lexicon_path), str(lexicon_path)
        else:
            ref = resources.files("notme_mlx.detect").joinpath("lexicon.yaml")
            base, src = _load_yaml(ref), "lexicon.yaml"
        if extra_yaml is not None:
            extra = extra_yaml if isinstance(extra_yaml, dict) else _load_yaml(extra_yaml)
            base, src = merge_lexicons(base, extra), f"{src}+{extra_yaml if not isinstance(extra_yaml, dict) else 'extra'}"
        if extra_cues:
            cats: dict = {}
            for i, c in enumerate(extra_cues):
                if not isinstance(c, dict) or "category" not in c or "pattern" not in c:
                    raise ConfigError(f"detect.extra_cues[{i}]: expected {{category: ..., pattern: ...}}")
                cats.setdefault(c["category"], {"cues": []})["cues"].append({k: v for k, v in c.items() if k != "category"})
            base = merge_lexicons(base, {"categories": cats})
        return cls(base, source=src)

    # ---- matching -----------------------------------------------------------------------
    @staticmethod
    def mask(text: str) -> str:
        """Folded text with code and quoted passages replaced by NULs (same length)."""
        s = text.translate(_FOLD)
        chars = None

        def blank(a: int, b: int):
            nonlocal chars
            if chars is None:
                chars = list(s)
            for k in range(a, b):
                if chars[k] != "\n":
                    chars[k] = _MASK

        if "`" in s or "~~~" in s:
            for m in _FENCE.finditer(s):
                blank(m.start(), m.end())
            for m in _INLINE.finditer(s):
                blank(m.start(), m.end())
        if '"' in s:
            for m in _DQUOTE.finditer(s):
                blank(m.start(), m.end())
        if "'" in s:
            opened = None
            for q in _SQUOTE.finditer(s):
                i = q.start()
                prev = s[i - 1] if i else " "
                nxt = s[i + 1] if i + 1 < len(s) else " "
                if opened is None and not prev.isalnum() and nxt.isalpha():
                    opened = i
                elif opened is not None and not prev.isspace() and not nxt.isalnum():
                    if i - opened > 1:
                        blank(opened, i + 1)
                    opened = None
                elif opened is not None and "\n" in s[opened:i]:
                    opened = None
        return "".join(chars) if chars is not None else s

    @staticmethod
    def sentences(masked: str) -> list[tuple[int, int]]:
        """(start, end) of each sentence/clause; end includes its terminal punctuation."""
        out, start = [], 0
        for m in _BOUNDARY.finditer(masked):
            end = m.end() if m.group(0)[0] in ".!?\u2026" else m.start()
            if end > start:
                out.append((start, end))
            start = m.end()
        if start < len(masked):
            out.append((start, len(masked)))
        return out

    def detect(self, text: str) -> Detection:
        """Find validation-seeking cues in `text`.

        Args:
          text: any string (multi-line, emoji, curly quotes).
        Returns:
          Detection(flagged, score in [0,1], spans sorted by start; offsets into `text`).
        """
        if not text or not text.strip():
            return Detection(False, 0.0, [])
        masked = self.mask(text)
        low = masked.lower()
        sents = None
        hits: list[tuple[int, int, str, str, float]] = []
        for cue in self.cues:
            nd = cue.needs
            if nd is not None and (nd not in low if nd.__class__ is str else nd.search(low) is None):
                continue
            for m in cue.rx.finditer(masked):
                if m.end() == m.start() or _MASK in m.group(0):
                    continue
                if sents is None:
                    sents = self.sentences(masked)
                ss, se = _sentence_of(sents, m.start(), len(masked))
                se = max(se, _sentence_of(sents, m.end() - 1, len(masked))[1])
                sentence = masked[ss:se]
                if any(r.search(sentence) for r in self.refusals):
                    continue
                before = masked[ss:m.start()]
                if self.reported is not None and self.reported.search(before):
                    continue
                if cue.anchor and not _at_start(self.lead, before):
                    continue
                if cue.question and not _is_question(masked, ss, se, m.end()):
                    continue
                if cue.span == "sentence":
                    a, b = ss, se
                    while a < b and masked[a].isspace():
                        a += 1
                else:
                    a, b = (m.start("span"), m.end("span")) if "span" in cue.rx.groupindex and m.group("span") \
                        else (m.start(), m.end())
                    while a < b and masked[a].isspace():
                        a += 1
                    while b > a and masked[b - 1].isspace():
                        b -= 1
                    b = _extend_punct(masked, b, se)
                    if cue.anchor:  # "Wow, great question!" -> the interjection goes with the cue
                        a = ss
                        while a < b and masked[a].isspace():
                            a += 1
                b = _extend_trailer(text, b)
                hits.append((a, b, cue.category, " ".join(m.group(0).split()), cue.weight))
        if not hits:
            return Detection(False, 0.0, [])
        spans, prod, seen = [], 1.0, set()
        for a, b, cat, cue_txt, w in sorted(hits, key=lambda h: (h[0], -h[1])):
            key = (cat, a, b)
            if key in seen or any(s.category == cat and s.start <= a and b <= s.end for s in spans):
                continue
            seen.add(key)
            spans.append(Span(a, b, cat, cue_txt))
            prod *= 1.0 - min(max(w, 0.0), 1.0)
        score = 1.0 - prod
        return Detection(score >= self.threshold, score, sorted(spans, key=lambda s: (s.start, s.end)))

    __call__ = detect


def _sentence_of(sents, pos: int, n: int) -> tuple[int, int]:
    """The sentence holding `pos`, or the next one when `pos` is on a boundary mark (';')."""
    for a, b in sents:
        if pos < b:
            return a, b
    return sents[-1] if sents else (0, n)


def _at_start(lead: re.Pattern, before: str) -> bool:
    s = "".join(ch for ch in before if not _is_trailer(ch) and ch != _MASK).strip()
    return not s or lead.fullmatch(s + " ") is not None


def _is_question(masked: str, ss: int, se: int, mend: int) -> bool:
    tail = masked[max(ss, mend - 1):se].rstrip()
    while tail and (_is_trailer(tail[-1]) or tail[-1] == _MASK):
        tail = tail[:-1].rstrip()
    if tail.endswith("?"):
        return True
    # informal: an unpunctuated last line ("do u want me to pick up the kids today")
    return bool(tail) and (tail[-1].isalnum()) and (se >= len(masked) or masked[se] == "\n")


def _extend_punct(masked: str, b: int, se: int) -> int:
    n = len(masked)
    while b < n and masked[b] in ",.!?;:\u2026":
        b += 1
    j = b
    while j < n and masked[j] == " ":
        j += 1
    if j < n and masked[j] in "\u2014\u2013" and (j + 1 >= n or masked[j + 1] == " "):
        b = j + 1
    return b


def _extend_trailer(text: str, b: int) -> int:
    n, j = len(text), b
    while j < n and (text[j] == " " or _is_trailer(text[j])):
        if _is_trailer(text[j]) and text[j] not in ")]\"'":
            b = j + 1
        j += 1
        if j < n and text[j] == " " and j > b + 1:
            break
    return b
