"""The one table of ingest formats, and content-based format detection."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator

from ..errors import InputError
from .formats import chatgpt, claude, claude_code, imessage, jsonl, notme_md, telegram, whatsapp


@dataclass(frozen=True)
class Format:
    """An export format: `parse(source, ctx) -> Iterator[dict]`, `sniff(head, name) -> bool`."""

    name: str
    parse: Callable[..., Iterator[dict]]
    sniff: Callable[[bytes, str], bool]
    description: str


# Order matters for detection: the most specific sniffers first.
FORMATS: dict[str, Format] = {f.name: f for f in [
    Format("imessage", imessage.parse, imessage.sniff, "macOS Messages chat.db (SQLite)"),
    Format("chatgpt", chatgpt.parse, chatgpt.sniff, "ChatGPT export conversations.json"),
    Format("claude", claude.parse, claude.sniff, "Claude.ai export conversations.json"),
    Format("claude_code", claude_code.parse, claude_code.sniff, "Claude Code session .jsonl (~/.claude/projects)"),
    Format("telegram", telegram.parse, telegram.sniff, "Telegram Desktop result.json"),
    Format("sharegpt", jsonl.parse_sharegpt, jsonl.sniff_sharegpt, "ShareGPT JSON/JSONL {conversations:[{from,value}]}"),
    Format("openai_jsonl", jsonl.parse_openai, jsonl.sniff_openai, "OpenAI/mlx-lm chat JSONL {messages:[{role,content}]}"),
    Format("mlx_jsonl", jsonl.parse_mlx, jsonl.sniff_mlx, "mlx-lm completions/text JSONL {prompt,completion} | {text}"),
    Format("notme_jsonl", jsonl.parse_notme, jsonl.sniff_notme, "Message records (notme ingest output or hand-written)"),
    Format("whatsapp", whatsapp.parse, whatsapp.sniff, "WhatsApp 'Export chat' .txt (iOS/Android)"),
    Format("notme_md", notme_md.parse, notme_md.sniff, "hand-written Markdown conversations (## title / **me:** text)"),
]}


def detect_format(source) -> str | None:
    """Name of the format whose sniffer accepts the source's first bytes, or None."""
    head = source.head()
    if not head.strip():
        return None
    for f in FORMATS.values():
        if f.sniff(head, source.name):
            return f.name
    return None


def get_format(name: str) -> Format:
    if name not in FORMATS:
        raise InputError(f"unknown format {name!r}; choose one of: auto, {', '.join(FORMATS)}")
    return FORMATS[name]
