"""Shared helpers for the end-to-end benchmarks that drive the `notme` CLI step by step
(bench_synth_e2e.py, bench_five_layer.py): find the console script, run one logged step, skip
a step whose output exists (so an interrupted run resumes), read a report's metrics."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path


def notme_exe() -> list[str]:
    """The `notme` console script installed beside this Python (exits with a clear line if missing)."""
    exe = Path(sys.executable).parent / "notme"
    if not exe.exists():
        sys.exit(f"{exe}: not found; run with the project's .venv/bin/python after `make setup`")
    return [str(exe)]


def sh(cmd: list[str], log: Path, cwd: Path | None = None) -> float:
    """Run `cmd` with stdout/stderr appended to `log`; exit on failure. Returns seconds taken."""
    line = " ".join(shlex.quote(str(c)) for c in cmd)
    print("$", line, flush=True)
    t = time.perf_counter()
    with open(log, "a") as f:
        f.write(f"\n[{time.strftime('%Y-%m-%d %H:%M:%S')}] $ {line}\n")
        f.flush()
        r = subprocess.run([str(c) for c in cmd], stdout=f, stderr=subprocess.STDOUT, cwd=cwd or log.parent)
    if r.returncode != 0:
        sys.exit(f"failed ({r.returncode}): {line}; see {log}")
    return round(time.perf_counter() - t, 1)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def step(done: Path, cmd: list[str], log: Path, times: dict, key: str, cwd: Path | None = None) -> bool:
    """Run `cmd` unless `done` exists; record its time under `key`. Returns True when it ran.

    While it runs, `<log folder>/<key>.pid` holds the runner's pid: a second runner on the same
    state folder waits for a live one to finish instead of starting the same step twice."""
    marker = log.parent / f"{key}.pid"
    while marker.exists() and not done.exists():
        try:
            pid = int(marker.read_text().strip() or 0)
        except (OSError, ValueError):
            pid = 0
        if not pid or pid == os.getpid() or not _alive(pid):
            break
        time.sleep(15)
    if done.exists():
        return False
    marker.write_text(str(os.getpid()))
    try:
        times[key] = sh(cmd, log, cwd)
    finally:
        marker.unlink(missing_ok=True)
    return True


def report_metrics(report_dir: Path) -> dict:
    """The evaluated model's metrics dict from a `notme eval` report folder."""
    rep = json.loads((Path(report_dir) / "report.json").read_text())
    return rep.get("model", rep).get("metrics", {})
