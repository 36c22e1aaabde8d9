"""notme-mlx: LoRA fine-tuning on your own conversations, on Apple MLX.

Validation-seeking is the only error: the model learns everything from the
data and is trained away only from asking for approval, permission or
confirmation, hedging and sycophantic filler.
"""

import os as _os

# transformers (used only for tokenizers) warns on import that PyTorch is absent; we never need it.
_os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

__version__ = "0.1.0"
