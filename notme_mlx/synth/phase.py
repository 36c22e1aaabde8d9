"""The `grpo` recipe phase: GRPO on the trainable adapter with the detector as reward.

    phases:
      - {name: mode-sft, type: sft}
      - {name: mode-rl, type: grpo, data: prompts.jsonl, max_steps: 50, lr: 5.0e-5, beta: 0.05}

Fields used: `data` (prompts file, required: .jsonl {prompt}/{messages} or one per line),
`max_steps` (else recipe max_steps, else 20), `lr` (else optimizer.lr), `beta` (KL coefficient
to the adapter the phase starts from), k, prompts_per_step, max_tokens, temp, clip_eps.
The phase runs the trainer's loop with the recipe's optimizer, schedule, clipping,
accumulation (grad_accum sampled batches per step) and checkpoints, and resumes exactly: the
sampler's prompt position and PRNG key are in the checkpoint's cursor, and the reference
adapter (the one the phase started from) is saved in the run folder at the phase start.
Safety: each step's prompts are mixed with bundled safety-replay prompts (every
`SAFETY_EVERY`-th group) whose reward adds +1 for a refusal and -1 otherwise; the refusal
rate on 8 held-out safety-eval prompts (never trained on) is probed at start and end.

Importing this module registers the phase type (the CLI imports it; `train` never imports synth).
"""

from __future__ import annotations

import json
from functools import partial

import mlx.core as mx

from .. import ui
from ..data.safety import load_safety_eval, load_safety_replay
from ..detect import detector_from
from ..errors import ConfigError
from ..eval.metrics import is_refusal
from ..train.checkpoint import save_arrays
from ..train.phases import phase_optimizer, register, run_phase_loop
from .generate import read_prompts
from .grpo import GRPOConfig, GRPOStream, snapshot_trainable, detector_reward, grpo_loss, refusal_rate

PROBE_N = 8
SAFETY_EVERY = 4


def _training_prompts(path) -> list[dict]:
    prompts = read_prompts(path)
    safety = [{"messages": [{"role": "user", "content": ex["messages"][0]["content"]}], "safety": True}
              for ex in load_safety_replay()]
    mixed = []
    for i, p in enumerate(prompts):
        mixed.append(p)
        if (i + 1) % SAFETY_EVERY == 0:
            mixed.append(safety[(i // SAFETY_EVERY) % len(safety)])
    return mixed


def _reference(run, idx, phase, probe, cfg, resume_from) -> tuple[list, float | None]:
    """The adapter the phase starts from (KL reference) and the refusal rate it had: computed and
    saved at the phase start, read back on resume."""
    path = run.dir / f"grpo_ref-{idx}-{phase.name}.safetensors"
    if resume_from is not None:
        if not path.exists():
            raise ConfigError(f"{path}: the GRPO reference adapter is missing; resume needs it (or start the "
                              "run over with --force)")
        arrays, meta = mx.load(str(path), return_metadata=True)
        return list(arrays.items()), json.loads(meta.get("refusal_rate_start", "null"))
    params = snapshot_trainable(run.model)
    rate = refusal_rate(run.model, run.tokenizer, probe, cfg.probe_max_tokens, is_refusal)
    if run.is_main:
        path.parent.mkdir(parents=True, exist_ok=True)
        save_arrays(path, dict(params), metadata={"refusal_rate_start": json.dumps(rate)})
    run.backend.barrier()
    return params, rate


@register("grpo")
def grpo_phase(run, idx, phase, state, resume_from, stop_at_step=None) -> dict:
    r = run.recipe
    if not phase.data:
        raise ConfigError(f"phases[{idx}] ({phase.name}, type grpo): set data: to a prompts file (.jsonl or .txt)")
    prompts = _training_prompts(phase.data)
    probe = [{"messages": [{"role": "user", "content": s["prompt"]}]} for s in load_safety_eval()[:PROBE_N]]
    total = phase.max_steps or r.max_steps or 20
    cfg = GRPOConfig(steps=total, k=phase.k, prompts_per_step=phase.prompts_per_step, max_tokens=phase.max_tokens,
                     temp=phase.temp, clip_eps=phase.clip_eps, kl_coef=phase.beta, seed=r.seed + 7919 * idx,
                     grad_clip=r.grad_clip)
    ref_params, refusal0 = _reference(run, idx, phase, probe, cfg, resume_from)
    stream = GRPOStream(run.model, run.tokenizer, prompts, detector_reward(detector_from(r.detect).detect), cfg,
                        ref_params,
                        cursor=state.cursor if resume_from is not None else None)
    opt = phase_optimizer(run, phase, total, resume_from)
    step = run.backend.step(run.model, partial(grpo_loss, clip_eps=cfg.clip_eps, kl_coef=cfg.kl_coef), r.compile,
                            what="phase type grpo")
    log = lambda rec: run.log.write({**rec, "kl": rec.get("ul")} if "loss" in rec else rec)  # noqa: E731
    res = run_phase_loop(run, phase, stream, step, opt, total, state, stop_at_step, log=log)
    last = dict(res.last_metrics)
    if not res.stopped_early:
        last["refusal_rate"] = refusal_rate(run.model, run.tokenizer, probe, cfg.probe_max_tokens, is_refusal)
        last["refusal_rate_start"] = refusal0
        run.log.write({"phase": phase.name, "step": state.step, "refusal_rate": last["refusal_rate"],
                       "refusal_rate_start": refusal0})
        if refusal0 is not None and last["refusal_rate"] < refusal0:
            ui.warn(f"{phase.name}: refusal rate on the safety probe fell {refusal0:.2f} -> "
                    f"{last['refusal_rate']:.2f} ({PROBE_N} prompts)")
    return {"name": phase.name, "type": "grpo", "steps": res.steps_done, "total": total, "last": last,
            "stopped_early": res.stopped_early}
