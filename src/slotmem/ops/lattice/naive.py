"""The Lattice recurrence as a plain per-token loop: the ground truth (runs in float64).

With ``chunk_size=C > 1`` the same loop simulates, token by token, the chunk-parallel
approximation: every inner gradient is taken at the state the chunk started from.
``chunk_size=1`` is the exact recurrence of the spec.
"""
from __future__ import annotations

import torch

from ..driver import resolve_knobs
from ..utils import ChunkCarry, check_carry, check_chunk_size, state_dtype, tree_where
from .knobs import LatticeKnobs, check_inputs, default_state


def _norms(S: torch.Tensor, eps: float) -> torch.Tensor:
    """S: [B, H, m, d] -> slot norms [B, H, m]."""
    return S.pow(2).sum(-1).sqrt().clamp_min(eps)


def naive_lattice(q, k, v, eta, *, initial_state=None, output_final_state=False, chunk_size=1, knobs=None,
                  **knob_kwargs):
    """q, k: [B, T, H, m]; v: [B, T, H, d]; eta: [B, T, H] or [B, T, H, m].

    State ``[B, H, m, d]`` (row i = slot i), or a ``ChunkCarry`` (the chunk grid continues from the
    previous call; one is returned). Returns ``(o [B, T, H, d], final_state or None)``.
    """
    kn = resolve_knobs("naive_lattice", LatticeKnobs, knobs, knob_kwargs)
    check_chunk_size(chunk_size)
    B, T, H, m = q.shape
    d = v.shape[-1]
    dt = state_dtype(q)
    carry = isinstance(initial_state, ChunkCarry)
    if carry:
        check_carry(initial_state, B, chunk_size, lambda s: check_inputs(q, k, v, eta, s))
        S, anchor, offset = initial_state.state.to(dt), initial_state.anchor.to(dt), initial_state.offset
    else:
        check_inputs(q, k, v, eta, initial_state)
        S = default_state(B, H, m, d, dt, q.device) if initial_state is None else initial_state.to(dt)
        anchor, offset = S, torch.zeros(B, dtype=torch.long, device=q.device)
    per_slot = eta.dim() == 4
    outs = []
    for t in range(T):
        qt, kt, vt = q[:, t].to(dt), k[:, t].to(dt), v[:, t].to(dt)
        et = eta[:, t].to(dt) if per_slot else eta[:, t].to(dt)[..., None]
        anchor = tree_where((offset + t) % chunk_size == 0, S, anchor)  # a chunk starts: anchor here
        A = anchor.detach() if kn.outer_grad == "first_order" else anchor
        n0 = _norms(A, kn.eps)
        S0hat = A / n0[..., None]
        if kn.read == "before":
            outs.append(torch.einsum("bhm,bhmd->bhd", qt / _norms(S, kn.eps), S))
        r = vt if kn.objective == "similarity" else vt - torch.einsum("bhm,bhmd->bhd", kt, S0hat)
        p = torch.einsum("bhmd,bhd->bhm", S0hat, r)
        b = et * kt / n0
        if kn.chunk_mode == "stale":
            S = S + b[..., None] * r[:, :, None, :] - (b * p)[..., None] * S0hat
        else:  # linearized: per-slot gate on the running state
            gate = 1.0 - b * p / n0
            S = gate[..., None] * S + b[..., None] * r[:, :, None, :]
        chunk_end = ((offset + t + 1) % chunk_size == 0) | (not carry and t == T - 1)
        if kn.slot_renorm != "none":
            scale = _norms(S, kn.eps)
            S_unit = S / (scale.detach() if kn.outer_grad == "first_order" else scale)[..., None]
            S = S_unit if kn.slot_renorm == "step" else tree_where(chunk_end, S_unit, S)
        if kn.read == "after":
            outs.append(torch.einsum("bhm,bhmd->bhd", qt / _norms(S, kn.eps), S))
    o = torch.stack(outs, dim=1) if outs else v.new_zeros(B, 0, H, d, dtype=dt)
    if not output_final_state:
        return o.to(v.dtype), None
    if not carry:
        return o.to(v.dtype), S
    new_offset = (offset + T) % chunk_size
    return o.to(v.dtype), ChunkCarry(S, tree_where(new_offset == 0, S, anchor), new_offset)
