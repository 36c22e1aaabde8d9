"""Throughput of `notme detect` and `notme data build` on N synthetic Message records.

    .venv/bin/python benchmarks/bench_detect_data.py --n 100000 --engine both

Messages are generated deterministically from our labelled detector sentences and the bundled
sample conversations (1-4 sentences each, mirror chats and AI chats, 50 messages per
conversation, a 2-hour gap every 12 messages). Prints messages/s for: the detector alone
(library), the `notme detect` CLI (JSONL in, JSONL out to /dev/null) and `notme data build`
(CLI, estimated token lengths; optionally `--model DIR` for tokenizer lengths), all with the
detector engine given by `--engine` (lexicon, learned or both).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import notme_mlx  # noqa: E402,F401  (before numpy-heavy work: the BLAS shim)
from notme_mlx.data.labels import tokenize_example  # noqa: E402
from notme_mlx.data.stats import load_tokenizer  # noqa: E402
from notme_mlx.detect import get_detector  # noqa: E402
from notme_mlx.detect.parallel import detect_many  # noqa: E402
from notme_mlx.io import read_jsonl  # noqa: E402


def pool(negatives_only: bool = False) -> list[str]:
    out = [json.loads(x)["text"] for f in ("detector_eval.jsonl", "detector_heldout.jsonl", "detector_samples.jsonl")
           for x in (ROOT / "tests" / "data" / f).read_text(encoding="utf-8").splitlines()
           if not (negatives_only and json.loads(x)["categories"])]
    return [t for t in out if "```" not in t]


def make_messages(n: int, seed: int = 0, negatives_only: bool = False):
    rng = random.Random(seed)
    sents = pool(negatives_only)
    per_conv = 50
    for c in range((n + per_conv - 1) // per_conv):
        ai = c % 2 == 1
        src = "chatgpt" if ai else "whatsapp"
        t = 1_700_000_000 + c * 86400
        for i in range(min(per_conv, n - c * per_conv)):
            t += 7200 if i % 12 == 11 else rng.randint(10, 300)
            role = ("me" if i % 2 == 0 else "ai") if ai else rng.choice(["me", "other"])
            text = " ".join(rng.choice(sents) for _ in range(rng.randint(1, 4)))
            yield {"source": src, "conversation_id": f"{src}-{c:06d}", "message_id": f"{c}-{i}", "parent_id": None,
                   "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t)),
                   "speaker": {"me": "Alex", "ai": "ChatGPT", "other": "Sam"}[role], "role": role,
                   "text": f"{text} ({c}.{i})", "kind": "text"}


def lib_rate(engine: str, n: int) -> float:
    """Messages/s of the library detector (`detect_many`, 1 process) on n messages."""
    texts = [m["text"] for m in make_messages(n)]
    det = get_detector(engine)
    detect_many(det, texts[:200], workers=1)  # load weights, warm caches
    t0 = time.perf_counter()
    detect_many(det, texts, workers=1)
    return n / (time.perf_counter() - t0)


def interleaved(rounds: int, n: int) -> None:
    """lexicon vs both, alternating, each run in its own process: medians and their ratio
    (robust to the load of a shared machine drifting between runs)."""
    rates: dict = {"lexicon": [], "both": []}
    for _ in range(rounds):
        for eng in ("lexicon", "both"):
            out = subprocess.run([sys.executable, __file__, "--lib-only", eng, "--n", str(n)], check=True,
                                 capture_output=True, text=True).stdout
            rates[eng].append(float(out.split()[-1]))
    med = {k: sorted(v)[len(v) // 2] for k, v in rates.items()}
    print(f"interleaved, {rounds} rounds x {n:,} messages, library detect_many, 1 process each:")
    for k, v in rates.items():
        print(f"  {k}: median {med[k]:,.0f} msg/s (runs: {', '.join(f'{x:,.0f}' for x in v)})")
    print(f"  both / lexicon throughput ratio: {med['both'] / med['lexicon']:.2f}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--model", default=None, help="tokenizer dir for token-exact lengths in data build")
    ap.add_argument("--workers", type=int, default=1, help="detector processes for the two CLI runs")
    ap.add_argument("--engine", default="both", choices=["lexicon", "learned", "both"])
    ap.add_argument("--interleave", type=int, default=0, metavar="ROUNDS",
                    help="only compare lexicon vs both library throughput, alternating processes")
    ap.add_argument("--lib-only", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.lib_only:
        print(f"{lib_rate(args.lib_only, args.n):.1f}")
        return
    if args.interleave:
        interleaved(args.interleave, args.n)
        return

    with tempfile.TemporaryDirectory() as td:
        src = Path(td) / "messages.jsonl"
        msgs = list(make_messages(args.n))
        src.write_text("".join(json.dumps(m, ensure_ascii=False) + "\n" for m in msgs), encoding="utf-8")
        det = get_detector(args.engine)
        t0 = time.perf_counter()
        flagged = sum(d.flagged for d in detect_many(det, [m["text"] for m in msgs], workers=1))
        dt_lib = time.perf_counter() - t0
        clean = [m["text"] for m in make_messages(min(args.n, 20_000), negatives_only=True)]
        t0 = time.perf_counter()
        detect_many(det, clean, workers=1)
        dt_clean = time.perf_counter() - t0
        notme = [str(Path(sys.executable).parent / "notme")]
        env = dict(os.environ)
        t0 = time.perf_counter()
        with open(os.devnull, "w") as devnull:
            subprocess.run(notme + ["detect", str(src), "--workers", str(args.workers), "--engine", args.engine],
                           check=True, stdout=devnull, env=env)
        dt_cli = time.perf_counter() - t0
        cmd = notme + ["data", "build", str(src), "-o", str(Path(td) / "data"), "--workers", str(args.workers),
                       "--engine", args.engine]
        if args.model:
            cmd += ["--model", args.model]
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, env=env)
        dt_build = time.perf_counter() - t0
        rep = json.loads((Path(td) / "data" / "build_report.json").read_text())
        lab = None
        if args.model:
            tok = load_tokenizer(args.model)
            exs = [e for _, e in zip(range(2000), read_jsonl(Path(td) / "data" / "train.jsonl"))]
            t0 = time.perf_counter()
            n_tok = sum(len(tokenize_example(tok, e, 2048).tokens) for e in exs)
            lab = (len(exs), n_tok, time.perf_counter() - t0)
    n = len(msgs)
    print(f"engine: {args.engine}  messages: {n:,}  flagged: {flagged:,} ({flagged / n:.1%})")
    print("| step | seconds | messages/s |\n|---|---:|---:|")
    print(f"| detector `{args.engine}` (library, 1 process, detect_many) | {dt_lib:.1f} | {n / dt_lib:,.0f} |")
    print(f"| detector (library) on text without cues ({len(clean):,} msgs) | {dt_clean:.1f} | "
          f"{len(clean) / dt_clean:,.0f} |")
    print(f"| `notme detect FILE --workers {args.workers}` (CLI, incl. startup + JSON out) | {dt_cli:.1f} | {n / dt_cli:,.0f} |")
    print(f"| `notme data build --workers {args.workers}` (CLI{', --model' if args.model else ''}) | {dt_build:.1f} | {n / dt_build:,.0f} |")
    if lab:
        print(f"| `tokenize_example` ({lab[0]:,} train examples, {lab[1]:,} tokens) | {lab[2]:.1f} | "
              f"{lab[0] / lab[2]:,.0f} examples/s, {lab[1] / lab[2]:,.0f} tokens/s |")
    print("build counts:", json.dumps({k: rep["counts"][k] for k in sorted(rep["counts"])}))
    print("splits:", json.dumps({k: v["examples"] for k, v in rep["splits"].items()}), "pairs:", rep["pairs"])


if __name__ == "__main__":
    main()
