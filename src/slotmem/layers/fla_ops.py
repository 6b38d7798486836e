"""The real ``fla`` (flash-linear-attention) ops behind one call, for the baseline mixers.

``run_fla_op(name, *tensors, ...)`` runs op ``name`` on sequence-first tensors ``[B, T, H, D]``
and returns ``(o [B, T, H, V], final_state or None)``. Which implementation runs is decided in ONE
place, :func:`fla_backend`:

* ``"kernel"`` (CUDA tensors in fp32/fp16/bf16): fla's Triton kernels — ``chunk_<op>`` for
  prefill/training, ``fused_recurrent_<op>`` for short (``T <= 64``) gradient-free calls (decoding), the same rule
  fla's own layers use. Packed sequences go to the kernels as ``cu_seqlens``.
* ``"naive"`` (CPU, float64, or forced): fla's pure-PyTorch references in ``fla.ops.<op>.naive``.
  They take no ``cu_seqlens``, so packed sequences run one by one (``slotmem.ops.utils.run_varlen``). Where
  fla ships a chunked reference with state support (gated delta rule, simple GLA) the chunked form is
  used for ``T > NAIVE_RECURRENT_MAX_T[op]`` (8 for the delta rules, 32 for simple GLA), the token loop
  otherwise. One exception, written here:
  the gated delta rule's chunked form is :func:`chunk_gated_delta_rule_torch` (fla's algorithm with a
  triangular solve in place of its Python loop; it computes in float64 for float64 inputs). fla's
  references compute in float32 whatever the input dtype (float64 inputs are computed in float32).

Ops and the fla functions behind them (``state`` layouts are fla's ``[N, H, K, V]``):

================  =============================================  ==========================================
op                kernel (CUDA)                                  naive (CPU)
================  =============================================  ==========================================
gated_delta_rule  chunk/fused_recurrent_gated_delta_rule          chunk_gated_delta_rule_torch (ours, T > 8)
                                                                 /naive_recurrent_gated_delta_rule
delta_rule        chunk/fused_recurrent_delta_rule; in fp32       delta_rule_recurrence (T <= 8);
                  (refused by chunk_delta_rule)                   chunk_gated_delta_rule_torch with g = 0
                  chunk_gated_delta_rule with g = 0               (the delta rule exactly) for T > 8
gla               chunk/fused_recurrent_gla                       naive_recurrent_gla
gsa               chunk/fused_recurrent_gsa                       naive_recurrent_gsa (state: a pair)
simple_gla        chunk/fused_recurrent_simple_gla                naive_chunk/naive_recurrent_simple_gla
================  =============================================  ==========================================

Extra per-op inputs (positional, after ``q, k, v``): gated_delta_rule ``g, beta`` (log decay
``[B,T,H]``, write strength ``[B,T,H]``); delta_rule ``beta``; gla ``gk`` (log decay ``[B,T,H,K]``);
gsa ``s, g`` (slot write weights and log decay ``[B,T,H,M]``); simple_gla ``g`` (``[B,T,H]``).

``fla`` is imported lazily, so ``import slotmem`` works without it; set ``SLOTMEM_FLA_BACKEND`` to
``naive`` / ``kernel`` / ``auto`` (default) to override the choice.
"""
from __future__ import annotations

import importlib
import os
import warnings

import torch
import torch.nn.functional as F

from ..checks import check_choice
from ..ops.utils import run_varlen

FLA_OPS = ("gated_delta_rule", "delta_rule", "gla", "gsa", "simple_gla")
BACKENDS = ("auto", "kernel", "naive")
KERNEL_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
RECURRENT_MAX_T = 64  # kernels: at or below this length (without grad) the fused recurrent kernel is used
# CPU paths: at or below this length (per op) the token loop, above it the chunked form (chunk 64, padded).
# Measured with benchmarks/fla_cpu_reference.py (B 48, d 64, one thread; benchmarks/results/fla_cpu_reference.md):
# slotmem's chunked gated delta rule is faster than fla's token loop from T = 16 on (fwd+bwd 2.6x at 16, 12x
# at 64) and slower below 8 (0.10x at T = 1, 0.66x at 4; at 8 0.77x fwd, 1.4x fwd+bwd); the delta rule runs the
# same chunked form. fla's chunked simple-GLA reference: about even with its loop at T = 32 (fifth session).
NAIVE_RECURRENT_MAX_T = {"gated_delta_rule": 8, "delta_rule": 8, "simple_gla": 32}


def fla_backend(device: torch.device | str, dtype: torch.dtype | None = None, override: str | None = None) -> str:
    """THE dispatch decision: ``"kernel"`` for CUDA tensors of a kernel dtype (fp32/fp16/bf16),
    ``"naive"`` otherwise (CPU, or float64, which fla's kernels do not take).

    ``override`` (default: env ``SLOTMEM_FLA_BACKEND``, else ``"auto"``) forces a backend;
    forcing ``"kernel"`` on a non-CUDA device is an error (fla's kernels need a GPU)."""
    choice = os.environ.get("SLOTMEM_FLA_BACKEND", "auto") if override is None else override
    check_choice("SLOTMEM_FLA_BACKEND", choice, BACKENDS)
    on_cuda = torch.device(device).type == "cuda"
    if choice == "kernel" and not on_cuda:
        raise ValueError(f"the fla kernel backend needs CUDA tensors, got device {torch.device(device)}")
    if choice == "auto":
        return "kernel" if on_cuda and dtype in (None, *KERNEL_DTYPES) else "naive"
    return choice


def run_fla_op(name: str, q, k, v, *extra, scale: float | None = None, initial_state=None,
               output_final_state: bool = False, cu_seqlens: torch.Tensor | None = None):
    """Run fla op ``name`` (see the module docstring); returns ``(o, final_state or None)``.

    ``scale`` (default ``K ** -0.5``) cannot be changed for ``gla`` and ``delta_rule`` (fla's CPU
    references fix it; another value is an error). ``o`` has the dtype of ``v``; states are float32."""
    check_choice("op", name, FLA_OPS)
    if name in ("gla", "delta_rule") and scale is not None and abs(scale - q.shape[-1] ** -0.5) > 1e-12:
        raise ValueError(f"{name}: fla fixes scale to K**-0.5; got scale={scale}")
    backend = fla_backend(q.device, q.dtype)
    T = q.shape[1]
    needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v, *extra))
    if backend == "kernel":
        recurrent = T <= RECURRENT_MAX_T and not needs_grad
        o, state = _KERNEL[name](q, k, v, *extra, scale=scale, initial_state=initial_state,
                                 output_final_state=output_final_state, cu_seqlens=cu_seqlens, recurrent=recurrent)
    else:
        def one(*seq, initial_state, output_final_state):
            fn = _NAIVE[name]
            return fn(*seq, scale=scale, initial_state=initial_state, output_final_state=output_final_state,
                      recurrent=seq[0].shape[1] <= NAIVE_RECURRENT_MAX_T.get(name, 0))

        if cu_seqlens is None:
            o, state = one(q, k, v, *extra, initial_state=initial_state, output_final_state=output_final_state)
        else:
            o, state = run_varlen(one, (q, k, v, *extra), cu_seqlens, initial_state, output_final_state)
    o = o.to(v.dtype)
    if not output_final_state:
        state = None
    return o, state


def _fla(module: str):
    """Import ``fla.ops.<module>`` (silencing fla's 'Triton is not supported, roll back to CPU' notice)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return importlib.import_module(f"fla.ops.{module}")


def _f32(state):
    if state is None:
        return None
    return tuple(s.float() for s in state) if isinstance(state, tuple) else state.float()


# ---------------------------------------------------------------- naive (pure PyTorch) references

def _naive_gated_delta_rule(q, k, v, g, beta, *, scale, initial_state, output_final_state, recurrent):
    if recurrent:
        m = _fla("gated_delta_rule.naive")
        return m.naive_recurrent_gated_delta_rule(q, k, v, beta, g, scale=scale, initial_state=_f32(initial_state),
                                                  output_final_state=output_final_state)
    return chunk_gated_delta_rule_torch(q, k, v, g, beta, scale=scale, initial_state=initial_state,
                                        output_final_state=output_final_state)


def chunk_gated_delta_rule_torch(q, k, v, g, beta, *, scale=None, initial_state=None, output_final_state=False,
                                 chunk_size: int = 64):
    """The gated delta rule in its chunked (WY) form, plain PyTorch: the CPU path for ``T > 8``.

    The same algorithm as fla's ``naive_chunk_gated_delta_rule`` (chunks of 64, padded), written here
    because that reference builds each chunk's inverse ``(I + A)^{-1}`` (``A = tril(diag(β) K Kᵀ ⊙ Γ, -1)``)
    with a 63-step Python loop of row updates: at B 24, T 64, d 64 it is 25 of the 86 ms of a Gated
    DeltaNet training step on one core. ``torch.linalg.solve_triangular`` solves the same unit-lower-
    triangular system in one call (fwd + bwd ~4x faster; ``benchmarks/fla_cpu_reference.py``).

    q, k [B, T, H, K], v [B, T, H, V], g (log decay) and beta [B, T, H]; ``initial_state`` [B, H, K, V].
    Computes in float32 (float64 for float64 inputs). Returns ``(o [B, T, H, V], state [B, H, K, V] or None)``.
    """
    dt = torch.promote_types(q.dtype, torch.float32)
    B, T, H, K = q.shape
    C, pad = chunk_size, (-T) % chunk_size
    scale = K ** -0.5 if scale is None else scale

    def chunks(t):  # [B, T, H, ...] -> [B, H, n, C, ...], zero-padded: g = 0 keeps, beta = 0 writes nothing
        t = t.to(dt).transpose(1, 2)
        t = F.pad(t, (0, 0, 0, pad) if t.dim() == 4 else (0, pad)) if pad else t
        return t.reshape(B, H, -1, C, *t.shape[3:])

    q, k, v, g, beta = chunks(q) * scale, chunks(k), chunks(v), chunks(g), chunks(beta)
    gc = g.cumsum(-1)  # [B, H, n, C]: log decay from the chunk's start
    causal = torch.ones(C, C, dtype=torch.bool, device=q.device).tril()
    decay = (gc[..., :, None] - gc[..., None, :]).masked_fill(~causal, float("-inf")).exp()  # Γ[i, j], j <= i
    kb = k * beta[..., None]
    eye = torch.eye(C, dtype=dt, device=q.device).expand(*kb.shape[:3], C, C)
    # (I + A)^{-1} with A the strict lower part of (β k) kᵀ ⊙ Γ (the diagonal is taken as 1, the upper part unread)
    t_inv = torch.linalg.solve_triangular((kb @ k.transpose(-1, -2)) * decay, eye, upper=False, unitriangular=True)
    w = t_inv @ (kb * gc.exp()[..., None])  # [B, H, n, C, K]
    u = t_inv @ (v * beta[..., None])  # [B, H, n, C, V]
    qk = (q @ k.transpose(-1, -2)) * decay
    S = q.new_zeros(B, H, K, v.shape[-1]) if initial_state is None else initial_state.to(dt)
    out = []
    for i in range(q.shape[2]):
        v_new = u[:, :, i] - w[:, :, i] @ S
        out.append((q[:, :, i] * gc[:, :, i, :, None].exp()) @ S + qk[:, :, i] @ v_new)
        last = gc[:, :, i, -1:]  # [B, H, 1]
        S = S * last[..., None].exp() + ((last - gc[:, :, i]).exp()[..., None] * k[:, :, i]).transpose(-1, -2) @ v_new
    o = torch.stack(out, 2).reshape(B, H, -1, v.shape[-1])[:, :, :T].transpose(1, 2)
    return o, (S if output_final_state else None)


def _naive_delta_rule(q, k, v, beta, *, scale, initial_state, output_final_state, recurrent):
    if not recurrent:  # fla's chunked delta-rule reference has no initial state: g = 0 is the delta rule
        return _naive_gated_delta_rule(q, k, v, torch.zeros_like(beta), beta, scale=None, initial_state=initial_state,
                                       output_final_state=output_final_state, recurrent=False)
    m = _fla("delta_rule.naive")
    hf = [t.transpose(1, 2) for t in (q, k, v, beta)]  # this reference is head-first [B, H, T, D]
    o, state = m.delta_rule_recurrence(*hf, initial_state=_f32(initial_state), output_final_state=output_final_state)
    return o.transpose(1, 2), state


def _naive_gla(q, k, v, gk, *, scale, initial_state, output_final_state, recurrent):
    m = _fla("gla.naive")
    return m.naive_recurrent_gla(q, k, v, gk, initial_state=_f32(initial_state), output_final_state=output_final_state)


def _naive_gsa(q, k, v, s, g, *, scale, initial_state, output_final_state, recurrent):
    m = _fla("gsa.naive")
    return m.naive_recurrent_gsa(q, k, v, s, g, scale=scale, initial_state=_f32(initial_state),
                                 output_final_state=output_final_state)


def _naive_simple_gla(q, k, v, g, *, scale, initial_state, output_final_state, recurrent):
    m = _fla("simple_gla.naive")
    if recurrent:
        return m.naive_recurrent_simple_gla(q, k, v, g, scale=scale, initial_state=_f32(initial_state),
                                            output_final_state=output_final_state)
    return m.naive_chunk_simple_gla(q, k, v, g, initial_state=_f32(initial_state), output_final_state=output_final_state,
                                    chunk_size=64, scale=scale)


# ---------------------------------------------------------------- Triton kernels (CUDA)

def _kernel_gated_delta_rule(q, k, v, g, beta, *, recurrent, **kw):
    m = _fla("gated_delta_rule")
    fn = m.fused_recurrent_gated_delta_rule if recurrent else m.chunk_gated_delta_rule
    return fn(q=q, k=k, v=v, g=g, beta=beta.to(q.dtype), **kw)


def _kernel_delta_rule(q, k, v, beta, *, recurrent, scale, **kw):
    if not recurrent and q.dtype == torch.float32:  # fla's chunk_delta_rule refuses float32: g = 0 instead
        return _kernel_gated_delta_rule(q, k, v, torch.zeros_like(beta, dtype=torch.float32), beta,
                                        recurrent=False, scale=None, **kw)
    m = _fla("delta_rule")
    fn = m.fused_recurrent_delta_rule if recurrent else m.chunk_delta_rule
    return fn(q=q, k=k, v=v, beta=beta.to(q.dtype), **kw)


def _kernel_gla(q, k, v, gk, *, recurrent, scale, **kw):
    m = _fla("gla")
    if recurrent:
        return m.fused_recurrent_gla(q=q, k=k, v=v, gk=gk, **kw)
    return m.chunk_gla(q=q, k=k, v=v, g=gk, **kw)


def _kernel_gsa(q, k, v, s, g, *, recurrent, **kw):
    m = _fla("gsa")
    fn = m.fused_recurrent_gsa if recurrent else m.chunk_gsa
    return fn(q=q, k=k, v=v, s=s.to(q.dtype), g=g, **kw)


def _kernel_simple_gla(q, k, v, g, *, recurrent, **kw):
    m = _fla("simple_gla")
    fn = m.fused_recurrent_simple_gla if recurrent else m.chunk_simple_gla
    return fn(q=q, k=k, v=v, g=g, **kw)


_NAIVE = dict(gated_delta_rule=_naive_gated_delta_rule, delta_rule=_naive_delta_rule, gla=_naive_gla,
              gsa=_naive_gsa, simple_gla=_naive_simple_gla)
_KERNEL = dict(gated_delta_rule=_kernel_gated_delta_rule, delta_rule=_kernel_delta_rule, gla=_kernel_gla,
               gsa=_kernel_gsa, simple_gla=_kernel_simple_gla)

__all__ = ["FLA_OPS", "fla_backend", "run_fla_op"]
