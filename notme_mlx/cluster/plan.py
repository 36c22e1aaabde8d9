"""Plan a cluster run: memory-weighted layer partition, per-node budget, hostfile.

Partition: each node gets a contiguous range of layers in proportion to its
available memory, by the largest-remainder rule Exo uses for its ring
(`allocate_layers_proportionally`: floor each share, hand the leftover layers
to the largest fractional remainders, at least one layer per node). The first
stage also holds the embeddings; the last holds the final norm and output head.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..errors import NotmeError
from ..io import atomic_write_text
from .topology import Topology

GiB = 2**30
DTYPE_BYTES = {"float32": 4.0, "float16": 2.0, "bfloat16": 2.0, "q8": 1.0625, "q4": 0.5625}  # + scales/biases


def allocate_layers_proportionally(total_layers: int, fractions: list[float]) -> list[int]:
    """Largest-remainder split of `total_layers` by `fractions` (at least one each)."""
    n = len(fractions)
    if n == 0:
        raise NotmeError("cannot plan for an empty cluster")
    if total_layers < n:
        raise NotmeError(f"cannot split {total_layers} layers over {n} nodes (need at least one layer per node)")
    raw = [f * total_layers for f in fractions]
    out = [int(r) for r in raw]
    for i in sorted(range(n), key=lambda i: raw[i] - out[i], reverse=True)[: total_layers - sum(out)]:
        out[i] += 1
    for i in range(n):
        if out[i] == 0:
            j = max(range(n), key=lambda j: out[j])
            out[j] -= 1
            out[i] = 1
    return out


@dataclass
class ModelShape:
    """What the budget needs to know about a model (from config.json or given by hand)."""

    n_layers: int
    hidden: int
    intermediate: int
    vocab: int
    n_heads: int
    n_kv_heads: int
    dtype: str = "bfloat16"
    tied: bool = False

    @classmethod
    def from_config(cls, cfg: dict, dtype: str | None = None) -> "ModelShape":
        q = cfg.get("quantization")
        dt = dtype or (f"q{q['bits']}" if q else ("bfloat16" if "bf" in str(cfg.get("torch_dtype", "")) else "float16"))
        return cls(cfg["num_hidden_layers"], cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"],
                   cfg["num_attention_heads"], cfg.get("num_key_value_heads") or cfg["num_attention_heads"], dt,
                   bool(cfg.get("tie_word_embeddings", False)))

    def layer_params(self) -> int:
        hd = self.hidden // self.n_heads
        attn = 2 * self.hidden * self.hidden + 2 * self.hidden * self.n_kv_heads * hd
        return attn + 3 * self.hidden * self.intermediate + 2 * self.hidden

    def lora_params_per_layer(self, rank: int) -> int:
        hd = self.hidden // self.n_heads
        kv = self.n_kv_heads * hd
        H, I = self.hidden, self.intermediate
        return rank * ((H + H) * 2 + (H + kv) * 2 + (H + I) * 2 + (I + H))

    def total_params(self) -> int:
        emb = self.vocab * self.hidden
        return self.n_layers * self.layer_params() + emb * (1 if self.tied else 2) + self.hidden


@dataclass
class Stage:
    rank: int
    node_id: str
    host: str | None
    start_layer: int
    end_layer: int  # exclusive
    memory_bytes: int  # the node's available memory
    need_bytes: int = 0
    breakdown: dict = field(default_factory=dict)


@dataclass
class Plan:
    strategy: str
    stages: list
    microbatches: int
    batch_size: int
    seq_len: int
    lora_rank: int
    n_layers: int
    data_parallel: int = 1
    backend: str = "ring"
    model: str | None = None

    def to_dict(self) -> dict:
        d = asdict(self)
        d["bubble_fraction"] = bubble_fraction(len(self.stages) // self.data_parallel, self.microbatches)
        return d


def bubble_fraction(p: int, m: int) -> float:
    """GPipe / 1F1B pipeline bubble: (p - 1) / (m + p - 1)."""
    return (p - 1) / (m + p - 1) if p > 1 else 0.0


def stage_memory(shape: ModelShape, n_layers: int, first: bool, last: bool, lora_rank: int, micro_batch: int,
                 seq_len: int, microbatches_in_flight: int, act_bytes: float = 2.0) -> dict:
    """Bytes a stage needs: weights + LoRA (fp32) + AdamW state (2x) + gradients + activations."""
    wb = DTYPE_BYTES.get(shape.dtype, 2.0)
    weights = n_layers * shape.layer_params() * wb
    emb = shape.vocab * shape.hidden * wb
    if first:
        weights += emb
    if last:
        weights += emb + shape.hidden * wb  # head (tied: a copy of the embeddings) + norm
    lora = n_layers * shape.lora_params_per_layer(lora_rank) * 4
    optim = 2 * lora
    grads = lora
    tokens = micro_batch * seq_len
    # stage-boundary inputs kept per in-flight micro-batch + one layer's recomputed working set
    per_layer_work = tokens * (6 * shape.hidden + 3 * shape.intermediate) * act_bytes
    acts = microbatches_in_flight * tokens * shape.hidden * act_bytes + per_layer_work
    if last:
        acts += tokens * min(shape.vocab, 8192) * 4  # one fused-loss vocabulary chunk
    parts = {"weights": weights, "lora": lora, "optimizer": optim, "grads": grads, "activations": acts}
    parts["overhead"] = 0.08 * sum(parts.values()) + 2 * GiB  # allocator, runtime, OS headroom
    return {k: int(v) for k, v in parts.items()}


def make_plan(topo: Topology, shape: ModelShape, strategy: str = "pipeline", microbatches: int = 8,
              batch_size: int = 8, seq_len: int = 2048, lora_rank: int = 16, schedule: str = "1f1b",
              data_parallel: int | None = None, model: str | None = None, check: bool = True) -> Plan:
    """Partition layers over the topology's nodes and check each node's memory budget.

    strategy: pipeline (all nodes one pipeline), data (every node a full replica),
    hybrid (`data_parallel` replicas of a pipeline of len(nodes)/data_parallel stages).
    """
    nodes = topo.nodes
    n = len(nodes)
    if strategy == "data":
        dp, pp = n, 1
    elif strategy == "pipeline":
        dp, pp = 1, n
    elif strategy == "hybrid":
        dp = data_parallel or 2
        if n % dp:
            raise NotmeError(f"hybrid: {n} nodes do not split into {dp} equal pipeline replicas")
        pp = n // dp
    else:
        raise NotmeError(f"--strategy {strategy!r}: expected pipeline, data or hybrid")
    if microbatches < 1 or batch_size % (microbatches * dp):
        raise NotmeError(f"batch_size {batch_size} must split into {dp} replica(s) x {microbatches} micro-batches")
    micro = batch_size // (microbatches * dp)
    stages = []
    for rep in range(dp):
        group = nodes[rep * pp:(rep + 1) * pp]
        total = sum(x.memory_available for x in group)
        if total <= 0:
            raise NotmeError(f"{topo.source}: nodes report no available memory")
        counts = allocate_layers_proportionally(shape.n_layers, [x.memory_available / total for x in group])
        start = 0
        for s, (node, cnt) in enumerate(zip(group, counts)):
            in_flight = microbatches if schedule == "gpipe" else min(pp - s, microbatches)
            br = stage_memory(shape, cnt, s == 0, s == pp - 1, lora_rank, micro, seq_len, in_flight)
            stages.append(Stage(rep * pp + s, node.id, node.best_ip(), start, start + cnt, node.memory_available,
                                sum(br.values()), br))
            start += cnt
    if check:
        short = [st for st in stages if st.need_bytes > st.memory_bytes]
        if short:
            st = max(short, key=lambda s: s.need_bytes - s.memory_bytes)
            name = topo.node(st.node_id).name
            raise NotmeError(
                f"plan does not fit: node {name} ({st.node_id}) needs {st.need_bytes / GiB:.1f} GiB for layers "
                f"{st.start_layer}-{st.end_layer - 1} but has {st.memory_bytes / GiB:.1f} GiB available "
                f"(short by {(st.need_bytes - st.memory_bytes) / GiB:.1f} GiB); add nodes, quantize the base, "
                f"or lower batch/seq/micro-batch size")
    backend = "jaccl" if all(x.rdma for x in nodes) and n > 1 else "ring"
    return Plan(strategy, stages, microbatches, batch_size, seq_len, lora_rank, shape.n_layers, dp, backend, model)


def hostfile(plan: Plan, topo: Topology, python: str | None = None) -> dict:
    """An `mlx.launch` JSON hostfile: {"backend", "envs", "hosts": [{"ssh", "ips", "rdma"}]} in rank order.

    For JACCL, a host's `rdma` list has one entry per rank: the RDMA device this host uses
    for its cable to that rank (from Exo's RDMA links), or null for itself and for ranks it
    has no cable to.
    """
    hosts = []
    ids = [st.node_id for st in plan.stages]
    for st in plan.stages:
        node = topo.node(st.node_id)
        rdma = [None if other == st.node_id else topo.rdma_iface(st.node_id, other) for other in ids]
        hosts.append({"ssh": node.ssh or node.best_ip() or node.name, "ips": [node.best_ip()] if node.best_ip() else [],
                      "rdma": rdma if plan.backend == "jaccl" else []})
    return {"backend": plan.backend, "envs": ["MLX_METAL_FAST_SYNCH=1"] if plan.backend == "jaccl" else [],
            "hosts": hosts}


def write_plan(plan: Plan, topo: Topology, out: str | Path) -> tuple[Path, Path]:
    out = Path(out)
    hf = out.with_name(out.stem + ".hostfile.json")
    d = plan.to_dict()
    d["hostfile"] = str(hf.name)
    atomic_write_text(out, json.dumps(d, indent=2), mode=0o644)
    atomic_write_text(hf, json.dumps(hostfile(plan, topo), indent=2), mode=0o644)
    return out, hf


def load_plan(path: str | Path) -> Plan:
    p = Path(path)
    if not p.exists():
        raise NotmeError(f"{p}: plan not found (write one with `notme cluster plan ... -o {p.name}`)")
    d = json.loads(p.read_text())
    stages = [Stage(**s) for s in d.pop("stages")]
    d.pop("bubble_fraction", None)
    d.pop("hostfile", None)
    return Plan(stages=stages, **d)
