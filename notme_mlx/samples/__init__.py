"""Bundled sample exports of a fictional person, "Alex Rivera", for `make quickstart` and tests.

Every format notme ingests is represented (ChatGPT, Claude, Claude Code, iMessage
chat.db, WhatsApp .txt and .zip, Telegram, OpenAI JSONL, ShareGPT, mlx-lm JSONL,
hand-written Markdown). All people and content are invented. Ingest them with:

    notme ingest $(python -c "from notme_mlx.samples import sample_paths; print(*sample_paths())") \\
        -o messages.jsonl --me "Alex Rivera"

The files are generated from `_content.py` by `python -m notme_mlx.samples._build`.
"""

from __future__ import annotations

from pathlib import Path

SAMPLES_DIR = Path(__file__).parent
OWNER = "Alex Rivera"
IDENTITY_FILE = SAMPLES_DIR / "identity.yaml"
_SUFFIXES = {".json", ".jsonl", ".db", ".txt", ".zip", ".md"}


def sample_paths() -> list[Path]:
    """The bundled sample export files (sorted), one or more per format.

    All live directly in the package folder (so wheel package-data patterns pick them up).
    """
    return sorted(p for p in SAMPLES_DIR.iterdir() if p.is_file() and p.suffix in _SUFFIXES)
