"""Hardware efficiency of a training step: achieved model FLOP/s over measured matmul peaks.

MFU = tokens/s x FLOPs-per-token (`machine.step_flops`: 6·N·tokens + 12·L·H·ctx·tokens)
divided by (a) the best FLOP/s of a large float32 matmul in MLX on this machine and
(b) the same in NumPy (its BLAS), both measured here in the same process.
"""

from __future__ import annotations

import numpy as np
from mlx.utils import tree_flatten

from .machine import mlx_matmul_peak, numpy_matmul_peak, step_flops
from .runners import Settings, load, run_mlxlm, run_ours


def mfu(model_path, examples, s: Settings, n_mlx: int = 1024, n_numpy: int = 2048) -> list[dict]:
    """One run per trainer; rows with achieved FLOP/s and MFU against both peaks."""
    peak_mlx, peak_np = mlx_matmul_peak(n_mlx), numpy_matmul_peak(n_numpy)
    mean_ctx = float(np.mean([len(e.tokens) for e in examples])) / 2
    rows = []
    for side, fn in (("ours", run_ours), ("mlx-lm", run_mlxlm)):
        model, _, _ = load(model_path)
        summ = fn(model, examples, s).summary()
        lora = sum(v.size for _, v in tree_flatten(model.trainable_parameters()))
        f = step_flops(model.args, 1, mean_ctx, lora)
        achieved = summ["tokens_per_sec"] * f["flops"]
        rows.append({"side": side, "tokens_per_sec": summ["tokens_per_sec"], "flops_per_token": f["flops"],
                     "achieved_flops": achieved, "achieved_flops_lora": summ["tokens_per_sec"] * f["flops_lora"],
                     "mlx_matmul_peak": peak_mlx, "numpy_matmul_peak": peak_np,
                     "mfu_vs_mlx": achieved / peak_mlx, "mfu_vs_numpy": achieved / peak_np,
                     "n_matmul_params": f["n_matmul_params"], "lora_params": lora})
    return rows
