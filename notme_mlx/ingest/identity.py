"""Who is "me": names, handles, phone numbers and emails from --me and identity.yaml.

identity.yaml (default `$XDG_CONFIG_HOME/notme/identity.yaml`, i.e.
`~/.config/notme/identity.yaml`)::

    names: ["Alex Rivera", "Alex"]
    handles: ["@alexr"]
    phones: ["+1 555 010 0199"]
    emails: ["alex@example.com"]

Matching ignores case, surrounding spaces and invisible marks (LRM, NBSP);
phone numbers match on their last 9 digits.
"""

from __future__ import annotations

import os
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ..errors import ConfigError

_INVISIBLE = dict.fromkeys(map(ord, "\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\ufeff"), None)
_KEYS = ("names", "handles", "phones", "emails")


def norm_name(s: str) -> str:
    """Case-folded, NFKC, invisible marks removed, inner whitespace collapsed."""
    s = unicodedata.normalize("NFKC", s.translate(_INVISIBLE))
    return " ".join(s.split()).casefold()


def _digits(s: str) -> str:
    return re.sub(r"\D", "", s)


@dataclass
class Identity:
    """The owner's identifiers. `display` is the name written as the 'me' speaker."""

    names: list[str] = field(default_factory=list)
    handles: list[str] = field(default_factory=list)
    phones: list[str] = field(default_factory=list)
    emails: list[str] = field(default_factory=list)

    @property
    def configured(self) -> bool:
        return bool(self.names or self.handles or self.phones or self.emails)

    @property
    def display(self) -> str:
        return self.names[0] if self.names else "me"

    def is_me(self, speaker: str | None) -> bool:
        """True when `speaker` (a display name, handle, phone or email) is the owner."""
        if not speaker:
            return False
        memo = self.__dict__.setdefault("_memo", {})
        if speaker not in memo:
            if len(memo) > 100_000:
                memo.clear()
            memo[speaker] = self._match(speaker)
        return memo[speaker]

    def _match(self, speaker: str) -> bool:
        n = norm_name(speaker)
        if n in {norm_name(x) for x in self.names + self.emails}:
            return True
        if n.lstrip("@") in {norm_name(h).lstrip("@") for h in self.handles}:
            return True
        d = _digits(speaker)
        if len(d) >= 7 and not re.search(r"[A-Za-z]", speaker):
            return any(len(_digits(p)) >= 7 and _digits(p)[-9:] == d[-9:] for p in self.phones)
        return False


def default_identity_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "notme" / "identity.yaml"


def load_identity(path: str | Path | None = None, me: list[str] | tuple[str, ...] = ()) -> Identity:
    """Identity from `--me` names plus an identity.yaml.

    Args:
        path: identity file; None -> the default path if it exists (a missing default is fine,
            a missing explicit path is an error).
        me: names from `--me`; they come first, so `--me` sets the display name.
    Returns:
        Identity.
    """
    ident = Identity(names=[m for m in me if m and m.strip()])
    explicit = path is not None
    p = Path(path) if explicit else default_identity_path()
    if not p.exists():
        if explicit:
            raise ConfigError(f"{p}: identity file not found")
        return ident
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: invalid YAML ({e})".replace("\n", " ")) from None
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: expected a mapping with keys {', '.join(_KEYS)}")
    unknown = sorted(set(data) - set(_KEYS))
    if unknown:
        raise ConfigError(f"{p}: unknown key(s) {unknown}; allowed: {', '.join(_KEYS)}")
    for k in _KEYS:
        v = data.get(k) or []
        if isinstance(v, str):
            v = [v]
        if not isinstance(v, list) or not all(isinstance(x, (str, int)) for x in v):
            raise ConfigError(f"{p}: key {k!r} must be a list of strings")
        getattr(ident, k).extend(str(x) for x in v)
    return ident
