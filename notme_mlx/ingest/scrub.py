"""Privacy scrub: typed placeholders for contact data and secrets, pseudonyms for people.

`Scrubber.scrub(text)` replaces, in this order:
  URLs carrying credentials or tokens -> <URL_SECRET>   (user:pass@, ?token=, ?key=, ?sig=, ...)
  API keys / bearer tokens            -> <SECRET>       (sk-..., ghp_..., xoxb-..., AKIA..., JWTs)
  e-mail addresses                    -> <EMAIL>
  IBANs (ISO 13616 mod-97 checked)    -> <IBAN>
  card numbers (13-19 digits, Luhn)   -> <CARD>
  phone numbers (7-15 digits)         -> <PHONE>
  other people's names                -> consistent pseudonyms

Pseudonyms: a registered person's name maps to a fictional "First Last" chosen by
a hash of the normalized name (so the same person gets the same pseudonym in
every source and every run with the same salt); their first name alone maps to
the pseudonym's first name. The owner's own names (`keep`) are never replaced.
Used by `notme ingest --scrub` and by `notme data build`.
"""

from __future__ import annotations

import hashlib
import re

from .identity import norm_name

_FIRST = ("Avery Blake Casey Dana Eden Finley Gray Harper Indy Jules Kai Lane Morgan Noel Oakley Parker Quinn "
          "Reese Sage Tatum Umber Vale Wren Xen Yael Zion Arden Bryn Cleo Dell Ellis Fern Greer Hollis Ira "
          "Jem Kit Lark Marlo Nico Orin Pax Rory Shay Tully Vesper Wynn").split()
_LAST = ("Ashdown Birchwood Coldwell Dunmore Elsworth Fairholm Glenrock Hartwell Ivesby Juniper Kestrel "
         "Larkspur Moorland Northcott Oakhurst Pembrook Quarry Redfern Stillwater Thornbury Underhill "
         "Vantage Westbrook Yarrow Zephyr Alder Bramble Copperfield Dovecote Emberly").split()

_URL = re.compile(r"\bhttps?://[^\s<>\"']+", re.I)
_URL_SECRET = re.compile(
    r"//[^/\s:@]+:[^/\s@]+@|[?&#](access_token|token|api[_-]?key|key|secret|sig|signature|password|passwd|pwd|"
    r"auth|session|sessionid|code|X-Amz-Signature|X-Amz-Credential)=", re.I)
_SECRET = re.compile(
    r"\b(?:sk-(?:proj-|ant-)?[A-Za-z0-9_-]{20,}|gh[pousr]_[A-Za-z0-9]{30,}|github_pat_\w{20,}|"
    r"xox[abprs]-[\w-]{10,}|AKIA[0-9A-Z]{16}|AIza[\w-]{35}|hf_[A-Za-z0-9]{30,}|"
    r"eyJ[\w-]{8,}\.[\w-]{8,}\.[\w-]{8,})")
_EMAIL = re.compile(r"\b[\w.+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b")
_IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?\b")
_CARD = re.compile(r"(?<![\w-])\d(?:[ -]?\d){12,18}(?![\w-])")
_PHONE = re.compile(r"(?<![\w+])(?:\+\d{1,3}[ .-]?)?(?:\(\d{1,4}\)[ .-]?)?\d{2,5}(?:[ .-]\d{2,5}){0,4}(?![\w])")
_DATELIKE = re.compile(r"^\d{1,4}[./-]\d{1,2}[./-]\d{1,4}$|^\d{1,2}[.:]\d{2}$")


def luhn_ok(digits: str) -> bool:
    total, alt = 0, False
    for ch in reversed(digits):
        d = int(ch)
        if alt:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
        alt = not alt
    return total % 10 == 0


def iban_ok(s: str) -> bool:
    s = s.replace(" ", "").upper()
    if not 15 <= len(s) <= 34:
        return False
    moved = s[4:] + s[:4]
    return int("".join(str(int(c, 36)) for c in moved)) % 97 == 1


def _phone_ok(m: str) -> bool:
    digits = re.sub(r"\D", "", m)
    if not 7 <= len(digits) <= 15 or _DATELIKE.match(m):
        return False
    if m.startswith("+") or m.startswith("("):
        return True
    return bool(re.search(r"[ .-]", m)) or len(digits) >= 10


class Scrubber:
    """Replace PII with typed placeholders and people's names with consistent pseudonyms.

    Args:
        names: other people's names to pseudonymize (more can be added with `add_name`).
        keep: names never replaced (the owner's).
        salt: changes every pseudonym; keep it fixed to stay consistent across runs.
    """

    def __init__(self, names=(), keep=(), salt: str = ""):
        self.salt = salt
        self.keep = {norm_name(k) for k in keep} | {norm_name(t) for k in keep for t in k.split()}
        self._full: dict[str, str] = {}  # norm full name -> pseudonym
        self._first: dict[str, str] = {}  # norm first name -> pseudonym first name
        self._used: set[str] = set()
        self._rx: re.Pattern | None = None
        for n in names:
            self.add_name(n)

    def add_name(self, name: str) -> str:
        """Register a person; returns their pseudonym (idempotent)."""
        key = norm_name(name)
        if not key or key in self.keep:
            return name
        if key in self._full:
            return self._full[key]
        if re.fullmatch(r"[\d\s+().-]+|[^@\s]+@\S+", name.strip()):
            return self._full.setdefault(key, self._pseudo(key))  # phone/email handles: speaker only
        p = self._pseudo(key)
        self._full[key] = p
        first = key.split()[0]
        if len(first) >= 3 and first not in self.keep and first != key:
            self._first.setdefault(first, p.split()[0])
        self._rx = None
        return p

    def _pseudo(self, key: str) -> str:
        h = int.from_bytes(hashlib.sha256((self.salt + "\0" + key).encode()).digest()[:8], "big")
        n = len(_FIRST) * len(_LAST)
        for k in range(n):
            i = (h + k) % n
            cand = f"{_FIRST[i % len(_FIRST)]} {_LAST[i // len(_FIRST)]}"
            if cand not in self._used:
                self._used.add(cand)
                return cand
        return f"Person {h % 100000}"

    def pseudonym(self, name: str) -> str:
        return self.add_name(name)

    def _name_rx(self):
        if self._rx is None:
            variants = sorted(set(self._full) | set(self._first), key=len, reverse=True)
            variants = [v for v in variants if re.search(r"[^\W\d_]", v)]
            self._rx = re.compile(r"(?<!\w)(" + "|".join(re.escape(v) for v in variants) + r")(?!\w)", re.I) \
                if variants else None
        return self._rx

    def scrub(self, text: str) -> str:
        """`text` with PII replaced; idempotent on its own output."""
        if not text:
            return text
        text = _URL.sub(lambda m: "<URL_SECRET>" if _URL_SECRET.search(m.group(0)) else m.group(0), text)
        text = _SECRET.sub("<SECRET>", text)
        text = _EMAIL.sub("<EMAIL>", text)
        text = _IBAN.sub(lambda m: "<IBAN>" if iban_ok(m.group(0)) else m.group(0), text)
        text = _CARD.sub(lambda m: "<CARD>" if luhn_ok(re.sub(r"\D", "", m.group(0))) else m.group(0), text)
        text = _PHONE.sub(lambda m: "<PHONE>" if _phone_ok(m.group(0)) else m.group(0), text)
        rx = self._name_rx()
        if rx is not None:
            def sub(m):
                k = norm_name(m.group(0))
                return self._full.get(k) or self._first.get(k) or m.group(0)
            text = rx.sub(sub, text)
        return text
