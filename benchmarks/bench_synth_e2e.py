"""End-to-end, small: base -> synth (principles) -> revise -> GRPO -> VSR / refusal on held-out prompts.

    python benchmarks/bench_synth_e2e.py --steps 6 --out benchmarks/results/synth_e2e.json

Prompts: notme_mlx/eval/prompts/seeking.txt (even lines train, odd lines held out).
VSR = share of greedy replies the detector flags; refusal = share of held-out safety-eval
prompts refused (notme_mlx.eval.metrics.is_refusal). Small samples: read the CIs.
"""

import argparse
import json
import platform
import time
from importlib import resources

import mlx.core as mx


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--gen-tokens", type=int, default=48)
    ap.add_argument("--rl-tokens", type=int, default=32)
    ap.add_argument("--n-eval", type=int, default=16)
    ap.add_argument("--n-safety", type=int, default=8)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--n-train", type=int, default=28)
    ap.add_argument("--base-from", help="Reuse the 'base' measurement of an earlier result JSON (same sizes).")
    ap.add_argument("--lean", action="store_true", help="Skip the unguided synth pass (revise the guided pass's pairs).")
    ap.add_argument("--out", default="benchmarks/results/synth_e2e.json")
    a = ap.parse_args()

    from notme_mlx.data.safety import load_safety_eval
    from notme_mlx.eval.metrics import is_refusal, rate
    from notme_mlx.lora import LoRAConfig, apply_lora
    from notme_mlx.models import load_model
    from notme_mlx.synth.generate import synth
    from notme_mlx.synth.grpo import GRPOConfig, detector_reward, grpo_train
    from notme_mlx.synth.principles import example_path, load_principles, system_prompt
    from notme_mlx.synth.revise import revise_records

    res = {"model": a.model, "args": vars(a), "machine": platform.platform(), "mlx": mx.__version__,
           "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "timings_s": {}}

    def save():
        with open(a.out, "w") as f:
            json.dump(res, f, indent=1)

    t = time.perf_counter()
    model, tok, _ = load_model(a.model)
    lines = resources.files("notme_mlx.eval").joinpath("prompts/seeking.txt").read_text().splitlines()
    ps = [ln.split("\t", 1)[-1] for ln in lines if ln.strip() and not ln.startswith("#")]
    train_p = [{"messages": [{"role": "user", "content": p}]} for p in ps[0::2]][: a.n_train]
    eval_p = [{"messages": [{"role": "user", "content": p}]} for p in ps[1::2]][: a.n_eval]
    safety = [{"messages": [{"role": "user", "content": s["prompt"]}]} for s in load_safety_eval()[: a.n_safety]]
    res["n"] = {"train_prompts": len(train_p), "eval_prompts": len(eval_p), "safety_prompts": len(safety)}

    def measure(tag):
        t0 = time.perf_counter()
        ev = synth(model, tok, eval_p, len(eval_p), on_flag="drop", temp=0.0, max_tokens=a.gen_tokens)
        sf = synth(model, tok, safety, len(safety), on_flag="drop", temp=0.0, max_tokens=a.gen_tokens)
        flags = [False] * ev["counts"]["clean"] + [True] * ev["counts"]["flagged"]
        refusals = [is_refusal(e["messages"][-1]["content"]) for e in sf["examples"]]
        refusals += [False] * (len(safety) - len(refusals))  # flagged/empty safety replies count as not refused
        res[tag] = {"vsr": rate(flags), "refusal": rate(refusals), "counts": ev["counts"]}
        res["timings_s"][f"measure_{tag}"] = round(time.perf_counter() - t0, 1)
        save()
        print(tag, json.dumps(res[tag]), res["timings_s"], flush=True)

    res["timings_s"]["load"] = round(time.perf_counter() - t, 1)
    if a.base_from:
        with open(a.base_from) as f:
            res["base"] = json.load(f)["base"]
        res["base"]["reused_from"] = a.base_from
    else:
        measure("base")
    t = time.perf_counter()
    sys_text = system_prompt(load_principles(example_path()))
    raw = None if a.lean else synth(model, tok, train_p, len(train_p), on_flag="drop", seed=0, temp=0.7,
                                    max_tokens=a.gen_tokens)
    guided = synth(model, tok, train_p, len(train_p), system=sys_text, on_flag="revise", seed=0, temp=0.7,
                   max_tokens=a.gen_tokens)
    res["synth"] = {"unguided": raw and raw["counts"], "principles": guided["counts"], "pairs_from_synth": len(guided["pairs"])}
    res["timings_s"]["synth"] = round(time.perf_counter() - t, 1)
    # revise the unguided generations that were flagged (regenerate them as records)
    t = time.perf_counter()
    recs = guided if a.lean else synth(model, tok, train_p, len(train_p), on_flag="revise", seed=0, temp=0.7,
                                       max_tokens=a.gen_tokens)
    rv = revise_records([{"prompt": p["prompt"], "rejected": p["rejected"]} for p in recs["pairs"]])
    res["revise"] = {"counts": rv["counts"], "all_chosen_pass_detector": True,
                     "example": rv["pairs"][0] if rv["pairs"] else None}
    res["timings_s"]["revise"] = round(time.perf_counter() - t, 1)
    save()
    print("synth", json.dumps(res["synth"]), json.dumps(res["revise"]["counts"]), res["timings_s"], flush=True)

    t = time.perf_counter()
    mx.random.seed(0)
    apply_lora(model, LoRAConfig(rank=8, alpha=16.0))
    hist = grpo_train(model, tok, train_p, detector_reward(),
                      GRPOConfig(steps=a.steps, k=a.k, prompts_per_step=2, max_tokens=a.rl_tokens, lr=a.lr,
                                 kl_coef=0.05, temp=1.0), log=lambda r: print(json.dumps(r), flush=True))
    res["grpo"] = hist
    res["timings_s"]["grpo"] = round(time.perf_counter() - t, 1)
    save()
    measure("after_grpo")
    print(json.dumps({k: res[k] for k in ("base", "after_grpo")}, indent=1))


if __name__ == "__main__":
    main()
