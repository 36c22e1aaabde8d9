"""`make bench`: the standard suite, sized for a 2-core CPU (< 15 min there).

1. notme vs mlx-lm on chat-like synthetic data (bench-s, batch 4, seq 256, 3 alternating repeats);
2. the same on equal-length rows (seq 128, all tokens learned: the core step alone);
3. feature costs (bench_features.py); 4. MFU (bench_mfu.py).
Prints Markdown; writes the raw results to benchmarks/results/bench.json (or --json).

    python benchmarks/run_all.py [--json benchmarks/results/bench.json] [--skip features,mfu]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))

import bench_features  # noqa: E402
import bench_mfu  # noqa: E402
import bench_vs_mlxlm  # noqa: E402

from notme_mlx.bench.report import compare_table, feature_table, machine_line, mfu_table  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", default=str(HERE / "results" / "bench.json"))
    ap.add_argument("--skip", default="", help="comma list of: chat,equal,features,mfu")
    a = ap.parse_args()
    skip = set(filter(None, a.skip.split(",")))
    out, t0 = {}, time.perf_counter()

    def stamp(what):
        print(f"[{time.perf_counter() - t0:.0f} s] {what}", file=sys.stderr, flush=True)
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)  # partial results survive an interrupted run
        Path(a.json).write_text(json.dumps(out, indent=2, default=str))

    if "chat" not in skip:
        stamp("notme vs mlx-lm, chat-like data")
        out["chat"] = bench_vs_mlxlm.run(model="bench-s", steps=4, warmup=1, repeat=3, batch=4, seq=256)
    if "equal" not in skip:
        stamp("notme vs mlx-lm, equal-length rows")
        out["equal_length"] = bench_vs_mlxlm.run(model="bench-s", steps=3, warmup=1, repeat=3, batch=4, seq=128, equal_length=True)
    if "features" not in skip:
        stamp("feature costs")
        out["features"] = bench_features.run(steps=3, warmup=1, repeat=2)
    if "mfu" not in skip:
        stamp("MFU")
        out["mfu"] = bench_mfu.run(steps=3, warmup=1)
    out["total_s"] = time.perf_counter() - t0
    stamp("done")
    m = (out.get("chat") or out.get("equal_length") or {}).get("machine")
    if m:
        print(machine_line(m) + "\n")
    for key, title in (("chat", "notme vs mlx-lm: chat-like data, penalty on"),
                       ("equal_length", "notme vs mlx-lm: equal-length rows")):
        if key in out:
            d = out[key]["data"]
            print(f"## {title}\n\n{d['examples']} examples, {d['tokens']} tokens, penalize share of supervised "
                  f"{d['penalize_share_of_supervised']:.1%}\n\n{compare_table(out[key])}\n")
    if "features" in out:
        print(f"## Feature costs\n\n{feature_table(out['features'])}\n")
    if "mfu" in out:
        print(f"## MFU\n\n{mfu_table(out['mfu'])}\n")
    print(f"total {out['total_s']:.0f} s")


if __name__ == "__main__":
    main()
