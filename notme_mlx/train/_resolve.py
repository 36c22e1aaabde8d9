"""The sibling APIs the trainer calls, gathered in one place (labels, forward, LoRA, models)."""

from ..data.labels import tokenize_example
from ..lora import LoRAConfig, apply_lora, save_adapter, trainable_parameters
from ..models import load_model
from .forward import hidden_states

__all__ = ["tokenize_example", "hidden_states", "apply_lora", "trainable_parameters", "save_adapter",
           "load_model", "lora_config"]


def lora_config(section) -> LoRAConfig:
    """The recipe's lora section as `notme_mlx.lora.LoRAConfig`."""
    return LoRAConfig(rank=section.rank, alpha=section.alpha, dropout=section.dropout,
                      targets=tuple(section.targets), num_layers=section.num_layers)
