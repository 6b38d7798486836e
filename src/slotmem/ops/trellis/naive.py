"""The Trellis recurrence as a plain per-token loop: the ground truth (runs in float64).

With ``chunk_size=C > 1`` the same loop simulates, token by token, the chunk-parallel
approximation: every inner gradient is taken at the state the chunk started from (frozen
Jacobian; ``chunk_mode='delta'`` adds ``write_gain · (M_{t-1} - M_anchor) w_t``, the stale gradient's
first-order change). ``chunk_size=1`` is the exact recurrence (``docs/trellis.md``, "Recurrence").
"""
from __future__ import annotations

import torch

from ..driver import finish_naive, resolve_knobs, start_naive
from ..utils import tree_where
from .knobs import TrellisKnobs, activation, check_inputs, check_rest_state, default_state_like, write_gain, write_grad


def naive_trellis(q, k, v, alpha, beta, gamma, *, initial_state=None, output_final_state=False, chunk_size=1,
                  rest_state=None, knobs=None, **knob_kwargs):
    """q, k: [B, T, H, dk]; v: [B, T, H, dv]; alpha: [B, T, H, m]; beta, gamma: [B, T, H].

    State ``(Mk [B, H, m, dk], Mv [B, H, m, dv])``, zeros by default, or a ``ChunkCarry`` (the chunk
    grid continues from the previous call; one is returned). ``rest_state``: ``(M̄k [H, m, dk],
    M̄v [H, m, dv])``, toward which the forget gate pulls (``M = beta M + (1 - beta) M̄ - ...``), or None
    (toward 0). Returns ``(o [B, T, H, dv], state or None)``.
    """
    kn = resolve_knobs("naive_trellis", TrellisKnobs, knobs, knob_kwargs)
    inputs = (q, k, v, alpha, beta, gamma)
    (Mk, Mv), anchor, offset, carry, dt = start_naive(check_inputs, default_state_like, inputs, initial_state, chunk_size)
    if rest_state is not None:
        check_rest_state(rest_state, q, v, alpha)
    Rk, Rv = (0.0, 0.0) if rest_state is None else (x.to(dt) for x in rest_state)
    first_order, delta = kn.outer_grad == "first_order", kn.chunk_mode == "delta"

    def drift(anchor_M, M):
        """``M_{t-1} - M_anchor`` for chunk_mode='delta' (no gradient through the state with first_order), else 0."""
        return ((M.detach() if first_order else M) - anchor_M) if delta else torch.zeros_like(M)

    def write(anchor_M, M, w, a):
        """u for the write of w: J_phiᵀ(phi(z) - alpha) at z = M_anchor w (+ the delta correction)."""
        z = torch.einsum("bhmd,bhd->bhm", anchor_M, w)
        u = write_grad(z, a, kn.phi, kn.eps)
        return u + write_gain(z, kn.phi, kn.eps) * torch.einsum("bhmd,bhd->bhm", drift(anchor_M, M), w) if delta else u

    T = q.shape[1]
    outs = []
    for t in range(T):
        qt, kt, vt, at = (x[:, t].to(dt) for x in (q, k, v, alpha))
        bt, gt = (x[:, t].to(dt)[..., None, None] for x in (beta, gamma))
        anchor = tree_where((offset + t) % chunk_size == 0, (Mk, Mv), anchor)  # a chunk starts: anchor here
        Ak, Av = tuple(a.detach() for a in anchor) if first_order else anchor
        # pass 1: Mk <- beta Mk - gamma u k^T, u = J_phi^T (phi(Mk k) - alpha); read Mk q
        uk = write(Ak, Mk, kt, at)
        Mk = bt * Mk + (1 - bt) * Rk - gt * uk[..., None] * kt[..., None, :]
        r = activation(torch.einsum("bhmd,bhd->bhm", Mk, qt), kn.f, kn.read_eps)
        # pass 2: Mv <- beta Mv - gamma s e^T; read Mv^T r
        if kn.value_objective == "encode":
            s, e = write(Av, Mv, vt, at), vt
        else:
            s, e = at, torch.einsum("bhmd,bhm->bhd", Av + drift(Av, Mv), at) - vt
        Mv = bt * Mv + (1 - bt) * Rv - gt * s[..., None] * e[..., None, :]
        outs.append(activation(torch.einsum("bhmd,bhm->bhd", Mv, r), kn.psi, kn.read_eps))
    return finish_naive(outs, v, dt, (Mk, Mv), anchor, offset, carry, chunk_size, output_final_state)
