"""Evaluation: validation-seeking rate, propensity, over-correction, voice fidelity,
forgetting and safety retention, each with n and a bootstrap 95% CI; reports in JSON/MD/HTML.

    from notme_mlx.eval import run_eval, quick_vsr
    rep = run_eval("smollm2-135m", adapters="runs/quickstart/adapters", out_dir="report/", quick=True)
    quick_vsr(model, tokenizer, n=8, max_tokens=48, seed=0)["value"]
"""

from .metrics import asks_clarifying, bootstrap, is_refusal, style_distance, style_profile, vsr
from .report import compare, write_report
from .runner import evaluate, quick_vsr, run_eval

__all__ = ["run_eval", "evaluate", "quick_vsr", "bootstrap", "vsr", "is_refusal",
           "asks_clarifying", "style_distance", "style_profile", "write_report", "compare"]

