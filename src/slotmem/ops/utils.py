"""Argument checking and variable-length helpers shared by every op.

All ops take sequence-first tensors ``[B, T, H, D]`` and keep their recurrent state in
float32 (or float64 when the inputs are float64).
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch


def check_choice(name: str, value, choices: Sequence) -> None:
    """Raise ``ValueError`` naming ``name`` unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{name}={value!r} is not valid; choose one of {list(choices)}")


def check_no_extra(op: str, extra: dict) -> None:
    """Unknown keyword arguments are errors, never silently ignored."""
    if extra:
        raise TypeError(f"{op}() got unknown argument(s): {sorted(extra)}")


def check_tensor(name: str, x: torch.Tensor, ndim: int) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != ndim:
        raise ValueError(f"{name} must have {ndim} dims, got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {x.dtype}")


def check_same(names: Sequence[str], sizes: Sequence[int], what: str) -> None:
    if len(set(sizes)) != 1:
        detail = ", ".join(f"{n}={s}" for n, s in zip(names, sizes))
        raise ValueError(f"mismatched {what}: {detail}")


def state_dtype(x: torch.Tensor) -> torch.dtype:
    """States and accumulations run in float32, or float64 when the inputs are float64."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def check_chunk_size(chunk_size) -> None:
    if not isinstance(chunk_size, int) or isinstance(chunk_size, bool) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}")


def check_cu_seqlens(cu_seqlens: torch.Tensor | None, batch: int, seqlen: int) -> None:
    if cu_seqlens is None:
        return
    if batch != 1:
        raise ValueError(f"with cu_seqlens the batch size must be 1 (packed sequences), got {batch}")
    if cu_seqlens.dim() != 1 or cu_seqlens.numel() < 2 or cu_seqlens.dtype not in (torch.int32, torch.int64):
        raise ValueError("cu_seqlens must be a 1-D int32/int64 tensor [N+1] of cumulative lengths")
    c = cu_seqlens.tolist()
    if c[0] != 0 or c[-1] != seqlen or any(b < a for a, b in zip(c, c[1:])):
        raise ValueError(f"cu_seqlens must start at 0, be non-decreasing and end at T={seqlen}, got {c}")


def run_varlen(
    fn: Callable,
    tensors: Sequence[torch.Tensor],
    cu_seqlens: torch.Tensor,
    initial_state,
    output_final_state: bool,
):
    """Run ``fn(*seq_tensors, initial_state=..., output_final_state=...)`` per packed sequence.

    ``tensors`` are ``[1, T, ...]``; sequence ``n`` spans ``cu_seqlens[n]:cu_seqlens[n+1]``.
    ``initial_state`` (a tensor or a tuple of tensors) has a leading dim ``N``. Returns the
    concatenated outputs ``[1, T, ...]`` and the stacked final states (leading dim ``N``) or None.
    """
    bounds = cu_seqlens.tolist()
    n_seq = len(bounds) - 1
    if initial_state is not None:
        parts = initial_state if isinstance(initial_state, tuple) else (initial_state,)
        for p in parts:
            if p.shape[0] != n_seq:
                raise ValueError(f"initial_state has {p.shape[0]} sequences but cu_seqlens describes {n_seq}")
    outs, finals = [], []
    for n in range(n_seq):
        a, b = bounds[n], bounds[n + 1]
        seq = [t[:, a:b] for t in tensors]
        h0 = None
        if initial_state is not None:
            h0 = tuple(p[n : n + 1] for p in initial_state) if isinstance(initial_state, tuple) else initial_state[n : n + 1]
        o, h = fn(*seq, initial_state=h0, output_final_state=True)
        outs.append(o)
        finals.append(h)
    out = torch.cat(outs, dim=1)
    if not output_final_state:
        return out, None
    if isinstance(finals[0], tuple):
        return out, tuple(torch.cat([f[i] for f in finals], dim=0) for i in range(len(finals[0])))
    return out, torch.cat(finals, dim=0)
