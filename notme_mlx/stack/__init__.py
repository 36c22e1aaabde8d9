"""The five-layer adapter stack: Base → Domain → Use → Mode → Identity.

A *Genesis* model is the owner's full stack; a *Daughter* reuses shared lower
layers (Domain, Use) and swaps the upper ones (Mode, Identity).
"""

from .compose import check_stack, load_for_training, load_stack_into, load_stack_model
from .manifest import LAYER_ORDER, Stack, StackLayer, adapter_hash, load_stack, parse_stack, save_stack
from ..train.trainer import register_stack_loader

register_stack_loader(load_for_training)  # `train` sits below `stack`: recipes with `stack:` load through this

__all__ = ["LAYER_ORDER", "Stack", "StackLayer", "adapter_hash", "check_stack", "load_for_training",
           "load_stack", "load_stack_into", "load_stack_model", "parse_stack", "save_stack"]
