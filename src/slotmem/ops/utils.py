"""Argument checking and variable-length helpers shared by every op.

All ops take sequence-first tensors ``[B, T, H, D]`` and keep their recurrent state in
float32 (or float64 when the inputs are float64).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch

from ..checks import check_choice, check_positive_int


class NonFiniteInputError(ValueError, FloatingPointError):
    """An op input holds NaN/inf. A ``ValueError`` for a caller who passed it; a ``FloatingPointError``
    so that a training loop can tell it from bad arguments: inside a model it means the activations
    diverged (the trainer reports the run as diverged, naming the step)."""


@dataclass(frozen=True)
class ChunkCarry:
    """State of the chunked (stale-gradient) recurrence that lets a call continue mid-chunk.

    With a plain ``initial_state`` chunk boundaries restart at every call, so calls chain exactly only
    at multiples of ``chunk_size``. Passing a ``ChunkCarry`` instead (and getting one back) continues
    the chunk grid across calls, so any split — e.g. prefill then token-by-token decoding — equals one
    call over the whole sequence. ``state``: the running state; ``anchor``: the state the current chunk
    started from (same structure; inner gradients are taken there); ``offset``: LongTensor [B], tokens
    of the current chunk already consumed (0 <= offset < chunk_size). Memory stays constant: 2 states.
    """

    state: Any
    anchor: Any
    offset: torch.Tensor

    @classmethod
    def start(cls, state) -> "ChunkCarry":
        """A carry at a chunk boundary (offset 0), e.g. before the first token."""
        first = state[0] if isinstance(state, tuple) else state
        return cls(state, state, torch.zeros(first.shape[0], dtype=torch.long, device=first.device))


def tree_map(fn: Callable, *trees):
    """Apply ``fn`` leaf-wise over matching tensors / tuples of tensors / ``ChunkCarry``s."""
    if isinstance(trees[0], ChunkCarry):
        return ChunkCarry(*(tree_map(fn, *(getattr(t, f) for t in trees)) for f in ("state", "anchor", "offset")))
    if isinstance(trees[0], tuple):
        return tuple(tree_map(fn, *xs) for xs in zip(*trees))
    return fn(*trees)


def tree_where(mask: torch.Tensor, a, b):
    """Row-wise select: rows of ``a`` where ``mask`` [B] is true, rows of ``b`` elsewhere."""
    return tree_map(lambda x, y: torch.where(mask.view(-1, *([1] * (x.dim() - 1))), x, y), a, b)


def check_carry(carry: ChunkCarry, batch: int, chunk_size: int, check_state: Callable) -> None:
    """``check_state(state)`` validates a plain state; the anchor must match it, offsets must fit the chunk."""
    check_state(carry.state)
    check_state(carry.anchor)
    off = carry.offset
    if not isinstance(off, torch.Tensor) or off.dtype not in (torch.int32, torch.int64) or off.shape != (batch,):
        raise ValueError(f"ChunkCarry.offset must be an int tensor [B={batch}], got {off!r}")
    if bool(((off < 0) | (off >= chunk_size)).any()):
        raise ValueError(f"ChunkCarry.offset must lie in [0, chunk_size={chunk_size}), got {off.tolist()}")


def scan_chunks(chunk_fn: Callable, seqs: Sequence[torch.Tensor], initial, chunk_size: int):
    """Run a chunk-parallel op over the time axis (dim 2) of ``seqs`` ``[B, H, T, ...]``.

    ``chunk_fn(slices, start, anchor, chunk_end) -> (o [B, H, L, ...], state)`` processes one chunk
    that begins at state ``start`` and takes its inner gradients at ``anchor``; ``chunk_end`` (bool,
    or bool tensor [B]) says whether the chunk completes. ``initial`` is a plain state (boundaries
    every ``chunk_size`` tokens from this call's start; the call's end closes a chunk) or a
    ``ChunkCarry`` (the grid continues; one comes back). Returns ``(o [B, H, T, ...], final)``.
    """
    T = seqs[0].shape[2]
    if not isinstance(initial, ChunkCarry):
        outs, state, _ = _scan(chunk_fn, seqs, initial, initial, 0, chunk_size, close_at_end=True)
        return torch.cat(outs, dim=2) if outs else None, state
    off = initial.offset
    if T == 1:  # one token never crosses a boundary: rows may sit at different offsets
        anchor = tree_where(off == 0, initial.state, initial.anchor)
        end = (off + 1) % chunk_size == 0
        o, state = chunk_fn(seqs, initial.state, anchor, end)
        new_off = (off + 1) % chunk_size
        return o, ChunkCarry(state, tree_where(new_off == 0, state, anchor), new_off)
    if T == 0:
        return None, initial
    if bool((off != off[0]).any()):  # rows at different offsets: their chunk grids differ
        rows = [scan_chunks(chunk_fn, [x[i:i + 1] for x in seqs], tree_map(lambda t: t[i:i + 1], initial), chunk_size)
                for i in range(off.shape[0])]
        return torch.cat([r[0] for r in rows], dim=0), tree_map(lambda *xs: torch.cat(xs, dim=0), *[r[1] for r in rows])
    o0 = int(off[0])
    anchor = initial.anchor if o0 else initial.state
    outs, state, anchor = _scan(chunk_fn, seqs, initial.state, anchor, o0, chunk_size, close_at_end=False)
    new_off = torch.full_like(off, (o0 + T) % chunk_size)
    return torch.cat(outs, dim=2), ChunkCarry(state, anchor, new_off)


def _scan(chunk_fn, seqs, state, anchor, offset, chunk_size, close_at_end):
    T = seqs[0].shape[2]
    bounds = [0, *range(chunk_size - offset, T, chunk_size), T]
    outs = []
    for a, b in zip(bounds, bounds[1:]):
        if a == b:
            continue
        boundary = (offset + b) % chunk_size == 0
        o, state = chunk_fn([x[:, :, a:b] for x in seqs], state, anchor, boundary or (close_at_end and b == T))
        outs.append(o)
        if boundary:
            anchor = state
    return outs, state, anchor


def check_knobs(knobs, choices: dict, floors: tuple = ("eps",)) -> None:
    """A knob dataclass's values: each knob named in ``choices`` is one of its choices, each named in
    ``floors`` (normalisation eps) a positive finite float."""
    for name, allowed in choices.items():
        check_choice(name, getattr(knobs, name), allowed)
    for name in floors:
        value = getattr(knobs, name)
        if not (isinstance(value, float) and 0.0 < value < float("inf")):
            raise ValueError(f"{name} must be a positive finite float, got {value!r}")


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


def check_gate_dtype(dtype: torch.dtype, **gates: torch.Tensor) -> None:
    """Gates (forget gates, step sizes) come in the inputs' ``dtype`` or in float32: under bf16/fp16
    autocast the layers compute them in float32 (0.999 would round to 1.0 in bf16)."""
    for name, g in gates.items():
        if g.dtype not in (dtype, torch.float32):
            raise TypeError(f"{name} must be in the inputs' dtype ({dtype}) or float32, got {g.dtype}")


def check_same(names: Sequence[str], sizes: Sequence[int], what: str) -> None:
    if len(set(sizes)) != 1:
        detail = ", ".join(f"{n}={s}" for n, s in zip(names, sizes))
        raise ValueError(f"mismatched {what}: {detail}")


def state_dtype(x: torch.Tensor) -> torch.dtype:
    """States and accumulations run in float32, or float64 when the inputs are float64."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def check_chunk_size(chunk_size) -> None:
    check_positive_int("chunk_size", chunk_size)


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
    ``initial_state`` (a tensor, a tuple of tensors or a ``ChunkCarry``) has a leading dim ``N``.
    Returns the concatenated outputs ``[1, T, ...]`` and the stacked final states (leading dim ``N``)
    or None.
    """
    bounds = cu_seqlens.tolist()
    n_seq = len(bounds) - 1
    if initial_state is not None:
        tree_map(lambda p: _check_rows(p, n_seq), initial_state)
    outs, finals = [], []
    for n in range(n_seq):
        a, b = bounds[n], bounds[n + 1]
        seq = [t[:, a:b] for t in tensors]
        h0 = None if initial_state is None else tree_map(lambda p: p[n : n + 1], initial_state)
        o, h = fn(*seq, initial_state=h0, output_final_state=True)
        outs.append(o)
        finals.append(h)
    out = torch.cat(outs, dim=1)
    if not output_final_state:
        return out, None
    return out, tree_map(lambda *xs: torch.cat(xs, dim=0), *finals)


def _check_rows(p: torch.Tensor, n_seq: int) -> None:
    if p.shape[0] != n_seq:
        raise ValueError(f"initial_state has {p.shape[0]} sequences but cu_seqlens describes {n_seq}")
