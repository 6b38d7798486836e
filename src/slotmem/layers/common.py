"""Pieces every slot-memory layer shares: argument checks, code activations, and the
unpad -> op -> pad plumbing with the decode cache."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..ops.utils import check_choice

CODE_ACTIVATIONS = ("identity", "silu", "softmax", "l2norm")


def code_activation(x: torch.Tensor, name: str) -> torch.Tensor:
    """Activation over the last (slot / feature) axis."""
    if name == "identity":
        return x
    if name == "silu":
        return F.silu(x)
    if name == "softmax":
        return x.softmax(-1)
    return F.normalize(x, dim=-1, eps=1e-6)


def check_positive_int(name: str, value) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")


def check_positive_float(name: str, value) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not (value > 0 and value < float("inf")):
        raise ValueError(f"{name} must be a finite positive number, got {value!r}")


def resolve_heads(hidden_size, num_heads, head_dim):
    """Validate the head layout; ``head_dim`` defaults to ``hidden_size // num_heads``."""
    check_positive_int("hidden_size", hidden_size)
    check_positive_int("num_heads", num_heads)
    if head_dim is None:
        if hidden_size % num_heads:
            raise ValueError(f"hidden_size={hidden_size} is not divisible by num_heads={num_heads}; pass head_dim")
        head_dim = hidden_size // num_heads
    check_positive_int("head_dim", head_dim)
    return head_dim


__all__ = ["CODE_ACTIVATIONS", "code_activation", "check_choice", "check_positive_int", "check_positive_float", "resolve_heads"]
