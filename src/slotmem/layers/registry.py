"""One interface for every token mixer, so experiments swap the mixer and keep the rest.

A mixer is an ``nn.Module`` built as ``cls(hidden_size, num_heads, layer_idx=..., **kwargs)`` with
``forward(hidden_states, attention_mask=None, past_key_values=None, use_cache=False,
cu_seqlens=None, **kwargs) -> (o, None, past_key_values)`` and ``state_size(seq_len) -> int``
(floats of decode state per sequence per layer after ``seq_len`` tokens: constant for slot
memories and recurrent baselines, growing for attention's KV cache).
"""
from __future__ import annotations

import torch.nn as nn

MIXERS: dict[str, type[nn.Module]] = {}


def register_mixer(name: str):
    """Class decorator: make a mixer buildable by name."""

    def add(cls):
        if name in MIXERS:
            raise ValueError(f"mixer {name!r} is already registered")
        MIXERS[name] = cls
        return cls

    return add


def build_mixer(name: str, hidden_size: int, num_heads: int, layer_idx: int | None = None, **kwargs) -> nn.Module:
    if name not in MIXERS:
        raise ValueError(f"unknown mixer {name!r}; available: {sorted(MIXERS)}")
    return MIXERS[name](hidden_size, num_heads, layer_idx=layer_idx, **kwargs)
