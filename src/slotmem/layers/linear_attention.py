"""Linear-recurrent baselines on the REAL fla ops: Gated DeltaNet, DeltaNet, GLA, Gated Slot Attention.

Each layer owns its projections, short convolution (``slotmem.modules.ShortConvolution``, with a
decode cache), gates and output norm, following the published layer designs as fla's
``fla/layers/{gated_deltanet,delta_net,gla,gsa}.py`` realise them, and calls the fla op through
``fla_ops.run_fla_op`` (fla's Triton kernels on CUDA, fla's pure-PyTorch references on CPU — except
the gated delta rule's chunked CPU form, ``fla_ops.chunk_gated_delta_rule_torch``, fla's algorithm
with a triangular solve instead of its slow Python loop). Nothing of the recurrences is re-implemented here.

Differences from fla's layers, on purpose:

* one fused ``qkv_proj`` + one depthwise ``ShortConvolution`` over ``[q | k | v]`` instead of three
  projections and three convolutions (the same function);
* q/k L2 normalisation, sigmoid of beta and the decay gates are computed in the layer, not fused
  into the kernel (``use_qk_l2norm_in_kernel`` etc. off), so the CPU references see the same inputs;
* head sizes default to ``head_dim = hidden_size // num_heads`` and ``expand_v = 1`` for every
  layer (fla: GLA ``expand_k = 0.5``, Gated DeltaNet ``head_dim = 256, expand_v = 2``), so that the
  recurrent state of every baseline is ``H · d · d`` floats by default, like Lattice's ``H · m · d``;
  pass ``head_dim`` / ``expand_v`` to reproduce fla's shapes;
* padded batches are unpadded (``RecurrentMixer``), never zeroed; the state cache is a
  ``RecurrentCache`` entry ``dict(recurrent_state=..., conv_state=...)`` with fla's state layout
  ``[N, H, K, V]`` (GSA: the pair ``([N, H, K, M], [N, H, M, V])``), float32.

``state_size()`` counts the recurrent state only (the conv cache, ``(conv_size - 1)`` inputs per
channel, is excluded, as for Lattice).
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange

from ..checks import check_bool, check_choice, check_layer_idx, check_positive_float, check_positive_int, resolve_heads
from ..modules import ShortConvolution
from .fla_ops import run_fla_op
from .recurrent import RecurrentMixer
from .registry import register_mixer


def value_head_dim(head_dim: int, expand_v) -> int:
    check_positive_float("expand_v", expand_v)
    dv = head_dim * expand_v
    if not math.isclose(dv, round(dv)) or round(dv) < 1:
        raise ValueError(f"expand_v={expand_v} times head_dim={head_dim} must be a positive integer")
    return int(round(dv))


class _FlaLayer(RecurrentMixer):
    """Shared plumbing: argument checks, the fused projection + short convolution, heads."""

    def state_size(self, seq_len: int = 0) -> int:
        """Recurrent state floats per sequence: ``H · d_k · d_v`` (constant in ``seq_len``)."""
        return self.num_heads * self.head_dim * self.head_v_dim

    def _setup(self, hidden_size, num_heads, head_dim, expand_v, conv_size, use_short_conv, norm_eps, layer_idx):
        self.head_dim = resolve_heads(hidden_size, num_heads, head_dim)
        self.head_v_dim = value_head_dim(self.head_dim, expand_v)
        check_positive_int("conv_size", conv_size)
        check_bool("use_short_conv", use_short_conv)
        check_positive_float("norm_eps", norm_eps)
        check_layer_idx(layer_idx)
        self.hidden_size, self.num_heads, self.layer_idx = hidden_size, num_heads, layer_idx
        self.conv_size, self.use_short_conv, self.expand_v = conv_size, use_short_conv, expand_v

    def _build_qkv(self, sizes):
        self.qkv_sizes = list(sizes)
        self.qkv_proj = nn.Linear(self.hidden_size, sum(sizes), bias=False)
        self.conv = ShortConvolution(sum(sizes), self.conv_size, activation="silu") if self.use_short_conv else None

    def _qkv(self, x, state, cu_seqlens, use_cache):
        """Projection, then the short convolution (+SiLU) if enabled; returns (pieces, conv_state)."""
        y, conv_state = self.qkv_proj(x), None
        if self.conv is not None:
            y, conv_state = self.conv(y, cache=None if state is None else state["conv_state"],
                                      output_final_state=use_cache, cu_seqlens=cu_seqlens)
        return torch.split(y, self.qkv_sizes, dim=-1), conv_state

    def _build_output(self, gate: bool, norm_eps: float) -> None:
        """The output block's parameters (see ``_output``): optional SiLU gate, per-head RMSNorm, projection."""
        H, dv = self.num_heads, self.head_v_dim
        self.g_proj = nn.Linear(self.hidden_size, H * dv, bias=False) if gate else None
        self.o_norm = nn.RMSNorm(dv, eps=norm_eps)
        self.o_proj = nn.Linear(H * dv, self.hidden_size, bias=False)

    def _heads(self, t, d):
        return rearrange(t, "b t (h d) -> b t h d", d=d)

    def _run(self, op: str, *args, state, conv_state, cu_seqlens, use_cache, **kw):
        """fla's ``op`` on ``args`` from the cached recurrent state; returns ``(o [B, T, H, dv], cache entry)``."""
        o, new_state = run_fla_op(op, *args, initial_state=None if state is None else state["recurrent_state"],
                                  output_final_state=use_cache, cu_seqlens=cu_seqlens, **kw)
        return o, dict(recurrent_state=new_state, conv_state=conv_state)


@register_mixer("gated_deltanet")
class GatedDeltaNet(_FlaLayer):
    """Gated DeltaNet (Yang, Kautz & Hatamizadeh 2024, arXiv:2412.06464) on fla's ``gated_delta_rule``.

    ``q, k = L2(SiLU(conv(W x)))``, ``v = SiLU(conv(W_v x))``, ``β = σ(W_β x)`` (×2 with
    ``allow_neg_eigval``), log decay ``g = −exp(A_log) · softplus(W_a x + dt_bias)`` (Mamba2-style),
    ``S_t = exp(g_t) S_{t−1} (I − β_t k_t k_tᵀ) + β_t k_t v_tᵀ``, ``o_t = S_tᵀ q_t / √d_k``;
    output ``W_o [RMSNorm(o) ⊙ SiLU(W_g x)]`` (plain RMSNorm without ``use_gate``).
    State: ``H · d_k · d_v`` floats per sequence.
    """

    def __init__(self, hidden_size: int, num_heads: int, head_dim: int | None = None, *, expand_v: float = 1.0,
                 conv_size: int = 4, use_short_conv: bool = True, use_gate: bool = True,
                 allow_neg_eigval: bool = False, norm_eps: float = 1e-5, layer_idx: int | None = None):
        super().__init__()
        self._setup(hidden_size, num_heads, head_dim, expand_v, conv_size, use_short_conv, norm_eps, layer_idx)
        check_bool("use_gate", use_gate)
        check_bool("allow_neg_eigval", allow_neg_eigval)
        self.use_gate, self.allow_neg_eigval = use_gate, allow_neg_eigval
        H, dk, dv = num_heads, self.head_dim, self.head_v_dim
        self._build_qkv([H * dk, H * dk, H * dv])
        self.a_proj = nn.Linear(hidden_size, H, bias=False)
        self.b_proj = nn.Linear(hidden_size, H, bias=False)
        self.A_log = nn.Parameter(torch.empty(H).uniform_(1, 16).log())
        self.dt_bias = nn.Parameter(_inverse_softplus_dt(H))
        self.A_log._no_weight_decay = self.dt_bias._no_weight_decay = True
        self._build_output(use_gate, norm_eps)

    def _mix(self, x, state, cu_seqlens, use_cache):
        (q, k, v), conv_state = self._qkv(x, state, cu_seqlens, use_cache)
        if self.conv is None:
            q, k, v = F.silu(q), F.silu(k), F.silu(v)
        q = F.normalize(self._heads(q, self.head_dim), dim=-1, eps=1e-6)
        k = F.normalize(self._heads(k, self.head_dim), dim=-1, eps=1e-6)
        v = self._heads(v, self.head_v_dim)
        beta = torch.sigmoid(self.b_proj(x).float()) * (2.0 if self.allow_neg_eigval else 1.0)
        g = -self.A_log.float().exp() * F.softplus(self.a_proj(x).float() + self.dt_bias.float())
        o, entry = self._run("gated_delta_rule", q, k, v, g, beta, state=state, conv_state=conv_state,
                             cu_seqlens=cu_seqlens, use_cache=use_cache)
        return _output(self, o, x), entry


@register_mixer("deltanet")
class DeltaNet(_FlaLayer):
    """DeltaNet (Schlag et al. 2021; Yang et al. 2024, arXiv:2406.06484) on fla's ``delta_rule``.

    ``q, k = norm(SiLU(conv(W x)))`` with ``qk_norm`` ``"l2"`` (default) or ``"sum"``,
    ``v = SiLU(conv(W_v x))``, ``β = σ(W_β x)`` (1 without ``use_beta``; ×2 with
    ``allow_neg_eigval``), ``S_t = S_{t−1} (I − β_t k_t k_tᵀ) + β_t k_t v_tᵀ``,
    ``o_t = S_tᵀ q_t / √d_k``; output ``W_o RMSNorm(o)`` (``⊙ SiLU(W_g x)`` with ``use_gate``).
    State: ``H · d_k · d_v`` floats per sequence.
    """

    def __init__(self, hidden_size: int, num_heads: int, head_dim: int | None = None, *, expand_v: float = 1.0,
                 conv_size: int = 4, use_short_conv: bool = True, use_beta: bool = True, use_gate: bool = False,
                 allow_neg_eigval: bool = False, qk_norm: str = "l2", norm_eps: float = 1e-5,
                 layer_idx: int | None = None):
        super().__init__()
        self._setup(hidden_size, num_heads, head_dim, expand_v, conv_size, use_short_conv, norm_eps, layer_idx)
        for name, val in (("use_beta", use_beta), ("use_gate", use_gate), ("allow_neg_eigval", allow_neg_eigval)):
            check_bool(name, val)
        check_choice("qk_norm", qk_norm, ("l2", "sum"))
        self.use_beta, self.use_gate, self.allow_neg_eigval, self.qk_norm = use_beta, use_gate, allow_neg_eigval, qk_norm
        H, dk, dv = num_heads, self.head_dim, self.head_v_dim
        self._build_qkv([H * dk, H * dk, H * dv])
        self.b_proj = nn.Linear(hidden_size, H, bias=False) if use_beta else None
        self._build_output(use_gate, norm_eps)

    def _mix(self, x, state, cu_seqlens, use_cache):
        (q, k, v), conv_state = self._qkv(x, state, cu_seqlens, use_cache)
        if self.conv is None:
            q, k, v = F.silu(q), F.silu(k), F.silu(v)
        q, k, v = self._heads(q, self.head_dim), self._heads(k, self.head_dim), self._heads(v, self.head_v_dim)
        if self.qk_norm == "l2":
            q, k = F.normalize(q, dim=-1, eps=1e-6), F.normalize(k, dim=-1, eps=1e-6)
        else:  # "sum": x / Σ x (SiLU outputs can be negative; fla does the same)
            q, k = q / q.sum(-1, keepdim=True), k / k.sum(-1, keepdim=True)
        if self.b_proj is not None:
            beta = torch.sigmoid(self.b_proj(x).float())
        else:
            beta = x.new_ones(x.shape[:2] + (self.num_heads,), dtype=torch.float32)
        beta = beta * (2.0 if self.allow_neg_eigval else 1.0)
        o, entry = self._run("delta_rule", q, k, v, beta, state=state, conv_state=conv_state,
                             cu_seqlens=cu_seqlens, use_cache=use_cache)
        return _output(self, o, x), entry


@register_mixer("gla")
class GatedLinearAttention(_FlaLayer):
    """Gated Linear Attention (Yang et al. 2023, arXiv:2312.06635) on fla's ``gla`` op.

    ``q, k, v = W x`` (``SiLU(conv(·))`` with ``use_short_conv``; off by default, as in fla),
    per-key-channel log decay ``α_t = logσ(W_α2 W_α1 x + b) / gate_logit_normalizer`` (low rank),
    ``S_t = diag(exp α_t) S_{t−1} + k_t v_tᵀ``, ``o_t = S_tᵀ q_t / √d_k``;
    output ``W_o [RMSNorm(o) ⊙ SiLU(W_g x)]`` (plain RMSNorm without ``use_output_gate``).
    State: ``H · d_k · d_v`` floats per sequence.
    """

    def __init__(self, hidden_size: int, num_heads: int, head_dim: int | None = None, *, expand_v: float = 1.0,
                 conv_size: int = 4, use_short_conv: bool = False, use_output_gate: bool = True,
                 gate_low_rank_dim: int = 16, gate_logit_normalizer: float = 16.0, norm_eps: float = 1e-5,
                 layer_idx: int | None = None):
        super().__init__()
        self._setup(hidden_size, num_heads, head_dim, expand_v, conv_size, use_short_conv, norm_eps, layer_idx)
        check_bool("use_output_gate", use_output_gate)
        check_positive_int("gate_low_rank_dim", gate_low_rank_dim)
        check_positive_float("gate_logit_normalizer", gate_logit_normalizer)
        self.use_output_gate, self.gate_logit_normalizer = use_output_gate, float(gate_logit_normalizer)
        H, dk, dv = num_heads, self.head_dim, self.head_v_dim
        self._build_qkv([H * dk, H * dk, H * dv])
        self.gk_proj = nn.Sequential(nn.Linear(hidden_size, gate_low_rank_dim, bias=False),
                                     nn.Linear(gate_low_rank_dim, H * dk, bias=True))
        self._build_output(use_output_gate, norm_eps)

    def _mix(self, x, state, cu_seqlens, use_cache):
        (q, k, v), conv_state = self._qkv(x, state, cu_seqlens, use_cache)
        q, k, v = self._heads(q, self.head_dim), self._heads(k, self.head_dim), self._heads(v, self.head_v_dim)
        gk = F.logsigmoid(self._heads(self.gk_proj(x), self.head_dim).float()) / self.gate_logit_normalizer
        o, entry = self._run("gla", q, k, v, gk, state=state, conv_state=conv_state,
                             cu_seqlens=cu_seqlens, use_cache=use_cache)
        return _output(self, o, x), entry


@register_mixer("gsa")
class GatedSlotAttention(_FlaLayer):
    """Gated Slot Attention (Zhang et al. 2024, arXiv:2409.07146) on fla's ``gsa`` op.

    ``q, k = SiLU(W x)`` (after ``SiLU(conv(·))`` with ``use_short_conv``, off by default as in
    fla), ``v = SiLU(W_v x)``, per-slot log forget gate ``f_t = logσ(W_f x) / gate_logit_normalizer``,
    slot write weights ``s_t = 1 − exp(f_t)``; two gated passes over ``M = num_slots`` slots
    (keys ``K_t = diag(exp f_t) K_{t−1} + k_t s_tᵀ``, values ``V_t = diag(exp f_t) V_{t−1} + s_t v_tᵀ``,
    ``o_t = V_tᵀ softmax(K_tᵀ q_t)``, scale 1 as in fla's layer); output ``W_o RMSNorm(SiLU(o))``
    (one RMSNorm over all heads, as in fla). State: ``H · M · (d_k + d_v)`` floats per sequence.
    """

    def __init__(self, hidden_size: int, num_heads: int, head_dim: int | None = None, *, num_slots: int | None = None,
                 expand_v: float = 1.0, conv_size: int = 4, use_short_conv: bool = False,
                 gate_logit_normalizer: float = 8.0, norm_eps: float = 1e-5, layer_idx: int | None = None):
        super().__init__()
        self._setup(hidden_size, num_heads, head_dim, expand_v, conv_size, use_short_conv, norm_eps, layer_idx)
        self.num_slots = self.head_dim if num_slots is None else num_slots
        check_positive_int("num_slots", self.num_slots)
        check_positive_float("gate_logit_normalizer", gate_logit_normalizer)
        self.gate_logit_normalizer = float(gate_logit_normalizer)
        H, dk, dv, M = num_heads, self.head_dim, self.head_v_dim, self.num_slots
        self._build_qkv([H * dk, H * dk, H * dv])
        self.f_proj = nn.Linear(hidden_size, H * M, bias=False)
        self.g_norm = nn.RMSNorm(H * dv, eps=norm_eps)
        self.o_proj = nn.Linear(H * dv, hidden_size, bias=False)

    def state_size(self, seq_len: int = 0) -> int:
        """Recurrent state floats per sequence: ``H · M · (d_k + d_v)`` (constant in ``seq_len``)."""
        return self.num_heads * self.num_slots * (self.head_dim + self.head_v_dim)

    def _mix(self, x, state, cu_seqlens, use_cache):
        (q, k, v), conv_state = self._qkv(x, state, cu_seqlens, use_cache)
        q, k = F.silu(self._heads(q, self.head_dim)), F.silu(self._heads(k, self.head_dim))
        v = F.silu(self._heads(v, self.head_v_dim))
        f = F.logsigmoid(self._heads(self.f_proj(x), self.num_slots).float()) / self.gate_logit_normalizer
        s = 1 - f.exp()
        o, entry = self._run("gsa", q, k, v, s, f, scale=1.0, state=state, conv_state=conv_state,
                             cu_seqlens=cu_seqlens, use_cache=use_cache)
        return self.o_proj(self.g_norm(F.silu(rearrange(o, "b t h d -> b t (h d)")))), entry


def _output(layer, o, x):
    """Per-head RMSNorm, optional SiLU output gate, output projection."""
    o = layer.o_norm(o.to(x.dtype))
    if layer.g_proj is not None:
        o = o * F.silu(layer._heads(layer.g_proj(x), layer.head_v_dim))
    return layer.o_proj(rearrange(o, "b t h d -> b t (h d)"))


def _inverse_softplus_dt(n: int, dt_min: float = 1e-3, dt_max: float = 0.1, floor: float = 1e-4) -> torch.Tensor:
    """Mamba2-style ``dt_bias`` init: ``softplus(dt_bias)`` log-uniform in ``[dt_min, dt_max]``."""
    dt = torch.exp(torch.rand(n) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)).clamp(min=floor)
    return dt + torch.log(-torch.expm1(-dt))


__all__ = ["GatedDeltaNet", "DeltaNet", "GatedLinearAttention", "GatedSlotAttention"]
