"""Chat-template families and their Ollama (Go template) translations.

A Jinja chat template cannot be translated mechanically into Ollama's Go
templates, so we recognise the family by its markers (ChatML for Qwen and
SmolLM, Llama 3, Mistral, Gemma, Phi-3) and emit the matching Go template and
stop tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import NotmeError
from ..models.frame import frame_from_template


@dataclass(frozen=True)
class TemplateFamily:
    name: str
    markers: tuple[str, ...]
    ollama_template: str
    stops: tuple[str, ...]


CHATML = TemplateFamily(
    "chatml",
    ("<|im_start|>",),
    '{{- if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}'
    "{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}"
    "<|im_start|>assistant\n",
    ("<|im_end|>", "<|im_start|>"),
)

LLAMA3 = TemplateFamily(
    "llama3",
    ("<|start_header_id|>",),
    "{{- if .System }}<|start_header_id|>system<|end_header_id|>\n\n{{ .System }}<|eot_id|>{{ end }}"
    "{{- range .Messages }}<|start_header_id|>{{ .Role }}<|end_header_id|>\n\n{{ .Content }}<|eot_id|>{{ end }}"
    "<|start_header_id|>assistant<|end_header_id|>\n\n",
    ("<|eot_id|>", "<|start_header_id|>", "<|end_header_id|>"),
)

MISTRAL = TemplateFamily(
    "mistral",
    ("[INST]",),
    "{{- range $i, $m := .Messages }}{{- if eq $m.Role \"user\" }}[INST] "
    "{{ if and $.System (eq $i 0) }}{{ $.System }}\n\n{{ end }}{{ $m.Content }} [/INST]"
    "{{- else if eq $m.Role \"assistant\" }}{{ $m.Content }}</s>{{- end }}{{- end }}",
    ("[INST]", "[/INST]", "</s>"),
)

GEMMA = TemplateFamily(
    "gemma",
    ("<start_of_turn>",),
    "{{- range $i, $m := .Messages }}<start_of_turn>"
    "{{ if eq $m.Role \"assistant\" }}model{{ else }}user{{ end }}\n"
    "{{ if and $.System (eq $i 0) }}{{ $.System }}\n\n{{ end }}{{ $m.Content }}<end_of_turn>\n{{ end }}"
    "<start_of_turn>model\n",
    ("<end_of_turn>", "<start_of_turn>"),
)

PHI3 = TemplateFamily(
    "phi3",
    ("<|user|>", "<|end|>"),
    "{{- if .System }}<|system|>\n{{ .System }}<|end|>\n{{ end }}"
    "{{- range .Messages }}<|{{ .Role }}|>\n{{ .Content }}<|end|>\n{{ end }}"
    "<|assistant|>\n",
    ("<|end|>", "<|user|>", "<|assistant|>"),
)

FAMILIES = (CHATML, LLAMA3, MISTRAL, GEMMA, PHI3)


def family_of(chat_template: str | None) -> TemplateFamily:
    """Recognise a Jinja chat template's family by its special markers.

    Raises NotmeError for a missing or unknown template (Ollama needs one).
    """
    frame = frame_from_template(chat_template)
    if frame is not None:  # a base model's plain-text frame (models/frame.py)
        return TemplateFamily("plain", (), frame.ollama_template(), frame.ollama_stops)
    if not chat_template:
        raise NotmeError(
            "the tokenizer has no chat template; Ollama export needs one "
            "(add chat_template to tokenizer_config.json or export --to gguf)"
        )
    for fam in FAMILIES:
        if all(m in chat_template for m in fam.markers):
            return fam
    raise NotmeError(
        "unrecognised chat template family (supported: "
        + ", ".join(f.name for f in FAMILIES)
        + "); export --to gguf and write the Modelfile TEMPLATE by hand"
    )


def modelfile(gguf_name: str, chat_template: str | None, system: str | None = None,
              params: dict | None = None) -> str:
    """Return an Ollama Modelfile for `gguf_name` (relative path beside the Modelfile)."""
    fam = family_of(chat_template)
    lines = [f"FROM ./{gguf_name}", "", f'TEMPLATE """{fam.ollama_template}"""', ""]
    for s in fam.stops:
        lines.append(f'PARAMETER stop "{s}"')
    for k, v in (params or {}).items():
        lines.append(f"PARAMETER {k} {v}")
    if system:
        esc = system.replace('"""', '\\"\\"\\"')
        lines += ["", f'SYSTEM """{esc}"""']
    return "\n".join(lines) + "\n"
