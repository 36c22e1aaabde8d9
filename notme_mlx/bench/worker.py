"""One benchmark run in its own process: `python -m notme_mlx.bench.worker SPEC.json OUT.json`.

SPEC = {"side": "ours" | "ours_penalty_off" | "mlx-lm", "model": dir, "dequantize": bool | null,
"base_dtype": "float32" | "float16" | "bfloat16" | "auto" (optional, ours only), "examples": JSONL of {"tokens", "labels"},
"settings": `runners.Settings` fields}. The worker loads the model the way `notme train` does
(`runners.load`; mlx-lm's side with float32 weights), trains with that side's trainer and
writes the run's summary plus what only the process itself can know: MLX peak memory of the
training (model weights included), peak memory while loading, max resident set size, CPU
seconds and wall seconds of the whole process. A fresh process per run means no side's
allocations, caches or compiled graphs leak into another side's figures.
"""

from __future__ import annotations

import dataclasses
import json
import resource
import sys
import time
from pathlib import Path

import mlx.core as mx
from mlx.utils import tree_flatten

from .. import cpu_kernels
from ..data.labels import TokenizedExample
from ..io import atomic_write_text, read_jsonl
from .runners import Settings, load, run_mlxlm, run_ours


def read_examples(path) -> list:
    """[TokenizedExample] from a JSONL of {"tokens", "labels"} (what `write_examples` writes)."""
    return [TokenizedExample(tokens=r["tokens"], labels=r["labels"]) for r in read_jsonl(path)]


def write_examples(path, examples) -> None:
    atomic_write_text(path, "".join(json.dumps({"tokens": list(e.tokens), "labels": list(e.labels)}) + "\n"
                                    for e in examples), mode=0o600)


def max_rss_bytes() -> int:
    """Peak resident set size of this process (ru_maxrss: KiB on Linux, bytes on macOS)."""
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(r if sys.platform == "darwin" else r * 1024)


def run_spec(spec: dict) -> dict:
    """Load, train one side, return the summary with the process-level figures."""
    wall0, cpu0 = time.perf_counter(), time.process_time()
    fields = {f.name for f in dataclasses.fields(Settings)}
    s = Settings(**{k: (tuple(v) if k == "targets" else v) for k, v in spec["settings"].items() if k in fields})
    examples = read_examples(spec["examples"])
    side = spec["side"]
    model, tok, info = load(spec["model"], spec.get("dequantize"),
                            "float32" if side == "mlx-lm" else spec.get("base_dtype") or "auto")
    load_s = time.perf_counter() - wall0
    load_peak = mx.get_peak_memory()
    if side == "mlx-lm":
        res = run_mlxlm(model, examples, s)
    else:
        if side == "ours_penalty_off":
            s = dataclasses.replace(s, penalty_weight=0.0)
        res = run_ours(model, examples, s, pad_id=tok.pad_token_id or 0)
    out = res.summary()
    out.update(side=side, load_s=load_s, load_peak_memory=int(load_peak), max_rss=max_rss_bytes(),
               process_cpu_s=time.process_time() - cpu0, process_wall_s=time.perf_counter() - wall0,
               quantized=any(k.endswith(".scales") for k in _param_names(model)),
               base_dtype=info.get("base_dtype"),  # None: not dequantized
               cpu_kernels=side != "mlx-lm" and any(cpu_kernels.supports(layer) for layer in
                                                    getattr(getattr(model, "model", model), "layers", [])))
    return out


def _param_names(model) -> list[str]:
    return [k for k, _ in tree_flatten(model.parameters())]


def main(argv: list[str]) -> int:
    spec_path, out_path = argv
    spec = json.loads(Path(spec_path).read_text(encoding="utf-8"))
    atomic_write_text(out_path, json.dumps(run_spec(spec)))
    return 0


if __name__ == "__main__":  # `python -m` imports the notme_mlx package first: the OpenBLAS shim is loaded
    sys.exit(main(sys.argv[1:]))
