"""A cost model for pipeline/data-parallel LoRA steps on real clusters.

Per layer and micro-batch of t tokens, forward FLOPs are 2·P_layer·t + 4·t·T·H
(attention scores and values, causal halves folded in). A LoRA step on a frozen
base runs the forward, recomputes it inside the stage's vjp, and runs the
backward for activations only (no weight gradients for frozen W): ≈ 3x forward.
A layer's time is max(FLOPs / (peak · efficiency), bytes moved / memory bandwidth)
with weights read once per pass. A micro-batch crosses each stage boundary twice
(activation forward, gradient back): bytes / link bandwidth + latency.
GPipe and 1F1B both take (m + p - 1) slots of the slowest stage (bubble
(p-1)/(m+p-1)); data parallelism adds a ring all-reduce of the LoRA gradients,
2·(d-1)/d · bytes / bandwidth.

Constants (approximate; sources in docs/cluster.md): Apple's spec pages for memory
bandwidth (M2 Ultra 800 GB/s, M3 Ultra 819 GB/s, M4 Max 546 GB/s), public GPU
FP32 throughput figures, Thunderbolt 5 = 80 Gb/s, TB4 = 40 Gb/s, 10GbE. The
`efficiency` (share of peak a real matmul reaches) defaults to 0.6 on Metal and is
measured on the machine for the `local` profile.
"""

from __future__ import annotations

from dataclasses import dataclass

from .plan import ModelShape, bubble_fraction


@dataclass(frozen=True)
class Chip:
    name: str
    tflops: float  # fp16/bf16 matmul peak, TFLOP/s
    mem_bw_gbs: float  # GB/s
    efficiency: float = 0.6


@dataclass(frozen=True)
class LinkSpec:
    name: str
    gbps: float  # GB/s one direction
    latency_us: float


CHIPS = {
    "m2-ultra": Chip("Apple M2 Ultra (76-core GPU)", 27.2, 800.0),
    "m3-ultra": Chip("Apple M3 Ultra (80-core GPU)", 28.4, 819.0),
    "m4-max": Chip("Apple M4 Max (40-core GPU)", 18.4, 546.0),
    "m4-pro": Chip("Apple M4 Pro (20-core GPU)", 9.2, 273.0),
}
LINKS = {
    "tb5": LinkSpec("Thunderbolt 5 (80 Gb/s), TCP ring", 10.0, 50.0),
    "tb5-rdma": LinkSpec("Thunderbolt 5, RDMA (JACCL)", 10.0, 8.0),
    "tb4": LinkSpec("Thunderbolt 4 (40 Gb/s)", 5.0, 60.0),
    "10gbe": LinkSpec("10 Gb Ethernet", 1.25, 100.0),
    "loopback": LinkSpec("loopback TCP (measure with benchmarks/bench_cluster.py)", 2.0, 30.0),
}


def layer_forward_flops(shape: ModelShape, tokens: int, seq: int) -> float:
    return 2.0 * shape.layer_params() * tokens + 4.0 * tokens * seq * shape.hidden


def simulate(shape: ModelShape, chip: Chip, link: LinkSpec, stages_layers: list[int], batch: int, seq: int,
             microbatches: int, replicas: int = 1, lora_rank: int = 16, weight_bytes: float = 2.0,
             act_bytes: float = 2.0) -> dict:
    """Predict one optimizer step. `stages_layers`: layer count per pipeline stage (one replica)."""
    p = len(stages_layers)
    m = microbatches
    tokens_mb = batch * seq / (m * replicas)
    per_layer_flops = 3.0 * layer_forward_flops(shape, tokens_mb, seq)
    per_layer_bytes = 3.0 * shape.layer_params() * weight_bytes
    t_layer = max(per_layer_flops / (chip.tflops * 1e12 * chip.efficiency), per_layer_bytes / (chip.mem_bw_gbs * 1e9))
    head_flops = 3.0 * 2.0 * shape.vocab * shape.hidden * tokens_mb
    stage_t = []
    for s, n in enumerate(stages_layers):
        t = n * t_layer + (head_flops / (chip.tflops * 1e12 * chip.efficiency) if s == p - 1 else 0.0)
        stage_t.append(t)
    msg = tokens_mb * shape.hidden * act_bytes
    t_link = (msg / (link.gbps * 1e9) + link.latency_us * 1e-6) if p > 1 else 0.0
    slot = max(stage_t) + 2 * t_link
    compute = (m + p - 1) * slot
    lora_bytes = shape.n_layers / p * shape.lora_params_per_layer(lora_rank) * 4
    t_ar = 2 * (replicas - 1) / replicas * lora_bytes / (link.gbps * 1e9) + 2 * (replicas - 1) * link.latency_us * 1e-6
    step = compute + t_ar
    return {
        "step_s": step, "tokens_per_s": batch * seq / step, "bubble_fraction": bubble_fraction(p, m),
        "stage_time_s": stage_t, "link_time_per_microbatch_s": 2 * t_link, "allreduce_s": t_ar,
        "achieved_tflops": 3 * layer_forward_flops(shape, batch * seq, seq) * shape.n_layers / step / 1e12,
    }
