"""Chunk-parallel Trellis (``docs/trellis.md``, "Chunk-parallel form").

Chunks run one after the other; inside a chunk everything is matmuls. Every inner gradient
is taken at the chunk-start state ``M0`` (frozen Jacobian), so ``chunk_size=1`` is the exact
recurrence and ``recurrent_trellis`` is this form with C=1. Validation, packed sequences, dtype, carry
and the scan over chunks are the shared driver's (``ops/driver.py``).

Both passes write ``M <- beta M - gamma s eᵀ`` with a slot vector ``s`` [m] and a feature
vector ``e`` [d]: pass 1 ``(u(Mk0 k), k)``; pass 2 ``(u(Mv0 v), v)`` (encode) or
``(alpha, Mv0ᵀ alpha - v)`` (decode). Per chunk, with ``l_t = sum_{j<=t} log beta_j``,
``P_t = exp(l_t)``, ``D_ts = exp(l_t - l_s)`` for ``s <= t`` (else 0), ``Gs = gamma ⊙ S``:

    M_t   = P_t M0 - sum_{s<=t} D_ts gamma_s s_s e_sᵀ
    M_t q_t   (pass 1) = P_t M0 q_t  - ((Q Eᵀ) ⊙ D) Gs
    M_tᵀ r_t  (pass 2) = P_t M0ᵀ r_t - ((R Sᵀ) ⊙ D) (gamma ⊙ E)

With a rest state ``M̄`` the forget gate pulls the memory toward ``M̄`` instead of toward 0,
``M_t = beta_t M_{t-1} + (1 - beta_t) M̄ - gamma_t s_t e_tᵀ``; unrolled in a chunk the pulls sum to
``(1 - P_t) M̄`` (the sum telescopes), one more term in each read and in the chunk-end state.
"""
from __future__ import annotations

from dataclasses import replace
from functools import partial

import torch

from ..driver import DEFAULT_CHUNK_SIZE, OpSpec, resolve_knobs, run_chunked
from .knobs import TrellisKnobs, activation, check_inputs, check_rest_state, default_state_like, write_gain, write_grad


def chunk_trellis(q, k, v, alpha, beta, gamma, *, knobs: TrellisKnobs | None = None, initial_state=None,
                  output_final_state=False, chunk_size=DEFAULT_CHUNK_SIZE, cu_seqlens=None, rest_state=None,
                  **knob_kwargs):
    """q, k: [B, T, H, dk]; v: [B, T, H, dv]; alpha: [B, T, H, m]; beta (in (0, 1]), gamma: [B, T, H].

    ``knobs``: a ``TrellisKnobs``, or the knobs as keywords (``phi="identity"``...).
    ``initial_state``: ``(Mk [B, H, m, dk], Mv [B, H, m, dv])`` (leading dim N with ``cu_seqlens``,
    which needs B = 1), or a ``ChunkCarry`` of such pairs. Returns ``(o [B, T, H, dv], final_state or
    None)``; reads follow the writes. With a plain state, calls chain exactly (T1 + T2 == T) when T1 is
    a multiple of ``chunk_size``; with a ``ChunkCarry`` (one is returned) any split chains exactly.
    ``rest_state``: ``(M̄k [H, m, dk], M̄v [H, m, dv])``, shared by every sequence, toward which the forget
    gate pulls the memories (``M_t = beta M_{t-1} + (1 - beta) M̄ - ...``); None: toward 0.
    """
    kn = resolve_knobs("chunk_trellis", TrellisKnobs, knobs, knob_kwargs)
    spec = _TRELLIS
    if rest_state is not None:
        check_rest_state(rest_state, q, v, alpha)
        spec = replace(spec, chunk=partial(_chunk, rest=rest_state))
    return run_chunked(spec, (q, k, v, alpha, beta, gamma), knobs=kn, initial_state=initial_state,
                       output_final_state=output_final_state, chunk_size=chunk_size, cu_seqlens=cu_seqlens)


def recurrent_trellis(q, k, v, alpha, beta, gamma, *, knobs: TrellisKnobs | None = None, initial_state=None,
                      output_final_state=False, cu_seqlens=None, rest_state=None, **knob_kwargs):
    """The exact token-by-token recurrence (the decode path): ``chunk_trellis`` with ``chunk_size=1``."""
    return chunk_trellis(q, k, v, alpha, beta, gamma, knobs=knobs, initial_state=initial_state,
                         output_final_state=output_final_state, chunk_size=1, cu_seqlens=cu_seqlens,
                         rest_state=rest_state, **knob_kwargs)


def _to_heads(q, k, v, alpha, beta, gamma, dtype):
    """[B, T, H, .] -> [B, H, T, .] in the state dtype; beta as log beta."""
    qh, kh, vh, ah, bh, gh = (x.transpose(1, 2).to(dtype) for x in (q, k, v, alpha, beta, gamma))
    return qh, kh, vh, ah, torch.log(bh), gh


def _chunk(Q, K, V, A, logb, g, start, anchor, chunk_end, kn: TrellisKnobs, rest=None):
    """One chunk. Q, K: [B, H, C, dk]; V: [B, H, C, dv]; A: [B, H, C, m]; logb, g: [B, H, C];
    ``start`` (the running state at the chunk's first token) and ``anchor`` (where the inner
    gradients are taken: the chunk-start state, or an earlier one when a call resumes mid-chunk):
    ``(Mk [B, H, m, dk], Mv [B, H, m, dv])``. ``chunk_end`` is unused: a Trellis chunk ends with no
    extra step. ``rest``: ``(M̄k [H, m, dk], M̄v [H, m, dv])`` or None (see ``chunk_trellis``).
    Returns ``(o [B, H, C, dv], (Mk, Mv))``."""
    (Mk0, Mv0), (Mka, Mva) = start, anchor
    C = Q.shape[-2]
    ell = torch.cumsum(logb, dim=-1)                                   # l_t   [B, H, C]
    causal = torch.ones(C, C, dtype=torch.bool, device=Q.device).tril()
    D = torch.exp((ell[..., :, None] - ell[..., None, :]).masked_fill(~causal, float("-inf")))
    P = torch.exp(ell)[..., None]                                      # P_t   [B, H, C, 1]
    g = g[..., None]
    first_order = kn.outer_grad == "first_order"
    Mk0g, Mv0g = (Mka.detach(), Mva.detach()) if first_order else (Mka, Mva)  # where u is taken

    if rest is not None:  # the pull toward the rest state, (1 - P_t) M̄, computed as -expm1(l_t)
        Rk, Rv = (x.to(Mk0.dtype) for x in rest)
        pulled = -torch.expm1(ell)[..., None]                          # 1 - P_t  [B, H, C, 1]
    delta = kn.chunk_mode == "delta"
    if delta:  # what the chunk's earlier writes change: M_{t-1} - M_anchor = P_{t-1} M_start - M_anchor (+ pull) - ...
        ell_prev = ell - logb                                          # l_{t-1}
        before = torch.ones(C, C, dtype=torch.bool, device=Q.device).tril(-1)  # j < t
        Dprev = torch.exp((ell_prev[..., :, None] - ell[..., None, :]).masked_fill(~before, float("-inf")))
        Pprev = torch.exp(ell_prev)[..., None]                         # P_{t-1}  [B, H, C, 1]
        # first_order: u takes no gradient through the state M_{t-1} (only through w_t, alpha_t)
        sg = torch.Tensor.detach if first_order else (lambda x: x)

        def corrected(X0, W, Ms, Ma, Mrest, gain, transpose):
            """``X_t = X0_t + gain_t (M_{t-1} - M_a) w_t`` for X0 [B, H, C, n] taken at ``Ma``, W [B, H, C, n'],
            chunk-start state ``Ms``. The chunk's own writes make it a unit lower-triangular system,
            ``(I + gain ⊙ ((W Wᵀ) ⊙ D_prev) diag(γ)) X = X0 + gain ⊙ known``."""
            at = (lambda M: W @ M) if transpose else (lambda M: W @ M.transpose(-1, -2))
            known = sg(Pprev) * at(sg(Ms)) - at(Ma)
            if Mrest is not None:
                known = known + sg(-torch.expm1(ell_prev)[..., None]) * at(sg(Mrest))
            coef = (W @ sg(W).transpose(-1, -2)) * sg(Dprev) * sg(g).transpose(-1, -2)
            rhs = X0 + gain * known
            if not first_order:
                return torch.linalg.solve_triangular(gain * coef, rhs, upper=False, unitriangular=True)
            X = torch.linalg.solve_triangular((gain * coef).detach(), rhs.detach(), upper=False, unitriangular=True)
            return rhs - gain * (coef @ X.detach())  # = X, with the earlier writes' part held constant

    # pass 1: s = u(Mk0 k), e = k; read Ŷ = Mk_t q_t
    Zk = K @ Mk0g.transpose(-1, -2)
    Sk = write_grad(Zk, A, kn.phi, kn.eps)
    if delta:
        Sk = corrected(Sk, K, Mk0, Mk0g, None if rest is None else Rk, write_gain(Zk, kn.phi, kn.eps), transpose=False)
    Yk = P * (Q @ Mk0.transpose(-1, -2)) - ((Q @ K.transpose(-1, -2)) * D) @ (g * Sk)
    if rest is not None:
        Yk = Yk + pulled * (Q @ Rk.transpose(-1, -2))
    R = activation(Yk, kn.f, kn.read_eps)
    # pass 2: read Y = Mv_tᵀ r_t
    if kn.value_objective == "encode":
        Zv = V @ Mv0g.transpose(-1, -2)
        Sv, Ev = write_grad(Zv, A, kn.phi, kn.eps), V
        if delta:
            Sv = corrected(Sv, V, Mv0, Mv0g, None if rest is None else Rv, write_gain(Zv, kn.phi, kn.eps), transpose=False)
    else:
        Sv, Ev = A, A @ Mv0g - V
        if delta:  # the decode residual is linear in the state: exact
            Ev = corrected(Ev, A, Mv0, Mv0g, None if rest is None else Rv, 1.0, transpose=True)
    Yv = P * (R @ Mv0) - ((R @ Sv.transpose(-1, -2)) * D) @ (g * Ev)
    if rest is not None:
        Yv = Yv + pulled * (R @ Rv)
    o = activation(Yv, kn.psi, kn.read_eps)

    last = D[..., -1, :, None] * g                                     # D_Cs gamma_s  [B, H, C, 1]
    PC = P[..., -1:, :]
    Mk = PC * Mk0 - (last * Sk).transpose(-1, -2) @ K
    Mv = PC * Mv0 - (last * Sv).transpose(-1, -2) @ Ev
    if rest is not None:
        Mk, Mv = Mk + pulled[..., -1:, :] * Rk, Mv + pulled[..., -1:, :] * Rv
    return o, (Mk, Mv)


_TRELLIS = OpSpec(check_inputs, default_state_like, _to_heads, _chunk)
