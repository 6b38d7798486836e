"""Argument checks shared by every layer of the package (ops, layers, data); imports nothing of slotmem.
Each raises ``ValueError`` naming the argument and the bad value."""
from __future__ import annotations

import numbers
from typing import Sequence


def check_choice(name: str, value, choices: Sequence) -> None:
    """Raise ``ValueError`` naming ``name`` unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{name}={value!r} is not valid; choose one of {list(choices)}")


def check_positive_int(name: str, value) -> None:
    """An integer >= 1 (a Python or NumPy integer; not a bool)."""
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")


def check_positive_float(name: str, value) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not (value > 0 and value < float("inf")):
        raise ValueError(f"{name} must be a finite positive number, got {value!r}")


def check_nonnegative_float(name: str, value) -> None:
    """A finite number >= 0 (a Python int or float; not a bool)."""
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not (0 <= value < float("inf")):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")


def resolve_heads(hidden_size, num_heads, head_dim) -> int:
    """Validate a mixer's head layout; ``head_dim`` defaults to ``hidden_size // num_heads``."""
    check_positive_int("hidden_size", hidden_size)
    check_positive_int("num_heads", num_heads)
    if head_dim is None:
        if hidden_size % num_heads:
            raise ValueError(f"hidden_size={hidden_size} is not divisible by num_heads={num_heads}; pass head_dim")
        head_dim = hidden_size // num_heads
    check_positive_int("head_dim", head_dim)
    return head_dim


def check_bool(name: str, value) -> None:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be a bool, got {value!r}")


def check_layer_idx(layer_idx) -> None:
    if layer_idx is not None and (not isinstance(layer_idx, int) or isinstance(layer_idx, bool) or layer_idx < 0):
        raise ValueError(f"layer_idx must be None or a non-negative int, got {layer_idx!r}")
