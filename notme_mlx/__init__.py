"""notme-mlx: LoRA fine-tuning on your own conversations, on Apple MLX.

Validation-seeking is the only error: the model learns everything from the
data and is trained away only from asking for approval, permission or
confirmation, hedging and sycophantic filler.
"""

import os as _os

# transformers (used only for tokenizers) warns on import that PyTorch is absent; we never need it.
_os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

__version__ = "0.1.0"

# Linux: route MLX's GEMMs to numpy's OpenBLAS instead of the wheel's reference BLAS (must run
# before mlx.core is imported; NOTME_BLAS=off disables it). See notme_mlx/cpu_blas.py.
from . import cpu_blas as _cpu_blas  # noqa: E402

_cpu_blas.flush_subnormals()  # first: the OpenBLAS and MLX threads started later inherit it
_cpu_blas.enable()
