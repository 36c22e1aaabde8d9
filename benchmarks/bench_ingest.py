"""Ingest throughput and memory: a generated 50 MB WhatsApp .txt and a 100 MB ChatGPT export.

Run: nice -n 5 .venv/bin/python benchmarks/bench_ingest.py [--wa-mb 50] [--gpt-mb 100] [--tmp /tmp/notme-bench]
Files are generated into --tmp (never committed). Each case runs `ingest_to_file` with record-level
recovery on (skip_bad=True, as `notme ingest --skip-bad`) in a fresh child process and reports MB/s
of input and the child's peak RSS.

--baseline DIR: also time the notme_mlx found in DIR (e.g. a `git worktree` of an older commit),
alternating runs with this checkout, each in its own process, and print the speed ratio: on a shared
machine only ratios measured side by side mean much.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import subprocess
import sys
import time
from pathlib import Path

from notme_mlx.ingest import ingest_to_file

WORDS = ("the rain garden drains within a day so mosquitoes never breed there and the plants do the work "
         "climbing tonight bring the rope coffee for three sorry is that ok does that make sense").split()


def _sentence(rng, lo=3, hi=25):
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(lo, hi)))


def gen_whatsapp(path: Path, mb: float, seed=0):
    rng = random.Random(seed)
    target = int(mb * 1e6)
    names = ["Alex Rivera", "Jordan Lee", "Priya Nair"]
    t, n = 1_700_000_000, 0
    with open(path, "w", encoding="utf-8") as f:
        while f.tell() < target:
            t += rng.randint(5, 900)
            tm = time.gmtime(t)
            body = _sentence(rng)
            if rng.random() < 0.1:
                body += "\n" + _sentence(rng)
            f.write(f"{tm.tm_mday:02d}/{tm.tm_mon:02d}/{tm.tm_year}, {tm.tm_hour:02d}:{tm.tm_min:02d} - "
                    f"{rng.choice(names)}: {body}\n")
            n += 1
    return n


def gen_chatgpt(path: Path, mb: float, seed=0):
    rng = random.Random(seed)
    target = int(mb * 1e6)
    n = 0
    with open(path, "w", encoding="utf-8") as f:
        f.write("[")
        while f.tell() < target:
            cid = f"conv-{n}"
            mapping, prev = {"root": {"id": "root", "message": None, "parent": None, "children": []}}, "root"
            for i in range(rng.randint(4, 40)):
                mid = f"{cid}-m{i}"
                role = "user" if i % 2 == 0 else "assistant"
                mapping[mid] = {"id": mid, "parent": prev, "children": [], "message": {
                    "id": mid, "author": {"role": role, "name": None, "metadata": {}},
                    "create_time": 1.7e9 + n * 1000 + i, "content": {"content_type": "text",
                    "parts": ["\n".join(_sentence(rng, 5, 60) for _ in range(rng.randint(1, 4)))]},
                    "status": "finished_successfully", "metadata": {}, "recipient": "all"}}
                mapping[prev]["children"].append(mid)
                prev = mid
            f.write(("," if n else "") + json.dumps({"title": cid, "create_time": 1.7e9, "mapping": mapping,
                                                       "current_node": prev, "id": cid}))
            n += 1
        f.write("]")
    return n


def run_case(path: str, out: str, me: str, recover: bool = True):
    t0, c0 = time.perf_counter(), time.process_time()
    rep = ingest_to_file([path], out, me=[me], progress=True, skip_bad=recover)
    dt, cpu = time.perf_counter() - t0, time.process_time() - c0
    size = os.path.getsize(path)
    print(json.dumps({"bytes": size, "seconds": dt, "mb_s": size / 1e6 / dt, "cpu_s": cpu, "mb_per_cpu_s": size / 1e6 / cpu,
                      "messages": rep.messages, "skipped_records": rep.records_skipped,
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--wa-mb", type=float, default=50)
    ap.add_argument("--gpt-mb", type=float, default=100)
    ap.add_argument("--tmp", default="/tmp/notme-bench")
    ap.add_argument("--repeat", type=int, default=3, help="runs per case; the table shows the median")
    ap.add_argument("--baseline", help="a folder holding another notme_mlx to time side by side (see module doc)")
    ap.add_argument("--case", nargs=4, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.case:
        return run_case(*a.case[:3], recover=a.case[3] == "1")
    tmp = Path(a.tmp)
    tmp.mkdir(parents=True, exist_ok=True)
    wa, gpt = tmp / "whatsapp_chat.txt", tmp / "conversations.json"
    if not wa.exists() or abs(wa.stat().st_size - a.wa_mb * 1e6) > 1e6:
        print(f"generating {wa} ...", file=sys.stderr)
        gen_whatsapp(wa, a.wa_mb)
    if not gpt.exists() or abs(gpt.stat().st_size - a.gpt_mb * 1e6) > 2e6:
        print(f"generating {gpt} ...", file=sys.stderr)
        gen_chatgpt(gpt, a.gpt_mb)
    rows = []
    for name, path in [("whatsapp", wa), ("chatgpt", gpt)]:
        runs, base = [], []
        for _ in range(a.repeat):
            runs.append(_child(name, path, tmp, None))
            if a.baseline:
                base.append(_child(name, path, tmp, a.baseline))
        if base:
            for key in ("seconds", "cpu_s"):
                ratio = sorted(b[key] / r[key] for r, b in zip(runs, base))
                print(f"{name}: this checkout vs baseline, {key} ratio per pair (>1 = this checkout faster): "
                      f"{', '.join(f'{x:.2f}' for x in ratio)}; median {ratio[len(ratio) // 2]:.2f}")
            print(f"{name}: baseline peak RSS {max(b['peak_rss_mb'] for b in base):.0f} MB")
        runs.sort(key=lambda x: x["mb_s"])
        med = dict(runs[len(runs) // 2])
        med.update(case=name, mb_s_min=runs[0]["mb_s"], mb_s_max=runs[-1]["mb_s"],
                   peak_rss_mb=max(x["peak_rss_mb"] for x in runs))
        rows.append(med)
    print(f"\npython {platform.python_version()} on {platform.machine()} {platform.system()}")
    print(f"| input | size (MB) | messages | seconds (median of {a.repeat}) | MB/s median (min-max) | "
          f"MB per CPU-second | peak RSS (MB) |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['case']} | {r['bytes'] / 1e6:.1f} | {r['messages']:,} | {r['seconds']:.1f} | "
              f"{r['mb_s']:.1f} ({r['mb_s_min']:.1f}-{r['mb_s_max']:.1f}) | {r['mb_per_cpu_s']:.1f} | "
              f"{r['peak_rss_mb']:.0f} |")


def _child(name: str, path: Path, tmp: Path, baseline: str | None) -> dict:
    """One timed ingest in a fresh process (this checkout, or the notme_mlx under `baseline`)."""
    env = {**os.environ, "NOTME_PLAIN": "1"}
    cmd = [sys.executable, __file__, "--case", str(path), str(tmp / f"{name}.jsonl"), "Alex Rivera", "1"]
    if baseline:  # the old code has no recovery switch; its script runs its own ingest_to_file
        env["PYTHONPATH"] = baseline
        cmd = [sys.executable, "-c", "import json,os,resource,sys,time\n"
               "from notme_mlx.ingest import ingest_to_file\n"
               "t,c=time.perf_counter(),time.process_time()\n"
               "r=ingest_to_file([sys.argv[1]], sys.argv[2], me=[sys.argv[3]], progress=True)\n"
               "dt,cpu=time.perf_counter()-t,time.process_time()-c; n=os.path.getsize(sys.argv[1])\n"
               "print(json.dumps({'bytes': n, 'seconds': dt, 'mb_s': n/1e6/dt, 'cpu_s': cpu, 'mb_per_cpu_s': n/1e6/cpu,"
               " 'messages': r.messages, 'peak_rss_mb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss/1024}))",
               str(path), str(tmp / f"{name}.base.jsonl"), "Alex Rivera"]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
    res = json.loads(r.stdout.strip().splitlines()[-1])
    res["progress_lines"] = sum("ingest:" in x for x in r.stderr.splitlines())
    print(json.dumps({"case": name, "code": baseline or "this checkout", **res}), flush=True)
    return res


if __name__ == "__main__":
    main()
