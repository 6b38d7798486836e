"""The Trellis knobs (``docs/trellis.md``, "Knobs"), the maps they name, and input validation.

Every default here is ours (a reconstruction), not a value taken from the paper. All maps
act on the last axis (the slot axis for ``phi`` and ``f``, the value axis for ``psi``).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..utils import NonFiniteInputError, check_gate_dtype, check_knobs, check_tensor

PHIS = ("identity", "silu", "ln_silu", "l2_silu")
FS = ("ln_silu", "l2_silu", "softmax", "identity")
PSIS = ("none", "ln_silu", "l2_silu")
VALUE_OBJECTIVES = ("encode", "decode")
OUTER_GRADS = ("full", "first_order")
CHUNK_MODES = ("stale", "delta")


@dataclass(frozen=True)
class TrellisKnobs:
    """phi: write nonlinearity in the loss ``½||phi(M w) - alpha||²``.  f: inter-pass map
    ``r = f(Mk q)``.  psi: readout ``o = psi(Mvᵀ r)``.  value_objective: encode (``Mv`` is
    written like ``Mk`` with ``w = v``) | decode (loss ``½||Mvᵀ alpha - v||²``).
    outer_grad: full | first_order (the inner gradient is taken at a detached state).
    eps: added to the variance (LayerNorm) or squared norm (L2) under the square root. Default 0.5
    (ours, measured): with a small eps the first write at a zero state has gain ``~0.5/sqrt(eps)`` and
    drowns every later one (``docs/trellis.md``, "Numerical behaviour"); 0.5 keeps later writes
    readable and trained best on byte LM; with the layer defaults MQAR learns at 13 of 18 seeds at lr 1e-2 / 2400 steps (``docs/ablations.md``).
    read_eps: the same eps for the read maps ``f`` and ``psi`` (``eps`` is the write's, in ``phi``).
    chunk_mode: stale (every inner gradient of a chunk at the chunk-start state) | delta (the stale
    gradient plus its first-order change from the chunk's earlier writes, with ``J_phiᵀJ_phi`` replaced by
    its mean eigenvalue: a gated delta rule inside the chunk, solved as one triangular system; exact for
    ``phi = identity`` and for the ``decode`` value pass)."""

    phi: str = "ln_silu"
    f: str = "ln_silu"
    psi: str = "ln_silu"
    value_objective: str = "encode"
    outer_grad: str = "first_order"
    eps: float = 0.5
    read_eps: float = 0.5
    chunk_mode: str = "stale"

    def __post_init__(self):
        check_knobs(self, {"phi": PHIS, "f": FS, "psi": PSIS, "value_objective": VALUE_OBJECTIVES,
                           "outer_grad": OUTER_GRADS, "chunk_mode": CHUNK_MODES}, floors=("eps", "read_eps"))


def _normalise(x: torch.Tensor, kind: str, eps: float):
    """LayerNorm (no affine) or L2 normalisation over the last axis -> ``(y, s)`` with ``y = x̃ / s``."""
    if kind == "ln_silu":
        xc = x - x.mean(-1, keepdim=True)
        s = (xc.pow(2).mean(-1, keepdim=True) + eps).sqrt()
        return xc / s, s
    s = (x.pow(2).sum(-1, keepdim=True) + eps).sqrt()
    return x / s, s


def _normalise_vjp(g: torch.Tensor, y: torch.Tensor, s: torch.Tensor, kind: str) -> torch.Tensor:
    """``J_Nᵀ g`` of the normalisation ``y = x̃ / s`` (see ``_normalise``) over the last axis."""
    if kind == "ln_silu":
        return (g - g.mean(-1, keepdim=True) - y * (g * y).mean(-1, keepdim=True)) / s
    return (g - y * (g * y).sum(-1, keepdim=True)) / s


def activation(x: torch.Tensor, name: str, eps: float) -> torch.Tensor:
    """Apply a map named by ``phi``, ``f`` or ``psi`` over the last axis. The normalised maps
    normalise AFTER the SiLU (``docs/trellis.md``, "The write as a closed-form VJP"): ``ln_silu = LN(SiLU(x))``,
    ``l2_silu = SiLU(x) / sqrt(‖SiLU(x)‖² + eps)``."""
    if name in ("identity", "none"):
        return x
    if name == "softmax":
        return torch.softmax(x, dim=-1)
    if name == "silu":
        return F.silu(x)
    return _normalise(F.silu(x), name, eps)[0]


def _dsilu(x: torch.Tensor) -> torch.Tensor:
    sig = torch.sigmoid(x)
    return sig * (1 + x * (1 - sig))


def write_grad(z: torch.Tensor, alpha: torch.Tensor, phi: str, eps: float) -> torch.Tensor:
    """``u = J_phi(z)ᵀ (phi(z) - alpha)`` over the last axis, as a closed-form VJP.

    z, alpha: [..., m] -> u [..., m]. No Jacobian is built; the expression is plain torch, so
    autograd differentiates it (second order through phi). For ``phi = N ∘ SiLU`` with ``N`` the
    LayerNorm or L2 normalisation, ``s = SiLU(z)`` and ``y = N(s) = s̃ / σ``:
    ``u = silu'(z) ⊙ J_Nᵀ(y − alpha)``, LayerNorm ``J_Nᵀg = (g − mean(g) − y·mean(g ⊙ y)) / σ``,
    L2 ``J_Nᵀg = (g − y·<g, y>) / σ``.
    """
    if phi == "identity":
        return z - alpha
    if phi == "silu":
        return _dsilu(z) * (F.silu(z) - alpha)
    y, sd = _normalise(F.silu(z), phi, eps)
    return _dsilu(z) * _normalise_vjp(y - alpha, y, sd, phi)


def write_gain(z: torch.Tensor, phi: str, eps: float) -> torch.Tensor:
    """``tr(J_phi(z)ᵀ J_phi(z)) / m`` over the last axis: z [..., m] -> [..., 1], the scalar that stands
    for ``J_phiᵀ J_phi`` in ``chunk_mode='delta'`` (1 for identity; for ``N ∘ SiLU``,
    ``mean(silu'(z)²)`` times the trace of ``J_Nᵀ J_N`` / m, ``J_N`` a projector over ``σ``)."""
    if phi == "identity":
        return torch.ones_like(z[..., :1])
    d2 = _dsilu(z).pow(2).mean(-1, keepdim=True)
    if phi == "silu":
        return d2
    m = z.shape[-1]
    y, sd = _normalise(F.silu(z), phi, eps)
    dropped = (1.0 / m + y.pow(2).mean(-1, keepdim=True) / m) if phi == "ln_silu" else y.pow(2).mean(-1, keepdim=True)
    return d2 * (1.0 - dropped) / sd.pow(2)


def check_inputs(q, k, v, alpha, beta, gamma, initial_state, packed: bool = False) -> None:
    """q, k: [B, T, H, dk]; v: [B, T, H, dv]; alpha: [B, T, H, m]; beta (in (0, 1]), gamma: [B, T, H]
    (the gates in q's dtype or float32, so that mixed precision keeps them exact);
    initial_state: ``(Mk [N, H, m, dk], Mv [N, H, m, dv])`` with ``N = B``, or with ``packed``
    (``cu_seqlens``) one row per sequence, which ``run_varlen`` checks."""
    for name, x in (("q", q), ("k", k), ("v", v), ("alpha", alpha)):
        check_tensor(name, x, 4)
    for name, x in (("beta", beta), ("gamma", gamma)):
        check_tensor(name, x, 3)
    if q.shape != k.shape:
        raise ValueError(f"q and k must have the same shape [B, T, H, dk], got {tuple(q.shape)} and {tuple(k.shape)}")
    lead = tuple(q.shape[:3])
    for name, x in (("v", v), ("alpha", alpha), ("beta", beta), ("gamma", gamma)):
        if tuple(x.shape[:3]) != lead:
            raise ValueError(f"{name} must share B, T, H = {lead} with q, got shape {tuple(x.shape)}")
    dtypes = {x.dtype for x in (q, k, v, alpha)}
    if len(dtypes) != 1:
        raise TypeError(f"q, k, v, alpha must share one dtype, got {sorted(str(d) for d in dtypes)}")
    check_gate_dtype(q.dtype, beta=beta, gamma=gamma)
    if beta.numel() and not bool(((beta > 0) & (beta <= 1)).all()):
        error = NonFiniteInputError if bool(beta.isnan().any()) else ValueError
        raise error(f"beta must lie in (0, 1] (it enters as log beta), got values in "
                         f"[{beta.min().item():.3g}, {beta.max().item():.3g}]{' and NaN' if beta.isnan().any() else ''}; "
                         "compute it as exp(logsigmoid(.)) in float32")
    if initial_state is None:
        return
    if not (isinstance(initial_state, tuple) and len(initial_state) == 2):
        raise TypeError("initial_state must be a tuple (Mk [N, H, m, dk], Mv [N, H, m, dv])")
    B, _, H, dk = q.shape
    dv, m = v.shape[3], alpha.shape[3]
    for name, x, dname, d in (("Mk", initial_state[0], "dk", dk), ("Mv", initial_state[1], "dv", dv)):
        check_tensor(f"initial_state {name}", x, 4)
        if tuple(x.shape[1:]) != (H, m, d) or (not packed and x.shape[0] != B):
            n = "N" if packed else f"B={B}"
            raise ValueError(f"initial_state {name} must be [{n}, H={H}, m={m}, {dname}={d}], got {tuple(x.shape)}")


def check_rest_state(rest_state, q, v, alpha) -> None:
    """rest_state: ``(M̄k [H, m, dk], M̄v [H, m, dv])`` in a floating dtype, shared by every sequence."""
    if not (isinstance(rest_state, tuple) and len(rest_state) == 2):
        raise TypeError("rest_state must be a tuple (Mk [H, m, dk], Mv [H, m, dv])")
    H, dk, dv, m = q.shape[2], q.shape[3], v.shape[3], alpha.shape[3]
    for name, x, dname, d in (("Mk", rest_state[0], "dk", dk), ("Mv", rest_state[1], "dv", dv)):
        check_tensor(f"rest_state {name}", x, 3)
        if tuple(x.shape) != (H, m, d):
            raise ValueError(f"rest_state {name} must be [H={H}, m={m}, {dname}={d}], got {tuple(x.shape)}")


def default_state(batch: int, heads: int, m: int, dk: int, dv: int, dtype, device):
    """The state used when ``initial_state=None``: ``(Mk, Mv)`` zeros."""
    return (torch.zeros(batch, heads, m, dk, dtype=dtype, device=device),
            torch.zeros(batch, heads, m, dv, dtype=dtype, device=device))


def default_state_like(q, k, v, alpha, beta, gamma, dtype):
    """``default_state`` for the op's inputs (shapes as ``check_inputs``)."""
    B, _, H, dk = q.shape
    return default_state(B, H, alpha.shape[-1], dk, v.shape[-1], dtype, q.device)
