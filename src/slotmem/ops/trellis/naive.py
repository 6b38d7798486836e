"""The Trellis recurrence as a plain per-token loop: the ground truth (runs in float64).

With ``chunk_size=C > 1`` the same loop simulates, token by token, the chunk-parallel
approximation: every inner gradient is taken at the state the chunk started from (frozen
Jacobian). ``chunk_size=1`` is the exact recurrence of the spec.
"""
from __future__ import annotations

import torch

from ..driver import resolve_knobs
from ..utils import ChunkCarry, check_carry, check_chunk_size, state_dtype, tree_where
from .knobs import TrellisKnobs, activation, check_inputs, default_state, write_grad


def naive_trellis(q, k, v, alpha, beta, gamma, *, initial_state=None, output_final_state=False, chunk_size=1,
                  knobs=None, **knob_kwargs):
    """q, k: [B, T, H, dk]; v: [B, T, H, dv]; alpha: [B, T, H, m]; beta, gamma: [B, T, H].

    State ``(Mk [B, H, m, dk], Mv [B, H, m, dv])``, zeros by default, or a ``ChunkCarry`` (the chunk
    grid continues from the previous call; one is returned). Returns ``(o [B, T, H, dv], state or None)``.
    """
    kn = resolve_knobs("naive_trellis", TrellisKnobs, knobs, knob_kwargs)
    check_chunk_size(chunk_size)
    B, T, H, dk = q.shape
    dv, m = v.shape[-1], alpha.shape[-1]
    dt = state_dtype(q)
    carry = isinstance(initial_state, ChunkCarry)
    if carry:
        check_carry(initial_state, B, chunk_size, lambda s: check_inputs(q, k, v, alpha, beta, gamma, s))
        Mk, Mv = (s.to(dt) for s in initial_state.state)
        anchor, offset = tuple(s.to(dt) for s in initial_state.anchor), initial_state.offset
    else:
        check_inputs(q, k, v, alpha, beta, gamma, initial_state)
        Mk, Mv = default_state(B, H, m, dk, dv, dt, q.device) if initial_state is None else (s.to(dt) for s in initial_state)
        anchor, offset = (Mk, Mv), torch.zeros(B, dtype=torch.long, device=q.device)
    outs = []
    for t in range(T):
        qt, kt, vt, at = (x[:, t].to(dt) for x in (q, k, v, alpha))
        bt, gt = (x[:, t].to(dt)[..., None, None] for x in (beta, gamma))
        anchor = tree_where((offset + t) % chunk_size == 0, (Mk, Mv), anchor)  # a chunk starts: anchor here
        Ak, Av = tuple(a.detach() for a in anchor) if kn.outer_grad == "first_order" else anchor
        # pass 1: Mk <- beta Mk - gamma u k^T, u = J_phi^T (phi(Mk k) - alpha); read Mk q
        uk = write_grad(torch.einsum("bhmd,bhd->bhm", Ak, kt), at, kn.phi, kn.eps)
        Mk = bt * Mk - gt * uk[..., None] * kt[..., None, :]
        r = activation(torch.einsum("bhmd,bhd->bhm", Mk, qt), kn.f, kn.eps)
        # pass 2: Mv <- beta Mv - gamma s e^T; read Mv^T r
        if kn.value_objective == "encode":
            s, e = write_grad(torch.einsum("bhmd,bhd->bhm", Av, vt), at, kn.phi, kn.eps), vt
        else:
            s, e = at, torch.einsum("bhmd,bhm->bhd", Av, at) - vt
        Mv = bt * Mv - gt * s[..., None] * e[..., None, :]
        outs.append(activation(torch.einsum("bhmd,bhm->bhd", Mv, r), kn.psi, kn.eps))
    o = torch.stack(outs, dim=1) if outs else v.new_zeros(B, 0, H, dv, dtype=dt)
    if not output_final_state:
        return o.to(v.dtype), None
    if not carry:
        return o.to(v.dtype), (Mk, Mv)
    new_offset = (offset + T) % chunk_size
    return o.to(v.dtype), ChunkCarry((Mk, Mv), tree_where(new_offset == 0, (Mk, Mv), anchor), new_offset)
