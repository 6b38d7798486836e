"""The Lattice recurrence as a plain per-token loop: the ground truth (runs in float64).

With ``chunk_size=C > 1`` the same loop simulates, token by token, the chunk-parallel
approximation: every inner gradient is taken at the state the chunk started from.
``chunk_size=1`` is the exact recurrence of the spec.
"""
from __future__ import annotations

import torch

from ..utils import check_chunk_size, state_dtype
from .knobs import check_inputs, default_state, parse_knobs


def _norms(S: torch.Tensor, eps: float) -> torch.Tensor:
    """S: [B, H, m, d] -> slot norms [B, H, m]."""
    return S.pow(2).sum(-1).sqrt().clamp_min(eps)


def naive_lattice(q, k, v, eta, *, initial_state=None, output_final_state=False, chunk_size=1, **knobs):
    """q, k: [B, T, H, m]; v: [B, T, H, d]; eta: [B, T, H] or [B, T, H, m].

    State ``[B, H, m, d]`` (row i = slot i). Returns ``(o [B, T, H, d], final_state or None)``.
    """
    kn = parse_knobs("naive_lattice", knobs)
    check_inputs(q, k, v, eta, initial_state)
    check_chunk_size(chunk_size)
    B, T, H, m = q.shape
    d = v.shape[-1]
    dt = state_dtype(q)
    S = default_state(B, H, m, d, dt, q.device) if initial_state is None else initial_state.to(dt)
    per_slot = eta.dim() == 4
    outs = []
    for t in range(T):
        qt, kt, vt = q[:, t].to(dt), k[:, t].to(dt), v[:, t].to(dt)
        et = eta[:, t].to(dt) if per_slot else eta[:, t].to(dt)[..., None]
        if t % chunk_size == 0:
            anchor = S.detach() if kn.outer_grad == "first_order" else S
        n0 = _norms(anchor, kn.eps)
        S0hat = anchor / n0[..., None]
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
        chunk_end = (t + 1) % chunk_size == 0 or t == T - 1
        if kn.slot_renorm == "step" or (kn.slot_renorm == "chunk" and chunk_end):
            scale = _norms(S, kn.eps)
            S = S / (scale.detach() if kn.outer_grad == "first_order" else scale)[..., None]
        if kn.read == "after":
            outs.append(torch.einsum("bhm,bhmd->bhd", qt / _norms(S, kn.eps), S))
    o = torch.stack(outs, dim=1) if outs else v.new_zeros(B, 0, H, d, dtype=dt)
    return o.to(v.dtype), (S if output_final_state else None)
