"""Chunk-parallel Trellis (``docs/trellis.md``, "Chunk-parallel form").

Chunks run one after the other; inside a chunk everything is matmuls. Every inner gradient
is taken at the chunk-start state ``M0`` (frozen Jacobian), so ``chunk_size=1`` is the exact
recurrence and ``recurrent_trellis`` is this form with C=1.

Both passes write ``M <- beta M - gamma s eᵀ`` with a slot vector ``s`` [m] and a feature
vector ``e`` [d]: pass 1 ``(u(Mk0 k), k)``; pass 2 ``(u(Mv0 v), v)`` (encode) or
``(alpha, Mv0ᵀ alpha - v)`` (decode). Per chunk, with ``l_t = sum_{j<=t} log beta_j``,
``P_t = exp(l_t)``, ``D_ts = exp(l_t - l_s)`` for ``s <= t`` (else 0), ``Gs = gamma ⊙ S``:

    M_t   = P_t M0 - sum_{s<=t} D_ts gamma_s s_s e_sᵀ
    M_t q_t   (pass 1) = P_t M0 q_t  - ((Q Eᵀ) ⊙ D) Gs
    M_tᵀ r_t  (pass 2) = P_t M0ᵀ r_t - ((R Sᵀ) ⊙ D) (gamma ⊙ E)
"""
from __future__ import annotations

from functools import partial

import torch

from ..utils import ChunkCarry, check_carry, check_chunk_size, check_cu_seqlens, run_varlen, scan_chunks, state_dtype, tree_map
from .knobs import TrellisKnobs, activation, check_inputs, parse_knobs, write_grad, default_state


def chunk_trellis(q, k, v, alpha, beta, gamma, *, initial_state=None, output_final_state=False, chunk_size=64,
                  cu_seqlens=None, **knobs):
    """q, k: [B, T, H, dk]; v: [B, T, H, dv]; alpha: [B, T, H, m]; beta (in (0, 1]), gamma: [B, T, H].

    ``initial_state``: ``(Mk [B, H, m, dk], Mv [B, H, m, dv])`` (leading dim N with ``cu_seqlens``,
    which needs B = 1), or a ``ChunkCarry`` of such pairs. Returns ``(o [B, T, H, dv], final_state or
    None)``; reads follow the writes. With a plain state, calls chain exactly (T1 + T2 == T) when T1 is
    a multiple of ``chunk_size``; with a ``ChunkCarry`` (one is returned) any split chains exactly.
    """
    kn = parse_knobs("chunk_trellis", knobs)
    check_chunk_size(chunk_size)
    packed = cu_seqlens is not None
    if isinstance(initial_state, ChunkCarry):
        rows = initial_state.offset.shape[0] if packed else q.shape[0]
        check_carry(initial_state, rows, chunk_size, lambda s: check_inputs(q, k, v, alpha, beta, gamma, s, packed=packed))
    else:
        check_inputs(q, k, v, alpha, beta, gamma, initial_state, packed=packed)
    check_cu_seqlens(cu_seqlens, q.shape[0], q.shape[1])
    if cu_seqlens is not None:
        fn = partial(chunk_trellis, chunk_size=chunk_size, **knobs)
        return run_varlen(fn, (q, k, v, alpha, beta, gamma), cu_seqlens, initial_state, output_final_state)
    B, T, H, dk = q.shape
    dv, m = v.shape[-1], alpha.shape[-1]
    dt = state_dtype(q)
    if initial_state is None:
        initial_state = default_state(B, H, m, dk, dv, dt, q.device)
    initial_state = tree_map(lambda t: t.to(dt) if t.is_floating_point() else t, initial_state)
    qh, kh, vh, ah = (x.transpose(1, 2).to(dt) for x in (q, k, v, alpha))
    logb, gh = torch.log(beta.transpose(1, 2).to(dt)), gamma.transpose(1, 2).to(dt)
    o, final = scan_chunks(lambda xs, start, anchor, end: _chunk(*xs, start, anchor, kn), (qh, kh, vh, ah, logb, gh),
                           initial_state, chunk_size)
    o = vh.new_zeros(B, H, 0, dv) if o is None else o
    return o.transpose(1, 2).to(v.dtype), (final if output_final_state else None)


def recurrent_trellis(q, k, v, alpha, beta, gamma, *, initial_state=None, output_final_state=False,
                            cu_seqlens=None, **knobs):
    """The exact token-by-token recurrence (the decode path); same shapes as ``chunk_trellis``."""
    return chunk_trellis(q, k, v, alpha, beta, gamma, initial_state=initial_state,
                         output_final_state=output_final_state, chunk_size=1, cu_seqlens=cu_seqlens, **knobs)


def _chunk(Q, K, V, A, logb, g, start, anchor, kn: TrellisKnobs):
    """One chunk. Q, K: [B, H, C, dk]; V: [B, H, C, dv]; A: [B, H, C, m]; logb, g: [B, H, C];
    ``start`` (the running state at the chunk's first token) and ``anchor`` (where the inner
    gradients are taken: the chunk-start state, or an earlier one when a call resumes mid-chunk):
    ``(Mk [B, H, m, dk], Mv [B, H, m, dv])``. Returns ``(o [B, H, C, dv], (Mk, Mv))``."""
    (Mk0, Mv0), (Mka, Mva) = start, anchor
    C = Q.shape[-2]
    ell = torch.cumsum(logb, dim=-1)                                   # l_t   [B, H, C]
    causal = torch.ones(C, C, dtype=torch.bool, device=Q.device).tril()
    D = torch.exp((ell[..., :, None] - ell[..., None, :]).masked_fill(~causal, float("-inf")))
    P = torch.exp(ell)[..., None]                                      # P_t   [B, H, C, 1]
    g = g[..., None]
    first_order = kn.outer_grad == "first_order"
    Mk0g, Mv0g = (Mka.detach(), Mva.detach()) if first_order else (Mka, Mva)  # where u is taken

    # pass 1: s = u(Mk0 k), e = k; read Ŷ = Mk_t q_t
    Sk = write_grad(K @ Mk0g.transpose(-1, -2), A, kn.phi, kn.eps)
    Yk = P * (Q @ Mk0.transpose(-1, -2)) - ((Q @ K.transpose(-1, -2)) * D) @ (g * Sk)
    R = activation(Yk, kn.f, kn.eps)
    # pass 2: read Y = Mv_tᵀ r_t
    if kn.value_objective == "encode":
        Sv, Ev = write_grad(V @ Mv0g.transpose(-1, -2), A, kn.phi, kn.eps), V
    else:
        Sv, Ev = A, A @ Mv0g - V
    Yv = P * (R @ Mv0) - ((R @ Sv.transpose(-1, -2)) * D) @ (g * Ev)
    o = activation(Yv, kn.psi, kn.eps)

    last = D[..., -1, :, None] * g                                     # D_Cs gamma_s  [B, H, C, 1]
    PC = P[..., -1:, :]
    Mk = PC * Mk0 - (last * Sk).transpose(-1, -2) @ K
    Mv = PC * Mv0 - (last * Sv).transpose(-1, -2) @ Ev
    return o, (Mk, Mv)
