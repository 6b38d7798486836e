"""The Lattice knobs (``docs/lattice.md``, "Knobs") and input validation shared by all forms.

Every default here is ours (a reconstruction), not a value taken from the paper.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..utils import check_gate_dtype, check_knobs, check_tensor

OBJECTIVES = ("reconstruct", "similarity")
SLOT_RENORMS = ("none", "step", "chunk")
CHUNK_MODES = ("stale", "linearized")
READS = ("after", "before")
OUTER_GRADS = ("full", "first_order")


@dataclass(frozen=True)
class LatticeKnobs:
    """objective: residual ``r = v - Ŝk`` (reconstruct) or ``r = v`` (similarity, Oja-like).
    slot_renorm: none | step (unit slots after every token) | chunk (at chunk ends).
    chunk_mode: stale (inner gradients at the chunk-start state) | linearized (per-slot gate).
    read: after | before the write.  outer_grad: full | first_order (inner step from a
    detached state).  eps: floor on slot norms."""

    objective: str = "reconstruct"
    slot_renorm: str = "none"
    chunk_mode: str = "stale"
    read: str = "after"
    outer_grad: str = "full"
    eps: float = 1e-6

    def __post_init__(self):
        check_knobs(self, {"objective": OBJECTIVES, "slot_renorm": SLOT_RENORMS, "chunk_mode": CHUNK_MODES,
                           "read": READS, "outer_grad": OUTER_GRADS})


def check_inputs(q, k, v, eta, initial_state, packed: bool = False) -> None:
    """q, k: [B, T, H, m]; v: [B, T, H, d]; eta: [B, T, H] or [B, T, H, m]; state [B, H, m, d]
    (with ``packed`` — ``cu_seqlens`` — one row per sequence, which ``run_varlen`` checks)."""
    for name, x in (("q", q), ("k", k), ("v", v)):
        check_tensor(name, x, 4)
    check_tensor("eta", eta, 4 if isinstance(eta, torch.Tensor) and eta.dim() == 4 else 3)
    if q.shape != k.shape:
        raise ValueError(f"q and k must have the same shape [B, T, H, m], got {tuple(q.shape)} and {tuple(k.shape)}")
    B, T, H, m = q.shape
    if v.shape[:3] != q.shape[:3]:
        raise ValueError(f"v must be [B, T, H, d] with B, T, H of q {tuple(q.shape[:3])}, got {tuple(v.shape)}")
    if eta.shape[:3] != q.shape[:3] or (eta.dim() == 4 and eta.shape[3] != m):
        raise ValueError(f"eta must be [B, T, H] (per head) or [B, T, H, m] (per slot), got {tuple(eta.shape)} for q {tuple(q.shape)}")
    dtypes = {x.dtype for x in (q, k, v)}
    if len(dtypes) != 1:
        raise TypeError(f"q, k, v must share one dtype, got {sorted(str(d) for d in dtypes)}")
    check_gate_dtype(q.dtype, eta=eta)
    if initial_state is not None:
        d = v.shape[-1]
        if not isinstance(initial_state, torch.Tensor) or initial_state.dim() != 4:
            raise ValueError("initial_state must be a tensor [B, H, m, d]")
        if initial_state.shape[1:] != (H, m, d) or (not packed and initial_state.shape[0] != B):
            n = "N" if packed else f"B={B}"
            raise ValueError(f"initial_state must be [{n}, H={H}, m={m}, d={d}], got {tuple(initial_state.shape)}")


def default_state(batch: int, heads: int, m: int, d: int, dtype, device) -> torch.Tensor:
    """The state used when ``initial_state=None``: slot i is the unit vector e_(i mod d).

    A zero slot has no direction, so Lattice never starts from zeros. Layers learn their own S_0.
    """
    eye = torch.eye(d, dtype=dtype, device=device)
    rows = eye[torch.arange(m, device=device) % d]
    return rows.expand(batch, heads, m, d).clone()


def default_state_like(q, k, v, eta, dtype) -> torch.Tensor:
    """``default_state`` for the op's inputs (shapes as ``check_inputs``)."""
    B, _, H, m = q.shape
    return default_state(B, H, m, v.shape[-1], dtype, q.device)
