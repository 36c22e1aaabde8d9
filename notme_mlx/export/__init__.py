"""Export a base model with its adapters fused: MLX/HF directory, GGUF, Ollama.

One entry, `export_model`, and one table of targets. Every export is built in a
temporary folder and renamed into place (nothing half-written), refuses an
existing output without `force`, and can verify itself (`verify=True`) by
reloading what it wrote and comparing next-token logits with the in-memory
fused model.
"""

from __future__ import annotations

import importlib.util
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import mlx.core as mx
import numpy as np
from mlx_lm import load

from ..errors import NotmeError
from ..io import atomic_dir
from ..lora import adapter_parameters, fuse, load_adapter, read_adapter_config
from ..models import load_model
from ..models.families import family_of
from ..models.frame import use_recorded_frame
from ..stack import load_stack_into
from .gguf_export import QUANTS, write_gguf, write_gguf_lora
from .hf import DTYPES, write_hf_dir
from .templates import family_of as template_family_of
from .templates import modelfile

TARGETS = ("mlx", "hf", "gguf", "ollama", "gguf-lora")
VERIFY_PROMPTS = (
    "The capital of France is",
    "Write one sentence about rivers.",
    "def add(a, b):\n    return",
    "I think the best way to learn is",
)


@dataclass
class ExportResult:
    out: Path
    target: str
    files: list[str]
    verify: dict | None = None
    tensor_types: dict = field(default_factory=dict)


def load_fused(model_spec: str, adapters=(), stack: str | None = None, force: bool = False):
    """Load `model_spec` dense, apply adapters (or a stack) and fuse them into the weights.

    Returns (model, tokenizer, info, layers) where `layers` describes what was fused.
    """
    model, tokenizer, info = load_model(model_spec, dequantize=True)
    family_of(getattr(model.args, "model_type", None), model_spec)  # one clear line when unsupported
    layers = []
    if stack:
        layers = load_stack_into(model, stack, base_info=info, force=force)
    for i, path in enumerate(adapters or ()):
        p = Path(path)
        if not (p / "adapters.safetensors").exists():
            raise NotmeError(f"{p}: no adapters.safetensors here (expected a folder written by notme train)")
        name = load_adapter(model, p, name=f"adapter{i}", trainable=False)
        layers.append({"name": name if isinstance(name, str) else f"adapter{i}", "path": str(p)})
    if layers:
        fuse(model)
    mx.eval(model.parameters())
    return model, tokenizer, info, layers


def _model_card(info: dict, layers: list, target: str, extra: dict | None) -> str:
    lines = [
        "---", "library_name: mlx", "tags: [mlx, notme-mlx, lora]", "---", "",
        "# Fused model exported by notme-mlx", "",
        f"- base: `{info.get('spec', info.get('path', '?'))}` (fingerprint `{str(info.get('fingerprint', '?'))[:16]}`)",
        f"- target: {target}", f"- exported: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}", "",
        "## Layers fused", "",
    ]
    lines += [f"- {l.get('layer', 'adapter')} `{l['name']}` from `{l['path']}` (scale {l.get('scale', 1.0)})"
              for l in layers] or ["- none (base weights only)"]
    for l in layers:
        cfg = Path(l["path"]) / "adapter_config.json"
        if cfg.exists():
            meta = json.loads(cfg.read_text())
            for k in ("recipe", "data", "eval"):
                if k in meta:
                    lines += ["", f"## {k.title()} ({l['name']})", "", "```json",
                              json.dumps(meta[k], indent=2)[:4000], "```"]
    for k, v in (extra or {}).items():
        lines += ["", f"## {k}", "", "```json", json.dumps(v, indent=2)[:4000], "```"]
    lines += ["", "Validation-seeking was trained as the only error; safety refusals were kept "
              "(safety-replay mix, refusal-retention eval)."]
    return "\n".join(lines) + "\n"


def _logits(model, tokenizer, prompts=VERIFY_PROMPTS) -> list[np.ndarray]:
    out = []
    for p in prompts:
        ids = mx.array([tokenizer.encode(p)])
        out.append(np.array(model(ids)[0, -1].astype(mx.float32)))
    return out


def mlx_greedy_ids(model, prompt_ids: list[int], n: int) -> list[int]:
    """Greedy continuation of `prompt_ids` for `n` tokens (no cache; short prompts only)."""
    ids = list(prompt_ids)
    for _ in range(n):
        ids.append(int(mx.argmax(model(mx.array([ids]))[0, -1]).item()))
    return ids[len(prompt_ids):]


def llama_cpp_greedy_ids(gguf_path: Path, prompt_ids: list[int], n: int) -> list[int]:
    """Greedy continuation in llama.cpp itself (needs the optional `[verify]` extra)."""
    from llama_cpp import Llama  # optional [verify] extra: compiled llama.cpp

    llm = Llama(model_path=str(gguf_path), n_ctx=512, verbose=False, seed=0, n_threads=2)
    out = []
    for tok in llm.generate(prompt_ids, temp=0.0, top_k=1, top_p=1.0, repeat_penalty=1.0, reset=True):
        out.append(int(tok))
        if len(out) == n:
            break
    return out


def llama_cpp_logits(gguf_path: Path, prompt_ids: list[int]) -> np.ndarray:
    """Logits at every position of `prompt_ids` computed by llama.cpp. Shape [T, V]."""
    from llama_cpp import Llama  # optional [verify] extra: compiled llama.cpp

    llm = Llama(model_path=str(gguf_path), n_ctx=512, logits_all=True, verbose=False, n_threads=2)
    llm.eval(prompt_ids)
    return np.array(llm.scores[: len(prompt_ids)])


def kl_divergence(ref_logits: np.ndarray, got_logits: np.ndarray) -> np.ndarray:
    """KL(softmax(ref) || softmax(got)) per row, in nats. [T, V] x2 -> [T]."""
    a = ref_logits.astype(np.float64)
    b = got_logits.astype(np.float64)
    la = a - a.max(-1, keepdims=True)
    la -= np.log(np.exp(la).sum(-1, keepdims=True))
    lb = b - b.max(-1, keepdims=True)
    lb -= np.log(np.exp(lb).sum(-1, keepdims=True))
    return (np.exp(la) * (la - lb)).sum(-1)


def verify_llama_cpp(model, tokenizer, gguf_path: Path, n_tokens: int = 16) -> dict | None:
    """Compare MLX and llama.cpp: logits on every prompt position and greedy continuations.

    Returns None when llama_cpp (the `[verify]` extra) is not installed; else
    {"logits_max_abs_diff", "position_top1_agreement", "kl_mean", "kl_max" (nats, MLX || llama.cpp),
    "prompts": greedy continuations of both, "all_match"}.
    """
    if importlib.util.find_spec("llama_cpp") is None:
        return None
    max_diff, agree, kls = 0.0, [], []
    for p in VERIFY_PROMPTS:
        ids = tokenizer.encode(p)
        ref = np.array(model(mx.array([ids]))[0].astype(mx.float32))
        got = llama_cpp_logits(gguf_path, ids)
        max_diff = max(max_diff, float(np.abs(got - ref).max()))
        agree.extend((got.argmax(-1) == ref.argmax(-1)).tolist())
        kls.extend(kl_divergence(ref, got).tolist())
    rows = []
    for p in VERIFY_PROMPTS:
        ids = tokenizer.encode(p)
        a, b = mlx_greedy_ids(model, ids, n_tokens), llama_cpp_greedy_ids(gguf_path, ids, n_tokens)
        same = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
        rows.append({"prompt": p, "mlx": a, "llama_cpp": b, "matching_prefix": same})
    return {"n_tokens": n_tokens, "prompts": rows, "logits_max_abs_diff": max_diff,
            "position_top1_agreement": sum(agree) / len(agree),
            "kl_mean": float(np.mean(kls)), "kl_max": float(np.max(kls)),
            "all_match": all(r["matching_prefix"] >= n_tokens for r in rows)}


def verify_export(model, tokenizer, target: str, path: Path) -> dict:
    """Reload the export and compare next-token logits on fixed prompts.

    Returns {"max_abs_diff", "top1_agreement", "n_prompts", "loader"}.
    """
    if target in ("mlx", "hf"):
        m2, t2 = load(str(path))
        loader = "mlx_lm.load"
    else:
        gg = path if path.suffix == ".gguf" else next(path.glob("*.gguf"))
        m2, t2, _ = load_model(str(gg), dequantize=True)
        loader = "notme_mlx.models.load_model (GGUF)"
    ref, got = _logits(model, tokenizer), _logits(m2, t2)
    diffs = [float(np.max(np.abs(a - b))) for a, b in zip(ref, got)]
    top1 = [int(np.argmax(a) == np.argmax(b)) for a, b in zip(ref, got)]
    ids_same = all(tokenizer.encode(p) == t2.encode(p) for p in VERIFY_PROMPTS)
    res = {"max_abs_diff": max(diffs), "top1_agreement": sum(top1) / len(top1),
           "n_prompts": len(top1), "loader": loader, "tokenizer_ids_identical": ids_same}
    if target in ("gguf", "ollama"):
        res["llama_cpp"] = verify_llama_cpp(model, tokenizer, gg)
    return res


def _export_lora(model_spec: str, out: Path, adapters, force: bool) -> ExportResult:
    """One adapter as a llama.cpp GGUF LoRA (`llama-cli -m base.gguf --lora adapter.gguf`)."""
    if len(adapters or ()) != 1:
        raise NotmeError("--to gguf-lora exports exactly one adapter folder (--adapters DIR)")
    model, _, _ = load_model(model_spec, dequantize=True)
    family_of(getattr(model.args, "model_type", None), model_spec)
    name = load_adapter(model, adapters[0], name="export")
    cfg = read_adapter_config(adapters[0])["lora_parameters"]
    weights = adapter_parameters(model, name)
    with atomic_dir(out, force=force) as tmp:
        n = write_gguf_lora(tmp / "adapter.gguf", model, weights, int(cfg["rank"]), float(cfg["scale"]))
    return ExportResult(out, "gguf-lora", ["adapter.gguf"], tensor_types={"modules": n})


def export_model(model_spec: str, out: str | Path, to: str = "mlx", adapters=(), stack: str | None = None,
                 dtype: str = "float16", quant: str = "f16", system: str | None = None,
                 force: bool = False, verify: bool = False, card_extra: dict | None = None) -> ExportResult:
    """Fuse adapters into `model_spec` and write it as `to` into `out`.

    Args:
      to: mlx | hf (a safetensors directory, loadable by mlx_lm and transformers),
          gguf (a single .gguf in `out`), ollama (the GGUF + a Modelfile).
      dtype: float16 | bfloat16 | float32 for mlx/hf; quant: f32 | f16 | q8_0 | q4_0 for gguf.
    Any family of `notme_mlx.models.families`; others are refused in one line.
    """
    if to not in TARGETS:
        raise NotmeError(f"--to {to!r}: expected one of {', '.join(TARGETS)}")
    if dtype not in DTYPES:
        raise NotmeError(f"--dtype {dtype!r}: expected one of {', '.join(DTYPES)}")
    if quant not in QUANTS:
        raise NotmeError(f"--quant {quant!r}: expected one of {', '.join(QUANTS)}")
    out = Path(out)
    if out.exists() and not force:
        raise NotmeError(f"{out}: already exists (use --force to replace it)")
    if to == "gguf-lora":
        return _export_lora(model_spec, out, adapters, force)
    model, tokenizer, info, layers = load_fused(model_spec, adapters, stack, force=force)
    hf_tok = getattr(tokenizer, "_tokenizer", tokenizer)
    frame = use_recorded_frame(tokenizer, list(adapters or ()))  # the names the adapter was trained with
    if frame is not None:  # a base model: the plain-text frame it was trained in becomes its chat template
        hf_tok.chat_template = frame.jinja_template()
    if to == "ollama":
        template_family_of(getattr(hf_tok, "chat_template", None))  # fail before writing anything
    types = {}
    with atomic_dir(out, force=force) as tmp:
        if to in ("mlx", "hf"):
            write_hf_dir(tmp, model, tokenizer, dtype=dtype)
        else:
            name = "model.gguf"
            types = write_gguf(tmp / name, model, tokenizer, quant=quant,
                               tokenizer_pre=info.get("tokenizer_pre"))
            if to == "ollama":
                (tmp / "Modelfile").write_text(modelfile(name, hf_tok.chat_template, system))
        (tmp / "README.md").write_text(_model_card(info, layers, to, card_extra))
        result = ExportResult(out, to, sorted(p.name for p in tmp.iterdir()), tensor_types=types)
        if verify:
            result.verify = verify_export(model, tokenizer, to, tmp)
            (tmp / "verify.json").write_text(json.dumps(result.verify, indent=2))
            result.files = sorted(p.name for p in tmp.iterdir())
    result.out = out
    return result


def quickstart_export(model_spec: str, adapter_dir, out) -> list[str]:
    """The quickstart's export step: the adapter fused into an Ollama-ready GGUF (Q8_0) with a
    Modelfile, verified by reloading. Returns the written paths."""
    res = export_model(model_spec, out, to="ollama", adapters=[adapter_dir], quant="q8_0", force=True, verify=True)
    return [str(Path(out) / f) for f in res.files]
