"""Sibling APIs the trainer calls (real module when landed, else `_fallback`)."""

from ._fallback import pick

tokenize_example = pick("notme_mlx.data.labels", "tokenize_example")
hidden_states = pick("notme_mlx.train.forward", "hidden_states")
apply_lora = pick("notme_mlx.lora", "apply_lora")
trainable_parameters = pick("notme_mlx.lora", "trainable_parameters")
save_adapter = pick("notme_mlx.lora", "save_adapter")
load_model = pick("notme_mlx.models", "load_model")


def lora_config(section):
    """The recipe's lora section as `notme_mlx.lora.LoRAConfig` (or a stand-in)."""
    try:
        from notme_mlx.lora import LoRAConfig
    except ImportError:
        from types import SimpleNamespace as LoRAConfig
    return LoRAConfig(rank=section.rank, alpha=section.alpha, dropout=section.dropout,
                      targets=tuple(section.targets), num_layers=section.num_layers)
