"""Padding <-> packed-sequence conversion, so padded batches never feed zeros to a recurrence."""
from __future__ import annotations

import torch


def unpad(x: torch.Tensor, attention_mask: torch.Tensor):
    """x [B, T, ...], attention_mask [B, T] (1 = token) -> (packed [1, N, ...], indices [N], cu_seqlens [B+1])."""
    if attention_mask.shape != x.shape[:2]:
        raise ValueError(f"attention_mask must be [B, T]={tuple(x.shape[:2])}, got {tuple(attention_mask.shape)}")
    mask = attention_mask.bool()
    indices = mask.flatten().nonzero(as_tuple=True)[0]
    lengths = mask.sum(-1)
    cu = torch.zeros(lengths.numel() + 1, dtype=torch.int64, device=x.device)
    cu[1:] = torch.cumsum(lengths, 0)
    return x.flatten(0, 1)[indices][None], indices, cu


def pad(packed: torch.Tensor, indices: torch.Tensor, batch: int, seqlen: int) -> torch.Tensor:
    """Inverse of ``unpad``: packed [1, N, ...] -> [B, T, ...] with zeros at padded positions."""
    out = packed.new_zeros(batch * seqlen, *packed.shape[2:])
    out[indices] = packed[0]
    return out.view(batch, seqlen, *packed.shape[2:])
