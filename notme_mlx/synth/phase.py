"""The `grpo` recipe phase: GRPO on the trainable adapter with the detector as reward.

    phases:
      - {name: mode-sft, type: sft}
      - {name: mode-rl, type: grpo, data: prompts.jsonl, max_steps: 50, lr: 5.0e-5, beta: 0.05}

Fields used: `data` (prompts file, required: .jsonl {prompt}/{messages} or one per line),
`max_steps` (else recipe max_steps, else 20), `lr` (else optimizer.lr), `beta` (KL coefficient
to the adapter the phase starts from). GRPO-only knobs read `phase.<name>` when the recipe
schema has them, else the GRPOConfig defaults: k, prompts_per_step, max_tokens, temp, clip_eps.
Safety: each step's prompts are mixed with bundled safety-replay prompts (every
`safety_every`-th group) whose reward adds +1 for a refusal and -1 otherwise; the refusal
rate on 8 held-out safety-eval prompts (never trained on) is probed at start and end.
Resuming restarts the phase from its first step.
"""

from __future__ import annotations

from dataclasses import fields

from .grpo import GRPOConfig, detector_reward, grpo_train

PROBE_N = 8
SAFETY_EVERY = 4


def grpo_phase(run, idx, phase, state, resume_from, stop_at_step=None) -> dict:
    from .. import ui
    from ..data.safety import load_safety_eval, load_safety_replay
    from ..errors import ConfigError
    from ..eval.metrics import is_refusal
    from .generate import read_prompts

    r = run.recipe
    if not phase.data:
        raise ConfigError(f"phases[{idx}] ({phase.name}, type grpo): set data: to a prompts file (.jsonl or .txt)")
    prompts = read_prompts(phase.data)
    safety = [{"messages": [{"role": "user", "content": ex["messages"][0]["content"]}], "safety": True}
              for ex in load_safety_replay()]
    mixed = []
    for i, p in enumerate(prompts):
        mixed.append(p)
        if (i + 1) % SAFETY_EVERY == 0:
            mixed.append(safety[(i // SAFETY_EVERY) % len(safety)])
    probe = [{"messages": [{"role": "user", "content": s["prompt"]}]} for s in load_safety_eval()[:PROBE_N]]
    steps = phase.max_steps or r.max_steps or 20
    if stop_at_step is not None:
        steps = max(0, min(steps, stop_at_step - state.step))
    extra = {f.name: getattr(phase, f.name) for f in fields(GRPOConfig)
             if f.name not in ("steps", "lr", "kl_coef", "seed") and getattr(phase, f.name, None) is not None}
    cfg = GRPOConfig(steps=steps, lr=phase.lr or r.optimizer.lr, kl_coef=phase.beta, seed=r.seed + 7919 * idx,
                     **extra)
    run.model.train()

    def log(rec):
        state.step += 1
        state.phase_step += 1
        if run.log is not None:
            run.log.write({**rec, "phase": phase.name, "step": state.step, "phase_step": rec["step"]})

    with ui.progress(f"{phase.name} (grpo)", steps, "steps") as bar:
        hist = grpo_train(run.model, run.tokenizer, mixed, detector_reward(), cfg, log=log, safety_prompts=probe,
                          is_refusal=is_refusal, progress=bar)
    last = hist[-1] if hist else {}
    if last.get("refusal_rate") is not None and last["refusal_rate"] < (last.get("refusal_rate_start") or 0):
        ui.warn(f"{phase.name}: refusal rate on the safety probe fell {last['refusal_rate_start']:.2f} -> "
                f"{last['refusal_rate']:.2f} ({PROBE_N} prompts)")
    return {"name": phase.name, "type": "grpo", "steps": len(hist), "total": steps, "last": last,
            "stopped_early": len(hist) < steps}
