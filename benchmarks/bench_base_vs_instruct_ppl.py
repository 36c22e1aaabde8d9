"""Perplexity of the person's held-out replies before/after a run's adapters: the eval's
`person_ppl` (teacher-forced, each reply after its context in the model's own frame), alone —
the cheap part of bench_base_vs_instruct.py, for when generation-based metrics do not fit the
machine's time.

    nice -n 5 .venv/bin/python benchmarks/bench_base_vs_instruct_ppl.py gemma3-270m /tmp/qs-g3/train/adapters --data /tmp/qs-g3/data
"""

from __future__ import annotations

import argparse
import json
import time

import notme_mlx  # noqa: F401  (first: the CPU BLAS shim loads before mlx.core)
from notme_mlx.eval.generation import reply_nll
from notme_mlx.eval.runner import _ppl, heldout_examples
from notme_mlx.lora import load_adapter
from notme_mlx.models import load_model
from notme_mlx.models.frame import describe_frame


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("adapters")
    ap.add_argument("--data", default="/tmp/qs-g3/data", help="data folder with test.jsonl")
    ap.add_argument("--n", type=int, default=8)
    a = ap.parse_args()
    ex = heldout_examples(a.data, a.n)
    m, tok, _ = load_model(a.model)
    t = time.time()
    before = _ppl(reply_nll(m, tok, ex), 0)
    load_adapter(m, a.adapters)
    after = _ppl(reply_nll(m, tok, ex), 0)
    print(json.dumps({"model": a.model, "frame": describe_frame(tok), "n": len(ex), "person_ppl_before": before,
                      "person_ppl_after": after, "seconds": round(time.time() - t, 1)}))


if __name__ == "__main__":
    main()
