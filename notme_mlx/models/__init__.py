"""Model loading: `load_model(spec) -> (model, tokenizer, info)`.

`spec` is one of: a registry name (`smollm2-135m`, fetched and converted once),
a `.gguf` file (llama architecture; converted into a cache keyed by its
sha256), an mlx-lm / Hugging Face directory, or a hub id (needs hub access).
`dequantize` (default: True on CPU, where quantized matmul backward is slow)
turns quantized weights into dense layers after loading, computed in float32;
`base_dtype` chooses how the transformer blocks' linear weights are stored:
float32 (the default), float16 or bfloat16 (`HalfStoredLinear`: upcast to float32
just before each GEMM, forward and backward, so no float32 copy outlives its GEMM),
or "auto" (what training asks for, see `auto_base_dtype`).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import mlx.core as mx
from mlx import nn
from mlx.utils import tree_flatten, tree_unflatten
from mlx_lm import load
from mlx_lm.utils import hf_repo_to_path

from .. import cpu_kernels
from ..errors import NotmeError
from ..io import atomic_dir, notme_home, sha256_file
from .families import FAMILIES
from .gguf_loader import convert_gguf
from .registry import REGISTRY, fetch


def default_dequantize() -> bool:
    """Dense weights when MLX computes on the CPU (its quantized matmul bypasses BLAS there);
    quantized on a GPU (Metal or CUDA), where quantized kernels are fast."""
    return mx.default_device().type == mx.DeviceType.cpu


def fingerprint_dir(path: str | Path) -> str:
    """sha256 over the safetensors weight files of a model directory (names + bytes)."""
    h = hashlib.sha256()
    files = sorted(Path(path).glob("*.safetensors"))
    if not files:
        raise NotmeError(f"{path}: no *.safetensors weights to fingerprint")
    for f in files:
        h.update(f.name.encode())
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def model_fingerprint(spec_or_info) -> str:
    """Fingerprint of a base model: from an `info` dict, or by resolving a spec."""
    if isinstance(spec_or_info, dict):
        return spec_or_info["fingerprint"]
    return fingerprint_dir(resolve(spec_or_info))


def _gguf_cache(path: Path) -> Path:
    out = notme_home() / "gguf" / sha256_file(path)[:24]
    if not (out / "config.json").exists():
        with atomic_dir(out, force=True) as tmp:
            shutil.rmtree(tmp)
            convert_gguf(path, tmp, dequantize=False)
    return out


def resolve(spec: str) -> Path:
    """Turn a spec into a local mlx-lm directory (fetching/converting when needed)."""
    spec = str(spec)
    if spec in REGISTRY:
        return fetch(spec)
    p = Path(spec).expanduser()
    if p.suffix == ".gguf" or (p.is_file()):
        if not p.exists():
            raise NotmeError(f"{p}: file not found")
        return _gguf_cache(p)
    if p.is_dir():
        if not (p / "config.json").exists():
            raise NotmeError(f"{p}: not a model directory (no config.json)")
        return p
    if spec.count("/") == 1 and not spec.startswith((".", "/")):
        try:  # hub id: needs hub access
            return Path(hf_repo_to_path(spec))
        except Exception as e:
            raise NotmeError(f"{spec}: not a local path and the hub download failed ({str(e).splitlines()[0]})") from None
    raise NotmeError(f"{spec}: no such file or directory, and not a registry name ({', '.join(REGISTRY)})")


def dequantized_matmul(x: mx.array, base) -> mx.array:
    """`base(x)` computed in `x`'s dtype from a base stored in lower precision: a quantized layer
    (`nn.QuantizedLinear`) or a 16-bit `HalfStoredLinear`. The weight is dequantized / upcast on
    the fly into a temporary (again in the backward pass, which only needs the gradient w.r.t. x:
    the base is frozen), so the model stays small in memory and no dense float32 copy outlives
    the call. On the CPU this is a BLAS GEMM (MLX's quantized matmul does not use BLAS there)."""
    def dense(after):
        w = mx.depends(base.weight, after)
        if isinstance(base, nn.QuantizedLinear):
            w = mx.dequantize(w, base.scales, base.get("biases"), base.group_size, base.bits,
                              mode=getattr(base, "mode", "affine"))
        if w.dtype == mx.float16 and x.dtype == mx.float32 and cpu_kernels.on_cpu():
            return cpu_kernels.float16_to_float32(w)
        return w.astype(x.dtype)

    # Each dequantization depends on the GEMM's other operand, so it runs just before its GEMM
    # (not ahead of the graph, all layers at once) and `mx.compile` cannot merge the backward one
    # with the forward one (which would keep every layer's dense weight from the forward pass to
    # the backward pass): about one dense layer is alive at a time.
    @mx.custom_function
    def matmul(v):
        return v @ dense(after=v).T

    @matmul.vjp
    def matmul_vjp(primals, cotangent, output):
        return cotangent @ dense(after=cotangent)

    y = matmul(x)
    return y + base.bias if "bias" in base else y


class HalfStoredLinear(nn.Linear):
    """A frozen linear whose weight is stored in 16 bits and computed in its input's dtype:
    a float32 input gets a float32 GEMM on a weight upcast just for it (`dequantized_matmul`),
    forward and backward. Halves the base's memory when training on the CPU in float32."""

    def __call__(self, x):
        if x.dtype == self.weight.dtype:
            return super().__call__(x)
        return dequantized_matmul(x, self)


def to_half(w: mx.array, dtype) -> mx.array:
    """`w` stored as a `HalfStoredLinear` weight of `dtype`: float16 keeps no subnormals (|w| <
    2^-14 become 0, as `cpu_kernels.float16_to_float32` reads them), so CPU and GPU compute
    with the same weights."""
    w = w.astype(dtype)
    return mx.where(mx.abs(w) < cpu_kernels.HALF_TINY, mx.zeros((), dtype), w) if dtype == mx.float16 else w


BASE_DTYPES = ("float32", "float16", "bfloat16")
_HALF = {"float16": mx.float16, "bfloat16": mx.bfloat16}


def auto_base_dtype(model) -> str:
    """`base_dtype="auto"` (how training loads a base): "float16" when the checkpoint holds the
    transformer blocks' linear weights quantized or in float16, "bfloat16" when they are bfloat16
    (kept exact), "float32" when they are float32 (kept exact). A Q4 value rounded to float16
    moves by at most ~0.6% of its quantization step. Computed in float32 either way
    (`HalfStoredLinear`). Not the default for inference: a decoded token upcasts every weight
    again (greedy generation took ~2x the CPU time).

    "bfloat16" storage of a quantized base upcasts faster on the CPU (MLX's `astype` from
    bfloat16 is a shift: 0.13 ms for a 1536 x 576 matrix vs 0.31-0.39 ms for
    `cpu_kernels.float16_to_float32` and 0.91 ms for MLX's float16 `astype`, with which SmolLM2
    steps were ~5% faster in bfloat16, same memory) but 8x coarser: a Q4 value moves by up to 4.3% of its step, and
    SmolLM2's LoRA gradients on a real batch differ from the float32 base's by 1.9% (float16:
    0.36%), so it is offered (`base_dtype="bfloat16"`) and not chosen here."""
    lins = [m for p, m in model.named_modules() if isinstance(m, (nn.Linear, nn.QuantizedLinear)) and _in_blocks(p)]
    if lins and all(isinstance(m, nn.Linear) and m.weight.dtype == mx.bfloat16 for m in lins):
        return "bfloat16"
    if lins and all(isinstance(m, nn.QuantizedLinear) or m.weight.dtype in (mx.float16, mx.bfloat16) for m in lins):
        return "float16"
    return "float32"


def _in_blocks(path: str) -> bool:
    return ".layers." in f".{path}."


def dequantize_model(model, base_dtype: str = "float32") -> int:
    """Replace quantized layers by dense ones in place; every float parameter becomes float32,
    except, with `base_dtype="float16"` or `"bfloat16"`, the weights of the transformer blocks'
    linears: those become `HalfStoredLinear` with a weight of that dtype.
    The embedding, an untied output head and the norms stay float32 (the loss reads the head's
    rows directly). Returns how many quantized layers were replaced."""
    if base_dtype not in BASE_DTYPES:
        raise NotmeError(f"base dtype {base_dtype!r}: expected one of {', '.join(BASE_DTYPES)}")
    half = _HALF.get(base_dtype)
    n = 0
    repl = []
    for path, m in model.named_modules():
        if isinstance(m, (nn.QuantizedLinear, nn.Linear)) and half is not None and _in_blocks(path):
            quantized = isinstance(m, nn.QuantizedLinear)
            w = to_half(_dequantized(m) if quantized else m.weight, half)
            n += quantized
            lin = HalfStoredLinear(w.shape[1], w.shape[0], bias="bias" in m)
            lin.weight = w
            if "bias" in m:
                lin.bias = m.bias.astype(mx.float32)
            repl.append((path, lin))
        elif isinstance(m, nn.QuantizedLinear):
            w = _dequantized(m)
            lin = nn.Linear(w.shape[1], w.shape[0], bias="bias" in m)
            lin.weight = w
            if "bias" in m:
                lin.bias = m.bias
            repl.append((path, lin))
            n += 1
        elif isinstance(m, nn.QuantizedEmbedding):
            w = _dequantized(m)
            emb = nn.Embedding(w.shape[0], w.shape[1])
            emb.weight = w
            repl.append((path, emb))
            n += 1
    if repl:
        model.update_modules(tree_unflatten(repl))
    # f16/bf16 dense weights become float32 too (CPU training runs in fp32), but for the half-stored ones
    model.update(dict(tree_flatten_floats(model)))
    return n


def _dequantized(m) -> mx.array:
    """A quantized layer's weight as float32 (scales and biases taken in float32)."""
    return mx.dequantize(m.weight, m.scales.astype(mx.float32), m.biases.astype(mx.float32), m.group_size, m.bits)


def _half_stored_weights(model) -> set[str]:
    return {f"{p}.weight" for p, m in model.named_modules() if isinstance(m, HalfStoredLinear)}


def tree_flatten_floats(model):
    keep = _half_stored_weights(model)
    flat = [(k, v.astype(mx.float32)) for k, v in tree_flatten(model.parameters())
            if mx.issubdtype(v.dtype, mx.floating) and v.dtype != mx.float32 and k not in keep]
    return tree_unflatten(flat).items() if flat else []


def describe(model, path: Path, spec: str) -> dict:
    cfg = json.loads((path / "config.json").read_text())
    flat = dict(tree_flatten(model.parameters()))
    quant = cfg.get("quantization")
    n_params = 0
    for k, v in flat.items():
        if k.endswith((".scales", ".biases")) and k.rsplit(".", 1)[0] + ".weight" in flat and \
                flat[k.rsplit(".", 1)[0] + ".weight"].dtype == mx.uint32:
            continue
        if v.dtype == mx.uint32:  # packed: in_dims = groups * group_size (32 for GGUF blocks)
            s = flat[k.rsplit(".", 1)[0] + ".scales"]
            gs = (quant or {}).get("group_size", 32)
            n_params += v.shape[0] * s.shape[-1] * gs
        else:
            n_params += v.size
    dtypes = sorted({str(v.dtype).split(".")[-1] for v in flat.values() if v.dtype != mx.uint32})
    src = path / "notme_source.json"
    source = json.loads(src.read_text()) if src.exists() else {}
    fam = next((f for f in FAMILIES if cfg.get("model_type") in f.model_types), None)
    return {
        "spec": spec,
        "path": str(path),
        "source": "registry" if spec in REGISTRY else "gguf" if source else "mlx-dir",
        "architecture": cfg.get("model_type"),
        "family": fam.name if fam else None,
        "supported": list(fam.features) if fam else [],
        "n_params": int(n_params),
        "n_layers": cfg.get("num_hidden_layers"),
        "hidden_size": cfg.get("hidden_size"),
        "dtypes": dtypes,
        "quantization": quant if any(v.dtype == mx.uint32 for v in flat.values()) else None,
        "vocab_size": cfg.get("vocab_size"),
        "context_length": cfg.get("max_position_embeddings"),
        "has_chat_template": None,
        "tie_word_embeddings": "lm_head.weight" not in flat,
        "rope_traditional": cfg.get("rope_traditional", False),
        "fingerprint": fingerprint_dir(path),
        "tokenizer_pre": source.get("tokenizer_pre"),
        "gguf_file_type": source.get("file_type"),
    }


def load_model(spec: str, dequantize: bool | None = None, base_dtype: str | None = None):
    """Load a model and tokenizer. Returns (model, tokenizer, info).

    Args:
      spec: registry name | .gguf file | mlx-lm directory | hub id.
      dequantize: dense weights computed in float32 (default: True on CPU).
      base_dtype: with `dequantize`, how the transformer blocks' linear weights are stored:
        "float32" (default), "float16" / "bfloat16" (upcast per GEMM, see `HalfStoredLinear`), or "auto"
        (`auto_base_dtype`: 16 bits for a quantized or 16-bit checkpoint, float32 for a float32
        one; what `notme train` asks for).
    Returns:
      model (mlx-lm nn.Module), tokenizer (mlx-lm TokenizerWrapper), info dict
      (path, architecture, n_params, dtypes, quantization, vocab, context,
      chat template presence, fingerprint = sha256 of the stored weights).
    """
    if base_dtype not in (None, "auto", *BASE_DTYPES):
        raise NotmeError(f"base dtype {base_dtype!r}: expected auto, {', '.join(BASE_DTYPES)}")
    path = resolve(spec)
    try:
        model, tok = load(str(path))
    except NotmeError:
        raise
    except Exception as e:
        raise NotmeError(f"{path}: mlx_lm could not load this model ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
    info = describe(model, path, str(spec))
    if dequantize is None:
        dequantize = default_dequantize()
    if dequantize:
        base_dtype = auto_base_dtype(model) if base_dtype == "auto" else base_dtype or "float32"
        info["dequantized_layers"] = dequantize_model(model, base_dtype)
        info["base_dtype"] = base_dtype
    info["has_chat_template"] = bool(getattr(tok, "chat_template", None) or getattr(getattr(tok, "_tokenizer", None), "chat_template", None))
    mx.eval(model.parameters())
    return model, tok, info


__all__ = [
    "REGISTRY",
    "HalfStoredLinear",
    "auto_base_dtype",
    "dequantize_model",
    "dequantized_matmul",
    "fetch",
    "fingerprint_dir",
    "load_model",
    "model_fingerprint",
    "resolve",
]
