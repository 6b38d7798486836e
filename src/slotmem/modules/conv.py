"""Depthwise causal short convolution with a decode cache.

Written here because fla's ``ShortConvolution`` needs a Triton/CUDA driver and has no CPU
path; this one is plain ``F.conv1d`` and handles packed sequences (``cu_seqlens``).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class ShortConvolution(nn.Module):
    """x [B, T, D] -> y [B, T, D]; ``cache`` / returned state: the last ``kernel_size-1`` inputs [B, D, W-1]."""

    def __init__(self, hidden_size: int, kernel_size: int = 4, activation: str | None = None):
        super().__init__()
        if kernel_size < 1:
            raise ValueError(f"kernel_size must be >= 1, got {kernel_size}")
        if activation not in (None, "silu"):
            raise ValueError(f"activation must be None or 'silu', got {activation!r}")
        self.hidden_size, self.kernel_size, self.activation = hidden_size, kernel_size, activation
        self.weight = nn.Parameter(torch.empty(hidden_size, 1, kernel_size))
        nn.init.kaiming_uniform_(self.weight, a=5 ** 0.5)

    def forward(self, x, cache=None, output_final_state=False, cu_seqlens=None):
        """Returns ``(y [B, T, D], new_cache [B, D, W-1] or None)``; with ``cu_seqlens`` B=1 and the
        cache has one row per sequence."""
        if cu_seqlens is not None:
            bounds = cu_seqlens.tolist()
            ys, states = [], []
            for n, (a, b) in enumerate(zip(bounds, bounds[1:])):
                y, st = self._conv(x[:, a:b], None if cache is None else cache[n : n + 1])
                ys.append(y)
                states.append(st)
            return torch.cat(ys, dim=1), (torch.cat(states, dim=0) if output_final_state else None)
        y, st = self._conv(x, cache)
        return y, (st if output_final_state else None)

    def _conv(self, x, cache):
        W = self.kernel_size
        xt = x.transpose(1, 2)  # [B, D, T]
        if cache is None:
            cache = xt.new_zeros(xt.shape[0], xt.shape[1], W - 1)
        full = torch.cat([cache.to(xt.dtype), xt], dim=-1)
        if xt.shape[-1] == 0:  # an empty (e.g. all-padding) segment: nothing to convolve, state unchanged
            return x, full
        y = F.conv1d(full, self.weight.to(xt.dtype), groups=self.hidden_size).transpose(1, 2)
        if self.activation == "silu":
            y = F.silu(y)
        return y, full[..., full.shape[-1] - (W - 1):]
