"""notme-mlx: LoRA fine-tuning on your own conversations, on Apple MLX.

Validation-seeking is the only error: the model learns everything from the
data and is trained away only from asking for approval, permission or
confirmation, hedging and sycophantic filler.
"""

__version__ = "0.1.0"
