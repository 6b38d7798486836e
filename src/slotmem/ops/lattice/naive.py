"""The Lattice recurrence as a plain per-token loop: the ground truth (runs in float64).

With ``chunk_size=C > 1`` the same loop simulates, token by token, the chunk-parallel
approximation: every inner gradient is taken at the state the chunk started from.
``chunk_size=1`` is the exact recurrence (``docs/lattice.md``, "Recurrence").
"""
from __future__ import annotations

import torch

from ..driver import finish_naive, resolve_knobs, start_naive
from ..utils import tree_where
from .knobs import LatticeKnobs, check_inputs, default_state_like


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
    S, anchor, offset, carry, dt = start_naive(check_inputs, default_state_like, (q, k, v, eta), initial_state, chunk_size)
    T = q.shape[1]
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
    return finish_naive(outs, v, dt, S, anchor, offset, carry, chunk_size, output_final_state)
