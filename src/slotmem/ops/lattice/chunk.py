"""Chunk-parallel Lattice (``docs/lattice.md``, "Chunk-parallel form").

Chunks run one after the other; inside a chunk everything is matmuls. Inner gradients are
taken at the chunk-start state ``S0`` (``chunk_mode='stale'``) or the update is linearised
into a per-slot gate (``'linearized'``); the slot norms used by the reads are exact.
``chunk_size=1`` is the exact recurrence, so ``recurrent_lattice`` is this form with C=1. Validation,
packed sequences, dtype, carry and the scan over chunks are the shared driver's (``ops/driver.py``).

Notation per chunk (rows are the chunk's tokens): ``R`` residuals [C, d], ``P = R Ŝ0ᵀ``
[C, m], ``Bm = η ⊙ K / n0`` [C, m], ``G = R Rᵀ`` [C, C]. In slot coordinates the running
(unnormalised) state is ``u_t = S0 + Σ_{τ≤t} Be_τ Δ'_τ`` with ``Δ'_τ = r_τ - p_τ ŝ0`` (stale);
``Be = λ ⊙ Bm``, where λ=1 unless ``slot_renorm='step'`` (then ``λ_τ = ||u_{τ-1}||`` undoes
the per-token retraction, which the read is invariant to).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..driver import DEFAULT_CHUNK_SIZE, OpSpec, resolve_knobs, run_chunked
from .knobs import LatticeKnobs, check_inputs, default_state_like


def chunk_lattice(q, k, v, eta, *, knobs: LatticeKnobs | None = None, initial_state=None, output_final_state=False,
                  chunk_size=DEFAULT_CHUNK_SIZE, cu_seqlens=None, **knob_kwargs):
    """q, k: [B, T, H, m]; v: [B, T, H, d]; eta: [B, T, H] (per head) or [B, T, H, m] (per slot).

    ``knobs``: a ``LatticeKnobs``, or the knobs as keywords (``slot_renorm="step"``...).
    ``initial_state``: [B, H, m, d] (row i = slot i; [N, H, m, d] with ``cu_seqlens``), or a
    ``ChunkCarry`` of such states. Returns ``(o [B, T, H, d], final_state or None)``; o is read after
    the write. With a plain state, calls chain exactly (T1 + T2 == T) when T1 is a multiple of
    ``chunk_size``; with a ``ChunkCarry`` (one is returned) any split chains exactly.
    """
    kn = resolve_knobs("chunk_lattice", LatticeKnobs, knobs, knob_kwargs)
    return run_chunked(_LATTICE, (q, k, v, eta), knobs=kn, initial_state=initial_state,
                       output_final_state=output_final_state, chunk_size=chunk_size, cu_seqlens=cu_seqlens)


def recurrent_lattice(q, k, v, eta, *, knobs: LatticeKnobs | None = None, initial_state=None, output_final_state=False,
                      cu_seqlens=None, **knob_kwargs):
    """The exact token-by-token recurrence (the decode path): ``chunk_lattice`` with ``chunk_size=1``."""
    return chunk_lattice(q, k, v, eta, knobs=knobs, initial_state=initial_state, output_final_state=output_final_state,
                         chunk_size=1, cu_seqlens=cu_seqlens, **knob_kwargs)


def _to_heads(q, k, v, eta, dtype):
    """[B, T, H, .] -> [B, H, T, .] in the state dtype; a per-head eta gets a slot axis of 1."""
    qh, kh, vh, eh = (x.transpose(1, 2).to(dtype) for x in (q, k, v, eta))
    return qh, kh, vh, (eh[..., None] if eta.dim() == 3 else eh)


def _chunk(Q, K, V, E, S0, anchor, chunk_end, kn: LatticeKnobs):
    """One chunk. Q, K: [B, H, C, m]; V: [B, H, C, d]; E: [B, H, C, 1|m]; S0 (the running state at the
    chunk's first token) and ``anchor`` (where its inner gradients are taken; the chunk-start state,
    or an earlier one when a call resumes mid-chunk): [B, H, m, d]. ``chunk_end``: bool or [B] bool,
    whether the chunk completes (``slot_renorm='chunk'`` retracts there)."""
    C = Q.shape[-2]
    eps = kn.eps
    S0g = anchor.detach() if kn.outer_grad == "first_order" else anchor
    n0g = S0g.pow(2).sum(-1).sqrt().clamp_min(eps)
    S0hat = S0g / n0g[..., None]
    R = V if kn.objective == "similarity" else V - K @ S0hat
    P = R @ S0hat.transpose(-1, -2)
    Bm = E * K / n0g[..., None, :]
    G = R @ R.transpose(-1, -2)
    n0sq = S0.pow(2).sum(-1)
    # <s0_i, r_σ> and <s0_i, ŝ0_i> with the live S0: the cross terms of the exact read norms. When S0
    # is the anchor they are zero-valued, and give the norms the right gradient under first_order.
    W0 = R @ S0.transpose(-1, -2)
    h = (S0hat * S0).sum(-1)
    ones = torch.ones(C, C, dtype=Q.dtype, device=Q.device)
    stale = kn.chunk_mode == "stale"
    gate = None if stale else 1.0 - Bm * P / n0g[..., None, :]

    if stale and kn.slot_renorm != "step":
        Be = Bm
        strict = torch.tril(ones, -1)
        X = (G * strict) @ Be - P * (strict @ (P * Be))
        Dg = torch.diagonal(G, dim1=-2, dim2=-1)[..., None] - P * P
        n2 = n0sq[..., None, :] + torch.cumsum(Be * Be * Dg + 2 * Be * (X + W0 - P * h[..., None, :]), dim=-2)
    else:
        Be, n2 = _norm_scan(Bm, P, G, W0, h, n0sq, gate, kn)

    nr = n2 if kn.read == "after" else torch.cat([n0sq[..., None, :], n2[..., :-1, :]], dim=-2)
    Qn = Q / nr.sqrt().clamp_min(eps)
    mask = torch.tril(ones, 0 if kn.read == "after" else -1)
    if stale:
        O = Qn @ S0 + ((Qn @ Be.transpose(-1, -2)) * mask) @ R - ((mask @ (Be * P)) * Qn) @ S0hat
        u = S0 + Be.transpose(-1, -2) @ R - (Be * P).sum(-2)[..., None] * S0hat
    else:
        A = torch.cumprod(gate, dim=-2)                       # A_t = Π_{σ≤t} γ_σ   [B, H, C, m]
        D = _decay(gate) * torch.tril(ones)[..., None]      # D[t, τ] = Π_{τ<σ≤t} γ_σ   [B, H, C, C, m]
        if kn.read == "before":
            A_read = torch.cat([torch.ones_like(A[..., :1, :]), A[..., :-1, :]], dim=-2)
            D_read = F.pad(D[..., :-1, :, :], (0, 0, 0, 0, 1, 0))
        else:
            A_read, D_read = A, D
        O = (Qn * A_read) @ S0 + torch.einsum("bhti,bhtsi,bhsi->bhts", Qn, D_read, Be) @ R
        u = A[..., -1, :, None] * S0 + (D[..., -1, :, :] * Be).transpose(-1, -2) @ R
    if kn.slot_renorm == "none" or (kn.slot_renorm == "chunk" and chunk_end is False):
        return O, u
    scale = n2[..., -1, :].sqrt().clamp_min(eps)
    S = u / (scale.detach() if kn.outer_grad == "first_order" else scale)[..., None]
    if kn.slot_renorm == "chunk" and isinstance(chunk_end, torch.Tensor):
        S = torch.where(chunk_end[:, None, None, None], S, u)
    return O, S


def _decay(gate: torch.Tensor) -> torch.Tensor:
    """gate [B, H, C, m] -> D [B, H, C, C, m] with D[t, τ] = Π_{τ<σ≤t} gate_σ (1 on the diagonal).

    Gates may leave (0, 1] (even change sign), so products are taken directly, not in log space.
    """
    C = gate.shape[-2]
    later = torch.ones(C, C, dtype=torch.bool, device=gate.device).tril(-1)  # σ > τ
    factors = torch.where(later[..., None], gate[..., :, None, :], torch.ones_like(gate[..., :, None, :]))
    return torch.cumprod(factors, dim=-3)


def _norm_scan(Bm, P, G, W0, h, n0sq, gate, kn: LatticeKnobs):
    """Exact squared norms of the running slots, token by token inside the chunk (O(C² m)).

    Needed when steps depend on earlier norms (``slot_renorm='step'``) or for the linearised
    gate. Tracks ``N = ||u_t||²`` and ``Wv[σ] = <u_t, r_σ>`` for all σ of the chunk.
    Returns ``(Be, n2)``, both [B, H, C, m].
    """
    C = Bm.shape[-2]
    N, Wv = n0sq, W0
    Be_rows, n2_rows = [], []
    for t in range(C):
        lam = 1.0
        if kn.slot_renorm == "step" and t > 0:
            lam = N.sqrt().clamp_min(kn.eps)
            lam = lam.detach() if kn.outer_grad == "first_order" else lam
        bt = Bm[..., t, :] * lam
        Gt = G[..., t, :, None]  # <r_t, r_σ> for all σ: [B, H, C, 1]
        if gate is None:  # stale: u_t = u_{t-1} + b_t (r_t - p_t ŝ0)
            Pt = P[..., t, :]
            N = N + 2 * bt * (Wv[..., t, :] - Pt * h) + bt * bt * (G[..., t, t, None] - Pt * Pt)
            Wv = Wv + bt[..., None, :] * (Gt - Pt[..., None, :] * P)
        else:  # linearized: u_t = γ_t u_{t-1} + b_t r_t
            g = gate[..., t, :]
            N = g * g * N + 2 * g * bt * Wv[..., t, :] + bt * bt * G[..., t, t, None]
            Wv = g[..., None, :] * Wv + bt[..., None, :] * Gt
        Be_rows.append(bt)
        n2_rows.append(N)
    return torch.stack(Be_rows, dim=-2), torch.stack(n2_rows, dim=-2)


_LATTICE = OpSpec(check_inputs, default_state_like, _to_heads, _chunk)
