"""Pieces every slot-memory layer shares: argument checks, code activations, and the
unpad -> op -> pad plumbing with the decode cache."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..checks import check_choice

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


def gate_logits(proj: torch.nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """``proj(x)`` in (at least) float32 with autocast off: gates (forget gates, step sizes) keep their precision
    under bf16/fp16 training (in bf16 a forget gate of 0.999 rounds to 1.0, i.e. no forgetting)."""
    dtype = torch.promote_types(x.dtype, torch.float32)  # float64 stays float64
    with torch.autocast(device_type=x.device.type, enabled=False):
        bias = None if proj.bias is None else proj.bias.to(dtype)
        return F.linear(x.to(dtype), proj.weight.to(dtype), bias)


def unit_rows(H: int, m: int, d: int) -> torch.Tensor:
    """[H, m, d] random rows of unit norm, orthonormal (QR) when m <= d."""
    g = torch.randn(H, d, m)
    if m <= d:
        return torch.linalg.qr(g).Q.transpose(-1, -2).contiguous()
    return F.normalize(g.transpose(-1, -2), dim=-1).contiguous()


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


__all__ = ["CODE_ACTIVATIONS", "code_activation", "check_choice", "check_positive_int", "check_positive_float", "resolve_heads",
           "gate_logits", "unit_rows"]
