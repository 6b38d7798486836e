"""The driver both chunked ops run on (``chunk_lattice``, ``chunk_trellis``): knobs, validation,
packed sequences (``cu_seqlens``), the state dtype, the chunk-grid carry and the scan over chunks.

An op brings an ``OpSpec`` (how to check its inputs, its default state, how to lay its inputs out
per head, and its one-chunk function); everything else is here, once. The reference loops
(``naive_*``) share their start and end here too (``start_naive``, ``finish_naive``).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Callable

import torch

from .utils import ChunkCarry, check_carry, check_chunk_size, check_cu_seqlens, check_no_extra, run_varlen, scan_chunks
from .utils import state_dtype, tree_map, tree_where

DEFAULT_CHUNK_SIZE = 64  # the one default of every chunked op and slot-memory layer


@dataclass(frozen=True)
class OpSpec:
    """What one op brings. ``check_inputs(*inputs, state, packed=)`` raises on bad shapes/dtypes;
    ``default_state(*inputs, dtype)`` is the state when none is given; ``to_heads(*inputs, dtype)`` gives
    the sequences ``[B, H, T, ...]`` the chunk function reads (the value sequence third);
    ``chunk(*seqs, start, anchor, chunk_end, knobs) -> (o [B, H, C, dv], state)`` runs one chunk."""

    check_inputs: Callable
    default_state: Callable
    to_heads: Callable
    chunk: Callable


def resolve_knobs(op: str, knobs_class: type, knobs, knob_kwargs: dict):
    """The knob object of a call to ``op``: ``knobs`` as given (a ``knobs_class``, validated when it was
    made), or one built (and validated) from keyword knobs; unknown keywords are errors."""
    if knobs is None:
        check_no_extra(op, {k: v for k, v in knob_kwargs.items() if k not in knobs_class.__dataclass_fields__})
        return knobs_class(**knob_kwargs)
    if knob_kwargs:
        raise TypeError(f"{op}() got knobs= and knob keywords {sorted(knob_kwargs)}; pass one of them")
    if not isinstance(knobs, knobs_class):
        raise TypeError(f"{op}(): knobs must be a {knobs_class.__name__}, got {type(knobs).__name__}")
    return knobs


def run_chunked(spec: OpSpec, inputs: tuple, *, knobs, initial_state, output_final_state: bool, chunk_size: int,
                cu_seqlens):
    """Validate once, then run the op densely or per packed sequence. ``inputs`` are ``[B, T, H, ...]``
    (the values third); ``initial_state`` a plain state, a ``ChunkCarry`` or None. Returns
    ``(o [B, T, H, dv], final state or None)``."""
    check_chunk_size(chunk_size)
    packed = cu_seqlens is not None
    if isinstance(initial_state, ChunkCarry):
        rows = initial_state.offset.shape[0] if packed else inputs[0].shape[0]
        check_carry(initial_state, rows, chunk_size, lambda s: spec.check_inputs(*inputs, s, packed=packed))
    else:
        spec.check_inputs(*inputs, initial_state, packed=packed)
    check_cu_seqlens(cu_seqlens, inputs[0].shape[0], inputs[0].shape[1])
    run = partial(_run_dense, spec, knobs=knobs, chunk_size=chunk_size)
    if packed:
        return run_varlen(run, inputs, cu_seqlens, initial_state, output_final_state)
    return run(*inputs, initial_state=initial_state, output_final_state=output_final_state)


def _run_dense(spec: OpSpec, *inputs, knobs, chunk_size: int, initial_state, output_final_state: bool):
    """One batch of whole sequences (inputs already validated)."""
    q, v = inputs[0], inputs[2]
    dt = state_dtype(q)
    if initial_state is None:
        initial_state = spec.default_state(*inputs, dt)
    initial_state = tree_map(lambda t: t.to(dt) if t.is_floating_point() else t, initial_state)
    seqs = spec.to_heads(*inputs, dt)
    o, final = scan_chunks(lambda xs, start, anchor, end: spec.chunk(*xs, start, anchor, end, knobs), seqs,
                           initial_state, chunk_size)
    B, _, H = q.shape[:3]
    o = seqs[2].new_zeros(B, H, 0, v.shape[-1]) if o is None else o
    return o.transpose(1, 2).to(v.dtype), (final if output_final_state else None)


def start_naive(check_inputs: Callable, default_state: Callable, inputs: tuple, initial_state, chunk_size: int):
    """The start of a reference loop: validation, then ``(state, anchor, offset [B], carry, dtype)`` in the
    state dtype. ``carry``: whether ``initial_state`` was a ``ChunkCarry`` (the grid continues)."""
    check_chunk_size(chunk_size)
    q = inputs[0]
    dt = state_dtype(q)

    def to_dt(s):
        return tree_map(lambda t: t.to(dt), s)

    if isinstance(initial_state, ChunkCarry):
        check_carry(initial_state, q.shape[0], chunk_size, lambda s: check_inputs(*inputs, s))
        return to_dt(initial_state.state), to_dt(initial_state.anchor), initial_state.offset, True, dt
    check_inputs(*inputs, initial_state)
    state = default_state(*inputs, dt) if initial_state is None else to_dt(initial_state)
    return state, state, torch.zeros(q.shape[0], dtype=torch.long, device=q.device), False, dt


def finish_naive(outs: list, v, dtype, state, anchor, offset, carry: bool, chunk_size: int, output_final_state: bool):
    """The end of a reference loop: ``(o [B, T, H, dv] in v's dtype, final state, a ChunkCarry or None)``
    from the per-token outputs ``outs`` ([B, H, dv] each)."""
    B, T, H, dv = v.shape
    o = (torch.stack(outs, dim=1) if outs else v.new_zeros(B, 0, H, dv, dtype=dtype)).to(v.dtype)
    if not output_final_state:
        return o, None
    if not carry:
        return o, state
    new_offset = (offset + T) % chunk_size
    return o, ChunkCarry(state, tree_where(new_offset == 0, state, anchor), new_offset)
