"""Training metrics: metrics.jsonl, the live display, and the memory estimate.

metrics.jsonl has one JSON object per logged step:
    {"phase", "step", "loss", "ce", "ul", "lr", "grad_norm", "tokens", "tok_s",
     "peak_mem_gb", "pad_frac", "skipped"}
and one per validation: {"phase", "step", "val_loss", "val_ce", "val_ul"}.
`ce` is the mean CE per learn token, `ul` the mean unlikelihood per penalize
token (both over the whole accumulated batch); `loss` = ce + lambda * ul.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

import mlx.core as mx
from rich.live import Live
from rich.markup import escape

from .. import ui


class MetricsLog:
    """Append-only metrics.jsonl; on resume, lines after the resumed step are dropped."""

    def __init__(self, path: Path, resume_step: int | None = None, enabled: bool = True):
        self.path, self.enabled = Path(path), enabled
        if not enabled:  # non-zero ranks write nothing
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resume_step is not None and self.path.exists():
            keep = [ln for ln in self.path.read_text(encoding="utf-8").splitlines()
                    if ln.strip() and json.loads(ln).get("step", 0) <= resume_step]
            self.path.write_text("".join(ln + "\n" for ln in keep), encoding="utf-8")
        elif resume_step is None and self.path.exists():
            self.path.unlink()
        self._f = open(self.path, "a", encoding="utf-8")
        os.chmod(self.path, 0o600)

    def write(self, record: dict) -> None:
        if not self.enabled:
            return
        self._f.write(json.dumps(record) + "\n")
        self._f.flush()

    def close(self) -> None:
        if self.enabled:
            self._f.close()


def read_metrics(path: Path) -> list[dict]:
    """All records of a metrics.jsonl."""
    return [json.loads(ln) for ln in Path(path).read_text(encoding="utf-8").splitlines() if ln.strip()]


def peak_memory_gb() -> float:
    return mx.get_peak_memory() / 1e9


def _fmt_eta(seconds: float) -> str:
    if not math.isfinite(seconds):  # no step done yet (nan)
        return "?"
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class LiveDisplay:
    """Step/total, loss, CE, penalty, tok/s, ETA, memory: a rich live line on a TTY, plain
    log lines otherwise (every `every` steps). Rank 0 only (through notme_mlx.ui)."""

    def __init__(self, phase: str, total: int, start: int = 0, every: int = 1):
        self.phase, self.total, self.start, self.every = phase, total, start, every
        self.t0 = time.perf_counter()
        self.rich = ui.is_main() and ui.console.is_terminal and not os.environ.get("NOTME_PLAIN")
        self._live = None

    def __enter__(self):
        if self.rich:
            self._live = Live("", console=ui.console, refresh_per_second=4, transient=False)
            self._live.__enter__()
        return self

    def __exit__(self, *exc):
        if self._live is not None:
            self._live.__exit__(*exc)

    def line(self, m: dict) -> str:
        done = m["phase_step"] - self.start
        el = time.perf_counter() - self.t0
        eta = el / done * (self.total - m["phase_step"]) if done > 0 else float("nan")
        return (f"[{self.phase}] step {m['phase_step']}/{self.total}  loss {m['loss']:.4f}  "
                f"ce {m['ce']:.4f}  pen {m['ul']:.4f}  lr {m['lr']:.2e}  |g| {m['grad_norm']:.3f}  "
                f"{m['tok_s']:.0f} tok/s  ETA {_fmt_eta(eta)}  mem {m['peak_mem_gb']:.2f} GB"
                + (f"  skipped {m['skipped']}" if m.get("skipped") else ""))

    def update(self, m: dict) -> None:
        if not ui.is_main():
            return
        text = self.line(m)
        if self._live is not None:
            self._live.update(text)
        elif m["phase_step"] % self.every == 0 or m["phase_step"] == self.total:
            ui.plain(text)

    def message(self, text: str) -> None:
        if self._live is not None:
            self._live.console.print(escape(text))
        else:
            ui.info(escape(text))


# ----------------------------------------------------------------------------- memory


def available_memory_bytes() -> int:
    """Memory the run may use: Metal's recommended working set on a Mac, else MemAvailable."""
    try:
        if mx.metal.is_available():
            info = mx.metal.device_info()
            return int(info.get("max_recommended_working_set_size", info.get("memory_size", 0)))
    except Exception:  # noqa: BLE001 - old mlx without device_info
        pass
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def estimate_memory(model_bytes: int, lora_params: int, args, recipe) -> dict:
    """Rough peak bytes of one training step (checked before starting).

    weights (as loaded) + LoRA params x 4 (weights, grads, AdamW m and v; fp32) +
    activations of the blocks that carry LoRA (blocks below them need no backward): per
    micro-batch B x T tokens, each block keeps ~ (10 H + 3 I) floats per token plus the
    attention scores B x heads x T x T (one block's worth under grad_checkpoint, which keeps
    only each block's input), + the fused loss's chunk logits (N x chunk x 8 bytes).
    T is data.max_seq_len: the worst-case batch.

    Args:
        model_bytes: bytes of the loaded base weights; lora_params: trainable parameter count;
        args: the model's ModelArgs (hidden_size, intermediate_size, num_hidden_layers, ...).
    Returns:
        {"weights", "lora", "activations", "loss", "total"} in bytes.
    """
    H = getattr(args, "hidden_size", 0)
    inter = getattr(args, "intermediate_size", 4 * H)
    L = getattr(args, "num_hidden_layers", 1)
    L = min(recipe.lora.num_layers or L, L)
    heads = getattr(args, "num_attention_heads", 1)
    B, T = recipe.batch_size, recipe.data.max_seq_len
    per_layer = B * T * (10 * H + 3 * inter) * 4 + B * heads * T * T * 4
    act = per_layer * (1 if recipe.grad_checkpoint else L) + (B * T * H * 4 * L if recipe.grad_checkpoint else 0)
    vocab = getattr(args, "vocab_size", 0)
    loss = B * T * min(recipe.loss.chunk_size, max(vocab, 1)) * 8
    est = {"weights": int(model_bytes), "lora": int(lora_params * 16), "activations": int(act), "loss": int(loss)}
    est["total"] = sum(est.values())
    return est
