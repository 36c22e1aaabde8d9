"""Learned detector stage: a sentence/clause classifier beside the lexicon.

Model: multinomial logistic regression (labels: none + the five categories) over hashed
features of one sentence or clause: word 1-3-grams with start/end marks, 2-4-grams of its
skeleton (function words kept, other words -> "x": "want me to x ?"), char 4-grams, a length
bucket and a question mark flag; the binary feature vector is L2-normalized (so a long sentence
does not pile up weight just by being long). Texting forms are folded first (u -> you, lmk -> let me
know, apostrophes dropped). Scores are calibrated by temperature scaling on held-out families:
`score = 1 - p(none)`, flagged when `score >= threshold`.

Per text (all offsets refer to the original string, as in the lexicon engine):
  1. mask code and quotes, split sentences/clauses (the lexicon's own `Detector.mask` /
     `Detector.sentences`);
  2. abstain on a text with a sentence the lexicon's refusal patterns match (a refusal is
     never flagged, nor the safety advice around it);
  3. score every sentence in one batch; a flagged sentence is narrowed to its flagged clauses
     ("I could be wrong, but " of "I could be wrong, but the bus leaves at six.") when a clause
     scores on its own, else the whole sentence is the span.

Weights ship in `weights/learned.safetensors` with `weights/learned.json` (labels, feature
settings, temperature, threshold, the weights file's sha256). Loading checks the sha256; a
missing or corrupt file is one ConfigError naming it.
"""

from __future__ import annotations

import hashlib
import json
import re
import zlib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
from safetensors.numpy import load as st_load
from safetensors.numpy import save as st_save

from ..errors import ConfigError
from ..io import atomic_write_bytes, atomic_write_text
from .detector import CATEGORIES, Detection, Detector, Span, _extend_trailer

LABELS = ("none",) + CATEGORIES
FORMAT = "notme-detect-learned"
VERSION = 1
WEIGHTS_FILE = "learned.safetensors"
MANIFEST_FILE = "learned.json"

_FOLD = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201b": "'", "\u02bc": "'", "\u00a0": " "})
_TOKEN = re.compile(r"[a-z0-9]+|[?!]|\x00+|[^\sa-z0-9.,;:'\"()\[\]{}<>/\\_\-=*#@&%$^|`~+]")
_CANON = {"u": "you", "ya": "you", "yall": "you", "ur": "your", "youre": "you are", "r": "are", "pls": "please",
          "plz": "please", "thx": "thanks", "lmk": "let me know", "idk": "i dont know", "tbh": "to be honest",
          "wanna": "want to", "gonna": "going to", "gotta": "got to", "im": "i am", "thats": "that is",
          "whats": "what is", "hows": "how is", "ok": "okay", "k": "okay", "kk": "okay", "tho": "though",
          "bc": "because", "cuz": "because", "imo": "in my opinion", "imho": "in my humble opinion",
          "fwiw": "for what its worth", "ill": "i will", "id": "i would", "ive": "i have", "q": "question",
          "rn": "right now", "sth": "something", "smth": "something", "w": "with", "abt": "about"}
_CLAUSE = re.compile(r"(?:,|\s[-\u2013\u2014]+)\s*(?:(?:but|so|though|tho)\s+)?|\s(?:but|tho|though)\s+")
_LEN_BUCKETS = (1, 2, 3, 5, 8, 12, 20)
# function words kept in the sentence skeleton; every other word becomes "x" (runs collapse)
_FUNC = frozenset('''i me my mine we us our you your yours he him his she her they them their it its this that these
those there here a an the some any all no not dont doesnt didnt isnt arent wasnt cant wont couldnt shouldnt wouldnt
do does did am is are was were be been being have has had will would shall should can could may might must
what which who whom whose when where why how whether if so but and or because though also just really too
to of in on at for with about from by as than then now still already maybe perhaps probably
want like need mind help hope think know sure sorry let say tell okay right good great wrong mistaken
please thanks thank go ahead keep more else anything something ? !'''.split())


def tokens(s: str) -> list[str]:
    """Normalized word tokens of one sentence (lower case, apostrophes dropped, texting folded)."""
    s = s.translate(_FOLD).lower().replace("'", "")
    out = []
    for t in _TOKEN.findall(s):
        if t[0] == "\x00":
            out.append("zq")
            continue
        c = _CANON.get(t)
        if c is None:
            out.append(t)
        else:
            out.extend(c.split())
    return out


_BOS, _EOS, _X = (np.uint64(zlib.crc32(t.encode())) for t in ("<s>", "</s>", "<x>"))
_SALT = {k: np.uint64(v) for k, v in (("u", 0x9E3779B97F4A7C15), ("b", 0xC2B2AE3D27D4EB4F),
                                      ("t", 0x165667B19E3779F9), ("k2", 0x27D4EB2F165667C5),
                                      ("k3", 0x85EBCA77C2B2AE63), ("k4", 0xFF51AFD7ED558CCD),
                                      ("c", 0xC4CEB9FE1A85EC53), ("len", 0x2545F4914F6CDD1D),
                                      ("q", 0x94D049BB133111EB), ("bias", 0xBF58476D1CE4E5B9))}


def _mix(h: np.ndarray, salt: np.uint64) -> np.ndarray:
    """splitmix64 finalizer of h ^ salt (uint64, wraps)."""
    with np.errstate(over="ignore"):
        z = h ^ salt
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


class Hasher:
    """Sentences -> sorted unique hashed feature indices in [0, dim), vectorized over a batch.

    Features of one sentence/clause: word 1/2/3-grams over <s> words </s>; 2/3/4-grams of the
    skeleton (function words kept, runs of other words -> one <x>); byte `char_n`-grams of
    " words joined by spaces " (? and ! left out); a word-count bucket; "ends with ?"; a bias.
    Word hashes are crc32 (stable across processes and Python versions), memoized.
    """

    def __init__(self, dim: int, char_n: int = 4):
        if dim & (dim - 1):
            raise ConfigError(f"hash dim must be a power of two, got {dim}")
        if not 1 <= char_n <= 8:
            raise ConfigError(f"char_n must be in 1..8, got {char_n}")
        self.dim, self.char_n, self._memo = dim, char_n, {}

    def __getstate__(self):
        return {"dim": self.dim, "char_n": self.char_n}

    def __setstate__(self, st):
        self.dim, self.char_n, self._memo = st["dim"], st["char_n"], {}

    def _word(self, w: str) -> int:
        h = self._memo.get(w)
        if h is None:
            if len(self._memo) > 500_000:
                self._memo.clear()
            h = self._memo[w] = zlib.crc32(w.encode("utf-8"))
        return h

    def batch(self, sents: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(cols, lens): the concatenated sorted unique indices of every sentence, and their counts."""
        n = len(sents)
        toks, sk, chars = [], [], []
        tsid, ksid, csid = [], [], []
        nwords = np.zeros(n, np.int64)
        qend = np.zeros(n, bool)
        word = self._word
        for i, s in enumerate(sents):
            w = tokens(s)
            if not w:
                continue
            hs = [word(x) for x in w]
            toks.append(int(_BOS))
            toks.extend(hs)
            toks.append(int(_EOS))
            tsid.extend([i] * (len(hs) + 2))
            k, last = [int(_BOS)], None
            for x, h in zip(w, hs):
                y = h if x in _FUNC else int(_X)
                if not (y == int(_X) and last == int(_X)):
                    k.append(y)
                last = y
            k.append(int(_EOS))
            sk.extend(k)
            ksid.extend([i] * len(k))
            plain = [x for x in w if x not in ("?", "!")]
            nwords[i] = len(plain)
            qend[i] = w[-1] == "?"
            bts = (" " + " ".join(plain) + " ").encode("utf-8")
            chars.append(bts)
            csid.extend([i] * len(bts))
        parts_r, parts_h = [], []

        def grams(seq, sid, ns_salts):
            if not seq:
                return
            h0 = np.asarray(seq, np.uint64)
            sid = np.asarray(sid, np.int64)
            for nn, salt in ns_salts:
                if len(h0) < nn:
                    continue
                m = len(h0) - nn + 1
                ok = sid[:m] == sid[nn - 1:nn - 1 + m]
                h = h0[:m].copy()
                with np.errstate(over="ignore"):
                    for j in range(1, nn):
                        h = h * np.uint64(1000003) + h0[j:j + m]
                parts_r.append(sid[:m][ok])
                parts_h.append(_mix(h[ok], salt))

        # unigrams: skip the <s>/</s> pads
        if toks:
            h0 = np.asarray(toks, np.uint64)
            sid = np.asarray(tsid, np.int64)
            real = (h0 != _BOS) & (h0 != _EOS)
            parts_r.append(sid[real])
            parts_h.append(_mix(h0[real], _SALT["u"]))
        grams(toks, tsid, ((2, _SALT["b"]), (3, _SALT["t"])))
        grams(sk, ksid, ((2, _SALT["k2"]), (3, _SALT["k3"]), (4, _SALT["k4"])))
        if chars:
            b = np.frombuffer(b"".join(chars), np.uint8).astype(np.uint64)
            c = self.char_n
            sid = np.asarray(csid, np.int64)
            if len(b) >= c:
                m = len(b) - c + 1
                h = b[:m].copy()
                for j in range(1, c):
                    h = h | (b[j:j + m] << np.uint64(8 * j))
                ok = sid[:m] == sid[c - 1:c - 1 + m]
                parts_r.append(sid[:m][ok])
                parts_h.append(_mix(h[ok], _SALT["c"]))
        has = np.zeros(n, bool)
        if tsid:
            has[np.unique(np.asarray(tsid, np.int64))] = True
        rows = np.nonzero(has)[0]
        bucket = np.searchsorted(np.asarray(_LEN_BUCKETS), nwords[rows]).astype(np.uint64)
        parts_r += [rows, rows, rows[qend[rows]]]
        parts_h += [_mix(bucket, _SALT["len"]), _mix(np.zeros(len(rows), np.uint64), _SALT["bias"]),
                    _mix(np.zeros(int(qend[rows].sum()), np.uint64), _SALT["q"])]
        r = np.concatenate(parts_r) if parts_r else np.zeros(0, np.int64)
        h = (np.concatenate(parts_h) & np.uint64(self.dim - 1)).astype(np.int64) if parts_h else np.zeros(0, np.int64)
        key = r * self.dim + h
        key.sort()
        if key.size:
            key = key[np.concatenate(([True], key[1:] != key[:-1]))]
        lens = np.bincount(key // self.dim, minlength=n) if key.size else np.zeros(n, np.int64)
        return key % self.dim, lens

    def split(self, sents: list[str]) -> list[np.ndarray]:
        """Per-sentence index arrays (for training)."""
        cols, lens = self.batch(sents)
        return np.split(cols, np.cumsum(lens)[:-1]) if len(sents) else []

    def indices(self, s: str) -> np.ndarray:
        return self.batch([s])[0]


def clauses(sent: str) -> list[tuple[int, int]]:
    """(start, end) of the clauses of one sentence: split after a comma/dash (+ but/so) or before 'but'."""
    cuts = [m.end() for m in _CLAUSE.finditer(sent) if 0 < m.end() < len(sent)]
    out, a = [], 0
    for c in cuts:
        if sent[a:c].strip():
            out.append((a, c))
            a = c
    if sent[a:].strip():
        out.append((a, len(sent)))
    return out


@dataclass
class Model:
    """Logistic regression weights + calibration."""

    W: np.ndarray            # (dim, K) float32
    b: np.ndarray            # (K,) float32
    temperature: float = 1.0
    threshold: float = 0.5
    char_n: int = 4

    @property
    def dim(self) -> int:
        return self.W.shape[0]

    def logits_flat(self, cols: np.ndarray, lens: np.ndarray) -> np.ndarray:
        """Raw logits for sentences given as concatenated index arrays `cols` with counts `lens`."""
        out = np.zeros((len(lens), self.W.shape[1]), np.float32)
        nz = lens > 0
        if cols.size:
            starts = np.concatenate([[0], np.cumsum(lens)[:-1]])
            out[nz] = np.add.reduceat(self.W[cols], starts[nz], axis=0) / np.sqrt(lens[nz])[:, None]
        return out + self.b

    def logits(self, idx: list[np.ndarray]) -> np.ndarray:
        """Raw logits for a batch of index arrays (one per sentence)."""
        lens = np.fromiter((len(i) for i in idx), np.int64, len(idx))
        cols = np.concatenate(idx) if idx else np.zeros(0, np.int64)
        return self.logits_flat(cols, lens)

    def probs(self, idx: list[np.ndarray], temperature: float | None = None) -> np.ndarray:
        return softmax(self.logits(idx) / (self.temperature if temperature is None else temperature))


def softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


# ---------------------------------------------------------------- weights I/O ---------------
def shipped_weights_dir() -> Path:
    return Path(str(resources.files("notme_mlx.detect").joinpath("weights")))


def save_model(model: Model, folder, meta: dict | None = None) -> dict:
    """Write learned.safetensors (float16 W, float32 b) + learned.json with its sha256; atomic, 0644."""
    folder = Path(folder)
    data = st_save({"W": model.W.astype(np.float16), "b": model.b.astype(np.float32)})
    man = {"format": FORMAT, "version": VERSION, "labels": list(LABELS), "dim": int(model.dim),
           "char_n": model.char_n, "temperature": round(float(model.temperature), 6),
           "threshold": round(float(model.threshold), 6), "weights": WEIGHTS_FILE,
           "sha256": hashlib.sha256(data).hexdigest(), **(meta or {})}
    atomic_write_bytes(folder / WEIGHTS_FILE, data, mode=0o644)
    atomic_write_text(folder / MANIFEST_FILE, json.dumps(man, indent=2, sort_keys=True) + "\n", mode=0o644)
    return man


def load_model(folder=None) -> tuple[Model, dict]:
    """Load and verify a model folder (default: the shipped weights). One ConfigError on any problem."""
    folder = Path(folder) if folder is not None else shipped_weights_dir()
    mpath = folder / MANIFEST_FILE
    try:
        man = json.loads(mpath.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{mpath}: learned detector manifest missing (retrain with `notme detect train`, "
                          "or use --engine lexicon)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{mpath}: learned detector manifest is corrupt ({e})") from None
    if not isinstance(man, dict) or man.get("format") != FORMAT or man.get("labels") != list(LABELS):
        raise ConfigError(f"{mpath}: not a {FORMAT} manifest for labels {list(LABELS)}")
    if man.get("version") != VERSION:
        raise ConfigError(f"{mpath}: version {man.get('version')!r}, this notme reads version {VERSION}")
    wpath = folder / str(man.get("weights", WEIGHTS_FILE))
    try:
        data = wpath.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{wpath}: learned detector weights missing (retrain with `notme detect train`, "
                          "or use --engine lexicon)") from None
    digest = hashlib.sha256(data).hexdigest()
    if digest != man.get("sha256"):
        raise ConfigError(f"{wpath}: learned detector weights are corrupt (sha256 {digest[:12]}…, "
                          f"manifest says {str(man.get('sha256'))[:12]}…)")
    try:
        t = st_load(data)
        W, b = t["W"].astype(np.float32), t["b"].astype(np.float32)
    except Exception as e:  # a file with the right hash but wrong content (hand-edited manifest)
        raise ConfigError(f"{wpath}: cannot read learned detector weights ({e})") from None
    try:
        dim, temp, thr, char_n = int(man["dim"]), float(man["temperature"]), float(man["threshold"]), int(man["char_n"])
    except (KeyError, TypeError, ValueError) as e:
        raise ConfigError(f"{mpath}: manifest lacks a valid dim/temperature/threshold/char_n ({e!r})") from None
    if W.shape != (dim, len(LABELS)) or b.shape != (len(LABELS),):
        raise ConfigError(f"{wpath}: weight shapes {W.shape}/{b.shape} do not match the manifest")
    return Model(W, b, temp, thr, char_n), man


# ---------------------------------------------------------------- the engine ----------------
class LearnedDetector:
    """Sentence/clause classifier with the lexicon engine's interface (`detect`, `__call__`)."""

    def __init__(self, model: Model, manifest: dict | None = None, refusals=None, threshold: float | None = None):
        self.model = model
        self.manifest = manifest or {}
        self.threshold = model.threshold if threshold is None else float(threshold)
        self.hasher = Hasher(model.dim, model.char_n)
        self.refusals = list(refusals) if refusals is not None else _default_refusals()
        self.source = "learned"

    @classmethod
    def load(cls, folder=None, threshold: float | None = None) -> "LearnedDetector":
        model, man = load_model(folder)
        return cls(model, man, threshold=threshold)

    def _units(self, text: str):
        """(masked text, [(a, b)] sentence ranges worth scoring) for one text."""
        masked = Detector.mask(text)
        units = []
        for a, b in Detector.sentences(masked):
            while a < b and masked[a].isspace():
                a += 1
            while b > a and masked[b - 1].isspace():
                b -= 1
            seg = masked[a:b]
            if b - a < 2 or not any(ch.isalpha() for ch in seg):
                continue
            if any(r.search(seg) for r in self.refusals):
                return masked, []  # a reply that refuses: the learned stage abstains on all of it
            units.append((a, b))
        return masked, units

    def score_sentences(self, sents: list[str]) -> np.ndarray:
        """Calibrated label probabilities, shape (len(sents), 6)."""
        cols, lens = self.hasher.batch(sents)
        return softmax(self.model.logits_flat(cols, lens) / self.model.temperature)

    def detect_batch(self, texts: list[str]) -> list[Detection]:
        """Detections for many texts: one model call for all their sentences, one for the clauses
        of the flagged ones."""
        prepared = [self._units(t) if t and t.strip() else ("", []) for t in texts]
        flat = [m[a:b] for m, units in prepared for a, b in units]
        P = self.score_sentences(flat) if flat else np.zeros((0, len(LABELS)), np.float32)
        thr = self.threshold
        # flagged sentences -> their clauses, scored together
        hits, cl_text = [], []   # (text index, a, b, row, [clause ranges], first clause row)
        k = 0
        for ti, (masked, units) in enumerate(prepared):
            for a, b in units:
                row = P[k]
                k += 1
                if 1.0 - row[0] >= thr:
                    cl = clauses(masked[a:b])
                    hits.append((ti, a, b, row, cl if len(cl) > 1 else [], len(cl_text)))
                    if len(cl) > 1:
                        cl_text.extend(masked[a + x:a + y] for x, y in cl)
        Q = self.score_sentences(cl_text) if cl_text else None
        spans: dict[int, list] = {}
        for ti, a, b, row, cl, j in hits:
            found = [(a + x, a + y, LABELS[1 + int(np.argmax(q[1:]))])
                     for (x, y), q in zip(cl, Q[j:j + len(cl)] if cl else []) if 1.0 - q[0] >= thr]
            if not found:
                found = [(a, b, LABELS[1 + int(np.argmax(row[1:]))])]
            text, masked = texts[ti], prepared[ti][0]
            out = spans.setdefault(ti, [])
            for x, y, c in found:
                while x < y and masked[x].isspace():
                    x += 1
                if y == b:  # the sentence's end: absorb trailing emoji, as the lexicon does
                    y = _extend_trailer(text, y)
                out.append(Span(x, y, c, "learned:" + " ".join(text[x:y].split())[:60]))
        res, k = [], 0
        for ti, (masked, units) in enumerate(prepared):
            n = len(units)
            score = float(1.0 - P[k:k + n, 0].min()) if n else 0.0
            k += n
            sp = spans.get(ti)
            res.append(Detection(True, score, sorted(sp, key=lambda s: (s.start, s.end))) if sp
                       else Detection(False, score, []))
        return res

    def detect(self, text: str) -> Detection:
        return self.detect_batch([text])[0]

    __call__ = detect


def _default_refusals():
    return Detector.from_config().refusals


# ---------------------------------------------------------------- lexicon + learned ---------
class CombinedDetector:
    """Both engines: lexicon spans are kept as they are (exact cues); learned spans are added
    where no lexicon span overlaps them. Score = max of the two scores (each in [0, 1]);
    flagged if either engine flags."""

    def __init__(self, lexicon: Detector, learned: LearnedDetector):
        self.lexicon, self.learned = lexicon, learned
        self.threshold = lexicon.threshold
        self.source = f"{lexicon.source}+learned"

    def detect_batch(self, texts: list[str]) -> list[Detection]:
        return [self._merge(self.lexicon.detect(t), d) for t, d in zip(texts, self.learned.detect_batch(texts))]

    @staticmethod
    def _merge(lex: Detection, lrn: Detection) -> Detection:
        if not lrn.flagged:
            return lex if lrn.score <= lex.score else Detection(lex.flagged, lrn.score, list(lex.spans))
        spans = list(lex.spans) if lex.flagged else []
        for s in lrn.spans:
            if not any(s.start < t.end and t.start < s.end for t in spans):
                spans.append(s)
        return Detection(True, max(lex.score, lrn.score), sorted(spans, key=lambda s: (s.start, s.end)))

    def detect(self, text: str) -> Detection:
        return self.detect_batch([text])[0]

    __call__ = detect
