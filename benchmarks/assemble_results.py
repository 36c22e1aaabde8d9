"""Assemble benchmarks/RESULTS.md from the per-area files in benchmarks/results/.

    .venv/bin/python benchmarks/assemble_results.py
"""

from __future__ import annotations

import platform
import subprocess
from pathlib import Path

ORDER = ["bench", "train", "loss", "stack", "models", "ingest", "detect_data", "eval", "export", "cluster", "synth"]
HERE = Path(__file__).resolve().parent


def machine() -> str:
    try:
        cpu = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
    except (OSError, StopIteration):
        cpu = platform.processor() or "unknown"
    try:
        import mlx.core as mx
        import mlx_lm

        versions = f"mlx {mx.__version__}, mlx-lm {mlx_lm.__version__}"
    except ImportError:
        versions = "mlx not installed"
    mem = ""
    try:
        mem = subprocess.run(["free", "-g"], capture_output=True, text=True).stdout.split("\n")[1].split()[1] + " GiB"
    except Exception:
        pass
    return (f"{cpu}, {subprocess.run(['nproc'], capture_output=True, text=True).stdout.strip()} cores, {mem}, "
            f"{platform.system()} {platform.release()}, Python {platform.python_version()}, {versions}")


def main():
    parts = ["# Benchmark results", "",
             "Every section names its machine, versions, date and exact command. Ratios are measured side by side "
             "in one run. These CPU numbers come from the Linux `mlx[cpu]` wheel on a 2-core machine, most of them with "
             "the wheel's reference BLAS (one core) while the machine was shared with other jobs; sections that say "
             "so were taken with notme's OpenBLAS shim (section 'Linux CPU BLAS', ~15-35x faster GEMM-bound work). "
             "Compare ratios and CPU-second figures within a section, not absolute times across sections; a Mac with Metal is much faster. No GPU machine was lent to this task, so there is "
             "no MLX CUDA run.", "", f"Machine (this file assembled on): {machine()}", ""]
    files = {p.stem: p for p in (HERE / "results").glob("*.md")}
    for name in ORDER + sorted(set(files) - set(ORDER)):
        if name in files:
            text = files[name].read_text(encoding="utf-8").strip()
            lines, fence = [], False
            top = min((len(l) - len(l.lstrip("#")) for l in text.splitlines() if l.startswith("#")), default=2)
            for line in text.splitlines():  # each file becomes one "##" section with deeper subsections
                if line.startswith("```"):
                    fence = not fence
                if not fence and line.startswith("#"):
                    level = len(line) - len(line.lstrip("#"))
                    line = "#" * (level - top + 2) + line[level:]
                lines.append(line)
            parts += ["", "\n".join(lines), ""]
    (HERE / "RESULTS.md").write_text("\n".join(parts).rstrip() + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
