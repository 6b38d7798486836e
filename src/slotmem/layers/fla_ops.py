"""The real ``fla`` (flash-linear-attention) ops behind one call, for the baseline mixers.

``run_fla_op(name, *tensors, ...)`` runs op ``name`` on sequence-first tensors ``[B, T, H, D]``
and returns ``(o [B, T, H, V], final_state or None)``. Which implementation runs is decided in ONE
place, :func:`fla_backend`:

* ``"kernel"`` (CUDA tensors in fp32/fp16/bf16): fla's Triton kernels — ``chunk_<op>`` for
  prefill/training, ``fused_recurrent_<op>`` for short (``T <= 64``) gradient-free calls (decoding), the same rule
  fla's own layers use. Packed sequences go to the kernels as ``cu_seqlens``.
* ``"naive"`` (CPU, float64, or forced): fla's pure-PyTorch references in ``fla.ops.<op>.naive``.
  They take no ``cu_seqlens``, so packed sequences run one by one (``slotmem.ops.utils.run_varlen``). Where
  fla ships a chunked reference with state support (gated delta rule, simple GLA) it is used for
  ``T > NAIVE_RECURRENT_MAX_T`` (32), the token loop otherwise. The naive references compute in
  float32 whatever the input dtype (float64 inputs are computed in float32).

Ops and the fla functions behind them (``state`` layouts are fla's ``[N, H, K, V]``):

================  =============================================  ==========================================
op                kernel (CUDA)                                  naive (CPU)
================  =============================================  ==========================================
gated_delta_rule  chunk/fused_recurrent_gated_delta_rule          naive_chunk/naive_recurrent_gated_delta_rule
delta_rule        chunk/fused_recurrent_delta_rule; in fp32       delta_rule_recurrence (T <= 32);
                  (refused by chunk_delta_rule)                   naive_chunk_gated_delta_rule with g = 0
                  chunk_gated_delta_rule with g = 0               (the delta rule exactly) for T > 32
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

from ..checks import check_choice
from ..ops.utils import run_varlen

FLA_OPS = ("gated_delta_rule", "delta_rule", "gla", "gsa", "simple_gla")
BACKENDS = ("auto", "kernel", "naive")
KERNEL_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
RECURRENT_MAX_T = 64  # kernels: at or below this length (without grad) the fused recurrent kernel is used
# naive references: at or below this length the token loop, above it the chunked reference (chunk 64,
# padded). Measured on an idle 2-core CPU (benchmarks/fla_cpu_reference.py, B 48, d 64;
# benchmarks/results/fla_cpu_reference.md): the chunked form is 2.1x (fwd) / 2.5x (fwd+bwd) faster at
# T = 64, 1.5x / 1.6x at T = 48, about even at T = 32 (0.8x / 1.15x) and slower at T = 16 (0.7x / 0.7x).
NAIVE_RECURRENT_MAX_T = 32


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
                      recurrent=seq[0].shape[1] <= NAIVE_RECURRENT_MAX_T)

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
    m = _fla("gated_delta_rule.naive")
    if recurrent:
        return m.naive_recurrent_gated_delta_rule(q, k, v, beta, g, scale=scale, initial_state=_f32(initial_state),
                                                  output_final_state=output_final_state)
    return m.naive_chunk_gated_delta_rule(q, k, v, g, beta, chunk_size=64, scale=scale,
                                          initial_state=_f32(initial_state), output_final_state=output_final_state)


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
